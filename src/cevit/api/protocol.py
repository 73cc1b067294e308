"""The HTTP connection protocol of ``cevit serve``: uvicorn's h11 protocol with a deadline on request headers.

uvicorn (0.54) has no timeout on *receiving* a request: its keep-alive timer runs only between requests and every
received byte resets it, and a new connection has no timer at all, so a client that opens connections and trickles
header bytes (or sends nothing) holds them for ever ("slowloris"). ASGI middleware cannot help: it runs only once
the headers are complete. :func:`header_deadline_protocol` returns a subclass of uvicorn's ``H11Protocol`` that
closes a connection whose request line and headers are not complete ``seconds`` after the connection opened or
after the previous response finished; the request body is covered by cevit's own upload timeouts
(:class:`cevit.api.uploads.UploadTimeouts`). Hand-written because uvicorn offers no setting for it; it relies only
on ``H11Protocol``'s public protocol methods and its ``conn`` (an ``h11.Connection``) and ``loop`` attributes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["DEFAULT_HEADER_TIMEOUT", "header_deadline_protocol"]

log = logging.getLogger("cevit.api")

#: seconds a client has to send a request's line and headers
DEFAULT_HEADER_TIMEOUT = 10.0


def header_deadline_protocol(seconds: float = DEFAULT_HEADER_TIMEOUT) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class (pass it as ``uvicorn.run(..., http=cls)``) that closes connections whose
    request headers take longer than ``seconds``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if not seconds > 0:
        raise ValueError(f"the header timeout must be > 0 s, got {seconds}")

    class HeaderDeadlineProtocol(H11Protocol):
        header_timeout = float(seconds)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(self.header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _expire(self) -> None:
            self._header_deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # closed already, or the headers arrived (the body has its own timeouts)
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.warning("closing a connection from %s: no complete request headers within %.0f s", client,
                        self.header_timeout)  # fmt: skip
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on this kept-alive connection gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol

"""The service's ASGI middleware: request id, security headers, one JSON access-log line per request.

The request id is the client's ``X-Request-ID`` when it is a plain token (1-64 of ``[A-Za-z0-9._:-]``), else a
fresh UUID; it is returned in the ``X-Request-ID`` header and stored in ``request.state.request_id``. Route code
adds fields for the access log to ``request.state.log_fields`` (upload size, file name, verdict, ...). An
exception that escapes the app is logged and answered with a JSON 500 (when no response has started yet).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["RequestContextMiddleware", "SECURITY_HEADERS"]

log = logging.getLogger("cevit.api")
access_log = logging.getLogger("cevit.api.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; "
        b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
]


class RequestContextMiddleware:
    """Request id (``X-Request-ID``), security headers, one JSON access-log line per request."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["log_fields"] = {}
        status: int | None = None
        start = time.perf_counter()

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode()), *SECURITY_HEADERS]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if status is None:
                response = JSONResponse({"error": "internal server error", "error_type": "InternalError",
                                         "request_id": request_id}, status_code=500)  # fmt: skip
                await response(scope, receive, send_with_headers)
        finally:
            fields = {
                "event": "request", "request_id": request_id, "method": scope.get("method"),
                "path": scope.get("path"), "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                "client": (scope.get("client") or ("", 0))[0], **state.get("log_fields", {}),
            }  # fmt: skip
            access_log.info("%s %s %s", scope.get("method"), scope.get("path"), status, extra={"fields": fields})

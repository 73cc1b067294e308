"""Uploads: the multipart body is parsed from the raw request stream and the file written to a temporary file.

python-multipart's streaming parser feeds :class:`Upload`; the file part goes to disk in chunks of about 1 MiB
(written in a thread, so the event loop never blocks on the disk) and is refused with 413 as soon as it passes
the limit. The bytes of all uploads on disk at once are charged to a :class:`TempSpace` (``max_temp_bytes``): an
upload that would pass that cap is refused with 503 while it streams, so parallel uploads never fill the disk. A
client that pauses too long or takes too long in all gets 408 (:class:`UploadTimeouts`), so slow clients cannot
hold admission slots for ever.
Only the fields ``file``, ``frames`` and ``threshold`` are accepted, with exactly one file. The caller
owns the temporary file and deletes it (:func:`unlink_quietly`) in every case.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cevit.api.errors import MIB, ApiError, too_large

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_TEMP_BYTES",
    "TempSpace",
    "UploadTimeouts",
    "DEFAULT_UPLOAD_IDLE_SECONDS",
    "DEFAULT_UPLOAD_SECONDS",
    "MAX_FRAMES",
    "MULTIPART_SLACK",
    "FORM_FIELDS",
    "Upload",
    "receive_upload",
    "parse_analysis_fields",
    "clean_filename",
    "unlink_quietly",
]

log = logging.getLogger("cevit.api")

DEFAULT_MAX_UPLOAD_BYTES = 200 * MIB
DEFAULT_MAX_TEMP_BYTES = 1024 * MIB  # all uploads on disk at once (at least one upload of the maximum size)
DEFAULT_UPLOAD_IDLE_SECONDS = 30.0  # longest pause in an upload
DEFAULT_UPLOAD_SECONDS = 600.0  # longest upload (200 MB at 2.7 Mbit/s)
MAX_FRAMES = 300  # upper bound of the ``frames`` form field
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers on top of the file itself
FORM_FIELDS = ("file", "frames", "threshold", "explain")

_FIELD_LIMIT = 1024  # bytes per non-file form field
_FLUSH_BYTES = MIB  # buffered upload bytes written per thread hop
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class TempSpace:
    """The temporary disk space of all uploads in progress or waiting for analysis, against a cap (thread-safe)."""

    def __init__(self, *, cap: int) -> None:
        self.cap = cap
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def charge(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) when that would pass the cap."""
        with self._lock:
            if self._used + n > self.cap:
                return False
            self._used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self._used = max(0, self._used - n)


def temp_space_full(space: TempSpace) -> ApiError:
    """503 for an upload that does not fit into the temporary space now."""
    return ApiError(503, f"server busy: the temporary space for uploads ({space.cap / MIB:g} MB) is full; retry later",
                    error_type="Busy", headers={"Retry-After": "5"})  # fmt: skip


@dataclass
class Upload:
    """What the multipart parser found; the file bytes go to ``path``. ``charged``: bytes reserved in ``space``."""

    max_bytes: int
    space: TempSpace | None = None
    charged: int = 0
    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    _kind: str | None = None
    _name: str = ""
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _hfield: bytearray = field(default_factory=bytearray)
    _hvalue: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._hfield.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._hvalue.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._kind, self._name = {}, None, ""
        self._value = bytearray()

    def _header_end(self) -> None:
        self._headers[bytes(self._hfield).lower()] = bytes(self._hvalue)
        self._hfield, self._hvalue = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = _decode(params.get(b"name", b""))
        if name not in FORM_FIELDS:
            raise ApiError(422, f"unknown form field {name!r} (expected: file, frames, threshold, explain)",
                           error_type="ValidationError")  # fmt: skip
        if name == "file":
            if self.filename is not None:
                raise ApiError(422, "send exactly one file per request", error_type="ValidationError")
            self.filename = clean_filename(_decode(params.get(b"filename", b"")))
        self._kind, self._name = ("file" if name == "file" else "field"), name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self.size += end - start
            if self.size > self.max_bytes:
                raise too_large(self.max_bytes)
            if self.space is not None:
                if not self.space.charge(end - start):
                    raise temp_space_full(self.space)
                self.charged += end - start
            self.buffer.extend(data[start:end])
        elif self._kind == "field":
            self._value.extend(data[start:end])
            if len(self._value) > _FIELD_LIMIT:
                raise ApiError(422, f"form field {self._name!r} is too long", error_type="ValidationError")

    def _part_end(self) -> None:
        if self._kind == "field":
            self.fields[self._name] = _decode(bytes(self._value)).strip()
        self._kind = None

    def _end(self) -> None:
        self.ended = True


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def clean_filename(name: str) -> str:
    """The client's file name for display (``source``): control characters removed, at most 255 characters."""
    name = _CONTROL_CHARS.sub("", name).strip()
    return name[:255] or "upload"


def _open_exclusive(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return os.fdopen(fd, "wb")


def unlink_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; a failure is logged, never raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - nothing else to do; logged for the operator
        log.exception("could not delete the temporary upload %s", path)


@dataclass(frozen=True, kw_only=True)
class UploadTimeouts:
    """How long a client may take to send its body: ``idle`` seconds without a byte, ``total`` seconds in all.

    A slow client (slowloris-style: a byte now and then) holds an admission slot while it uploads; these bound
    how long, and the request then gets 408. Uvicorn itself has no timeout for reading a request.
    """

    idle: float = DEFAULT_UPLOAD_IDLE_SECONDS
    total: float = DEFAULT_UPLOAD_SECONDS


async def _chunks(request: Request, timeouts: UploadTimeouts) -> AsyncIterator[bytes]:
    """The body's chunks; ApiError 408 when the client pauses longer than ``idle`` or takes more than ``total``."""
    end = time.monotonic() + timeouts.total
    stream = request.stream().__aiter__()
    while True:
        remaining = end - time.monotonic()
        wait = min(timeouts.idle, remaining)
        chunk = None
        with anyio.move_on_after(max(0.0, wait)):
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                return
        if chunk is None:
            why = (f"took longer than {timeouts.total:g} s" if wait >= remaining
                   else f"sent nothing for {timeouts.idle:g} s")  # fmt: skip
            raise ApiError(408, f"upload timed out: the client {why}", error_type="UploadTimeout",
                           headers={"Connection": "close"})  # fmt: skip
        yield chunk


async def receive_upload(
    request: Request, path: Path, max_bytes: int, *, space: TempSpace | None = None,
    timeouts: UploadTimeouts | None = None,
) -> Upload:  # fmt: skip
    """Stream the multipart body into ``path`` (created here); raises ApiError on any problem (408: too slow).

    The file's bytes are charged to ``space`` as they arrive: on success the caller owns ``upload.charged`` and
    releases it once the file is deleted; on failure it is released here.
    A client that disconnects mid-upload raises :class:`starlette.requests.ClientDisconnect`.
    """
    upload = Upload(max_bytes=max_bytes, space=space)
    try:
        return await _receive(request, path, upload, timeouts or UploadTimeouts())
    except BaseException:
        if space is not None:
            space.release(upload.charged)
            upload.charged = 0
        raise


async def _receive(request: Request, path: Path, upload: Upload, timeouts: UploadTimeouts) -> Upload:
    _, params = parse_options_header(request.headers.get("content-type", "").encode("latin-1"))
    if not params.get(b"boundary"):
        raise ApiError(
            415, "send the file as multipart/form-data in the field 'file'", error_type="UnsupportedMediaError"
        )
    parser = MultipartParser(params[b"boundary"], callbacks=upload.callbacks())  # type: ignore[arg-type]
    fh = await anyio.to_thread.run_sync(_open_exclusive, path)
    try:
        async for chunk in _chunks(request, timeouts):
            if chunk:
                try:
                    parser.write(chunk)
                except FormParserError as exc:
                    raise ApiError(422, f"malformed multipart body ({exc})", error_type="ValidationError") from exc
            if len(upload.buffer) >= _FLUSH_BYTES:
                data, upload.buffer = bytes(upload.buffer), bytearray()
                await anyio.to_thread.run_sync(fh.write, data)
        if not upload.ended:
            raise ApiError(422, "incomplete multipart body", error_type="ValidationError")
        if upload.buffer:
            data, upload.buffer = bytes(upload.buffer), bytearray()
            await anyio.to_thread.run_sync(fh.write, data)
    finally:
        fh.close()
    if upload.filename is None:
        raise ApiError(422, "no file: send the image or video in the multipart field 'file'",
                       error_type="ValidationError")  # fmt: skip
    return upload


def parse_analysis_fields(fields: dict[str, str]) -> tuple[int | None, float | None]:
    """The optional form fields ``frames`` (1..MAX_FRAMES) and ``threshold`` (0..1); None when not sent."""
    frames: int | None = None
    threshold: float | None = None
    raw = fields.get("frames", "")
    if raw:
        try:
            frames = int(raw)
        except ValueError:
            frames = -1
        if not 1 <= frames <= MAX_FRAMES:
            raise ApiError(422, f"frames must be an integer from 1 to {MAX_FRAMES}, got {raw!r}",
                           error_type="ConfigError")  # fmt: skip
    raw = fields.get("threshold", "")
    if raw:
        try:
            threshold = float(raw)
        except ValueError:
            threshold = math.nan
        if not 0.0 <= threshold <= 1.0:
            raise ApiError(422, f"threshold must be a number from 0 to 1, got {raw!r}", error_type="ConfigError")
    return frames, threshold


#: Values of the ``explain`` form field: off, the default method, or a method by name.
_EXPLAIN_OFF = ("", "0", "false", "no", "off")
_EXPLAIN_ON = ("1", "true", "yes", "on")


def parse_explain_field(fields: dict[str, str]) -> str | bool | None:
    """The optional form field ``explain``: None (off: not sent, ``false``, ``0``), True (``true``, ``1``: the
    default method) or a method name (``gradcam``, ``attention``); anything else is a 422."""
    from cevit.explain.maps import METHODS

    raw = fields.get("explain", "").strip().lower()
    if raw in _EXPLAIN_OFF:
        return None
    if raw in _EXPLAIN_ON:
        return True
    if raw in METHODS:
        return raw
    raise ApiError(422, f"explain must be true, false or one of {', '.join(METHODS)}, got {fields['explain']!r}",
                   error_type="ConfigError")  # fmt: skip

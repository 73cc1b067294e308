"""The FastAPI application of ``cevit serve``: the JSON API, the web page and the upload/queue machinery.

Endpoints
---------
``POST /v1/analyze``
    multipart/form-data with one image or video in the field ``file`` and optional fields ``frames``
    (1–300, frames sampled per video) and ``threshold`` (0–1, FAKE above it). The response is exactly the
    report of ``cevit analyze`` / :meth:`cevit.Detector.analyze`, except that ``source`` is the file name the
    client sent.
``GET /v1/health``
    liveness, whether the model is loaded, limits, queue state; never needs the API key.
``GET /v1/models``
    the loaded model: name, preset, checkpoint SHA-256, preprocessing contract, analysis defaults.
``GET /openapi.json``, ``GET /docs``
    the OpenAPI description, and a small self-contained page that renders it (works offline; FastAPI's
    Swagger UI would load its scripts from a CDN, so it is switched off).
``GET /``
    the web page (``static/``: plain HTML/CSS/JS, no external resources).

Status codes of ``/v1/analyze``: 200 report; 401 missing or wrong ``X-API-Key`` (when a key is configured);
413 upload above the size limit, or an image above the pixel limit; 415 not a multipart request, or a file
that is not a supported image or video (decided by content); 422 bad form fields, or a corrupt or truncated
file (the body is the library's error report: ``{"schema_version", "source", "error", "error_type"}`` with
the same ``error`` text as the CLI prints); 503 all workers and queue slots are taken (``Retry-After``
header); 500 an unexpected failure. Every response carries an ``X-Request-ID`` header; error bodies repeat it
as ``request_id``.

Design
------
* The upload is parsed from the raw request stream (python-multipart's streaming parser) and written to a
  temporary file in a directory that belongs to this app instance; it is refused with 413 as soon as it
  passes the limit (or at once when ``Content-Length`` already says so). The file is deleted in every case:
  after the analysis, on any error, when the client disconnects during the upload or while waiting.
* Admission is bounded: a request takes one of ``workers + queue_size`` slots *before* its body is read and
  holds it while uploading, waiting and being analysed, so at most that many uploads exist on disk at once.
  Without a free slot the answer is 503 with ``Retry-After`` (an estimate from recent analysis times).
* Inference runs in a ``ThreadPoolExecutor`` with ``workers`` threads; the event loop only awaits it (file
  writes and content sniffing also run in threads). A request whose client disconnects while still queued
  is taken off the queue.
* One JSON line per request is logged on the ``cevit.api.access`` logger (request id, method, path, status,
  duration, upload size, verdict); :class:`JsonLogFormatter` formats any record as one JSON object.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from cevit import __version__
from cevit.errors import CevitError, MediaError, MediaTooLargeError, UnsupportedMediaError
from cevit.inference.results import error_report

__all__ = [
    "create_app",
    "JsonLogFormatter",
    "DetectorLike",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_QUEUE_SIZE",
    "MAX_FRAMES",
]

log = logging.getLogger("cevit.api")
access_log = logging.getLogger("cevit.api.access")

MIB = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 200 * MIB
DEFAULT_QUEUE_SIZE = 8
MAX_FRAMES = 300  # upper bound of the ``frames`` form field
STATIC_DIR = Path(__file__).resolve().parent / "static"

_FIELD_LIMIT = 1024  # bytes per non-file form field
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers on top of the file itself
_FLUSH_BYTES = MIB  # buffered upload bytes written per thread hop
_FORM_FIELDS = ("file", "frames", "threshold")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; "
        b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
]


class DetectorLike(Protocol):
    """What the app needs from a detector (:class:`cevit.Detector` or a test double)."""

    model_info: dict[str, Any]

    def analyze(
        self, media_path: str | Path, *, num_frames: int | None = None, threshold: float | None = None
    ) -> dict[str, Any]: ...


class ApiError(Exception):
    """An HTTP error answered as JSON: ``{"error", "error_type", "request_id"}`` (or a given body)."""

    def __init__(
        self, status: int, message: str, *, error_type: str = "RequestError", headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body if body is not None else {"error": message, "error_type": error_type}


# -- logging ---------------------------------------------------------------------------------------------------
class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the record's ``fields`` dict, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# -- the bounded worker pool -----------------------------------------------------------------------------------
class _Slot:
    """One admission ticket of the pool; :meth:`release` is idempotent."""

    def __init__(self, pool: _InferencePool) -> None:
        self._pool = pool
        self._released = False

    def release(self) -> None:
        with self._pool._lock:
            if not self._released:
                self._released = True
                self._pool._in_flight -= 1


class _InferencePool:
    """``workers`` inference threads and at most ``queue_size`` further admitted requests."""

    def __init__(self, *, workers: int, queue_size: int) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cevit-infer")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._avg_seconds = 2.0  # running estimate of one analysis, for Retry-After

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_reserve(self) -> _Slot | None:
        with self._lock:
            if self._in_flight >= self.capacity:
                return None
            self._in_flight += 1
        return _Slot(self)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: queued work divided over the workers."""
        with self._lock:
            waiting = max(1, self._in_flight - self.workers + 1)
            estimate = self._avg_seconds * waiting / self.workers
        return int(min(300, max(1, math.ceil(estimate))))

    def submit(self, slot: _Slot, fn: Callable[[], Any], *, cleanup: Callable[[], None]) -> Future:
        """Run ``fn`` in a worker; when it finishes or is cancelled, call ``cleanup`` and free ``slot``."""

        def job() -> Any:
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                elapsed = time.perf_counter() - t0
                with self._lock:
                    self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * elapsed

        future = self._executor.submit(job)  # RuntimeError once shut down: the caller cleans up

        def done(_: Future) -> None:
            try:
                cleanup()
            finally:
                slot.release()

        future.add_done_callback(done)
        return future

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# -- uploads ---------------------------------------------------------------------------------------------------
@dataclass
class _Upload:
    """What the multipart parser found; the file bytes go to ``path``."""

    max_bytes: int
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
        if name not in _FORM_FIELDS:
            raise ApiError(422, f"unknown form field {name!r} (expected: file, frames, threshold)",
                           error_type="ValidationError")  # fmt: skip
        if name == "file":
            if self.filename is not None:
                raise ApiError(422, "send exactly one file per request", error_type="ValidationError")
            self.filename = _clean_filename(_decode(params.get(b"filename", b"")))
        self._kind, self._name = ("file" if name == "file" else "field"), name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self.size += end - start
            if self.size > self.max_bytes:
                raise _too_large(self.max_bytes)
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


def _clean_filename(name: str) -> str:
    """The client's file name for display (``source``): control characters removed, at most 255 characters."""
    name = _CONTROL_CHARS.sub("", name).strip()
    return name[:255] or "upload"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload too large: the limit is {limit / MIB:g} MB ({limit} bytes)",
                    error_type="MediaTooLargeError")  # fmt: skip


def _open_exclusive(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return os.fdopen(fd, "wb")


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - nothing else to do; logged for the operator
        log.exception("could not delete the temporary upload %s", path)


async def _receive_upload(request: Request, path: Path, max_bytes: int) -> _Upload:
    """Stream the multipart body into ``path`` (created here); raises ApiError on any problem."""
    _, params = parse_options_header(request.headers.get("content-type", "").encode("latin-1"))
    upload = _Upload(max_bytes=max_bytes)
    parser = MultipartParser(params[b"boundary"], callbacks=upload.callbacks())  # type: ignore[arg-type]
    fh = await anyio.to_thread.run_sync(_open_exclusive, path)
    try:
        async for chunk in request.stream():
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


def _parse_options(fields: dict[str, str]) -> tuple[int | None, float | None]:
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


def _media_error(exc: CevitError, path: Path, filename: str) -> ApiError:
    """Map a library error about the temporary file to an HTTP error that names the client's file instead."""
    report = error_report(filename, exc)
    tmp = str(path)
    report["error"] = report["error"].replace("file:" + tmp, filename).replace(tmp, filename)
    if isinstance(exc, UnsupportedMediaError):
        status = 415
    elif isinstance(exc, MediaTooLargeError):
        status = 413
    elif isinstance(exc, MediaError):
        status = 422
    else:  # FaceDetectionError, ModelError, ...: the service failed, not the input
        status = 500
    return ApiError(status, report["error"], body=report)


async def _wait_for_disconnect(receive: Callable[[], Awaitable[MutableMapping[str, Any]]]) -> None:
    """Return when the client has gone (ASGI ``http.disconnect``); the body must be fully read already."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # a server that answers at once with empty body messages must not spin


async def _await_job(request: Request, job: Future) -> dict[str, Any]:
    """The job's result; if the client disconnects first, take the job off the queue and raise ApiError 499."""
    result = asyncio.wrap_future(job)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        result.cancel()
        raise
    finally:
        watcher.cancel()
    if result in done:
        return result.result()
    result.cancel()  # cancels the job when it is still queued; a running job finishes, then cleans up
    raise ApiError(499, "client disconnected before the analysis finished", error_type="ClientDisconnect")


# -- middleware ------------------------------------------------------------------------------------------------
class _RequestContextMiddleware:
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
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
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


# -- the app ---------------------------------------------------------------------------------------------------
class _Service:
    """Per-app state (``app.state.cevit``)."""

    def __init__(
        self, *, detector: DetectorLike | None, weights: str | Path | None, device: str, max_upload_bytes: int,
        workers: int, queue_size: int, api_key: str | None, tmp_dir: str | Path | None,
    ) -> None:  # fmt: skip
        self.detector = detector
        self.weights = weights
        self.device = device
        self.max_upload_bytes = max_upload_bytes
        self.workers = workers
        self.queue_size = queue_size
        self.api_key = api_key
        self.configured_tmp_dir = None if tmp_dir is None else Path(tmp_dir)
        self.tmp_dir: Path | None = None
        self.pool: _InferencePool | None = None

    def model_description(self) -> dict[str, Any]:
        detector = self.detector
        info = dict(getattr(detector, "model_info", None) or {})
        pre = getattr(detector, "preprocessing", None)
        options = getattr(detector, "options", None)
        rule = getattr(options, "rule", None)
        return {
            "name": info.get("name"),
            "preset": info.get("preset"),
            "checkpoint_sha256": info.get("checkpoint_sha256"),
            "preprocessing": asdict(pre) if is_dataclass(pre) and not isinstance(pre, type) else pre,
            "defaults": None if options is None else {
                "num_frames": options.num_frames,
                "rule": getattr(rule, "name", None),
                "face_threshold": getattr(rule, "face_threshold", None),
                "label_threshold": getattr(rule, "label_threshold", None),
            },
            "device": None if getattr(detector, "device", None) is None else str(detector.device),
        }  # fmt: skip


def _service(request: Request) -> _Service:
    return request.app.state.cevit


def _api_key_check(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    expected = None if api_key is None else api_key.encode("utf-8")

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("x-api-key", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "missing or wrong API key: send it in the X-API-Key header",
                           error_type="Unauthorized", headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})

    return check


_ANALYZE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary",
                             "description": "one image (JPEG, PNG, WebP, BMP, TIFF, GIF) or video (MP4, MOV, "
                                            "AVI, MKV, WebM); the kind is decided by content"},
                    "frames": {"type": "integer", "minimum": 1, "maximum": MAX_FRAMES,
                               "description": "frames sampled evenly per video (default: the server's, 30)"},
                    "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                                  "description": "label threshold: FAKE above it (default: the rule's)"},
                },
            }
        }
    },
}  # fmt: skip


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "missing or wrong X-API-Key", 413: "upload or image too large", 415: "not a supported image or video",
        422: "bad form fields, or a corrupt/truncated file (body: the error report)",
        503: "busy: all workers and queue slots taken (see Retry-After)", 500: "internal error",
    }  # fmt: skip
    return {code: {"description": text[code]} for code in codes}


def create_app(
    *, detector: DetectorLike | None = None, weights: str | Path | None = None, device: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, workers: int = 1, queue_size: int = DEFAULT_QUEUE_SIZE,
    api_key: str | None = None, tmp_dir: str | Path | None = None,
) -> FastAPI:  # fmt: skip
    """Build the service.

    Args:
        detector: an already loaded detector (tests inject fakes here); otherwise one is loaded with
            :func:`cevit.load_model` (``weights``, ``device``) once, when the app starts (lifespan).
        max_upload_bytes: larger uploads get 413.
        workers: inference threads; queue_size: further requests admitted while all workers are busy.
        api_key: when set, ``/v1/analyze`` and ``/v1/models`` need it in the ``X-API-Key`` header.
        tmp_dir: where uploads are written; default: a fresh private directory made at start-up and removed at
            shutdown. A given directory is created if missing and left in place.
    """
    from cevit.errors import ConfigError

    if max_upload_bytes < 1:
        raise ConfigError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    if workers < 1 or queue_size < 0:
        raise ConfigError(f"workers must be >= 1 and queue_size >= 0, got {workers} and {queue_size}")
    if api_key is not None and not api_key:
        raise ConfigError("the API key must not be empty")
    service = _Service(detector=detector, weights=weights, device=device, max_upload_bytes=max_upload_bytes,
                       workers=workers, queue_size=queue_size, api_key=api_key, tmp_dir=tmp_dir)  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service.detector is None:
            from cevit.inference.pipeline import load_model

            service.detector = await anyio.to_thread.run_sync(partial(load_model, weights=weights, device=device))
        created = service.configured_tmp_dir is None
        if created:
            service.tmp_dir = Path(tempfile.mkdtemp(prefix="cevit-api-"))
        else:
            service.tmp_dir = service.configured_tmp_dir
            service.tmp_dir.mkdir(parents=True, exist_ok=True)
        service.pool = _InferencePool(workers=workers, queue_size=queue_size)
        log.info("service ready", extra={"fields": {"event": "startup", "model": service.model_description()["name"],
                                                     "workers": workers, "queue_size": queue_size,
                                                     "tmp_dir": str(service.tmp_dir)}})  # fmt: skip
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.pool.shutdown)
            if created:
                shutil.rmtree(service.tmp_dir, ignore_errors=True)

    app = FastAPI(
        title="cevit",
        version=__version__,
        summary="Face-deepfake detection with the Cross Efficient ViT",
        description="Upload an image or video to POST /v1/analyze; the answer is cevit's JSON report. "
        "The machine-readable description of the API is /openapi.json.",
        docs_url=None,  # Swagger UI needs a CDN: /docs is our own offline page instead
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.cevit = service
    app.add_middleware(_RequestContextMiddleware)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = {**exc.body, "request_id": getattr(request.state, "request_id", None)}
        request.state.log_fields["error"] = exc.message
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    auth = [Depends(_api_key_check(api_key))]

    @app.get("/v1/health", tags=["service"], summary="Liveness and readiness")
    async def health(request: Request) -> dict[str, Any]:
        svc = _service(request)
        pool = svc.pool
        return {
            "status": "ok",
            "model_loaded": svc.detector is not None,
            "version": __version__,
            "api_key_required": svc.api_key is not None,
            "limits": {"max_upload_bytes": svc.max_upload_bytes, "max_frames": MAX_FRAMES},
            "workers": svc.workers,
            "queue_capacity": None if pool is None else pool.capacity,
            "in_flight": None if pool is None else pool.in_flight,
        }

    @app.get("/v1/models", tags=["service"], summary="The loaded model", dependencies=auth,
             responses=_error_responses(401))  # fmt: skip
    async def models(request: Request) -> dict[str, Any]:
        return {"models": [_service(request).model_description()]}

    @app.post(
        "/v1/analyze", tags=["analysis"], summary="Analyse one image or video", dependencies=auth,
        openapi_extra={"requestBody": _ANALYZE_BODY},
        responses={200: {"description": "the report (see the README, 'The report')"},
                   **_error_responses(401, 413, 415, 422, 503, 500)},
    )  # fmt: skip
    async def analyze(request: Request) -> JSONResponse:
        from cevit.media import sniff_media_type

        svc = _service(request)
        assert svc.pool is not None and svc.tmp_dir is not None and svc.detector is not None
        fields = request.state.log_fields
        ctype, params = parse_options_header(request.headers.get("content-type", "").encode("latin-1"))
        if ctype != b"multipart/form-data" or not params.get(b"boundary"):
            raise ApiError(415, "send the file as multipart/form-data in the field 'file'",
                           error_type="UnsupportedMediaError")  # fmt: skip
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > svc.max_upload_bytes + _MULTIPART_SLACK:
            raise _too_large(svc.max_upload_bytes)
        slot = svc.pool.try_reserve()
        if slot is None:
            raise ApiError(503, "server busy: all workers and queue slots are taken; retry later",
                           error_type="Busy", headers={"Retry-After": str(svc.pool.retry_after())})  # fmt: skip
        path = svc.tmp_dir / f"upload-{uuid.uuid4().hex}"
        job: Future | None = None
        try:
            try:
                upload = await _receive_upload(request, path, svc.max_upload_bytes)
            except ClientDisconnect:
                raise ApiError(499, "client disconnected during the upload", error_type="ClientDisconnect") from None
            filename = upload.filename or "upload"
            fields.update(upload_bytes=upload.size, filename=filename)
            frames, threshold = _parse_options(upload.fields)
            try:
                fields["media_type"] = await anyio.to_thread.run_sync(sniff_media_type, path)
            except CevitError as exc:
                raise _media_error(exc, path, filename) from None
            analyze_fn = partial(svc.detector.analyze, media_path=path, num_frames=frames, threshold=threshold)
            try:
                job = svc.pool.submit(slot, analyze_fn, cleanup=partial(_unlink, path))
            except RuntimeError:
                raise ApiError(503, "server shutting down", error_type="Busy", headers={"Retry-After": "5"}) from None
            try:
                report = await _await_job(request, job)
            except CevitError as exc:
                raise _media_error(exc, path, filename) from None
            except ApiError:  # the client went away (499)
                raise
            except Exception as exc:
                log.exception("analysis failed", extra={"fields": {"request_id": request.state.request_id}})
                raise ApiError(500, f"{filename}: internal error while analysing ({type(exc).__name__})",
                               error_type="InternalError") from None  # fmt: skip
        finally:
            if job is None:  # never reached the pool: clean up here (else the job's done-callback does)
                _unlink(path)
                slot.release()
        report = {**report, "source": filename}
        fields.update(prediction=report.get("prediction"), faces=len(report.get("faces") or []),
                      processing_time=report.get("processing_time"))  # fmt: skip
        return JSONResponse(report)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app

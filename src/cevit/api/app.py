"""The FastAPI application of ``cevit serve``: the JSON API, the web page and the upload/queue machinery.

Endpoints
---------
``POST /v1/analyze``
    multipart/form-data with one image or video in the field ``file`` and optional fields ``frames``
    (1–300, frames sampled per video) and ``threshold`` (0–1, FAKE above it). The response is exactly the
    report of ``cevit analyze`` / :meth:`cevit.Detector.analyze`, except that ``source`` is the file name the
    client sent.
``GET /v1/health``
    liveness, whether the model is loaded, limits, queue state, the shared model thread's counters
    (``model_batches``: model calls, faces, most requests and faces in one call; null for a detector that is not
    the library's); never needs the API key.
``GET /v1/models``
    the loaded model: name, preset, checkpoint SHA-256, preprocessing contract, analysis defaults.
``GET /openapi.json``, ``GET /docs``
    the OpenAPI description, and a small self-contained page that renders it (works offline; FastAPI's
    Swagger UI would load its scripts from a CDN, so it is switched off).
``GET /``
    the web page (``static/``: plain HTML/CSS/JS, no external resources).

Status codes of ``/v1/analyze``: 200 report; 401 missing or wrong ``X-API-Key`` (when a key is configured);
408 an upload that pauses or lasts too long (``upload_timeouts``); 413 upload above the size limit, or media above a size limit of the resource policy (pixels, frame pixels,
declared video duration, estimated memory); 415 not a multipart request, or a file that is not a supported image
or video (decided by content); 422 bad form fields, a corrupt or truncated file, or a work limit of the resource
policy (wall time per item, faces per frame) (the body is the library's error report: ``{"schema_version",
"source", "error", "error_type"}`` with the same ``error`` text as the CLI prints); 503 all workers and queue
slots are taken, or the temporary space for uploads is full (``Retry-After`` header); 500 an unexpected failure. Every response carries an ``X-Request-ID`` header; error bodies repeat it
as ``request_id``.

Design (one module per concern)
-------------------------------
* :mod:`cevit.api.uploads`: the upload is parsed from the raw request stream (python-multipart's streaming
  parser) and written to a temporary file in a directory that belongs to this app instance; it is refused
  with 413 as soon as it passes the limit (or at once when ``Content-Length`` already says so). The file is
  deleted in every case: after the analysis, on any error, when the client disconnects during the upload or
  while waiting.
* :mod:`cevit.api.pool`: admission is bounded: a request takes one of ``workers + queue_size`` slots *before*
  its body is read and holds it while uploading, waiting and being analysed, so at most that many uploads
  exist on disk at once. Without a free slot the answer is 503 with ``Retry-After`` (an estimate from recent
  analysis times). Inference runs in a ``ThreadPoolExecutor`` with ``workers`` threads; the event loop only
  awaits it (file writes and content sniffing also run in threads). A request whose client disconnects
  while still queued is taken off the queue.
* shared model batches (:class:`cevit.inference.batch.SharedScorer`): with the library's detector and two or more
  workers (one worker has nobody to share with: it scores its own faces, measured faster), the app owns
  one model thread from start-up to shutdown; each worker decodes and detects its request and hands the face
  crops to it, and it scores the faces of every request waiting at that moment in one call (up to the detector's
  ``batch_size`` faces), so concurrent requests share model calls. A failed shared call is redone request by
  request (one request's faces never fail another's). Explained requests score the same way; their gradient
  passes run in their worker while holding the model (no shared call runs meanwhile). torch threads: each
  worker and the model thread get ``threads // (workers + 1)`` (at least 1), as in the pipelined batch, so they
  share the cores instead of oversubscribing them. ``GET /v1/health`` shows the model thread's counters (``model_batches``).
* :mod:`cevit.api.middleware`: request ids and security headers; one JSON line per request on the
  ``cevit.api.access`` logger (request id, method, path, status, duration, upload size, verdict);
  :class:`~cevit.api.logging.JsonLogFormatter` formats any record as one JSON object.
* :mod:`cevit.api.routes`: the endpoints, their OpenAPI description and the per-app state (``Service``).
* this module: :func:`create_app` checks the settings, loads the model at start-up (lifespan), checks the API
  key and wires the parts together.
"""

from __future__ import annotations

import hmac
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from cevit import __version__
from cevit.api.errors import ApiError
from cevit.api.logging import JsonLogFormatter
from cevit.api.middleware import RequestContextMiddleware
from cevit.api.pool import DEFAULT_QUEUE_SIZE, InferencePool
from cevit.api.routes import STATIC_DIR, Service, add_routes
from cevit.api.uploads import DEFAULT_MAX_TEMP_BYTES, DEFAULT_MAX_UPLOAD_BYTES, MAX_FRAMES, UploadTimeouts
from cevit.inference.batch import set_torch_threads, shared_scorer_for, torch_threads
from cevit.inference.protocol import DetectorProtocol

__all__ = [
    "create_app",
    "JsonLogFormatter",
    "DetectorLike",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_QUEUE_SIZE",
    "MAX_FRAMES",
]

log = logging.getLogger("cevit.api")

#: What the app needs from a detector: :class:`cevit.inference.protocol.DetectorProtocol` (the 0.2 name).
DetectorLike = DetectorProtocol


def _api_key_check(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    expected = None if api_key is None else api_key.encode("utf-8")

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("x-api-key", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):  # constant time
            raise ApiError(401, "missing or wrong API key: send it in the X-API-Key header",
                           error_type="Unauthorized", headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})  # fmt: skip

    return check


def create_app(
    *, detector: DetectorProtocol | None = None, weights: str | Path | None = None, device: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, workers: int = 1, queue_size: int = DEFAULT_QUEUE_SIZE,
    api_key: str | None = None, tmp_dir: str | Path | None = None, max_temp_bytes: int | None = None,
    upload_timeouts: UploadTimeouts | None = None,
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
        max_temp_bytes: the bytes of all uploads on disk at once (default: ``DEFAULT_MAX_TEMP_BYTES``, 1 GiB, or
            ``max_upload_bytes`` when larger); an upload that would pass it gets 503 while it streams.
        upload_timeouts: the longest pause and the longest time of an upload (default 30 s / 600 s); a slower
            client gets 408 and frees its admission slot.
    """
    from cevit.errors import ConfigError

    if max_upload_bytes < 1:
        raise ConfigError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    if workers < 1 or queue_size < 0:
        raise ConfigError(f"workers must be >= 1 and queue_size >= 0, got {workers} and {queue_size}")
    if max_temp_bytes is None:
        max_temp_bytes = max(DEFAULT_MAX_TEMP_BYTES, max_upload_bytes)
    if max_temp_bytes < max_upload_bytes:
        raise ConfigError(f"max_temp_bytes ({max_temp_bytes}) must be at least max_upload_bytes ({max_upload_bytes})")
    if api_key is not None and not api_key:
        raise ConfigError("the API key must not be empty")
    service = Service(detector=detector, weights=weights, device=device, max_upload_bytes=max_upload_bytes,
                      workers=workers, queue_size=queue_size, api_key=api_key, tmp_dir=tmp_dir,
                      max_temp_bytes=max_temp_bytes, upload_timeouts=upload_timeouts or UploadTimeouts())  # fmt: skip

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
        # One model thread for the app's lifetime: the pool workers decode and detect, and hand their faces to it,
        # so the faces of concurrent requests share model calls (None for a detector that is not the library's).
        scorer = service.scorer = shared_scorer_for(service.detector, workers=workers)
        thread_setup, restore_threads = None, None
        if scorer is not None:
            restore_threads = torch_threads()
            thread_setup = partial(set_torch_threads, scorer.threads)
        service.pool = InferencePool(workers=workers, queue_size=queue_size, thread_setup=thread_setup)
        log.info("service ready", extra={"fields": {"event": "startup", "model": service.model_description()["name"],
                                                     "workers": workers, "queue_size": queue_size,
                                                     "shared_model_batches": scorer is not None,
                                                     "torch_threads": None if scorer is None else scorer.threads,
                                                     "tmp_dir": str(service.tmp_dir)}})  # fmt: skip
        try:
            if scorer is not None:
                scorer.start()
            yield
        finally:
            # the pool first: its running analyses finish (they need the model thread), queued ones are cancelled
            await anyio.to_thread.run_sync(service.pool.shutdown)
            if scorer is not None:
                await anyio.to_thread.run_sync(scorer.close)
                set_torch_threads(restore_threads)  # the stage threads changed torch's process-wide setting
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
    app.add_middleware(RequestContextMiddleware)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = {**exc.body, "request_id": getattr(request.state, "request_id", None)}
        request.state.log_fields["error"] = exc.message
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    add_routes(app, auth=[Depends(_api_key_check(api_key))])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app

"""The endpoints of the service, their OpenAPI description and the per-app state they read.

:func:`add_routes` registers ``GET /v1/health``, ``GET /v1/models``, ``POST /v1/analyze``, ``GET /`` and
``GET /docs`` on an app whose ``app.state.cevit`` is a :class:`Service`. ``POST /v1/analyze`` only parses
the request (:mod:`cevit.api.uploads`), runs the detector's ``analyze`` in the worker pool
(:mod:`cevit.api.pool`) and returns the library's report with ``source`` set to the client's file name.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, is_dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import FileResponse, JSONResponse
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from cevit import __version__
from cevit.api.errors import ApiError, too_large
from cevit.api.pool import InferencePool
from cevit.api.uploads import (
    MAX_FRAMES,
    MULTIPART_SLACK,
    TempSpace,
    UploadTimeouts,
    parse_analysis_fields,
    parse_explain_field,
    receive_upload,
    unlink_quietly,
)
from cevit.errors import CevitError, MediaError, MediaTooLargeError, UnsupportedMediaError
from cevit.inference.protocol import DetectorProtocol
from cevit.inference.results import AnalysisError

if TYPE_CHECKING:
    from cevit.inference.batch import SharedScorer

__all__ = ["STATIC_DIR", "Service", "add_routes", "ANALYZE_BODY", "error_responses"]

log = logging.getLogger("cevit.api")

STATIC_DIR = Path(__file__).resolve().parent / "static"


class Service:
    """Per-app state (``app.state.cevit``)."""

    def __init__(
        self, *, detector: DetectorProtocol | None, weights: str | Path | None, device: str, max_upload_bytes: int,
        workers: int, queue_size: int, api_key: str | None, tmp_dir: str | Path | None, max_temp_bytes: int,
        upload_timeouts: UploadTimeouts,
    ) -> None:  # fmt: skip
        self.detector = detector
        self.upload_timeouts = upload_timeouts
        self.temp_space = TempSpace(cap=max_temp_bytes)
        self.weights = weights
        self.device = device
        self.max_upload_bytes = max_upload_bytes
        self.workers = workers
        self.queue_size = queue_size
        self.api_key = api_key
        self.configured_tmp_dir = None if tmp_dir is None else Path(tmp_dir)
        self.tmp_dir: Path | None = None
        self.pool: InferencePool | None = None
        #: the model thread shared by the workers (set at start-up; None for a detector that is not the library's)
        self.scorer: SharedScorer | None = None

    def model_batches(self) -> dict[str, Any] | None:
        """The shared model thread's counters, or None without one."""
        scorer = self.scorer
        if scorer is None:
            return None
        s = scorer.stats
        return {"model_calls": s.model_calls, "faces_scored": s.faces_scored,
                "max_items_per_call": s.max_items_per_call, "max_faces_per_call": s.max_faces_per_call,
                "failed_calls": s.failed_calls, "waiting": scorer.pending, "torch_threads": scorer.threads}  # fmt: skip

    def model_description(self) -> dict[str, Any]:
        detector = self.detector
        info = dict(getattr(detector, "model_info", None) or {})
        pre = getattr(detector, "preprocessing", None)
        options = getattr(detector, "options", None)
        rule = getattr(options, "rule", None)
        device = getattr(detector, "device", None)
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
            "device": None if device is None else str(device),
        }  # fmt: skip


def _service(request: Request) -> Service:
    return request.app.state.cevit


# -- OpenAPI ---------------------------------------------------------------------------------------------------
ANALYZE_BODY = {
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
                    "explain": {"type": "string", "enum": ["false", "true", "gradcam", "attention"],
                                "description": "heat maps: the report gets an 'explanations' block with the "
                                               "per-face overlays, the annotated frame, a contact sheet and "
                                               "(videos) the score timeline inline as PNG data URLs (slower)"},
                },
            }
        }
    },
}  # fmt: skip


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "missing or wrong X-API-Key",
        408: "the upload was too slow (a pause or the whole upload above the service's upload timeouts)",
        413: "upload, image or video above a size limit (bytes, pixels, frame pixels, duration, estimated memory)",
        415: "not a multipart request, or not a supported image or video",
        422: "bad form fields, a corrupt/truncated file, or a work limit (time, faces per frame) (body: the error "
             "report)",
        503: "busy: all workers and queue slots taken, or the temporary upload space full (see Retry-After)",
        500: "internal error",
    }  # fmt: skip
    return {code: {"description": text[code]} for code in codes}


# -- analysis helpers ------------------------------------------------------------------------------------------
def _explained_report(
    detector: DetectorProtocol, path: Path, *, num_frames: int | None, threshold: float | None, method: str | bool
) -> dict[str, Any]:
    """The report with its ``explanations`` block, images inline (runs in a worker)."""
    from cevit.explain.render import inline_explanations

    result = detector.analyze_result(path, num_frames=num_frames, threshold=threshold, explain=method)
    return {**result.to_dict(), "explanations": inline_explanations(result)}


def _with_scorer(scorer: SharedScorer, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (in a worker) with ``scorer`` as the thread's item scorer: its faces go to the shared model."""
    with scorer.use():
        return fn()


def _discard(path: Path, space: TempSpace, charged: int) -> None:
    """Delete an upload's temporary file and give its bytes back to the temporary space."""
    unlink_quietly(path)
    space.release(charged)


def _media_error(exc: CevitError, path: Path, filename: str) -> ApiError:
    """Map a library error about the temporary file to an HTTP error that names the client's file instead."""
    report = AnalysisError.from_exception(filename, exc).to_dict()
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


# -- routes ----------------------------------------------------------------------------------------------------
def add_routes(app: FastAPI, *, auth: Sequence[Depends]) -> None:
    """Register the endpoints on ``app``; ``auth``: the dependencies that guard the API-key protected ones."""
    auth = list(auth)

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
            "model_batches": svc.model_batches(),
        }

    @app.get("/v1/models", tags=["service"], summary="The loaded model", dependencies=auth,
             responses=error_responses(401))  # fmt: skip
    async def models(request: Request) -> dict[str, Any]:
        return {"models": [_service(request).model_description()]}

    @app.post(
        "/v1/analyze", tags=["analysis"], summary="Analyse one image or video", dependencies=auth,
        openapi_extra={"requestBody": ANALYZE_BODY},
        responses={200: {"description": "the report (see the README, 'The report')"},
                   **error_responses(401, 408, 413, 415, 422, 503, 500)},
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
        if length.isdigit() and int(length) > svc.max_upload_bytes + MULTIPART_SLACK:
            raise too_large(svc.max_upload_bytes)
        slot = svc.pool.try_reserve()
        if slot is None:
            raise ApiError(503, "server busy: all workers and queue slots are taken; retry later",
                           error_type="Busy", headers={"Retry-After": str(svc.pool.retry_after())})  # fmt: skip
        path = svc.tmp_dir / f"upload-{uuid.uuid4().hex}"
        job: Future | None = None
        charged = 0  # bytes of temporary space this request holds once its upload is complete
        try:
            try:
                upload = await receive_upload(request, path, svc.max_upload_bytes, space=svc.temp_space,
                                              timeouts=svc.upload_timeouts)  # fmt: skip
                charged = upload.charged
            except ClientDisconnect:
                raise ApiError(499, "client disconnected during the upload", error_type="ClientDisconnect") from None
            filename = upload.filename or "upload"
            fields.update(upload_bytes=upload.size, filename=filename)
            frames, threshold = parse_analysis_fields(upload.fields)
            explain = parse_explain_field(upload.fields)
            try:
                fields["media_type"] = await anyio.to_thread.run_sync(sniff_media_type, path)
            except CevitError as exc:
                raise _media_error(exc, path, filename) from None
            if explain is None:
                analyze_fn = partial(svc.detector.analyze, media_path=path, num_frames=frames, threshold=threshold)
            else:
                analyze_fn = partial(_explained_report, svc.detector, path, num_frames=frames, threshold=threshold,
                                     method=explain)  # fmt: skip
            if svc.scorer is not None:
                analyze_fn = partial(_with_scorer, svc.scorer, analyze_fn)
            try:
                job = svc.pool.submit(slot, analyze_fn, cleanup=partial(_discard, path, svc.temp_space, charged))
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
                _discard(path, svc.temp_space, charged)
                slot.release()
        report = {**report, "source": filename}
        fields.update(prediction=report.get("prediction"), faces=len(report.get("faces") or []),
                      processing_time=report.get("processing_time"))  # fmt: skip
        if "status" in report:  # "ok" | "no_face" (schema 1.2); the log's own "status" is the HTTP status
            fields["result"] = report["status"]
        return JSONResponse(report)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html; charset=utf-8")

"""The HTTP service (cevit.api): endpoints, error statuses, upload clean-up, the bounded queue, logs, ``serve``.

Runs the app in-process through httpx's ASGI transport (lifespan driven by hand); the model is the random-weight
``tiny_checkpoint`` (pipeline mechanics only) or a fake detector where timing must be controlled.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the 'api' extra (fastapi) is not installed")
pytest.importorskip("python_multipart", reason="the 'api' extra (python-multipart) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from cevit.api.app import JsonLogFormatter, create_app  # noqa: E402
from cevit.errors import FaceDetectionError, ModelError  # noqa: E402
from conftest import PROJECT_ROOT, SAMPLE_FACE, write_test_video  # noqa: E402

JPEG = SAMPLE_FACE.read_bytes()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    from cevit.inference.pipeline import load_model

    return load_model(weights=tiny_checkpoint, device="cpu")


@asynccontextmanager
async def running(app):
    """Start the app (lifespan) and yield a client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


def files(name: str = "astronaut.jpg", data: bytes = JPEG) -> dict:
    return {"file": (name, data, "application/octet-stream")}


async def wait_until(condition, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds; ``timeout`` only caps a hang (a loaded CI machine can be very slow)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def assert_empty(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == []


class FakeDetector:
    """Returns a canned report; ``hold`` makes analyze block until ``release`` is set."""

    model_info = {"name": "fake", "preset": None, "checkpoint_sha256": None}

    def __init__(self, *, hold: bool = False, error: BaseException | None = None) -> None:
        self.hold = hold
        self.error = error
        self.release = threading.Event()
        self.calls: list[Path] = []

    def analyze(self, media_path, *, num_frames=None, threshold=None):
        self.calls.append(Path(media_path))
        assert Path(media_path).is_file(), "the upload must exist while it is analysed"
        if self.hold:
            assert self.release.wait(120), "test never released the fake detector"
        if self.error is not None:
            raise self.error
        return {"source": str(media_path), "media_type": "image", "prediction": "REAL", "confidence": 0.9,
                "faces": [], "processing_time": 0.0}  # fmt: skip


# -- endpoints ---------------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_analyze_with_explain_returns_the_overlays_inline(detector, tmp_path):
    import base64

    app = create_app(detector=detector, tmp_dir=tmp_path / "uploads")
    async with running(app) as client:
        r = await client.post("/v1/analyze", files=files(), data={"explain": "attention"})
        plain = (await client.post("/v1/analyze", files=files())).json()
        bad = await client.post("/v1/analyze", files=files(), data={"explain": "lime"})
    assert r.status_code == 200, r.text
    report = r.json()
    block = report["explanations"]
    assert block["method"] == "attention" and report["prediction"] == plain["prediction"]
    assert "explanations" not in plain
    images = [block["files"]["annotated"], block["files"]["contact_sheet"], block["faces"][0]["overlay"]]
    for url in images:
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert bad.status_code == 422 and "explain must be" in bad.json()["error"]


@pytest.mark.anyio
async def test_analyze_image_returns_the_python_api_report(detector, tmp_path):
    uploads = tmp_path / "uploads"
    app = create_app(detector=detector, tmp_dir=uploads)
    async with running(app) as client:
        r = await client.post("/v1/analyze", files=files("my photo.jpg"))
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    got = r.json()
    expected = detector.analyze(media_path=SAMPLE_FACE)
    for report in (got, expected):
        report.pop("processing_time")
        report.pop("timings")
    assert got["source"] == "my photo.jpg"  # the client's name, not the temporary path
    expected["source"] = "my photo.jpg"
    assert got == expected
    assert got["schema_version"] == "1.2" and got["status"] == "ok"
    assert_empty(uploads)


@pytest.mark.anyio
async def test_no_face_report_says_so(detector, tmp_path):
    """No face anywhere: status "no_face" (schema 1.2) beside the unchanged 1.1 keys (REAL, 0.99)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(buf, format="PNG")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("cevit.api.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        app = create_app(detector=detector, tmp_dir=tmp_path)
        async with running(app) as client:
            r = await client.post("/v1/analyze", files=files("gray.png", buf.getvalue()))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["status"] == "no_face" and report["faces"] == [] and report["score"] is None
    assert (report["prediction"], report["confidence"], report["note"]) == ("REAL", 0.99, "No face detected")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["status"] == 200 and line["result"] == "no_face"  # the HTTP status stays the log's "status"
    assert_empty(tmp_path)


@pytest.mark.anyio
async def test_video_frames_and_threshold_fields(detector, face_rgb, tmp_path):
    import numpy as np

    frame = np.ascontiguousarray(face_rgb[:256, :256])
    video = write_test_video(tmp_path / "clip.mp4", [frame] * 6)
    uploads = tmp_path / "uploads"
    app = create_app(detector=detector, tmp_dir=uploads)
    async with running(app) as client:
        r = await client.post("/v1/analyze", files=files("clip.mp4", video.read_bytes()), data={"frames": "3"})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["media_type"] == "video" and report["source"] == "clip.mp4"
        assert report["frames_analyzed"] == 3 and len(report["frame_predictions"]) == 3
        fake = (await client.post("/v1/analyze", files=files(), data={"threshold": "0"})).json()
        real = (await client.post("/v1/analyze", files=files(), data={"threshold": "1"})).json()
    assert fake["aggregation"]["label_threshold"] == 0.0 and fake["prediction"] == "FAKE"
    assert real["aggregation"]["label_threshold"] == 1.0 and real["prediction"] == "REAL"
    assert_empty(uploads)


@pytest.mark.anyio
async def test_health_models_docs_and_page(detector, tmp_path):
    from cevit.checkpoint import file_sha256

    app = create_app(detector=detector, tmp_dir=tmp_path / "u", max_upload_bytes=12345)
    async with running(app) as client:
        health = (await client.get("/v1/health")).json()
        models = (await client.get("/v1/models")).json()["models"]
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
        page = await client.get("/")
        script = await client.get("/static/app.js")
    assert health["status"] == "ok" and health["model_loaded"] is True and health["api_key_required"] is False
    assert health["limits"]["max_upload_bytes"] == 12345 and health["queue_capacity"] == 1 + 8
    assert len(models) == 1
    assert models[0]["checkpoint_sha256"] == file_sha256(detector.checkpoint_path)
    assert models[0]["preset"] == "cross_efficient_vit_v1" and models[0]["name"] == detector.checkpoint_path.name
    assert models[0]["preprocessing"]["input_size"] == 96 and models[0]["defaults"]["num_frames"] == 30
    body = spec["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"] and set(body["properties"]) == {"file", "frames", "threshold", "explain"}
    assert {"401", "413", "415", "422", "503"} <= set(spec["paths"]["/v1/analyze"]["post"]["responses"])
    assert docs.status_code == 200 and "/static/docs.js" in docs.text  # offline docs page, no Swagger CDN
    assert page.status_code == 200 and 'id="verdict"' in page.text and 'src="/static/app.js"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200 and "XMLHttpRequest" in script.text


def test_static_files_are_local_and_packaged():
    from importlib import resources

    static = resources.files("cevit.api").joinpath("static")
    names = ("index.html", "app.js", "style.css", "docs.html", "docs.js")
    for name in names:
        assert static.joinpath(name).is_file(), name
        text = static.joinpath(name).read_text(encoding="utf-8")
        # Every referenced resource is served by the package itself: no CDN, works offline.
        for ref in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text) + re.findall(r"url\(([^)]*)\)", text):
            assert ref.startswith(("/", "data:", "#")), f"{name} references {ref!r}"
        assert not re.search(r"""(?:fetch|import)\(\s*["']https?:""", text), name


@pytest.mark.anyio
async def test_model_loaded_once_at_startup_from_weights(tiny_checkpoint):
    from cevit.checkpoint import file_sha256

    app = create_app(weights=tiny_checkpoint, device="cpu")
    assert app.state.cevit.detector is None  # nothing loaded before start-up
    async with running(app) as client:
        loaded = app.state.cevit.detector
        tmp_dir = app.state.cevit.tmp_dir
        assert tmp_dir.is_dir() and tmp_dir.name.startswith("cevit-api-")
        assert (await client.get("/v1/models")).json()["models"][0]["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
        assert (await client.post("/v1/analyze", files=files())).status_code == 200
        assert app.state.cevit.detector is loaded
    assert not tmp_dir.exists()  # the app's own temporary folder is removed at shutdown


@pytest.mark.anyio
async def test_startup_without_weights_fails_clearly(monkeypatch):
    import cevit.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_weights_path", lambda preset: None)
    app = create_app()
    with pytest.raises(ModelError, match="no trained weights are bundled"):
        async with app.router.lifespan_context(app):
            pass


# -- error statuses --------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_api_key_401(tmp_path, monkeypatch):
    import cevit.api.app as app_module

    compared = []
    real = app_module.hmac.compare_digest
    monkeypatch.setattr(app_module.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    fake = FakeDetector()
    app = create_app(detector=fake, api_key="s3cret", tmp_dir=tmp_path)
    async with running(app) as client:
        assert (await client.get("/v1/health")).json()["api_key_required"] is True  # liveness stays open
        missing = await client.get("/v1/models")
        wrong = await client.get("/v1/models", headers={"X-API-Key": "s3cre"})
        upload = await client.post("/v1/analyze", files=files())
        good = await client.post("/v1/analyze", files=files(), headers={"X-API-Key": "s3cret"})
        assert (await client.get("/v1/models", headers={"X-API-Key": "s3cret"})).status_code == 200
    assert missing.status_code == wrong.status_code == upload.status_code == 401
    assert "X-API-Key" in missing.json()["error"] and "www-authenticate" in missing.headers
    assert missing.json()["request_id"] == missing.headers["x-request-id"]
    assert good.status_code == 200 and len(fake.calls) == 1
    assert compared  # constant-time comparison
    assert_empty(tmp_path)


def multipart(boundary: str, *, file: tuple[str, bytes] | None = None, **fields: str) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + file[1] + b"\r\n")  # fmt: skip
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


@pytest.mark.anyio
async def test_upload_too_large_413(tmp_path):
    fake = FakeDetector()
    app = create_app(detector=fake, tmp_dir=tmp_path, max_upload_bytes=1000)
    boundary = "cevitboundary"
    body = multipart(boundary, file=("big.jpg", JPEG[:5000]))

    async def chunked():  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(body), 700):
            yield body[start : start + 700]

    async with running(app) as client:
        by_header = await client.post("/v1/analyze", files=files("big.jpg", JPEG[:1000] * 100))
        streamed = await client.post("/v1/analyze", content=chunked(),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        at_limit = await client.post("/v1/analyze", files=files("ok.jpg", JPEG[:1000]))
        assert app.state.cevit.pool.in_flight == 0
    assert by_header.status_code == streamed.status_code == 413
    assert "the limit is" in streamed.json()["error"] and "1000 bytes" in streamed.json()["error"]
    assert at_limit.status_code == 200 and len(fake.calls) == 1  # exactly at the limit is accepted
    assert_empty(tmp_path)


@pytest.mark.anyio
async def test_unsupported_media_415(tmp_path):
    fake = FakeDetector()
    app = create_app(detector=fake, tmp_dir=tmp_path)
    async with running(app) as client:
        text = await client.post("/v1/analyze", files=files("notes.jpg", b"hello, this is not an image\n" * 10))
        not_multipart = await client.post("/v1/analyze", json={"file": "x"})
    assert text.status_code == 415
    assert text.json()["error"].startswith("notes.jpg: not a supported image or video")
    assert text.json()["error_type"] == "UnsupportedMediaError" and text.json()["source"] == "notes.jpg"
    assert not_multipart.status_code == 415 and "multipart/form-data" in not_multipart.json()["error"]
    assert fake.calls == []
    assert_empty(tmp_path)


@pytest.mark.anyio
async def test_corrupt_media_422_with_the_cli_error_text(tiny_checkpoint, face_rgb, tmp_path, monkeypatch, capsys):
    from cevit.cli.main import main

    bad_jpeg = JPEG[:3000]
    video = write_test_video(tmp_path / "v.mp4", [face_rgb[:64, :64].copy()] * 3).read_bytes()
    bad_video = video[:400]
    (tmp_path / "broken.jpg").write_bytes(bad_jpeg)
    (tmp_path / "broken.mp4").write_bytes(bad_video)
    monkeypatch.chdir(tmp_path)
    code = main(["analyze", "broken.jpg", "broken.mp4", "--weights", str(tiny_checkpoint), "--device", "cpu", "-q"])
    assert code == 1
    cli_errors = [line.removeprefix("cevit: error: ") for line in capsys.readouterr().err.splitlines()]

    uploads = tmp_path / "uploads"
    app = create_app(weights=tiny_checkpoint, device="cpu", tmp_dir=uploads)
    async with running(app) as client:
        jpeg = await client.post("/v1/analyze", files=files("broken.jpg", bad_jpeg))
        mp4 = await client.post("/v1/analyze", files=files("broken.mp4", bad_video))
        empty = await client.post("/v1/analyze", files=files("empty.png", b""))
    assert jpeg.status_code == mp4.status_code == empty.status_code == 422
    assert jpeg.json()["error"] == cli_errors[0] and "truncated or corrupt JPEG" in cli_errors[0]
    assert mp4.json()["error"] == cli_errors[1] and "looks like a video (MP4/MOV)" in cli_errors[1]
    assert empty.json()["error"] == "empty.png: empty file (0 bytes)"
    assert set(jpeg.json()) == {"schema_version", "source", "error", "error_type", "request_id"}
    assert_empty(uploads)


@pytest.mark.anyio
async def test_bad_form_fields_422(tmp_path):
    fake = FakeDetector()
    app = create_app(detector=fake, tmp_dir=tmp_path)
    boundary = "b0undary"
    ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with running(app) as client:
        cases = {
            "frames=0": await client.post("/v1/analyze", files=files(), data={"frames": "0"}),
            "frames=abc": await client.post("/v1/analyze", files=files(), data={"frames": "abc"}),
            "frames=301": await client.post("/v1/analyze", files=files(), data={"frames": "301"}),
            "threshold=2": await client.post("/v1/analyze", files=files(), data={"threshold": "2"}),
            "threshold=nan": await client.post("/v1/analyze", files=files(), data={"threshold": "nan"}),
            "no file": await client.post("/v1/analyze", content=multipart(boundary, frames="3"), headers=ctype),
            "unknown field": await client.post("/v1/analyze", files=files(), data={"frams": "3"}),
            "two files": await client.post("/v1/analyze", content=multipart(boundary, file=("a.jpg", JPEG))[:-len(boundary) - 6]
                                           + multipart(boundary, file=("b.jpg", JPEG)), headers=ctype),
            "garbage": await client.post("/v1/analyze", content=b"this is not multipart", headers=ctype),
        }  # fmt: skip
    for case, r in cases.items():
        assert r.status_code == 422, (case, r.text)
    assert "frames must be an integer from 1 to 300, got '0'" in cases["frames=0"].json()["error"]
    assert cases["threshold=2"].json()["error_type"] == "ConfigError"
    assert "field 'file'" in cases["no file"].json()["error"]
    assert "'frams'" in cases["unknown field"].json()["error"]
    assert "exactly one file" in cases["two files"].json()["error"]
    assert fake.calls == []
    assert_empty(tmp_path)


@pytest.mark.anyio
async def test_full_queue_503_and_event_loop_stays_free(tmp_path):
    slow = FakeDetector(hold=True)
    app = create_app(detector=slow, workers=1, queue_size=1, tmp_dir=tmp_path)
    async with running(app) as client:
        pool = app.state.cevit.pool
        tasks = [asyncio.create_task(client.post("/v1/analyze", files=files(f"f{k}.jpg"))) for k in range(5)]
        await wait_until(lambda: sum(t.done() for t in tasks) == 3)  # 1 running + 1 queued; 3 refused
        assert pool.in_flight == 2
        # The refusals can return before the admitted uploads finish streaming: wait for the worker to hold one.
        await wait_until(lambda: len(slow.calls) == 1)
        await wait_until(lambda: len(list(tmp_path.iterdir())) == 2)  # the running and the queued upload
        assert sum(t.done() for t in tasks) == 3  # the worker is held: nothing else can finish
        # Not blocked by the busy worker (it is held until release, so a blocked loop would hang to the cap).
        health = await asyncio.wait_for(client.get("/v1/health"), 120)
        assert health.json()["in_flight"] == 2
        refused = [t.result() for t in tasks if t.done()]
        slow.release.set()
        responses = await asyncio.gather(*tasks)
        assert pool.in_flight == 0
    assert sorted(r.status_code for r in responses) == [200, 200, 503, 503, 503]
    for r in refused:
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and r.json()["error_type"] == "Busy"
    assert len(slow.calls) == 2
    assert_empty(tmp_path)


@pytest.mark.anyio
@pytest.mark.parametrize("error", [RuntimeError("boom"), FaceDetectionError("face detection failed: boom")])
async def test_analysis_failure_500_deletes_upload(tmp_path, error):
    app = create_app(detector=FakeDetector(error=error), tmp_dir=tmp_path)
    async with running(app) as client:
        r = await client.post("/v1/analyze", files=files("x.jpg"))
        assert app.state.cevit.pool.in_flight == 0
    assert r.status_code == 500 and r.json()["request_id"] == r.headers["x-request-id"]
    assert str(tmp_path) not in r.text
    assert_empty(tmp_path)


# -- client disconnects (raw ASGI) -----------------------------------------------------------------------------
def _scope(boundary: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/analyze", "raw_path": b"/v1/analyze", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip


async def _call(app, messages: list[dict], gate: asyncio.Event | None = None) -> list[dict]:
    """Send ``messages`` as the request, then (once ``gate`` is set) a disconnect; return what the app sent."""
    queue = list(messages)
    sent: list[dict] = []

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if gate is not None:
            await gate.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope("bnd"), receive, send)
    return sent


@pytest.mark.anyio
async def test_disconnect_during_upload_deletes_the_partial_file(tmp_path):
    fake = FakeDetector()
    app = create_app(detector=fake, tmp_dir=tmp_path)
    body = multipart("bnd", file=("a.jpg", JPEG))
    async with running(app):
        sent = await _call(app, [{"type": "http.request", "body": body[:20000], "more_body": True}])
        assert app.state.cevit.pool.in_flight == 0
    assert sent[0]["status"] == 499
    assert fake.calls == []
    assert_empty(tmp_path)


@pytest.mark.anyio
async def test_disconnect_while_queued_or_running(tmp_path):
    slow = FakeDetector(hold=True)
    app = create_app(detector=slow, workers=1, queue_size=2, tmp_dir=tmp_path)
    body = multipart("bnd", file=("a.jpg", JPEG))
    async with running(app) as client:
        pool = app.state.cevit.pool
        running_request = asyncio.create_task(client.post("/v1/analyze", files=files()))
        await wait_until(lambda: len(slow.calls) == 1)
        # A second request that is queued behind it and whose client then goes away: taken off the queue.
        sent = await _call(app, [{"type": "http.request", "body": body, "more_body": False}])
        assert sent[0]["status"] == 499
        await wait_until(lambda: pool.in_flight == 1)
        assert len(list(tmp_path.iterdir())) == 1  # only the running request's upload is left
        slow.release.set()
        assert (await running_request).status_code == 200
        assert len(slow.calls) == 1  # the abandoned request was never analysed
        # The client of a *running* analysis disconnects: the job finishes, then its upload is deleted.
        slow.release.clear()
        gone = asyncio.Event()
        task = asyncio.create_task(_call(app, [{"type": "http.request", "body": body, "more_body": False}], gone))
        await wait_until(lambda: len(slow.calls) == 2)
        gone.set()
        assert (await task)[0]["status"] == 499
        assert len(list(tmp_path.iterdir())) == 1  # still being read by the worker
        slow.release.set()
        await wait_until(lambda: pool.in_flight == 0)
    assert_empty(tmp_path)


# -- logs ------------------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_json_request_logs_carry_the_request_id(tmp_path):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("cevit.api.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        app = create_app(detector=FakeDetector(), tmp_dir=tmp_path)
        async with running(app) as client:
            ok = await client.post("/v1/analyze", files=files("face.jpg"))
            given = await client.get("/v1/health", headers={"X-Request-ID": "trace-42"})
            bogus = await client.get("/v1/health", headers={"X-Request-ID": "bad id;" * 20})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["request_id"] == ok.headers["x-request-id"] and first["status"] == 200
    assert first["method"] == "POST" and first["path"] == "/v1/analyze" and first["filename"] == "face.jpg"
    assert first["upload_bytes"] == len(JPEG) and first["prediction"] == "REAL" and first["duration_ms"] >= 0
    assert given.headers["x-request-id"] == "trace-42" and lines[1]["request_id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", bogus.headers["x-request-id"])


# -- layering and the CLI --------------------------------------------------------------------------------------
def test_library_never_imports_api_or_cli():
    src = PROJECT_ROOT / "src" / "cevit"
    pattern = re.compile(r"^\s*(from|import)\s+cevit\.(api|cli)\b|import_module\([\"']cevit\.(api|cli)", re.M)
    offenders = [
        str(path.relative_to(src)) for path in src.rglob("*.py")
        if path.relative_to(src).parts[0] not in ("api", "cli") and pattern.search(path.read_text(encoding="utf-8"))
    ]  # fmt: skip
    assert offenders == []
    code = "import sys, cevit.api; print('fastapi' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(PROJECT_ROOT / "src")}).stdout  # fmt: skip
    assert out.split() == ["False", "False"]  # importing cevit.api is cheap


@pytest.fixture
def restore_logging():
    names = ("cevit", "uvicorn", "uvicorn.error")
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names
    }
    yield
    for n, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def _serve_args(argv: list[str]) -> argparse.Namespace:
    from cevit.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_serve_command(tiny_checkpoint, tmp_path, monkeypatch, restore_logging):
    import uvicorn

    from cevit.cli import serve
    from cevit.errors import CheckpointError, ConfigError

    monkeypatch.setenv("CEVIT_API_KEY", "from-env")
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    args = _serve_args(["--weights", str(tiny_checkpoint), "--device", "cpu", "--max-upload-mb", "2",
                        "--queue-size", "3", "--tmp-dir", str(tmp_path / "up")])  # fmt: skip
    assert args.func(args) == 0
    app, kw = calls[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000 and kw["access_log"] is False
    svc = app.state.cevit
    assert svc.api_key == "from-env" and svc.max_upload_bytes == 2 * 1024 * 1024
    assert svc.queue_size == 3 and svc.workers == 1 and svc.detector is not None
    assert isinstance(logging.getLogger("cevit").handlers[0].formatter, JsonLogFormatter)

    monkeypatch.delenv("CEVIT_API_KEY")
    assert _serve_args([]).api_key is None
    with pytest.raises(ConfigError, match="--port"):
        args = _serve_args(["--port", "0"])
        args.func(args)
    with pytest.raises(CheckpointError, match="does not exist"):
        args = _serve_args(["--weights", str(tmp_path / "missing.safetensors")])
        args.func(args)
    assert serve.main(["--weights", str(tmp_path / "missing.safetensors")]) == 3  # like `cevit analyze`


# -- shared model batches ----------------------------------------------------------------------------------------
def _jpeg(image) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _resized(face_rgb, size: int):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.fromarray(face_rgb).resize((size, size)))


class ScoreRecorder:
    """Wraps a detector's ``score_faces``: records each call's face count; the first call waits for ``gate``;
    a call with a grayscale crop (R = G = B) raises ``ValueError``."""

    def __init__(self, original) -> None:
        self.original = original
        self.calls: list[int] = []
        self.gate = threading.Event()

    def __call__(self, crops):
        import numpy as np

        self.calls.append(len(crops))
        if len(self.calls) == 1:
            assert self.gate.wait(120), "the test never opened the gate"
        if any(np.array_equal(c[..., 0], c[..., 1]) and np.array_equal(c[..., 1], c[..., 2]) for c in crops):
            raise ValueError("the model failed on a grayscale face")
        return self.original(crops)


def _comparable(report: dict) -> dict:
    """The parts of a report that must not depend on how the faces were batched (scores compared to 1e-5)."""
    return {"prediction": report["prediction"], "status": report["status"], "score": report["score"],
            "boxes": [f["box"] for f in report["faces"]], "scores": [f["score"] for f in report["faces"]]}  # fmt: skip


@pytest.mark.anyio
async def test_concurrent_requests_share_model_calls_and_get_their_own_reports(detector, face_rgb, tmp_path,
                                                                               monkeypatch):  # fmt: skip
    """Four requests: the first one's model call is held until the other three have handed their faces over; those
    three then share one call. Every report equals the report of the same photo analysed alone."""
    photos = {f"face{size}.jpg": _jpeg(_resized(face_rgb, size)) for size in (512, 300, 420)}
    photos["mirrored.jpg"] = _jpeg(face_rgb[:, ::-1].copy())
    alone = {}
    for name, data in photos.items():
        path = tmp_path / name
        path.write_bytes(data)
        alone[name] = _comparable(detector.analyze(media_path=path))
    recorder = ScoreRecorder(detector.score_faces)
    monkeypatch.setattr(detector, "score_faces", recorder)
    app = create_app(detector=detector, tmp_dir=tmp_path / "uploads", workers=4)
    async with running(app) as client:
        scorer = app.state.cevit.scorer
        try:
            tasks = {}
            for name, data in photos.items():
                tasks[name] = asyncio.create_task(client.post("/v1/analyze", files=files(name, data)))
                if len(tasks) == 1:  # the first request's call is held before the others start
                    await wait_until(lambda: len(recorder.calls) == 1)
            await wait_until(lambda: scorer.pending == 3)
        finally:
            recorder.gate.set()
        responses = {name: await task for name, task in tasks.items()}
        health = (await client.get("/v1/health")).json()
    assert recorder.calls == [1, 3]  # 2 model calls for 4 requests
    batches = health["model_batches"]
    assert (batches["model_calls"], batches["faces_scored"], batches["max_items_per_call"]) == (2, 4, 3)
    for name, r in responses.items():
        assert r.status_code == 200, r.text
        got, want = _comparable(r.json()), alone[name]
        assert got["scores"] == pytest.approx(want.pop("scores"), abs=1e-5)
        assert got.pop("score") == pytest.approx(want.pop("score"), abs=1e-5)
        got.pop("scores")
        assert got == want
    assert_empty(tmp_path / "uploads")


@pytest.mark.anyio
async def test_a_request_that_makes_the_model_fail_does_not_fail_a_concurrent_one(detector, face_rgb, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    """A grayscale photo whose face makes the model raise shares a call with a good photo: the shared call fails,
    is redone request by request, and only the grayscale request gets its error (500, as any internal error)."""
    import numpy as np

    gray = np.repeat(np.asarray(face_rgb).mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    recorder = ScoreRecorder(detector.score_faces)
    monkeypatch.setattr(detector, "score_faces", recorder)
    app = create_app(detector=detector, tmp_dir=tmp_path / "uploads", workers=3)
    async with running(app) as client:
        scorer = app.state.cevit.scorer
        try:
            opener = asyncio.create_task(client.post("/v1/analyze", files=files("opener.jpg")))
            await wait_until(lambda: len(recorder.calls) == 1)  # held: the next two requests wait together
            good = asyncio.create_task(
                client.post("/v1/analyze", files=files("good.jpg", _jpeg(_resized(face_rgb, 420))))
            )
            bad = asyncio.create_task(client.post("/v1/analyze", files=files("gray.jpg", _jpeg(gray))))
            await wait_until(lambda: scorer.pending == 2)
        finally:
            recorder.gate.set()
        opener, good, bad = await opener, await good, await bad
        health = (await client.get("/v1/health")).json()["model_batches"]
    assert opener.status_code == 200 and good.status_code == 200, (opener.text, good.text)
    assert good.json()["faces"] and good.json()["status"] == "ok"
    assert bad.status_code == 500 and bad.json()["error_type"] == "InternalError", bad.text
    assert "gray.jpg" in bad.json()["error"] and "ValueError" in bad.json()["error"]
    assert recorder.calls == [1, 2, 1, 1]  # the opener; the shared call that failed; each request alone
    assert health["model_calls"] == 2 and health["failed_calls"] == 2
    assert_empty(tmp_path / "uploads")


@pytest.mark.anyio
async def test_shutdown_with_requests_in_flight_finishes_them_and_stops_the_model_thread(detector, face_rgb,
                                                                                        tmp_path, monkeypatch):  # fmt: skip
    from contextlib import AsyncExitStack

    recorder = ScoreRecorder(detector.score_faces)
    monkeypatch.setattr(detector, "score_faces", recorder)
    uploads = tmp_path / "uploads"
    app = create_app(detector=detector, workers=2)  # a private upload folder, removed at shutdown
    async with AsyncExitStack() as outer:
        client = await outer.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=120)
        )
        lifespan = AsyncExitStack()
        await lifespan.enter_async_context(app.router.lifespan_context(app))
        svc = app.state.cevit
        scorer, uploads = svc.scorer, svc.tmp_dir
        shutting_down = threading.Event()
        pool_shutdown = svc.pool.shutdown

        def shutdown() -> None:
            shutting_down.set()
            pool_shutdown()

        svc.pool.shutdown = shutdown
        try:
            tasks = [asyncio.create_task(client.post("/v1/analyze", files=files("a.jpg")))]
            await wait_until(lambda: len(recorder.calls) == 1)  # held in the model thread
            tasks.append(
                asyncio.create_task(client.post("/v1/analyze", files=files("b.jpg", _jpeg(_resized(face_rgb, 420)))))
            )
            await wait_until(lambda: scorer.pending == 1)  # waiting for the model thread
            stopping = asyncio.create_task(lifespan.aclose())
            await wait_until(shutting_down.is_set)
        finally:
            recorder.gate.set()
        responses = await asyncio.gather(*tasks)
        await asyncio.wait_for(stopping, 120)
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert recorder.calls == [1, 1] and not scorer.thread.is_alive() and not scorer.running
    assert not uploads.exists()
    with pytest.raises(ModelError, match="closed"):
        scorer.submit([face_rgb])


@pytest.mark.anyio
async def test_explained_request_runs_its_gradients_with_the_model_to_itself(detector, tmp_path, monkeypatch):
    import cevit.explain.maps as maps

    held = []
    original = maps.face_heatmaps

    def face_heatmaps(*args, **kwargs):
        held.append(app.state.cevit.scorer.exclusive().locked())  # the model thread cannot start a call now
        return original(*args, **kwargs)

    monkeypatch.setattr(maps, "face_heatmaps", face_heatmaps)
    app = create_app(detector=detector, tmp_dir=tmp_path / "uploads", workers=2)
    async with running(app) as client:
        r = await client.post("/v1/analyze", files=files(), data={"explain": "attention"})
        calls = app.state.cevit.scorer.stats.model_calls
    assert r.status_code == 200, r.text
    assert held == [True] and r.json()["explanations"]["method"] == "attention"
    assert calls == 1  # its scores came from the shared model thread
    assert not app.state.cevit.scorer.exclusive().locked()


@pytest.mark.anyio
async def test_a_detector_that_is_not_the_librarys_gets_no_shared_model_thread(tmp_path):
    fake = FakeDetector()
    app = create_app(detector=fake, tmp_dir=tmp_path, workers=2)
    async with running(app) as client:
        r = await client.post("/v1/analyze", files=files())
        health = (await client.get("/v1/health")).json()
    assert r.status_code == 200 and len(fake.calls) == 1
    assert health["model_batches"] is None and app.state.cevit.scorer is None

"""The service under attack, on loopback only, every loop bounded: the OpenAPI contract (schemathesis), slow
clients, floods of parallel uploads against the admission limit and the temporary-space cap, a 1-hour video against
the per-item time limit, and a short soak.

A real uvicorn server runs in a thread on 127.0.0.1 (a free port); tests wait for conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the 'api' extra (fastapi) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the 'api' extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from cevit.api.app import create_app  # noqa: E402
from cevit.api.uploads import UploadTimeouts  # noqa: E402
from conftest import PROJECT_ROOT, SAMPLE_FACE, write_test_video  # noqa: E402

JPEG = SAMPLE_FACE.read_bytes()
BOUNDARY = "attackboundary"


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.01)


@contextlib.contextmanager
def live_server(app, **config_options) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_keep_alive=2,
                            **config_options)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 60, "server start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


class FakeDetector:
    """A canned report; ``hold`` blocks analyses until ``release`` is set (bounded wait)."""

    model_info = {"name": "fake", "preset": None, "checkpoint_sha256": None}

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.release = threading.Event()
        self.calls = 0

    def analyze(self, media_path, *, num_frames=None, threshold=None):
        self.calls += 1
        if self.hold:
            assert self.release.wait(60), "the test never released the fake detector"
        return {"source": str(media_path), "media_type": "image", "prediction": "REAL", "confidence": 0.9,
                "faces": [], "processing_time": 0.0}  # fmt: skip


def multipart_head(name: str = "a.jpg") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()  # fmt: skip


def multipart(data: bytes, name: str = "a.jpg") -> bytes:
    return multipart_head(name) + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def post_headers(length: int) -> bytes:
    return (f"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
            f"\r\nContent-Length: {length}\r\n\r\n").encode()  # fmt: skip


def read_status(sock: socket.socket, timeout: float) -> int:
    """The status code of the response on ``sock`` (waits at most ``timeout`` s)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed without a response ({data!r})")
        data += chunk
    return int(data.split(b" ", 2)[1])


def temp_files(app) -> list[Path]:
    return sorted(app.state.cevit.tmp_dir.iterdir())


# -- the OpenAPI contract ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    from cevit.inference.pipeline import load_model

    return load_model(weights=tiny_checkpoint, device="cpu")


def test_openapi_contract_every_endpoint_no_500(detector, tmp_path):
    """schemathesis generates requests from /openapi.json for every operation (positive and negative examples)
    and checks each response: never a server error, a status the schema documents, a body that conforms."""
    schemathesis = pytest.importorskip("schemathesis")

    app = create_app(detector=detector, tmp_dir=tmp_path / "uploads", max_upload_bytes=256 * 1024)
    with live_server(app) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [op.ok() for op in schema.get_all_operations()]
        assert {(op.method.upper(), op.path) for op in operations} >= {
            ("GET", "/v1/health"), ("GET", "/v1/models"), ("POST", "/v1/analyze")}  # fmt: skip
        seen: Counter = Counter()
        for op in operations:
            _fuzz_operation(op, base, seen)
        assert sum(seen.values()) >= 3
        wait_until(lambda: app.state.cevit.pool.in_flight == 0, 60, "all requests finished")
        assert temp_files(app) == []


def _fuzz_operation(op, base: str, seen: Counter) -> None:
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks as st_checks

    @given(op.as_strategy())
    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case) -> None:
        response = case.call(base_url=base, timeout=60)
        seen[(op.method.upper(), op.path, response.status_code)] += 1
        assert response.status_code < 500, (op.path, response.status_code, response.text[:500])
        case.validate_response(response, checks=[st_checks.not_a_server_error, st_checks.status_code_conformance,
                                                 st_checks.content_type_conformance])  # fmt: skip

    check()


# -- slow clients -----------------------------------------------------------------------------------------------
def test_slow_upload_times_out_with_408_and_frees_its_slot(tmp_path):
    detector = FakeDetector()
    app = create_app(detector=detector, tmp_dir=tmp_path / "uploads", workers=1, queue_size=0,
                     upload_timeouts=UploadTimeouts(idle=0.5, total=2.0))  # fmt: skip
    with live_server(app) as base:
        svc = app.state.cevit
        body = multipart(JPEG)
        # 1. a client that stops sending after the first bytes: 408 after the idle timeout
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as slow:
            slow.sendall(post_headers(len(body)) + body[:100])
            wait_until(lambda: svc.pool.in_flight == 1, 30, "the slow upload holding the only slot")
            busy = httpx.post(f"{base}/v1/analyze", files={"file": ("x.jpg", JPEG)}, timeout=30)
            assert busy.status_code == 503  # the slot is taken while the slow client uploads ...
            assert read_status(slow, 30) == 408  # ... until the idle timeout frees it
        wait_until(lambda: svc.pool.in_flight == 0 and temp_files(app) == [], 30, "slot and temp file freed")
        assert httpx.post(f"{base}/v1/analyze", files={"file": ("x.jpg", JPEG)}, timeout=30).status_code == 200
        # 2. slowloris: a byte every 0.1 s (never idle) until the total upload time runs out
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as trickle:
            trickle.sendall(post_headers(len(body)))
            started = time.monotonic()
            status = None
            trickle.settimeout(0.1)
            for byte in body:  # bounded: at most len(body) rounds, and the server answers after 2 s
                try:
                    trickle.sendall(bytes([byte]))
                    data = trickle.recv(4096)
                except TimeoutError:
                    continue
                except OSError:  # the server closed the connection after answering
                    break
                if data:
                    status = int(data.split(b" ", 2)[1])
                    break
                if time.monotonic() - started > 30:
                    break
            assert status == 408, status
        wait_until(lambda: svc.pool.in_flight == 0 and temp_files(app) == [], 30, "slot and temp file freed")


def test_slow_headers_do_not_hold_a_worker(tmp_path):
    """A client that sends its request headers a byte at a time never reaches the app: the only slot stays free."""
    app = create_app(detector=FakeDetector(), tmp_dir=tmp_path / "uploads", workers=1, queue_size=0)
    with live_server(app) as base:
        port = int(base.rsplit(":", 1)[1])
        head = post_headers(10_000)
        slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        try:
            for i in range(20):  # a little of each header, bounded
                for s in slow:
                    s.sendall(head[i : i + 1])
            assert app.state.cevit.pool.in_flight == 0
            r = httpx.post(f"{base}/v1/analyze", files={"file": ("x.jpg", JPEG)}, timeout=30)
            assert r.status_code == 200
        finally:
            for s in slow:
                s.close()


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes ``sock`` (recv returns b"" or the connection is reset) within ``timeout`` s."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_connections_without_complete_headers_are_closed_at_the_deadline(tmp_path):
    """cevit serve's protocol (cevit.api.protocol): a connection that sends nothing, one that trickles header bytes
    and a kept-alive one that starts a second request and stalls are all closed once the header deadline passes;
    a normal request is unaffected, and so is a slow upload body once its headers are in (408 from the app)."""
    from cevit.api.protocol import header_deadline_protocol

    app = create_app(detector=FakeDetector(), tmp_dir=tmp_path / "uploads", workers=1, queue_size=0,
                     upload_timeouts=UploadTimeouts(idle=30.0, total=60.0))  # fmt: skip
    with live_server(app, http=header_deadline_protocol(1.0)) as base:
        port = int(base.rsplit(":", 1)[1])
        started = time.monotonic()
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
        kept = socket.create_connection(("127.0.0.1", port), timeout=10)
        body = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            kept.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_status(kept, 30) == 200
            kept.sendall(b"GET /v1/health HTTP/1.1\r\nHo")  # the second request stalls in its headers
            body.sendall(post_headers(10_000) + multipart_head())  # headers complete; the body never comes
            head = post_headers(10_000)
            for i in range(5):  # a byte now and then: each byte would reset uvicorn's own keep-alive timer
                trickle.sendall(head[i : i + 1])
                time.sleep(0.3)
            for name, sock in (("silent", silent), ("trickling", trickle), ("stalled keep-alive", kept)):
                assert _closed_by_server(sock, 30), f"the {name} connection was not closed"
            assert time.monotonic() - started >= 1.0  # not before the deadline
            # the connection whose headers were complete is still open (its body has the upload timeouts)
            body.settimeout(0.5)
            with pytest.raises(TimeoutError):
                body.recv(1)
            body.close()  # it held the only slot (reserved before the body is read): freed when it goes
            wait_until(lambda: app.state.cevit.pool.in_flight == 0, 30, "the slot of the closed upload freed")
            r = httpx.post(f"{base}/v1/analyze", files={"file": ("x.jpg", JPEG)}, timeout=30)
            assert r.status_code == 200
        finally:
            for sock in (silent, trickle, kept, body):
                sock.close()


def test_serve_uses_the_header_deadline(monkeypatch, tiny_checkpoint):
    from cevit.cli import serve
    from cevit.cli.main import build_parser
    from cevit.errors import ConfigError

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.setattr(serve, "configure_logging", lambda level: None)  # the test's logging stays as it is
    args = build_parser().parse_args(["serve", "--weights", str(tiny_checkpoint), "--device", "cpu",
                                      "--header-timeout", "3"])  # fmt: skip
    assert args.func(args) == 0
    assert calls[0]["http"].header_timeout == 3.0
    args = build_parser().parse_args(["serve", "--weights", str(tiny_checkpoint), "--header-timeout", "0"])
    with pytest.raises(ConfigError, match="--header-timeout"):
        args.func(args)


# -- floods ------------------------------------------------------------------------------------------------------
def test_parallel_uploads_get_503_and_never_exceed_the_temp_space_cap(tmp_path):
    detector = FakeDetector(hold=True)
    size, cap = 64 * 1024, 200 * 1024  # at most three uploads of 64 KiB fit
    app = create_app(detector=detector, tmp_dir=tmp_path / "uploads", workers=3, queue_size=3,
                     max_upload_bytes=100 * 1024, max_temp_bytes=cap)  # fmt: skip
    payload = JPEG[:size].ljust(size, b"\0")  # content sniffing sees a JPEG
    n = 24
    peak = {"bytes": 0}
    stop = threading.Event()

    def watch() -> None:  # the disk actually used by uploads, sampled while the flood runs
        folder = app.state.cevit.tmp_dir
        while not stop.is_set():
            total = 0
            for p in list(folder.iterdir()):
                with contextlib.suppress(OSError):
                    total += p.stat().st_size
            peak["bytes"] = max(peak["bytes"], total, app.state.cevit.temp_space.used)
            time.sleep(0.002)

    with live_server(app) as base:
        svc = app.state.cevit
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        async def flood() -> list[httpx.Response]:
            done: list[httpx.Response] = []

            async def one(i: int) -> httpx.Response:
                async with httpx.AsyncClient(timeout=60) as client:
                    r = await client.post(f"{base}/v1/analyze", files={"file": (f"{i}.bin", payload)})
                done.append(r)
                return r

            tasks = [asyncio.create_task(one(i)) for i in range(n)]
            deadline = time.monotonic() + 60
            while len(done) + detector.calls < n:  # everything answered except the analyses being held
                assert time.monotonic() < deadline, (len(done), detector.calls)
                await asyncio.sleep(0.01)
            detector.release.set()
            return await asyncio.gather(*tasks)

        try:
            responses = asyncio.run(flood())
        finally:
            detector.release.set()
            stop.set()
            watcher.join(10)
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {200, 503} and statuses[503] >= n - 6, statuses  # admission: 3 workers + 3 queued
        assert 1 <= statuses[200] <= 3, statuses  # the temporary space holds three uploads at most
        refused = [r for r in responses if r.status_code == 503]
        assert all(r.json()["error"].startswith("server busy") and r.headers.get("retry-after") for r in refused)
        assert any("temporary space" in r.json()["error"] for r in refused)  # admitted, but no room on disk
        assert peak["bytes"] <= cap, peak
        wait_until(lambda: svc.pool.in_flight == 0 and temp_files(app) == [] and svc.temp_space.used == 0, 30,
                   "every slot, file and byte of temporary space released")  # fmt: skip


# -- a long video against the per-item time limit ---------------------------------------------------------------
@pytest.mark.slow
def test_one_hour_video_upload_respects_the_item_time_limit(tiny_checkpoint, tmp_path):
    from cevit.inference.pipeline import load_model

    frames = [np.full((16, 16, 3), (7 * i) % 256, np.uint8) for i in range(3600)]
    video = write_test_video(tmp_path / "one_hour.mp4", frames, rate=1)  # 1 fps for an hour
    data = video.read_bytes()
    quick = load_model(weights=tiny_checkpoint, device="cpu", max_item_seconds=0.001)
    app = create_app(detector=quick, tmp_dir=tmp_path / "uploads")
    with live_server(app) as base:
        r = httpx.post(f"{base}/v1/analyze", files={"file": ("one_hour.mp4", data)}, timeout=120)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error_type"] == "ResourceLimitError" and "max_item_seconds=0.001" in body["error"]
        assert "one_hour.mp4" in body["error"] and str(tmp_path) not in body["error"]
    normal = load_model(weights=tiny_checkpoint, device="cpu")  # default limits: 30 frames sampled from the hour
    app = create_app(detector=normal, tmp_dir=tmp_path / "uploads2")
    with live_server(app) as base:
        r = httpx.post(f"{base}/v1/analyze", files={"file": ("one_hour.mp4", data)}, timeout=300)
        assert r.status_code == 200, r.text
        assert r.json()["frames_analyzed"] == 30 and abs(r.json()["video"]["duration"] - 3600) < 5


# -- soak ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_short_soak_leaks_nothing(tiny_checkpoint, tmp_path):
    """200 requests at concurrency 8 through benchmarks/service_soak.py (a real `cevit serve` subprocess)."""
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "service_soak.py"), "--requests", "200",
         "--weights", str(tiny_checkpoint), "--json", str(out), "--max-seconds", "600"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["requests"] == 200 and result["unexpected"] == 0
    assert result["temp_files_after"] == 0
    assert result["after_idle"]["fds"] <= result["warm"]["fds"]  # no leaked file descriptors ...
    # ... or threads: idle pool threads (anyio's upload writers) are pruned only when new work comes, so the count
    # may differ by the few a busier moment of the soak added
    assert result["after_idle"]["threads"] <= result["warm"]["threads"] + 4
    assert result["rss_growth_mib"] < 50

"""Benchmark: a bounded load test of ``cevit serve`` on loopback (prints numbers; not a test).

    python benchmarks/load.py [--weights CKPT] [--requests 200] [--concurrency 8] [--max-seconds 300]
                              [--workers 1] [--queue-size 8] [--file IMAGE_OR_VIDEO | --tile N] [--json OUT]

Starts the server itself as a subprocess (``python -m cevit.cli.serve``) on a free 127.0.0.1 port with its own
upload folder. Without --weights the server uses the bundled default weights (224 px input: what users run; earlier versions
made random weights of the 380 px V1 preset, a model part about 2x slower per face). Then it sends
``--requests`` uploads of ``--file`` (default: the shipped sample photo) from ``--concurrency`` concurrent
clients, and stops starting new requests after ``--max-seconds``. ``--tile N`` uploads a photo generated here
instead: N copies of the sample photo side by side (N faces per request).

Reports: p50/p95/max latency of the successful requests, throughput, status counts, errors (anything other than
200, apart from intended 503s), files left in the upload folder (during and after), the server's RSS
before and after the load and its peak, its CPU seconds per request (Linux /proc), and its shared model
thread's counters over the load (``GET /v1/health`` ``model_batches``: model calls per request, faces per call,
most requests in one call). Exit status 1 when there were errors or files left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "cevit" / "samples" / "astronaut.jpg"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> dict[str, float | None]:
    """Current (VmRSS) and peak (VmHWM) resident memory of ``pid`` in MiB; None where /proc is missing."""
    out: dict[str, float | None] = {"rss": None, "peak": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of ``pid`` so far, in seconds; None where /proc is missing. On a machine shared
    with other jobs, the server's CPU seconds per request move much less than its requests per second."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def _tiled_sample(n: int) -> bytes:
    """A JPEG of ``n`` copies of the sample photo side by side."""
    import io

    import numpy as np
    from PIL import Image

    face = np.asarray(Image.open(SAMPLE).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([face] * n, axis=1)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _batches(base: str) -> dict | None:
    """The server's shared model thread counters (None when it has none)."""
    import httpx

    return httpx.get(base + "/v1/health", timeout=30).json().get("model_batches")


def start_server(
    *, workers: int, queue_size: int, uploads: Path, weights: str | None, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    """``python -m cevit.cli.serve`` on a free 127.0.0.1 port (CPU, this checkout's sources, no API key, the bundled
    default weights unless ``weights``); returns the process and its base URL."""
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    env.pop("CEVIT_API_KEY", None)
    port = _free_port()
    cmd = [sys.executable, "-m", "cevit.cli.serve", "--port", str(port), "--workers", str(workers),
           "--queue-size", str(queue_size), "--tmp-dir", str(uploads), "--device", "cpu", "--log-level", "warning",
           *extra]  # fmt: skip
    if weights:
        cmd += ["--weights", str(weights)]
    return subprocess.Popen(cmd, env=env), f"http://127.0.0.1:{port}"


def wait_ready(server: subprocess.Popen, base: str, *, who: str, limit: float = 180.0) -> float | None:
    """Seconds until the server's ``/v1/health`` says the model is loaded; None (after printing why) when it exits
    or is not ready within ``limit`` seconds."""
    import httpx

    t0 = time.monotonic()
    while True:
        if server.poll() is not None:
            print(f"{who}: the server exited with code {server.returncode}", file=sys.stderr)
            return None
        try:
            if httpx.get(base + "/v1/health", timeout=2).json().get("model_loaded"):
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > limit:
            print(f"{who}: the server did not become ready in {limit:.0f} s", file=sys.stderr)
            return None
        time.sleep(0.25)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _load(base: str, data: bytes, name: str, args: argparse.Namespace, uploads: Path) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    max_files = 0
    started = 0
    deadline = time.monotonic() + args.max_seconds
    lock = asyncio.Lock()

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal started, max_files
        while True:
            async with lock:
                if started >= args.requests or time.monotonic() >= deadline:
                    return
                started += 1
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/analyze", files={"file": (name, data)})
                statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                elif r.status_code != 503:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                statuses["exception"] += 1
                failures.append(f"{type(exc).__name__}: {exc}")
            max_files = max(max_files, sum(1 for _ in uploads.iterdir()))

    timeout = httpx.Timeout(args.max_seconds + 60)
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
    return {"latencies": latencies, "statuses": statuses, "failures": failures, "wall": wall,
            "sent": started, "max_files_during": max_files}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="checkpoint to serve (default: the bundled default weights)")
    p.add_argument("--file", type=Path, default=SAMPLE, help="image or video to upload (default: astronaut.jpg)")
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help="upload a generated photo instead: N copies of the sample side by side (N faces)")  # fmt: skip
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=300, help="start no new request after this (default: 300)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = p.parse_args(argv)

    import httpx

    try:
        import cevit  # noqa: F401
    except ImportError:  # running from a checkout without installing
        sys.path.insert(0, str(ROOT / "src"))
    data = args.file.read_bytes() if args.tile is None else _tiled_sample(args.tile)
    if args.tile is not None:
        args.file = Path(f"tiled-{args.tile}.jpg")
    with tempfile.TemporaryDirectory(prefix="cevit-load-") as tmp:
        tmp_path = Path(tmp)
        uploads = tmp_path / "uploads"
        server, base = start_server(workers=args.workers, queue_size=args.queue_size, uploads=uploads,
                                    weights=args.weights)  # fmt: skip
        try:
            startup_s = wait_ready(server, base, who="load")
            if startup_s is None:
                return 1
            httpx.post(base + "/v1/analyze", files={"file": (args.file.name, data)}, timeout=120)  # warm-up
            before = _rss_mib(server.pid)
            batches_before = _batches(base)
            cpu_before = _cpu_seconds(server.pid)
            result = asyncio.run(_load(base, data, args.file.name, args, uploads))
            cpu_after = _cpu_seconds(server.pid)
            after = _rss_mib(server.pid)
            batches_after = _batches(base)
            left_after_load = sorted(p.name for p in uploads.iterdir())
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        left_after_exit = sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []

    lat = result["latencies"]
    ok = len(lat)
    errors = len(result["failures"])
    summary = {
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform},
        "setup": {"requests": args.requests, "concurrency": args.concurrency, "workers": args.workers,
                  "queue_size": args.queue_size, "file": args.file.name, "file_bytes": len(data),
                  "weights": "bundled default" if not args.weights else str(args.weights), "max_seconds": args.max_seconds},
        "server_startup_s": round(startup_s, 2),
        "sent": result["sent"],
        "statuses": dict(result["statuses"]),
        "errors": errors,
        "intended_503": result["statuses"].get("503", 0),
        "latency_s": None if not lat else {"p50": round(_percentile(lat, 50), 3), "p95": round(_percentile(lat, 95), 3),
                                           "mean": round(statistics.fmean(lat), 3), "max": round(max(lat), 3)},
        "throughput_rps": round(ok / result["wall"], 2) if result["wall"] else None,
        "server_cpu_s_per_request": None if cpu_before is None or cpu_after is None or not ok
        else round((cpu_after - cpu_before) / ok, 3),
        "wall_s": round(result["wall"], 1),
        "upload_files_max_during": result["max_files_during"],
        "upload_files_left": len(left_after_load) + len(left_after_exit),
        "server_rss_mib": {"before": before["rss"], "after": after["rss"], "peak": after["peak"]},
        "model_batches": None,
    }  # fmt: skip
    if batches_before is not None and batches_after is not None:  # a server with a shared model thread
        calls = batches_after["model_calls"] - batches_before["model_calls"]
        faces = batches_after["faces_scored"] - batches_before["faces_scored"]
        summary["model_batches"] = {
            "model_calls": calls, "faces": faces, "torch_threads": batches_after.get("torch_threads"),
            "model_calls_per_request": round(calls / ok, 3) if ok else None,
            "faces_per_call": round(faces / calls, 2) if calls else None,
            "max_requests_per_call": batches_after["max_items_per_call"],
        }  # fmt: skip
    print(json.dumps(summary, indent=2))
    for failure in result["failures"][:10]:
        print("error:", failure, file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if errors or summary["upload_files_left"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: a soak of ``cevit serve`` with a mix of good and hostile requests (prints numbers; not a test).

    python benchmarks/service_soak.py [--requests 2000] [--concurrency 8] [--weights CKPT] [--max-seconds 1800]
                                      [--workers 1] [--queue-size 8] [--json OUT]

Starts the server as a subprocess (``python -m cevit.cli.serve``, 127.0.0.1, a free port, its own upload folder,
``--max-upload-mb 1``; without --weights the bundled default weights, as in ``benchmarks/load.py``), then sends
``--requests`` requests from ``--concurrency`` clients, cycling through:

=============  =====  ==========================================================
kind           share  expected status
=============  =====  ==========================================================
face           10 %   200 (the shipped photo, one face)
small          35 %   200 (a 96x96 PNG without a face)
video          5 %    200 (a 10-frame 64x48 MP4)
garbage        15 %   415 (random bytes)
truncated      10 %   422 (the photo cut after its first 2 KB)
bad_field      10 %   422 (``frames=0``)
too_large      5 %    413 (1.5 MB above the 1 MB upload limit)
not_multipart  5 %    415 (a JSON body)
=============  =====  ==========================================================

Before the soak (after ``--warmup`` requests of every kind, at the same concurrency), right after it, and once idle (threads and descriptors
back to their level before the soak, or 30 s), it reads the server's resident memory, open file descriptors and
threads from /proc (Linux), and counts the files left in the upload folder. 503 is
counted apart (admission limit; not expected at concurrency <= workers + queue size). Exit status 1 when a
response had an unexpected status or files were left.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import SAMPLE, start_server, wait_ready  # noqa: E402

KINDS: tuple[tuple[str, int, int], ...] = (  # (kind, share in %, expected status)
    ("face", 10, 200), ("small", 35, 200), ("video", 5, 200), ("garbage", 15, 415), ("truncated", 10, 422),
    ("bad_field", 10, 422), ("too_large", 5, 413), ("not_multipart", 5, 415),
)  # fmt: skip


def _payloads(folder: Path) -> dict[str, dict]:
    """httpx keyword arguments of one request per kind."""
    import av
    import numpy as np
    from PIL import Image

    face = SAMPLE.read_bytes()
    small = io.BytesIO()
    Image.new("RGB", (96, 96), (120, 130, 140)).save(small, format="PNG")
    video = folder / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rng = np.random.default_rng(0)
    return {
        "face": {"files": {"file": ("face.jpg", face)}},
        "small": {"files": {"file": ("small.png", small.getvalue())}},
        "video": {"files": {"file": ("clip.mp4", video.read_bytes())}},
        "garbage": {"files": {"file": ("noise.bin", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())}},
        "truncated": {"files": {"file": ("cut.jpg", face[:2048])}},
        "bad_field": {"files": {"file": ("face.jpg", face)}, "data": {"frames": "0"}},
        "too_large": {"files": {"file": ("big.jpg", face + bytes(1_500_000))}},
        "not_multipart": {"json": {"file": "face.jpg"}},
    }


def _schedule(n: int) -> list[str]:
    """``n`` request kinds, interleaved in the shares of KINDS (deterministic)."""
    out: list[str] = []
    credit = Counter()
    for _ in range(n):
        for kind, share, _status in KINDS:
            credit[kind] += share
        kind = max(KINDS, key=lambda k: credit[k[0]])[0]
        credit[kind] -= 100
        out.append(kind)
    return out


def _proc(pid: int) -> dict[str, float | int | None]:
    """RSS and peak RSS (MiB), threads and open file descriptors of ``pid`` (None where /proc is missing)."""
    out: dict[str, float | int | None] = {"rss_mib": None, "peak_mib": None, "threads": None, "fds": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                out["rss_mib"] = round(int(value.split()[0]) / 1024, 1)
            elif key == "VmHWM":
                out["peak_mib"] = round(int(value.split()[0]) / 1024, 1)
            elif key == "Threads":
                out["threads"] = int(value)
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


async def _soak(base: str, kinds: list[str], payloads: dict[str, dict], concurrency: int, max_seconds: float,
                uploads: Path) -> dict:  # fmt: skip
    import httpx

    expected = {kind: status for kind, _share, status in KINDS}
    statuses: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    unexpected: list[str] = []
    max_files = 0
    queue = list(reversed(kinds))
    deadline = time.monotonic() + max_seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal max_files
        while queue and time.monotonic() < deadline:
            kind = queue.pop()
            try:
                r = await client.post("/v1/analyze", **payloads[kind])
                status = str(r.status_code)
                if r.status_code not in (expected[kind], 503):
                    unexpected.append(f"{kind}: {r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                status = f"exception {type(exc).__name__}"
                unexpected.append(f"{kind}: {type(exc).__name__}: {exc}")
            statuses[status] += 1
            by_kind[f"{kind} {status}"] += 1
            max_files = max(max_files, sum(1 for _ in uploads.iterdir()))

    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(max_seconds + 60),
                                 limits=httpx.Limits(max_connections=concurrency)) as client:  # fmt: skip
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"statuses": statuses, "by_kind": by_kind, "unexpected": unexpected, "wall": wall,
            "sent": sum(statuses.values()), "max_files": max_files}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="checkpoint to serve (default: the bundled default weights)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--warmup", type=int, default=5, help="requests of every kind before the 'before' figures")
    p.add_argument("--max-seconds", type=float, default=1800, help="start no new request after this")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cevit-soak-") as tmp:
        tmp_path = Path(tmp)
        payloads = _payloads(tmp_path)
        uploads = tmp_path / "uploads"
        server, base = start_server(workers=args.workers, queue_size=args.queue_size, uploads=uploads,
                                    weights=args.weights, extra=("--max-upload-mb", "1"))  # fmt: skip
        try:
            if wait_ready(server, base, who="soak") is None:
                return 1
            started = _proc(server.pid)
            warm_kinds = [kind for kind, _s, _st in KINDS for _ in range(args.warmup)]
            # at the soak's concurrency, so that thread pools (anyio's, for uploads) reach their working size first
            warm = asyncio.run(_soak(base, warm_kinds, payloads, args.concurrency, args.max_seconds, uploads))
            before = _proc(server.pid)
            result = asyncio.run(_soak(base, _schedule(args.requests), payloads, args.concurrency,
                                       args.max_seconds, uploads))  # fmt: skip
            after = _proc(server.pid)
            left = sorted(p.name for p in uploads.iterdir())
            # idle worker threads (anyio's, uvicorn's) and closed connections go within seconds: wait (bounded)
            settle_start = time.monotonic()
            settled = after
            while time.monotonic() - settle_start < 30:
                settled = _proc(server.pid)
                if settled["threads"] is None or (settled["threads"] <= before["threads"]
                                                  and settled["fds"] <= before["fds"]):  # fmt: skip
                    break
                time.sleep(0.5)
            settled["waited_s"] = round(time.monotonic() - settle_start, 1)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    summary = {
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "setup": {"requests": args.requests, "concurrency": args.concurrency, "workers": args.workers,
                  "queue_size": args.queue_size, "weights": str(args.weights or "bundled default")},
        "requests": result["sent"],
        "statuses": dict(sorted(result["statuses"].items())),
        "by_kind": dict(sorted(result["by_kind"].items())),
        "unexpected": len(result["unexpected"]) + len(warm["unexpected"]),
        "wall_s": round(result["wall"], 1),
        "requests_per_s": round(result["sent"] / result["wall"], 2) if result["wall"] else None,
        "started": started, "warm": before, "after": after, "after_idle": settled,
        "rss_growth_mib": None if before["rss_mib"] is None else round(after["rss_mib"] - before["rss_mib"], 1),
        "temp_files_max_during": result["max_files"],
        "temp_files_after": len(left),
    }  # fmt: skip
    print(json.dumps(summary, indent=2))
    for line in (warm["unexpected"] + result["unexpected"])[:10]:
        print("unexpected:", line, file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if summary["unexpected"] or left else 0


if __name__ == "__main__":
    sys.exit(main())

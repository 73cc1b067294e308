"""The HTTP service's multipart upload parser: :func:`cevit.api.uploads.receive_upload` on a real Starlette
request whose body is the fuzzed bytes (after the first byte, which chooses how the body is split into network
chunks), then :func:`cevit.api.uploads.parse_analysis_fields`. The parser's contract: only an ``ApiError`` with a
4xx status may escape (the service answers it as that status)."""

from __future__ import annotations

from pathlib import Path

from fuzz import seeds
from fuzz.common import scratch_file

INSTRUMENT = ("cevit.api.uploads", "python_multipart")
MAX_BYTES = 4096


def seed(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, body) in enumerate(seeds.multipart_bodies().items()):
        (folder / f"{name}.bin").write_bytes(bytes([i * 37 % 256]) + body)


def load() -> None:
    global ApiError, LOOP, Request, parse_analysis_fields, receive_upload
    import asyncio

    from starlette.requests import Request

    from cevit.api.errors import ApiError
    from cevit.api.uploads import parse_analysis_fields, receive_upload

    LOOP = asyncio.new_event_loop()  # one loop for every input: a new one per input is 100x slower under libFuzzer


def _request(body: bytes, chunk: int) -> Request:
    messages = [{"type": "http.request", "body": body[i : i + chunk], "more_body": i + chunk < len(body)}
                for i in range(0, len(body), chunk)] or [{"type": "http.request", "body": b"", "more_body": False}]  # fmt: skip

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    ctype = f"multipart/form-data; boundary={seeds.BOUNDARY}".encode()
    scope = {"type": "http", "method": "POST", "path": "/v1/analyze", "headers": [(b"content-type", ctype)]}
    return Request(scope, receive)


async def _parse(body: bytes, chunk: int, path: Path) -> None:
    upload = await receive_upload(_request(body, chunk), path, MAX_BYTES)
    assert upload.filename and upload.size <= MAX_BYTES and path.stat().st_size == upload.size, upload
    parse_analysis_fields(upload.fields)


def one_input(data: bytes) -> None:
    if not data:
        return
    chunk = (1, 2, 7, 64, 1000, 1 << 20)[data[0] % 6]
    path = scratch_file(b"", "upload")
    path.unlink()  # receive_upload creates it exclusively
    try:
        LOOP.run_until_complete(_parse(data[1:], chunk, path))
    except ApiError as exc:
        if not 400 <= exc.status < 500:
            raise

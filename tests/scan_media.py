"""Generated collections for the scan tests: small face photos (the shipped sample, resized), face-less noise
images and optionally short videos, all in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import SAMPLE_FACE, write_test_video


def make_collection(folder: Path, n: int, *, videos: int = 0, corrupt: int = 0) -> list[Path]:
    """``n`` images (every fifth a face-less noise PNG, the others the sample face at 96-150 px), ``videos`` short
    clips (6 frames, 96 px) and ``corrupt`` files with an image name and garbage content; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    face = Image.open(SAMPLE_FACE).convert("RGB")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        if i % 5 == 4:
            p = folder / f"noise_{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(p)
        else:
            side = 96 + (i * 7) % 56
            p = folder / f"face_{i:03d}.jpg"
            face.resize((side, side)).save(p, quality=90)
        paths.append(p)
    frame = np.asarray(face.resize((96, 96)))
    for i in range(videos):
        p = folder / f"clip_{i:02d}.mp4"
        write_test_video(p, [np.roll(frame, k * (i + 1), axis=1) for k in range(6)])
        paths.append(p)
    for i in range(corrupt):
        p = folder / f"broken_{i:02d}.jpg"
        p.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG " + bytes([i]))
        paths.append(p)
    return paths

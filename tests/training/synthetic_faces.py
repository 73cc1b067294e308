"""Synthetic face crops and a face index over them, for the training tests (a tiny model learns to tell the
blurred "fakes" from the sharp "reals" in a few steps)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cevit.data import INDEX_COLUMNS, write_index

BOX = (18.0, 18.0, 78.0, 78.0)
LMS = [(36.0, 40.0), (60.0, 40.0), (48.0, 52.0), (38.0, 64.0), (58.0, 64.0)]


def face_crop(seed: int, fake: bool) -> np.ndarray:
    """A 96x96 RGB face-like crop (skin ellipse, eyes, mouth); a fake has its centre blurred."""
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 90, size=(96, 96, 3), dtype=np.uint8)
    cv2.ellipse(img, (48, 50), (26, 32), 0, 0, 360, (int(rng.integers(180, 230)), 160, 130), thickness=-1)
    for x, y in LMS[:2]:
        cv2.circle(img, (int(x), int(y)), 4, (40, 30, 25), thickness=-1)
    cv2.line(img, (38, 64), (58, 64), (120, 40, 50), thickness=3)
    if fake:
        img[30:70, 28:68] = cv2.GaussianBlur(img[30:70, 28:68], (5, 5), 1.5)
    return img


def write_face_index(folder: Path, groups: int) -> Path:
    """``groups`` x (2 real + 2 fake) crops under ``folder/crops`` and their ``index.csv``; group 0 (and its fakes)
    is the validation split."""
    (folder / "crops").mkdir(parents=True, exist_ok=True)
    rows = []
    for g in range(groups):
        for label in ("real", "fake"):
            for f in range(2):
                rel = f"crops/g{g}_{label}_{f}.png"
                cv2.imwrite(str(folder / rel), cv2.cvtColor(face_crop(10 * g + f, label == "fake"), cv2.COLOR_RGB2BGR))
                grp = f"vid{g}" if label == "real" else f"vid{g}_fake"
                rows.append([rel, f"{grp}.mp4", f, f * 0.5, 0, *BOX, *[v for p in LMS for v in p], 0.99, label,
                             "val" if g == 0 else "", "", "generic", grp])  # fmt: skip
    path = folder / "index.csv"
    # rows leave the trailing optional columns (the valid region) out: written empty
    write_index(path, (dict(zip(INDEX_COLUMNS, r)) for r in rows))  # noqa: B905
    return path

"""Faces with landmarks for previews: from a face index, or detected in images with MTCNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cevit.errors import ConfigError

__all__ = ["collect_faces"]


def collect_faces(source: str | Path, *, count: int = 8, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``count`` (face crop RGB uint8, 5x2 landmarks in crop pixels) pairs, drawn reproducibly with ``seed``."""
    if count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    source = Path(source)
    rng = np.random.default_rng(seed)
    if source.suffix.lower() == ".csv":
        from cevit.data import load_crop, read_index

        rows = [r for r in read_index(source) if r.label == 0 and r.landmarks is not None]
        if not rows:
            raise ConfigError(f"{source}: no real faces with landmarks in this index")
        out = []
        for i in rng.permutation(len(rows)):
            image = load_crop(rows[i].crop_path)
            if image is not None:
                out.append((image, rows[i].landmarks_array))
            if len(out) == count:
                break
        return out
    from cevit.data import save_face_crop
    from cevit.faces import MTCNN
    from cevit.media import iter_media_files, load_image, sniff_media_type

    files = [f for f in iter_media_files([str(source)]) if sniff_media_type(f) == "image"]
    detector = MTCNN()
    out = []
    for i in rng.permutation(len(files)):
        image = load_image(files[i])
        faces = detector.detect_one(image)
        if faces:
            saved = save_face_crop(image, faces[0].box, faces[0].landmarks, margin=0.6, max_size=320)
            out.append((saved.image, np.asarray(saved.landmarks)))
        if len(out) == count:
            break
    if not out:
        raise ConfigError(f"{source}: no face found in its images")
    return out

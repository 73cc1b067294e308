"""Shared fixtures: the reference folder ``shared/`` (skip cleanly when absent) and small helpers.

Reference data lives outside the repository in ``../shared`` (or ``$CEVIT_SHARED``). On a user's fresh clone it
is absent and the tests that need it skip. When it is present, a missing file inside it is a skip on a developer
machine but a failure when ``CI=true``: the CI machine has the folder, so a test that skipped there would hide
a renamed or lost fixture.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    return Path(os.environ.get("CEVIT_SHARED", PROJECT_ROOT.parent / "shared"))


def in_ci() -> bool:
    """True when the environment variable ``CI`` says so (``true``, ``1`` or ``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_shared(relative: str | Path) -> Path:
    """``shared_path() / relative``, which must exist.

    Skips when the shared folder itself is absent (a user's clone). When the folder exists but the entry does
    not: fails under ``CI=true``, skips otherwise (a developer's partial copy).
    """
    root = shared_path()
    if not root.is_dir():
        pytest.skip(f"reference folder {root} is absent (set CEVIT_SHARED to use it)")
    path = root / relative
    if not path.exists():
        if in_ci():
            pytest.fail(f"reference fixture {path} is missing, although {root} exists (CI=true: no skipping)")
        pytest.skip(f"reference fixture {path} is missing")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"reference folder {path} is absent (set CEVIT_SHARED to use it)")
    return path


@pytest.fixture(scope="session")
def shared_file() -> Callable[[str], Path]:
    """``shared_file("reference/x.safetensors")``: the path of a shared fixture, see :func:`require_shared`."""
    return require_shared


#: torch intra-op threads for the tests: 1 unless ``CEVIT_TEST_THREADS`` says otherwise. On a small machine that
#: is busy with anything else (a training run, a parallel build), two threads spinning at OpenMP barriers made
#: small models 10-30x slower than one thread (measured on the 2-core development machine under load).
TEST_THREADS = max(1, int(os.environ.get("CEVIT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    torch.set_num_threads(min(TEST_THREADS, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory) -> None:
    """The tests' own cevit cache (:mod:`cevit.cache`), inherited by the CLI subprocesses: never the user's."""
    os.environ["CEVIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cevit-cache"))


SAMPLE_FACE = PROJECT_ROOT / "src" / "cevit" / "samples" / "astronaut.jpg"


@pytest.fixture(scope="session")
def face_rgb():
    """The shipped public-domain sample photo (one face) as an RGB uint8 array."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(SAMPLE_FACE).convert("RGB"))


def write_test_video(path, frames, *, rate: int = 10):
    """Encode RGB uint8 frames (all the same even size) into a small video with PyAV."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.codec_context.options = {"preset": "ultrafast", "crf": "18"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A small V1-family checkpoint with RANDOM weights, for pipeline mechanics only (scores are meaningless)."""
    from cevit.checkpoint import save_checkpoint
    from cevit.models import create_model

    torch.manual_seed(0)
    model = create_model("cross_efficient_vit_v1", image_size=96, depth=1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path, note="random weights for tests")
    return path

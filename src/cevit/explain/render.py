"""The PNGs an analyst looks at, drawn with OpenCV from an explained :class:`~cevit.inference.results.Analysis`.

* ``annotated.png`` — the image (for a video: the most suspicious sampled frame) with every face's box, its
  index and its score; red when the score reaches the label threshold, green below it;
* ``faces/frame<NNNNNN>_face<K>.png`` — per face: the model's crop under its heat map;
* ``contact_sheet.png`` — the ``top_k`` most suspicious faces' heat-map overlays in a grid, highest score first;
* ``timeline.png`` (videos) — the score of each sampled frame over time, the label threshold as a dashed line,
  frames without a face marked with a grey cross on the time axis.

:func:`render_explanations` returns these as PNG bytes (what the HTTP service inlines as base64),
:func:`write_explanations` writes them into a folder and returns the report's ``explanations`` block with the
files' paths relative to that folder, :func:`inline_explanations` the same block with ``data:image/png;base64``
URLs instead of paths. Matplotlib is not used: it is not a dependency of the analysis path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cevit.errors import CevitError, ConfigError

if TYPE_CHECKING:
    from cevit.inference.results import Analysis

__all__ = [
    "overlay",
    "annotate_frame",
    "contact_sheet",
    "timeline",
    "encode_png",
    "render_explanations",
    "write_explanations",
    "inline_explanations",
    "explanation_block",
]

_RED = (220, 40, 40)
_GREEN = (40, 170, 60)
_GREY = (140, 140, 160)  # NO_FACE marks (a blue-grey no anti-aliased edge of the other colours makes)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay(crop: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """The crop (S, S, 3) uint8 RGB under a jet-coloured ``heatmap`` (S, S) in [0, 1]; uint8 RGB."""
    if heatmap.shape != crop.shape[:2]:
        heatmap = cv2.resize(heatmap.astype(np.float32), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    gray = np.clip(np.rint(np.nan_to_num(heatmap) * 255.0), 0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = (1.0 - alpha) * crop.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int]) -> None:
    """Text with a dark outline, readable on any background."""
    thick = max(1, int(round(scale * 2)))
    cv2.putText(img, text, org, _FONT, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, colour, thick, cv2.LINE_AA)


def annotate_frame(analysis: Analysis, frame: np.ndarray, *, frame_index: int, scale: float = 1.0) -> np.ndarray:
    """``frame`` (RGB uint8, ``scale`` × the original size) with the boxes, indices and scores of its faces."""
    img = np.ascontiguousarray(frame.copy())
    threshold = analysis.rule.label_threshold
    side = max(img.shape[:2])
    font = max(0.55, side / 900.0)
    faces = [f for f in analysis.faces if f.frame_index == frame_index]
    for f in faces:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in f.box)
        colour = _RED if f.score >= threshold else _GREEN
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, max(2, side // 400), cv2.LINE_AA)
        _text(img, f"#{f.face_index} {f.score:.2f}", (x1, max(int(20 * font), y1 - 6)), font, colour)
    if analysis.media_type == "video":
        _text(img, f"frame {frame_index}", (8, img.shape[0] - 10), font, (255, 255, 255))
    if not faces:
        _text(img, "no face found", (8, int(30 * font) + 4), font, (255, 255, 255))
    return img


def contact_sheet(tiles: list[tuple[np.ndarray, str, bool]], *, columns: int = 4, tile: int = 160) -> np.ndarray:
    """A grid of (image, caption, suspicious) tiles, ``tile`` px each, caption under the image."""
    if not tiles:
        raise ValueError("contact sheet: no faces")
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    cap = 24
    sheet = np.full((rows * (tile + cap), columns * tile, 3), 255, dtype=np.uint8)
    for i, (image, caption, suspicious) in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = r * (tile + cap), c * tile
        sheet[y : y + tile, x : x + tile] = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, caption, (x + 4, y + tile + 17), _FONT, 0.45, _RED if suspicious else _GREEN, 1, cv2.LINE_AA)
    return sheet


def timeline(analysis: Analysis, *, width: int = 900, height: int = 300) -> np.ndarray:
    """Score per sampled frame over time (frame index when there are no timestamps), threshold, NO_FACE marks."""
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 56, 20, 34, 44
    pw, ph = width - left - right, height - top - bottom
    frames = analysis.frames
    use_time = bool(frames) and all(f.timestamp is not None for f in frames)
    xs = [float(f.timestamp) if use_time else float(f.index) for f in frames]  # type: ignore[arg-type]
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0

    def px(x: float) -> int:
        return left + int(round((x - lo) / (hi - lo) * pw))

    def py(score: float) -> int:
        return top + int(round((1.0 - score) * ph))

    cv2.rectangle(img, (left, top), (left + pw, top + ph), (60, 60, 60), 1)
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        cv2.line(img, (left - 4, py(s)), (left, py(s)), (60, 60, 60), 1)
        cv2.putText(img, f"{s:.2f}", (4, py(s) + 4), _FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for k in range(6):
        x = lo + (hi - lo) * k / 5
        cv2.line(img, (px(x), top + ph), (px(x), top + ph + 4), (60, 60, 60), 1)
        label = (f"{x:.2f}" if hi - lo < 2 else f"{x:.1f}") if use_time else f"{int(round(x))}"
        cv2.putText(img, label, (px(x) - 10, top + ph + 18), _FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    axis = "time (s)" if use_time else "frame"
    cv2.putText(img, axis, (left + pw // 2 - 30, height - 6), _FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    threshold = analysis.rule.label_threshold
    for x0 in range(left, left + pw, 12):  # dashed threshold line
        cv2.line(img, (x0, py(threshold)), (min(x0 + 6, left + pw), py(threshold)), _RED, 1)
    cv2.putText(img, f"threshold {threshold:.2f}", (left + pw - 120, py(threshold) - 5), _FONT, 0.4, _RED, 1,
                cv2.LINE_AA)  # fmt: skip
    prev: tuple[int, int] | None = None
    for f, x in zip(frames, xs):
        if f.score is None:  # NO_FACE: a grey cross on the axis, and a gap in the line
            cx, cy = px(x), top + ph
            cv2.line(img, (cx - 4, cy - 4), (cx + 4, cy + 4), _GREY, 2)
            cv2.line(img, (cx - 4, cy + 4), (cx + 4, cy - 4), _GREY, 2)
            prev = None
            continue
        point = (px(x), py(float(f.score)))
        if prev is not None:
            cv2.line(img, prev, point, (40, 80, 200), 2, cv2.LINE_AA)
        cv2.circle(img, point, 4, _RED if f.score >= threshold else _GREEN, -1, cv2.LINE_AA)
        prev = point
    verdict = "no face found" if analysis.status == "no_face" else f"{analysis.prediction} {analysis.score:.3f}"
    title = f"P(fake) per sampled frame: {verdict}   (x: no face)"
    cv2.putText(img, title, (left, 22), _FONT, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return img


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise CevitError("could not encode a PNG")
    return buf.tobytes()


def _face_name(frame_index: int, face_index: int) -> str:
    return f"faces/frame{frame_index:06d}_face{face_index}.png"


def render_explanations(analysis: Analysis, *, top_k: int = 8) -> dict[str, bytes]:
    """The PNGs of an explained analysis, by relative file name (see the module docstring)."""
    expl = analysis.explanations
    if expl is None:
        raise ConfigError(f"{analysis.source}: the analysis has no explanations (analyse with explain=True)")
    threshold = analysis.rule.label_threshold
    out: dict[str, bytes] = {}
    if expl.frame is not None:
        out["annotated.png"] = encode_png(annotate_frame(analysis, expl.frame, frame_index=expl.frame_index or 0,
                                                         scale=expl.frame_scale))  # fmt: skip
    for f in expl.faces:
        out[_face_name(f.frame_index, f.face_index)] = encode_png(overlay(f.crop, f.heatmap))
    if expl.faces:
        ranked = sorted(expl.faces, key=lambda f: f.score, reverse=True)[:top_k]
        tiles = [(overlay(f.crop, f.heatmap), f"f{f.frame_index} #{f.face_index} {f.score:.3f}", f.score >= threshold)
                 for f in ranked]  # fmt: skip
        out["contact_sheet.png"] = encode_png(contact_sheet(tiles))
    if analysis.media_type == "video":
        out["timeline.png"] = encode_png(timeline(analysis))
    return out


def _write_bytes(path: Path, data: bytes) -> None:
    """Atomic: a temporary file in the same folder, renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cevit-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def explanation_block(analysis: Analysis, files: Mapping[str, str]) -> dict[str, Any]:
    """The report's ``explanations`` block: method, timing, per-face peaks and the given ``files`` by role."""
    assert analysis.explanations is not None
    block = analysis.explanations.to_dict()
    faces = dict(files)
    block["files"] = {
        "annotated": faces.pop("annotated.png", None),
        "contact_sheet": faces.pop("contact_sheet.png", None),
        "timeline": faces.pop("timeline.png", None),
    }
    by_face = {_face_name(f["frame_index"], f["face_index"]): f for f in block["faces"]}
    for name, value in faces.items():
        if name in by_face:
            by_face[name]["overlay"] = value
    return block


def write_explanations(analysis: Analysis, folder: str | os.PathLike[str], *, top_k: int = 8,
                       relative_to: str | os.PathLike[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the PNGs of :func:`render_explanations` into ``folder`` (created) and return the report's
    ``explanations`` block, the files given relative to ``relative_to`` (default: ``folder``)."""
    folder = Path(folder)
    base = Path(relative_to) if relative_to is not None else folder
    files: dict[str, str] = {}
    for name, data in render_explanations(analysis, top_k=top_k).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_bytes(path, data)
        files[name] = os.path.relpath(path, base).replace(os.sep, "/")
    return explanation_block(analysis, files)


def inline_explanations(analysis: Analysis, *, top_k: int = 8) -> dict[str, Any]:
    """The report's ``explanations`` block with every image inline as a ``data:image/png;base64,...`` URL."""
    import base64

    files = {name: "data:image/png;base64," + base64.b64encode(data).decode("ascii")
             for name, data in render_explanations(analysis, top_k=top_k).items()}  # fmt: skip
    return explanation_block(analysis, files)

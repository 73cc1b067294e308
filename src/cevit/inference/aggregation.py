"""Turning face scores into a verdict: pure, named, tested rules whose parameters go into every report.

Each face gets a fake score P(fake) from the model. A media item (an image = one frame, a video = the sampled
frames) is scored by an :class:`AggregationRule`:

``cevit-default`` (the default, :func:`first_over_else_mean`)
    Scan the face scores of all frames in frame order (faces in the detector's order within a frame); the
    final score is the first face score above ``face_threshold`` (0.65), otherwise the mean of all face
    scores. The item is FAKE when the final score is above ``label_threshold`` (0.5).

``coccomini2022-video`` (the authors' video protocol, :func:`face_track_rule`)
    Faces are grouped into tracks by their index within the frame (face 0 of every frame is track 0, ...);
    each track's score is the mean of its face scores; the final score is the first track mean above
    ``face_threshold`` (0.55), otherwise the mean over tracks. FAKE above ``label_threshold`` (0.6).

Per-frame score (both rules) = the maximum over that frame's faces; a frame without faces has no score.
Confidence = score when FAKE, 1 − score when REAL. No face anywhere → REAL with confidence
:data:`NO_FACE_CONFIDENCE` (0.99) and the note "No face detected".

Face scores must be probabilities: finite numbers in [0, 1]. NaN, infinity or a value outside [0, 1] (a broken
model or corrupt weights) raises :class:`~cevit.errors.ModelError` naming the face, instead of turning into a
verdict (NaN compares False with every threshold, so it would silently read as REAL).

Order: the final score of ``cevit-default`` depends on the scan order only through "the first score above
``face_threshold``"; when no score or a single one is above it, any order gives the same score (means use
``math.fsum``, exactly rounded), and the label never depends on the order when ``face_threshold >=
label_threshold`` (as in the named rule). The per-frame scores and ``coccomini2022-video`` (tracks by face index,
sorted) do not depend on the order of the faces at all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cevit.errors import ConfigError, ModelError

__all__ = [
    "AggregationRule",
    "RULES",
    "DEFAULT_RULE",
    "NO_FACE_CONFIDENCE",
    "NO_FACE_NOTE",
    "Verdict",
    "first_over_else_mean",
    "face_track_rule",
    "frame_scores",
    "label_and_confidence",
    "get_rule",
    "aggregate",
]

Label = Literal["REAL", "FAKE"]
NO_FACE_CONFIDENCE = 0.99
NO_FACE_NOTE = "No face detected"


@dataclass(frozen=True, kw_only=True)
class AggregationRule:
    """A named rule with its two thresholds (written into every report)."""

    name: Literal["cevit-default", "coccomini2022-video"] = "cevit-default"
    face_threshold: float = 0.65
    label_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in ("cevit-default", "coccomini2022-video"):
            raise ConfigError(f"unknown aggregation rule {self.name!r}; valid: {', '.join(RULE_NAMES)}")
        for field in ("face_threshold", "label_threshold"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"aggregation {field} must be in [0, 1], got {value}")


RULE_NAMES = ("cevit-default", "coccomini2022-video")
RULES: dict[str, AggregationRule] = {
    "cevit-default": AggregationRule(name="cevit-default", face_threshold=0.65, label_threshold=0.5),
    "coccomini2022-video": AggregationRule(name="coccomini2022-video", face_threshold=0.55, label_threshold=0.6),
}
DEFAULT_RULE = RULES["cevit-default"]


def get_rule(
    name: str, *, face_threshold: float | None = None, label_threshold: float | None = None
) -> AggregationRule:
    """The named rule, with optional threshold overrides."""
    if name not in RULES:
        raise ConfigError(f"unknown aggregation rule {name!r}; valid: {', '.join(RULE_NAMES)}")
    base = RULES[name]
    return AggregationRule(
        name=base.name,
        face_threshold=base.face_threshold if face_threshold is None else face_threshold,
        label_threshold=base.label_threshold if label_threshold is None else label_threshold,
    )


@dataclass(frozen=True)
class Verdict:
    prediction: Label
    confidence: float
    score: float | None  # the final score; None when no face was found
    note: str


def _check_score(score: float, where: str) -> float:
    """``score`` as a float, or ModelError when it is not a probability (NaN, infinite, outside [0, 1])."""
    if isinstance(score, bool) or not isinstance(score, numbers.Real):
        raise ModelError(f"face score of {where} is not a number: {score!r}")
    value = float(score)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ModelError(
            f"face score of {where} is {value!r}, not a probability in [0, 1] (a broken model or corrupt weights)"
        )
    return value


def _check_faces(faces: Iterable[tuple[int, int, float]]) -> None:
    for frame_index, face_index, score in faces:
        _check_score(score, f"frame {frame_index}, face {face_index}")


def first_over_else_mean(face_scores: Sequence[float], *, face_threshold: float) -> float | None:
    """First score > ``face_threshold`` in scan order, else the mean; None for no scores.

    Raises ModelError for a score that is not a probability (NaN, infinite, outside [0, 1])."""
    for i, s in enumerate(face_scores):
        _check_score(s, f"face #{i}")
    if not face_scores:
        return None
    for s in face_scores:
        if s > face_threshold:
            return float(s)
    return math.fsum(face_scores) / len(face_scores)  # fsum: exactly rounded, so no order dependence


def face_track_rule(faces: Sequence[tuple[int, int, float]], *, face_threshold: float) -> float | None:
    """Authors' video rule over (frame_index, face_index, score): per-track means, first > threshold, else mean."""
    _check_faces(faces)
    tracks: dict[int, list[float]] = {}
    for _, face_index, score in faces:
        tracks.setdefault(face_index, []).append(score)
    if not tracks:
        return None
    means = [math.fsum(v) / len(v) for _, v in sorted(tracks.items())]
    return first_over_else_mean(means, face_threshold=face_threshold)


def frame_scores(faces: Sequence[tuple[int, int, float]], frame_indices: Sequence[int]) -> list[float | None]:
    """Per-frame score = max over the frame's faces (None for a frame without faces), in ``frame_indices`` order."""
    _check_faces(faces)
    best: dict[int, float] = {}
    for frame_index, _, score in faces:
        best[frame_index] = max(score, best.get(frame_index, float("-inf")))
    return [best.get(i) for i in frame_indices]


def label_and_confidence(score: float, label_threshold: float) -> tuple[Label, float]:
    """FAKE when ``score > label_threshold``; confidence = score (FAKE) or 1 − score (REAL)."""
    if score > label_threshold:
        return "FAKE", float(score)
    return "REAL", float(1.0 - score)


def aggregate(faces: Sequence[tuple[int, int, float]], rule: AggregationRule = DEFAULT_RULE) -> Verdict:
    """Verdict for one media item from its faces as (frame_index, face_index, score), in scan order.

    Raises ModelError for a score that is not a probability (NaN, infinite, outside [0, 1])."""
    _check_faces(faces)
    if not faces:
        return Verdict("REAL", NO_FACE_CONFIDENCE, None, NO_FACE_NOTE)
    if rule.name == "coccomini2022-video":
        score = face_track_rule(faces, face_threshold=rule.face_threshold)
    else:
        score = first_over_else_mean([s for _, _, s in faces], face_threshold=rule.face_threshold)
    assert score is not None
    label, confidence = label_and_confidence(score, rule.label_threshold)
    n_frames = len({f for f, _, _ in faces})
    note = (
        f"{len(faces)} face{'s' if len(faces) != 1 else ''} analysed in {n_frames} frame{'s' if n_frames != 1 else ''}"
    )
    return Verdict(label, confidence, score, note)

"""Property-based tests of cevit.inference.aggregation: the rules hold for any scores, not just hand-picked ones."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cevit.errors import ModelError
from cevit.inference.aggregation import (
    NO_FACE_CONFIDENCE,
    NO_FACE_NOTE,
    RULES,
    aggregate,
    face_track_rule,
    first_over_else_mean,
    frame_scores,
    get_rule,
    label_and_confidence,
)

FAST = settings(max_examples=60, deadline=None)

scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
thresholds = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
# faces as (frame_index, face_index, score), in scan order: frames ascending, faces ascending within a frame
faces_strategy = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), scores), min_size=0, max_size=25).map(
    lambda faces: sorted({(f, k): s for f, k, s in faces}.items())
)
faces_strategy = faces_strategy.map(lambda items: [(f, k, s) for (f, k), s in items])
rule_names = st.sampled_from(sorted(RULES))


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@FAST
@given(faces=faces_strategy, name=rule_names)
def test_verdict_is_consistent_with_its_score_and_thresholds(faces, name):
    rule = RULES[name]
    v = aggregate(faces, rule)
    if not faces:  # the no-face rule
        assert (v.prediction, v.confidence, v.score, v.note) == ("REAL", NO_FACE_CONFIDENCE, None, NO_FACE_NOTE)
        return
    assert v.score is not None
    all_scores = [s for _, _, s in faces]
    assert min(all_scores) - 1e-12 <= v.score <= max(all_scores) + 1e-12  # a first score or a mean of scores
    assert v.prediction == ("FAKE" if v.score > rule.label_threshold else "REAL")
    assert 0.0 <= v.confidence <= 1.0
    assert v.confidence == (v.score if v.prediction == "FAKE" else 1.0 - v.score)


@FAST
@given(faces=faces_strategy, face_threshold=thresholds, label_threshold=thresholds)
def test_default_rule_first_over_threshold_else_mean(faces, face_threshold, label_threshold):
    rule = get_rule("cevit-default", face_threshold=face_threshold, label_threshold=label_threshold)
    v = aggregate(faces, rule)
    over = [s for _, _, s in faces if s > face_threshold]
    if over:
        assert v.score == over[0]
    elif faces:
        assert _close(v.score, sum(s for _, _, s in faces) / len(faces))


@FAST
@given(faces=faces_strategy, name=rule_names, data=st.data())
def test_order_invariance_where_promised(faces, name, data):
    """cevit-default: the label never depends on the order (face_threshold >= label_threshold: any score over the
    face threshold makes the item FAKE whichever comes first; the mean is exactly rounded), nor the score unless
    several faces compete for "first over". coccomini2022-video: tracks are sorted, nothing depends on order."""
    rule = RULES[name]
    shuffled = data.draw(st.permutations(faces))
    a, b = aggregate(faces, rule), aggregate(shuffled, rule)
    if name == "coccomini2022-video":
        assert (a.prediction, a.score) == (b.prediction, b.score)
        return
    assert rule.face_threshold >= rule.label_threshold
    assert a.prediction == b.prediction
    if len([s for _, _, s in faces if s > rule.face_threshold]) <= 1:
        assert a.score == b.score


@FAST
@given(faces=faces_strategy, data=st.data())
def test_track_rule_and_frame_scores_do_not_depend_on_face_order(faces, data):
    shuffled = data.draw(st.permutations(faces))
    assert face_track_rule(faces, face_threshold=0.55) == face_track_rule(shuffled, face_threshold=0.55)
    frames = sorted({f for f, _, _ in faces} | {99})
    assert frame_scores(faces, frames) == frame_scores(shuffled, frames)
    per_frame = frame_scores(faces, frames)
    assert per_frame[-1] is None  # frame 99 has no face
    for frame, score in zip(frames[:-1], per_frame[:-1]):
        assert score == max(s for f, _, s in faces if f == frame)


@FAST
@given(score=scores, threshold=thresholds)
def test_label_threshold_is_strict(score, threshold):
    label, confidence = label_and_confidence(score, threshold)
    assert label == ("FAKE" if score > threshold else "REAL")
    assert 0.0 <= confidence <= 1.0


bad_scores = st.one_of(
    st.just(math.nan), st.just(math.inf), st.just(-math.inf),
    st.floats(min_value=1.0, exclude_min=True, allow_nan=False),
    st.floats(max_value=0.0, exclude_max=True, allow_nan=False),
)  # fmt: skip


@FAST
@given(faces=faces_strategy, bad=bad_scores, position=st.integers(0, 25), name=rule_names)
def test_non_finite_or_out_of_range_scores_are_rejected(faces, bad, position, name):
    position = min(position, len(faces))
    hostile = [*faces[:position], (7, 0, bad), *faces[position:]]
    with pytest.raises(ModelError, match="frame 7, face 0"):
        aggregate(hostile, RULES[name])
    with pytest.raises(ModelError):
        frame_scores(hostile, [7])
    with pytest.raises(ModelError):
        face_track_rule(hostile, face_threshold=0.55)
    with pytest.raises(ModelError):
        first_over_else_mean([s for _, _, s in hostile], face_threshold=0.65)

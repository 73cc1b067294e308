from __future__ import annotations

import pytest

from cevit.errors import ConfigError
from cevit.inference.aggregation import (
    NO_FACE_CONFIDENCE,
    NO_FACE_NOTE,
    RULES,
    AggregationRule,
    aggregate,
    face_track_rule,
    first_over_else_mean,
    frame_scores,
    get_rule,
    label_and_confidence,
)


def test_first_face_over_threshold_wins_in_scan_order():
    assert first_over_else_mean([0.1, 0.7, 0.9], face_threshold=0.65) == 0.7
    assert first_over_else_mean([0.1, 0.65, 0.3], face_threshold=0.65) == pytest.approx((0.1 + 0.65 + 0.3) / 3)
    assert first_over_else_mean([], face_threshold=0.65) is None


def test_default_rule_verdicts():
    # frame 0: faces 0.2, 0.3; frame 1: 0.66 -> first over 0.65 is 0.66 -> FAKE with confidence 0.66
    v = aggregate([(0, 0, 0.2), (0, 1, 0.3), (1, 0, 0.66)])
    assert (v.prediction, v.score, v.confidence) == ("FAKE", 0.66, 0.66)
    # none over 0.65: mean 0.4 -> REAL, confidence 0.6
    v = aggregate([(0, 0, 0.2), (1, 0, 0.6)])
    assert v.prediction == "REAL" and v.score == pytest.approx(0.4) and v.confidence == pytest.approx(0.6)
    # mean exactly at the label threshold is REAL (FAKE needs > 0.5)
    v = aggregate([(0, 0, 0.5)])
    assert v.prediction == "REAL" and v.confidence == pytest.approx(0.5)
    assert v.note == "1 face analysed in 1 frame"


def test_no_face_is_real_with_fixed_confidence():
    v = aggregate([])
    assert (v.prediction, v.confidence, v.score, v.note) == ("REAL", NO_FACE_CONFIDENCE, None, NO_FACE_NOTE)
    assert NO_FACE_CONFIDENCE == 0.99 and NO_FACE_NOTE == "No face detected"


def test_label_and_confidence():
    assert label_and_confidence(0.8, 0.5) == ("FAKE", 0.8)
    assert label_and_confidence(0.2, 0.5) == ("REAL", pytest.approx(0.8))
    assert label_and_confidence(0.55, 0.6)[0] == "REAL"


def test_frame_scores_max_over_faces_and_none_without_faces():
    faces = [(0, 0, 0.1), (0, 1, 0.9), (5, 0, 0.4)]
    assert frame_scores(faces, [0, 3, 5]) == [0.9, None, 0.4]


def test_authors_face_track_rule():
    # track 0: mean(0.5, 0.7) = 0.6 > 0.55 -> first track wins
    faces = [(0, 0, 0.5), (0, 1, 0.9), (1, 0, 0.7), (1, 1, 0.9)]
    assert face_track_rule(faces, face_threshold=0.55) == pytest.approx(0.6)
    # no track over 0.55: mean of track means
    faces = [(0, 0, 0.2), (1, 0, 0.4), (0, 1, 0.5)]
    assert face_track_rule(faces, face_threshold=0.55) == pytest.approx((0.3 + 0.5) / 2)
    rule = RULES["coccomini2022-video"]
    v = aggregate([(0, 0, 0.58), (1, 0, 0.58)], rule)
    assert v.score == pytest.approx(0.58) and v.prediction == "REAL"  # FAKE only above 0.6
    v = aggregate([(0, 0, 0.7), (1, 0, 0.6)], rule)
    assert v.prediction == "FAKE" and v.confidence == pytest.approx(0.65)


def test_rules_and_threshold_overrides():
    assert RULES["cevit-default"] == AggregationRule(name="cevit-default", face_threshold=0.65, label_threshold=0.5)
    r = get_rule("coccomini2022-video", label_threshold=0.9)
    assert (r.face_threshold, r.label_threshold) == (0.55, 0.9)
    with pytest.raises(ConfigError, match="unknown aggregation rule"):
        get_rule("vote")
    with pytest.raises(ConfigError, match=r"label_threshold must be in \[0, 1\]"):
        get_rule("cevit-default", label_threshold=1.5)

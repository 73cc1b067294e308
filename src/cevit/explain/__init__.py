"""Explanations of a verdict: per-face heat maps (:mod:`cevit.explain.maps`) and the PNGs an analyst looks at
(:mod:`cevit.explain.render`). Off the default path: nothing here runs unless explanations are asked for."""

from cevit.explain.maps import (
    DEFAULT_METHOD,
    METHODS,
    Explanations,
    FaceExplanation,
    check_method,
    face_heatmaps,
)

__all__ = ["DEFAULT_METHOD", "METHODS", "Explanations", "FaceExplanation", "check_method", "face_heatmaps"]

"""Face detection for cevit: the MTCNN detector (:class:`MTCNN`) and its result type (:class:`DetectedFace`)."""

from __future__ import annotations

from cevit.faces.mtcnn import MTCNN, DetectedFace

__all__ = ["MTCNN", "DetectedFace"]

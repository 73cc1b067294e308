"""Inference: the analysis pipeline, aggregation rules, typed results and reports.

``cevit.inference.pipeline`` (needs torch): :func:`~cevit.inference.pipeline.load_model` and the
``Detector``; ``cevit.inference.results``: :class:`~cevit.inference.results.Analysis` (one analysed item)
and its JSON report; ``cevit.inference.protocol``: :class:`DetectorProtocol`, the interface the CLI, the
HTTP service and the evaluation runner use. Importing this package does not import torch.
"""

from cevit.inference.protocol import DetectorProtocol
from cevit.inference.results import Analysis, AnalysisError, Face, FrameResult

__all__ = ["DetectorProtocol", "Analysis", "AnalysisError", "Face", "FrameResult"]

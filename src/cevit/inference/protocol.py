"""The detector interface that the CLI, the HTTP service and the evaluation runner are written against.

:class:`cevit.inference.pipeline.Detector` (what :func:`cevit.load_model` returns) implements it; anything else
with these members (a remote client, a test double) can stand in. Importing this module is cheap (no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from cevit.inference.aggregation import AggregationRule
    from cevit.inference.pipeline import AnalyzeOptions
    from cevit.inference.results import Analysis, AnalysisError
    from cevit.preprocess import Preprocessing

__all__ = ["DetectorProtocol", "Progress"]

#: Called with (frames done, frames expected) while a video is sampled.
Progress = Callable[[int, int], None]


@runtime_checkable
class DetectorProtocol(Protocol):
    """A loaded face-deepfake detector.

    ``analyze`` / ``analyze_many`` give the JSON reports (dicts, schema 1.2); ``analyze_result`` /
    ``analyze_many_results`` the same as typed :class:`~cevit.inference.results.Analysis` objects
    (``.to_dict()`` is the report); ``explain`` (see :meth:`Detector.analyze_result`) adds heat maps and may be
    left out by stand-ins that never get it. ``analyze_many*`` may pipeline the files (``workers`` at a time;
    None: the implementation's default, 0: one after another) and yield in input order, or as they finish with
    ``unordered=True``. ``score_faces`` scores ready-made face crops (evaluation on face indexes).
    """

    model_info: dict[str, Any]  # name, preset, checkpoint_sha256, ... (the report's ``model`` block)
    options: AnalyzeOptions  # analysis defaults: num_frames, aggregation rule, batch sizes, detector settings
    preprocessing: Preprocessing  # the checkpoint's crop → tensor contract

    def analyze(
        self, media_path: str | Path, *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, explain: bool | str = False,
    ) -> dict[str, Any]: ...  # fmt: skip

    def analyze_result(
        self, media_path: str | Path, *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, explain: bool | str = False,
    ) -> Analysis: ...  # fmt: skip

    def analyze_many(
        self, paths: Iterable[str | Path], *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, workers: int | None = None,
        unordered: bool = False,
    ) -> Iterator[dict[str, Any]]: ...  # fmt: skip

    def analyze_many_results(
        self, paths: Iterable[str | Path], *, num_frames: int | None = None, threshold: float | None = None,
        rule: str | AggregationRule | None = None, progress: Progress | None = None, workers: int | None = None,
        unordered: bool = False,
    ) -> Iterator[Analysis | AnalysisError]: ...  # fmt: skip

    def score_faces(self, faces: list[np.ndarray]) -> list[float]: ...

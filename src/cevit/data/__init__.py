"""The data layer: how faces are stored on disk and read back, shared by training, evaluation and extraction.

* :mod:`cevit.data.layouts` — dataset layouts (FF++, DFDC, Celeb-DF, real/fake folders, ...): which media
  files a dataset has, their labels, groups and splits;
* :mod:`cevit.data.extract` — ``cevit extract-faces``: media → detected faces → saved crops + a face index;
* :mod:`cevit.data.crops` — writing and reading one saved crop (:func:`save_face_crop`, :func:`load_crop`);
* :mod:`cevit.data.index` — the face index CSV (:class:`FaceRow`, :func:`read_index`, :func:`write_index`).

Turning a face (a saved crop or a full frame) into the model's input is :class:`cevit.preprocess.FacePreprocessor`,
built from the checkpoint's contract; every consumer calls it. ``cevit.training`` and ``cevit.evaluation`` both
build on this package and never import each other.
"""

from cevit.data.crops import SavedCrop, load_crop, save_face_crop
from cevit.data.index import INDEX_COLUMNS, REQUIRED_COLUMNS, VALID_COLUMNS, FaceRow, read_index, read_indexes, write_index

__all__ = [
    "INDEX_COLUMNS",
    "REQUIRED_COLUMNS",
    "VALID_COLUMNS",
    "FaceRow",
    "SavedCrop",
    "load_crop",
    "read_index",
    "read_indexes",
    "save_face_crop",
    "write_index",
]

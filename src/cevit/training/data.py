"""Training data: face index CSVs → typed rows → leakage-free split → torch datasets.

* :func:`read_index` parses a face index (format of ``cevit extract-faces``) into frozen :class:`FaceRow`
  records; crop paths are resolved against the index file's folder, labels become 0 (real) / 1 (fake).
* :func:`split_rows` splits by **group** only (video id / identity / media stem), never by frame: a row whose
  ``split`` column says ``train`` or ``val`` goes there and takes its whole group with it (a group with both
  explicit ``train`` and ``val`` rows is an error: it would leak); ``test`` rows are left out; every other
  group goes to validation when the hash ``sha256(seed, group)`` maps below ``val_fraction``. The hash makes
  the split stable: it does not change when rows or other groups are added, nor with the training seed.
* :class:`LabelledFaceDataset` yields one (image tensor, label, item index) per item: the index rows, plus,
  with ``sbi_from_reals=True``, one self-blended pseudo-fake per real row (``mixed`` mode, and validation of
  the SBI modes). :class:`SBIFaceDataset` yields (real tensor, pseudo-fake tensor, item index) pairs of the
  ``sbi`` mode; :func:`collate_sbi_pairs` makes a batch of 2k samples from k pairs (the k reals, then the k
  pseudo-fakes).

Every item goes through the same steps: read the saved crop, (training) geometric augmentation that moves box
and landmarks, (SBI) :func:`cevit.training.sbi.self_blend`, (training) photometric augmentation — with the same
parameters on both images of an SBI pair, so they differ only by the blending — then the model's preprocessing
contract (:func:`~cevit.preprocess.crop_face`, :func:`~cevit.preprocess.resize_face`,
:func:`~cevit.preprocess.to_tensor`), exactly as at inference.

**Randomness.** Datasets are indexed by ``(epoch, idx)`` tuples (a plain ``idx`` means epoch
``fixed_epoch``), and all randomness of an item comes from ``np.random.default_rng([seed, epoch, idx])``, so
an item never depends on the worker that makes it, the order of requests or where training resumed.

**Bad files.** A crop that is missing, unreadable or unusable (degenerate box) is logged once per file (per
process) and skipped: the item falls back to the next item (idx + 1, idx + 2, ...), with a fresh generator
from the original ``(seed, epoch, idx)``, so the fallback is deterministic too.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cevit.errors import CevitError, ConfigError
from cevit.preprocess import Preprocessing, crop_face, resize_face, square_box, to_tensor
from cevit.training.config import AugmentSection, DataSection
from cevit.training.sbi import SBIConfig, self_blend

__all__ = [
    "INDEX_COLUMNS",
    "REQUIRED_COLUMNS",
    "VAL_EPOCH",
    "FaceRow",
    "read_index",
    "read_indexes",
    "group_fraction",
    "split_rows",
    "LabelledFaceDataset",
    "SBIFaceDataset",
    "collate_sbi_pairs",
    "EpochBatchSampler",
    "TrainData",
    "prepare_data",
    "repeat_rows",
    "load_crop",
]

logger = logging.getLogger(__name__)

INDEX_COLUMNS: tuple[str, ...] = (
    "crop_path", "source", "frame_index", "timestamp", "face_index", "x1", "y1", "x2", "y2",
    "lm0x", "lm0y", "lm1x", "lm1y", "lm2x", "lm2y", "lm3x", "lm3y", "lm4x", "lm4y",
    "det_prob", "label", "split", "method", "dataset", "group",
)  # fmt: skip
#: Columns without which a row cannot be used; the others default to empty/0.
REQUIRED_COLUMNS: tuple[str, ...] = ("crop_path", "x1", "y1", "x2", "y2", "label")
_LM_COLUMNS = INDEX_COLUMNS[9:19]
_LABELS = {"real": 0, "fake": 1}
_SPLITS = ("", "train", "val", "test")
#: The epoch key of validation items: validation pseudo-fakes are the same at every epoch.
VAL_EPOCH = 1_000_000


@dataclass(frozen=True, kw_only=True)
class FaceRow:
    """One face of a face index, with paths resolved and values typed."""

    crop_path: str  #: absolute path of the saved crop
    source: str
    frame_index: int
    timestamp: float | None
    face_index: int
    box: tuple[float, float, float, float]  #: x1, y1, x2, y2 in the crop's pixels
    landmarks: tuple[tuple[float, float], ...] | None  #: 5 (x, y) in the crop's pixels, or None
    det_prob: float
    label: int  #: 0 real, 1 fake
    split: str  #: "train", "val", "test" or ""
    method: str
    dataset: str
    group: str  #: the split key (never empty: falls back to the source / crop stem)
    index_path: str  #: the index file this row came from
    line: int  #: its line number in that file (header = 1)

    @property
    def landmarks_array(self) -> np.ndarray | None:
        return None if self.landmarks is None else np.asarray(self.landmarks, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# reading


def _num(value: str, kind: type, *, where: str, column: str) -> Any:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: column {column!r}: {value!r} is not a valid {kind.__name__}") from None
    if kind is float and not math.isfinite(out):
        raise ConfigError(f"{where}: column {column!r}: {value!r} is not finite")
    return out


def read_index(path: str | Path) -> list[FaceRow]:
    """Parse one face index CSV; errors (ConfigError) name the file, line and column (text that is not UTF-8 or
    not CSV included)."""
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read face index ({exc.strerror or exc})") from None
    rows: list[FaceRow] = []
    try:
        with fh:
            _read_rows(fh, path, rows)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a face index: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a face index: unreadable CSV ({exc})") from None
    logger.info("read %d faces from %s", len(rows), path)
    return rows


def _read_rows(fh: IO[str], path: Path, rows: list[FaceRow]) -> None:
    base = path.resolve().parent
    reader = csv.DictReader(fh)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{path}: not a face index: missing column(s) {', '.join(missing)}")
    has_lm = all(c in header for c in _LM_COLUMNS)
    for line_no, rec in enumerate(reader, start=2):
        where = f"{path}:{line_no}"
        get = lambda c: (rec.get(c) or "").strip()  # noqa: E731, B023 - called within this iteration only
        if not any(v for v in rec.values() if isinstance(v, str) and v.strip()):
            continue  # blank line
        crop = get("crop_path")
        if not crop:
            raise ConfigError(f"{where}: empty crop_path")
        label_name = get("label").lower()
        if label_name not in _LABELS:
            raise ConfigError(f"{where}: label must be 'real' or 'fake', got {get('label')!r}")
        split = get("split").lower()
        if split not in _SPLITS:
            raise ConfigError(f"{where}: split must be train, val, test or empty, got {get('split')!r}")
        box = tuple(_num(get(c), float, where=where, column=c) for c in ("x1", "y1", "x2", "y2"))
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ConfigError(f"{where}: degenerate face box {box}")
        landmarks = None
        if has_lm and all(get(c) for c in _LM_COLUMNS):
            vals = [_num(get(c), float, where=where, column=c) for c in _LM_COLUMNS]
            landmarks = tuple((vals[2 * i], vals[2 * i + 1]) for i in range(5))
        source = get("source")
        group = get("group") or (Path(source).stem if source else Path(crop).stem)
        crop_path = Path(crop)
        rows.append(
            FaceRow(
                crop_path=str(crop_path if crop_path.is_absolute() else base / crop_path),
                source=source,
                frame_index=_num(get("frame_index") or "0", int, where=where, column="frame_index"),
                timestamp=_num(get("timestamp"), float, where=where, column="timestamp") if get("timestamp") else None,
                face_index=_num(get("face_index") or "0", int, where=where, column="face_index"),
                box=box,  # type: ignore[arg-type]
                landmarks=landmarks,
                det_prob=_num(get("det_prob") or "1", float, where=where, column="det_prob"),
                label=_LABELS[label_name],
                split=split,
                method=get("method"),
                dataset=get("dataset"),
                group=group,
                index_path=str(path),
                line=line_no,
            )
        )


def read_indexes(paths: Sequence[str | Path]) -> list[FaceRow]:
    """All rows of several face indexes, in order."""
    rows: list[FaceRow] = []
    for p in paths:
        rows.extend(read_index(p))
    return rows


# ----------------------------------------------------------------------------------------------------------
# split


def group_fraction(group: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) from (seed, group)."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_rows(rows: Sequence[FaceRow], *, val_fraction: float, seed: int = 0) -> tuple[list[FaceRow], list[FaceRow]]:
    """(train rows, val rows), split by group; see the module docstring. Test rows are dropped.

    When ``val_fraction > 0`` and neither the ``split`` column nor the hash put any group into validation,
    the group with the smallest hash goes there (if there are at least two groups), so small datasets still
    validate.
    """
    explicit: dict[str, str] = {}
    where: dict[str, str] = {}
    for r in rows:
        if r.split in ("train", "val"):
            prev = explicit.setdefault(r.group, r.split)
            where.setdefault(r.group, f"{r.index_path}:{r.line}")
            if prev != r.split:
                raise ConfigError(
                    f"{r.index_path}:{r.line}: group {r.group!r} is marked {r.split!r} here but {prev!r} at "
                    f"{where[r.group]}; a group must lie on one side of the split"
                )
    test_groups = {r.group for r in rows if r.split == "test"}
    side: dict[str, str] = dict(explicit)
    hashed: dict[str, float] = {}
    for r in rows:
        if r.group not in side and r.split != "test":
            hashed[r.group] = group_fraction(r.group, seed)
    for g, u in hashed.items():
        side[g] = "val" if u < val_fraction else "train"
    if val_fraction > 0 and "val" not in side.values() and len(hashed) >= 2:
        g = min(hashed, key=lambda k: (hashed[k], k))
        side[g] = "val"
        logger.info("split: no group fell into validation; using group %r", g)
    train = [r for r in rows if r.split != "test" and side.get(r.group) == "train"]
    val = [r for r in rows if r.split != "test" and side.get(r.group) == "val"]
    n_test = sum(1 for r in rows if r.split == "test")
    if n_test:
        logger.info("split: left out %d test rows", n_test)
    both = {r.group for r in train} & {r.group for r in val}
    assert not both, f"group(s) on both sides: {sorted(both)[:5]}"
    leaked = test_groups & ({r.group for r in train} | {r.group for r in val})
    if leaked:
        logger.warning(
            "split: %d group(s) have both test rows and train/val rows, e.g. %r", len(leaked), sorted(leaked)[0]
        )
    return train, val


def _cap(rows: list[FaceRow], cap: int | None, seed: int, stream: int) -> list[FaceRow]:
    if cap is None or len(rows) <= cap:
        return rows
    keep = np.sort(np.random.default_rng([seed, stream]).choice(len(rows), size=cap, replace=False))
    return [rows[int(i)] for i in keep]


# ----------------------------------------------------------------------------------------------------------
# datasets


def load_crop(path: str) -> np.ndarray | None:
    """A saved crop as uint8 RGB (H, W, 3), or None when missing or undecodable."""
    import cv2

    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if buf.size == 0:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[0] < 2 or img.shape[1] < 2:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _FaceItems(Dataset):
    """Shared machinery: crop loading with warn-once-and-skip, per-item generators, the contract."""

    def __init__(
        self,
        rows: Sequence[FaceRow],
        *,
        spec: Preprocessing,
        augment: AugmentSection | None,
        seed: int,
        sbi_config: SBIConfig,
        fixed_epoch: int,
    ) -> None:
        self.rows = list(rows)
        self.spec = spec
        self.iso_spec = dataclasses.replace(spec, resize_mode="isotropic_pad")
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = int(seed)
        self.sbi_config = sbi_config
        self.fixed_epoch = int(fixed_epoch)
        self._warned: set[str] = set()
        self._bad: set[int] = set()

    # subclasses: number of items, and making item j with a generator
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _make(self, j: int, rng: np.random.Generator) -> tuple[Any, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _row_of(self, j: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _key(self, key: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(key, tuple):
            epoch, idx = key
        else:
            epoch, idx = self.fixed_epoch, key
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"item {idx} out of range [0, {len(self)})")
        return int(epoch), idx

    def _warn(self, path: str, why: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            logger.warning("skipping face crop %s: %s", path, why)

    def _image(self, row: FaceRow) -> np.ndarray | None:
        image = load_crop(row.crop_path)
        if image is None:
            self._warn(row.crop_path, "missing or unreadable")
        return image

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, ...]:
        epoch, idx = self._key(key)
        n = len(self)
        for step in range(n):
            j = (idx + step) % n
            if j in self._bad:
                continue
            rng = np.random.default_rng([self.seed, epoch, idx])
            try:
                out = self._make(j, rng)
            except (ValueError, CevitError) as exc:
                self._warn(self.rows[self._row_of(j)].crop_path, f"unusable ({exc})")
                out = None
            if out is not None:
                return out
            self._bad.add(j)
        raise CevitError(
            f"no readable face crop among the {n} items (first: {self.rows[0].crop_path if self.rows else '-'})"
        )

    # the per-image pipeline
    def _geometry(self, image: np.ndarray, row: FaceRow, rng: np.random.Generator):  # type: ignore[no-untyped-def]
        from cevit.training.augment import augment_geometry

        if self.augment is None:
            return image, row.box, row.landmarks_array
        return augment_geometry(image, row.box, row.landmarks_array, rng=rng, config=self.augment)

    def _finish(
        self, images: Sequence[np.ndarray], box: Sequence[float], rng: np.random.Generator
    ) -> list[torch.Tensor]:
        """Photometric augmentation (same parameters for every image) and the contract, per image."""
        from cevit.training.augment import augment_photometric, choose_resize_mode

        spec = self.spec
        if self.augment is not None:
            side = square_box(box, spec.crop_margin)
            scale = (side[2] - side[0]) / spec.input_size
            child = int(rng.integers(0, 2**63 - 1))
            images = [augment_photometric(im, rng=np.random.default_rng(child), config=self.augment, scale=scale)
                      for im in images]  # fmt: skip
            if choose_resize_mode(rng, self.augment):
                spec = self.iso_spec
        faces = [resize_face(crop_face(im, box, spec), spec) for im in images]
        return list(to_tensor(np.stack(faces), self.spec))


class LabelledFaceDataset(_FaceItems):
    """Items = the rows (label from the index) and, with ``sbi_from_reals``, one pseudo-fake per real row.

    ``__getitem__((epoch, idx))`` → ``(image (3, S, S) float32, label float32 scalar, idx)``. Pseudo-fake items
    come after the rows; their group key is ``<group>#sbi`` (see :attr:`groups`).
    """

    def __init__(
        self,
        rows: Sequence[FaceRow],
        *,
        spec: Preprocessing,
        augment: AugmentSection | None = None,
        seed: int = 0,
        sbi_from_reals: bool = False,
        sbi_config: SBIConfig = SBIConfig(),
        fixed_epoch: int = 0,
    ) -> None:
        super().__init__(rows, spec=spec, augment=augment, seed=seed, sbi_config=sbi_config, fixed_epoch=fixed_epoch)
        items = [(i, False) for i in range(len(self.rows))]
        if sbi_from_reals:
            items += [(i, True) for i, r in enumerate(self.rows) if r.label == 0 and r.landmarks is not None]
        self.items: list[tuple[int, bool]] = items

    def __len__(self) -> int:
        return len(self.items)

    def _row_of(self, j: int) -> int:
        return self.items[j][0]

    @property
    def labels(self) -> np.ndarray:
        """Label of every item (0 real, 1 fake/pseudo-fake)."""
        return np.array([1 if sbi else self.rows[i].label for i, sbi in self.items], dtype=np.int64)

    @property
    def groups(self) -> list[str]:
        return [self.rows[i].group + ("#sbi" if sbi else "") for i, sbi in self.items]

    @property
    def sources(self) -> list[str]:
        """Source of every item (:func:`row_source`; ``sbi`` for the self-blended pseudo-fakes)."""
        return ["sbi" if sbi else row_source(self.rows[i]) for i, sbi in self.items]

    def _make(self, j: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        row_idx, sbi = self.items[j]
        row = self.rows[row_idx]
        image = self._image(row)
        if image is None:
            return None
        image, box, lm = self._geometry(image, row, rng)
        label = row.label
        if sbi:
            image = self_blend(image, lm, rng=rng, config=self.sbi_config).fake
            label = 1
        (x,) = self._finish([image], box, rng)
        return x, torch.tensor(float(label)), j


class SBIFaceDataset(_FaceItems):
    """Items = real rows with landmarks; ``__getitem__((epoch, idx))`` → ``(real, pseudo_fake, idx)``.

    ``real`` is the target image of :func:`~cevit.training.sbi.self_blend` (label 0) and ``pseudo_fake`` the
    blend (label 1); both got the same geometric and photometric augmentation and the same crop.
    """

    def __init__(
        self,
        rows: Sequence[FaceRow],
        *,
        spec: Preprocessing,
        augment: AugmentSection | None = None,
        seed: int = 0,
        sbi_config: SBIConfig = SBIConfig(),
        fixed_epoch: int = 0,
    ) -> None:
        usable = [r for r in rows if r.label == 0 and r.landmarks is not None]
        dropped = len(rows) - len(usable)
        if dropped:
            logger.warning("SBI dataset: ignoring %d rows that are fake or have no landmarks", dropped)
        super().__init__(usable, spec=spec, augment=augment, seed=seed, sbi_config=sbi_config, fixed_epoch=fixed_epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _row_of(self, j: int) -> int:
        return j

    def _make(self, j: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        row = self.rows[j]
        image = self._image(row)
        if image is None:
            return None
        image, box, lm = self._geometry(image, row, rng)
        blend = self_blend(image, lm, rng=rng, config=self.sbi_config)
        real, fake = self._finish([blend.real, blend.fake], box, rng)
        return real, fake, j


def collate_sbi_pairs(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k (real, fake, idx) pairs → (images (2k, 3, S, S): reals then fakes, labels (2k,), idx (2k,))."""
    reals = torch.stack([b[0] for b in batch])
    fakes = torch.stack([b[1] for b in batch])
    idx = torch.tensor([b[2] for b in batch], dtype=torch.int64)
    k = len(batch)
    labels = torch.cat([torch.zeros(k), torch.ones(k)])
    return torch.cat([reals, fakes]), labels, torch.cat([idx, idx])


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, idx)`` keys: the permutation ``default_rng([seed, epoch])`` of ``n`` items cut into
    ``steps`` batches of ``batch`` items (the remainder is dropped), starting at batch ``start_step``."""

    def __init__(self, n: int, batch: int, *, seed: int, epoch: int, steps: int, start_step: int = 0) -> None:
        if steps * batch > n:
            raise ValueError(f"{steps} batches of {batch} need {steps * batch} items, have {n}")
        self.n, self.batch, self.seed, self.epoch = n, batch, seed, epoch
        self.steps, self.start_step = steps, start_step

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for s in range(self.start_step, self.steps):
            yield [(self.epoch, int(i)) for i in perm[s * self.batch : (s + 1) * self.batch]]


# ----------------------------------------------------------------------------------------------------------
# the whole data side of a run


@dataclass(frozen=True, kw_only=True)
class TrainData:
    """Datasets and counts of a run (built by :func:`prepare_data`)."""

    train: LabelledFaceDataset | SBIFaceDataset
    val: LabelledFaceDataset | None
    #: dataset items per optimisation batch (batch_size, or batch_size / 2 pairs in sbi mode)
    items_per_batch: int
    n_train_real: int  #: training samples per epoch-pass of each class (pseudo-fakes count as fake)
    n_train_fake: int
    n_val_real: int
    n_val_fake: int
    n_val_groups: int
    indexes: tuple[dict[str, str], ...]  #: [{"path": ..., "sha256": ...}]


def filter_rows(
    rows: list[FaceRow], *, max_face_index: int | None = None, min_face_size: float = 0.0, min_det_prob: float = 0.0
) -> list[FaceRow]:
    """Rows whose face index, box size (crop pixels) and detection probability pass the thresholds."""
    kept = [
        r for r in rows
        if (max_face_index is None or r.face_index <= max_face_index)
        and min(r.box[2] - r.box[0], r.box[3] - r.box[1]) >= min_face_size
        and r.det_prob >= min_det_prob
    ]  # fmt: skip
    if len(kept) < len(rows):
        logger.info("face filters kept %d of %d index rows", len(kept), len(rows))
    return kept


def cap_per_index(rows: list[FaceRow], caps: dict[str, int | None], *, seed: int) -> list[FaceRow]:
    """At most ``caps[row.index_path]`` rows of each index (a subset drawn with ``seed``), order kept."""
    by_index: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_index.setdefault(r.index_path, []).append(i)
    keep: set[int] = set()
    for stream, (index_path, positions) in enumerate(sorted(by_index.items())):
        cap = caps.get(index_path)
        if cap is None or len(positions) <= cap:
            keep.update(positions)
            continue
        chosen = np.random.default_rng([seed, 3, stream]).choice(len(positions), size=cap, replace=False)
        keep.update(positions[int(j)] for j in chosen)
        logger.info("index cap: %d of %d training rows of %s", cap, len(positions), index_path)
    return [r for i, r in enumerate(rows) if i in keep]


def row_source(row: FaceRow) -> str:
    """The source a row is reported under: its ``dataset`` column, or (empty / ``generic``) its index's folder name."""
    if row.dataset and row.dataset != "generic":
        return row.dataset
    return Path(row.index_path).parent.name or Path(row.index_path).stem


def _file_size(row: FaceRow) -> int | None:
    """Bytes of the row's media file when ``source`` is an absolute path, else of its saved crop; None if unreadable."""
    for candidate in (row.source, row.crop_path):
        if candidate and Path(candidate).is_absolute():
            try:
                return Path(candidate).stat().st_size
            except OSError:
                continue
    return None


def file_size_auc(rows: Sequence[FaceRow]) -> dict[str, float]:
    """AUC of "file size alone predicts fake" per source with both classes, and over all labelled rows.

    A value far from 0.5 (either way) means the classes differ in how their files were encoded, a shortcut a
    detector can learn instead of the faces; :func:`log_file_size_check` warns above 0.6 (or below 0.4). The
    size is that of the saved crop (``extract-faces`` re-encodes every crop the same way, so this measures what
    the model is trained on: resolution and content of the crops, not the original files' JPEG settings).
    """
    from cevit.metrics import roc_auc

    sizes: dict[str, tuple[list[int], list[int]]] = {}
    for r in rows:
        size = _file_size(r)
        if size is None:
            continue
        for key in (row_source(r), "all"):
            ys, xs = sizes.setdefault(key, ([], []))
            ys.append(r.label)
            xs.append(size)
    out: dict[str, float] = {}
    for key, (ys, xs) in sizes.items():
        y = np.asarray(ys)
        if 0 < y.sum() < len(y):
            x = np.asarray(xs, dtype=np.float64)
            x = (x - x.min()) / max(float(x.max() - x.min()), 1.0)  # monotone map to [0, 1]: same AUC
            out[key] = float(roc_auc(y, x))
    return out


def log_file_size_check(rows: Sequence[FaceRow], *, limit: float = 0.6) -> dict[str, float]:
    """Log :func:`file_size_auc` of the training rows; warn when a source's crops are separable by size alone."""
    aucs = file_size_auc(rows)
    for key, auc in sorted(aucs.items()):
        separable = max(auc, 1.0 - auc)
        if separable > limit:
            logger.warning("training data: file size alone separates real from fake in %r (AUC %.3f > %.2f): the "
                           "classes differ in encoding or resolution, a shortcut the model can learn", key, auc, limit)  # fmt: skip
        else:
            logger.info("training data: file-size-only AUC %.3f for %r (<= %.2f either way: no size shortcut)",
                        auc, key, limit)  # fmt: skip
    return aucs


def repeat_rows(rows: list[FaceRow], repeats: dict[str, int]) -> list[FaceRow]:
    """Each row ``repeats[row.index_path]`` times (1 for an index not named), in order; see ``data.index_repeats``."""
    out: list[FaceRow] = []
    for r in rows:
        out.extend([r] * repeats.get(r.index_path, 1))
    if len(out) != len(rows):
        logger.info("index repeats: %d training rows -> %d items per epoch", len(rows), len(out))
    return out


def prepare_data(data: DataSection, *, spec: Preprocessing, augment: AugmentSection | None, seed: int,
                 batch_size: int) -> TrainData:  # fmt: skip
    """Read the indexes, split, filter rows by mode, cap, and build the training and validation datasets."""
    from cevit.checkpoint import file_sha256

    rows = read_indexes(data.indexes)
    if not rows:
        raise ConfigError(f"{', '.join(data.indexes)}: the face index(es) contain no rows")
    rows = filter_rows(rows, max_face_index=data.max_face_index, min_face_size=data.min_face_size,
                       min_det_prob=data.min_det_prob)  # fmt: skip
    if not rows:
        raise ConfigError(f"{', '.join(data.indexes)}: no rows left after the face filters")
    indexes = tuple({"path": str(Path(p).resolve()), "sha256": file_sha256(p)} for p in data.indexes)
    train_rows, val_rows = split_rows(rows, val_fraction=data.val_fraction, seed=data.split_seed)
    if data.mode == "sbi":

        def keep(r: FaceRow) -> bool:
            return r.label == 0 and r.landmarks is not None

        n_drop = sum(1 for r in train_rows if not keep(r))
        if n_drop:
            logger.info("sbi mode: using only real rows with landmarks (%d training rows left out)", n_drop)
        train_rows = [r for r in train_rows if keep(r)]
        val_rows = [r for r in val_rows if r.label == 0]
    if data.index_max_items is not None:
        train_rows = cap_per_index(train_rows, dict(zip((str(Path(p)) for p in data.indexes), data.index_max_items)),
                                   seed=data.split_seed)  # fmt: skip
    train_rows = _cap(train_rows, data.max_train_items, data.split_seed, 1)
    val_rows = _cap(val_rows, data.max_val_items, data.split_seed, 2)
    log_file_size_check(train_rows)
    if data.index_repeats is not None:
        train_rows = repeat_rows(train_rows, dict(zip((str(Path(p)) for p in data.indexes), data.index_repeats)))
    if not train_rows:
        raise ConfigError(f"{data.indexes[0]}: no training rows left for mode {data.mode!r} after the split")

    train: LabelledFaceDataset | SBIFaceDataset
    if data.mode == "sbi":
        train = SBIFaceDataset(train_rows, spec=spec, augment=augment, seed=seed, sbi_config=data.sbi)
        items_per_batch = batch_size // 2
        n_real = n_fake = len(train)
    else:
        train = LabelledFaceDataset(train_rows, spec=spec, augment=augment, seed=seed,
                                    sbi_from_reals=data.mode == "mixed", sbi_config=data.sbi)  # fmt: skip
        items_per_batch = batch_size
        labels = train.labels
        n_real, n_fake = int((labels == 0).sum()), int((labels == 1).sum())
        if data.mode == "labelled" and n_fake == 0:
            raise ConfigError(
                f"{data.indexes[0]}: labelled mode needs fake rows in the training split (or use mode: sbi)"
            )
    if len(train) < items_per_batch:
        raise ConfigError(
            f"{data.indexes[0]}: the training split has {len(train)} items, fewer than one batch "
            f"({items_per_batch} items); lower train.batch_size"
        )
    val: LabelledFaceDataset | None = None
    n_val_real = n_val_fake = n_val_groups = 0
    if val_rows:
        val = LabelledFaceDataset(val_rows, spec=spec, augment=None, seed=seed, sbi_from_reals=data.mode != "labelled",
                                  sbi_config=data.sbi, fixed_epoch=VAL_EPOCH)  # fmt: skip
        vl = val.labels
        n_val_real, n_val_fake = int((vl == 0).sum()), int((vl == 1).sum())
        n_val_groups = len(set(zip(val.groups, vl.tolist())))
        if n_val_real == 0 or n_val_fake == 0:
            logger.warning("the validation split has only one class (%d real, %d fake): its AUC is undefined",
                           n_val_real, n_val_fake)  # fmt: skip
    else:
        logger.warning("the validation split is empty: no validation (best.safetensors = the latest epoch)")
    logger.info("data (%s mode): %d train items (%d real / %d fake samples per pass), %d val samples (%d groups)",
                data.mode, len(train), n_real, n_fake, n_val_real + n_val_fake, n_val_groups)  # fmt: skip
    return TrainData(train=train, val=val, items_per_batch=items_per_batch, n_train_real=n_real, n_train_fake=n_fake,
                     n_val_real=n_val_real, n_val_fake=n_val_fake, n_val_groups=n_val_groups, indexes=indexes)  # fmt: skip

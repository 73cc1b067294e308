"""Property-based tests of cevit.preprocess: any box, any frame size, at any frame edge.

The contract: a box either becomes a crop that resizes to exactly (input_size, input_size, 3) uint8, or it is
refused with ValueError (non-finite, empty, entirely outside the frame, absurdly larger than the frame), which
the pipeline skips. No other exception, ever.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cevit.preprocess import MAX_BOX_TO_FRAME, Preprocessing, crop_face, resize_face, square_box, to_tensor

FAST = settings(max_examples=60, deadline=None)

specs = st.builds(
    Preprocessing,
    input_size=st.sampled_from([16, 24, 37]),
    resize_mode=st.sampled_from(["stretch", "isotropic_pad"]),
    crop_border=st.sampled_from(["clip", "pad"]),
    crop_margin=st.floats(0.0, 2.0),
    channel_order=st.sampled_from(["RGB", "BGR"]),
)
frame_sizes = st.tuples(st.integers(1, 48), st.integers(1, 48))  # (H, W)
coordinate = st.floats(min_value=-100.0, max_value=150.0, allow_nan=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)


@FAST
@given(box=st.tuples(coordinate, coordinate, coordinate, coordinate), margin=st.floats(0.0, 2.0))
def test_square_box_is_square_centred_and_grown_by_the_margin(box, margin):
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        try:
            square_box(box, margin)
        except ValueError:
            return
        raise AssertionError("a degenerate box must be refused")
    sx1, sy1, sx2, sy2 = square_box(box, margin)
    side = sx2 - sx1
    assert side == sy2 - sy1 and side >= 1
    expected = max(x2 - x1, y2 - y1) * (1.0 + margin)
    assert abs(side - expected) <= 1.0 or (expected < 1 and side == 1)
    assert abs((sx1 + sx2) / 2 - (x1 + x2) / 2) <= 1.0 and abs((sy1 + sy2) / 2 - (y1 + y2) / 2) <= 1.0


@FAST
@given(
    spec=specs, size=frame_sizes, box=st.tuples(coordinate, coordinate, coordinate, coordinate), seed=st.integers(0, 9)
)
def test_any_box_gives_the_contract_shape_or_a_value_error(spec, size, box, seed):
    h, w = size
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    try:
        sx1, sy1, sx2, sy2 = square_box(box, spec.crop_margin)
    except ValueError:
        degenerate = True
    else:
        degenerate = False
        overlaps = sx1 < w and sx2 > 0 and sy1 < h and sy2 > 0
        huge = sx2 - sx1 > MAX_BOX_TO_FRAME * max(h, w)
    try:
        crop = crop_face(frame, box, spec)
    except ValueError:
        assert degenerate or not overlaps or huge  # refused only for a documented reason
        return
    assert not degenerate and overlaps and not huge
    assert crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3 and min(crop.shape[:2]) >= 1
    if spec.crop_border == "pad":
        assert crop.shape[0] == crop.shape[1] == sx2 - sx1  # always square, the face stays centred
    face = resize_face(crop, spec)
    assert face.shape == (spec.input_size, spec.input_size, 3) and face.dtype == np.uint8
    x = to_tensor([face], spec)
    assert tuple(x.shape) == (1, 3, spec.input_size, spec.input_size) and bool(x.isfinite().all())


@FAST
@given(spec=specs, size=frame_sizes, box=st.tuples(any_float, any_float, any_float, any_float))
def test_hostile_coordinates_raise_only_value_error(spec, size, box):
    """NaN, infinities and enormous values never raise anything but ValueError (and never allocate a huge canvas)."""
    frame = np.zeros((*size, 3), np.uint8)
    try:
        face = resize_face(crop_face(frame, box, spec), spec)
    except ValueError:
        return
    assert all(math.isfinite(v) for v in box)
    assert face.shape == (spec.input_size, spec.input_size, 3)


@FAST
@given(spec=specs, size=frame_sizes, data=st.data())
def test_a_box_inside_the_frame_is_never_refused(spec, size, data):
    h, w = size
    x1 = data.draw(st.floats(0.0, w - 0.5))
    y1 = data.draw(st.floats(0.0, h - 0.5))
    x2 = data.draw(st.floats(x1 + 0.5, float(w)))
    y2 = data.draw(st.floats(y1 + 0.5, float(h)))
    face = resize_face(crop_face(np.zeros((h, w, 3), np.uint8), (x1, y1, x2, y2), spec), spec)
    assert face.shape == (spec.input_size, spec.input_size, 3)

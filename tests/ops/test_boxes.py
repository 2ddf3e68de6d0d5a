import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from detopt.ops import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
)
from tests.hyp import examples
from tests.reference import ops_reference as ref

PAIRWISE = [
    (box_iou, ref.iou),
    (generalized_box_iou, ref.giou),
    (distance_box_iou, ref.diou),
    (complete_box_iou, ref.ciou),
]


def random_boxes(rng, n, degenerate=0.2):
    xy = rng.uniform(-20, 100, (n, 2))
    wh = rng.uniform(0, 40, (n, 2))
    wh[rng.random(n) < degenerate, rng.integers(0, 2)] = 0.0  # zero width or height
    b = np.concatenate([xy, xy + wh], 1)
    b[rng.random(n) < degenerate / 2] = b[0]  # duplicates
    return b


@pytest.mark.parametrize("fn,reffn", PAIRWISE)
@pytest.mark.parametrize("seed", range(4))
def test_pairwise_matches_float64_reference(fn, reffn, seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 23), random_boxes(rng, 17)
    got = fn(a, b)
    assert got.shape == (23, 17) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref.pairwise(reffn, a, b), rtol=1e-12, atol=1e-12)
    got32 = fn(a.astype(np.float32), b.astype(np.float32))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, ref.pairwise(reffn, a, b), atol=2e-5)


@pytest.mark.parametrize("fn,_", PAIRWISE)
def test_pairwise_torch_in_torch_out_and_empty(fn, _):
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 5), random_boxes(rng, 4)
    t = fn(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), fn(a, b))
    assert fn(np.zeros((0, 4)), b).shape == (0, 4)
    assert fn(a, np.zeros((0, 4))).shape == (5, 0)


@pytest.mark.parametrize("fn,_", PAIRWISE)
def test_degenerate_boxes_are_finite(fn, _):
    pts = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 5, 0], [3, 3, 2, 2], [0, 0, 2, 2.0]])
    out = fn(pts, pts)
    assert np.isfinite(out).all()
    iou = box_iou(pts, pts)
    assert iou[0, 1] == 0 and iou[2, 2] == 0 and iou[3, 3] == 0 and iou[4, 4] == 1


def test_known_values():
    a = np.array([[0, 0, 2, 2.0]])
    b = np.array([[1, 1, 3, 3.0], [4, 0, 6, 2.0]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 0]])
    np.testing.assert_allclose(generalized_box_iou(a, b), [[1 / 7 - 2 / 9, 0 - 4 / 12]])
    np.testing.assert_allclose(distance_box_iou(a, b), [[1 / 7 - 2 / 18, -16 / 40]])


box_arrays = arrays(np.float64, st.tuples(st.integers(0, 12), st.just(4)),
                    elements=st.floats(-1e3, 1e3, allow_nan=False, width=64))


@settings(max_examples=examples(60), deadline=None)
@given(box_arrays, st.sampled_from(["xywh", "cxcywh"]))
def test_box_convert_round_trip(boxes, fmt):
    back = box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy")
    np.testing.assert_allclose(back, boxes, atol=1e-9)


def test_box_convert_values_and_area_and_clip():
    b = np.array([[10, 20, 30, 60.0]])
    np.testing.assert_array_equal(box_convert(b, "xyxy", "xywh"), [[10, 20, 20, 40]])
    np.testing.assert_array_equal(box_convert(b, "xyxy", "cxcywh"), [[20, 40, 20, 40]])
    np.testing.assert_array_equal(box_area(np.array([[0, 0, 2, 3.0], [2, 2, 1, 5]])), [6, 0])
    np.testing.assert_array_equal(
        clip_boxes(np.array([[-5, 3, 50, 70.0]]), (64, 48)), [[0, 3, 48, 64]])
    assert box_area(np.zeros((0, 4))).shape == (0,)
    t = box_convert(torch.tensor([[1.0, 2, 3, 4]]), "xywh", "xyxy")
    assert isinstance(t, torch.Tensor) and t.tolist() == [[1, 2, 4, 6]]


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda: box_iou(np.zeros((3, 5)), np.zeros((1, 4))), r"boxes1: expected shape \[N, 4\]"),
        (lambda: box_iou(np.zeros((1, 4)), np.array([[0, 0, np.nan, 1]])), "boxes2: contains a non-finite"),
        (lambda: box_convert(np.zeros((1, 4)), "xyxy", "yolo"), "out_fmt: unknown box format"),
        (lambda: clip_boxes(np.zeros((1, 4)), (1, 2, 3)), "size: expected"),
    ],
)
def test_bad_input_names_the_argument(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()

import cv2
import numba
import numpy as np
import pytest
import torch
from ensemble_boxes.ensemble_boxes_nms import cpu_soft_nms_float
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.ops import (
    batched_diou_nms,
    batched_nms,
    batched_soft_nms,
    box_iou,
    diou_nms,
    matrix_nms,
    nms,
    soft_nms,
)
from detopt.ops.nms.greedy import nms_torch
from detopt.ops.nms.matrix import matrix_nms_decay_torch
from detopt.ops.nms.soft import soft_nms_torch
from detopt.testing import detector_like_boxes
from tests.hyp import examples
from tests.ops.conftest import make_case, uniform_boxes
from tests.reference import ops_reference as ref

THRESHOLDS = [0.0, 0.3, 0.5, 0.7]


# ------------------------------------------------------------------ hard NMS
@pytest.mark.parametrize("thr", THRESHOLDS)
def test_nms_matches_reference(case, thr):
    b, s, _ = case
    np.testing.assert_array_equal(nms(b, s, thr), ref.greedy_nms(b, s, thr))


@pytest.mark.parametrize("thr", [0.3, 0.5])
def test_batched_nms_matches_reference(case, thr):
    b, s, lab = case
    np.testing.assert_array_equal(batched_nms(b, s, lab, thr), ref.greedy_nms(b, s, thr, lab))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.65])
def test_nms_matches_opencv(seed, thr):
    b, s, _ = make_case("dense", seed)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    want = cv2.dnn.NMSBoxes(xywh.tolist(), s.tolist(), 0.0, thr)
    np.testing.assert_array_equal(nms(xyxy, s, thr), np.asarray(want, np.int64).reshape(-1))


def test_nms_contract_dtype_ties_empty_single():
    b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    s = np.array([0.9, 0.9, 0.9, 0.1], np.float32)
    keep = nms(b, s, 0.5)
    assert keep.dtype == np.int64 and keep.tolist() == [0, 3]  # tie: lower index wins
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert nms(b[:1], s[:1], 0.5).tolist() == [0]
    t = nms(torch.from_numpy(b), torch.from_numpy(s), 0.5)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.tolist() == [0, 3]


def test_negative_threshold_suppresses_everything_but_the_best_per_class():
    b, s, lab = make_case("uniform", 0)
    assert nms(b, s, -0.1).tolist() == [int(np.argmax(s))]
    keep = batched_nms(b, s, lab, -0.1)
    np.testing.assert_array_equal(keep, ref.greedy_nms(b, s, -0.1, lab))
    assert len(keep) == len(np.unique(lab))
    np.testing.assert_array_equal(diou_nms(b, s, -0.2), ref.greedy_nms(b, s, -0.2, diou_beta=1))


def test_degenerate_boxes_are_kept_and_never_suppress():
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 0], [5, 5, 5, 5], [0, 0, 10, 10]], np.float64)
    s = np.array([0.5, 0.9, 0.8, 0.4])
    assert nms(b, s, 0.5).tolist() == [1, 2, 0]


# ------------------------------------------------------------------ DIoU-NMS
@pytest.mark.parametrize("thr,beta", [(0.3, 1.0), (0.5, 1.0), (0.4, 0.6), (0.5, 2.0)])
def test_diou_nms_matches_reference(case, thr, beta):
    b, s, lab = case
    np.testing.assert_array_equal(diou_nms(b, s, thr, beta), ref.greedy_nms(b, s, thr, None, beta))
    np.testing.assert_array_equal(batched_diou_nms(b, s, lab, thr, beta),
                                  ref.greedy_nms(b, s, thr, lab, beta))


def test_diou_nms_spares_boxes_whose_centres_are_apart():
    # IoU 0.6 with the top box, centre penalty d²/c² = 4/200: DIoU 0.58 stays under 0.59
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 6, 10.0]])
    s = np.array([0.9, 0.8, 0.7])
    assert nms(b, s, 0.59).tolist() == [0]
    assert diou_nms(b, s, 0.59).tolist() == [0, 1, 2]


# ------------------------------------------------------------------ soft-NMS
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("sigma,thr", [(0.5, 0.3), (0.1, 0.5)])
def test_soft_nms_matches_reference(case, method, sigma, thr):
    b, s, lab = case
    keep, new = soft_nms(b, s, thr, sigma, 0.001, method)
    rk, rs = ref.soft_nms(b, s, thr, sigma, 0.001, method)
    np.testing.assert_array_equal(keep, rk)
    np.testing.assert_allclose(new, rs, rtol=1e-12)
    keep, new = batched_soft_nms(b, s, lab, thr, sigma, 0.001, method)
    rk, rs = ref.soft_nms(b, s, thr, sigma, 0.001, method, lab)
    np.testing.assert_array_equal(keep, rk)
    np.testing.assert_allclose(new, rs, rtol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method,code", [("gaussian", 2), ("linear", 1)])
def test_soft_nms_matches_ensemble_boxes(seed, method, code):
    b, s, _ = make_case("dense" if seed % 2 else "uniform", seed)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    b, s = b[area > 0], s[area > 0]  # ensemble-boxes' wrapper drops zero-area boxes first
    nb = (b - b.min()) / (b.max() - b.min())  # ensemble-boxes expects [0, 1]
    sc = s.copy()
    want = cpu_soft_nms_float(nb.copy(), sc, 0.3, 0.5, 0.001, code)
    keep, new = soft_nms(nb, s, 0.3, 0.5, 0.001, method)
    np.testing.assert_array_equal(keep, want)  # same boxes, same selection order
    np.testing.assert_allclose(new, sc[sc > 0.001], rtol=1e-5, atol=1e-5)


def test_soft_nms_does_not_mutate_and_scores_only_decrease():
    b, s, _ = make_case("crowded", 1)
    s0 = s.copy()
    keep, new = soft_nms(b, s, method="gaussian")
    np.testing.assert_array_equal(s, s0)
    assert (new <= s[keep]).all() and (np.diff(new) <= 0).all() and (new > 0.001).all()
    assert soft_nms(np.zeros((0, 4)), np.zeros(0))[0].shape == (0,)


@pytest.mark.parametrize("dtype,max_ulp", [(np.float32, 1.0), (np.float64, 2.0)])
def test_soft_nms_exp_polynomial_is_within_an_ulp(dtype, max_ulp):
    from detopt.ops.nms.soft import _exp_neg

    @numba.njit
    def run(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = _exp_neg(x[i])
        return out

    hi = 103.0 if dtype == np.float32 else 740.0  # down to the denormals
    x = np.concatenate([-np.linspace(0, 3, 300_001), -np.linspace(3, hi, 100_001)]).astype(dtype)
    got = run(x)
    want = np.exp(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(want).astype(dtype)).astype(np.longdouble)
    assert np.max(np.abs(got - want) / ulp) <= max_ulp
    assert got[0] == 1  # exp(-0) is exactly 1: a box that does not intersect keeps its score
    assert run(np.array([-hi - 10, -1e4], dtype)).tolist() == [0.0, 0.0]  # below: underflow


@pytest.mark.parametrize("n", [1, 15, 16, 17, 700])
def test_soft_nms_chunk_boundaries_and_ties(n):
    # scores on a coarse grid tie a lot; sizes of 1, 15..17 cover partial and exact chunks
    rng = np.random.default_rng(n)
    b, _ = uniform_boxes(rng, n, span=120.0, max_wh=40.0)
    s = np.round(rng.uniform(0.05, 1.0, n), 1)
    lab = rng.integers(0, 2, n)
    for method in ("gaussian", "linear"):
        keep, new = soft_nms(b, s, 0.3, 0.5, 0.001, method)
        rk, rs = ref.soft_nms(b, s, 0.3, 0.5, 0.001, method)
        np.testing.assert_array_equal(keep, rk)
        np.testing.assert_allclose(new, rs, rtol=1e-12)
        keep, new = batched_soft_nms(b, s, lab, 0.3, 0.5, 0.001, method)
        rk, rs = ref.soft_nms(b, s, 0.3, 0.5, 0.001, method, lab)
        np.testing.assert_array_equal(keep, rk)
        np.testing.assert_allclose(new, rs, rtol=1e-12)


def test_soft_nms_underflow_and_zero_score_threshold():
    # sigma 0.0015: exp(-iou²/sigma) underflows to 0 (and to denormals) for strong overlaps;
    # with score_threshold 0 a box stays alive while its score is > 0
    b, s, _ = make_case("crowded", 4)
    for sigma in (0.0015, 0.02):
        keep, new = soft_nms(b, s, 0.3, sigma, 0.0, "gaussian")
        rk, rs = ref.soft_nms(b, s, 0.3, sigma, 0.0, "gaussian")
        np.testing.assert_array_equal(keep, rk)
        np.testing.assert_allclose(new, rs, rtol=1e-12)


def test_soft_nms_large_input_matches_torch_path():
    # thousands of boxes: many chunks and groups, lazy chunk maxima exercised
    b, s, lab = detector_like_boxes(3000, per_object=20, n_classes=2, seed=5)
    for use_labels in (False, True):
        labels = _t(lab) if use_labels else None
        k, v = soft_nms_torch(_t(b), _t(s), labels, 0.3, 0.5, 0.001, False)
        k2, v2 = (batched_soft_nms(b, s, lab, 0.3, 0.5, 0.001) if use_labels
                  else soft_nms(b, s, 0.3, 0.5, 0.001))
        np.testing.assert_array_equal(k.numpy(), k2)
        np.testing.assert_allclose(v.numpy(), v2, rtol=1e-5)


# ------------------------------------------------------------------ matrix NMS
@pytest.mark.parametrize("kernel,sigma", [("gaussian", 2.0), ("gaussian", 0.5), ("linear", 2.0)])
def test_matrix_nms_matches_reference(case, kernel, sigma):
    b, s, lab = case
    np.testing.assert_allclose(matrix_nms(b, s, None, kernel, sigma),
                               ref.matrix_nms(b, s, None, kernel, sigma), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(matrix_nms(b, s, lab, kernel, sigma),
                               ref.matrix_nms(b, s, lab, kernel, sigma), rtol=1e-12, atol=1e-15)


def test_matrix_nms_duplicates_linear_is_finite():
    b = np.array([[0, 0, 10, 10]] * 3 + [[20, 20, 30, 30]], np.float32)
    s = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    out = matrix_nms(b, s, kernel="linear")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [0.9, 0, 0, 0.6])


# ------------------------------------------------------------------ torch path == numba path
def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["dense", "uniform", "crowded"])
def test_torch_path_gives_identical_results(kind, dtype):
    b, s, lab = make_case(kind, 7, dtype)
    tb, ts, tl = _t(b), _t(s), _t(lab)
    for thr in (-0.1, 0.0, 0.45, 0.7):
        np.testing.assert_array_equal(nms_torch(tb, ts, None, thr).numpy(), nms(b, s, thr))
        np.testing.assert_array_equal(nms_torch(tb, ts, tl, thr).numpy(), batched_nms(b, s, lab, thr))
    for beta in (1.0, 0.7):
        np.testing.assert_array_equal(nms_torch(tb, ts, None, 0.4, True, beta).numpy(),
                                      diou_nms(b, s, 0.4, beta))
    for linear in (False, True):
        k, v = soft_nms_torch(tb, ts, tl, 0.3, 0.5, 0.001, linear)
        k2, v2 = batched_soft_nms(b, s, lab, 0.3, 0.5, 0.001, "linear" if linear else "gaussian")
        np.testing.assert_array_equal(k.numpy(), k2)
        np.testing.assert_allclose(v.numpy(), v2, rtol=1e-6)
    for gaussian in (True, False):
        d = matrix_nms_decay_torch(tb, ts, tl, gaussian, 2.0, 1e-12)
        np.testing.assert_allclose((ts * d).numpy(),
                                   matrix_nms(b, s, lab, "gaussian" if gaussian else "linear"),
                                   rtol=1e-6)


def test_float32_and_float64_inputs_keep_their_dtype():
    b, s, _ = make_case("dense", 3, np.float32)
    assert soft_nms(b, s)[1].dtype == np.float32
    assert matrix_nms(b, s).dtype == np.float32
    assert matrix_nms(b.astype(np.float64), s).dtype == np.float64


# ------------------------------------------------------------------ properties
@st.composite
def scenes(draw):
    n = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**31))
    span = draw(st.sampled_from([30.0, 100.0, 400.0]))
    rng = np.random.default_rng(seed)
    b, s = uniform_boxes(rng, n, span=span, max_wh=50)
    lab = rng.integers(0, 3, n)
    return b, s, lab


@settings(max_examples=examples(80), deadline=None)
@given(scenes(), st.floats(0.0, 0.95))
def test_property_kept_boxes_never_overlap_above_threshold(scene, thr):
    b, s, lab = scene
    for keep, labels in ((nms(b, s, thr), None), (batched_nms(b, s, lab, thr), lab)):
        iou = box_iou(b[keep], b[keep])
        np.fill_diagonal(iou, 0)
        if labels is not None:
            iou[labels[keep][:, None] != labels[keep][None, :]] = 0
        assert (iou <= thr).all()
        # maximality: every dropped box overlaps a kept one above the threshold
        dropped = np.setdiff1d(np.arange(len(b)), keep)
        if len(dropped):
            cross = box_iou(b[dropped], b[keep])
            if labels is not None:
                cross[labels[dropped][:, None] != labels[keep][None, :]] = 0
            assert (cross > thr).any(1).all()


@settings(max_examples=examples(60), deadline=None)
@given(scenes(), st.floats(0.1, 0.9), st.integers(0, 2**31))
def test_property_permutation_invariance(scene, thr, seed):
    b, s, lab = scene
    perm = np.random.default_rng(seed).permutation(len(b))
    for fn in (lambda b, s, lab: nms(b, s, thr), lambda b, s, lab: batched_nms(b, s, lab, thr),
               lambda b, s, lab: diou_nms(b, s, thr),
               lambda b, s, lab: soft_nms(b, s, thr, 0.5, 0.01, "gaussian")[0]):
        np.testing.assert_array_equal(perm[fn(b[perm], s[perm], lab[perm])], fn(b, s, lab))
    np.testing.assert_allclose(matrix_nms(b[perm], s[perm], lab[perm]), matrix_nms(b, s, lab)[perm])


@settings(max_examples=examples(60), deadline=None)
@given(scenes())
def test_property_scores_only_decrease(scene):
    b, s, lab = scene
    for method in ("gaussian", "linear"):
        keep, new = batched_soft_nms(b, s, lab, 0.3, 0.5, 0.0, method)
        assert (new <= s[keep]).all()
    assert (matrix_nms(b, s, lab) <= s).all()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda: nms(np.zeros((3, 5)), np.zeros(3), 0.5), r"boxes: expected shape \[N, 4\]"),
        (lambda: nms(np.zeros((3, 4)), np.zeros(2), 0.5), "scores: length 2 does not match boxes length 3"),
        (lambda: nms(np.array([[0, 0, np.inf, 1]]), np.ones(1), 0.5), "boxes: contains a non-finite value"),
        (lambda: nms(np.zeros((1, 4)), np.array([np.nan]), 0.5), "scores: contains a non-finite"),
        (lambda: nms(np.zeros((1, 4)), np.ones(1), float("nan")), "iou_threshold: must be finite"),
        (lambda: batched_nms(np.zeros((2, 4)), np.ones(2), np.zeros(3), 0.5), "labels: length 3"),
        (lambda: batched_nms(np.zeros((1, 4)), np.ones(1), np.array([0.5]), 0.5), "labels: expected integer"),
        (lambda: soft_nms(np.zeros((1, 4)), np.ones(1), method="box"), "method: expected"),
        (lambda: soft_nms(np.zeros((1, 4)), np.ones(1), sigma=0), "sigma: must be > 0"),
        (lambda: matrix_nms(np.zeros((1, 4)), np.ones(1), kernel="x"), "kernel: expected"),
        (lambda: diou_nms(np.zeros((1, 4)), np.ones(1), 0.5, beta=-1), "beta: must be > 0"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


@pytest.mark.parametrize("thr", [5e-324, 1e-12, 1e-7, 0.999999, 1.0, 1.5])
def test_extreme_thresholds_match_reference(thr):
    # regression: a subnormal threshold made side / thr overflow in the grid's level range
    b, s, _ = make_case("dense", 1)
    np.testing.assert_array_equal(nms(b, s, thr), ref.greedy_nms(b, s, thr))
    np.testing.assert_array_equal(diou_nms(b, s, thr), ref.greedy_nms(b, s, thr, diou_beta=1.0))

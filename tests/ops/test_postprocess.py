import numpy as np
import pytest
import torch
from ensemble_boxes import weighted_boxes_fusion as eb_wbf

from detopt.ops import POSTPROCESS_METHODS, batched_nms, nms, postprocess
from detopt.structures import Detections
from detopt.testing import detector_like_boxes
from tests.reference import ops_reference as ref


@pytest.fixture
def preds():
    return detector_like_boxes(600, per_object=12, n_classes=4, seed=2)


def test_nms_method_equals_thresholded_batched_nms(preds):
    b, s, lab = preds
    det = postprocess(b, s, lab, method="nms", score_thr=0.4, iou_thr=0.5, max_det=1000)
    m = s > 0.4
    idx = np.flatnonzero(m)[batched_nms(b[m], s[m], lab[m], 0.5)]
    np.testing.assert_array_equal(det.boxes, b[idx])
    np.testing.assert_array_equal(det.labels, lab[idx])
    np.testing.assert_array_equal(idx, np.flatnonzero(m)[ref.greedy_nms(b[m], s[m], 0.5, lab[m])])


def test_agnostic_max_det_and_topk(preds):
    b, s, lab = preds
    det = postprocess(b, s, lab, agnostic=True, score_thr=0.0, iou_thr=0.5, max_det=7)
    np.testing.assert_array_equal(det.boxes, b[nms(b, s, 0.5)[:7]])
    top = postprocess(b, s, lab, score_thr=0.0, pre_nms_topk=5, iou_thr=1.0)
    np.testing.assert_array_equal(top.scores, np.sort(s)[::-1][:5])


def test_multilabel_scores_matrix():
    b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], np.float32)
    cls = np.array([[0.9, 0.8], [0.7, 0.05], [0.0, 0.6]], np.float32)
    det = postprocess(b, cls, iou_thr=0.5, score_thr=0.1)
    assert det.labels.tolist() == [0, 1, 1] and det.scores.tolist() == pytest.approx([0.9, 0.8, 0.6])


@pytest.mark.parametrize("method", POSTPROCESS_METHODS)
def test_every_method_returns_sorted_detections_and_tensor_io(preds, method):
    b, s, lab = preds
    det = postprocess(b, s, lab, method=method, score_thr=0.05, max_det=50)
    assert isinstance(det, Detections) and 0 < len(det) <= 50
    assert (np.diff(det.scores) <= 0).all() and (det.scores > 0.05).all()
    tdet = postprocess(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(lab),
                       method=method, score_thr=0.05, max_det=50)
    assert isinstance(tdet.boxes, torch.Tensor)
    np.testing.assert_allclose(tdet.boxes.numpy(), det.boxes)
    np.testing.assert_array_equal(tdet.labels.numpy(), det.labels)


def _reference(method: str, b: np.ndarray, s: np.ndarray, lab: np.ndarray | None, score_thr: float,
               iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices into the candidates, scores) by decreasing score: the float64 reference of one
    method on the candidates above ``score_thr``, per class when ``lab`` is given."""
    cand = np.flatnonzero(s > score_thr)
    b, s = b[cand].astype(np.float64), s[cand].astype(np.float64)
    lab = None if lab is None else lab[cand]
    if method == "nms":
        keep = ref.greedy_nms(b, s, iou_thr, lab)
        return cand[keep], s[keep]
    if method == "diou_nms":
        keep = ref.greedy_nms(b, s, iou_thr, lab, diou_beta=1.0)
        return cand[keep], s[keep]
    if method.startswith("soft_nms"):
        keep, kept = ref.soft_nms(b, s, iou_thr, 0.5, score_thr, method.rsplit("_", 1)[1], lab)
        return cand[keep], kept
    assert method == "matrix_nms"
    new = ref.matrix_nms(b, s, lab, "gaussian", 2.0)
    order = sorted(np.flatnonzero(new > score_thr), key=lambda i: (-new[i], i))
    return cand[order], new[order]


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("method", ["nms", "diou_nms", "soft_nms_gaussian", "soft_nms_linear", "matrix_nms"])
def test_every_method_equals_its_float64_reference(method, agnostic):
    """Per class (4 classes, overlapping objects of different classes) and class-agnostic: the same
    boxes, labels and scores as the brute-force float64 reference of the method."""
    b, s, lab = detector_like_boxes(160, per_object=8, n_classes=4, seed=5)
    b[8:16] = b[:8] + 1.5  # a second object of another class on top of the first: per class matters
    lab[8:16] = (lab[:8] + 1) % 4
    assert len(np.unique(lab)) >= 3
    det = postprocess(b, s, lab, method=method, score_thr=0.05, iou_thr=0.45, max_det=10_000,
                      agnostic=agnostic)
    idx, scores = _reference(method, b, s, None if agnostic else lab, 0.05, 0.45)
    assert len(det) == len(idx) > 0
    np.testing.assert_array_equal(det.boxes, b[idx])
    np.testing.assert_array_equal(det.labels, lab[idx])
    np.testing.assert_allclose(det.scores, scores, rtol=2e-6)
    # the grouping is visible: per-class and agnostic results differ on these candidates
    other = postprocess(b, s, lab, method=method, score_thr=0.05, iou_thr=0.45, max_det=10_000,
                        agnostic=not agnostic)
    assert len(other) != len(det) or not np.array_equal(other.boxes, det.boxes)


def test_wbf_method_matches_ensemble_boxes_single_model():
    b, s, lab = detector_like_boxes(300, per_object=10, n_classes=3, seed=9, dtype=np.float64)
    det = postprocess(b, s, lab, method="wbf", score_thr=0.0, iou_thr=0.55, max_det=10_000)
    eb, es, el = eb_wbf([b / 1024], [s], [lab], iou_thr=0.55)
    o1 = np.lexsort((det.boxes[:, 0], -det.scores))
    o2 = np.lexsort((eb[:, 0], -es))
    np.testing.assert_allclose(det.boxes[o1] / 1024, eb[o2], atol=1e-5)
    np.testing.assert_allclose(det.scores[o1], es[o2], atol=1e-6)
    np.testing.assert_array_equal(det.labels[o1], el[o2])


def test_empty_input():
    det = postprocess(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert len(det) == 0 and det.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(method="fast_nms"), "method: unknown post-processing method 'fast_nms'"),
        (dict(method="wbf", agnostic=True), "agnostic: wbf"),
        (dict(max_det=-1), "max_det, pre_nms_topk: must be >= 0"),
    ],
)
def test_postprocess_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        postprocess(np.zeros((1, 4)), np.ones(1), np.zeros(1, np.int64), **kw)

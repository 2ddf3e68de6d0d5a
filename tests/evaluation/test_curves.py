"""Curves: PR against the COCO stats, F1 against pycocotools' per-image matches, confusion matrix
against a brute-force reference; PNG files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.errors import DetoptInputError
from detopt.evaluation import evaluate_coco
from detopt.evaluation.curves import confusion_matrix, f1_curve, pr_curves
from detopt.evaluation.plots import save_plots
from detopt.testing import synthetic_coco
from tests.evaluation.conftest import pycoco_eval
from tests.hyp import examples
from tests.reference import eval_reference as ref


@pytest.fixture(scope="module")
def world():
    gt, dt = synthetic_coco(25, n_classes=4, absent_classes=1, crowd_frac=0.1, seed=21, score_decimals=2)
    return gt, dt, evaluate_coco(gt, dt)


def test_pr_curves_average_to_the_coco_stats(world) -> None:
    _, _, r = world
    c = pr_curves(r)
    assert c.precision_50.shape == (4, 101) and np.isnan(c.precision_50[3]).all()
    assert np.nanmean(c.ap50) == pytest.approx(r.stats[1], abs=1e-12)
    assert np.nanmean(c.ap) == pytest.approx(r.stats[0], abs=1e-12)
    assert np.nanmean(c.mean_50) == pytest.approx(r.stats[1], abs=1e-12)
    for k, name in enumerate(c.class_names[:3]):
        assert c.ap[k] == pytest.approx(r.per_class[name]["AP"], abs=1e-12)
        assert c.ap50[k] == pytest.approx(r.per_class[name]["AP50"], abs=1e-12)


@pytest.mark.parametrize("iou", [0.5, 0.75])
def test_f1_curve_against_pycocotools_matches(world, iou) -> None:
    gt, dt, r = world
    f = f1_curve(r, iou_thr=iou, n_points=101)
    ev = pycoco_eval(gt, dt)
    t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
    n_img = len(ev.params.imgIds)
    for k in range(len(ev.params.catIds)):
        # evalImgs is ordered (category, area range, image); area "all" is range 0
        evals = [e for e in ev.evalImgs[k * 4 * n_img:k * 4 * n_img + n_img] if e is not None]
        npos = sum(int((e["gtIgnore"] == 0).sum()) for e in evals)
        if npos == 0:
            assert np.isnan(f.f1[k]).all()
            continue
        scores = np.concatenate([np.asarray(e["dtScores"]) for e in evals])
        matched = np.concatenate([e["dtMatches"][t] > 0 for e in evals])
        ignored = np.concatenate([e["dtIgnore"][t] > 0 for e in evals])
        for ci in range(0, 101, 7):
            c = f.confidence[ci]
            sel = (scores >= c) & ~ignored
            tp, fp = int((sel & matched).sum()), int((sel & ~matched).sum())
            p = tp / (tp + fp) if tp + fp else 1.0
            rc = tp / npos
            assert f.precision[k, ci] == pytest.approx(p, abs=1e-12)
            assert f.recall[k, ci] == pytest.approx(rc, abs=1e-12)
            assert f.f1[k, ci] == pytest.approx(2 * p * rc / (p + rc) if p + rc else 0.0, abs=1e-12)
    assert f.best_f1 == pytest.approx(np.nanmax(f.mean_f1))
    assert f.mean_f1[int(round(f.best_confidence * 100))] == f.best_f1


@pytest.mark.parametrize("iou, conf", [(0.5, 0.0), (0.5, 0.3), (0.75, 0.5), (0.3, 0.25)])
def test_confusion_matrix_against_reference(world, iou, conf) -> None:
    gt, dt, r = world
    cm = confusion_matrix(r, iou, conf)
    expected, ignored = ref.confusion_matrix(gt, dt, iou, conf)
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.n_ignored == ignored
    # every non-crowd object is either found or missed; every kept detection is counted once
    n_cls = len(gt["categories"])
    per_class = np.bincount([sorted(c["id"] for c in gt["categories"]).index(a["category_id"])
                             for a in gt["annotations"] if not a["iscrowd"]], minlength=n_cls)
    np.testing.assert_array_equal(cm.matrix[:, :n_cls].sum(0), per_class)
    assert cm.matrix[:n_cls].sum() + cm.n_ignored == sum(d["score"] >= conf for d in dt)


def test_confusion_matrix_hand_case() -> None:
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                           "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "area": 100,
                           "iscrowd": 0},
                          {"id": 3, "image_id": 1, "category_id": 2, "bbox": [80, 0, 10, 10], "area": 100,
                           "iscrowd": 0}]}
    dt = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},     # cat -> cat
          {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.8},   # dog called cat
          {"image_id": 1, "category_id": 2, "bbox": [200, 200, 10, 10], "score": 0.7},  # nothing there
          {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.1}]     # below confidence
    cm = confusion_matrix(evaluate_coco(gt, dt), 0.5, 0.25)
    assert cm.matrix.tolist() == [[1, 1, 0],
                                  [0, 0, 1],
                                  [0, 1, 0]]
    assert cm.class_names == ["cat", "dog", "background"]
    assert cm.normalized()[:, 1].tolist() == [0.5, 0.0, 0.5]


def test_curves_without_predictions_or_ground_truth(tmp_path) -> None:
    gt, _ = synthetic_coco(4, n_classes=2, seed=1)
    r = evaluate_coco(gt, [])
    f = f1_curve(r)
    assert np.nanmax(f.f1) == 0.0
    assert confusion_matrix(r).matrix[:2].sum() == 0
    paths = save_plots(r, tmp_path / "a")
    empty = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "x"}], "annotations": []}
    r2 = evaluate_coco(empty, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    assert np.isnan(f1_curve(r2).best_f1)
    assert np.isnan(pr_curves(r2).mean_50).all()
    paths2 = save_plots(r2, tmp_path / "b")
    for p in [*paths.values(), *paths2.values()]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_plots_writes_pngs(world, tmp_path) -> None:
    _, _, r = world
    paths = save_plots(r, tmp_path / "plots")
    assert set(paths) == {"pr_curve", "f1_curve", "confusion_matrix", "confusion_matrix_counts"}
    for p in paths.values():
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_bad_curve_arguments(world) -> None:
    _, _, r = world
    with pytest.raises(DetoptInputError, match="not one of the evaluated thresholds"):
        f1_curve(r, iou_thr=0.52)
    with pytest.raises(DetoptInputError, match=r"in \[0, 1\]"):
        confusion_matrix(r, iou_thr=1.5)


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 12), st.integers(0, 25), st.sampled_from([0.5, 0.75]))
def test_image_outcomes_against_pycocotools_matching(seed, n_gt, n_dt, iou) -> None:
    """TP flags and matched ground truth equal pycocotools' dtMatches / gtMatches of one image."""
    from detopt.evaluation.curves import image_outcomes

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 80, (n_gt, 2))
    gt_boxes = np.concatenate([xy, xy + rng.uniform(4, 40, (n_gt, 2))], 1).round(1)
    gt_labels = rng.integers(0, 2, n_gt)
    # detections: jittered copies of ground truth (near hits) plus random boxes, quantised scores (ties)
    src = rng.integers(0, max(n_gt, 1), n_dt)
    jitter = rng.normal(0, 3, (n_dt, 4))
    base = gt_boxes[src] if n_gt else np.tile([10.0, 10, 30, 30], (n_dt, 1))
    dt_boxes = np.where(rng.random((n_dt, 1)) < 0.7, base + jitter, rng.uniform(0, 100, (n_dt, 4)))
    dt_boxes = np.concatenate([np.minimum(dt_boxes[:, :2], dt_boxes[:, 2:]),
                               np.maximum(dt_boxes[:, :2], dt_boxes[:, 2:]) + 1], 1).round(1)
    dt_scores = rng.integers(1, 6, n_dt) / 5
    dt_labels = np.where(rng.random(n_dt) < 0.8, gt_labels[src] if n_gt else 0, rng.integers(0, 2, n_dt))
    tp, matched = image_outcomes(dt_boxes, dt_scores, dt_labels, gt_boxes, gt_labels, iou)

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    gt = {"images": [{"id": 1, "width": 200, "height": 200}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": int(k) + 1, "bbox": xywh(b),
                           "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
                          for i, (b, k) in enumerate(zip(gt_boxes, gt_labels, strict=True))]}
    dt = [{"image_id": 1, "category_id": int(k) + 1, "bbox": xywh(b), "score": float(s)}
          for b, s, k in zip(dt_boxes, dt_scores, dt_labels, strict=True)]
    ref_tp = np.zeros(n_dt, bool)
    ref_matched = np.zeros(n_gt, bool)
    if dt:
        ev = pycoco_eval(gt, dt)
        t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
        for e in ev.evalImgs:
            if e is None or e["aRng"] != ev.params.areaRng[0]:
                continue
            for dt_id, m in zip(e["dtIds"], e["dtMatches"][t], strict=True):
                ref_tp[dt_id - 1] = m > 0  # loadRes numbers detections 1.. in input order
            for gt_id, m in zip(e["gtIds"], e["gtMatches"][t], strict=True):
                ref_matched[gt_id - 1] = m > 0
    np.testing.assert_array_equal(tp, ref_tp)
    np.testing.assert_array_equal(matched, ref_matched)


def test_image_outcomes_ties_follow_pycocotools() -> None:
    """Two identical ground-truth boxes: pycocotools' loop gives the detection the later one; a
    second detection takes the other; a wrong-class detection matches nothing."""
    from detopt.evaluation.curves import image_outcomes

    gt = np.array([[10, 10, 50, 50], [10, 10, 50, 50], [60, 60, 90, 90]], float)
    gl = np.array([0, 0, 1])
    tp, matched = image_outcomes(np.array([[10, 10, 50, 50.0]]), np.array([0.9]), np.array([0]), gt, gl)
    assert tp.tolist() == [True] and matched.tolist() == [False, True, False]
    dets = np.array([[10, 10, 50, 50], [11, 10, 50, 50], [60, 60, 90, 90.0]])
    tp, matched = image_outcomes(dets, np.array([0.5, 0.9, 0.7]), np.array([0, 0, 0]), gt, gl)
    assert tp.tolist() == [True, True, False] and matched.tolist() == [True, True, False]

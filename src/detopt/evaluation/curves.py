"""The curves people read: precision-recall, F1 against confidence, confusion matrix.

All three are computed from an :class:`~detopt.evaluation.coco.CocoEvalResult`, so they use the
same matching as the COCO numbers (crowd regions ignored, area range "all", the largest maxDets):

* :func:`pr_curves` reads pycocotools' interpolated precision at the 101 recall thresholds, per
  class and averaged over the classes that have ground truth, at IoU .5 and over .5:.95;
* :func:`f1_curve` sweeps a confidence threshold over the matched detections at one IoU threshold
  and reports precision, recall and F1 per class and averaged over classes, with the threshold
  that maximises the averaged F1;
* :func:`confusion_matrix` matches detections to ground truth across classes (greedy by IoU) so a
  detection with the wrong class shows up in the off-diagonal cells.

PNG rendering lives in :mod:`detopt.evaluation.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from detopt.errors import DetoptInputError
from detopt.evaluation import _kernels as K
from detopt.evaluation.coco import CocoEvalResult


@dataclass(frozen=True)
class PRCurves:
    """Interpolated precision at the recall thresholds (area "all", largest maxDets).

    recall: float64[R]; precision_50, precision_50_95: float64[K, R] (NaN rows for classes
    without ground truth); mean_50, mean_50_95: float64[R] over classes with ground truth;
    ap50, ap: float64[K] (NaN without ground truth); class_names: list[K].
    """

    recall: np.ndarray
    precision_50: np.ndarray
    precision_50_95: np.ndarray
    mean_50: np.ndarray
    mean_50_95: np.ndarray
    ap50: np.ndarray
    ap: np.ndarray
    class_names: list[str]


def _iou_index(result: CocoEvalResult, iou_thr: float) -> int:
    hit = np.flatnonzero(np.isclose(result.iou_thresholds, iou_thr, rtol=0, atol=1e-12))
    if len(hit) == 0:
        raise DetoptInputError(f"iou_thr={iou_thr!r} is not one of the evaluated thresholds "
                               f"{[round(float(t), 2) for t in result.iou_thresholds]}")
    return int(hit[0])


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN rows; NaN where every row is NaN (no warning)."""
    valid = ~np.isnan(x)
    count = valid.sum(0)
    total = np.where(valid, x, 0.0).sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pr_curves(result: CocoEvalResult) -> PRCurves:
    """Precision-recall curves per class and overall at IoU .5 and .5:.95 (see module doc)."""
    a = list(result.area_ranges).index("all")
    p = result.precision[:, :, :, a, -1]  # [T, R, K]
    p = np.where(p > -1, p, np.nan)
    t50 = _iou_index(result, 0.5)
    p50 = p[t50].T  # [K, R]
    p5095 = np.moveaxis(p, 2, 0)  # [K, T, R]
    has_gt = ~np.isnan(p5095).all(axis=(1, 2))
    p5095_mean = np.full(p5095.shape[::2], np.nan)
    p5095_mean[has_gt] = p5095[has_gt].mean(1)
    ap50 = np.full(len(has_gt), np.nan)
    ap = np.full(len(has_gt), np.nan)
    ap50[has_gt] = p50[has_gt].mean(1)
    ap[has_gt] = p5095_mean[has_gt].mean(1)
    return PRCurves(result.recall_thresholds.copy(), p50, p5095_mean, _nanmean_rows(p50),
                    _nanmean_rows(p5095_mean), ap50, ap, list(result.gt.category_names))


@dataclass(frozen=True)
class F1Curve:
    """Precision, recall and F1 of the detections scoring >= each confidence threshold.

    confidence: float64[C]; precision, recall, f1: float64[K, C] (NaN rows for classes without
    ground truth; precision is 1 where no detection passes); mean_f1: float64[C] over classes
    with ground truth; best_confidence, best_f1: the argmax of ``mean_f1``.
    """

    confidence: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    mean_f1: np.ndarray
    best_confidence: float
    best_f1: float
    iou_thr: float
    class_names: list[str]


def f1_curve(result: CocoEvalResult, iou_thr: float = 0.5, n_points: int = 1001) -> F1Curve:
    """F1 against confidence per class and averaged over classes (see module doc).

    iou_thr: one of the evaluated thresholds; n_points: confidences from 0 to 1.
    """
    if n_points < 2:
        raise DetoptInputError(f"n_points must be >= 2, got {n_points}")
    t = _iou_index(result, iou_thr)
    m = result.matches
    conf = np.linspace(0.0, 1.0, n_points)
    n_cat = len(m.n_positive)
    prec = np.full((n_cat, n_points), np.nan)
    rec = np.full((n_cat, n_points), np.nan)
    score = result.predictions.score
    for k in range(n_cat):
        npos = m.n_positive[k]
        if npos == 0:
            continue
        idx = m.order[m.cat_start[k]:m.cat_start[k + 1]]  # by decreasing score
        st = m.status[t, idx]
        s = score[idx]
        tp = np.concatenate([[0], np.cumsum(st == K.TRUE_POSITIVE)])
        fp = np.concatenate([[0], np.cumsum(st == K.FALSE_POSITIVE)])
        # detections with score >= c are the first n of the decreasing order
        n = len(s) - np.searchsorted(s[::-1], conf, side="left")
        tpc, fpc = tp[n].astype(np.float64), fp[n].astype(np.float64)
        prec[k] = np.where(tpc + fpc > 0, tpc / np.maximum(tpc + fpc, 1), 1.0)
        rec[k] = tpc / npos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    f1[np.isnan(prec)] = np.nan
    mean = _nanmean_rows(f1)
    if np.isnan(mean).all():
        best_i, best = 0, float("nan")
    else:
        best_i = int(np.nanargmax(mean))
        best = float(mean[best_i])
    return F1Curve(conf, prec, rec, f1, mean, float(conf[best_i]), best, float(result.iou_thresholds[t]),
                   list(result.gt.category_names))


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (predicted class, true class) pairs, with a background row and column.

    matrix: int64[K + 1, K + 1]; ``matrix[p, g]`` counts detections of class p matched to ground
    truth of class g; row K counts ground truth no detection matched (missed), column K counts
    detections that matched nothing (false detections). n_ignored: detections that matched no
    object but lie in a crowd region of their class (IoA >= the IoU threshold), left out as COCO
    leaves them out.
    """

    matrix: np.ndarray
    class_names: list[str]
    iou_thr: float
    score_thr: float
    n_ignored: int

    def normalized(self) -> np.ndarray:
        """Columns divided by their sums (the share of each true class per predicted class)."""
        total = self.matrix.sum(0, keepdims=True)
        return self.matrix / np.maximum(total, 1)


def confusion_matrix(result: CocoEvalResult, iou_thr: float = 0.5,
                     score_thr: float = 0.25) -> ConfusionMatrix:
    """Confusion matrix over all images: detections scoring >= ``score_thr`` are
    matched to non-crowd ground truth of any class, greedily by decreasing IoU (ties: higher
    score first, then earlier ground truth), a pair counting when IoU >= ``iou_thr`` and
    IoU > 0."""
    if not 0.0 <= iou_thr <= 1.0:
        raise DetoptInputError(f"iou_thr must be in [0, 1], got {iou_thr!r}")
    if not np.isfinite(score_thr):
        raise DetoptInputError(f"score_thr must be finite, got {score_thr!r}")
    g = result.gt
    d = result.predictions
    keep = d.score >= score_thr
    d_img, d_cat, d_box, d_score = d.image[keep], d.category[keep], d.box[keep], d.score[keep]
    d_order = np.lexsort((-d_score, d_img))  # by image, then decreasing score (stable)
    g_order = np.argsort(g.image, kind="stable")
    bounds = K.pair_bounds(g.image[g_order], d_img[d_order])
    counts, n_ignored = _confusion_kernel(
        bounds, np.ascontiguousarray(g.box[g_order]), g.category[g_order], g.crowd[g_order],
        np.ascontiguousarray(d_box[d_order]), d_cat[d_order], len(g.category_ids), float(iou_thr))
    return ConfusionMatrix(counts, [*g.category_names, "background"], float(iou_thr),
                           float(score_thr), int(n_ignored))


@nb.njit(cache=True, nogil=True)
def _confusion_kernel(bounds: np.ndarray, gt_box: np.ndarray, gt_cat: np.ndarray, gt_crowd: np.ndarray,
                      dt_box: np.ndarray, dt_cat: np.ndarray, n_cat: int, thr: float
                      ) -> tuple[np.ndarray, int]:
    """bounds: int64[P, 4] per image (gt_start, gt_end, dt_start, dt_end); boxes xywh float64;
    detections within an image by decreasing score. Returns (int64[K+1, K+1], n_ignored)."""
    counts = np.zeros((n_cat + 1, n_cat + 1), np.int64)
    n_ignored = 0
    for p in range(bounds.shape[0]):
        g0, g1, d0, d1 = bounds[p, 0], bounds[p, 1], bounds[p, 2], bounds[p, 3]
        n_g = g1 - g0
        n_d = d1 - d0
        ious = np.zeros(n_d * max(n_g, 1))
        for di in range(n_d):
            for gi in range(n_g):
                d, g = d0 + di, g0 + gi
                if not gt_crowd[g]:
                    ious[di * n_g + gi] = K.bb_iou(
                        dt_box[d, 0], dt_box[d, 1], dt_box[d, 2], dt_box[d, 3],
                        gt_box[g, 0], gt_box[g, 1], gt_box[g, 2], gt_box[g, 3], False)
        order = np.argsort(-ious, kind="mergesort")  # decreasing IoU; ties det-major (score order)
        det_used = np.zeros(n_d, np.bool_)
        gt_used = np.zeros(n_g, np.bool_)
        for o in order[:n_d * n_g]:
            v = ious[o]
            if v < thr or v <= 0.0:
                break
            di = o // n_g
            gi = o - di * n_g
            if det_used[di] or gt_used[gi]:
                continue
            det_used[di] = True
            gt_used[gi] = True
            counts[dt_cat[d0 + di], gt_cat[g0 + gi]] += 1
        for gi in range(n_g):
            if not gt_used[gi] and not gt_crowd[g0 + gi]:
                counts[n_cat, gt_cat[g0 + gi]] += 1
        for di in range(n_d):
            if det_used[di]:
                continue
            in_crowd = False
            for gi in range(n_g):
                g = g0 + gi
                d = d0 + di
                if not (gt_crowd[g] and gt_cat[g] == dt_cat[d]):
                    continue
                if K.bb_iou(dt_box[d, 0], dt_box[d, 1], dt_box[d, 2], dt_box[d, 3],
                            gt_box[g, 0], gt_box[g, 1], gt_box[g, 2], gt_box[g, 3], True) >= thr:
                    in_crowd = True
                    break
            if in_crowd:
                n_ignored += 1
            else:
                counts[dt_cat[d0 + di], n_cat] += 1
    return counts, n_ignored


def image_outcomes(det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray,
                   gt_boxes: np.ndarray, gt_labels: np.ndarray, iou_thr: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """COCO's matching in one image, for drawing: detections by decreasing score (ties: input
    order) each take the unmatched ground truth of their class with the highest IoU, if that IoU
    is ``>= iou_thr`` (ties: the later ground truth, as pycocotools' loop does).

    det_boxes: ``[D, 4]`` xyxy; gt_boxes: ``[G, 4]`` xyxy (no crowd regions).
    Returns ``(det_tp bool[D] in input order, gt_matched bool[G])``.
    """
    from detopt.ops import box_iou

    db = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    gb = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    dl, gl = np.asarray(det_labels), np.asarray(gt_labels)
    tp = np.zeros(len(db), bool)
    matched = np.zeros(len(gb), bool)
    if not len(db) or not len(gb):
        return tp, matched
    iou = np.asarray(box_iou(db, gb), np.float64)
    for d in np.argsort(-np.asarray(det_scores, np.float64), kind="stable"):
        cand = np.where((gl == dl[d]) & ~matched, iou[d], -1.0)
        g = len(cand) - 1 - int(np.argmax(cand[::-1]))
        if cand[g] >= min(iou_thr, 1 - 1e-10) and cand[g] > 0:
            tp[d] = True
            matched[g] = True
    return tp, matched

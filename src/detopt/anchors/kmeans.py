"""Anchor shapes from data: k-means with the ``1 - IoU`` distance, then evolution.

All shapes are ``(w, h)`` pairs compared as if centred on the same point (YOLOv2): the IoU of
two shapes is ``min(w)·min(h) / (w₁h₁ + w₂h₂ - min(w)·min(h))``. Fit metrics, for boxes ``wh``
and anchors at the training size:

- mean best IoU: over boxes, the IoU with the best anchor;
- BPR (best possible recall): the fraction of boxes whose best anchor reaches ``thr``, i.e. that
  an IoU-threshold assigner can make positive at all;
- anchors per box: over boxes, how many anchors reach ``thr``.

The Euclidean k-means of the seed guide (``(w, h)`` rescaled, squared-distance clustering) is
kept as :func:`euclidean_kmeans_anchors` for comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2

from detopt.errors import DetoptInputError
from detopt.structures.records import ImageRecord

#: IoU an anchor must reach for a box to count as recallable (RetinaNet's positive threshold).
DEFAULT_THR = 0.5


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of centred shapes: ``wh: [N, 2]``, ``anchors: [K, 2]`` -> ``[N, K]`` (float64)."""
    wh = np.asarray(wh, np.float64)
    anchors = np.asarray(anchors, np.float64)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def fit_metrics(wh: np.ndarray, anchors: np.ndarray, thr: float = DEFAULT_THR) -> dict[str, float]:
    """Mean best IoU, BPR at ``thr``, anchors above ``thr`` per box, and the evolution fitness
    ``mean(best · [best ≥ thr])`` for ``wh: [N, 2]`` boxes and ``anchors: [K, 2]``."""
    iou = wh_iou(wh, anchors)
    best = iou.max(1)
    return {
        "mean_best_iou": float(best.mean()),
        "bpr": float((best >= thr).mean()),
        "anchors_per_box": float((iou >= thr).sum(1).mean()),
        "fitness": float((best * (best >= thr)).mean()),
    }


@dataclass(frozen=True)
class AnchorFit:
    """Fitted anchors and how well they cover the boxes.

    Attributes:
        method: ``"iou-kmeans+evolve"`` or ``"euclidean-kmeans"``.
        anchors: ``[k, 2]`` ``(w, h)`` in pixels at ``imgsz``, sorted by area.
        levels: number of pyramid levels the anchors are split over (small to large).
        thr: the IoU threshold of BPR and anchors-per-box.
        mean_best_iou, bpr, anchors_per_box, fitness: see :func:`fit_metrics`.
    """

    method: str
    anchors: np.ndarray
    levels: int
    thr: float
    imgsz: int
    mean_best_iou: float
    bpr: float
    anchors_per_box: float
    fitness: float

    def per_level(self) -> list[np.ndarray]:
        """The anchors split into ``levels`` groups of equal size, smallest areas first."""
        return np.split(self.anchors, self.levels)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "imgsz": self.imgsz,
            "thr": self.thr,
            "anchors": [[[round(float(w), 1), round(float(h), 1)] for w, h in lv] for lv in self.per_level()],
            "mean_best_iou": self.mean_best_iou,
            "bpr": self.bpr,
            "anchors_per_box": self.anchors_per_box,
            "fitness": self.fitness,
        }


def normalized_wh(records: Iterable[ImageRecord], include_crowd: bool = False) -> np.ndarray:
    """Box ``(w, h)`` of every record divided by its image's longer side -> ``[N, 2]`` float64.

    That is the box size after letterboxing to any square training size ``S`` (times ``S``).
    Zero-size boxes are left out; crowd regions too unless ``include_crowd``.
    """
    out = []
    for r in records:
        if not len(r):
            continue
        b = np.asarray(r.boxes, np.float64)
        wh = b[:, 2:] - b[:, :2]
        keep = (wh > 0).all(1)
        if r.crowd is not None and not include_crowd:
            keep &= ~np.asarray(r.crowd, bool)
        out.append(wh[keep] / max(r.width, r.height))
    return np.concatenate(out) if out else np.zeros((0, 2))


def _check(wh: np.ndarray, k: int, imgsz: int, levels: int) -> np.ndarray:
    wh = np.asarray(wh, np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise DetoptInputError(f"wh: expected [N, 2] box sizes, got shape {wh.shape}")
    if not np.isfinite(wh).all() or (wh <= 0).any():
        raise DetoptInputError("wh: box sizes must be finite and positive")
    if k < 1 or levels < 1 or k % levels:
        raise DetoptInputError(f"k = {k} anchors cannot be split evenly over {levels} levels")
    if imgsz < 1:
        raise DetoptInputError(f"imgsz must be positive, got {imgsz}")
    if len(wh) < k:
        raise DetoptInputError(f"need at least k = {k} boxes to fit {k} anchors, got {len(wh)}")
    return wh * imgsz


def _finish(method: str, anchors: np.ndarray, wh_px: np.ndarray, levels: int, thr: float, imgsz: int):
    anchors = anchors[np.argsort(anchors.prod(1), kind="stable")]
    return AnchorFit(method, anchors, levels, thr, imgsz, **fit_metrics(wh_px, anchors, thr))


def _kmeanspp_iou(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with ``d = 1 - IoU``: each next centre drawn with probability ∝ d²."""
    centres = [wh[rng.integers(len(wh))]]
    d = 1 - wh_iou(wh, np.array(centres))[:, 0]
    for _ in range(1, k):
        p = d * d
        s = p.sum()
        nxt = wh[rng.choice(len(wh), p=p / s)] if s > 0 else wh[rng.integers(len(wh))]
        centres.append(nxt)
        d = np.minimum(d, 1 - wh_iou(wh, nxt[None])[:, 0])
    return np.array(centres)


def _iou_lloyd(wh: np.ndarray, centres: np.ndarray, iters: int = 300) -> np.ndarray:
    """Lloyd iterations: assign to the highest-IoU centre, move centres to the cluster median."""
    assign = None
    for _ in range(iters):
        new = wh_iou(wh, centres).argmax(1)
        if assign is not None and (new == assign).all():
            break
        assign = new
        for j in range(len(centres)):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, 0)
    return centres


def _evolve(
    wh: np.ndarray, anchors: np.ndarray, thr: float, generations: int, rng: np.random.Generator
) -> np.ndarray:
    """Hill-climb with multiplicative mutations (YOLOv5's scheme: 90 % of anchors mutated, σ 0.1).

    A mutant replaces the current anchors only if it raises the fitness without lowering mean
    best IoU or BPR, so the result is never worse than the k-means start on any reported metric.
    """
    cur = fit_metrics(wh, anchors, thr)
    k = len(anchors)
    for _ in range(generations):
        v = np.ones(k)
        while (v == 1).all():
            v = ((rng.random(k) < 0.9) * rng.random() * rng.standard_normal(k) * 0.1 + 1).clip(0.3, 3.0)
        cand = (anchors * v[:, None]).clip(min=1.0)
        m = fit_metrics(wh, cand, thr)
        if (
            m["fitness"] > cur["fitness"]
            and m["mean_best_iou"] >= cur["mean_best_iou"]
            and m["bpr"] >= cur["bpr"]
        ):
            anchors, cur = cand, m
    return anchors


def kmeans_anchors(
    wh: np.ndarray,
    k: int = 9,
    imgsz: int = 640,
    *,
    levels: int = 3,
    thr: float = DEFAULT_THR,
    generations: int = 1000,
    restarts: int = 3,
    max_boxes: int = 50_000,
    seed: int = 0,
) -> AnchorFit:
    """Anchors by k-means with distance ``1 - IoU`` (k-means++ seeding), refined by evolution.

    Args:
        wh: ``[N, 2]`` box sizes normalised by the image's longer side (:func:`normalized_wh`).
        k: number of anchors; ``levels`` must divide it.
        imgsz: training size; anchors and metrics are in pixels at this size.
        thr: IoU threshold for BPR, anchors-per-box and the fitness.
        generations: evolution steps (0 keeps the k-means result).
        restarts: k-means runs from different seeds; the best mean best IoU starts the evolution.
        max_boxes: fit on a random subset of this many boxes (metrics use every box).
        seed: everything random comes from ``numpy.random.default_rng(seed)``.
    """
    wh_px = _check(wh, k, imgsz, levels)
    rng = np.random.default_rng(seed)
    fit_on = wh_px if len(wh_px) <= max_boxes else wh_px[rng.choice(len(wh_px), max_boxes, replace=False)]
    best, best_iou = None, -1.0
    for _ in range(max(1, restarts)):
        c = _iou_lloyd(fit_on, _kmeanspp_iou(fit_on, k, rng))
        m = wh_iou(fit_on, c).max(1).mean()
        if m > best_iou:
            best, best_iou = c, m
    anchors = _evolve(fit_on, best, thr, generations, rng) if generations > 0 else best
    return _finish("iou-kmeans+evolve", anchors, wh_px, levels, thr, imgsz)


def euclidean_kmeans_anchors(
    wh: np.ndarray,
    k: int = 9,
    imgsz: int = 640,
    *,
    levels: int = 3,
    thr: float = DEFAULT_THR,
    seed: int = 0,
) -> AnchorFit:
    """The seed guide's baseline: Euclidean k-means (k-means++) on ``(w, h)``, no evolution."""
    wh_px = _check(wh, k, imgsz, levels)
    scale = wh_px.max()
    centres, _ = kmeans2(wh_px / scale, k, minit="++", seed=np.random.default_rng(seed))
    return _finish("euclidean-kmeans", centres * scale, wh_px, levels, thr, imgsz)

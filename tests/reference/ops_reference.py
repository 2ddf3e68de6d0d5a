"""Brute-force float64 references for detopt.ops, written from the papers' definitions.

Deliberately naive: Python loops over pairs, no spatial pruning, no vectorization, nothing
shared with the library code.
"""

from __future__ import annotations

import math

import numpy as np


def _wh(b):
    return max(b[2] - b[0], 0.0), max(b[3] - b[1], 0.0)


def iou(a, b) -> float:
    wa, ha = _wh(a)
    wb, hb = _wh(b)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = wa * ha + wb * hb - inter
    return inter / union if union > 0 else 0.0


def _enclosing(a, b):
    return (max(max(a[2], b[2]) - min(a[0], b[0]), 0.0),
            max(max(a[3], b[3]) - min(a[1], b[1]), 0.0))


def giou(a, b) -> float:
    wa, ha = _wh(a)
    wb, hb = _wh(b)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = wa * ha + wb * hb - iw * ih
    ew, eh = _enclosing(a, b)
    c = ew * eh
    return iou(a, b) - ((c - union) / c if c > 0 else 0.0)


def _center_ratio(a, b) -> float:
    ew, eh = _enclosing(a, b)
    c2 = ew**2 + eh**2
    d2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    return d2 / c2 if c2 > 0 else 0.0


def diou(a, b) -> float:
    return iou(a, b) - _center_ratio(a, b)


def ciou(a, b) -> float:
    wa, ha = _wh(a)
    wb, hb = _wh(b)
    v = 4 / math.pi**2 * (math.atan2(wb, hb) - math.atan2(wa, ha)) ** 2
    i = iou(a, b)
    alpha = v / (1 - i + v) if (1 - i + v) > 0 else 0.0
    return i - _center_ratio(a, b) - alpha * v


def pairwise(fn, b1, b2) -> np.ndarray:
    out = np.zeros((len(b1), len(b2)))
    for i, a in enumerate(np.asarray(b1, np.float64)):
        for j, b in enumerate(np.asarray(b2, np.float64)):
            out[i, j] = fn(a, b)
    return out


def _order(scores) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


def greedy_nms(boxes, scores, thr, labels=None, diou_beta=None) -> np.ndarray:
    """Greedy NMS; DIoU-NMS when ``diou_beta`` is given."""
    boxes = np.asarray(boxes, np.float64)
    kept: list[int] = []
    for j in _order(scores):
        ok = True
        for i in kept:
            if labels is not None and labels[i] != labels[j]:
                continue
            v = iou(boxes[i], boxes[j])
            if diou_beta is not None:
                v -= _center_ratio(boxes[i], boxes[j]) ** diou_beta
            if v > thr:
                ok = False
                break
        if ok:
            kept.append(j)
    return np.array(kept, np.int64)


def soft_nms(boxes, scores, thr, sigma, score_thr, method, labels=None):
    """Bodla et al. 2017, Algorithm 1, with the stop rule ``max score <= score_thr``."""
    boxes = np.asarray(boxes, np.float64)
    s = [float(x) for x in scores]
    remaining = list(range(len(s)))
    keep, kept = [], []
    while remaining:
        m = min(remaining, key=lambda i: (-s[i], i))
        if not s[m] > score_thr:
            break
        keep.append(m)
        kept.append(s[m])
        remaining.remove(m)
        for j in remaining:
            if labels is not None and labels[j] != labels[m]:
                continue
            o = iou(boxes[m], boxes[j])
            if method == "gaussian":
                s[j] *= math.exp(-(o * o) / sigma)
            elif o > thr:
                s[j] *= 1 - o
    return np.array(keep, np.int64), np.array(kept)


def matrix_nms(boxes, scores, labels=None, kernel="gaussian", sigma=2.0):
    """SOLOv2's dense matrix formulation (Wang et al. 2020, Fig. / Algorithm), float64."""
    boxes = np.asarray(boxes, np.float64)
    order = _order(scores)
    n = len(order)
    ious = np.zeros((n, n))
    for a in range(n):
        for c in range(a + 1, n):
            i, j = order[a], order[c]
            if labels is None or labels[i] == labels[j]:
                ious[a, c] = iou(boxes[i], boxes[j])
    comp = ious.max(0) if n else np.zeros(0)
    decay = np.ones(n)
    for c in range(n):
        vals = []
        for a in range(n):
            if kernel == "gaussian":
                vals.append(math.exp(-sigma * ious[a, c] ** 2) / math.exp(-sigma * comp[a] ** 2))
            else:
                vals.append((1 - ious[a, c]) / max(1 - comp[a], 1e-12))
        decay[c] = min(vals)
    out = np.empty(n)
    for c in range(n):
        out[order[c]] = float(scores[order[c]]) * decay[c]
    return out

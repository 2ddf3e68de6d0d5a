"""Brute-force assigners for one image, written from the papers with Python loops (float64).

``anchors``: ``[A, 4]`` boxes, ``points``: ``[A, 2]``, ``gts``: ``[n, 4]`` (padding removed).
Each returns ``(gt_index [A] with -1 for none, quality [A])``; MaxIoU also returns ``ignore``.
Nothing here imports detopt.
"""

from __future__ import annotations

import math

import numpy as np

from tests.reference.ops_reference import giou, iou


def _inside(p, g, eps):
    return min(p[0] - g[0], p[1] - g[1], g[2] - p[0], g[3] - p[1]) > eps


def max_iou(anchors, gts, pos_thr, neg_thr, min_pos_iou=0.0, low_quality=True):
    A, n = len(anchors), len(gts)
    ious = np.array([[iou(g, a) for a in anchors] for g in gts]).reshape(n, A)
    idx, ignore = np.full(A, -1), np.zeros(A, bool)
    for j in range(A):
        if n == 0:
            continue
        best = ious[:, j].max()
        if best >= pos_thr:
            idx[j] = int(np.argmax(ious[:, j]))
        elif best >= neg_thr:
            ignore[j] = True
    if low_quality:
        for j in range(A):
            owners = [
                g
                for g in range(n)
                if ious[g].max() > 0 and ious[g].max() >= min_pos_iou and ious[g, j] == ious[g].max()
            ]
            if owners:  # low-quality matches override threshold positives
                idx[j] = max(owners, key=lambda g: (ious[g, j], -g))
    ignore &= idx < 0
    return idx, np.ones(A), ignore


def atss(anchors, level_sizes, gts, topk=9, eps=0.01):
    A, n = len(anchors), len(gts)
    points = [((a[0] + a[2]) / 2, (a[1] + a[3]) / 2) for a in anchors]
    pos = np.zeros((n, A), bool)
    ious = np.array([[iou(g, a) for a in anchors] for g in gts]).reshape(n, A)
    for gi, g in enumerate(gts):
        cx, cy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
        cands, start = [], 0
        for size in level_sizes:
            d = [((points[j][0] - cx) ** 2 + (points[j][1] - cy) ** 2, j) for j in range(start, start + size)]
            cands += [j for _, j in sorted(d)[:topk]]
            start += size
        vals = [ious[gi, j] for j in cands]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        for j in cands:
            if ious[gi, j] >= mean + std and _inside(points[j], g, eps):
                pos[gi, j] = True
    return _resolve(pos, ious), np.ones(A)


def _resolve(pos, score):
    A = pos.shape[1]
    idx = np.full(A, -1)
    for j in range(A):
        owners = [g for g in range(pos.shape[0]) if pos[g, j]]
        if owners:
            idx[j] = max(owners, key=lambda g: (score[g, j], -g))
    return idx


def task_aligned(scores, boxes, points, gts, labels, topk=10, alpha=0.5, beta=6.0, eps=1e-9):
    A, n = len(boxes), len(gts)
    ious = np.array([[max(iou(g, b), 0.0) for b in boxes] for g in gts]).reshape(n, A)
    t = np.zeros((n, A))
    pos = np.zeros((n, A), bool)
    for gi, g in enumerate(gts):
        inside = [j for j in range(A) if _inside(points[j], g, eps)]
        for j in inside:
            t[gi, j] = scores[j, labels[gi]] ** alpha * ious[gi, j] ** beta
        for j in sorted(inside, key=lambda j: -t[gi, j])[:topk]:
            pos[gi, j] = True
    idx = _resolve(pos, ious)
    q = np.zeros(A)
    for gi in range(n):
        mine = [j for j in range(A) if idx[j] == gi]
        if mine:
            tmax = max(t[gi, j] for j in mine)
            umax = max(ious[gi, j] for j in mine)
            for j in mine:
                q[j] = t[gi, j] * umax / tmax if tmax > 0 else 0.0
    return idx, q


def _bce(p, y):
    return (
        -(y * max(math.log(p), -100) + (1 - y) * max(math.log(1 - p), -100))
        if 0 < p < 1
        else (0.0 if p == y else 100.0)
    )


def simota(scores, boxes, points, strides, gts, labels, radius=2.5, topk=10, iou_w=3.0, cls_w=1.0):
    A, n = len(boxes), len(gts)
    C = scores.shape[1]
    if n == 0:
        return np.full(A, -1), np.zeros(A)
    in_box = np.array([[_inside(points[j], g, 1e-9) for j in range(A)] for g in gts]).reshape(n, A)
    in_ctr = np.array(
        [
            [
                abs(points[j][0] - (g[0] + g[2]) / 2) < radius * strides[j]
                and abs(points[j][1] - (g[1] + g[3]) / 2) < radius * strides[j]
                for j in range(A)
            ]
            for g in gts
        ]
    ).reshape(n, A)
    cand = [j for j in range(A) if (in_box[:, j] | in_ctr[:, j]).any()]
    idx, q = np.full(A, -1), np.zeros(A)
    if not cand:
        return idx, q
    ious = np.array([[iou(g, boxes[j]) for j in cand] for g in gts])
    cost = np.zeros((n, len(cand)))
    for gi in range(n):
        for ci, j in enumerate(cand):
            cls = sum(_bce(scores[j, c], 1.0 if c == labels[gi] else 0.0) for c in range(C))
            cost[gi, ci] = cls_w * cls - iou_w * math.log(ious[gi, ci] + 1e-8)
            if not (in_box[gi, j] and in_ctr[gi, j]):
                cost[gi, ci] += 1e5
    match = np.zeros((n, len(cand)), bool)
    for gi in range(n):
        k = max(1, int(sum(sorted(ious[gi], reverse=True)[:topk])))
        for ci in sorted(range(len(cand)), key=lambda c: (cost[gi, c], c))[:k]:
            match[gi, ci] = True
    for ci, j in enumerate(cand):
        owners = [g for g in range(n) if match[g, ci]]
        if owners:
            g = min(owners, key=lambda g: (cost[g, ci], g))
            idx[j], q[j] = g, ious[g, ci]
    return idx, q


def hungarian_cost(scores, boxes, gts, labels, wc=2.0, wl=5.0, wg=2.0, alpha=0.25, gamma=2.0, norm=1.0):
    Q, n = len(boxes), len(gts)
    cost = np.zeros((Q, n))
    for i in range(Q):
        for gi in range(n):
            p = scores[i, labels[gi]]
            pos = alpha * (1 - p) ** gamma * -math.log(p + 1e-8)
            neg = (1 - alpha) * p**gamma * -math.log(1 - p + 1e-8)
            b, g = boxes[i], gts[gi]
            cb = [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]
            cg = [(g[0] + g[2]) / 2, (g[1] + g[3]) / 2, g[2] - g[0], g[3] - g[1]]
            l1 = sum(abs(u - v) for u, v in zip(cb, cg, strict=True)) / norm
            cost[i, gi] = wc * (pos - neg) + wl * l1 - wg * giou(b, g)
    return cost

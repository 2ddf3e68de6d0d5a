"""Brute-force references for the evaluation curves (plain Python loops, float64)."""

from __future__ import annotations

import numpy as np


def iou_xywh(d, g, crowd: bool = False) -> float:
    """IoU (IoA over the detection for crowd regions) of two [x, y, w, h] boxes."""
    w = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
    h = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter)


def confusion_matrix(gt: dict, dt: list, iou_thr: float, conf_thr: float) -> tuple[np.ndarray, int]:
    """Greedy cross-class matching per image by decreasing IoU (ties: higher-scoring detection,
    then earlier detection in the file, then earlier ground truth). Rows predicted, columns true,
    index K = background."""
    cats = sorted(c["id"] for c in gt["categories"])
    k_of = {c: i for i, c in enumerate(cats)}
    n = len(cats)
    m = np.zeros((n + 1, n + 1), np.int64)
    ignored = 0
    for img in gt["images"]:
        gts = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        regular = [a for a in gts if not a.get("iscrowd", 0)]
        crowd = [a for a in gts if a.get("iscrowd", 0)]
        dets = [d for d in dt
                if d["image_id"] == img["id"] and d["score"] >= conf_thr and d["category_id"] in k_of]
        dets = sorted(dets, key=lambda d: -d["score"])  # stable: file order among equal scores
        pairs = []
        for i, d in enumerate(dets):
            for j, g in enumerate(regular):
                v = iou_xywh(d["bbox"], g["bbox"])
                if v >= iou_thr and v > 0:
                    pairs.append((-v, i, j))
        used_d, used_g = set(), set()
        for _, i, j in sorted(pairs):
            if i in used_d or j in used_g:
                continue
            used_d.add(i)
            used_g.add(j)
            m[k_of[dets[i]["category_id"]], k_of[regular[j]["category_id"]]] += 1
        for j, g in enumerate(regular):
            if j not in used_g:
                m[n, k_of[g["category_id"]]] += 1
        for i, d in enumerate(dets):
            if i in used_d:
                continue
            if any(c["category_id"] == d["category_id"] and iou_xywh(d["bbox"], c["bbox"], True) >= iou_thr
                   for c in crowd):
                ignored += 1
            else:
                m[k_of[d["category_id"]], n] += 1
    return m, ignored

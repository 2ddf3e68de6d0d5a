"""Weighted boxes fusion (Solovyev et al. 2021) with ensemble-boxes' conventions and results.

Boxes are normalized ``[0, 1]`` xyxy, one array per model, exactly what
``ensemble_boxes.weighted_boxes_fusion`` takes, so a user can switch by changing the import.
The clustering runs in a numba kernel with a spatial grid (cost grows with local overlap, not
with N²); CUDA tensors run the torch twin.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numba as nb
import numpy as np
import torch
from torch import Tensor

from detopt.errors import DetoptInputError
from detopt.ops._array import (
    ArrayLike,
    check_boxes,
    check_threshold,
    check_vector,
    compute_dtype,
    is_tensor,
    labels_to_numpy,
    to_numpy,
    use_torch_path,
)
from detopt.ops._grid import JIT, columns_of, grid_cell, grid_geometry

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


def fuse_clusters(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, models: np.ndarray,
                  weights: np.ndarray, iou_thr: float, conf_type: str = "avg",
                  allows_overflow: bool = False, device: torch.device | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse already-clean boxes (positive area, any coordinate range).

    Args:
        boxes: ``[N, 4]`` float64 xyxy. scores: ``[N]`` float64 raw scores. labels: ``[N]``
            int64. models: ``[N]`` int64 model index of each box. weights: ``[M]`` float64
            model weights. device: run the torch twin on this device instead of numba.

    Returns:
        ``(boxes [C, 4] float64, scores [C] float64, labels [C] int64)`` by decreasing score.
    """
    n_models = int(weights.shape[0])
    if boxes.shape[0] == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    wscores = scores * weights[models]
    order = np.argsort(-wscores, kind="stable")
    b, ws, lab, mod = boxes[order], wscores[order], labels[order], models[order]
    w_each = weights[mod]
    if device is not None:
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        out = wbf_clusters_torch(t(b), t(ws), t(w_each), t(mod), t(lab), float(iou_thr),
                                        n_models)
        fused, conf, cmax, count, wsum, clabel, presence = (x.cpu().numpy() for x in out)
    else:
        fused, conf, cmax, count, wsum, clabel, presence = wbf_kernel(
            np.ascontiguousarray(b), ws, w_each, mod, lab, float(iou_thr), n_models)
    total = weights.sum()
    base = cmax if conf_type == "max" else conf / np.maximum(count, 1)
    if conf_type == "box_and_model_avg":
        present_w = presence.astype(np.float64) @ weights
        score = base * count / wsum * present_w / total
    elif conf_type == "absent_model_aware_avg":
        absent_w = (~presence).astype(np.float64) @ weights
        score = base * count / (wsum + absent_w)
    elif conf_type == "max":
        score = base / weights.max()
    elif allows_overflow:
        score = base * count / total
    else:
        score = base * np.minimum(n_models, count) / total
    final = np.argsort(-score, kind="stable")
    return fused[final], score[final], clabel[final]


def _prefilter(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, models: np.ndarray,
               skip_box_thr: float):
    """ensemble-boxes' prefilter: drop scores < skip_box_thr, swap inverted corners, clip to
    [0, 1], drop zero-area boxes. Fixes and drops are counted and reported in one warning."""
    keep = scores >= skip_box_thr
    boxes, scores, labels, models = boxes[keep], scores[keep], labels[keep], models[keep]
    swapped = int((boxes[:, 2] < boxes[:, 0]).sum() + (boxes[:, 3] < boxes[:, 1]).sum())
    b = np.empty_like(boxes)
    b[:, 0] = np.minimum(boxes[:, 0], boxes[:, 2])
    b[:, 2] = np.maximum(boxes[:, 0], boxes[:, 2])
    b[:, 1] = np.minimum(boxes[:, 1], boxes[:, 3])
    b[:, 3] = np.maximum(boxes[:, 1], boxes[:, 3])
    clipped = int(((b < 0) | (b > 1)).sum())
    b = np.clip(b, 0.0, 1.0)
    nonzero = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) != 0
    dropped = int((~nonzero).sum())
    if swapped or clipped or dropped:
        warnings.warn(
            f"weighted_boxes_fusion: swapped {swapped} inverted coordinate pairs, clipped "
            f"{clipped} coordinates to [0, 1], skipped {dropped} zero-area boxes",
            stacklevel=3,
        )
    return b[nonzero], scores[nonzero], labels[nonzero], models[nonzero]


def weighted_boxes_fusion(boxes_list: Sequence[ArrayLike], scores_list: Sequence[ArrayLike],
                          labels_list: Sequence[ArrayLike], weights: Sequence[float] | None = None,
                          iou_thr: float = 0.55, skip_box_thr: float = 0.0,
                          conf_type: str = "avg", allows_overflow: bool = False
                          ) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """Fuse the predictions of several models (ensemble-boxes' API and results).

    Args:
        boxes_list: per model ``[N_m, 4]`` normalized xyxy. scores_list: per model ``[N_m]``.
        labels_list: per model ``[N_m]`` integer labels. weights: ``[M]`` model weights
            (default 1). iou_thr: a box joins the same-label cluster whose fused box has the
            highest IoU with it when that IoU is ``> iou_thr``. skip_box_thr: boxes with
            score ``< skip_box_thr`` are ignored. conf_type: ``avg`` | ``max`` |
            ``box_and_model_avg`` | ``absent_model_aware_avg``. allows_overflow: ``avg``
            scores may exceed 1 when a cluster holds more boxes than there are models.

    Returns:
        ``(boxes [C, 4], scores [C], labels [C] int64)`` by decreasing score; numpy unless the
        boxes were tensors. Fused coordinates are accumulated in float32 as ensemble-boxes does.

    Differences from ensemble-boxes: bad input raises ``ValueError`` (ensemble-boxes prints
    and exits or silently resets weights); one warning counts all clipped/skipped boxes; ties of
    equal scores keep input order.
    """
    if conf_type not in CONF_TYPES:
        raise DetoptInputError(f"conf_type: expected one of {CONF_TYPES}, got {conf_type!r}")
    m = len(boxes_list)
    if len(scores_list) != m or len(labels_list) != m:
        raise DetoptInputError(
            f"boxes_list, scores_list, labels_list: lengths {m}, {len(scores_list)}, "
            f"{len(labels_list)} differ (one entry per model)")
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != m:
        raise DetoptInputError(f"weights: {w.shape[0]} weights for {m} models")
    if not np.isfinite(w).all() or (w < 0).any() or (m > 0 and w.sum() <= 0):
        raise DetoptInputError(f"weights: must be finite, >= 0 and not all 0, got {w.tolist()}")
    iou_thr = check_threshold(iou_thr, "iou_thr")
    if not 0 <= iou_thr <= 1:
        raise DetoptInputError(f"iou_thr: must be in [0, 1], got {iou_thr}")
    skip_box_thr = check_threshold(skip_box_thr, "skip_box_thr")

    all_b, all_s, all_l, all_m = [], [], [], []
    dtypes = []
    device = None
    for t in range(m):
        b = check_boxes(boxes_list[t], f"boxes_list[{t}]")
        n = int(b.shape[0])
        s = check_vector(scores_list[t], n, f"scores_list[{t}]", f"boxes_list[{t}]")
        lab = check_vector(labels_list[t], n, f"labels_list[{t}]", f"boxes_list[{t}]")
        if device is None and use_torch_path(b):
            device = b.device
        dtypes.append(b)
        all_b.append(to_numpy(b, np.float64))
        all_s.append(to_numpy(s, np.float64))
        all_l.append(labels_to_numpy(lab))
        all_m.append(np.full(n, t, np.int64))
    out_dtype = compute_dtype(*dtypes) if dtypes else np.dtype(np.float64)
    as_tensor = bool(dtypes) and is_tensor(dtypes[0])
    if m and sum(len(x) for x in all_b):
        b, s, lab, mod = _prefilter(np.concatenate(all_b), np.concatenate(all_s),
                                    np.concatenate(all_l), np.concatenate(all_m), skip_box_thr)
    else:
        b, s, lab, mod = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64),
                          np.zeros(0, np.int64))
    fused, score, flab = fuse_clusters(b, s, lab, mod, w, iou_thr, conf_type, allows_overflow,
                                       device)
    fused = fused.astype(out_dtype)
    score = score.astype(out_dtype)
    if as_tensor:
        dev = dtypes[0].device
        return (torch.from_numpy(fused).to(dev), torch.from_numpy(score).to(dev),
                torch.from_numpy(flab).to(dev))
    return fused, score, flab


# --------------------------------------------------------------------------- numba kernel and torch twin
@nb.njit(**JIT)
def wbf_kernel(boxes, wscores, weights, models, labels, iou_thr, n_models):
    """Cluster boxes as ensemble-boxes' weighted_boxes_fusion does.

    Inputs are prefiltered and sorted by decreasing weighted score (``wscores`` = score ·
    model weight). Each box joins the same-label cluster whose fused box has the highest IoU
    with it (first created on ties) when that IoU > ``iou_thr``, else starts a cluster. A fused
    box is the weighted-score average of its members, accumulated in float32 as
    ensemble-boxes does; a one-member cluster keeps its box as given.

    Returns per cluster: fused boxes [C, 4] float64, score sum, score max, member count,
    weight sum, label, and a [C, n_models]
    presence matrix.
    """
    n = boxes.shape[0]
    x1, y1, x2, y2, area = columns_of(boxes)
    allidx = np.arange(n)
    ox, oy, sx, sy, gx, gy = grid_geometry(x1, y1, x2, y2, area, allidx)
    ncell = gx * gy
    head = np.full(ncell, -1, np.int64)
    cap = max(16, 4 * n)
    nxt = np.empty(cap, np.int64)
    val = np.empty(cap, np.int64)
    ne = 0
    # cluster state
    acc = np.zeros((n, 4), np.float32)
    fx1 = np.empty(n, np.float64)
    fy1 = np.empty(n, np.float64)
    fx2 = np.empty(n, np.float64)
    fy2 = np.empty(n, np.float64)
    farea = np.empty(n, np.float64)
    conf = np.zeros(n, np.float64)
    cmax = np.zeros(n, np.float64)
    count = np.zeros(n, np.int64)
    wsum = np.zeros(n, np.float64)
    clabel = np.empty(n, np.int64)
    presence = np.zeros((n, n_models), np.bool_)
    reg = np.full((n, 4), -1, np.int64)  # registered cell range: cx0, cx1, cy0, cy1
    stamp = np.full(n, -1, np.int64)
    nc = 0
    for j in range(n):
        best = -1
        best_iou = iou_thr
        cx0 = grid_cell(x1[j], ox, sx, gx)
        cx1 = grid_cell(x2[j], ox, sx, gx)
        cy0 = grid_cell(y1[j], oy, sy, gy)
        cy1 = grid_cell(y2[j], oy, sy, gy)
        for gyc in range(cy0, cy1 + 1):
            for gxc in range(cx0, cx1 + 1):
                e = head[gyc * gx + gxc]
                while e >= 0:
                    k = val[e]
                    e = nxt[e]
                    if stamp[k] == j or clabel[k] != labels[j]:
                        continue
                    stamp[k] = j
                    iw = min(fx2[k], x2[j]) - max(fx1[k], x1[j])
                    ih = min(fy2[k], y2[j]) - max(fy1[k], y1[j])
                    if iw <= 0 or ih <= 0:
                        continue
                    inter = iw * ih
                    iou = inter / (farea[k] + area[j] - inter)
                    if iou > best_iou or (iou == best_iou and best >= 0 and k < best):
                        best_iou = iou
                        best = k
        if best < 0:
            k = nc
            nc += 1
            clabel[k] = labels[j]
            fx1[k] = x1[j]
            fy1[k] = y1[j]
            fx2[k] = x2[j]
            fy2[k] = y2[j]
            cmax[k] = wscores[j]
        else:
            k = best
        # accumulate (ensemble-boxes: box[4:] += score * coords in a float32 array)
        ws = wscores[j]
        acc[k, 0] = acc[k, 0] + ws * x1[j]
        acc[k, 1] = acc[k, 1] + ws * y1[j]
        acc[k, 2] = acc[k, 2] + ws * x2[j]
        acc[k, 3] = acc[k, 3] + ws * y2[j]
        conf[k] += ws
        count[k] += 1
        wsum[k] += weights[j]
        presence[k, models[j]] = True
        if count[k] > 1:
            fx1[k] = np.float32(acc[k, 0] / conf[k])
            fy1[k] = np.float32(acc[k, 1] / conf[k])
            fx2[k] = np.float32(acc[k, 2] / conf[k])
            fy2[k] = np.float32(acc[k, 3] / conf[k])
            if ws > cmax[k]:
                cmax[k] = ws
        farea[k] = (fx2[k] - fx1[k]) * (fy2[k] - fy1[k])
        # (re-)register the cluster in the cells its fused box covers
        kx0 = grid_cell(fx1[k], ox, sx, gx)
        kx1 = grid_cell(fx2[k], ox, sx, gx)
        ky0 = grid_cell(fy1[k], oy, sy, gy)
        ky1 = grid_cell(fy2[k], oy, sy, gy)
        if reg[k, 0] == kx0 and reg[k, 1] == kx1 and reg[k, 2] == ky0 and reg[k, 3] == ky1:
            continue
        for gyc in range(ky0, ky1 + 1):
            for gxc in range(kx0, kx1 + 1):
                c = gyc * gx + gxc
                if ne == cap:
                    cap *= 2
                    nn = np.empty(cap, np.int64)
                    nn[:ne] = nxt[:ne]
                    nxt = nn
                    nv = np.empty(cap, np.int64)
                    nv[:ne] = val[:ne]
                    val = nv
                nxt[ne] = head[c]
                val[ne] = k
                head[c] = ne
                ne += 1
        reg[k, 0] = kx0
        reg[k, 1] = kx1
        reg[k, 2] = ky0
        reg[k, 3] = ky1
    fused = np.empty((nc, 4), np.float64)
    for k in range(nc):
        fused[k, 0] = fx1[k]
        fused[k, 1] = fy1[k]
        fused[k, 2] = fx2[k]
        fused[k, 3] = fy2[k]
    return (fused, conf[:nc].copy(), cmax[:nc].copy(), count[:nc].copy(), wsum[:nc].copy(),
            clabel[:nc].copy(), presence[:nc].copy())


def wbf_clusters_torch(boxes: Tensor, wscores: Tensor, weights: Tensor, models: Tensor, labels: Tensor,
                 iou_thr: float, n_models: int):
    """Twin of ``wbf_kernel`` (same inputs and outputs, float64 tensors), one
    vectorized match against all clusters per box."""
    n = boxes.shape[0]
    dev = boxes.device
    f64 = torch.float64
    fused = torch.zeros((n, 4), dtype=f64, device=dev)
    acc = torch.zeros((n, 4), dtype=torch.float32, device=dev)
    conf = torch.zeros(n, dtype=f64, device=dev)
    cmax = torch.zeros(n, dtype=f64, device=dev)
    count = torch.zeros(n, dtype=torch.int64, device=dev)
    wsum = torch.zeros(n, dtype=f64, device=dev)
    clabel = torch.zeros(n, dtype=torch.int64, device=dev)
    presence = torch.zeros((n, max(n_models, 1)), dtype=torch.bool, device=dev)
    nc = 0
    for j in range(n):
        box = boxes[j]
        k = -1
        if nc > 0:
            fb = fused[:nc]
            iw = (torch.minimum(fb[:, 2], box[2]) - torch.maximum(fb[:, 0], box[0])).clamp(min=0)
            ih = (torch.minimum(fb[:, 3], box[3]) - torch.maximum(fb[:, 1], box[1])).clamp(min=0)
            inter = iw * ih
            area_f = (fb[:, 2] - fb[:, 0]) * (fb[:, 3] - fb[:, 1])
            area_b = (box[2] - box[0]) * (box[3] - box[1])
            iou = inter / (area_f + area_b - inter)
            iou = torch.where(clabel[:nc] == labels[j], iou, -1)
            best = int(torch.argmax(iou))
            if float(iou[best]) > iou_thr:
                k = best
        ws = wscores[j]
        if k < 0:
            k = nc
            nc += 1
            clabel[k] = labels[j]
            fused[k] = box
            cmax[k] = ws
        acc[k] = (acc[k].to(f64) + ws * box).to(torch.float32)
        conf[k] += ws
        count[k] += 1
        wsum[k] += weights[j]
        presence[k, models[j]] = True
        if int(count[k]) > 1:
            fused[k] = (acc[k].to(f64) / conf[k]).to(torch.float32).to(f64)
            cmax[k] = torch.maximum(cmax[k], ws)
    return (fused[:nc], conf[:nc], cmax[:nc], count[:nc], wsum[:nc], clabel[:nc],
            presence[:nc, :n_models])

"""Vectorized torch implementations of the NMS family (GPU and export path).

Each function mirrors a numba kernel of ``_kernels`` expression by expression, so both paths
give the same indices (and the same scores up to the last bit of ``exp``/``pow``). Inputs are
already validated tensors in the compute dtype; labels are int64 tensors or None.
"""

from __future__ import annotations

import torch
from torch import Tensor

_BLOCK = 4096  # rows of the pairwise matrix computed at once (bounds temporary memory)


def areas(b: Tensor) -> Tensor:
    """``b: [N, 4] xyxy`` -> ``[N]`` with widths/heights clamped at 0."""
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def iou_matrix(a: Tensor, b: Tensor, area_a: Tensor, area_b: Tensor) -> Tensor:
    """IoU of ``a: [N, 4]`` with ``b: [M, 4]`` -> ``[N, M]`` (0 where they do not intersect)."""
    iw = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    ih = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    ok = (iw > 0) & (ih > 0) & (union > 0)
    return torch.where(ok, inter / torch.where(ok, union, 1), 0)


def diou_penalty(a: Tensor, b: Tensor, beta: float) -> Tensor:
    """``(d² / c²) ** beta`` of ``a: [N, 4]`` against ``b: [M, 4]`` -> ``[N, M]``."""
    ew = (torch.maximum(a[:, None, 2], b[None, :, 2]) - torch.minimum(a[:, None, 0], b[None, :, 0]))
    eh = (torch.maximum(a[:, None, 3], b[None, :, 3]) - torch.minimum(a[:, None, 1], b[None, :, 1]))
    ew = ew.clamp(min=0)
    eh = eh.clamp(min=0)
    c2 = ew * ew + eh * eh
    cxa = (a[:, 0] + a[:, 2]) * 0.5
    cya = (a[:, 1] + a[:, 3]) * 0.5
    cxb = (b[:, 0] + b[:, 2]) * 0.5
    cyb = (b[:, 1] + b[:, 3]) * 0.5
    dx = cxa[:, None] - cxb[None, :]
    dy = cya[:, None] - cyb[None, :]
    d2 = dx * dx + dy * dy
    pen = torch.where(c2 > 0, d2 / torch.where(c2 > 0, c2, 1), 0)
    if beta != 1:
        pen = pen.pow(torch.tensor(beta, dtype=pen.dtype, device=pen.device))
    return pen


def score_order(scores: Tensor) -> Tensor:
    """Indices by decreasing score, ties by lower index."""
    return torch.sort(scores, descending=True, stable=True).indices


def nms(boxes: Tensor, scores: Tensor, labels: Tensor | None, thr: float, diou: bool = False,
        beta: float = 1.0) -> Tensor:
    """Greedy (DIoU-)NMS by the Cluster-NMS fixed point (Zheng et al. 2021).

    ``keep[j] = not any(keep[i] and S[i, j] for i < j)`` iterated from all-ones converges to
    the greedy result: after t rounds the first t + 1 entries are final.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = score_order(scores)
    b = boxes[order]
    area = areas(b)
    lab = labels[order] if labels is not None else None
    thr_t = torch.tensor(thr, dtype=b.dtype, device=b.device)
    cols = torch.arange(n, device=b.device)
    sup = torch.zeros((n, n), dtype=torch.bool, device=b.device)
    for s0 in range(0, n, _BLOCK):
        rows = slice(s0, min(n, s0 + _BLOCK))
        v = iou_matrix(b[rows], b, area[rows], area)
        if diou:
            v = v - diou_penalty(b[rows], b, beta)
        m = (v > thr_t) & (cols[None, :] > cols[rows, None])
        if lab is not None:
            m &= lab[rows, None] == lab[None, :]
        sup[rows] = m
    keep = torch.ones(n, dtype=torch.bool, device=b.device)
    while True:
        new = ~(sup & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


def soft_nms(boxes: Tensor, scores: Tensor, labels: Tensor | None, thr: float, sigma: float,
             score_thr: float, linear: bool) -> tuple[Tensor, Tensor]:
    """Soft-NMS, one vectorized decay per selected box. Returns (indices, scores at selection)."""
    n = boxes.shape[0]
    dev = boxes.device
    s = scores.clone()
    area = areas(boxes)
    dt = boxes.dtype
    thr_t = torch.tensor(thr, dtype=dt, device=dev)
    sigma_t = torch.tensor(sigma, dtype=dt, device=dev)
    sthr = torch.tensor(score_thr, dtype=dt, device=dev)
    alive = s > sthr
    neg = torch.tensor(float("-inf"), dtype=dt, device=dev)
    keep: list[Tensor] = []
    kept: list[Tensor] = []
    for _ in range(n):
        masked = torch.where(alive, s, neg)
        i = torch.argmax(masked)
        if not bool(masked[i] > sthr):
            break
        keep.append(i)
        kept.append(s[i])
        alive[i] = False
        iou = iou_matrix(boxes[i : i + 1], boxes, area[i : i + 1], area)[0]
        hit = alive & (iou > 0)
        if labels is not None:
            hit &= labels == labels[i]
        if linear:
            hit &= iou > thr_t
            s = torch.where(hit, s * (1 - iou), s)
        else:
            s = torch.where(hit, s * torch.exp(-(iou * iou) / sigma_t), s)
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=dt, device=dev)
    return torch.stack(keep).to(torch.int64), torch.stack(kept)


def matrix_nms_decay(boxes: Tensor, scores: Tensor, labels: Tensor | None, gaussian: bool,
                     sigma: float, eps: float) -> Tensor:
    """SOLOv2 matrix decay factors in input order (dense ``[N, N]`` formula)."""
    n = boxes.shape[0]
    if n == 0:
        return scores.new_zeros(0)
    order = score_order(scores)
    b = boxes[order]
    area = areas(b)
    iou = iou_matrix(b, b, area, area).triu(1)
    if labels is not None:
        lab = labels[order]
        iou = torch.where(lab[:, None] == lab[None, :], iou, 0)
    comp = iou.max(0).values[:, None]
    dt = b.dtype
    if gaussian:
        sig = torch.tensor(sigma, dtype=dt, device=b.device)
        ratio = torch.exp(-(sig * (iou * iou))) / torch.exp(-(sig * (comp * comp)))
    else:
        ratio = (1 - iou) / (1 - comp).clamp(min=torch.tensor(eps, dtype=dt, device=b.device))
    decay_sorted = ratio.min(0).values
    decay = torch.empty_like(decay_sorted)
    decay[order] = decay_sorted
    return decay


def wbf_clusters(boxes: Tensor, wscores: Tensor, weights: Tensor, models: Tensor, labels: Tensor,
                 iou_thr: float, n_models: int):
    """Twin of ``_kernels.wbf_kernel`` (same inputs and outputs, float64 tensors), one
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

"""Class-aware post-processing used by detectors: threshold, top-k, an NMS variant, max_det."""

from __future__ import annotations

import numpy as np
import torch

from detopt.errors import DetoptInputError
from detopt.ops._array import (
    ArrayLike,
    check_boxes,
    check_threshold,
    check_vector,
    is_tensor,
    to_torch,
)
from detopt.ops.nms import (
    batched_diou_nms,
    batched_nms,
    batched_soft_nms,
    diou_nms,
    matrix_nms,
    nms,
    soft_nms,
)
from detopt.ops.wbf import fuse_clusters
from detopt.structures.detections import Detections

METHODS = ("nms", "soft_nms_gaussian", "soft_nms_linear", "diou_nms", "matrix_nms", "wbf")
_DEFAULT_SIGMA = {"soft_nms_gaussian": 0.5, "soft_nms_linear": 0.5, "matrix_nms": 2.0}


def _candidates(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike | None,
                score_thr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expand to one candidate per (box, class) above ``score_thr``.

    ``scores: [N]`` with ``labels: [N]`` (or None: one class), or ``scores: [N, C]`` with
    ``labels=None`` (multi-label: every class above the threshold is a candidate).
    """
    b = to_torch(check_boxes(boxes))
    n = b.shape[0]
    if getattr(scores, "ndim", 1) == 2:
        if labels is not None:
            raise DetoptInputError("labels: must be None when scores has shape [N, C]")
        s = to_torch(scores if is_tensor(scores) else np.asarray(scores))
        if s.shape[0] != n:
            raise DetoptInputError(f"scores: {s.shape[0]} rows for {n} boxes")
        if not bool(torch.isfinite(s).all()):
            raise DetoptInputError("scores: contains a non-finite value")
        idx, cls = torch.nonzero(s > score_thr, as_tuple=True)
        return b[idx], s[idx, cls], cls.to(torch.int64)
    s = to_torch(check_vector(scores, n, "scores"))
    if labels is None:
        lab = torch.zeros(n, dtype=torch.int64, device=b.device)
    else:
        lab = to_torch(check_vector(labels, n, "labels")).to(torch.int64).to(b.device)
    s = s.to(b.device)
    m = s > score_thr
    return b[m], s[m], lab[m]


def postprocess(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike | None = None, *,
                method: str = "nms", score_thr: float = 0.001, iou_thr: float = 0.6,
                max_det: int = 300, pre_nms_topk: int = 30000, agnostic: bool = False,
                sigma: float | None = None) -> Detections:
    """Turn raw per-image predictions into final detections.

    Args:
        boxes: ``[N, 4]`` absolute xyxy.
        scores: ``[N]`` (with ``labels: [N]``) or ``[N, C]`` per-class scores (multi-label).
        method: one of ``METHODS``: hard ``nms``, ``soft_nms_gaussian``, ``soft_nms_linear``,
            ``diou_nms``, ``matrix_nms`` or ``wbf`` (weighted fusion of each cluster of one
            model's boxes: boxes are averaged, not just selected).
        score_thr: candidates with score ``<= score_thr`` are dropped before suppression; for
            soft and matrix NMS also after decay.
        iou_thr: suppression / clustering IoU threshold (linear soft-NMS threshold).
        max_det: at most this many detections, the highest scores.
        pre_nms_topk: only the top-k candidates by score enter suppression.
        agnostic: suppress across classes (not available for ``wbf``).
        sigma: soft-NMS sigma (default 0.5) or matrix-NMS sigma (default 2.0).

    Returns:
        :class:`Detections` (numpy unless ``boxes`` was a tensor), by decreasing score.
    """
    if method not in METHODS:
        raise DetoptInputError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "wbf" and agnostic:
        raise DetoptInputError("agnostic: wbf fuses boxes per class; agnostic=True is unsupported")
    score_thr = check_threshold(score_thr, "score_thr")
    iou_thr = check_threshold(iou_thr, "iou_thr")
    if int(max_det) < 0 or int(pre_nms_topk) < 0:
        raise DetoptInputError(f"max_det, pre_nms_topk: must be >= 0, got {max_det}, {pre_nms_topk}")
    sig = _DEFAULT_SIGMA.get(method, 0.5) if sigma is None else check_threshold(sigma, "sigma")

    b, s, lab = _candidates(boxes, scores, labels, score_thr)
    if s.shape[0] > pre_nms_topk:
        top = torch.sort(s, descending=True, stable=True).indices[:pre_nms_topk]
        b, s, lab = b[top], s[top], lab[top]
    grouping = None if agnostic else lab

    if method == "nms":
        keep = nms(b, s, iou_thr) if agnostic else batched_nms(b, s, lab, iou_thr)
        b, s, lab = b[keep], s[keep], lab[keep]
    elif method == "diou_nms":
        keep = diou_nms(b, s, iou_thr) if agnostic else batched_diou_nms(b, s, lab, iou_thr)
        b, s, lab = b[keep], s[keep], lab[keep]
    elif method in ("soft_nms_gaussian", "soft_nms_linear"):
        kind = method.rsplit("_", 1)[1]
        if agnostic:
            keep, s = soft_nms(b, s, iou_thr, sig, score_thr, kind)
        else:
            keep, s = batched_soft_nms(b, s, lab, iou_thr, sig, score_thr, kind)
        b, lab = b[keep], lab[keep]
    elif method == "matrix_nms":
        new = matrix_nms(b, s, grouping, "gaussian", sig)
        m = new > score_thr
        b, s, lab = b[m], new[m], lab[m]
        order = torch.sort(s, descending=True, stable=True).indices
        b, s, lab = b[order], s[order], lab[order]
    else:  # wbf
        bn = b.detach().cpu().double().numpy()
        fused, fs, fl = fuse_clusters(
            bn, s.detach().cpu().double().numpy(), lab.cpu().numpy(),
            np.zeros(len(bn), np.int64), np.ones(1), iou_thr, "avg",
            device=b.device if b.device.type != "cpu" else None)
        b = torch.from_numpy(fused).to(b.dtype).to(b.device)
        s = torch.from_numpy(fs).to(s.dtype).to(b.device)
        lab = torch.from_numpy(fl).to(b.device)

    b, s, lab = b[:max_det], s[:max_det], lab[:max_det]
    if is_tensor(boxes):
        return Detections(b, s, lab)
    return Detections(b.numpy(), s.numpy(), lab.numpy())

"""Weighted boxes fusion (Solovyev et al. 2021) with ensemble-boxes' conventions and results.

Boxes are normalized ``[0, 1]`` xyxy, one array per model, exactly what
``ensemble_boxes.weighted_boxes_fusion`` takes, so a user can switch by changing the import.
The clustering runs in a numba kernel with a spatial grid (cost grows with local overlap, not
with N²); CUDA tensors run the torch twin.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from detopt.errors import DetoptInputError
from detopt.ops import _kernels, _torch_paths
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
        out = _torch_paths.wbf_clusters(t(b), t(ws), t(w_each), t(mod), t(lab), float(iou_thr),
                                        n_models)
        fused, conf, cmax, count, wsum, clabel, presence = (x.cpu().numpy() for x in out)
    else:
        fused, conf, cmax, count, wsum, clabel, presence = _kernels.wbf_kernel(
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

"""Class-aware post-processing used by detectors: threshold, top-k, an NMS variant, max_det."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from detopt.constants import IOU_THRESHOLD, MAX_DET, PRE_NMS_TOPK, SCORE_THRESHOLD
from detopt.errors import DetoptInputError
from detopt.ops._array import (
    ArrayLike,
    check_boxes,
    check_threshold,
    check_vector,
    is_tensor,
    to_torch,
)
from detopt.ops.nms import greedy, matrix, soft
from detopt.ops.wbf import fuse_clusters
from detopt.registry import Registry
from detopt.structures.detections import Detections


@dataclass(frozen=True)
class SuppressionMethod:
    """One post-processing method: how it suppresses, and how the tuner and the report show it.

    Attributes:
        suppress: ``(boxes [N, 4], scores [N], labels [N], *, iou_thr, score_thr, sigma, agnostic)
            -> (boxes, scores, labels)`` tensors by decreasing score (candidates above ``score_thr``
            go in; scores may decay).
        label: the name people read (``"soft-NMS linear"``); ``label_agnostic`` when suppressing
            across classes gives another one.
        knob: what the tuner sweeps: ``"iou_thr"`` or ``"sigma"``.
        sweeps: the tuner's groups ``(name, fixed settings, knob values)``.
        default_sigma: ``sigma`` when none is given (methods that use one).
        agnostic: whether class-agnostic suppression is available.
    """

    suppress: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    label: str
    knob: str = "iou_thr"
    sweeps: tuple[tuple[str, dict[str, Any], tuple[float, ...]], ...] = ()
    default_sigma: float = 0.5
    agnostic: bool = True
    label_agnostic: str | None = None

    def display(self, agnostic: bool = False) -> str:
        return self.label_agnostic if agnostic and self.label_agnostic else self.label


METHOD_REGISTRY: Registry[SuppressionMethod] = Registry("post-processing method")
"""Every post-processing method by name: the only list (CLI choices, config, tuner, report)."""


def register_method(
    name: str,
    *,
    label: str,
    knob: str = "iou_thr",
    sweep: tuple[float, ...] = (),
    default_sigma: float = 0.5,
    agnostic: bool = True,
    extra_sweeps: tuple[tuple[str, dict[str, Any], tuple[float, ...]], ...] = (),
    label_agnostic: str | None = None,
    group: str | None = None,
) -> Callable[[Callable], Callable]:
    """Register a suppression function as post-processing method ``name`` (see
    :class:`SuppressionMethod`); ``sweep`` values become the tuner group ``group`` (default
    ``label``), ``extra_sweeps`` more groups."""
    if knob not in ("iou_thr", "sigma"):
        raise ValueError(f"knob must be iou_thr or sigma, got {knob!r}")

    def deco(fn: Callable) -> Callable:
        sweeps = (((group or label, {}, tuple(sweep)),) if sweep else ()) + tuple(extra_sweeps)
        METHOD_REGISTRY.add(
            name, SuppressionMethod(fn, label, knob, sweeps, default_sigma, agnostic, label_agnostic)
        )
        return fn

    return deco


class _Names(Sequence):
    """The registered method names, read live (a method registered later is in it)."""

    def __getitem__(self, i):  # type: ignore[override]
        return METHOD_REGISTRY.names()[i]

    def __len__(self) -> int:
        return len(METHOD_REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in METHOD_REGISTRY

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return repr(METHOD_REGISTRY.names())


METHODS: Sequence[str] = _Names()
"""Names of every registered method (live view of :data:`METHOD_REGISTRY`)."""


@register_method("nms", label="hard NMS, per class", label_agnostic="hard NMS, class-agnostic",
                 sweep=(0.5, 0.6, 0.65, 0.7, 0.75, 0.8),
                 extra_sweeps=(("hard NMS, class-agnostic", {"agnostic": True}, (0.5, 0.6, 0.7, 0.8)),))
def _hard_nms(b, s, lab, *, iou_thr, score_thr, sigma, agnostic):
    keep = greedy.nms(b, s, iou_thr) if agnostic else greedy.batched_nms(b, s, lab, iou_thr)
    return b[keep], s[keep], lab[keep]


def _soft(kind: str):
    def suppress(b, s, lab, *, iou_thr, score_thr, sigma, agnostic):
        if agnostic:
            keep, s = soft.soft_nms(b, s, iou_thr, sigma, score_thr, kind)
        else:
            keep, s = soft.batched_soft_nms(b, s, lab, iou_thr, sigma, score_thr, kind)
        return b[keep], s, lab[keep]

    return suppress


register_method("soft_nms_linear", label="soft-NMS linear", sweep=(0.3, 0.5, 0.7))(_soft("linear"))
register_method("soft_nms_gaussian", label="soft-NMS gaussian", knob="sigma", sweep=(0.1, 0.3, 0.5, 1.0))(
    _soft("gaussian")
)


@register_method("diou_nms", label="DIoU-NMS", sweep=(0.5, 0.6, 0.7, 0.8))
def _diou_nms(b, s, lab, *, iou_thr, score_thr, sigma, agnostic):
    keep = greedy.diou_nms(b, s, iou_thr) if agnostic else greedy.batched_diou_nms(b, s, lab, iou_thr)
    return b[keep], s[keep], lab[keep]


@register_method("matrix_nms", label="matrix NMS (gaussian)", group="matrix NMS", knob="sigma",
                 sweep=(0.5, 1.0, 2.0, 4.0), default_sigma=2.0)
def _matrix_nms(b, s, lab, *, iou_thr, score_thr, sigma, agnostic):
    new = matrix.matrix_nms(b, s, None if agnostic else lab, "gaussian", sigma)
    m = new > score_thr
    b, s, lab = b[m], new[m], lab[m]
    order = torch.sort(s, descending=True, stable=True).indices
    return b[order], s[order], lab[order]


@register_method("wbf", label="WBF-style merge", sweep=(0.55, 0.65, 0.75), agnostic=False)
def _wbf(b, s, lab, *, iou_thr, score_thr, sigma, agnostic):
    bn = b.detach().cpu().double().numpy()
    fused, fs, fl = fuse_clusters(
        bn, s.detach().cpu().double().numpy(), lab.cpu().numpy(),
        np.zeros(len(bn), np.int64), np.ones(1), iou_thr, "avg",
        device=b.device if b.device.type != "cpu" else None)
    return (torch.from_numpy(fused).to(b.dtype).to(b.device), torch.from_numpy(fs).to(s.dtype).to(b.device),
            torch.from_numpy(fl).to(b.device))


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
                method: str = "nms", score_thr: float = SCORE_THRESHOLD,
                iou_thr: float = IOU_THRESHOLD, max_det: int = MAX_DET,
                pre_nms_topk: int = PRE_NMS_TOPK, agnostic: bool = False,
                sigma: float | None = None) -> Detections:
    """Turn raw per-image predictions into final detections.

    Args:
        boxes: ``[N, 4]`` absolute xyxy.
        scores: ``[N]`` (with ``labels: [N]``) or ``[N, C]`` per-class scores (multi-label).
        method: a name of :data:`METHOD_REGISTRY`: hard ``nms``, ``soft_nms_linear``,
            ``soft_nms_gaussian``, ``diou_nms``, ``matrix_nms`` or ``wbf`` (weighted fusion of each
            cluster of one model's boxes: boxes are averaged, not just selected), or any method
            registered with :func:`register_method`.
        score_thr: candidates with score ``<= score_thr`` are dropped before suppression; for
            soft and matrix NMS also after decay.
        iou_thr: suppression / clustering IoU threshold (linear soft-NMS threshold).
        max_det: at most this many detections, the highest scores.
        pre_nms_topk: only the top-k candidates by score enter suppression.
        agnostic: suppress across classes (not available for ``wbf``).
        sigma: soft-NMS sigma (default 0.5) or matrix-NMS sigma (default 2.0): the method's
            ``default_sigma``.

    Returns:
        :class:`Detections` (numpy unless ``boxes`` was a tensor), by decreasing score.
    """
    m = METHOD_REGISTRY.get(method, "method")
    if agnostic and not m.agnostic:
        raise DetoptInputError(f"agnostic: {method} works per class; agnostic=True is unsupported")
    score_thr = check_threshold(score_thr, "score_thr")
    iou_thr = check_threshold(iou_thr, "iou_thr")
    if int(max_det) < 0 or int(pre_nms_topk) < 0:
        raise DetoptInputError(f"max_det, pre_nms_topk: must be >= 0, got {max_det}, {pre_nms_topk}")
    sig = m.default_sigma if sigma is None else check_threshold(sigma, "sigma")

    b, s, lab = _candidates(boxes, scores, labels, score_thr)
    if s.shape[0] > pre_nms_topk:
        top = torch.sort(s, descending=True, stable=True).indices[:pre_nms_topk]
        b, s, lab = b[top], s[top], lab[top]
    b, s, lab = m.suppress(b, s, lab, iou_thr=iou_thr, score_thr=score_thr, sigma=sig, agnostic=agnostic)

    b, s, lab = b[:max_det], s[:max_det], lab[:max_det]
    if is_tensor(boxes):
        return Detections(b, s, lab)
    return Detections(b.numpy(), s.numpy(), lab.numpy())

"""Box conversion, area, clipping and the pairwise IoU family.

Conventions (DESIGN.md): absolute ``xyxy`` boxes, continuous coordinates (``(x2-x1)*(y2-y1)``,
no ``+1``). A box with ``x2 < x1`` or ``y2 < y1`` has zero width/height (widths are clamped at
0), so degenerate boxes have area 0 and IoU 0 with everything, never NaN. numpy in gives numpy
out, torch in gives torch out (same device); float64 stays float64, everything else is computed
in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detopt.errors import DetoptInputError
from detopt.ops._array import ArrayLike, check_boxes, is_tensor, to_torch

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_float_tensor(x: ArrayLike) -> Tensor:
    t = to_torch(x)
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    return t


def _back(t: Tensor, ref: ArrayLike) -> ArrayLike:
    return t if is_tensor(ref) else t.numpy()


def box_convert(boxes: ArrayLike, in_fmt: str, out_fmt: str) -> ArrayLike:
    """Convert ``boxes: [N, 4]`` between ``xyxy``, ``xywh`` (top-left + size) and ``cxcywh``."""
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise DetoptInputError(f"{name}: unknown box format {fmt!r}; expected one of {_FORMATS}")
    boxes = check_boxes(boxes)
    t = _as_float_tensor(boxes)
    if in_fmt == out_fmt:
        return _back(t.clone(), boxes)
    a, b, c, d = t.unbind(-1)
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xyxy":
        out = torch.stack((x1, y1, x2, y2), -1)
    elif out_fmt == "xywh":
        out = torch.stack((x1, y1, x2 - x1, y2 - y1), -1)
    else:
        out = torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), -1)
    return _back(out, boxes)


def _wh(t: Tensor) -> tuple[Tensor, Tensor]:
    return (t[:, 2] - t[:, 0]).clamp(min=0), (t[:, 3] - t[:, 1]).clamp(min=0)


def box_area(boxes: ArrayLike) -> ArrayLike:
    """Area of ``boxes: [N, 4] xyxy`` -> ``[N]``; inverted boxes have area 0."""
    boxes = check_boxes(boxes)
    t = _as_float_tensor(boxes)
    w, h = _wh(t)
    return _back(w * h, boxes)


def clip_boxes(boxes: ArrayLike, size: tuple[int, int]) -> ArrayLike:
    """Clip ``boxes: [N, 4] xyxy`` to an image of ``size = (height, width)``."""
    if len(size) != 2 or min(size) < 0:
        raise DetoptInputError(f"size: expected (height, width) >= 0, got {size!r}")
    boxes = check_boxes(boxes)
    t = _as_float_tensor(boxes)
    h, w = float(size[0]), float(size[1])
    out = torch.stack(
        (t[:, 0].clamp(0, w), t[:, 1].clamp(0, h), t[:, 2].clamp(0, w), t[:, 3].clamp(0, h)), -1
    )
    return _back(out, boxes)


def _pair(boxes1: ArrayLike, boxes2: ArrayLike) -> tuple[Tensor, Tensor]:
    boxes1 = check_boxes(boxes1, "boxes1")
    boxes2 = check_boxes(boxes2, "boxes2")
    if is_tensor(boxes1) != is_tensor(boxes2):
        raise DetoptInputError("boxes1 and boxes2 must both be numpy arrays or both torch tensors")
    a, b = _as_float_tensor(boxes1), _as_float_tensor(boxes2)
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    return a, b


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pairwise intersection, union and IoU of ``a: [N, 4]`` and ``b: [M, 4]`` -> ``[N, M]`` each."""
    wa, ha = _wh(a)
    wb, hb = _wh(b)
    area_a, area_b = wa * ha, wb * hb
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0]))
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1]))
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)
    return inter, union, iou


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), 0)


def _enclosing(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing each pair -> ``[N, M]`` each."""
    ew = torch.maximum(a[:, None, 2], b[None, :, 2]) - torch.minimum(a[:, None, 0], b[None, :, 0])
    eh = torch.maximum(a[:, None, 3], b[None, :, 3]) - torch.minimum(a[:, None, 1], b[None, :, 1])
    return ew.clamp(min=0), eh.clamp(min=0)


def _center_distance_ratio(a: Tensor, b: Tensor) -> Tensor:
    """``d² / c²``: squared centre distance over squared enclosing diagonal (0 when c = 0)."""
    ew, eh = _enclosing(a, b)
    c2 = ew * ew + eh * eh
    dx = (a[:, None, 0] + a[:, None, 2]) * 0.5 - (b[None, :, 0] + b[None, :, 2]) * 0.5
    dy = (a[:, None, 1] + a[:, None, 3]) * 0.5 - (b[None, :, 1] + b[None, :, 3]) * 0.5
    return _safe_div(dx * dx + dy * dy, c2)


def box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> ArrayLike:
    """IoU of every pair: ``boxes1: [N, 4] xyxy``, ``boxes2: [M, 4] xyxy`` -> ``[N, M]``."""
    a, b = _pair(boxes1, boxes2)
    return _back(_inter_union(a, b)[2], boxes1)


def generalized_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> ArrayLike:
    """GIoU (Rezatofighi et al. 2019): ``IoU - (C - U) / C`` -> ``[N, M]`` in ``[-1, 1]``.

    ``C`` is the enclosing box area; where ``C = 0`` (both boxes degenerate) GIoU is 0.
    """
    a, b = _pair(boxes1, boxes2)
    _, union, iou = _inter_union(a, b)
    ew, eh = _enclosing(a, b)
    c = ew * eh
    return _back(iou - _safe_div(c - union, c), boxes1)


def distance_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> ArrayLike:
    """DIoU (Zheng et al. 2020): ``IoU - d² / c²`` -> ``[N, M]``; penalty 0 where ``c = 0``."""
    a, b = _pair(boxes1, boxes2)
    iou = _inter_union(a, b)[2]
    return _back(iou - _center_distance_ratio(a, b), boxes1)


def complete_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> ArrayLike:
    """CIoU (Zheng et al. 2020): ``IoU - d² / c² - α v`` -> ``[N, M]``.

    ``v = 4/π² (atan(w₂/h₂) - atan(w₁/h₁))²`` computed with ``atan2(w, h)`` so zero heights stay
    finite, ``α = v / (1 - IoU + v)`` (0 where the denominator is 0). No epsilon is added.
    """
    a, b = _pair(boxes1, boxes2)
    iou = _inter_union(a, b)[2]
    wa, ha = _wh(a)
    wb, hb = _wh(b)
    diff = torch.atan2(wb, hb)[None, :] - torch.atan2(wa, ha)[:, None]
    v = (4.0 / (math.pi**2)) * diff * diff
    alpha = _safe_div(v, 1 - iou + v)
    return _back(iou - _center_distance_ratio(a, b) - alpha * v, boxes1)

"""Box conversion, area, clipping and the pairwise IoU family.

Conventions (docs/architecture.md): absolute ``xyxy`` boxes, continuous coordinates (``(x2-x1)*(y2-y1)``,
no ``+1``). A box with ``x2 < x1`` or ``y2 < y1`` has zero width/height (widths are clamped at
0), so degenerate boxes have area 0 and IoU 0 with everything, never NaN. numpy in gives numpy
out, torch in gives torch out (same device); float64 stays float64, everything else is computed
in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detopt.errors import DetoptInputError
from detopt.ops import iou_terms as terms
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


def box_area(boxes: ArrayLike) -> ArrayLike:
    """Area of ``boxes: [N, 4] xyxy`` -> ``[N]``; inverted boxes have area 0."""
    boxes = check_boxes(boxes)
    t = _as_float_tensor(boxes)
    w, h = terms.box_wh(t)
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
    return terms.inter_union_iou(a[:, None], b[None])


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
    return _back(iou - terms.giou_penalty(a[:, None], b[None], union), boxes1)


def distance_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> ArrayLike:
    """DIoU (Zheng et al. 2020): ``IoU - d² / c²`` -> ``[N, M]``; penalty 0 where ``c = 0``."""
    a, b = _pair(boxes1, boxes2)
    iou = _inter_union(a, b)[2]
    return _back(iou - terms.center_distance_ratio(a[:, None], b[None]), boxes1)


def complete_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> ArrayLike:
    """CIoU (Zheng et al. 2020): ``IoU - d² / c² - α v`` -> ``[N, M]``.

    ``v = 4/π² (atan(w₂/h₂) - atan(w₁/h₁))²`` computed with ``atan2(w, h)`` so zero heights stay
    finite, ``α = v / (1 - IoU + v)`` (0 where the denominator is 0). No epsilon is added.
    """
    a, b = _pair(boxes1, boxes2)
    iou = _inter_union(a, b)[2]
    a, b = a[:, None], b[None]
    v = terms.aspect_term(a, b)
    return _back(iou - terms.center_distance_ratio(a, b) - terms.ciou_alpha(iou, v) * v, boxes1)

"""Decoupled anchor-free head with DFL box regression (YOLOv8 / GFL style), and its decoding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detopt.anchors import Anchors, anchor_points
from detopt.errors import DetoptInputError
from detopt.models.layers import Conv


class DecoupledHead(nn.Module):
    """Separate box and class branches per level (two 3×3 convs each, then a 1×1 prediction).

    Args:
        in_channels: channels of each input level.
        num_classes: ``C``.
        strides: stride of each level (used for the prior of the class bias only).
        reg_max: bins of the distance distribution (``R``); each side's distance is
            ``Σ softmax(logits)·[0 .. R-1]`` in stride units.
        box_channels, cls_channels: widths of the two branches.
        imgsz: the nominal input size of the class-bias prior.

    ``forward``: ``[B, c_l, H_l, W_l]`` per level -> ``[B, 4·R + C, H_l, W_l]`` per level: box
    distribution logits (side-major: l, t, r, b), then class logits.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int],
        reg_max: int = 16,
        box_channels: int = 64,
        cls_channels: int = 64,
        imgsz: int = 640,
    ) -> None:
        super().__init__()
        if num_classes < 1 or reg_max < 2:
            raise DetoptInputError(f"need num_classes >= 1 and reg_max >= 2, got {num_classes}, {reg_max}")
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(int(s) for s in strides)
        self.box = nn.ModuleList(
            nn.Sequential(
                Conv(c, box_channels, 3),
                Conv(box_channels, box_channels, 3),
                nn.Conv2d(box_channels, 4 * reg_max, 1),
            )
            for c in in_channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(
                Conv(c, cls_channels, 3),
                Conv(cls_channels, cls_channels, 3),
                nn.Conv2d(cls_channels, num_classes, 1),
            )
            for c in in_channels
        )
        self.reset_bias(imgsz)

    @torch.no_grad()
    def reset_bias(self, imgsz: int = 640) -> None:
        """Class bias: the prior probability of about 5 objects over ``C`` classes per image of
        ``imgsz`` (the RetinaNet / YOLOv8 prior).

        Box bias: ``-ln(2)·bin``, a geometric distribution whose mean is about 1 bin, so every
        location starts predicting a box about 2 strides wide (16 px at stride 8), the size its
        level is meant for. Named deviation: YOLOv8 sets 1.0 everywhere (uniform, 7.5 strides
        per side: a 120 px box at stride 8), whose IoU with a small object is ~0.01; TAL weights
        the box loss by an IoU power, so small objects then get almost no box gradient early on.
        """
        bins = torch.arange(self.reg_max, dtype=torch.float32)
        for box, cls, s in zip(self.box, self.cls, self.strides, strict=True):
            box[-1].bias.copy_((-math.log(2.0) * bins).repeat(4))
            cls[-1].bias.fill_(math.log(5 / self.num_classes / (imgsz / s) ** 2))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [torch.cat((b(x), c(x)), 1) for x, b, c in zip(feats, self.box, self.cls, strict=True)]


class DecodedOutputs(NamedTuple):
    """Every location of every level, flattened (level-major, then row-major).

    Attributes:
        box_logits: ``[B, A, 4, R]`` distance-distribution logits (l, t, r, b).
        cls_logits: ``[B, A, C]``.
        boxes: ``[B, A, 4]`` xyxy in input pixels.
        anchors: the location of every prediction (``anchors.points`` the cell centres).
    """

    box_logits: Tensor
    cls_logits: Tensor
    boxes: Tensor
    anchors: Anchors


def dfl_expectation(box_logits: Tensor) -> Tensor:
    """``[..., R]`` logits -> ``[...]`` expected bin ``Σ softmax·[0 .. R-1]``."""
    r = box_logits.shape[-1]
    proj = torch.arange(r, dtype=box_logits.dtype, device=box_logits.device)
    p = box_logits.softmax(-1)
    # one [N, R] x [R, 1] product: ONNX Runtime runs the [..., R] @ [R] form (which the exporter
    # also makes of a 2-D [N, R] @ [R]) 8x slower -- 0.5-0.8 of 6.9 ms for yolo-n at 320 px, 2 threads
    return (p.reshape(-1, r) @ proj[:, None]).reshape(p.shape[:-1])


def decode_outputs(outputs: Sequence[Tensor], strides: Sequence[int], reg_max: int) -> DecodedOutputs:
    """Flatten the head's per-level outputs and decode the boxes.

    ``outputs``: ``[B, 4·R + C, H_l, W_l]`` per level. Box ``= point ∓ distance · stride``.
    """
    if len(outputs) != len(strides):
        raise DetoptInputError(f"{len(outputs)} output levels for {len(strides)} strides")
    b, ch = outputs[0].shape[:2]
    c = ch - 4 * reg_max
    if c < 1:
        raise DetoptInputError(f"outputs have {ch} channels: fewer than 4·reg_max + 1 = {4 * reg_max + 1}")
    flat = torch.cat([o.flatten(2) for o in outputs], 2).transpose(1, 2)  # [B, A, 4R + C]
    box_logits = flat[..., : 4 * reg_max].reshape(b, -1, 4, reg_max)
    cls_logits = flat[..., 4 * reg_max :]
    shapes = [tuple(o.shape[-2:]) for o in outputs]
    anchors = anchor_points(shapes, strides, dtype=flat.dtype, device=flat.device)
    dist = dfl_expectation(box_logits) * anchors.strides[None, :, None]  # [B, A, 4]
    pts = anchors.points[None]
    boxes = torch.cat((pts - dist[..., :2], pts + dist[..., 2:]), -1)
    return DecodedOutputs(box_logits, cls_logits, boxes, anchors)

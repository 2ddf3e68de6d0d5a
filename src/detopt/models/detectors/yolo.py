"""Anchor-free YOLO-style detector: CSP-Darknet (C2f) backbone, PAN-FPN neck, decoupled DFL head."""

from __future__ import annotations

from collections.abc import Sequence

import torch.fx
from torch import Tensor, nn

from detopt.errors import DetoptInputError
from detopt.models.backbones import CSPDarknet
from detopt.models.heads import DecoupledHead
from detopt.models.necks import PANFPN


def check_images(images: Tensor) -> Tensor:
    """``images`` if it is ``[B, 3, H, W]``, else a one-line error. A leaf for ``torch.fx``
    tracing (the channel tracer of structured pruning), which cannot branch on shapes."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise DetoptInputError(f"images: expected [B, 3, H, W], got {tuple(images.shape)}")
    return images


torch.fx.wrap("check_images")


class YOLODetector(nn.Module):
    """Images in, raw head outputs out (the same in train and eval mode; no loss, no NMS).

    Args:
        num_classes: ``C``.
        channels: stem and stage widths of the backbone (5 values).
        depths: C2f repeats of the backbone stages (4 values).
        neck_depth: C2f repeats in the neck.
        head_channels: ``(box, cls)`` branch widths.
        p2: also predict at stride 4 (small objects).
        reg_max: DFL bins ``R``.
        imgsz: nominal input size (the class-bias prior).

    ``forward``: ``images float [B, 3, H, W]`` RGB in ``[0, 1]`` (``H, W`` multiples of 32) ->
    ``[B, 4·R + C, H/s, W/s]`` for each ``s`` of ``self.strides`` (8, 16, 32, or 4, 8, 16, 32).
    """

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int],
        depths: Sequence[int],
        neck_depth: int,
        head_channels: tuple[int, int],
        p2: bool = False,
        reg_max: int = 16,
        imgsz: int = 640,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise DetoptInputError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.reg_max = int(reg_max)
        self.p2 = bool(p2)
        self.backbone = CSPDarknet(channels, depths)
        first = 0 if p2 else 1
        self.levels = tuple(range(first, 4))
        self.strides = tuple(CSPDarknet.strides[i] for i in self.levels)
        level_ch = [self.backbone.out_channels[i] for i in self.levels]
        self.neck = PANFPN(level_ch, level_ch, neck_depth)
        self.head = DecoupledHead(
            level_ch, num_classes, self.strides, reg_max, *head_channels, imgsz=imgsz
        )

    @property
    def max_stride(self) -> int:
        return self.strides[-1]

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.backbone(check_images(images))
        return self.head(self.neck([feats[i] for i in self.levels]))

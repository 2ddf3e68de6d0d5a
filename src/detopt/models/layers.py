"""Building blocks of YOLO-style CNNs: conv-BN-SiLU, bottleneck, C2f (CSP with 2 convs), SPPF."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def make_divisible(x: float, divisor: int = 8) -> int:
    """``x`` rounded up to a multiple of ``divisor`` (channel counts stay SIMD-friendly)."""
    return max(divisor, int(math.ceil(x / divisor) * divisor))


class Conv(nn.Module):
    """``Conv2d(k, s, padding k//2, no bias) → BatchNorm2d → SiLU``:
    ``[B, c_in, H, W] -> [B, c_out, H/s, W/s]``."""

    def __init__(
        self, c_in: int, c_out: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3×3 convs with an optional residual: ``[B, c, H, W] -> [B, c, H, W]``."""

    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two convs (YOLOv8): split, ``n`` bottlenecks on one half, concatenate every
    intermediate output, fuse with a 1×1 conv. ``[B, c_in, H, W] -> [B, c_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))
        self.split = (self.c, self.c)  # widths of cv1's two parts (unequal once pruned)

    def forward(self, x: Tensor) -> Tensor:
        t = self.cv1(x)
        a = self.split[0]
        y = [t[:, :a], t[:, a:]]  # slices, not chunk(2): traceable, and any two widths
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))

    def resplit(self, kept: list[int]) -> None:
        """After structured pruning: ``kept`` are the indices of cv1's output channels that stay."""
        a = sum(1 for k in kept if k < self.split[0])
        self.split = (a, len(kept) - a)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained ``k×k`` max-pools concatenated.
    ``[B, c_in, H, W] -> [B, c_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        c = c_in // 2
        self.cv1 = Conv(c_in, c, 1)
        self.cv2 = Conv(c * 4, c_out, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))

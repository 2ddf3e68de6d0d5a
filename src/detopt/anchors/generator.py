"""Anchors and anchor points laid out over the feature maps of a detector's levels.

Layout (both generators): level-major, then row-major over the feature map (y, then x), then
the anchors of one location. That is the order of a head output ``[B, n·C, H, W]`` reshaped to
``[B, C, H·W·n]`` after ``permute(0, 2, 3, 1)`` and concatenated over levels, so index ``a`` of
:class:`Anchors` is the prediction at flattened position ``a``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detopt.errors import DetoptInputError


@dataclass(frozen=True)
class Anchors:
    """Every anchor of every level, flattened.

    Attributes:
        boxes: ``[A, 4]`` xyxy anchor boxes in input pixels (for anchor-free heads: the cell
            box ``point ± cell_size·stride/2``).
        strides: ``[A]`` the stride of each anchor's level.
        level_sizes: number of anchors per level, in level order (sums to ``A``).
    """

    boxes: Tensor
    strides: Tensor
    level_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        a = self.boxes.shape[0]
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise DetoptInputError(f"Anchors.boxes: expected [A, 4], got {tuple(self.boxes.shape)}")
        if self.strides.shape != (a,):
            raise DetoptInputError(f"Anchors.strides: expected [{a}], got {tuple(self.strides.shape)}")
        if sum(self.level_sizes) != a:
            raise DetoptInputError(f"Anchors.level_sizes sum to {sum(self.level_sizes)}, not {a}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def points(self) -> Tensor:
        """``[A, 2]`` anchor centres ``(x, y)``."""
        return (self.boxes[:, :2] + self.boxes[:, 2:]) * 0.5

    def to(self, device: torch.device | str) -> Anchors:
        return Anchors(self.boxes.to(device), self.strides.to(device), self.level_sizes)


def feature_shapes(imgsz: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map ``(H, W)`` per level for an input of ``imgsz = (height, width)``.

    ``ceil(size / stride)``, the output size of stride-2 convolutions with ``padding = k // 2``.
    """
    h, w = imgsz
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def _check_levels(shapes: Sequence[tuple[int, int]], strides: Sequence[int]) -> None:
    if len(shapes) != len(strides):
        raise DetoptInputError(f"{len(shapes)} feature shapes for {len(strides)} strides")
    if any(s <= 0 for s in strides):
        raise DetoptInputError(f"strides must be positive, got {list(strides)}")


def _grid_centres(h: int, w: int, stride: float, offset: float, dtype: torch.dtype, device) -> Tensor:
    """``[h·w, 2]`` centres ``((x + offset)·stride, (y + offset)·stride)``, row-major."""
    ys = (torch.arange(h, dtype=dtype, device=device) + offset) * stride
    xs = (torch.arange(w, dtype=dtype, device=device) + offset) * stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), -1)


class AnchorGenerator:
    """Anchor boxes of several sizes and aspect ratios at every location of every level.

    Args:
        sizes: per level, the anchor sizes (square-root of the area) in input pixels, e.g.
            ``[[32], [64], [128]]`` or RetinaNet's ``[[32, 40, 50], ...]``.
        ratios: aspect ratios ``h / w`` used at every size (``w = s / √r``, ``h = s·√r``).
        strides: the stride of each level.
        offset: centre of cell ``(x, y)`` is ``((x + offset)·stride, (y + offset)·stride)``.

    Use :meth:`from_wh` for explicit ``(w, h)`` anchors per level (the output of
    :func:`detopt.anchors.kmeans_anchors`).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        strides: Sequence[int] = (8, 16, 32),
        offset: float = 0.5,
    ) -> None:
        if len(sizes) != len(strides):
            raise DetoptInputError(f"{len(sizes)} levels of sizes for {len(strides)} strides")
        if not ratios or any(r <= 0 for r in ratios):
            raise DetoptInputError(f"ratios must be positive, got {list(ratios)}")
        wh = []
        for level in sizes:
            if not level or any(s <= 0 for s in level):
                raise DetoptInputError(f"anchor sizes must be positive, got {list(level)}")
            wh.append([(s / math.sqrt(r), s * math.sqrt(r)) for s in level for r in ratios])
        self._init_wh(wh, strides, offset)

    def _init_wh(self, wh: Sequence[Sequence[tuple[float, float]]], strides: Sequence[int], offset: float):
        _check_levels([(0, 0)] * len(wh), strides)
        self.base_wh = [torch.tensor(level, dtype=torch.float64).reshape(-1, 2) for level in wh]
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)

    @classmethod
    def from_wh(
        cls, wh: Sequence[Sequence[tuple[float, float]]], strides: Sequence[int], offset: float = 0.5
    ) -> AnchorGenerator:
        """Explicit anchors: ``wh[level] = [(w, h), ...]`` in input pixels."""
        if len(wh) != len(strides):
            raise DetoptInputError(f"{len(wh)} levels of anchors for {len(strides)} strides")
        for level in wh:
            if not len(level) or any(len(p) != 2 or min(p) <= 0 for p in level):
                raise DetoptInputError(f"anchor (w, h) must be positive pairs, got {level!r}")
        self = cls.__new__(cls)
        self._init_wh(wh, strides, offset)
        return self

    @property
    def num_anchors(self) -> list[int]:
        """Anchors per location, per level."""
        return [len(b) for b in self.base_wh]

    def __call__(
        self,
        shapes: Sequence[tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Anchors:
        """Anchors for feature maps of ``shapes = [(H, W), ...]`` (one per level)."""
        _check_levels(shapes, self.strides)
        boxes, strides, sizes = [], [], []
        for (h, w), s, base in zip(shapes, self.strides, self.base_wh, strict=True):
            c = _grid_centres(h, w, s, self.offset, dtype, device)  # [HW, 2]
            half = base.to(dtype=dtype, device=device) * 0.5  # [n, 2]
            b = torch.cat((c[:, None] - half[None], c[:, None] + half[None]), -1).reshape(-1, 4)
            boxes.append(b)
            strides.append(torch.full((len(b),), float(s), dtype=dtype, device=device))
            sizes.append(len(b))
        return Anchors(torch.cat(boxes), torch.cat(strides), tuple(sizes))


def anchor_points(
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    offset: float = 0.5,
    cell_size: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Anchors:
    """One anchor point per location, for anchor-free heads.

    The box of each point is ``point ± cell_size·stride/2``: ``cell_size = 1`` is the grid cell,
    ``cell_size = 5`` the anchor box ATSS uses for anchor-free heads (PP-YOLOE, YOLOv6).
    """
    _check_levels(shapes, strides)
    if cell_size <= 0:
        raise DetoptInputError(f"cell_size must be positive, got {cell_size}")
    boxes, out_strides, sizes = [], [], []
    for (h, w), s in zip(shapes, strides, strict=True):
        c = _grid_centres(h, w, s, offset, dtype, device)
        half = cell_size * s * 0.5
        boxes.append(torch.cat((c - half, c + half), -1))
        n = c.shape[0]  # not len(c): a symbolic size under torch.export stays symbolic
        out_strides.append(torch.full((n,), float(s), dtype=dtype, device=device))
        sizes.append(n)
    return Anchors(torch.cat(boxes), torch.cat(out_strides), tuple(sizes))

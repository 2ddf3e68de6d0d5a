"""Multi-scale training: a random input size per batch, a multiple of the model's largest stride."""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from detopt.errors import DetoptInputError


def random_train_size(
    rng: np.random.Generator, base: int, stride: int = 32, scale: tuple[float, float] = (0.5, 1.5)
) -> int:
    """A size drawn uniformly from the multiples of ``stride`` in ``[base·scale[0], base·scale[1]]``
    (at least one stride)."""
    if stride < 1 or base < 1 or not 0 < scale[0] <= scale[1]:
        raise DetoptInputError(
            f"need base, stride >= 1 and 0 < scale[0] <= scale[1], got {base}, {stride}, {scale}"
        )
    lo = max(1, math.ceil(base * scale[0] / stride))
    hi = max(lo, math.floor(base * scale[1] / stride))
    return int(rng.integers(lo, hi + 1)) * stride


def resize_batch(images: Tensor, boxes: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``images [B, C, S, S]`` resized to ``size`` (bilinear, float out; uint8 in is converted) and
    ``boxes [N, 4]`` xyxy (any number, all in that batch's pixel units) scaled with them."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise DetoptInputError(f"images: expected [B, C, S, S], got {tuple(images.shape)}")
    s = images.shape[-1]
    imgs = images if images.is_floating_point() else images.float()
    if size == s:
        return imgs, boxes
    out = F.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False, antialias=size < s)
    if not images.is_floating_point():
        out = out.clamp(0, 255)
    return out, boxes * (size / s)


__all__ = ["random_train_size", "resize_batch"]

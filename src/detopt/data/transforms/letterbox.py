"""Letterbox: resize keeping the aspect ratio, pad to the target size, map boxes the same way."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detopt.constants import PAD_VALUE


@dataclass(frozen=True)
class LetterboxMeta:
    """How an image was letterboxed: ``x' = x * scale_x + pad_x`` (same for y).

    ``scale_x``/``scale_y`` are the exact ratios of the resized to the original size (they differ
    from the nominal scale by the rounding of the resized size), so boxes land on the pixels.
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    resized_w: int
    resized_h: int


def letterbox_meta(
    height: int, width: int, size: int | tuple[int, int], scaleup: bool = True
) -> LetterboxMeta:
    """The resize and padding that fit a ``height x width`` image into ``size`` (``int`` or ``(H, W)``),
    centred. Without ``scaleup`` small images are only padded."""
    th, tw = (size, size) if isinstance(size, int) else size
    if height <= 0 or width <= 0 or th <= 0 or tw <= 0:
        raise ValueError(f"sizes must be positive: image {height}x{width}, target {th}x{tw}")
    r = min(th / height, tw / width)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = max(1, min(tw, round(width * r))), max(1, min(th, round(height * r)))
    return LetterboxMeta(
        scale_x=nw / width,
        scale_y=nh / height,
        pad_x=(tw - nw) // 2,
        pad_y=(th - nh) // 2,
        resized_w=nw,
        resized_h=nh,
    )


def resize_to_meta(img: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """``img`` ``[h, w, C]`` resized to ``meta``'s ``[resized_h, resized_w, C]`` (area filter when
    shrinking, bilinear when enlarging); returned as is when it already has that size."""
    h, w = img.shape[:2]
    if (meta.resized_w, meta.resized_h) == (w, h):
        return img
    interp = cv2.INTER_AREA if meta.resized_w < w else cv2.INTER_LINEAR
    return cv2.resize(img, (meta.resized_w, meta.resized_h), interpolation=interp)


def letterbox_image(
    img: np.ndarray, size: int | tuple[int, int], meta: LetterboxMeta, pad_value: int = PAD_VALUE
) -> np.ndarray:
    """``img`` ``uint8 [h, w, C]`` resized and padded to ``[H, W, C]`` as ``meta`` says."""
    th, tw = (size, size) if isinstance(size, int) else size
    img = resize_to_meta(img, meta)
    if img.ndim == 2:
        img = img[..., None]
    out = np.full((th, tw, img.shape[2]), pad_value, dtype=img.dtype)
    out[meta.pad_y : meta.pad_y + meta.resized_h, meta.pad_x : meta.pad_x + meta.resized_w] = img
    return out


def letterbox_boxes(boxes: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """``boxes`` ``[N, 4]`` xyxy in the original image → the letterboxed image (float32)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.array([meta.scale_x, meta.scale_y, meta.scale_x, meta.scale_y])
    p = np.array([meta.pad_x, meta.pad_y, meta.pad_x, meta.pad_y], np.float64)
    return (b * s + p).astype(np.float32)


def unletterbox_boxes(boxes: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Inverse of :func:`letterbox_boxes`: letterboxed-image boxes ``[N, 4]`` → original image."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.array([meta.scale_x, meta.scale_y, meta.scale_x, meta.scale_y])
    p = np.array([meta.pad_x, meta.pad_y, meta.pad_x, meta.pad_y], np.float64)
    return ((b - p) / s).astype(np.float32)


def letterbox(
    img: np.ndarray,
    boxes: np.ndarray,
    size: int | tuple[int, int],
    pad_value: int = PAD_VALUE,
    scaleup: bool = True,
) -> tuple[np.ndarray, np.ndarray, LetterboxMeta]:
    """Letterbox an image ``uint8 [h, w, C]`` and its boxes ``[N, 4]`` xyxy to ``size``.

    Returns:
        (image ``[H, W, C]``, boxes ``float32 [N, 4]`` in it, the :class:`LetterboxMeta`).
    """
    meta = letterbox_meta(img.shape[0], img.shape[1], size, scaleup=scaleup)
    return letterbox_image(img, size, meta, pad_value), letterbox_boxes(boxes, meta), meta

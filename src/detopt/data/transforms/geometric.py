"""Geometric transforms: flips, affine/perspective warps, random resized crop.

Pure functions ``(sample, ...) -> sample``; random ones take a ``numpy.random.Generator``.
Coordinates are continuous (pixel ``i`` spans ``[i, i + 1)``); a matrix ``M`` acts on them, and
OpenCV, whose pixel centres sit at integers, gets ``T(-½)·M·T(½)``, so boxes and pixels agree.
Boxes are recomputed from the transformed object shapes (masks when present, else box corners),
clipped to the output, and filtered with a :class:`BoxFilter`. A warp always returns the clipped
shapes as ``masks`` (the box's quad when there were none), so a chain of transforms keeps the
outline of a rotated object instead of re-rotating its loose box.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from detopt.constants import PAD_VALUE
from detopt.data.transforms._shapes import scale_polygon, transform_shapes
from detopt.data.transforms.sample import BoxFilter, Sample

PAD = PAD_VALUE
DEFAULT_FILTER = BoxFilter()


def _flip(s: Sample, axis: int) -> Sample:
    """Mirror along ``axis`` (0: x, left-right; 1: y, top-bottom): ``c -> extent - c``."""
    extent = s.size[1 - axis]
    b = s.boxes.copy()
    b[:, [axis, axis + 2]] = extent - s.boxes[:, [axis + 2, axis]]
    masks = None
    if s.masks is not None:
        k = (-1.0, 1.0, extent, 0.0) if axis == 0 else (1.0, -1.0, 0.0, extent)
        masks = [[scale_polygon(p, *k) for p in obj] for obj in s.masks]
    return Sample(cv2.flip(s.image, 1 - axis), b, s.labels.copy(), masks)


def hflip(s: Sample) -> Sample:
    """Mirror left-right: ``x -> W - x``."""
    return _flip(s, 0)


def vflip(s: Sample) -> Sample:
    """Mirror top-bottom: ``y -> H - y``."""
    return _flip(s, 1)


def translation(dx: float, dy: float) -> np.ndarray:
    """The 3×3 homogeneous matrix that moves points by ``(dx, dy)``."""
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])


def warp_image(
    image: np.ndarray,
    m: np.ndarray,
    out_size: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
    pad_value: int = PAD,
) -> np.ndarray:
    """The pixels of :func:`warp`: ``image`` through the 3x3 ``m`` (continuous coordinates)
    into ``out_size = (H, W)``; affine matrices use ``warpAffine``, others ``warpPerspective``."""
    oh, ow = out_size
    mc = translation(-0.5, -0.5) @ m @ translation(0.5, 0.5)
    border = (pad_value, pad_value, pad_value)
    if m[2, 0] == 0 and m[2, 1] == 0 and m[2, 2] == 1:
        return cv2.warpAffine(image, mc[:2], (ow, oh), flags=interpolation, borderValue=border)
    return cv2.warpPerspective(image, mc, (ow, oh), flags=interpolation, borderValue=border)


def warp_shapes(
    boxes: np.ndarray,
    labels: np.ndarray,
    masks: list | None,
    m: np.ndarray,
    out_size: tuple[int, int],
    box_filter: BoxFilter = DEFAULT_FILTER,
) -> tuple[np.ndarray, np.ndarray, list]:
    """The objects of :func:`warp`: mapped through ``m``, clipped to the output, filtered.
    Returns ``(boxes, labels, masks)`` of the kept objects."""
    oh, ow = out_size
    boxes, visible, _, masks = transform_shapes(boxes, masks, m, (0.0, 0.0, float(ow), float(oh)))
    keep = box_filter.keep(boxes, visible)
    return boxes[keep], labels[keep], [p for p, k in zip(masks, keep, strict=True) if k]


def warp(
    s: Sample,
    m: np.ndarray,
    out_size: tuple[int, int],
    box_filter: BoxFilter = DEFAULT_FILTER,
    interpolation: int = cv2.INTER_LINEAR,
    pad_value: int = PAD,
) -> Sample:
    """Warp ``s`` with the 3x3 matrix ``m`` (continuous coordinates) into ``out_size = (H, W)``.

    Affine matrices (last row ``0 0 1``) use ``warpAffine``, others ``warpPerspective``.
    """
    img = warp_image(s.image, m, out_size, interpolation, pad_value)
    boxes, labels, masks = warp_shapes(s.boxes, s.labels, s.masks, m, out_size, box_filter)
    return Sample(img, boxes, labels, masks)


def affine_matrix(
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    degrees: float = 0.0,
    scale: float = 1.0,
    shear: tuple[float, float] = (0.0, 0.0),
    translate: tuple[float, float] = (0.0, 0.0),
    perspective: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """``M = T · S · R · P · C``: centre the input at the origin (C), perspective (P), rotate by
    ``degrees`` and scale (R), shear by ``shear`` degrees in x and y (S), then move the origin to
    the output centre plus ``translate`` (fractions of the output size)."""
    ih, iw = in_size
    oh, ow = out_size
    c = translation(-iw / 2, -ih / 2)
    p = np.eye(3)
    p[2, 0], p[2, 1] = perspective
    r = np.eye(3)
    a = math.radians(degrees)
    r[:2, :2] = scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(shear[0]))
    sh[1, 0] = math.tan(math.radians(shear[1]))
    t = translation(ow / 2 + translate[0] * ow, oh / 2 + translate[1] * oh)
    return t @ sh @ r @ p @ c


def random_affine_matrix(
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    rng: np.random.Generator,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
) -> np.ndarray:
    """The matrix :func:`random_affine` draws (same draws, same order)."""
    return affine_matrix(
        in_size,
        out_size,
        degrees=rng.uniform(-degrees, degrees),
        scale=rng.uniform(1 - scale, 1 + scale),
        shear=(rng.uniform(-shear, shear), rng.uniform(-shear, shear)),
        translate=(rng.uniform(-translate, translate), rng.uniform(-translate, translate)),
        perspective=(rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)),
    )


def random_affine(
    s: Sample,
    rng: np.random.Generator,
    out_size: tuple[int, int] | None = None,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
    box_filter: BoxFilter = DEFAULT_FILTER,
    interpolation: int = cv2.INTER_LINEAR,
) -> Sample:
    """YOLO-style random affine: rotation ``U(±degrees)``, scale ``U(1 ± scale)``, shear
    ``U(±shear)`` degrees, translation ``U(±translate)`` of the output, perspective ``U(±p)``.

    ``out_size`` defaults to the input size; after a 2x mosaic pass the training size to crop
    back (the output centre sees the input centre, plus the translation).
    """
    out_size = out_size or s.size
    m = random_affine_matrix(s.size, out_size, rng, degrees, translate, scale, shear, perspective)
    return warp(s, m, out_size, box_filter, interpolation)


def random_resized_crop(
    s: Sample,
    rng: np.random.Generator,
    out_size: tuple[int, int],
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    box_filter: BoxFilter = DEFAULT_FILTER,
    interpolation: int = cv2.INTER_LINEAR,
) -> Sample:
    """Crop a random region (area ``scale`` of the image, aspect ``ratio`` w/h, log-uniform) and
    resize it to ``out_size``; falls back to the whole image after 10 tries (torchvision's rule)."""
    h, w = s.size
    area = h * w
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = math.sqrt(a * r), math.sqrt(a / r)
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            break
    else:
        x0, y0, cw, ch = 0.0, 0.0, float(w), float(h)
    oh, ow = out_size
    m = np.diag([ow / cw, oh / ch, 1.0]) @ translation(-x0, -y0)
    return warp(s, m, out_size, box_filter, interpolation)

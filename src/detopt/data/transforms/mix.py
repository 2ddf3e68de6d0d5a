"""Multi-image transforms: mosaic (4 or 9), MixUp, copy-paste; and cutout.

Placements are pastes, not warps: each source image is resized so its longer side is ``size``
(aspect kept), pasted, and its objects translated and clipped to the pasted region with the same
polygon machinery as the warps, then filtered with a :class:`BoxFilter`. A mosaic can stay a
:class:`Tiles` layout until a warp says which canvas region it needs (:func:`warp_tiles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from detopt.constants import PAD_VALUE
from detopt.data.transforms._shapes import Polygons, scale_polygon, transform_shapes
from detopt.data.transforms.geometric import hflip, translation, warp_image, warp_shapes
from detopt.data.transforms.sample import BoxFilter, Sample

PAD = PAD_VALUE
_FILTER = BoxFilter()


def resize_long_side(s: Sample, size: int) -> Sample:
    """Resize so the longer side is ``size`` (aspect kept); objects scaled with it."""
    h, w = s.size
    r = size / max(h, w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    if (nw, nh) == (w, h):
        return s
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    img = cv2.resize(s.image, (nw, nh), interpolation=interp)
    sx, sy = nw / w, nh / h
    boxes = s.boxes * np.array([sx, sy, sx, sy], np.float32)
    masks = None
    if s.masks is not None:
        masks = [[scale_polygon(p, sx, sy) for p in obj] for obj in s.masks]
    return Sample(img, boxes, s.labels.copy(), masks)


@dataclass
class Tiles:
    """A mosaic before its pixels exist: which part of which image goes where on the canvas,
    and the objects already placed (canvas coordinates). :func:`render` makes any region of
    the canvas; :func:`warp_tiles` makes only what a following warp samples."""

    canvas: tuple[int, int]  # (H, W)
    parts: list[tuple[np.ndarray, tuple[int, int, int, int], tuple[int, int]]]  # image, dst, src
    boxes: np.ndarray
    labels: np.ndarray
    masks: list[Polygons]


def _place(
    s: Sample | Tiles,
    dst: tuple[int, int, int, int],
    src: tuple[int, int],
    box_filter: BoxFilter,
) -> tuple[np.ndarray, np.ndarray, list[Polygons]]:
    """Objects of ``s``'s image from ``(sx, sy)`` on, placed at ``dst = (x0, y0, x1, y1)`` and
    clipped to it."""
    x0, y0, x1, y1 = dst
    sx, sy = src
    m = translation(x0 - sx, y0 - sy)
    boxes, visible, _, masks = transform_shapes(s.boxes, s.masks, m, (x0, y0, x1, y1))
    keep = box_filter.keep(boxes, visible)
    return boxes[keep], s.labels[keep], [p for p, k in zip(masks, keep, strict=True) if k]


def render(t: Tiles, rect: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Pixels of the canvas region ``rect = (x0, y0, x1, y1)`` (the whole canvas by default;
    the region may reach past the canvas, which is padding)."""
    h, w = t.canvas
    x0, y0, x1, y1 = rect or (0, 0, w, h)
    out = np.full((y1 - y0, x1 - x0, 3), PAD, np.uint8)
    for img, (dx0, dy0, dx1, dy1), (sx, sy) in t.parts:
        ax0, ay0, ax1, ay1 = max(dx0, x0), max(dy0, y0), min(dx1, x1), min(dy1, y1)
        if ax0 < ax1 and ay0 < ay1:
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = img[
                sy + ay0 - dy0 : sy + ay1 - dy0, sx + ax0 - dx0 : sx + ax1 - dx0
            ]
    return out


def warp_tiles(
    t: Tiles,
    m: np.ndarray,
    out_size: tuple[int, int],
    box_filter: BoxFilter = _FILTER,
    interpolation: int = cv2.INTER_LINEAR,
) -> Sample:
    """``warp(Sample(render(t), ...), m, out_size)`` rendering only the canvas region the warp
    samples.

    A matrix that only scales and translates (YOLO's default affine) takes the fast path: the
    output is a crop of the canvas at whole-pixel offsets, resized (or copied at scale 1), and
    the objects follow the matrix actually applied: ``m`` with its translation rounded to a
    canvas pixel and its scale to ``out / round(out / scale)`` (changes below half a canvas
    pixel and 0.1 %). Other matrices warp the bounding box of the output's preimage.
    """
    oh, ow = out_size
    ch, cw = t.canvas
    if m[0, 1] == 0 and m[1, 0] == 0 and m[0, 0] > 0 and m[1, 1] > 0 and (m[2] == (0, 0, 1)).all():
        w = max(1, round(ow / m[0, 0]))
        h = max(1, round(oh / m[1, 1]))
        x0 = round(-m[0, 2] / m[0, 0])
        y0 = round(-m[1, 2] / m[1, 1])
        crop = render(t, (x0, y0, x0 + w, y0 + h))
        img = crop if (w, h) == (ow, oh) else cv2.resize(crop, (ow, oh), interpolation=interpolation)
        m = np.diag([ow / w, oh / h, 1.0]) @ translation(-x0, -y0)  # the matrix actually applied
    else:
        corners = np.array([[0, 0, 1], [ow, 0, 1], [0, oh, 1], [ow, oh, 1.0]]) @ np.linalg.inv(m).T
        if (corners[:, 2] > 0).all():
            pre = corners[:, :2] / corners[:, 2:]
            x0 = int(np.clip(np.floor(pre[:, 0].min()) - 2, 0, cw))
            y0 = int(np.clip(np.floor(pre[:, 1].min()) - 2, 0, ch))
            x1 = int(np.clip(np.ceil(pre[:, 0].max()) + 2, 0, cw))
            y1 = int(np.clip(np.ceil(pre[:, 1].max()) + 2, 0, ch))
        else:  # the preimage is unbounded (strong perspective): the whole canvas
            x0, y0, x1, y1 = 0, 0, cw, ch
        if x1 > x0 and y1 > y0:
            img = warp_image(render(t, (x0, y0, x1, y1)), m @ translation(x0, y0), out_size, interpolation)
        else:  # the output sees none of the canvas
            img = np.full((oh, ow, 3), PAD, np.uint8)
    boxes, labels, masks = warp_shapes(t.boxes, t.labels, t.masks, m, out_size, box_filter)
    return Sample(img, boxes, labels, masks)


def mosaic4_tiles(
    samples: Sequence[Sample], size: int, rng: np.random.Generator, box_filter: BoxFilter = _FILTER
) -> Tiles:
    """The layout of :func:`mosaic4` (same draws), without its pixels."""
    if len(samples) != 4:
        raise ValueError(f"mosaic4 needs 4 samples, got {len(samples)}")
    s2 = 2 * size
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    parts, boxes, labels, masks = [], [], [], []
    for k, s in enumerate(samples):
        s = resize_long_side(s, size)
        h, w = s.size
        if k == 0:
            dst = (max(xc - w, 0), max(yc - h, 0), xc, yc)
            src = (w - (dst[2] - dst[0]), h - (dst[3] - dst[1]))
        elif k == 1:
            dst = (xc, max(yc - h, 0), min(xc + w, s2), yc)
            src = (0, h - (dst[3] - dst[1]))
        elif k == 2:
            dst = (max(xc - w, 0), yc, xc, min(s2, yc + h))
            src = (w - (dst[2] - dst[0]), 0)
        else:
            dst = (xc, yc, min(xc + w, s2), min(s2, yc + h))
            src = (0, 0)
        parts.append((s.image, dst, src))
        b, lab, mk = _place(s, dst, src, box_filter)
        boxes.append(b)
        labels.append(lab)
        masks.extend(mk)
    return Tiles((s2, s2), parts, np.concatenate(boxes), np.concatenate(labels), masks)


def mosaic4(
    samples: Sequence[Sample], size: int, rng: np.random.Generator, box_filter: BoxFilter = _FILTER
) -> Sample:
    """Four images around a random centre ``U(size/2, 3·size/2)`` on a ``2·size`` canvas.

    Image 0 ends at the centre from the top-left, 1 from the top-right, 2 bottom-left, 3
    bottom-right (YOLO's placement); the result is ``2·size`` square — crop it back with
    :func:`detopt.data.transforms.random_affine` (``out_size=(size, size)``), or, faster, warp
    :func:`mosaic4_tiles` with :func:`warp_tiles`.
    """
    t = mosaic4_tiles(samples, size, rng, box_filter)
    return Sample(render(t), t.boxes, t.labels, t.masks)


def mosaic9(
    samples: Sequence[Sample], size: int, rng: np.random.Generator, box_filter: BoxFilter = _FILTER
) -> Sample:
    """Nine images, each letterboxed into a ``size`` cell of a 3x3 grid, then a random
    ``2·size`` window of the ``3·size`` grid (so every mosaic shows parts of several images)."""
    if len(samples) != 9:
        raise ValueError(f"mosaic9 needs 9 samples, got {len(samples)}")
    s3 = 3 * size
    parts, boxes, labels, masks = [], [], [], []
    for k, s in enumerate(samples):
        s = resize_long_side(s, size)
        h, w = s.size
        cx, cy = (k % 3) * size + (size - w) // 2, (k // 3) * size + (size - h) // 2
        parts.append((s.image, (cx, cy, cx + w, cy + h), (0, 0)))
        b, lab, mk = _place(s, (cx, cy, cx + w, cy + h), (0, 0), box_filter)
        boxes.append(b)
        labels.append(lab)
        masks.extend(mk)
    x0, y0 = (int(v) for v in rng.integers(0, size + 1, 2))
    t = Tiles((s3, s3), parts, np.concatenate(boxes), np.concatenate(labels), masks)
    window = (x0, y0, x0 + 2 * size, y0 + 2 * size)
    b, lab, mk = _place(t, (0, 0, 2 * size, 2 * size), (x0, y0), box_filter)
    return Sample(render(t, window), b, lab, mk)


def mixup(a: Sample, b: Sample, rng: np.random.Generator, alpha: float = 32.0) -> Sample:
    """MixUp: ``r·a + (1-r)·b`` with ``r ~ Beta(alpha, alpha)``; both samples' objects kept.

    Both must have the same size: :class:`~detopt.data.transforms.pipeline.Compose` passes the
    second sample through the same transforms that came before.
    """
    if a.size != b.size:
        raise ValueError(f"mixup needs equal sizes, got {a.size} and {b.size}")
    r = float(rng.beta(alpha, alpha))
    img = cv2.addWeighted(a.image, r, b.image, 1 - r, 0.0)
    masks = None
    if a.masks is not None and b.masks is not None:
        masks = [*a.masks, *b.masks]
    return Sample(img, np.concatenate([a.boxes, b.boxes]), np.concatenate([a.labels, b.labels]), masks)


def _intersections(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection area of ``box [4]`` with each of ``boxes [N, 4]``."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    return iw * ih


def _covers_too_much(box: np.ndarray, boxes: np.ndarray, max_cover: float) -> bool:
    """Whether ``box`` and any of ``boxes`` cover more than ``max_cover`` of the other's area."""
    if not len(boxes):
        return False
    inter = _intersections(box, boxes)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    own = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-9)
    return bool((inter > max_cover * areas).any() or (inter > max_cover * own).any())


def copy_paste(
    dst: Sample,
    src: Sample,
    rng: np.random.Generator,
    p: float = 0.5,
    max_cover: float = 0.3,
    flip: bool = True,
) -> Sample:
    """Paste objects of ``src`` (same size as ``dst``) into ``dst``.

    Each object of ``src`` is tried with probability ``p``, mirrored left-right when ``flip``.
    With masks, the pixels inside its polygons are pasted and the polygons kept; without, its box
    crop is pasted. An object is refused when it would cover any object already in the image
    (existing or pasted) by more than ``max_cover`` of that object's box area, or when it is
    itself covered that much (pasting behind is not modelled).
    """
    if dst.size != src.size:
        raise ValueError(f"copy_paste needs equal sizes, got {dst.size} and {src.size}")
    if flip:
        src = hflip(src)
    img = dst.image.copy()
    h, w = dst.size
    boxes, labels = list(dst.boxes), list(dst.labels)
    masks = None if dst.masks is None else list(dst.masks)
    for i in np.flatnonzero(rng.random(len(src.labels)) < p):
        box = src.boxes[i]
        if _covers_too_much(box, np.asarray(boxes, np.float32).reshape(-1, 4), max_cover):
            continue
        polys = src.masks[i] if src.masks is not None and src.masks[i] else None
        if polys:
            region = np.zeros((h, w), np.uint8)
            for poly in polys:
                pts = np.round((np.asarray(poly).reshape(-1, 2) - 0.5) * 16).astype(np.int32)
                cv2.fillPoly(region, [pts], 1, shift=4)
            sel = region.astype(bool)
            img[sel] = src.image[sel]
        else:
            x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
            x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
            img[y0:y1, x0:x1] = src.image[y0:y1, x0:x1]
            box = np.array([x0, y0, x1, y1], np.float32)
        boxes.append(box)
        labels.append(src.labels[i])
        if masks is not None:
            masks.append(list(polys) if polys else [])
    return Sample(img, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), masks)


def cutout(
    s: Sample,
    rng: np.random.Generator,
    holes: int = 4,
    hole_size: tuple[float, float] = (0.05, 0.25),
    max_hidden: float = 0.6,
    fill: int | None = PAD,
) -> Sample:
    """Random erasing: ``holes`` rectangles with sides ``U(hole_size)`` of the image side, filled with
    ``fill`` (None: random colours). Objects hidden by more than ``max_hidden`` of their box area
    (counted on pixels, holes may overlap) are dropped; the others keep their boxes."""
    img = s.image.copy()
    h, w = s.size
    hidden = np.zeros((h, w), bool)
    for _ in range(holes):
        hw, hh = int(rng.uniform(*hole_size) * w), int(rng.uniform(*hole_size) * h)
        x0, y0 = int(rng.integers(0, max(1, w - hw + 1))), int(rng.integers(0, max(1, h - hh + 1)))
        colour = rng.integers(0, 256, 3) if fill is None else (fill, fill, fill)
        img[y0 : y0 + hh, x0 : x0 + hw] = colour
        hidden[y0 : y0 + hh, x0 : x0 + hw] = True
    integral = cv2.integral(hidden.astype(np.uint8))
    b = np.clip(np.round(s.boxes), 0, [w, h, w, h]).astype(np.int64)
    covered = (
        integral[b[:, 3], b[:, 2]]
        - integral[b[:, 1], b[:, 2]]
        - integral[b[:, 3], b[:, 0]]
        + integral[b[:, 1], b[:, 0]]
    )
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1)
    keep = covered / area <= max_hidden
    return Sample(img, s.boxes, s.labels, s.masks).select(keep)

"""Multi-image transforms: mosaic (4 or 9), MixUp, copy-paste; and cutout.

Placements are pastes, not warps: each source image is resized so its longer side is ``size``
(aspect kept), pasted, and its objects translated and clipped to the pasted region with the same
polygon machinery as the warps, then filtered with a :class:`BoxFilter`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from detopt.data.transforms._shapes import Polygons, scale_polygon, transform_shapes
from detopt.data.transforms.geometric import hflip
from detopt.data.transforms.sample import BoxFilter, Sample

PAD = 114
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


def _paste(
    canvas: np.ndarray,
    s: Sample,
    dst: tuple[int, int, int, int],
    src: tuple[int, int],
    box_filter: BoxFilter,
) -> tuple[np.ndarray, np.ndarray, list[Polygons]]:
    """Paste ``s.image[sy:, sx:]`` into ``canvas[y0:y1, x0:x1]``; its objects clipped to that region."""
    x0, y0, x1, y1 = dst
    sx, sy = src
    canvas[y0:y1, x0:x1] = s.image[sy : sy + (y1 - y0), sx : sx + (x1 - x0)]
    m = np.array([[1.0, 0, x0 - sx], [0, 1.0, y0 - sy], [0, 0, 1.0]])
    boxes, visible, _, masks = transform_shapes(s.boxes, s.masks, m, (x0, y0, x1, y1))
    keep = box_filter.keep(boxes, visible)
    return boxes[keep], s.labels[keep], [p for p, k in zip(masks, keep, strict=True) if k]


def mosaic4(
    samples: Sequence[Sample], size: int, rng: np.random.Generator, box_filter: BoxFilter = _FILTER
) -> Sample:
    """Four images around a random centre ``U(size/2, 3·size/2)`` on a ``2·size`` canvas.

    Image 0 ends at the centre from the top-left, 1 from the top-right, 2 bottom-left, 3
    bottom-right (YOLO's placement); the result is ``2·size`` square — crop it back with
    :func:`detopt.data.transforms.random_affine` (``out_size=(size, size)``).
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic4 needs 4 samples, got {len(samples)}")
    s2 = 2 * size
    canvas = np.full((s2, s2, 3), PAD, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    boxes, labels, masks = [], [], []
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
        b, lab, mk = _paste(canvas, s, dst, src, box_filter)
        boxes.append(b)
        labels.append(lab)
        masks.extend(mk)
    return Sample(canvas, np.concatenate(boxes), np.concatenate(labels), masks)


def mosaic9(
    samples: Sequence[Sample], size: int, rng: np.random.Generator, box_filter: BoxFilter = _FILTER
) -> Sample:
    """Nine images, each letterboxed into a ``size`` cell of a 3x3 grid, then a random
    ``2·size`` window of the ``3·size`` grid (so every mosaic shows parts of several images)."""
    if len(samples) != 9:
        raise ValueError(f"mosaic9 needs 9 samples, got {len(samples)}")
    s3 = 3 * size
    canvas = np.full((s3, s3, 3), PAD, np.uint8)
    boxes, labels, masks = [], [], []
    for k, s in enumerate(samples):
        s = resize_long_side(s, size)
        h, w = s.size
        cx, cy = (k % 3) * size + (size - w) // 2, (k // 3) * size + (size - h) // 2
        b, lab, mk = _paste(canvas, s, (cx, cy, cx + w, cy + h), (0, 0), box_filter)
        boxes.append(b)
        labels.append(lab)
        masks.extend(mk)
    x0, y0 = (int(v) for v in rng.integers(0, size + 1, 2))
    tiled = Sample(canvas, np.concatenate(boxes), np.concatenate(labels), masks)
    out = np.ascontiguousarray(canvas[y0 : y0 + 2 * size, x0 : x0 + 2 * size])
    b, lab, mk = _paste(out.copy(), tiled, (0, 0, 2 * size, 2 * size), (x0, y0), box_filter)
    return Sample(out, b, lab, mk)


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

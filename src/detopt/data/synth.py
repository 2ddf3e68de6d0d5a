"""The embedded default data set: procedural scenes we generate, deterministic by seed.

Eight classes differ by shape *and* texture (colours are random per object, so colour is no cue):

=========  ===================  ==============================
class      shape                texture
=========  ===================  ==============================
disc       ellipse, axes ±15 %  flat colour with pixel noise
ring       annulus              flat colour
triangle   equilateral          stripes
square     square               checkerboard
star       five-pointed         vertical two-colour gradient
cross      plus sign            horizontal two-colour gradient
crescent   circle minus circle  speckles of two colours
arrow      shaft and head       flat colour, outlined
=========  ===================  ==============================

Scenes have textured backgrounds (smooth noise, stripes, clutter), distractor shapes that are no
class (long ellipses, bars, lines, irregular blobs), objects from ~6 px to ~60 % of the image with
most of them small, occlusion (an object keeps at least 40 % of its pixels visible), truncation at
the border, lighting gradients, sensor noise and blur. Each object's box and polygons come from
its *visible* pixels. Image ``i`` of a split depends only on ``(seed, split, i)``, so any number of
worker processes writes the same files.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numba
import numpy as np

from detopt.data.formats._common import output_dir
from detopt.data.formats.yolo import data_yaml_text, label_line

CLASSES = ("disc", "ring", "triangle", "square", "star", "cross", "crescent", "arrow")
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
_MIN_VISIBLE_FRACTION = 0.4
_MIN_PIXELS = 6
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class SynthObject:
    """One labelled object: ``box`` xyxy, class index, polygons (flat xy) and area, all of its
    visible pixels."""

    box: tuple[float, float, float, float]
    label: int
    polygons: list[list[float]]
    area: int


def _unit_polygon(cls: int, rng: np.random.Generator) -> np.ndarray | None:
    """Vertices ``[P, 2]`` of a polygon class in a unit circle (None for the round classes)."""
    name = CLASSES[cls]
    if name == "triangle":
        a = np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], 1)
    if name == "square":
        a = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(a), np.sin(a)], 1)
    if name == "star":
        a = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if name == "cross":
        w = 0.32
        return np.array(
            [
                [-w, -1],
                [w, -1],
                [w, -w],
                [1, -w],
                [1, w],
                [w, w],
                [w, 1],
                [-w, 1],
                [-w, w],
                [-1, w],
                [-1, -w],
                [-w, -w],
            ],
            np.float64,
        )
    if name == "arrow":
        return np.array(
            [[-1, -0.28], [0.15, -0.28], [0.15, -0.7], [1, 0], [0.15, 0.7], [0.15, 0.28], [-1, 0.28]],
            np.float64,
        )
    return None


def _draw_shape(
    mask: np.ndarray, cls: int, c: tuple[float, float], r: float, theta: float, rng: np.random.Generator
) -> None:
    """Fill class ``cls`` (radius ``r`` px, rotation ``theta``) into ``mask`` with ones."""
    name = CLASSES[cls]
    cx, cy = c
    deg = math.degrees(theta)
    centre = (int(round(cx * _ONE)), int(round(cy * _ONE)))
    if name in ("disc", "ring"):
        k = rng.uniform(0.85, 1.15) if name == "disc" else 1.0
        axes = (max(1, int(round(r * k * _ONE))), max(1, int(round(r / k * _ONE))))
        cv2.ellipse(mask, centre, axes, deg, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
        if name == "ring":
            inner = int(round(r * 0.55 * _ONE))
            cv2.ellipse(mask, centre, (inner, inner), 0, 0, 360, 0, -1, cv2.LINE_8, _SHIFT)
        return
    if name == "crescent":
        cv2.circle(mask, centre, max(1, int(round(r * _ONE))), 1, -1, cv2.LINE_8, _SHIFT)
        off = (
            int(round((cx + 0.5 * r * math.cos(theta)) * _ONE)),
            int(round((cy + 0.5 * r * math.sin(theta)) * _ONE)),
        )
        cv2.circle(mask, off, int(round(0.85 * r * _ONE)), 0, -1, cv2.LINE_8, _SHIFT)
        return
    pts = _unit_polygon(cls, rng)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    xy = pts @ rot.T * r + (cx, cy)
    cv2.fillPoly(mask, [np.round(xy * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)


_TEXTURE_CODE = {"flat": 0, "noise": 1, "stripes": 2, "checker": 3, "speckle": 4, "vgrad": 5, "hgrad": 6}
_NO_RANDOM = np.zeros((1, 1), np.float32)


@numba.njit(cache=True, nogil=True)
def _coverage(ids: np.ndarray, mask: np.ndarray, ox: int, oy: int, n: int) -> tuple[np.ndarray, int, int]:
    """Under a local mask placed at ``(ox, oy)``: pixels of each id ``[n]``, pixels inside the image,
    pixels in all."""
    h, w = ids.shape
    counts = np.zeros(n, np.int64)
    inside = 0
    total = 0
    for y in range(mask.shape[0]):
        gy = y + oy
        for x in range(mask.shape[1]):
            if mask[y, x]:
                total += 1
                gx = x + ox
                if 0 <= gy < h and 0 <= gx < w:
                    inside += 1
                    counts[ids[gy, gx]] += 1
    return counts, inside, total


@numba.njit(cache=True, nogil=True)
def _paint(
    img: np.ndarray,
    ids: np.ndarray,
    mask: np.ndarray,
    ox: int,
    oy: int,
    kind: int,
    c1: np.ndarray,
    c2: np.ndarray,
    scale: np.float32,
    ca: np.float32,
    sa: np.float32,
    rnd: np.ndarray,
    new_id: int,
    outline: bool,
) -> None:
    """Paint a local mask at ``(ox, oy)`` with a texture and write ``new_id`` under it.

    Textures (coordinates local to the mask): 0 flat ``c1``; 1 ``c1 + rnd`` (pixel noise); 2 stripes
    of period ``2 * scale`` along ``(ca, sa)``; 3 checkerboard of cell ``scale``; 4 speckles
    (``c1`` where ``rnd < 0.65``); 5 vertical and 6 horizontal gradients ``c1 → c2``. With
    ``outline``, pixels with a neighbour outside the mask take ``c2``.
    """
    h, w = ids.shape
    mh, mw = mask.shape
    p = max(2, int(scale))
    for y in range(mh):
        gy = y + oy
        if gy < 0 or gy >= h:
            continue
        for x in range(mw):
            gx = x + ox
            if not mask[y, x] or gx < 0 or gx >= w:
                continue
            ids[gy, gx] = new_id
            edge = False
            if outline:
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        yy, xx = y + dy, x + dx
                        if yy < 0 or yy >= mh or xx < 0 or xx >= mw or not mask[yy, xx]:
                            edge = True
            for k in range(3):
                if edge:
                    v = c2[k]
                elif kind == 0:
                    v = c1[k]
                elif kind == 1:
                    v = c1[k] + rnd[y, x]
                elif kind == 2:
                    v = c1[k] if ((x * ca + y * sa) / scale) % np.float32(2.0) < 1.0 else c2[k]
                elif kind == 3:
                    v = c1[k] if (x // p + y // p) % 2 == 0 else c2[k]
                elif kind == 4:
                    v = c1[k] if rnd[y, x] < 0.65 else c2[k]
                elif kind == 5:
                    t = np.float32(y / max(1, mh - 1))
                    v = c1[k] * (1 - t) + c2[k] * t
                else:
                    t = np.float32(x / max(1, mw - 1))
                    v = c1[k] * (1 - t) + c2[k] * t
                img[gy, gx, k] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


_CLASS_TEXTURE = ("noise", "flat", "stripes", "checker", "vgrad", "hgrad", "speckle", "flat")
_DISTRACTOR_TEXTURES = ("flat", "noise", "stripes", "checker", "speckle", "vgrad")


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random colour and a contrasting one (its complement, jittered), ``float32 [3]`` each."""
    c = rng.integers([0, 0, 0, -60, -60, -60], [256, 256, 256, 61, 61, 61]).astype(np.float32)
    c1 = c[:3]
    c2 = 255.0 - c1 + c[3:]
    np.clip(c2, 0.0, 255.0, out=c2)
    return c1, c2


@numba.njit(cache=True, nogil=True)
def _finish_kernel(
    img: np.ndarray, shift: np.ndarray, light: np.ndarray, noise: np.ndarray, sigma: np.float32
) -> np.ndarray:
    """``uint8 [S, S, 3]``: ``round(clip((img + shift) * (1 + light_x + light_y) + sigma * noise))``."""
    h, w, c = img.shape
    out = np.empty((h, w, c), np.uint8)
    for y in range(h):
        for x in range(w):
            g = np.float32(1.0) + light[0, x] + light[1, y]
            for k in range(c):
                v = (np.float32(img[y, x, k]) + shift[k]) * g + sigma * noise[y, x, k]
                v = min(max(v, np.float32(0.0)), np.float32(255.0))
                out[y, x, k] = np.uint8(v + np.float32(0.5))
    return out


class SceneGenerator:
    """Renders scenes of a fixed size; the background bank depends on ``seed`` only."""

    def __init__(self, imgsz: int = 320, seed: int = 0) -> None:
        if imgsz < 32:
            raise ValueError(f"imgsz must be >= 32, got {imgsz}")
        self.imgsz = imgsz
        self.seed = seed
        rng = np.random.default_rng([seed, 7919])
        self.backgrounds = [self._background(rng, i % 4) for i in range(12)]
        self.noise = rng.normal(0, 1, (2 * imgsz, 2 * imgsz, 3)).astype(np.float32)

    def _background(self, rng: np.random.Generator, kind: int) -> np.ndarray:
        s = 2 * self.imgsz
        if kind == 0:  # smooth colour noise
            small = rng.integers(40, 220, (rng.integers(3, 9), rng.integers(3, 9), 3)).astype(np.uint8)
            return cv2.resize(small, (s, s), interpolation=cv2.INTER_CUBIC)
        if kind == 1:  # low-contrast stripes or grid over smooth noise
            base = self._background(rng, 0).astype(np.int16)
            yy, xx = np.ogrid[:s, :s]
            period = rng.uniform(6, 30)
            a = rng.uniform(0, np.pi)
            wave = np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * np.pi / period)
            if rng.random() < 0.5:
                wave = wave + np.sin((xx * -math.sin(a) + yy * math.cos(a)) * 2 * np.pi / period)
            return np.clip(base + (wave * rng.uniform(8, 25))[..., None], 0, 255).astype(np.uint8)
        if kind == 2:  # clutter: many muted lines and blobs
            img = self._background(rng, 0)
            for _ in range(int(s * s / 900)):
                col = tuple(int(v) for v in rng.integers(30, 230, 3))
                p = rng.integers(0, s, 2)
                if rng.random() < 0.5:
                    q = p + rng.integers(-25, 26, 2)
                    cv2.line(
                        img, tuple(int(v) for v in p), tuple(int(v) for v in q), col, int(rng.integers(1, 3))
                    )
                else:
                    ax = (int(rng.integers(1, 6)), int(rng.integers(1, 4)))
                    cv2.ellipse(
                        img, tuple(int(v) for v in p), ax, float(rng.uniform(0, 180)), 0, 360, col, -1
                    )
            return cv2.GaussianBlur(img, (3, 3), 0.8)
        # fine noise texture (sand, grass)
        base = self._background(rng, 0).astype(np.int16)
        grain = cv2.resize(rng.integers(-30, 31, (s // 2, s // 2, 1)).astype(np.float32), (s, s))
        return np.clip(base + grain[..., None], 0, 255).astype(np.uint8)

    def _size(self, rng: np.random.Generator) -> float:
        """Object diameter: most small, some medium, few large (6 px .. 60 % of the image)."""
        s = self.imgsz
        u = rng.random()
        lo, hi = (6, 32) if u < 0.55 else (32, 96) if u < 0.87 else (96, 0.6 * s)
        hi, lo = min(hi, 0.6 * s), min(lo, 0.6 * s)
        return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo + 1)))))

    def render(self, split: str, index: int) -> tuple[np.ndarray, list[SynthObject]]:
        """Image ``index`` of ``split``: ``uint8 [S, S, 3]`` BGR and its objects."""
        s = self.imgsz
        rng = np.random.default_rng([self.seed, _SPLIT_CODE.get(split, 9), index])
        bg = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        y0, x0 = rng.integers(0, s, 2)
        crop = bg[y0 : y0 + s, x0 : x0 + s]
        img = cv2.flip(crop, 1) if rng.random() < 0.5 else crop.copy()
        shift = rng.integers(-40, 41, 3).astype(np.float32)
        ids = np.zeros((s, s), np.int16)  # 0 = background or distractor, k = object k
        full: list[int] = [0]
        labels: list[int] = [-1]
        vis = np.zeros(1, np.int64)  # visible pixels of each object
        full_arr = np.zeros(1)
        regions: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]
        n_obj = 0 if rng.random() < 0.03 else int(min(30, 1 + rng.poisson(7)))
        n_dis = int(rng.poisson(3))
        # paint order: objects and distractors interleaved at random
        order = rng.permutation(n_obj + n_dis) < n_obj
        for is_obj in order:
            d = self._size(rng) if is_obj else self._size(rng) * rng.uniform(0.5, 1.5)
            r = d / 2
            c = rng.uniform(0, s, 2)
            theta = float(rng.uniform(0, 2 * math.pi))
            half = int(math.ceil(r * 1.2)) + 2
            bx0, by0 = int(c[0]) - half, int(c[1]) - half
            size = 2 * half + 1
            mask = np.zeros((size, size), np.uint8)
            lc = (c[0] - bx0, c[1] - by0)
            if is_obj:
                cls = int(rng.integers(len(CLASSES)))
                _draw_shape(mask, cls, lc, r, theta, rng)
            else:
                cls = -1
                self._draw_distractor(mask, lc, r, theta, rng)
            covered, inside, total = _coverage(ids, mask, bx0, by0, len(full))
            if inside == 0 or (is_obj and (inside < _MIN_PIXELS or inside < 0.5 * total)):
                continue  # outside, too small, or mostly outside the image
            covered[0] = 0
            if covered.any():
                left = vis - covered
                hit = covered > 0
                if np.any(left[hit] < np.maximum(_MIN_VISIBLE_FRACTION * full_arr[hit], _MIN_PIXELS)):
                    continue  # it would hide too much of an earlier object
                vis = left
            c1, c2 = _colour_pair(rng)
            kind = (
                _CLASS_TEXTURE[cls]
                if is_obj
                else _DISTRACTOR_TEXTURES[int(rng.integers(len(_DISTRACTOR_TEXTURES)))]
            )
            if kind == "noise":
                rnd = rng.integers(-28, 29, (size, size)).astype(np.float32)
            elif kind == "speckle":
                rnd = rng.random((size, size), np.float32)
            else:
                rnd = _NO_RANDOM
            a = float(rng.uniform(0, np.pi)) if kind == "stripes" else 0.0
            new_id = len(full) if is_obj else 0
            outline = is_obj and CLASSES[cls] == "arrow"  # outlined in the second colour
            _paint(
                img,
                ids,
                mask,
                bx0,
                by0,
                _TEXTURE_CODE[kind],
                c1,
                c2,
                np.float32(max(2.0, d / 6)),
                np.float32(math.cos(a)),
                np.float32(math.sin(a)),
                rnd,
                new_id,
                outline,
            )
            if is_obj:
                full.append(inside)
                labels.append(cls)
                vis = np.append(vis, inside)
                full_arr = np.asarray(full, np.float64)
                regions.append((max(by0, 0), min(by0 + size, s), max(bx0, 0), min(bx0 + size, s)))
        img = self._finish(img, shift, rng)
        return img, self._objects(ids, labels, regions)

    def _draw_distractor(
        self, mask: np.ndarray, c: tuple[float, float], r: float, theta: float, rng: np.random.Generator
    ) -> None:
        kind = int(rng.integers(4))
        centre = (int(round(c[0] * _ONE)), int(round(c[1] * _ONE)))
        if kind == 0:  # long ellipse
            k = rng.uniform(2.5, 5)
            cv2.ellipse(
                mask,
                centre,
                (max(1, int(r * _ONE)), max(1, int(r / k * _ONE))),
                math.degrees(theta),
                0,
                360,
                1,
                -1,
                cv2.LINE_8,
                _SHIFT,
            )
        elif kind == 1:  # bar
            k = rng.uniform(3, 8)
            rect = ((c[0], c[1]), (2 * r, max(1.0, 2 * r / k)), math.degrees(theta))
            cv2.fillPoly(mask, [np.round(cv2.boxPoints(rect) * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
        elif kind == 2:  # polyline
            pts = np.asarray(c) + rng.uniform(-r, r, (int(rng.integers(2, 5)), 2))
            cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, int(rng.integers(1, 4)))
        else:  # irregular blob
            a = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(7, 10))))
            rad = r * rng.uniform(0.35, 1.0, len(a))
            xy = np.stack([c[0] + rad * np.cos(a), c[1] + rad * np.sin(a)], 1)
            cv2.fillPoly(mask, [np.round(xy * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)

    def _finish(self, img: np.ndarray, shift: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Colour shift, lighting gradient, sensor noise, sometimes blur."""
        s = self.imgsz
        gx, gy = rng.uniform(-0.35, 0.35, 2)
        light = np.stack([gx * np.linspace(-0.5, 0.5, s), gy * np.linspace(-0.5, 0.5, s)]).astype(np.float32)
        ny, nx = rng.integers(0, s, 2)
        sigma = float(rng.uniform(2, 9))
        out = _finish_kernel(img, shift, light, self.noise[ny : ny + s, nx : nx + s], np.float32(sigma))
        if rng.random() < 0.3:
            out = cv2.GaussianBlur(out, (3, 3), float(rng.uniform(0.4, 0.9)))
        return out

    @staticmethod
    def _objects(
        ids: np.ndarray, labels: list[int], regions: list[tuple[int, int, int, int]]
    ) -> list[SynthObject]:
        """Box, polygons and area of each object's visible pixels (inside its painted region)."""
        out = []
        for j in range(1, len(labels)):
            y0, y1, x0, x1 = regions[j]
            m = ids[y0:y1, x0:x1] == j
            cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
            if not len(cols):
                continue
            cx0, cx1, ry0, ry1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
            crop = m[ry0:ry1, cx0:cx1].astype(np.uint8)
            contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            ox, oy = x0 + cx0, y0 + ry0
            polys = [
                (ct.reshape(-1, 2) + np.array([ox, oy])).reshape(-1).astype(float).tolist()
                for ct in contours
                if len(ct) >= 3
            ]
            box = (float(ox), float(oy), float(x0 + cx1), float(y0 + ry1))
            out.append(SynthObject(box, labels[j], polys, int(crop.sum())))
        return out


def _write_files(image_path: Path, jpeg: np.ndarray, label_path: Path, label_text: str) -> None:
    jpeg.tofile(image_path)
    label_path.write_text(label_text)


def _write_chunk(args: tuple[int, int, str, Path, list[int]]) -> list[tuple[str, list[SynthObject]]]:
    """Render, encode and write images ``indices`` of a split (files are written by a thread, so the
    file system's latency overlaps the rendering)."""
    imgsz, seed, split, out, indices = args
    gen = _generator(imgsz, seed)
    rows = []
    with ThreadPoolExecutor(1) as writer:
        pending = []
        for i in indices:
            img, objs = gen.render(split, i)
            name = f"{split}_{i:06d}.jpg"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
                raise RuntimeError("JPEG encoding failed")
            lines = [label_line(o.label, list(o.box), imgsz, imgsz) for o in objs]
            label = out / "labels" / split / f"{split}_{i:06d}.txt"
            image = out / "images" / split / name
            pending.append(writer.submit(_write_files, image, buf, label, "".join(lines)))
            rows.append((name, objs))
        for f in pending:
            f.result()  # raise the first write error, if any
    return rows


_GEN_CACHE: dict[tuple[int, int], SceneGenerator] = {}


def _generator(imgsz: int, seed: int) -> SceneGenerator:
    key = (imgsz, seed)
    if key not in _GEN_CACHE:
        _GEN_CACHE.clear()
        _GEN_CACHE[key] = SceneGenerator(imgsz, seed)
    return _GEN_CACHE[key]


def write_synthetic(
    out: str | Path,
    train: int = 2000,
    val: int = 300,
    imgsz: int = 320,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write the embedded data set as YOLO (``data.yaml``, ``images/``, ``labels/``) and COCO
    (``annotations/<split>.json`` with polygons; ``file_name`` relative to ``out``).

    Args:
        out: output folder (must be empty or missing unless ``overwrite``).
        train, val: number of images per split.
        imgsz: side of the square images.
        seed: everything depends on it and on nothing else (not on ``workers``).
        workers: processes that render in parallel.

    Returns:
        counts: images and objects per split.
    """
    if train < 0 or val < 0:
        raise ValueError(f"image counts must be >= 0, got train={train}, val={val}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    counts: dict[str, int] = {}
    with output_dir(Path(out), [], overwrite) as tmp:
        splits = {"train": train, "val": val}
        for split, n in splits.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            step = max(1, min(64, math.ceil(n / (4 * workers))))
            chunks = [(imgsz, seed, split, tmp, list(range(a, min(n, a + step)))) for a in range(0, n, step)]
            if workers > 1 and len(chunks) > 1:
                with ProcessPoolExecutor(workers) as pool:
                    rows = [r for part in pool.map(_write_chunk, chunks) for r in part]
            else:
                rows = [r for ch in chunks for r in _write_chunk(ch)]
            coco = _coco_json(rows, split, imgsz)
            (tmp / "annotations").mkdir(exist_ok=True)
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco, separators=(",", ":")))
            counts[f"{split}_images"] = n
            counts[f"{split}_objects"] = len(coco["annotations"])
        (tmp / "data.yaml").write_text(data_yaml_text(list(splits), list(CLASSES)))
    return counts


def _coco_json(rows: list[tuple[str, list[SynthObject]]], split: str, imgsz: int) -> dict:
    images, anns = [], []
    for i, (name, objs) in enumerate(rows):
        images.append({"id": i + 1, "file_name": f"images/{split}/{name}", "width": imgsz, "height": imgsz})
        for o in objs:
            x1, y1, x2, y2 = o.box
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": o.label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": o.area,
                    "iscrowd": 0,
                    "segmentation": o.polygons,
                }
            )
    return {
        "info": {"description": "detopt synthetic shapes"},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES)],
    }


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))

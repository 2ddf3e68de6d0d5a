"""A grid of augmented samples with boxes and class names drawn: look before training."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from detopt.data.dataset import DetectionDataset


def _colour(k: int) -> tuple[int, int, int]:
    """A distinct BGR colour per class (golden-ratio hues)."""
    hsv = np.array([[[int(k * 0.618034 * 180) % 180, 220, 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_boxes(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, names: list[str]) -> np.ndarray:
    """``img`` BGR ``uint8 [H, W, 3]`` with each box and its class name drawn (a copy)."""
    out = img.copy()
    for (x0, y0, x1, y1), k in zip(np.asarray(boxes, np.float64), labels, strict=True):
        c = _colour(int(k))
        cv2.rectangle(out, (round(x0), round(y0)), (round(x1) - 1, round(y1) - 1), c, 1)
        name = names[int(k)] if 0 <= int(k) < len(names) else str(int(k))
        cv2.putText(out, name, (round(x0), max(8, round(y0) - 2)), cv2.FONT_HERSHEY_PLAIN, 0.7, c, 1)
    return out


def preview_grid(dataset: DetectionDataset, names: list[str], n: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` random items of ``dataset`` (its pipeline applied) drawn into one BGR grid image."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(dataset), size=n, replace=len(dataset) < n)
    tiles = []
    for i in idx:
        item = dataset[int(i)]
        bgr = np.ascontiguousarray(item["image"].numpy().transpose(1, 2, 0)[..., ::-1])
        tiles.append(draw_boxes(bgr, item["boxes"].numpy(), item["labels"].numpy(), names))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    s = dataset.imgsz
    grid = np.full((rows * (s + 2), cols * (s + 2), 3), 255, np.uint8)
    for t, tile in enumerate(tiles):
        r, c = divmod(t, cols)
        grid[r * (s + 2) : r * (s + 2) + s, c * (s + 2) : c * (s + 2) + s] = tile
    return grid


def save_preview(grid: np.ndarray, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "preview.png"
    tmp = out / ".preview.png.tmp.png"
    if not cv2.imwrite(str(tmp), grid):
        raise OSError(f"{path}: could not write the PNG")
    tmp.replace(path)
    return path

"""Input generators for tests and benchmarks (seeded, deterministic)."""

from __future__ import annotations

import numpy as np


def detector_like_boxes(n_boxes: int, *, per_object: int = 20, image_size: float = 1024.0,
                        n_classes: int = 1, seed: int = 0, dtype=np.float32
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense candidates as a detector emits them: ``per_object`` jittered boxes around each of
    ``n_boxes // per_object`` objects (sizes 8-25 % of the image, log-uniform), scores highest
    near the object.

    Returns ``(boxes [n, 4] xyxy, scores [n] in (0, 1), labels [n] int64)``.
    """
    rng = np.random.default_rng(seed)
    n_obj = max(1, -(-n_boxes // per_object))
    size = np.exp(rng.uniform(np.log(0.02), np.log(0.25), (n_obj, 2))) * image_size
    centre = rng.uniform(0, image_size, (n_obj, 2))
    cls = rng.integers(0, n_classes, n_obj)
    obj = np.repeat(np.arange(n_obj), per_object)[:n_boxes]
    jitter = rng.normal(0, 0.12, (n_boxes, 4))
    c = centre[obj] + jitter[:, :2] * size[obj]
    wh = size[obj] * np.exp(jitter[:, 2:])
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).clip(0, image_size)
    quality = np.exp(-np.abs(jitter).sum(1) * 2)
    scores = (0.3 + 0.7 * quality) * rng.uniform(0.6, 1.0, n_obj)[obj]
    scores = np.clip(scores + rng.uniform(0, 1e-6, n_boxes), 1e-6, 1 - 1e-6)
    return boxes.astype(dtype), scores.astype(dtype), cls[obj].astype(np.int64)

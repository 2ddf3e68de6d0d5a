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


def synthetic_coco(n_images: int = 50, *, n_classes: int = 5, gt_per_image: float = 15.0,
                   image_size: tuple[int, int] = (640, 480), seed: int = 0,
                   crowd_frac: float = 0.02, miss_frac: float = 0.15, extra_dets_per_gt: float = 1.5,
                   fp_per_image: float = 5.0, wrong_class_frac: float = 0.05,
                   degenerate_frac: float = 0.0, empty_image_frac: float = 0.05,
                   score_decimals: int | None = 5, box_decimals: int | None = 2,
                   absent_classes: int = 0, first_image_id: int = 1, image_id_step: int = 1,
                   category_ids: list[int] | None = None) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dict and a COCO results list that look like a detector's output.

    Objects have log-uniform sizes (small, medium and large all occur); each ground-truth box is
    detected ``1 + Poisson(extra_dets_per_gt)`` times with jitter (unless missed), plus
    ``Poisson(fp_per_image)`` background boxes. ``area`` is ``w*h`` times a random fill factor,
    as for a segmentation area. Scores are rounded to ``score_decimals`` so equal scores occur;
    ``degenerate_frac`` of the boxes get zero width or height; the last ``absent_classes``
    categories are declared but have no annotations. Image ids start at ``first_image_id`` with
    step ``image_id_step``; ``category_ids`` (default 1, 3, 5, ...) are non-contiguous.
    """
    rng = np.random.default_rng(seed)
    width, height = image_size
    cat_ids = list(category_ids) if category_ids is not None else [1 + 2 * i for i in range(n_classes)]
    if len(cat_ids) != n_classes:
        raise ValueError(f"category_ids has {len(cat_ids)} ids for n_classes={n_classes}")
    used = max(1, n_classes - absent_classes)
    images = [{"id": first_image_id + i * image_id_step, "file_name": f"{i:06d}.jpg",
               "width": width, "height": height} for i in range(n_images)]
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in cat_ids]

    def rnd(v: np.ndarray, decimals: int | None) -> list[float]:
        return (np.round(v, decimals) if decimals is not None else v).tolist()

    def random_boxes(n: int) -> np.ndarray:
        side = np.exp(rng.uniform(np.log(4.0), np.log(0.6 * min(width, height)), (n, 1)))
        aspect = np.exp(rng.normal(0.0, 0.4, (n, 1)))
        wh = np.concatenate([side * aspect, side / aspect], 1).clip(1.0, [width, height])
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([width, height]) - wh)
        boxes = np.concatenate([xy, wh], 1)
        degenerate = rng.random(n) < degenerate_frac
        boxes[degenerate, 2 + rng.integers(0, 2, int(degenerate.sum()))] = 0.0
        return boxes

    annotations: list[dict] = []
    results: list[dict] = []
    for image in images:
        if rng.random() < empty_image_frac:
            n_gt = 0
        else:
            n_gt = int(rng.poisson(gt_per_image))
        gt_boxes = random_boxes(n_gt)
        gt_cls = rng.integers(0, used, n_gt)
        crowd = rng.random(n_gt) < crowd_frac
        fill = rng.uniform(0.55, 1.0, n_gt)
        for box, c, is_crowd, f in zip(gt_boxes, gt_cls, crowd, fill, strict=True):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image["id"], "category_id": cat_ids[c],
                "bbox": rnd(box, box_decimals), "area": float(round(box[2] * box[3] * f, 2)),
                "iscrowd": int(is_crowd)})
        # detections: jittered copies of the ground truth plus background boxes
        reps = np.where(rng.random(n_gt) < miss_frac, 0, 1 + rng.poisson(extra_dets_per_gt, n_gt))
        src = np.repeat(np.arange(n_gt), reps)
        jitter = rng.normal(0.0, 0.08, (len(src), 4))
        wh = gt_boxes[src, 2:] * np.exp(jitter[:, 2:])
        xy = gt_boxes[src, :2] + jitter[:, :2] * gt_boxes[src, 2:]
        det = np.concatenate([xy, wh], 1)
        quality = np.exp(-6.0 * np.abs(jitter).sum(1))
        det_scores = (0.2 + 0.8 * quality) * rng.uniform(0.5, 1.0, len(src))
        det_cls = gt_cls[src].copy()
        wrong = rng.random(len(src)) < wrong_class_frac
        det_cls[wrong] = rng.integers(0, n_classes, int(wrong.sum()))
        n_fp = int(rng.poisson(fp_per_image))
        det = np.concatenate([det, random_boxes(n_fp)])
        det_scores = np.concatenate([det_scores, rng.uniform(0.01, 0.6, n_fp)])
        det_cls = np.concatenate([det_cls, rng.integers(0, n_classes, n_fp)])
        det_scores = np.clip(det_scores, 1e-4, 1.0)
        for box, s, c in zip(rnd(det, box_decimals), rnd(det_scores, score_decimals), det_cls,
                             strict=True):
            results.append({"image_id": image["id"], "category_id": cat_ids[c], "bbox": box, "score": s})
    return {"images": images, "annotations": annotations, "categories": categories}, results


def write_synthetic_coco(out_dir, n_images: int = 200, seed: int = 0, **kwargs) -> tuple[str, str]:
    """Write ``synthetic_coco(n_images, seed=seed, **kwargs)`` as ``gt.json`` and ``pred.json``
    into ``out_dir`` (created); returns the two paths."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gt, dt = synthetic_coco(n_images, seed=seed, **kwargs)
    (out / "gt.json").write_text(json.dumps(gt))
    (out / "pred.json").write_text(json.dumps(dt))
    return str(out / "gt.json"), str(out / "pred.json")

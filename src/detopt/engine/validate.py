"""Run a detector over a data set and score it with the exact COCO evaluation."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detopt.data.dataset import DetectionDataset, make_loader
from detopt.data.formats.coco import coco_dict
from detopt.data.transforms.letterbox import LetterboxMeta, unletterbox_boxes
from detopt.evaluation import CocoEvalResult, evaluate_coco
from detopt.models.postprocessor import Postprocessor
from detopt.runtime import autocast
from detopt.structures.detections import Detections


def to_original(dets: Detections, meta: LetterboxMeta, orig_size: tuple[int, int]) -> Detections:
    """Detections in network-input pixels -> numpy detections in the original image's pixels
    (``orig_size`` ``(h, w)``), boxes clipped to the image."""
    boxes = unletterbox_boxes(np.asarray(dets.boxes, np.float32), meta)
    h, w = orig_size
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return Detections(boxes, np.asarray(dets.scores, np.float32), np.asarray(dets.labels, np.int64))


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    postprocessor: Postprocessor,
    device: torch.device,
    amp: bool = False,
) -> Iterable[tuple[dict[str, Any], list[Detections]]]:
    """For each collated batch: ``(batch, detections)``, boxes mapped back to the original images
    (numpy, xyxy, clipped to the image)."""
    was = model.training
    model.eval()
    try:
        for batch in batches:
            images = batch["images"].to(device, non_blocking=True).float().div_(255)
            with autocast(device, amp):
                outputs = model(images)
            dets = [
                to_original(Detections(d.boxes.float().cpu(), d.scores.float().cpu(), d.labels.cpu()), m, hw)
                for d, m, hw in zip(postprocessor(outputs), batch["metas"], batch["orig_sizes"], strict=True)
            ]
            yield batch, dets
    finally:
        model.train(was)


def file_names(paths: list[Path]) -> list[str]:
    """Each path relative to the deepest folder holding them all (what ``file_name`` records carry)."""
    if not paths:
        return []
    root = os.path.commonpath([str(Path(p).parent) for p in paths])
    return [os.path.relpath(p, root) for p in paths]


def coco_records(
    dets: Detections, image_id: int, file_name: str, category_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """COCO results records (bbox ``[x, y, w, h]``) plus ``file_name``.

    Args:
        category_ids: the data set's category id of each label (default ``label + 1``).
    """
    b = np.asarray(dets.boxes, np.float64)
    labels = np.asarray(dets.labels, np.int64)
    cats = labels + 1 if category_ids is None else np.asarray(category_ids, np.int64)[labels]
    return [
        {
            "image_id": image_id,
            "category_id": int(cat),
            "bbox": [
                round(float(x1), 3),
                round(float(y1), 3),
                round(float(x2 - x1), 3),
                round(float(y2 - y1), 3),
            ],
            "score": round(float(s), 5),
            "file_name": file_name,
        }
        for (x1, y1, x2, y2), s, cat in zip(b, np.asarray(dets.scores), cats, strict=True)
    ]


def evaluate_detector(
    model: nn.Module,
    dataset: DetectionDataset,
    names: list[str],
    postprocessor: Postprocessor,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    workers: int = 0,
    amp: bool = False,
    category_ids: list[int] | None = None,
    pred_category_ids: list[int] | None = None,
) -> tuple[CocoEvalResult, list[dict[str, Any]], dict[str, Any]]:
    """Predict every image of ``dataset`` (letterboxed, no augmentation) and evaluate.

    Args:
        category_ids: the category id of each label of the data set, in the ground truth and the
            records (default: ``dataset.category_ids``, the data set's own, else ``label + 1``).
        pred_category_ids: the category id of each of the model's labels, when they are not the
            data set's labels (weights whose classes were matched by name; default: ``category_ids``).

    Returns:
        (the COCO evaluation, prediction records with ``file_name``, the ground-truth COCO dict).
    """
    device = torch.device(device)
    if category_ids is None:
        category_ids = getattr(dataset, "category_ids", None)
    if pred_category_ids is None:
        pred_category_ids = category_ids
    fnames = file_names([r.path for r in dataset.records])
    gt = coco_dict(dataset.records, names, fnames, category_ids)
    ids = [im["id"] for im in gt["images"]]
    preds: list[dict[str, Any]] = []
    loader = make_loader(dataset, batch_size=batch_size, workers=workers)
    for batch, dets in predict_batches(model, loader, postprocessor, device, amp):
        for i, d in zip(batch["indices"], dets, strict=True):
            preds.extend(coco_records(d, ids[i], fnames[i], pred_category_ids))
    return evaluate_coco(gt, preds), preds, gt

"""Run a detector over a data set and score it with the exact COCO evaluation."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detopt.data.dataset import DetectionDataset, make_loader
from detopt.data.transforms.letterbox import LetterboxMeta, unletterbox_boxes
from detopt.evaluation import CocoEvalResult, CocoGroundTruth, evaluate_detections, result_values
from detopt.models.postprocessor import Postprocessor
from detopt.runtime import autocast
from detopt.structures.detections import Detections
from detopt.structures.records import coco_image_ids


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
    """COCO results records (bbox ``[x, y, w, h]`` at 3 decimals, score at 5) plus ``file_name``:
    the json edge of :func:`~detopt.evaluation.result_values` (the in-memory evaluation scores
    the same numbers).

    Args:
        category_ids: the data set's category id of each label (default ``label + 1``).
    """
    box, score = result_values(dets)
    labels = np.asarray(dets.labels, np.int64).reshape(-1)
    cats = labels + 1 if category_ids is None else np.asarray(category_ids, np.int64)[labels]
    return [
        {"image_id": image_id, "category_id": int(cat), "bbox": b, "score": sc, "file_name": file_name}
        for b, sc, cat in zip(box.tolist(), score.tolist(), cats, strict=True)
    ]


@dataclass
class DetectorEvaluation:
    """The outcome of :func:`evaluate_detector`.

    Attributes:
        result: the exact COCO evaluation.
        detections: per image of the data set (its order), numpy, xyxy in original pixels.
        image_ids: the ground-truth image id of each. file_names: the ``file_name`` of each.
        category_ids: the category id of each model label (what records carry).
        gt: the ground truth (arrays).
    """

    result: CocoEvalResult
    detections: list[Detections]
    image_ids: list[int]
    file_names: list[str]
    category_ids: list[int] | None
    gt: CocoGroundTruth

    @property
    def num_detections(self) -> int:
        return sum(len(d.scores) for d in self.detections)

    def records(self) -> list[dict[str, Any]]:
        """COCO results records of every detection (what ``--save-json`` writes)."""
        return [r for d, i, f in zip(self.detections, self.image_ids, self.file_names, strict=True)
                for r in coco_records(d, i, f, self.category_ids)]


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
) -> DetectorEvaluation:
    """Predict every image of ``dataset`` (letterboxed, no augmentation) and evaluate in memory
    (:func:`~detopt.evaluation.evaluate_detections`: pycocotools' numbers for the records
    :meth:`DetectorEvaluation.records` would write).

    Args:
        category_ids: the category id of each label of the data set, in the ground truth and the
            records (default: ``dataset.category_ids``, the data set's own, else ``label + 1``).
        pred_category_ids: the category id of each of the model's labels, when they are not the
            data set's labels (weights whose classes were matched by name; default: ``category_ids``).
    """
    device = torch.device(device)
    if category_ids is None:
        category_ids = getattr(dataset, "category_ids", None)
    if pred_category_ids is None:
        pred_category_ids = category_ids
    fnames = file_names([r.path for r in dataset.records])
    gt = CocoGroundTruth.from_records(dataset.records, names, category_ids, fnames)
    ids = coco_image_ids(dataset.records)
    dets: list[Detections | None] = [None] * len(dataset)
    loader = make_loader(dataset, batch_size=batch_size, workers=workers)
    for batch, batch_dets in predict_batches(model, loader, postprocessor, device, amp):
        for i, d in zip(batch["indices"], batch_dets, strict=True):
            dets[i] = d
    result = evaluate_detections(gt, dets, ids, pred_category_ids)
    return DetectorEvaluation(result, dets, ids, fnames, pred_category_ids, gt)


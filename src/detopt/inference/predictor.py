"""Predict on image files: letterbox, model, postprocess, map back, draw, COCO-style JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import nn

from detopt.constants import IOU_THRESHOLD, MAX_DET
from detopt.data.dataset import DetectionDataset, make_loader
from detopt.data.defects import IMAGE_SUFFIXES
from detopt.data.image_io import decode_image, read_image_size
from detopt.engine.checkpoint import (
    checkpoint_category_ids,
    load_checkpoint,
    load_safetensors,
    model_from_checkpoint,
    safetensors_metadata,
)
from detopt.engine.validate import coco_records, file_names, predict_batches
from detopt.errors import DetoptDataError, DetoptInputError
from detopt.models import Postprocessor
from detopt.structures.detections import Detections
from detopt.structures.records import ImageRecord


class Weights(NamedTuple):
    """A trained model and what it was trained with.

    Attributes:
        model: the detector, in eval mode.
        names: class names (label order).
        imgsz: training image size, or None when unknown.
        category_ids: the training data set's category id of each label (what records carry).
    """

    model: nn.Module
    names: list[str]
    imgsz: int | None
    category_ids: list[int]


def load_weights(path: str | Path) -> Weights:
    """A trained model from a checkpoint (``.pt``, EMA weights), a safetensors export or an ONNX
    export (``.onnx``: an :class:`~detopt.inference.onnx_model.OnnxDetector` run by ONNX Runtime)."""
    path = Path(path)
    if path.suffix == ".onnx":
        from detopt.inference.onnx_model import OnnxDetector

        det = OnnxDetector(path)
        return Weights(det, det.names, det.imgsz, det.category_ids)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise DetoptInputError(f"{path}: no such file")
        model, names = load_safetensors(path)
        raw = safetensors_metadata(path).get("category_ids")
        ids = json.loads(raw) if raw else list(range(1, len(names) + 1))
        return Weights(model, names, model.spec.get("imgsz"), [int(i) for i in ids])
    ckpt = load_checkpoint(path)
    return Weights(
        model_from_checkpoint(ckpt),
        list(ckpt.get("names", [])),
        ckpt.get("config", {}).get("imgsz"),
        checkpoint_category_ids(ckpt),
    )


def default_postprocessor(model, method: str | None = None, score_thr: float = 0.25,
                          iou_thr: float = IOU_THRESHOLD, max_det: int = MAX_DET):
    """The post-processing of ``model``: a :class:`Postprocessor` for torch weights, an
    :class:`~detopt.inference.onnx_model.OnnxPostprocess` for an ONNX export (``method`` None:
    the export's own)."""
    from detopt.inference.onnx_model import OnnxDetector, OnnxPostprocess

    if isinstance(model, OnnxDetector):
        return OnnxPostprocess(model, method, score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
    return Postprocessor(model.strides, model.reg_max, method=method or "nms", score_thr=score_thr,
                         iou_thr=iou_thr, max_det=max_det)


def load_predictor(path: str | Path, imgsz: int | None = None, device: str | torch.device = "cpu",
                   batch_size: int = 8, method: str | None = None, score_thr: float = 0.25,
                   iou_thr: float = IOU_THRESHOLD, max_det: int = MAX_DET) -> Predictor:
    """A :class:`Predictor` for any weights file; the backend follows the file (``.pt`` and
    ``.safetensors``: torch; ``.onnx``: ONNX Runtime). ``imgsz`` defaults to the training size."""
    w = load_weights(path)
    pp = default_postprocessor(w.model, method, score_thr, iou_thr, max_det)
    return Predictor(w.model, w.names, imgsz or w.imgsz or 640, pp, device, batch_size, w.category_ids)


def list_images(source: str | Path) -> list[Path]:
    """An image file, or the images of a folder (recursively, sorted)."""
    src = Path(source)
    if src.is_file():
        return [src]
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DetoptInputError(f"{src}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    raise DetoptInputError(f"{src}: no such file or folder")


def _palette(k: int) -> tuple[int, int, int]:
    h = (k * 0.61803398875) % 1.0
    hsv = np.uint8([[[int(h * 179), 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_labelled_box(img: np.ndarray, box: Sequence[float], colour: tuple[int, int, int], text: str,
                      thickness: int = 1, font_scale: float = 0.35,
                      text_colour: tuple[int, int, int] = (0, 0, 0)) -> None:
    """Draw one xyxy ``box`` (pixels, rounded) into ``img`` in place, with ``text`` on a filled
    tag at its top-left corner (kept inside the image; no tag when ``text`` is empty)."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
    if not text:
        return
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    y = max(y1, th + base)
    cv2.rectangle(img, (x1, y - th - base), (x1 + tw, y), colour, -1)
    cv2.putText(img, text, (x1, y - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_colour, 1, cv2.LINE_AA)


def draw_detections(image_bgr: np.ndarray, dets: Detections, names: Sequence[str]) -> np.ndarray:
    """A copy of ``image_bgr`` with each box, class name and score drawn."""
    out = image_bgr.copy()
    boxes, scores, labels = np.asarray(dets.boxes), np.asarray(dets.scores), np.asarray(dets.labels)
    for box, s, lab in zip(boxes, scores, labels, strict=True):
        name = names[int(lab)] if int(lab) < len(names) else str(int(lab))
        draw_labelled_box(out, box, _palette(int(lab)), f"{name} {s:.2f}")
    return out


class Predictor:
    """Run a trained detector on image files.

    Args:
        model: a detector (eval mode is set).
        names: class names.
        imgsz: network input side (images are letterboxed to it).
        postprocessor: decoding + suppression (default: hard NMS, score > 0.25, IoU 0.7).
        device: where the model runs.
        batch_size: images per forward pass.
        category_ids: the category id of each label in the records (default ``label + 1``; pass
            :attr:`Weights.category_ids` to keep the training data set's ids).
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        imgsz: int = 320,
        postprocessor: Postprocessor | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        category_ids: Sequence[int] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.category_ids = None if category_ids is None else [int(i) for i in category_ids]
        if self.category_ids is not None and len(self.category_ids) != len(names):
            raise DetoptInputError(f"{len(self.category_ids)} category ids for {len(names)} class names")
        self.model = model.to(self.device).eval()
        self.names = list(names)
        if hasattr(model, "check_size"):
            model.check_size(imgsz)
        elif imgsz % model.max_stride:
            raise DetoptInputError(f"imgsz {imgsz} must be a multiple of {model.max_stride}")
        self.imgsz = imgsz
        if postprocessor is None:
            postprocessor = default_postprocessor(model, score_thr=0.25)
        self.postprocessor = postprocessor
        self.batch_size = batch_size

    def predict(self, paths: Iterable[str | Path]) -> Iterable[tuple[Path, Detections]]:
        """``(path, detections in the image's pixels)`` per image, in order."""
        records = []
        for p in paths:
            try:
                w, h = read_image_size(Path(p))
            except OSError as e:
                raise DetoptDataError(f"{p}: not a readable image ({e})") from None
            records.append(ImageRecord(Path(p).resolve(), w, h))
        ds = DetectionDataset(records, imgsz=self.imgsz)
        loader = make_loader(ds, batch_size=self.batch_size)
        for batch, dets in predict_batches(self.model, loader, self.postprocessor, self.device):
            for i, d in zip(batch["indices"], dets, strict=True):
                yield records[i].path, d

    def predict_to(self, source: str | Path, out_dir: str | Path | None = None) -> list[dict]:
        """Predict every image of ``source``; draw PNGs into ``out_dir`` (when given); return the
        COCO-style records (``image_id`` = position, ``file_name`` relative to the source)."""
        paths = list_images(source)
        names = file_names(paths) if len(paths) > 1 else [paths[0].name]
        records: list[dict] = []
        out = Path(out_dir) if out_dir is not None else None
        for k, (path, dets) in enumerate(self.predict(paths)):
            records.extend(coco_records(dets, k + 1, names[k], self.category_ids))
            if out is not None:
                target = (out / names[k]).with_suffix(".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target), draw_detections(decode_image(path), dets, self.names))
        return records

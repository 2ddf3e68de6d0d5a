"""Plug a user's albumentations ``Compose`` into a detopt pipeline (albumentations is optional).

The ``Compose`` must carry ``bbox_params`` with ``format='pascal_voc'`` (absolute xyxy, detopt's
convention) and ``'labels'`` among its ``label_fields``. Mask polygons cannot follow an
albumentations transform: they are dropped (later geometric transforms then use the boxes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detopt.data.transforms.pipeline import Source, Transform
from detopt.data.transforms.sample import Sample
from detopt.errors import DetoptInputError


class Albumentations(Transform):
    """``compose(image=..., bboxes=..., labels=...)`` as a detopt transform (with probability ``p``)."""

    name = "albumentations"

    def __init__(self, compose: Any, p: float = 1.0) -> None:
        super().__init__(p)
        processors = getattr(compose, "processors", None)
        bbox = processors.get("bboxes") if isinstance(processors, dict) else None
        params = getattr(bbox, "params", None)
        if params is None:
            raise DetoptInputError(
                "albumentations Compose: pass bbox_params=A.BboxParams(format='pascal_voc', "
                "label_fields=['labels'])"
            )
        if params.format != "pascal_voc" or "labels" not in (params.label_fields or []):
            raise DetoptInputError(
                f"albumentations Compose: bbox_params must use format='pascal_voc' and label_fields "
                f"containing 'labels', got format={params.format!r}, label_fields={params.label_fields!r}"
            )
        self.compose = compose

    def apply(self, s: Sample, rng: np.random.Generator, source: Source | None) -> Sample:
        out = self.compose(image=s.image, bboxes=s.boxes.astype(np.float64), labels=s.labels)
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        return Sample(np.ascontiguousarray(out["image"]), boxes, np.asarray(out["labels"], np.int64))

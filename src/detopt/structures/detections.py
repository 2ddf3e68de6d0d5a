"""Detections of one image: boxes, scores and labels that always travel together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ArrayLike = Any  # numpy.ndarray | torch.Tensor: every op takes either and returns the same kind


@dataclass(frozen=True)
class Detections:
    """Detections of one image.

    Attributes:
        boxes: ``[K, 4]`` absolute xyxy.
        scores: ``[K]`` by decreasing value.
        labels: ``[K]`` int64 class ids.
    """

    boxes: ArrayLike
    scores: ArrayLike
    labels: ArrayLike

    def __post_init__(self) -> None:
        k = int(self.boxes.shape[0])
        if tuple(self.boxes.shape) != (k, 4) or int(self.scores.shape[0]) != k or int(
            self.labels.shape[0]
        ) != k:
            raise ValueError(
                f"Detections: boxes {tuple(self.boxes.shape)}, scores {tuple(self.scores.shape)}"
                f" and labels {tuple(self.labels.shape)} do not describe the same K boxes"
            )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

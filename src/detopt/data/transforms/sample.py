"""The unit every augmentation transforms: an image with its objects."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from detopt.data.transforms._shapes import Polygons


@dataclass
class Sample:
    """An image and its objects.

    Attributes:
        image: ``uint8 [H, W, 3]`` (BGR, as decoded by OpenCV).
        boxes: ``float32 [N, 4]`` absolute xyxy, continuous coordinates (pixel ``i`` spans
            ``[i, i + 1)``).
        labels: ``int64 [N]``.
        masks: per object its polygons (``float32 [2P]`` absolute), or None without masks.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: list[Polygons] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels")
        if self.masks is not None and len(self.masks) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.masks)} masks")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def select(self, keep: np.ndarray) -> Sample:
        """The objects where ``keep`` (bool ``[N]``) is True."""
        keep = np.asarray(keep, bool)
        masks = None if self.masks is None else [m for m, k in zip(self.masks, keep, strict=True) if k]
        return replace(self, boxes=self.boxes[keep], labels=self.labels[keep], masks=masks)


@dataclass(frozen=True)
class BoxFilter:
    """When an object that a transform cut or shrank is dropped.

    Attributes:
        min_size: width and height must exceed this (pixels).
        min_visible: the visible fraction of the object's transformed area must reach this.
        max_aspect: ``max(w/h, h/w)`` must stay below this (slivers along the border).
    """

    min_size: float = 2.0
    min_visible: float = 0.1
    max_aspect: float = 100.0

    def keep(self, boxes: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """``boxes [N, 4]``, ``visible [N]`` -> bool ``[N]``."""
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        small = np.minimum(w, h)
        aspect = np.maximum(w, h) / np.maximum(small, 1e-9)
        return (
            (w > self.min_size)
            & (h > self.min_size)
            & (visible >= self.min_visible)
            & (aspect < self.max_aspect)
        )

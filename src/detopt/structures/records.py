"""Image records: what every data set format is read into, and written from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Polygon = np.ndarray
"""One polygon: ``float32 [2P]`` absolute ``x1, y1, x2, y2, ...`` (COCO's polygon layout)."""


def polygons_area(polys: list[np.ndarray]) -> float:
    """Total shoelace area of ``polys`` (each ``[2P]`` absolute xy), in float64 (COCO's ``area``)."""
    total = 0.0
    for p in polys:
        x, y = p[0::2].astype(np.float64), p[1::2].astype(np.float64)
        total += 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return total


@dataclass
class ImageRecord:
    """One image and its objects.

    Attributes:
        path: absolute path of the image file.
        width, height: image size in pixels (of the stored pixels, EXIF orientation not applied).
        boxes: ``float32 [N, 4]`` absolute xyxy, continuous coordinates (``x2 - x1`` is the width).
        labels: ``int64 [N]`` indices into the data set's class names.
        crowd: ``bool [N]`` regions evaluation ignores (COCO ``iscrowd``, VOC ``difficult``).
        masks: per object, a list of polygons (``float32 [2P]`` absolute), or None when the
            format carries no masks.
        image_id: the source's image id when it has one (COCO), else None.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    crowd: np.ndarray | None = None
    masks: list[list[Polygon]] | None = None
    image_id: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.labels) != n:
            raise ValueError(f"{self.path}: {n} boxes but {len(self.labels)} labels")
        if self.crowd is None:
            self.crowd = np.zeros(n, dtype=bool)
        self.crowd = np.asarray(self.crowd, dtype=bool).reshape(-1)
        if len(self.crowd) != n:
            raise ValueError(f"{self.path}: {n} boxes but {len(self.crowd)} crowd flags")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"{self.path}: {n} boxes but {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.boxes)


def coco_image_ids(records: list[ImageRecord]) -> list[int]:
    """The COCO image id of each record: its own when all are unique ints, else ``1..N`` (what
    written COCO files and the in-memory ground truth use)."""
    rid = [r.image_id for r in records]
    if all(i is not None for i in rid) and len(set(rid)) == len(rid):
        return [int(i) for i in rid]
    return list(range(1, len(records) + 1))


def default_category_ids(num_classes: int) -> list[int]:
    """``1..K``: the category ids of sources without their own (YOLO, VOC; ``label + 1``)."""
    return list(range(1, num_classes + 1))


@dataclass
class DatasetRecords:
    """A data set in memory: class names and the records of each split.

    Attributes:
        names: class names; a record's label ``k`` means ``names[k]``.
        splits: split name (``train``, ``val``, ...) → records, in file order.
        category_ids: the source's category id of each label (COCO ``categories[].id``, in label
            order), or None for sources without ids (YOLO, VOC), whose ids are ``label + 1``.
        image_roots: split → the folder its images were found in (printed by the commands).
    """

    names: list[str]
    splits: dict[str, list[ImageRecord]]
    category_ids: list[int] | None = None
    image_roots: dict[str, Path] = field(default_factory=dict)

    def coco_category_ids(self) -> list[int]:
        """The category id of each label: the source's ids, else ``1..K`` (detopt's convention)."""
        if self.category_ids is not None:
            return list(self.category_ids)
        return default_category_ids(len(self.names))

    def all_records(self) -> list[ImageRecord]:
        """Every record of every split, split by split."""
        return [r for recs in self.splits.values() for r in recs]

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.splits.values())

    @property
    def num_boxes(self) -> int:
        return sum(len(r) for v in self.splits.values() for r in v)

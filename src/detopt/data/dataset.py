"""Loading for training and evaluation: a torch ``Dataset`` over records, a collate, a loader factory.

Images are decoded with OpenCV (BGR → RGB), letterboxed to a square (aspect kept, padded with
114) and returned as ``uint8 [3, S, S]`` tensors with their boxes mapped the same way. A RAM cache
keeps the decoded, resized images (filled up front, so DataLoader workers share it copy-on-write).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detopt.constants import PAD_VALUE
from detopt.data.defects import Defect, count_by_kind, refuse_or_warn
from detopt.data.image_io import DEFAULT_MAX_PIXELS, check_images, decode_image
from detopt.data.transforms._shapes import scale_polygon
from detopt.data.transforms.letterbox import (
    LetterboxMeta,
    letterbox_boxes,
    letterbox_image,
    letterbox_meta,
    resize_to_meta,
)
from detopt.data.transforms.pipeline import Compose
from detopt.data.transforms.sample import Sample
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords, ImageRecord

if TYPE_CHECKING:
    from detopt.data.formats import ImagesDir

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``(image uint8 [S, S, 3], boxes float32 [N, 4] xyxy, labels int64 [N]) -> the same``."""


class DetectionDataset(Dataset):
    """Letterboxed images and their boxes.

    Args:
        records: the images (crowd boxes are kept and flagged; losses usually ignore them).
        imgsz: side of the square network input.
        cache: keep decoded, resized images in RAM (decoded up front with threads).
        transform: applied after the letterbox (a plain ``(img, boxes, labels)`` callable).
        pipeline: an augmentation :class:`~detopt.data.transforms.pipeline.Compose`; it replaces
            the letterbox (it ends at ``imgsz`` itself) and draws other images for mosaic,
            MixUp and copy-paste from this data set. Item ``i`` of epoch ``e`` uses
            ``numpy.random.default_rng([seed, e, i])``: reproducible with any number of workers.
        seed: the pipeline's seed.
        pad_value: grey level of the padding.
        scaleup: also enlarge images smaller than ``imgsz`` (else only pad them).
        max_pixels: an image above this many pixels (read from its header) is never decoded.
        category_ids: the data set's category id of each label (what prediction records carry);
            None: ``label + 1``.

    An item is a dict: ``image`` ``uint8 [3, S, S]`` RGB, ``boxes`` ``float32 [N, 4]`` xyxy in it,
    ``labels`` ``int64 [N]``, ``crowd`` ``bool [N]``, ``index``, ``path``, ``orig_size`` (h, w) and
    ``meta`` (:class:`LetterboxMeta`, to map predictions back).
    """

    def __init__(
        self,
        records: list[ImageRecord],
        imgsz: int = 640,
        cache: bool = False,
        transform: Transform | None = None,
        pad_value: int = PAD_VALUE,
        scaleup: bool = True,
        pipeline: Compose | None = None,
        seed: int = 0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        category_ids: list[int] | None = None,
    ) -> None:
        if imgsz < 1:
            raise ValueError(f"imgsz must be >= 1, got {imgsz}")
        self.records = list(records)
        self.imgsz = int(imgsz)
        self.transform = transform
        self.pipeline = pipeline
        self.seed = int(seed)
        self.epoch = 0
        self.pad_value = int(pad_value)
        self.scaleup = scaleup
        self.max_pixels = max_pixels
        self.category_ids = None if category_ids is None else list(category_ids)
        self.skipped: dict[str, int] = {}
        self._cache: list[np.ndarray | None] | None = None
        if cache:
            self.cache_images()

    def __len__(self) -> int:
        return len(self.records)

    def _meta(self, h: int, w: int) -> LetterboxMeta:
        return letterbox_meta(h, w, self.imgsz, scaleup=self.scaleup)

    def _load_resized(self, i: int) -> tuple[np.ndarray, LetterboxMeta, tuple[int, int]]:
        r = self.records[i]
        img = decode_image(r.path, max_pixels=self.max_pixels)
        h, w = img.shape[:2]
        if (w, h) != (r.width, r.height):
            raise DetoptDataError(
                f"{r.path}: decoded size {w}x{h} differs from the annotated {r.width}x{r.height}"
            )
        meta = self._meta(h, w)
        return resize_to_meta(img, meta), meta, (h, w)

    def cache_images(self, workers: int | None = None) -> int:
        """Decode and resize every image into RAM; returns the bytes used."""
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            self._cache = [img for img, _, _ in pool.map(self._load_resized, range(len(self)))]
        return sum(im.nbytes for im in self._cache if im is not None)

    def set_epoch(self, epoch: int, epochs: int | None = None) -> None:
        """The epoch seeds the augmentation; with ``epochs`` it also drives close-mosaic."""
        self.epoch = int(epoch)
        if self.pipeline is not None and epochs is not None:
            self.pipeline.set_epoch(epoch, epochs)

    def _resized(self, i: int) -> tuple[np.ndarray, LetterboxMeta, tuple[int, int]]:
        r = self.records[i]
        if self._cache is not None and self._cache[i] is not None:
            return self._cache[i], self._meta(r.height, r.width), (r.height, r.width)
        return self._load_resized(i)

    def raw_sample(self, i: int) -> Sample:
        """Image ``i`` resized (longer side ``imgsz``, no padding) with its objects, for augmentation.

        Crowd regions are left out: mixing images loses the flags, and a crowd region trained as
        an ordinary object would teach the wrong box.
        """
        resized, meta, _ = self._resized(i)
        return self._sample(self.records[i], resized, meta)

    @staticmethod
    def _sample(r: ImageRecord, resized: np.ndarray, meta: LetterboxMeta) -> Sample:
        shifted = LetterboxMeta(meta.scale_x, meta.scale_y, 0, 0, meta.resized_w, meta.resized_h)
        masks = None
        if r.masks is not None:
            masks = [[scale_polygon(p, meta.scale_x, meta.scale_y) for p in obj] for obj in r.masks]
        s = Sample(resized, letterbox_boxes(r.boxes, shifted), r.labels, masks)
        return s.select(~np.asarray(r.crowd, bool)) if r.crowd is not None and r.crowd.any() else s

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        resized, meta, orig = self._resized(i)
        crowd = r.crowd.copy()
        if self.pipeline is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            other = lambda g: self.raw_sample(int(g.integers(len(self))))  # noqa: E731
            out = self.pipeline(self._sample(r, resized, meta), rng, other)
            img, boxes, labels = out.image, out.boxes, out.labels
            crowd = np.zeros(len(boxes), bool)  # objects of other images mix in: flags cannot follow
        else:
            img = letterbox_image(resized, self.imgsz, meta, self.pad_value)
            boxes = letterbox_boxes(r.boxes, meta)
            labels = r.labels.copy()
        if self.transform is not None:
            n = len(boxes)
            img, boxes, labels = self.transform(img, boxes, labels)
            if len(boxes) != n:  # a transform may drop boxes; crowd flags cannot follow then
                crowd = np.zeros(len(boxes), bool)
        rgb = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))
        return {
            "image": torch.from_numpy(rgb),
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32)),
            "labels": torch.from_numpy(np.asarray(labels, np.int64)),
            "crowd": torch.from_numpy(crowd),
            "index": i,
            "path": str(r.path),
            "orig_size": orig,
            "meta": meta,
        }


def check_records(
    records: list[ImageRecord],
    skip_invalid: bool = False,
    workers: int | None = None,
    what: str = "data set",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[list[ImageRecord], list[Defect]]:
    """Decode every image once (empty, truncated, non-image, too large, wrong size) before training.

    Returns:
        (the records to use, the defects found: the caller reports them).

    Raises:
        DetoptDataError: a defect and not ``skip_invalid``.
    """
    defects = check_images(records, max_pixels=max_pixels, workers=workers)
    bad = {d.image for d in defects}
    if defects and not skip_invalid:
        refuse_or_warn(what, defects, skip_invalid=False, kept=0)
    return [r for r in records if r.path not in bad], defects


def collate_detections(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; concatenate boxes, keeping which image each belongs to.

    Returns:
        ``images`` ``uint8 [B, 3, S, S]``; ``boxes`` ``float32 [M, 4]``; ``labels`` ``int64 [M]``;
        ``crowd`` ``bool [M]``; ``batch_index`` ``int64 [M]`` (image of each box); ``counts``
        ``int64 [B]`` (boxes per image); ``indices``, ``paths``, ``orig_sizes``, ``metas`` lists.
    """
    counts = torch.tensor([len(b["boxes"]) for b in batch], dtype=torch.int64)
    return {
        "images": torch.stack([b["image"] for b in batch]),
        "boxes": torch.cat([b["boxes"].reshape(-1, 4) for b in batch]) if batch else torch.zeros(0, 4),
        "labels": torch.cat([b["labels"] for b in batch]) if batch else torch.zeros(0, dtype=torch.int64),
        "crowd": torch.cat([b["crowd"] for b in batch]) if batch else torch.zeros(0, dtype=torch.bool),
        "batch_index": torch.repeat_interleave(torch.arange(len(batch)), counts),
        "counts": counts,
        "indices": [b["index"] for b in batch],
        "paths": [b["path"] for b in batch],
        "orig_sizes": [b["orig_size"] for b in batch],
        "metas": [b["meta"] for b in batch],
    }


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - user transforms may draw from the legacy global RNG
    import random

    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int = 16,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with :func:`collate_detections`, seeded shuffling and seeded workers."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_detections,
        generator=g,
        worker_init_fn=_seed_worker,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )


def read_source(
    src: str | Path,
    images_dir: ImagesDir = None,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[DatasetRecords, list[Defect]]:
    """Read a data set (COCO / YOLO / VOC) once: its records and the reader's defects (which
    :func:`split_dataset` honours). ``images_dir``, ``allow_outside_root``, ``max_pixels``: see
    :func:`~detopt.data.formats.read_dataset`."""
    from detopt.data.formats import read_dataset

    ds, defects, _ = read_dataset(
        src, images_dir=images_dir, allow_outside_root=allow_outside_root, max_pixels=max_pixels
    )
    return ds, defects


def split_dataset(
    src: str | Path,
    ds: DatasetRecords,
    defects: list[Defect],
    split: str,
    *,
    imgsz: int = 640,
    pipeline: Compose | None = None,
    seed: int = 0,
    transform: Transform | None = None,
    skip_invalid: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    cache: bool = False,
    check_images: bool = True,
) -> DetectionDataset:
    """The dataset of one split of records read by :func:`read_source` (``src`` names it in
    messages). A defect anywhere in the data set (reader defects before any image is decoded)
    stops it unless ``skip_invalid``; then defective images are left out and counted (by kind,
    with the reader's defects) in ``dataset.skipped`` and a warning."""
    if split not in ds.splits:
        raise DetoptDataError(f"{src}: no split {split!r} (has {', '.join(ds.splits) or 'none'})")
    # a defect anywhere stops it (train and val are read together); reader defects stop before decoding
    if not skip_invalid:
        refuse_or_warn(str(src), defects, skip_invalid=False, kept=0)
    records = ds.splits[split]
    if check_images:
        records, decode_defects = check_records(
            records, skip_invalid=skip_invalid, what=f"{src} [{split}]", max_pixels=max_pixels
        )
        defects = defects + decode_defects
    dataset = DetectionDataset(
        records, imgsz=imgsz, cache=cache, transform=transform, pipeline=pipeline, seed=seed,
        max_pixels=max_pixels, category_ids=ds.coco_category_ids(),
    )
    dataset.skipped = count_by_kind(defects)
    refuse_or_warn(f"{src} [{split}]", defects, skip_invalid=True, kept=len(records))
    return dataset


def dataset_from_source(
    src: str | Path,
    split: str,
    imgsz: int = 640,
    images_dir: ImagesDir = None,
    skip_invalid: bool = False,
    cache: bool = False,
    transform: Transform | None = None,
    check_images: bool = True,
    pipeline: Compose | None = None,
    seed: int = 0,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[DetectionDataset, list[str]]:
    """Read a data set (COCO / YOLO / VOC), check it and build the dataset of one split
    (:func:`read_source` then :func:`split_dataset`).

    Defects anywhere in the data set stop it with the report unless ``skip_invalid``; then the
    defective images are left out and counted (by kind) in ``dataset.skipped`` and a warning.
    ``pipeline`` and ``seed``: the augmentation of a training split (see :class:`DetectionDataset`).
    ``images_dir``, ``allow_outside_root``, ``max_pixels``: see
    :func:`~detopt.data.formats.read_dataset`. ``dataset.category_ids`` holds the data set's own
    category ids (what prediction records carry).

    Returns:
        (dataset, class names).
    """
    ds, defects = read_source(src, images_dir, allow_outside_root, max_pixels)
    dataset = split_dataset(src, ds, defects, split, imgsz=imgsz, pipeline=pipeline, seed=seed,
                            transform=transform, skip_invalid=skip_invalid, max_pixels=max_pixels,
                            cache=cache, check_images=check_images)
    return dataset, ds.names

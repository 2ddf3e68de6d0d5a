"""``detopt data validate``: read everything, decode every image, name every defect."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from detopt.data.defects import DEFECT_KINDS, UNTOUCHABLE, Defect, count_by_kind
from detopt.data.formats import ImagesDir, read_dataset
from detopt.data.image_io import DEFAULT_MAX_PIXELS, check_image
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords


@dataclass
class ValidationReport:
    """What ``validate_dataset`` found.

    Attributes:
        source: the data set validated.
        format: ``coco``/``yolo``/``voc`` (``None`` when it could not be read at all).
        images: image files referenced (clean or not).
        clean_images: images without any defect.
        boxes: boxes of the clean images.
        backgrounds: clean images without boxes (not a defect; counted).
        defects: every defect, in the order found.
        splits: split → number of clean images.
    """

    source: Path
    format: str | None
    images: int = 0
    clean_images: int = 0
    boxes: int = 0
    backgrounds: int = 0
    defects: list[Defect] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.defects

    def by_kind(self) -> dict[str, int]:
        return count_by_kind(self.defects)

    def lines(self) -> list[str]:
        """One line per defect, then the summary."""
        out = [str(d) for d in self.defects]
        if out:
            out.append("")
        fmt = self.format or "unreadable"
        split_text = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        out.append(
            f"{self.source} ({fmt}): {self.images} images ({split_text}), {self.clean_images} clean, "
            f"{self.boxes} boxes, {self.backgrounds} background images (no boxes; not a defect)"
        )
        if self.defects:
            images_hit = len({d.image for d in self.defects if d.image is not None})
            out.append(
                f"{len(self.defects)} defects in {images_hit} images: "
                + ", ".join(f"{k} {n}" for k, n in self.by_kind().items())
            )
        else:
            out.append("no defects")
        return out


def validate_dataset(
    src: str | Path,
    images_dir: ImagesDir = None,
    tolerance: float = 1.0,
    workers: int | None = None,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ValidationReport:
    """Read a data set, decode every image and collect every defect.

    Besides what the readers find (see :data:`~detopt.data.defects.DEFECT_KINDS`), every image is
    decoded completely (empty, truncated and non-image files; declared size vs decoded size; EXIF
    rotation) and an image used by two splits is reported (it leaks the validation set).

    Args:
        src: anything :func:`~detopt.data.formats.read_dataset` reads.
        images_dir: COCO only: the folder ``file_name``s are relative to (one, or split → folder).
        tolerance: how far (px) a box may pass the image border.
        workers: decoding threads (default: all cores).
        allow_outside_root: accept paths outside the data set's root (default: ``outside_root``).
        max_pixels: larger images are ``too_large`` (from the header) and never decoded.

    Raises:
        DetoptDataError: ``src`` does not exist or is no data set at all.
    """
    src = Path(src)
    try:
        ds, defects, fmt_name = read_dataset(
            src, images_dir=images_dir, tolerance=tolerance, allow_outside_root=allow_outside_root,
            max_pixels=max_pixels,
        )
    except DetoptDataError as e:
        if not e.defects:
            raise
        return ValidationReport(source=src, format=None, defects=list(e.defects))
    report = ValidationReport(source=src, format=fmt_name, defects=list(defects))
    _check_split_overlap(ds, report)
    clean_paths = {r.path for r in ds.all_records()}
    untouchable = {d.image for d in defects if d.kind in UNTOUCHABLE}
    declared = {r.path: (r.width, r.height) for r in ds.all_records()}
    other = sorted(
        {
            d.image
            for d in defects
            if d.image is not None
            and d.image not in clean_paths
            and d.kind not in UNTOUCHABLE
            and d.image not in untouchable
            and d.image.is_file()
        }
    )
    todo = sorted(clean_paths) + other
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(
            pool.map(
                lambda p: check_image(p, *declared.get(p, (None, None)), max_pixels=max_pixels), todo
            )
        )
    bad_images = {d.image for d in report.defects if d.image is not None}
    for _, found in results:
        for d in found:
            report.defects.append(d)
            bad_images.add(d.image)
    report.images = len(clean_paths) + len({d.image for d in defects if d.image is not None} - clean_paths)
    clean = [r for r in ds.all_records() if r.path not in bad_images]
    report.clean_images = len(clean)
    report.boxes = sum(len(r) for r in clean)
    report.backgrounds = sum(len(r) == 0 for r in clean)
    report.splits = {k: sum(r.path not in bad_images for r in v) for k, v in ds.splits.items()}
    return report


def _check_split_overlap(ds: DatasetRecords, report: ValidationReport) -> None:
    first: dict[Path, str] = {}
    for split, recs in ds.splits.items():
        for r in recs:
            key = r.path.resolve()
            if key in first and first[key] != split:
                report.defects.append(
                    Defect(
                        "duplicate_id", r.path, None, f"image is in both {first[key]!r} and {split!r}", r.path
                    )
                )
            first.setdefault(key, split)


__all__ = ["DEFECT_KINDS", "ValidationReport", "validate_dataset"]

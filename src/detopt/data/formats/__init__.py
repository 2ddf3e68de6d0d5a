"""Data set formats: COCO json, YOLO (ultralytics) and Pascal VOC, read into one record list.

``read_dataset`` detects the format, reads everything and returns the clean records with every
defect found; ``load_dataset`` is the strict form used for training (defects stop it unless
``skip_invalid``); ``write_dataset`` writes any of the three formats safely.
"""

from __future__ import annotations

from pathlib import Path

from detopt.data.defects import Defect, refuse_or_warn
from detopt.data.formats._common import IMAGE_MODES, output_dir
from detopt.data.formats.coco import read_coco, split_name, write_coco
from detopt.data.formats.voc import is_voc_dir, read_voc, write_voc
from detopt.data.formats.yolo import is_yolo_dir, read_yolo, write_yolo
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords

FORMATS = ("coco", "yolo", "voc")


def detect_format(src: str | Path) -> tuple[str, Path]:
    """(format, the path to read) of a data set given as a file or a folder.

    A ``.json`` is COCO, a ``.yaml`` is YOLO; a folder is VOC when it holds ``Annotations/``, YOLO
    when it holds a ``data.yaml``, and COCO when it holds ``*.json`` files (one per split).

    Raises:
        DetoptDataError: nothing there, or no format recognized.
    """
    p = Path(src)
    if not p.exists():
        raise DetoptDataError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "coco", p
        if p.suffix.lower() in (".yaml", ".yml"):
            return "yolo", p
        raise DetoptDataError(
            f"{p}: not a data set (expected a COCO .json, a YOLO data.yaml or a VOC folder)"
        )
    if is_voc_dir(p):
        return "voc", p
    y = is_yolo_dir(p)
    if y is not None:
        return "yolo", y
    if any(p.glob("*.json")):
        return "coco", p
    raise DetoptDataError(f"{p}: no data set found (no Annotations/ folder, data.yaml or *.json)")


def read_dataset(
    src: str | Path, images_dir: str | Path | None = None, tolerance: float = 1.0
) -> tuple[DatasetRecords, list[Defect], str]:
    """Read any supported data set.

    Args:
        src: a COCO json (or a folder of them, one per split), a YOLO data.yaml (or its folder),
            or a VOC root.
        images_dir: COCO only: the folder ``file_name``s are relative to.
        tolerance: how far (px) a box may pass the image border; it is clipped.

    Returns:
        (records without the defective images, every defect, the format name).
    """
    fmt_name, path = detect_format(src)
    if fmt_name == "yolo":
        ds, defects = read_yolo(path, tolerance=tolerance)
    elif fmt_name == "voc":
        ds, defects = read_voc(path, tolerance=tolerance)
    elif path.is_file():
        ds, defects = read_coco(path, images_dir=images_dir, tolerance=tolerance)
    else:
        ds, defects = _read_coco_dir(path, images_dir, tolerance)
    return ds, defects, fmt_name


def _read_coco_dir(
    path: Path, images_dir: str | Path | None, tolerance: float
) -> tuple[DatasetRecords, list[Defect]]:
    files = sorted(path.glob("*.json"))
    names: list[str] | None = None
    splits = {}
    defects: list[Defect] = []
    for f in files:
        split = f.stem if len(files) > 1 else split_name(f)
        ds, found = read_coco(f, images_dir=images_dir, tolerance=tolerance, split=split)
        defects.extend(found)
        if names is None:
            names = ds.names
        elif ds.names != names:
            raise DetoptDataError(
                f"{f}: its categories {ds.names} differ from those of {files[0].name} {names}"
            )
        splits.update(ds.splits)
    return DatasetRecords(names=names or [], splits=splits), defects


def load_dataset(
    src: str | Path, images_dir: str | Path | None = None, tolerance: float = 1.0, skip_invalid: bool = False
) -> DatasetRecords:
    """Read a data set for training: defects stop it (with the full report) unless ``skip_invalid``.

    With ``skip_invalid`` the defective images are left out and a warning counts them by kind.

    Raises:
        DetoptDataError: the data set has defects and ``skip_invalid`` is False; ``.defects``
            lists them.
    """
    ds, defects, _ = read_dataset(src, images_dir=images_dir, tolerance=tolerance)
    refuse_or_warn(str(src), defects, skip_invalid, kept=ds.num_images)
    return ds


def write_dataset(
    ds: DatasetRecords,
    dst: str | Path,
    to: str,
    mode: str = "copy",
    overwrite: bool = False,
    sources: list[Path] | None = None,
) -> list[str]:
    """Write ``ds`` as ``to`` (``coco``/``yolo``/``voc``) into the folder ``dst``.

    Images are copied (``mode="copy"``) or symlinked (``"link"``), never moved. The folder is
    written aside and renamed into place at the end.

    Args:
        sources: the data set's own paths; ``dst`` may not lie inside them.

    Returns:
        notes on what the format could not hold (counted) and on renamed files.

    Raises:
        DetoptDataError: ``dst`` is not empty and not ``overwrite``; ``dst`` inside a source.
    """
    if to not in FORMATS:
        raise DetoptDataError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    if mode not in IMAGE_MODES:
        raise DetoptDataError(f"mode must be one of {', '.join(IMAGE_MODES)}, got {mode!r}")
    image_roots = {r.path.parent for r in ds.all_records()}
    writer = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}[to]
    with output_dir(Path(dst), [*(sources or []), *image_roots], overwrite) as tmp:
        return writer(ds, tmp, mode)


__all__ = [
    "FORMATS",
    "detect_format",
    "load_dataset",
    "read_coco",
    "read_dataset",
    "read_voc",
    "read_yolo",
    "write_dataset",
]

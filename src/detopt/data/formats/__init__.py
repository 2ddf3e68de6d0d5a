"""Data set formats: COCO json, YOLO (ultralytics) and Pascal VOC, read into one record list.

``read_dataset`` detects the format, reads everything and returns the clean records with every
defect found; ``load_dataset`` is the strict form used for training (defects stop it unless
``skip_invalid``); ``write_dataset`` writes any of the three formats safely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from detopt.data.defects import Defect, refuse_or_warn
from detopt.data.formats._common import IMAGE_MODES, announce, forget_announcements, output_dir
from detopt.data.formats.coco import read_coco, split_name, standard_split, write_coco
from detopt.data.formats.voc import is_voc_dir, read_voc, voc_roots, write_voc
from detopt.data.formats.yolo import is_yolo_dir, read_yolo, write_yolo
from detopt.data.image_io import DEFAULT_MAX_PIXELS, check_images
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords

FORMATS = ("coco", "yolo", "voc")

ImagesDir = str | Path | Mapping[str, str | Path] | None
"""Where COCO ``file_name``s are relative to: one folder for every split, or split → folder."""

def detect_format(src: str | Path) -> tuple[str, Path]:
    """(format, the path to read) of a data set given as a file or a folder.

    A ``.json`` is COCO, a ``.yaml`` is YOLO; a folder is VOC when it holds ``Annotations/`` (or is a
    ``VOCdevkit`` holding ``VOC2007``/``VOC2012``), YOLO when it holds a ``data.yaml``, and COCO when
    it holds ``*.json`` files (one per split) or an ``annotations/`` folder of them (the COCO download).

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
    if is_voc_dir(p) or voc_roots(p):
        return "voc", p
    y = is_yolo_dir(p)
    if y is not None:
        return "yolo", y
    if any(p.glob("*.json")):
        return "coco", p
    if (p / "annotations").is_dir() and any((p / "annotations").glob("*.json")):
        return "coco", p / "annotations"
    raise DetoptDataError(
        f"{p}: no data set found (no Annotations/ folder, VOCdevkit, data.yaml, *.json or annotations/*.json)"
    )


def read_dataset(
    src: str | Path,
    images_dir: ImagesDir = None,
    tolerance: float = 1.0,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[DatasetRecords, list[Defect], str]:
    """Read any supported data set.

    Args:
        src: a COCO json (or a folder of them, one per split, or the folder holding
            ``annotations/``), a YOLO data.yaml (or its folder), a VOC root or a ``VOCdevkit``.
        images_dir: COCO only: the folder ``file_name``s are relative to, for every split or per
            split (``{"train": DIR, "val": DIR}``; splits not named are found as usual).
        tolerance: how far (px) a box may pass the image border; it is clipped.
        allow_outside_root: accept paths that resolve outside the data set's root (else each is an
            ``outside_root`` defect and is never opened).
        max_pixels: images above this many pixels (read from the header) are ``too_large``.

    Returns:
        (records without the defective images, every defect, the format name).
    """
    fmt_name, path = detect_format(src)
    kw = {"tolerance": tolerance, "allow_outside_root": allow_outside_root, "max_pixels": max_pixels}
    if fmt_name == "yolo":
        ds, defects = read_yolo(path, **kw)
    elif fmt_name == "voc":
        ds, defects = read_voc(path, **kw)
    elif path.is_file():
        split = split_name(path)
        ds, defects = read_coco(path, images_dir=_images_for(images_dir, split), split=split, **kw)
        announce(f"{path}: split {split!r}, images in {ds.image_roots[split]}")
    else:
        ds, defects = _read_coco_dir(path, images_dir, **kw)
    return ds, defects, fmt_name


def _images_for(images_dir: ImagesDir, split: str) -> Path | None:
    if images_dir is None:
        return None
    if isinstance(images_dir, Mapping):
        d = images_dir.get(split)
        return None if d is None else Path(d)
    return Path(images_dir)


def coco_split_files(folder: Path) -> dict[str, Path]:
    """Split name → COCO json of a folder of them.

    Standard names give the split (``instances_val2017.json`` → ``val``, ``train.json``,
    ``lvis_v1_train.json``, ``zhiyuan_objv2_train.json``); when ``instances_*.json`` files are there
    (the COCO download), the captions and keypoints files beside them are left out. Other names,
    and names two files would share, keep the file's stem; a folder with a single json of no
    standard name reads it as ``train`` (or what its name holds, see ``split_name``).
    """
    files = sorted(folder.glob("*.json"))
    instances = [f for f in files if f.stem.lower().startswith("instances_")]
    if instances:
        files = instances
    if len(files) == 1:
        return {split_name(files[0]): files[0]}
    std = {f: standard_split(f) for f in files}
    counts: dict[str, int] = {}
    for v in std.values():
        if v is not None:
            counts[v[0]] = counts.get(v[0], 0) + 1
    out: dict[str, Path] = {}
    for f in files:
        v = std[f]
        out[v[0] if v is not None and counts[v[0]] == 1 else f.stem] = f
    return out


def _read_coco_dir(
    path: Path,
    images_dir: ImagesDir,
    tolerance: float,
    allow_outside_root: bool,
    max_pixels: int | None,
) -> tuple[DatasetRecords, list[Defect]]:
    files = coco_split_files(path)
    names: list[str] | None = None
    cat_ids: list[int] | None = None
    splits = {}
    roots = {}
    defects: list[Defect] = []
    first = next(iter(files.values()))
    for split, f in files.items():
        ds, found = read_coco(
            f,
            images_dir=_images_for(images_dir, split),
            tolerance=tolerance,
            split=split,
            allow_outside_root=allow_outside_root,
            max_pixels=max_pixels,
        )
        defects.extend(found)
        if names is None:
            names, cat_ids = ds.names, ds.category_ids
        elif ds.names != names or ds.category_ids != cat_ids:
            raise DetoptDataError(
                f"{f}: its categories {_cats(ds.names, ds.category_ids)} differ from those of "
                f"{first.name} {_cats(names, cat_ids)}"
            )
        splits.update(ds.splits)
        roots.update(ds.image_roots)
    announce(
        f"{path}: "
        + "; ".join(f"{f.name} -> split {s!r}, images in {roots[s]}" for s, f in files.items())
    )
    return DatasetRecords(names=names or [], splits=splits, category_ids=cat_ids, image_roots=roots), defects


def _cats(names: list[str], ids: list[int] | None) -> str:
    text = ", ".join(f"{i}: {n!r}" for i, n in zip(ids or [], names, strict=False))
    return "{" + (text[:200] + " ..." if len(text) > 200 else text) + "}"


def load_dataset(
    src: str | Path,
    images_dir: ImagesDir = None,
    tolerance: float = 1.0,
    skip_invalid: bool = False,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> DatasetRecords:
    """Read a data set for training: defects stop it (with the full report) unless ``skip_invalid``.

    With ``skip_invalid`` the defective images are left out and a warning counts them by kind.
    ``allow_outside_root`` and ``max_pixels``: see :func:`read_dataset`.

    Raises:
        DetoptDataError: the data set has defects and ``skip_invalid`` is False; ``.defects``
            lists them.
    """
    ds, defects, _ = read_dataset(
        src, images_dir=images_dir, tolerance=tolerance, allow_outside_root=allow_outside_root,
        max_pixels=max_pixels,
    )
    refuse_or_warn(str(src), defects, skip_invalid, kept=ds.num_images)
    return ds


def write_dataset(
    ds: DatasetRecords,
    dst: str | Path,
    to: str,
    mode: str = "copy",
    overwrite: bool = False,
    sources: list[Path] | None = None,
    skip_invalid: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
) -> list[str]:
    """Write ``ds`` as ``to`` (``coco``/``yolo``/``voc``) into the folder ``dst``.

    Images are copied (``mode="copy"``) or symlinked (``"link"``), never moved. Each image is
    decoded completely first, whatever the flags: a file that is not a decodable image (or is
    above ``max_pixels``) is never copied or linked: it stops the write (nothing is written) unless
    ``skip_invalid``, which leaves it out and warns with the count. The folder is written aside and
    renamed into place at the end.

    Args:
        sources: the data set's own paths; ``dst`` may not lie inside them.
        workers: decoding threads (default: all cores).

    Returns:
        notes on what the format could not hold (counted) and on renamed files.

    Raises:
        DetoptDataError: ``dst`` is not empty and not ``overwrite``; ``dst`` inside a source; an
            image does not decode and not ``skip_invalid``.
    """
    if to not in FORMATS:
        raise DetoptDataError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    if mode not in IMAGE_MODES:
        raise DetoptDataError(f"mode must be one of {', '.join(IMAGE_MODES)}, got {mode!r}")
    records = ds.all_records()
    defects = check_images(records, max_pixels=max_pixels, workers=workers)
    if defects:
        bad = {d.image for d in defects}
        refuse_or_warn(str(dst), defects, skip_invalid, kept=sum(r.path not in bad for r in records))
        ds = replace(ds, splits={k: [r for r in v if r.path not in bad] for k, v in ds.splits.items()})
    image_roots = {r.path.parent for r in ds.all_records()}
    writer = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}[to]
    with output_dir(Path(dst), [*(sources or []), *image_roots], overwrite) as tmp:
        return writer(ds, tmp, mode)


__all__ = [
    "FORMATS",
    "announce",
    "coco_split_files",
    "detect_format",
    "forget_announcements",
    "load_dataset",
    "read_coco",
    "read_dataset",
    "read_voc",
    "read_yolo",
    "write_dataset",
]

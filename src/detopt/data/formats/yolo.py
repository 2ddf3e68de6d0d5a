"""YOLO (ultralytics layout): ``data.yaml`` + ``images/<split>/*`` + ``labels/<split>/*.txt``.

A label line is ``class cx cy w h`` normalized to [0, 1], or ``class x1 y1 x2 y2 ... xn yn``
(a normalized polygon; its box is the polygon's bounding box). A label file is found by replacing
the last ``images`` folder of the image's path with ``labels`` and the extension with ``.txt``.
An image without a label file, or with an empty one, is a background image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detopt.data.defects import (
    IMAGE_SUFFIXES,
    Defect,
    RootGuard,
    boxes_array,
    check_box,
    is_dir,
    is_file,
    parse_float,
)
from detopt.data.formats._common import UniqueNames, fmt, place_image, write_text
from detopt.data.image_io import DEFAULT_MAX_PIXELS, header_defect
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords, ImageRecord

SPLITS = ("train", "val", "test")


def label_path(image: Path) -> Path:
    """The label file of an image: last ``images`` folder → ``labels``, extension → ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _fail(path: Path, msg: str) -> DetoptDataError:
    return DetoptDataError(f"{path}: malformed_file: {msg}", [Defect("malformed_file", path, None, msg)])


def read_data_yaml(path: Path) -> tuple[Path, list[str], dict[str, list[Path]]]:
    """Parse a ``data.yaml``: (root, class names, split → list of folders or list files).

    Raises:
        DetoptDataError: not yaml, no ``names``, or names that are not 0..n-1.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DetoptDataError(f"{path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise _fail(path, f"not valid yaml ({what})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise _fail(path, "a data.yaml needs 'names'")
    raw = data["names"]
    if isinstance(raw, dict):
        if not all(type(k) is int for k in raw) or sorted(raw) != list(range(len(raw))):
            raise _fail(path, f"'names' keys must be 0..{len(raw) - 1}, got {list(raw)!r:.80}")
        names = [str(raw[k]) for k in range(len(raw))]
    elif isinstance(raw, list):
        names = [str(n) for n in raw]
    else:
        raise _fail(path, f"'names' must be a list or a mapping, got {raw!r:.80}")
    if len(set(names)) != len(names):
        raise _fail(path, "a class name appears twice in 'names'")
    if "nc" in data and data["nc"] != len(names):
        raise _fail(path, f"'nc' is {data['nc']!r} but 'names' has {len(names)} entries")
    root = Path(str(data["path"])) if data.get("path") else Path(".")
    if not root.is_absolute():
        root = path.parent / root
    splits: dict[str, list[Path]] = {}
    for s in SPLITS:
        v = data.get(s)
        if v is None:
            continue
        entries = v if isinstance(v, list) else [v]
        if not all(isinstance(e, str) for e in entries):
            raise _fail(path, f"'{s}' must be a path or a list of paths, got {v!r:.80}")
        splits[s] = [e if e.is_absolute() else root / e for e in map(Path, entries)]
    if not splits:
        raise _fail(path, "a data.yaml needs at least one of 'train', 'val', 'test'")
    return root, names, splits


def _list_images(entry: Path, yaml_path: Path, guard: RootGuard, defects: list[Defect]) -> list[Path]:
    """Image files of a split entry: a folder (searched recursively) or a text file of image paths.

    A listed path that resolves outside the guard's root is an ``outside_root`` defect (file and line of the
    list) and left out; folder contents are checked image by image in :func:`_read_one`.
    """
    if is_dir(entry):
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and is_file(p))
    if is_file(entry) and entry.suffix == ".txt":
        out = []
        try:
            text = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            defects.append(Defect("malformed_file", entry, None, f"unreadable list file: {e}"))
            return []
        for k, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                p = Path(line)
                p = p if p.is_absolute() else entry.parent / p
            except (ValueError, OSError) as e:
                defects.append(Defect("malformed_file", entry, k, f"not a path: {line!r:.80} ({e})"))
                continue
            why = guard.why(p)
            if why:
                defects.append(Defect("outside_root", entry, k, why, p.absolute()))
                continue
            out.append(p)
        return out
    defects.append(
        Defect("malformed_file", yaml_path, None, f"split entry {entry} is neither a folder nor a .txt list")
    )
    return []


def _parse_label_line(
    fields: list[str], nc: int, w: int, h: int, tolerance: float, file: Path, line: int, image: Path
) -> tuple[tuple[int, list[float], np.ndarray | None] | None, list[Defect]]:
    n = len(fields)
    if n != 5 and (n < 7 or n % 2 == 0):
        return None, [
            Defect(
                "field_count",
                file,
                line,
                f"{n} fields; expected 5 (class cx cy w h) or 1 + 2k, k >= 3 (class and a polygon)",
                image,
            )
        ]
    values = [parse_float(t) for t in fields]
    bad = [t for t, v in zip(fields, values, strict=True) if v is None]
    if bad:
        return None, [Defect("not_a_number", file, line, f"not a number: {bad[0]!r}", image)]
    if not all(math.isfinite(v) for v in values):
        return None, [Defect("non_finite", file, line, f"NaN or infinity in {' '.join(fields)!r}", image)]
    c = values[0]
    if c != int(c):
        return None, [Defect("not_a_number", file, line, f"class id {fields[0]!r} is not an integer", image)]
    if not 0 <= c < nc:
        return None, [
            Defect(
                "class_out_of_range",
                file,
                line,
                f"class id {int(c)} is outside the {nc} names (0..{nc - 1})",
                image,
            )
        ]
    poly = None
    if n == 5:
        cx, cy, bw, bh = values[1:]
        if bw <= 0 or bh <= 0:
            return None, [
                Defect("non_positive_size", file, line, f"width/height {fields[3]} {fields[4]}", image)
            ]
        box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
    else:
        xy = np.asarray(values[1:], np.float64).reshape(-1, 2) * (w, h)
        box = [float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())]
        poly = xy.reshape(-1).astype(np.float32)
    box, found = check_box(box, w, h, tolerance, file, line, f"class {int(c)}", image)
    if found:
        return None, found
    return (int(c), box, poly), []


def read_yolo(
    yaml_path: str | Path,
    tolerance: float = 1.0,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[DatasetRecords, list[Defect]]:
    """Read an ultralytics ``data.yaml`` data set into records; every problem becomes a :class:`Defect`.

    Image sizes are read from the file headers (images are not decoded here; ``validate`` does).
    The data set's root is the data.yaml's folder: ``path:``, the split entries, list-file lines,
    images and label files that resolve outside it (``..``, absolute paths, symlinks) are
    ``outside_root`` defects and are never opened, unless ``allow_outside_root``.

    Raises:
        DetoptDataError: the data.yaml itself is missing or malformed.
    """
    path = Path(yaml_path)
    root, names, split_entries = read_data_yaml(path)
    base = path.parent.absolute()
    guard = RootGuard(base, allow_outside_root)
    nc = len(names)
    defects: list[Defect] = []
    splits: dict[str, list[ImageRecord]] = {}
    why = guard.why(root)
    if why:
        defects.append(Defect("outside_root", path, None, f"'path': {why}"))
    for split, entries in split_entries.items():
        records: list[ImageRecord] = []
        for entry in entries:
            if why:
                continue
            outside = guard.why(entry)
            if outside:
                defects.append(Defect("outside_root", path, None, f"'{split}': {outside}"))
                continue
            images = _list_images(entry, path, guard, defects)
            if is_dir(entry):
                defects.extend(_labels_without_images(entry, images))
            for img in images:
                rec, found = _read_one(img, nc, tolerance, guard, max_pixels)
                defects.extend(found)
                if rec is not None:
                    records.append(rec)
        splits[split] = records
    return DatasetRecords(names=names, splits=splits), defects


def _read_one(
    img: Path, nc: int, tolerance: float, guard: RootGuard, max_pixels: int | None
) -> tuple[ImageRecord | None, list[Defect]]:
    img = img.absolute()
    why = guard.why(img)
    if why:
        return None, [Defect("outside_root", img, None, why, img)]
    if not is_file(img):
        return None, [Defect("missing_image", img, None, "listed image does not exist", img)]
    size, bad = header_defect(img, max_pixels)
    if bad is not None:
        return None, [bad]
    w, h = size
    lp = label_path(img)
    why = guard.why(lp)
    if why:
        return None, [Defect("outside_root", lp, None, f"label file {why}", img)]
    try:
        text = lp.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ImageRecord(path=img, width=w, height=h), []
    except (OSError, UnicodeDecodeError) as e:
        return None, [Defect("malformed_file", lp, None, f"unreadable label file: {e}", img)]
    boxes, labels, polys, found = [], [], [], []
    for i, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields:
            continue
        obj, bad = _parse_label_line(fields, nc, w, h, tolerance, lp, i, img)
        found.extend(bad)
        if obj is not None:
            labels.append(obj[0])
            boxes.append(obj[1])
            polys.append([] if obj[2] is None else [obj[2]])
    if found:
        return None, found
    has_poly = any(polys)
    return ImageRecord(
        path=img,
        width=w,
        height=h,
        boxes=boxes_array(boxes),
        labels=np.asarray(labels, np.int64),
        masks=polys if has_poly else None,
    ), []


def _labels_without_images(image_dir: Path, images: list[Path]) -> list[Defect]:
    label_dir = label_path(image_dir / "x.jpg").parent
    if label_dir == image_dir or not label_dir.is_dir():
        return []
    expected = {label_path(p.absolute()) for p in images}
    return [
        Defect("label_without_image", p, None, "no image has this label file's name", None)
        for p in sorted(label_dir.absolute().rglob("*.txt"))
        if p not in expected
    ]


def label_line(label: int, box: list[float], width: int, height: int) -> str:
    """One label line ``class cx cy w h`` (normalized, 7 decimals) of an absolute xyxy box."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    bw, bh = (x2 - x1) / width, (y2 - y1) / height
    return f"{label} {fmt(cx, 7)} {fmt(cy, 7)} {fmt(bw, 7)} {fmt(bh, 7)}\n"


DATA_YAML_HEADER = (
    "# no 'path' key: the root is the folder of this file, for detopt and for ultralytics\n"
    "# (ultralytics resolves a relative 'path', even '.', against its working directory)\n"
)


def data_yaml_text(splits: list[str], names: list[str]) -> str:
    """A ``data.yaml`` next to ``images/<split>`` folders. It has no ``path`` key: ultralytics then
    takes the yaml's own folder as the root (``check_det_dataset``), as detopt does, so the file
    works from any working directory and the folder can move."""
    spec: dict[str, Any] = {
        **{s: f"images/{s}" for s in splits},
        "nc": len(names),
        "names": dict(enumerate(names)),
    }
    return DATA_YAML_HEADER + yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)


def write_yolo(ds: DatasetRecords, out: Path, mode: str) -> list[str]:
    """Write ``out/data.yaml``, ``out/images/<split>/`` and ``out/labels/<split>/``.

    YOLO labels cannot mark crowd regions nor hold masks next to boxes: crowd boxes are left out
    and masks dropped, and both are counted in the returned notes.
    """
    odd = [s for s in ds.splits if s not in SPLITS]
    if odd:
        raise DetoptDataError(
            f"YOLO data.yaml knows the splits {', '.join(SPLITS)} only; rename split(s) "
            f"{', '.join(map(repr, odd))}"
        )
    notes: list[str] = []
    crowd_dropped = masks_dropped = 0
    for split, records in ds.splits.items():
        used = UniqueNames(by_stem=True)
        for r in records:
            name = used.take(r.path.name)
            place_image(r.path, out / "images" / split / name, mode)
            lines = []
            for j in range(len(r)):
                if r.crowd[j]:
                    crowd_dropped += 1
                    continue
                masks_dropped += bool(r.masks is not None and r.masks[j])
                lines.append(label_line(int(r.labels[j]), r.boxes[j].tolist(), r.width, r.height))
            write_text(out / "labels" / split / (Path(name).stem + ".txt"), "".join(lines))
        if used.renamed:
            notes.append(f"{split}: {used.renamed} images renamed because their file stems collided")
    write_text(out / "data.yaml", data_yaml_text(list(ds.splits), ds.names))
    if crowd_dropped:
        notes.append(f"{crowd_dropped} crowd boxes left out: YOLO labels cannot mark crowd regions")
    if masks_dropped:
        notes.append(f"{masks_dropped} object masks dropped: YOLO detection labels hold boxes only")
    return notes


def is_yolo_dir(path: Path) -> Path | None:
    """The ``data.yaml`` (or ``*.yaml`` with ``names``) inside a folder, if any."""
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return path / name
    return None

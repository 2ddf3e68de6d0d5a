"""Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/*``, ``ImageSets/Main/<split>.txt``.

VOC pixel coordinates are 1-based and inclusive: ``xmin = x1 + 1`` and ``xmax = x2`` for the
continuous box ``[x1, x2)`` used inside detopt (the devkit's width is ``xmax - xmin + 1``).
Writers keep 3 decimals, so round trips stay within 0.001 px. ``difficult`` objects become crowd
records (both are regions evaluation ignores). Class names come from ``classes.txt`` at the root
when present (detopt writes it, to keep the class order), else from the objects, sorted.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from detopt.data.defects import Defect, RootGuard, boxes_array, check_box, inside_root, is_file, parse_float
from detopt.data.formats._common import UniqueNames, announce, fmt, place_image, write_text
from detopt.data.image_io import DEFAULT_MAX_PIXELS, header_defect
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords, ImageRecord


def is_voc_dir(path: Path) -> bool:
    return (path / "Annotations").is_dir()


def _split_files(root: Path, allow_outside: bool, defects: list[Defect]) -> dict[str, list[str]]:
    """Split name → image ids, from ``ImageSets/Main/*.txt`` (per-class ``<class>_<split>.txt`` files,
    which have two columns, are ignored). Without any, one ``train`` split of every annotation."""
    main = root / "ImageSets" / "Main"
    splits: dict[str, list[str]] = {}
    if main.is_dir():
        for f in sorted(main.glob("*.txt")):
            why = inside_root(f, root, allow_outside)
            if why:
                defects.append(Defect("outside_root", f, None, f"split list {why}"))
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                defects.append(Defect("malformed_file", f, None, f"unreadable split list: {e}"))
                continue
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines and all(len(ln.split()) == 1 for ln in lines):
                splits[f.stem] = lines
    if not splits:
        splits["train"] = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    return splits


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = None if node is None else node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def voc_roots(path: Path) -> list[Path]:
    """The VOC roots of a ``VOCdevkit`` as downloaded (``VOC2007/``, ``VOC2012/``; also when ``path``
    holds the ``VOCdevkit`` folder), sorted; empty when ``path`` is not one."""
    for base in (path, path / "VOCdevkit"):
        if base.is_dir():
            found = sorted(p for p in base.iterdir() if p.is_dir() and is_voc_dir(p))
            if found:
                return found
    return []


def _standard_splits(lists: dict[Path, dict[str, list[str]]]) -> tuple[dict[Path, dict[str, list[str]]], str]:
    """VOC's split lists as detopt's ``train``/``val``, and a line saying how.

    A root with ``trainval`` and ``test`` (VOC2007) trains on ``trainval`` and validates on ``test``;
    a root with ``trainval`` only (VOC2012) then joins the training set (the usual "07+12"). Without
    any ``test``, ``train``/``val`` are used as they are and ``trainval`` (their union) is dropped.
    Other list names are kept.
    """
    with_test = any("trainval" in v and "test" in v for v in lists.values())
    out: dict[Path, dict[str, list[str]]] = {}
    said = []
    for root, v in lists.items():
        m = {k: ids for k, ids in v.items() if k not in ("train", "val", "trainval", "test")}
        if with_test and "trainval" in v:
            m["train"] = v["trainval"]
            said.append(f"{root.name} trainval -> train")
            if "test" in v:
                m["val"] = v["test"]
                said.append(f"{root.name} test -> val")
        else:
            for k in ("train", "val", "test"):
                if k in v:
                    m[k] = v[k]
            if "trainval" in v and not ("train" in v or "val" in v):
                m["train"] = v["trainval"]
                said.append(f"{root.name} trainval -> train")
        out[root] = m
    return out, "; ".join(said)


def read_voc(
    root: str | Path,
    tolerance: float = 1.0,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[DatasetRecords, list[Defect]]:
    """Read a VOC folder (or a ``VOCdevkit`` of several years) into records; every problem becomes a
    :class:`Defect`.

    Annotation files must resolve inside ``Annotations/`` and images (``<filename>``) inside
    ``JPEGImages/`` (``..``, absolute names and symlinks resolved): others are ``outside_root``
    defects and never opened, unless ``allow_outside_root``. ``<path>`` (the annotator's own
    absolute path) is never read. Image headers are read: ``too_large`` above ``max_pixels``.
    Splits: see :func:`_standard_splits`; several years are joined split by split.

    Raises:
        DetoptDataError: ``root`` is neither a VOC folder nor a VOCdevkit; the years' class lists
            (``classes.txt``) differ.
    """
    root = Path(root).absolute()
    roots = [root] if is_voc_dir(root) else voc_roots(root)
    if not roots:
        raise DetoptDataError(f"{root}: not a VOC folder (no Annotations/, no VOC2007/ or VOC2012/)")
    defects: list[Defect] = []
    fixed = {r: _class_file(r, allow_outside_root) for r in roots}
    given = {tuple(v) for v in fixed.values() if v is not None}
    if len(given) > 1:
        raise DetoptDataError(f"{root}: the classes.txt files of {', '.join(r.name for r in roots)} differ")
    fixed_names = list(next(iter(given))) if given else None
    lists, said = _standard_splits({r: _split_files(r, allow_outside_root, defects) for r in roots})
    if len(roots) > 1 or said:
        announce(f"{root}: VOC {', '.join(r.name for r in roots)}" + (f"; {said}" if said else ""))
    parsed: dict[tuple[Path, str], tuple[ImageRecord, list[str]] | None] = {}
    seen_images: dict[Path, str] = {}
    for r, split_ids in lists.items():
        guards = tuple(RootGuard(r / sub, allow_outside_root) for sub in ("Annotations", "JPEGImages"))
        for image_id in dict.fromkeys(i for ids in split_ids.values() for i in ids):
            xml = r / "Annotations" / f"{image_id}.xml"
            rec, obj_names, found = _read_xml(xml, r, tolerance, fixed_names, guards, max_pixels)
            if rec is not None and rec.path in seen_images:
                found.append(
                    Defect(
                        "duplicate_id",
                        xml,
                        None,
                        f"image {rec.path.name} is also the image of {seen_images[rec.path]}.xml",
                        rec.path,
                    )
                )
            defects.extend(found)
            if rec is not None:
                seen_images.setdefault(rec.path, image_id)
            parsed[r, image_id] = None if found or rec is None else (rec, obj_names)
    names = (
        fixed_names
        if fixed_names is not None
        else sorted({n for v in parsed.values() if v is not None for n in v[1]})
    )
    index = {n: k for k, n in enumerate(names)}
    splits: dict[str, list[ImageRecord]] = {}
    for r, split_ids in lists.items():
        for split, ids in split_ids.items():
            out = splits.setdefault(split, [])
            for image_id in ids:
                item = parsed.get((r, image_id))
                if item is not None:
                    rec, obj_names = item
                    rec.labels = np.asarray([index[n] for n in obj_names], np.int64)
                    out.append(rec)
    image_roots = {s: roots[0] / "JPEGImages" for s in splits} if len(roots) == 1 else {}
    return DatasetRecords(names=names, splits=splits, image_roots=image_roots), defects


def _class_file(root: Path, allow_outside: bool) -> list[str] | None:
    """The class names of ``root/classes.txt`` (detopt writes it to keep the order), or None."""
    names_file = root / "classes.txt"
    if not names_file.is_file():
        return None
    why = inside_root(names_file, root, allow_outside)
    if why:
        raise DetoptDataError(
            f"{names_file}: outside_root: {why}", [Defect("outside_root", names_file, None, why)]
        )
    try:
        text = names_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DetoptDataError(f"{names_file}: malformed_file: {e}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _read_xml(
    xml: Path,
    root: Path,
    tolerance: float,
    names: list[str] | None,
    guards: tuple[RootGuard, RootGuard],
    max_pixels: int | None,
) -> tuple[ImageRecord | None, list[str], list[Defect]]:
    why = guards[0].why(xml)
    if why:
        return None, [], [Defect("outside_root", xml, None, f"annotation {why}")]
    try:
        tree = ET.parse(xml)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return (
            None,
            [],
            [Defect("missing_image", xml, None, "listed in ImageSets but has no annotation file")],
        )
    except (OSError, ValueError) as e:
        return None, [], [Defect("malformed_file", xml, None, f"cannot read the annotation: {e}")]
    except (ET.ParseError, UnicodeDecodeError) as e:
        line = getattr(e, "position", (None,))[0]
        return None, [], [Defect("malformed_file", xml, line, f"not valid xml: {e}")]
    ann = tree.getroot()
    filename = _text(ann, "filename") or f"{xml.stem}.jpg"
    try:
        img = (root / "JPEGImages" / filename).absolute()
    except (ValueError, OSError) as e:
        return None, [], [Defect("malformed_file", xml, None, f"<filename> {filename!r:.80}: {e}")]
    why = guards[1].why(img)
    if why:
        return None, [], [Defect("outside_root", xml, None, f"<filename> {filename!r:.80}: {why}", img)]
    if not is_file(img):
        return None, [], [Defect("missing_image", xml, None, f"its image {img} does not exist", img)]
    header, bad = header_defect(img, max_pixels)
    if bad is not None:
        return None, [], [bad]
    size = ann.find("size")
    w_s, h_s = _text(size, "width"), _text(size, "height")
    w, h = parse_float(w_s or ""), parse_float(h_s or "")
    if w is None or h is None or w == 0 or h == 0:
        w, h = header  # many VOC-style exports leave <size> out or write 0: the image header knows
    if not (math.isfinite(w) and math.isfinite(h)) or w != int(w) or h != int(h):
        return None, [], [Defect("not_a_number", xml, None, f"<size> {w_s}x{h_s} is not two integers", img)]
    if w < 0 or h < 0:
        return None, [], [Defect("non_positive_size", xml, None, f"<size> {w_s}x{h_s}", img)]
    w, h = int(w), int(h)
    boxes, obj_names, crowd, defects = [], [], [], []
    for k, obj in enumerate(ann.findall("object"), 1):
        name = _text(obj, "name")
        where = f"object {k} ({name!r})"
        if not name:
            defects.append(Defect("malformed_file", xml, None, f"object {k} has no <name>", img))
            continue
        if names is not None and name not in names:
            defects.append(Defect("class_out_of_range", xml, None, f"{where}: class not in classes.txt", img))
        bb = obj.find("bndbox")
        texts = [_text(bb, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        if any(t is None for t in texts):
            defects.append(
                Defect("field_count", xml, None, f"{where}: <bndbox> needs xmin ymin xmax ymax", img)
            )
            continue
        vals = [parse_float(t) for t in texts]
        if any(v is None for v in vals):
            defects.append(
                Defect("not_a_number", xml, None, f"{where}: not a number in <bndbox> {texts}", img)
            )
            continue
        xmin, ymin, xmax, ymax = vals
        box, found = check_box([xmin - 1, ymin - 1, xmax, ymax], w, h, tolerance, xml, None, where, img)
        if found:
            defects.extend(found)
            continue
        boxes.append(box)
        obj_names.append(name)
        crowd.append((_text(obj, "difficult") or "0") not in ("0", ""))
    if defects:
        return None, [], defects
    rec = ImageRecord(
        path=img,
        width=w,
        height=h,
        boxes=boxes_array(boxes),
        labels=np.zeros(len(boxes), np.int64),
        crowd=np.asarray(crowd, bool),
    )
    return rec, obj_names, []


def voc_xml(r: ImageRecord, filename: str, names: list[str]) -> str:
    """The VOC annotation of one image."""
    out = [
        "<annotation>",
        "  <folder>JPEGImages</folder>",
        f"  <filename>{escape(filename)}</filename>",
        "  <size>",
        f"    <width>{r.width}</width>",
        f"    <height>{r.height}</height>",
        "    <depth>3</depth>",
        "  </size>",
        "  <segmented>0</segmented>",
    ]
    for j in range(len(r)):
        x1, y1, x2, y2 = (float(v) for v in r.boxes[j])
        out += [
            "  <object>",
            f"    <name>{escape(names[int(r.labels[j])])}</name>",
            "    <pose>Unspecified</pose>",
            "    <truncated>0</truncated>",
            f"    <difficult>{int(bool(r.crowd[j]))}</difficult>",
            "    <bndbox>",
            f"      <xmin>{fmt(x1 + 1, 3)}</xmin>",
            f"      <ymin>{fmt(y1 + 1, 3)}</ymin>",
            f"      <xmax>{fmt(x2, 3)}</xmax>",
            f"      <ymax>{fmt(y2, 3)}</ymax>",
            "    </bndbox>",
            "  </object>",
        ]
    out.append("</annotation>\n")
    return "\n".join(out)


def write_voc(ds: DatasetRecords, out: Path, mode: str) -> list[str]:
    """Write ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt`` and ``classes.txt``.

    VOC keeps every image in one folder, so file stems are made unique across splits. Masks are
    dropped (VOC annotations hold boxes only) and counted in the returned notes.
    """
    used = UniqueNames(by_stem=True)
    notes: list[str] = []
    masks_dropped = 0
    for split, records in ds.splits.items():
        ids = []
        for r in records:
            name = used.take(r.path.name)
            place_image(r.path, out / "JPEGImages" / name, mode)
            write_text(out / "Annotations" / f"{Path(name).stem}.xml", voc_xml(r, name, ds.names))
            ids.append(Path(name).stem)
            if r.masks is not None:
                masks_dropped += sum(bool(m) for m in r.masks)
        write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    write_text(out / "classes.txt", "".join(f"{n}\n" for n in ds.names))
    if used.renamed:
        notes.append(f"{used.renamed} images renamed because their file stems collided")
    if masks_dropped:
        notes.append(f"{masks_dropped} object masks dropped: VOC annotations hold boxes only")
    return notes

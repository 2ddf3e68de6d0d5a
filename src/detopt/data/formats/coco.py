"""COCO json: one file per split (``images``, ``annotations``, ``categories``).

Boxes are ``[x, y, w, h]`` absolute (continuous coordinates). Category ids may be any integers;
in the records, label ``k`` is the ``k``-th category in increasing id order, and the ids are kept
(``DatasetRecords.category_ids``) so prediction files carry them. Writers keep a COCO source's ids
(``1..K`` in class-name order for sources without ids) and write ``file_name``s relative to the
json's folder.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from pathlib import Path
from typing import Any

import numpy as np

from detopt.data.defects import Defect, RootGuard, boxes_array, check_box, inside_root, is_dir, is_file
from detopt.data.formats._common import UniqueNames, fmt, place_image, write_text
from detopt.data.image_io import DEFAULT_MAX_PIXELS, header_defect
from detopt.errors import DetoptDataError
from detopt.structures.records import (
    DatasetRecords,
    ImageRecord,
    coco_image_ids,
    default_category_ids,
    polygons_area,
)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _hashable(v: Any) -> bool:
    return v is None or isinstance(v, (int, str, float))


def _lookup(table: dict[Any, Any], key: Any) -> Any:
    """``table.get(key)``, None also for an unhashable key (a list where an id belongs)."""
    return table.get(key) if _hashable(key) else None


def _image_path(images: dict[Any, dict], image_id: Any) -> Path | None:
    rec = _lookup(images, image_id)
    return None if rec is None else rec["path"]


_STANDARD_SPLIT = re.compile(r"^(?:.*[_\-])?(train|val|valid|validation|test)(\d{4})?$")


def standard_split(path: Path) -> tuple[str, str] | None:
    """``(split, folder)`` of a standard annotation file name, or None.

    ``instances_val2017.json`` → ``("val", "val2017")``; ``train.json`` → ``("train", "train")``;
    LVIS ``lvis_v1_train`` and Objects365 ``zhiyuan_objv2_train`` → ``("train", "train")``;
    ``valid``/``validation`` → ``val``. ``folder`` is the image folder the download names.
    """
    m = _STANDARD_SPLIT.match(path.stem.lower())
    if m is None:
        return None
    split = "val" if m.group(1) in ("valid", "validation") else m.group(1)
    return split, m.group(1) + (m.group(2) or "")


def data_root_of(json_path: Path) -> Path:
    """The data set's root for a COCO json: the parent of an ``annotations/`` folder, else the json's
    folder."""
    here = json_path.absolute().parent
    return here.parent if here.name.lower() == "annotations" else here


def image_root_candidates(json_path: Path, split: str) -> list[Path]:
    """Where a split's ``file_name``s may be relative to, in the order tried: ``<root>/<split>2017/``
    (or the year the file names), ``<root>/<split>/``, ``<root>/images/<split>/``, ``<root>/images/``,
    ``<root>/``, then the json's folder and an ``images`` folder next to it."""
    root, here = data_root_of(json_path), json_path.absolute().parent
    std = standard_split(json_path)
    folders = [std[1]] if std is not None and std[1] != split else []
    out = [root / f for f in [*folders, f"{split}2017", split]]
    out += [root / "images" / split, root / "images", root, here, here / "images"]
    return list(dict.fromkeys(out))


def _image_root(json_path: Path, images: list[dict], images_dir: Path | None, split: str) -> Path:
    """Where ``file_name``s are relative to: ``images_dir``, else the first of
    :func:`image_root_candidates` that holds one of the first images, else the json's folder."""
    if images_dir is not None:
        return Path(images_dir).absolute()
    names = [
        im["file_name"] for im in images[:20] if isinstance(im, dict) and isinstance(im.get("file_name"), str)
    ]
    for root in image_root_candidates(json_path, split):
        if is_dir(root) and any(inside_root(root / n, root) is None and is_file(root / n) for n in names):
            return root
    return json_path.absolute().parent


def read_coco(
    json_path: str | Path,
    images_dir: str | Path | None = None,
    tolerance: float = 1.0,
    split: str | None = None,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[DatasetRecords, list[Defect]]:
    """Read a COCO json into records; every problem becomes a :class:`Defect`.

    Every image path must resolve (``..``, absolute names, symlinks) inside the images folder
    (``outside_root`` otherwise; nothing outside is opened); every image's header is read (not
    decoded): a file that is not an image is ``unreadable_image``, one above ``max_pixels`` is
    ``too_large``.

    Args:
        json_path: the COCO json.
        images_dir: folder the ``file_name``s are relative to (default: found next to the json).
        tolerance: boxes may pass the image border by this many pixels (they are clipped).
        split: the split's name (default: ``train``/``val``/``test`` when the file name says so,
            else the file's stem).
        allow_outside_root: accept image paths outside the images folder.
        max_pixels: largest ``width * height`` accepted (None: no limit).

    Returns:
        (records without the defective images, defects).

    Raises:
        DetoptDataError: the file is missing, is not json, or lacks ``images``/``categories``.
    """
    path = Path(json_path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DetoptDataError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise DetoptDataError(
            f"{path}: malformed_file: not valid json ({what})",
            [Defect("malformed_file", path, getattr(e, "lineno", None), f"not valid json: {what}")],
        ) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("categories"), list)
    ):
        msg = "a COCO json needs an 'images' list and a 'categories' list"
        raise DetoptDataError(f"{path}: malformed_file: {msg}", [Defect("malformed_file", path, None, msg)])
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        msg = "'annotations' must be a list"
        raise DetoptDataError(f"{path}: malformed_file: {msg}", [Defect("malformed_file", path, None, msg)])
    defects: list[Defect] = []

    # categories
    cats: list[tuple[int, str]] = []
    seen_names: set[str] = set()
    cat_ids: set[int] = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            defects.append(
                Defect(
                    "malformed_file",
                    path,
                    None,
                    f"categories[{i}]: needs an integer 'id' and a string 'name', got {c!r:.80}",
                )
            )
            continue
        if c["id"] in cat_ids:
            defects.append(
                Defect("duplicate_id", path, None, f"categories[{i}]: category id {c['id']} used twice")
            )
            continue
        if c["name"] in seen_names:
            defects.append(
                Defect("duplicate_id", path, None, f"categories[{i}]: category name {c['name']!r} used twice")
            )
            continue
        seen_names.add(c["name"])
        cat_ids.add(c["id"])
        cats.append((int(c["id"]), c["name"]))
    cats.sort()
    names = [n for _, n in cats]
    cat_index = {cid: k for k, (cid, _) in enumerate(cats)}

    # images
    split = split or split_name(path)
    root = _image_root(path, data["images"], None if images_dir is None else Path(images_dir), split)
    guard = RootGuard(root, allow_outside_root)
    images: dict[Any, dict] = {}
    bad_images: set[Any] = set()
    order: list[Any] = []
    seen_files: dict[str, Any] = {}
    for i, im in enumerate(data["images"]):
        if (
            not isinstance(im, dict)
            or not (_is_int(im.get("id")) or isinstance(im.get("id"), str))
            or not isinstance(im.get("file_name"), str)
            or not im["file_name"]
        ):
            defects.append(
                Defect(
                    "malformed_file",
                    path,
                    None,
                    f"images[{i}]: needs an integer 'id' and a 'file_name', got {im!r:.80}",
                )
            )
            continue
        iid, fname = im["id"], im["file_name"]
        try:
            img_path = (root / fname).absolute()
        except (ValueError, OSError) as e:  # e.g. an embedded NUL byte
            defects.append(
                Defect("malformed_file", path, None, f"images[{i}]: file_name {fname!r:.80}: {e}")
            )
            continue
        if iid in images:
            defects.append(
                Defect(
                    "duplicate_id",
                    path,
                    None,
                    f"images[{i}]: image id {iid!r} used twice ({fname!r})",
                    img_path,
                )
            )
            bad_images.add(iid)
            continue
        if fname in seen_files:
            defects.append(
                Defect(
                    "duplicate_id",
                    path,
                    None,
                    f"images[{i}]: file_name {fname!r} used twice (ids {seen_files[fname]!r}, {iid!r})",
                    img_path,
                )
            )
            continue
        seen_files[fname] = iid
        w, h = im.get("width"), im.get("height")
        outside = guard.why(img_path)
        if outside:
            defects.append(
                Defect("outside_root", path, None, f"images[{i}] (id {iid!r:.40}): {outside}", img_path)
            )
            bad_images.add(iid)
        elif not is_file(img_path):
            defects.append(
                Defect(
                    "missing_image",
                    path,
                    None,
                    f"images[{i}] (id {iid!r}): {img_path} does not exist",
                    img_path,
                )
            )
            bad_images.add(iid)
        else:
            size, bad = header_defect(img_path, max_pixels)
            if bad is not None:
                defects.append(bad)
                bad_images.add(iid)
            elif w is None or h is None:
                w, h = size
        if iid not in bad_images:
            if (
                not (_is_number(w) and _is_number(h))
                or not (math.isfinite(w) and math.isfinite(h))
                or w != int(w)
                or h != int(h)
            ):
                defects.append(
                    Defect(
                        "not_a_number",
                        path,
                        None,
                        f"images[{i}] (id {iid!r}): width/height must be integers, got {w!r}, {h!r}",
                        img_path,
                    )
                )
                bad_images.add(iid)
            elif w <= 0 or h <= 0:
                defects.append(
                    Defect(
                        "non_positive_size",
                        path,
                        None,
                        f"images[{i}] (id {iid!r}): image size {w}x{h}",
                        img_path,
                    )
                )
                bad_images.add(iid)
        images[iid] = {
            "path": img_path,
            "width": w,
            "height": h,
            "boxes": [],
            "labels": [],
            "crowd": [],
            "masks": [],
        }
        order.append(iid)

    # annotations
    has_masks = False
    seen_ann: set[Any] = set()
    for i, a in enumerate(anns):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            defects.append(Defect("malformed_file", path, None, f"{where}: not an object: {a!r:.80}"))
            continue
        if "id" in a:
            where += f" (id {a['id']!r:.40})"
            if not (_is_int(a["id"]) or isinstance(a["id"], str)):
                problem = ("malformed_file", f"{where}: an id must be an integer")
            elif a["id"] in seen_ann:
                problem = ("duplicate_id", f"{where}: annotation id used twice")
            else:
                problem = None
            if problem is not None:
                kind, message = problem
                img_path = _image_path(images, a.get("image_id"))
                defects.append(Defect(kind, path, None, message, img_path))
                if img_path is not None:
                    bad_images.add(a["image_id"])
                continue
            seen_ann.add(a["id"])
        iid = a.get("image_id")
        rec = _lookup(images, iid)
        if rec is None:
            defects.append(
                Defect("missing_image", path, None, f"{where}: image_id {iid!r} is not among the images")
            )
            continue
        img_path = rec["path"]
        cid = a.get("category_id")
        k = _lookup(cat_index, cid)
        if k is None:
            defects.append(
                Defect(
                    "class_out_of_range",
                    path,
                    None,
                    f"{where}: category_id {cid!r} is not among the categories",
                    img_path,
                )
            )
            bad_images.add(iid)
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            defects.append(
                Defect(
                    "field_count",
                    path,
                    None,
                    f"{where}: bbox must be [x, y, w, h], got {bbox!r:.80}",
                    img_path,
                )
            )
            bad_images.add(iid)
            continue
        if not all(_is_number(v) for v in bbox):
            defects.append(
                Defect("not_a_number", path, None, f"{where}: bbox has a non-number: {bbox!r:.80}", img_path)
            )
            bad_images.add(iid)
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        if iid in bad_images:
            continue
        box, found = check_box(
            [x, y, x + bw, y + bh],
            int(rec["width"]),
            int(rec["height"]),
            tolerance,
            path,
            None,
            where,
            img_path,
        )
        if found:
            defects.extend(found)
            bad_images.add(iid)
            continue
        polys: list[np.ndarray] = []
        seg = a.get("segmentation")
        if isinstance(seg, list) and seg:
            for p in seg:
                if not isinstance(p, list) or len(p) < 6 or len(p) % 2 or not all(_is_number(v) for v in p):
                    defects.append(
                        Defect(
                            "field_count",
                            path,
                            None,
                            f"{where}: a polygon must hold an even number (>= 6) of numbers",
                            img_path,
                        )
                    )
                    bad_images.add(iid)
                    break
                polys.append(np.asarray(p, np.float32))
            has_masks = has_masks or bool(polys)
        rec["boxes"].append(box)
        rec["labels"].append(k)
        rec["crowd"].append(bool(a.get("iscrowd", 0)))
        rec["masks"].append(polys)

    records = [
        ImageRecord(
            path=r["path"],
            width=int(r["width"]),
            height=int(r["height"]),
            boxes=boxes_array(r["boxes"]),
            labels=np.asarray(r["labels"], np.int64),
            crowd=np.asarray(r["crowd"], bool),
            masks=r["masks"] if has_masks else None,
            image_id=iid if _is_int(iid) else None,
        )
        for iid in order
        if iid not in bad_images
        for r in [images[iid]]
    ]
    cat_list = [cid for cid, _ in cats]
    ds = DatasetRecords(
        names=names, splits={split: records}, category_ids=cat_list, image_roots={split: root}
    )
    return ds, defects


def split_name(path: Path) -> str:
    """The split a file name names: a standard name (:func:`standard_split`), else ``val``/``test``/
    ``train`` when the name holds one, else ``train``."""
    std = standard_split(path)
    if std is not None:
        return std[0]
    stem = path.stem.lower()
    for s in ("val", "test", "train"):
        if s in stem:
            return s
    return "train"


def coco_dict(
    records: list[ImageRecord],
    names: list[str],
    file_names: list[str],
    category_ids: list[int] | None = None,
) -> dict:
    """The COCO json of one split; image ids are kept when all are unique ints.

    Args:
        records: the split's images.
        names: class names.
        file_names: each record's ``file_name`` (relative to where the json will be).
        category_ids: the category id of each label (default ``1..K``).
    """
    ids_of = default_category_ids(len(names)) if category_ids is None else list(category_ids)
    if len(ids_of) != len(names):
        raise ValueError(f"{len(ids_of)} category ids for {len(names)} class names")
    images, annotations = [], []
    ann_id = 0
    for iid, r, fname in zip(coco_image_ids(records), records, file_names, strict=True):
        images.append({"id": iid, "file_name": fname, "width": int(r.width), "height": int(r.height)})
        for j in range(len(r)):
            x1, y1, x2, y2 = (float(v) for v in r.boxes[j])
            ann_id += 1
            polys = r.masks[j] if r.masks is not None else []
            ann = {
                "id": ann_id,
                "image_id": iid,
                "category_id": int(ids_of[int(r.labels[j])]),
                "bbox": [
                    float(fmt(x1, 3)),
                    float(fmt(y1, 3)),
                    float(fmt(x2 - x1, 3)),
                    float(fmt(y2 - y1, 3)),
                ],
                "area": float(fmt(polygons_area(polys) if polys else (x2 - x1) * (y2 - y1), 3)),
                "iscrowd": int(bool(r.crowd[j])),
                "segmentation": [[float(fmt(float(v), 2)) for v in p] for p in polys],
            }
            annotations.append(ann)
    cats = [{"id": int(i), "name": name, "supercategory": ""} for i, name in zip(ids_of, names, strict=True)]
    return {
        "info": {"description": "written by detopt"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": cats,
    }


def write_coco(ds: DatasetRecords, out: Path, mode: str) -> list[str]:
    """Write ``out/<split>.json`` and the images under ``out/images/<split>/``.

    Category ids are the source's own (a COCO source keeps its ids), else ``1..K``.

    Returns:
        notes on what changed on the way (renamed files).
    """
    notes = []
    for split, records in ds.splits.items():
        used = UniqueNames(by_stem=False)
        file_names = []
        for r in records:
            name = used.take(r.path.name)
            place_image(r.path, out / "images" / split / name, mode)
            file_names.append(f"images/{split}/{name}")
        d = coco_dict(records, ds.names, file_names, ds.category_ids)
        write_text(out / f"{split}.json", json.dumps(d, ensure_ascii=False, separators=(",", ":")))
        if used.renamed:
            notes.append(f"{split}: {used.renamed} images renamed because their file names collided")
    return notes

"""COCO json: one file per split (``images``, ``annotations``, ``categories``).

Boxes are ``[x, y, w, h]`` absolute (continuous coordinates). Category ids may be any integers;
in the records, label ``k`` is the ``k``-th category in increasing id order. Writers give the
categories ids ``1..K`` in class-name order and image ``file_name``s relative to the json's folder.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from detopt.data.defects import Defect, boxes_array, check_box
from detopt.data.formats._common import UniqueNames, fmt, place_image, write_text
from detopt.data.image_io import read_image_size
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords, ImageRecord


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _hashable(v: Any) -> bool:
    return v is None or isinstance(v, (int, str, float))


def _image_path(images: dict[Any, dict], image_id: Any) -> Path | None:
    return images[image_id]["path"] if _hashable(image_id) and image_id in images else None


def _image_root(json_path: Path, images: list[dict], images_dir: Path | None) -> Path:
    """Where ``file_name``s are relative to: ``images_dir``, else the json's folder or an ``images``
    folder next to it or its parent, whichever holds the first images."""
    if images_dir is not None:
        return Path(images_dir)
    here = json_path.parent
    candidates = [here, here / "images", here.parent / "images", here.parent]
    names = [
        im["file_name"] for im in images[:20] if isinstance(im, dict) and isinstance(im.get("file_name"), str)
    ]
    for root in candidates:
        if any((root / n).is_file() for n in names):
            return root
    return here


def read_coco(
    json_path: str | Path,
    images_dir: str | Path | None = None,
    tolerance: float = 1.0,
    split: str | None = None,
) -> tuple[DatasetRecords, list[Defect]]:
    """Read a COCO json into records; every problem becomes a :class:`Defect`.

    Args:
        json_path: the COCO json.
        images_dir: folder the ``file_name``s are relative to (default: found next to the json).
        tolerance: boxes may pass the image border by this many pixels (they are clipped).
        split: the split's name (default: ``train``/``val``/``test`` when the file name says so,
            else the file's stem).

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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DetoptDataError(
            f"{path}: malformed_file: not valid json ({e})",
            [Defect("malformed_file", path, getattr(e, "lineno", None), f"not valid json: {e}")],
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
    root = _image_root(path, data["images"], None if images_dir is None else Path(images_dir))
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
        img_path = (root / fname).absolute()
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
        if not img_path.is_file():
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
        elif w is None or h is None:
            try:
                w, h = read_image_size(img_path)
            except Exception as e:
                defects.append(Defect("unreadable_image", img_path, None, f"not an image: {e}", img_path))
                bad_images.add(iid)
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
        try:
            rec = images.get(iid)
        except TypeError:
            rec = None
        if rec is None:
            defects.append(
                Defect("missing_image", path, None, f"{where}: image_id {iid!r} is not among the images")
            )
            continue
        img_path = rec["path"]
        cid = a.get("category_id")
        try:
            k = cat_index.get(cid)
        except TypeError:
            k = None
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
    return DatasetRecords(names=names, splits={split or split_name(path): records}), defects


def split_name(path: Path) -> str:
    """``train``/``val``/``test`` when a file name says so (``instances_val2017.json``), else ``train``."""
    stem = path.stem.lower()
    for s in ("val", "test", "train"):
        if s in stem:
            return s
    return "train"


def coco_dict(records: list[ImageRecord], names: list[str], file_names: list[str]) -> dict:
    """The COCO json of one split (categories ``1..K``); image ids are kept when all are unique ints.

    Args:
        records: the split's images.
        names: class names.
        file_names: each record's ``file_name`` (relative to where the json will be).
    """
    images, annotations = [], []
    ids = [r.image_id for r in records]
    keep_ids = all(i is not None for i in ids) and len(set(ids)) == len(ids)
    ann_id = 0
    for n, (r, fname) in enumerate(zip(records, file_names, strict=True)):
        iid = int(r.image_id) if keep_ids else n + 1
        images.append({"id": iid, "file_name": fname, "width": int(r.width), "height": int(r.height)})
        for j in range(len(r)):
            x1, y1, x2, y2 = (float(v) for v in r.boxes[j])
            ann_id += 1
            polys = r.masks[j] if r.masks is not None else []
            ann = {
                "id": ann_id,
                "image_id": iid,
                "category_id": int(r.labels[j]) + 1,
                "bbox": [
                    float(fmt(x1, 3)),
                    float(fmt(y1, 3)),
                    float(fmt(x2 - x1, 3)),
                    float(fmt(y2 - y1, 3)),
                ],
                "area": float(fmt(_polygons_area(polys) if polys else (x2 - x1) * (y2 - y1), 3)),
                "iscrowd": int(bool(r.crowd[j])),
                "segmentation": [[float(fmt(float(v), 2)) for v in p] for p in polys],
            }
            annotations.append(ann)
    cats = [{"id": k + 1, "name": name, "supercategory": ""} for k, name in enumerate(names)]
    return {
        "info": {"description": "written by detopt"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": cats,
    }


def _polygons_area(polys: list[np.ndarray]) -> float:
    total = 0.0
    for p in polys:
        x, y = p[0::2].astype(np.float64), p[1::2].astype(np.float64)
        total += 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return total


def write_coco(ds: DatasetRecords, out: Path, mode: str) -> list[str]:
    """Write ``out/<split>.json`` and the images under ``out/images/<split>/``.

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
        d = coco_dict(records, ds.names, file_names)
        write_text(out / f"{split}.json", json.dumps(d, ensure_ascii=False, separators=(",", ":")))
        if used.renamed:
            notes.append(f"{split}: {used.renamed} images renamed because their file names collided")
    return notes

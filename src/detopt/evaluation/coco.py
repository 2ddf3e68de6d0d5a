"""COCO bbox evaluation with exactly pycocotools' numbers.

``evaluate_coco(gt, predictions)`` reads a COCO ground-truth dict (or json path) and a COCO
results list (or json path), checks them record by record, and evaluates with numba kernels
(``_kernels``) that reproduce ``pycocotools.cocoeval.COCOeval`` operation for operation: the same
float64 IoU arithmetic, crowd regions as ignore regions (IoA), the ``area`` field for the area
ranges, per-image maxDets truncation, the same stable orders for equal scores, 101-point
interpolation and the same means in ``summarize``.

Where pycocotools is silent or crashes, detopt decides, and says so:

* an empty results list evaluates (zeros, -1 where no ground truth is in the area range);
  pycocotools' ``loadRes([])`` crashes;
* results on images that are not in the ground truth raise an error that names them (pycocotools
  asserts without names); results whose category is not in the ground truth are skipped and
  counted in one warning (pycocotools drops them silently);
* annotations on unknown images or categories, duplicate ids, negative widths, non-finite numbers
  and missing keys raise ``DetoptInputError`` naming the record; a missing ``iscrowd`` means 0 and
  a missing ``area`` is taken from the box (both counted in one warning);
* a detection matched to a ground-truth annotation whose id is 0 counts as unmatched, exactly as
  in pycocotools (it tests the stored id for != 0); detopt warns when the ground truth has id 0;
* ``stats[0]`` is averaged at the largest ``max_dets`` (pycocotools hard-codes 100, the same
  for the default ``(1, 10, 100)``).
"""

from __future__ import annotations

import gc
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from detopt.constants import COCO_AREA_RANGES
from detopt.errors import DetoptInputError
from detopt.evaluation import _kernels as K
from detopt.structures.detections import Detections
from detopt.structures.records import ImageRecord, coco_image_ids, polygons_area

# exactly pycocotools' Params (np.linspace, not arange: the values must be bit-identical)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


class DetoptEvalWarning(UserWarning):
    """Input that evaluation accepted but changed or skipped (the message counts the records)."""


# --------------------------------------------------------------------------- reading
def _load_json(source: Any, what: str) -> tuple[Any, str]:
    """Parse a json path (str / PathLike) or pass a loaded object through.

    Returns (object, name used in error messages)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DetoptInputError(f"{what}: cannot read {path}: {e.strerror or e}") from None
        enabled = gc.isenabled()
        gc.disable()  # millions of small containers: the cyclic collector only costs time here
        try:
            return json.loads(raw), str(path)
        except json.JSONDecodeError as e:
            raise DetoptInputError(
                f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except UnicodeDecodeError as e:
            raise DetoptInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        finally:
            if enabled:
                gc.enable()
    return source, what


def _record_name(source: str, section: str, i: int, rec: Any) -> str:
    rid = f" (id {rec['id']!r})" if isinstance(rec, dict) and "id" in rec else ""
    return f"{source}: {section}[{i}]{rid}"


def _column(records: list, key: str, source: str, section: str) -> list:
    """``[r[key] for r in records]`` with an error naming the first record that lacks it."""
    try:
        return [r[key] for r in records]
    except (KeyError, TypeError):
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise DetoptInputError(
                    f"{_record_name(source, section, i, r)} is a {type(r).__name__}, not an object") from None
            if key not in r:
                raise DetoptInputError(
                    f"{_record_name(source, section, i, r)} has no {key!r} key") from None
        raise


def _numbers(values: list, source: str, section: str, records: list, key: str,
             width: int = 0, allow_bool: bool = False) -> np.ndarray:
    """float64 array of a json column (``width`` > 0: lists of that length), finite, named errors."""
    def bad(i: int, why: str) -> DetoptInputError:
        return DetoptInputError(f"{_record_name(source, section, i, records[i])}: {key} {why}")

    n = len(values)
    number_types = {int, float, bool} if allow_bool else {int, float}
    if width:
        if not set(map(type, values)) <= {list, tuple} or set(map(len, values)) - {width}:
            i = next(i for i, v in enumerate(values)
                     if not isinstance(v, (list, tuple)) or len(v) != width)
            raise bad(i, f"must be a list of {width} numbers, got {values[i]!r}")
        ok = set(map(type, chain.from_iterable(values))) <= number_types
    else:
        ok = set(map(type, values)) <= number_types
    if not ok:
        for i, v in enumerate(values):
            if any(type(x) not in number_types for x in (v if width else [v])):
                raise bad(i, f"must hold numbers, got {v!r}")
    if width:
        arr = np.fromiter(chain.from_iterable(values), np.float64, count=n * width).reshape(n, width)
    else:
        arr = np.fromiter(values, np.float64, count=n)
    finite = np.isfinite(arr) if not width else np.isfinite(arr).all(1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise bad(i, f"is not finite: {values[i]!r}")
    return arr


def _index_of(ids: list, lookup: dict, source: str, section: str, records: list, key: str,
              what: str) -> np.ndarray:
    """Map ids to indices; unknown ids raise an error naming the first record and counting all."""
    try:
        return np.fromiter((lookup[x] for x in ids), np.int64, count=len(ids))
    except (KeyError, TypeError):
        unknown = [i for i, x in enumerate(ids) if not (_hashable(x) and x in lookup)]
        i = unknown[0]
        more = f" ({len(unknown)} records in all)" if len(unknown) > 1 else ""
        raise DetoptInputError(
            f"{_record_name(source, section, i, records[i])}: {key} {ids[i]!r} is not in the {what}{more}"
        ) from None


def _check_unique(ids: list, source: str, section: str, records: list) -> None:
    if not set(map(type, ids)) <= {int, str}:
        bad = next(i for i, x in enumerate(ids) if type(x) not in (int, str))
        raise DetoptInputError(f"{_record_name(source, section, bad, records[bad])}: id must be an integer "
                               f"or a string, got {ids[bad]!r}")
    if len(set(ids)) != len(ids):
        seen: set = set()
        for i, x in enumerate(ids):
            if x in seen:
                raise DetoptInputError(f"{_record_name(source, section, i, records[i])}: duplicate id {x!r}")
            seen.add(x)


def _sorted_ids(ids: list, source: str, section: str) -> list:
    try:
        return sorted(ids)
    except TypeError:
        raise DetoptInputError(
            f"{source}: {section} ids mix types that cannot be ordered "
            f"({sorted({type(x).__name__ for x in ids})})") from None


@dataclass(frozen=True)
class CocoGroundTruth:
    """Ground truth as arrays. Images and categories are sorted by id (pycocotools' order);
    annotations keep file order.

    image_ids: list[I]; category_ids: list[K]; category_names: list[K];
    image: int64[G] image index; category: int64[G] category index; box: float64[G, 4] xywh;
    area: float64[G]; crowd: bool[G]; ann_id: int64[G] (``id_zero`` marks id == 0).
    """

    source: str
    image_ids: list
    category_ids: list
    category_names: list[str]
    image: np.ndarray
    category: np.ndarray
    box: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    id_zero: np.ndarray
    file_names: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord], names: Sequence[str],
                     category_ids: Sequence[int] | None = None,
                     file_names: Sequence[str | None] | None = None,
                     source: str = "records") -> CocoGroundTruth:
        """The ground truth of image records, in memory: the same arrays as reading the COCO json
        ``detopt`` writes for them (``coco_dict``: coordinates and areas at 3 decimals, image ids
        kept when all are unique ints, else ``1..N``; annotation ids ``1..G``), bit for bit.

        Args:
            records: the images. names: class names (label order).
            category_ids: the category id of each label (default ``label + 1``).
            file_names: each record's ``file_name`` (default None).
        """
        ids_of = list(range(1, len(names) + 1)) if category_ids is None else [int(c) for c in category_ids]
        if len(ids_of) != len(names):
            raise DetoptInputError(f"{source}: {len(ids_of)} category ids for {len(names)} class names")
        if len(set(ids_of)) != len(ids_of):
            raise DetoptInputError(f"{source}: category ids {ids_of} are not unique")
        fnames = list(file_names) if file_names is not None else [None] * len(records)
        img_ids = coco_image_ids(list(records))
        image_ids = sorted(img_ids)
        img_pos = {x: i for i, x in enumerate(image_ids)}
        name_of = dict(zip(img_ids, fnames, strict=True))
        category_ids_sorted = sorted(ids_of)
        cat_pos = {x: i for i, x in enumerate(category_ids_sorted)}
        label_to_cat = np.array([cat_pos[c] for c in ids_of], np.int64).reshape(-1)
        image, category, box, area, crowd = [], [], [], [], []
        for iid, r in zip(img_ids, records, strict=True):
            n = len(r)
            if n == 0:
                continue
            b = np.asarray(r.boxes, np.float32).astype(np.float64)
            lab = np.asarray(r.labels, np.int64)
            if lab.min() < 0 or lab.max() >= len(names):
                raise DetoptInputError(f"{r.path}: label {int(lab.max())} with {len(names)} class names")
            image.append(np.full(n, img_pos[iid], np.int64))
            category.append(label_to_cat[lab])
            xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
            box.append(_decimals(xywh, 3))
            if r.masks is not None:
                raw = [polygons_area(r.masks[j]) if r.masks[j] else (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
                       for j in range(n)]
                area.append(_decimals(np.asarray(raw, np.float64), 3))
            else:
                area.append(_decimals((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 3))
            crowd.append(np.asarray(r.crowd, bool).reshape(n))
        g = _joined(image, np.int64, 0)
        raw_names = {c: str(nm) for c, nm in zip(ids_of, names, strict=True)}
        return cls(source, image_ids, category_ids_sorted, _display_names(category_ids_sorted, raw_names),
                   g, _joined(category, np.int64, 0), _joined(box, np.float64, (0, 4)),
                   _joined(area, np.float64, 0), _joined(crowd, bool, 0), np.zeros(len(g), bool),
                   [name_of[i] for i in image_ids])

    def subset(self, image_ids: Sequence[Any]) -> CocoGroundTruth:
        """The ground truth of some images only (ids of this ground truth; their order is kept
        sorted as pycocotools sorts it). Categories stay all."""
        want = set(image_ids)
        unknown = want - set(self.image_ids)
        if unknown:
            raise DetoptInputError(f"{self.source}: subset names images not in it: {sorted(unknown)[:10]}")
        keep_img = np.array([i in want for i in self.image_ids], bool).reshape(-1)
        new_index = np.cumsum(keep_img) - 1
        rows = keep_img[self.image] if len(self.image) else np.zeros(0, bool)
        kept_ids = [i for i, k in zip(self.image_ids, keep_img, strict=True) if k]
        return CocoGroundTruth(
            self.source, kept_ids, list(self.category_ids), list(self.category_names),
            new_index[self.image[rows]].astype(np.int64), self.category[rows], self.box[rows],
            self.area[rows], self.crowd[rows], self.id_zero[rows],
            [f for f, k in zip(self.file_names, keep_img, strict=True) if k] if self.file_names else [])


@dataclass(frozen=True)
class CocoPredictions:
    """Predictions as arrays, in file order (records on skipped categories removed).

    image: int64[D]; category: int64[D]; box: float64[D, 4] xywh; score: float64[D];
    n_skipped: records dropped because their category is not in the ground truth.
    """

    source: str
    image: np.ndarray
    category: np.ndarray
    box: np.ndarray
    score: np.ndarray
    n_skipped: int = 0

    def __len__(self) -> int:
        return int(self.image.shape[0])


def _joined(parts: list[np.ndarray], dtype: Any, empty_shape: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty_shape, dtype)


def _display_names(category_ids: list, raw_names: dict) -> list[str]:
    """Category names in id order; a name used by several ids gets ``(id N)`` appended."""
    name_count: dict[str, int] = {}
    for c in category_ids:
        name_count[raw_names[c]] = name_count.get(raw_names[c], 0) + 1
    return [raw_names[c] if name_count[raw_names[c]] == 1 else f"{raw_names[c]} (id {c})"
            for c in category_ids]


def load_coco_gt(gt: Any) -> CocoGroundTruth:
    """Read and check a COCO ground truth (dict or json path). Errors name the record."""
    if isinstance(gt, CocoGroundTruth):
        return gt
    data, source = _load_json(gt, "ground truth")
    if not isinstance(data, dict):
        raise DetoptInputError(f"{source}: ground truth must be a JSON object, got {type(data).__name__}")
    for key in ("images", "categories"):
        if key not in data:
            raise DetoptInputError(f"{source}: ground truth has no {key!r} list")
    images, cats, anns = data["images"], data["categories"], data.get("annotations", [])
    for key, val in (("images", images), ("categories", cats), ("annotations", anns)):
        if not isinstance(val, list):
            raise DetoptInputError(f"{source}: {key!r} must be a list, got {type(val).__name__}")

    img_ids = _column(images, "id", source, "images")
    _check_unique(img_ids, source, "images", images)
    image_ids = _sorted_ids(img_ids, source, "images")
    img_lookup = {x: i for i, x in enumerate(image_ids)}
    names_by_id = {r["id"]: r.get("file_name") for r in images}
    file_names = [names_by_id[x] for x in image_ids]

    cat_ids = _column(cats, "id", source, "categories")
    _check_unique(cat_ids, source, "categories", cats)
    category_ids = _sorted_ids(cat_ids, source, "categories")
    cat_lookup = {x: i for i, x in enumerate(category_ids)}
    raw_names = {r["id"]: str(r.get("name", r["id"])) for r in cats}
    category_names = _display_names(category_ids, raw_names)

    ann_ids = _column(anns, "id", source, "annotations")
    _check_unique(ann_ids, source, "annotations", anns)
    image = _index_of(_column(anns, "image_id", source, "annotations"), img_lookup, source,
                      "annotations", anns, "image_id", "ground truth's images")
    category = _index_of(_column(anns, "category_id", source, "annotations"), cat_lookup, source,
                         "annotations", anns, "category_id", "ground truth's categories")
    box = _numbers(_column(anns, "bbox", source, "annotations"), source, "annotations", anns, "bbox", 4)
    _check_box_sizes(box, source, "annotations", anns)
    notes = []
    missing_area = [i for i, r in enumerate(anns) if "area" not in r]
    if missing_area:
        areas = [r.get("area", 0.0) for r in anns]
        notes.append(f"{len(missing_area)} without 'area' (took bbox w*h)")
    else:
        areas = [r["area"] for r in anns]
    area = _numbers(areas, source, "annotations", anns, "area")
    if missing_area:
        idx = np.asarray(missing_area)
        area[idx] = box[idx, 2] * box[idx, 3]
    crowd_vals = [r.get("iscrowd", 0) for r in anns]
    n_no_crowd = sum(1 for r in anns if "iscrowd" not in r)
    if n_no_crowd:
        notes.append(f"{n_no_crowd} without 'iscrowd' (took 0)")
    crowd = _numbers(crowd_vals, source, "annotations", anns, "iscrowd", allow_bool=True) != 0
    id_zero = np.fromiter((x == 0 for x in ann_ids), np.bool_, count=len(ann_ids))
    if id_zero.any():
        notes.append("one with id 0: as in pycocotools, a detection matched to it counts as a "
                     "false positive; renumber ids from 1 to avoid that")
    if notes:
        warnings.warn(f"{source}: annotations: " + "; ".join(notes), DetoptEvalWarning, stacklevel=3)
    return CocoGroundTruth(source, image_ids, category_ids, category_names, image, category, box, area,
                           crowd, id_zero, file_names)


def _check_box_sizes(box: np.ndarray, source: str, section: str, records: list) -> None:
    bad = (box[:, 2] < 0) | (box[:, 3] < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        more = f" ({int(bad.sum())} records in all)" if bad.sum() > 1 else ""
        raise DetoptInputError(
            f"{_record_name(source, section, i, records[i])}: bbox {records[i]['bbox']!r} has a negative "
            f"width or height (COCO boxes are [x, y, width, height]){more}")


def load_coco_predictions(predictions: Any, gt: CocoGroundTruth) -> CocoPredictions:
    """Read and check a COCO results list (list or json path) against the ground truth."""
    if isinstance(predictions, CocoPredictions):
        return predictions
    data, source = _load_json(predictions, "predictions")
    if not isinstance(data, list):
        raise DetoptInputError(f"{source}: predictions must be a JSON list of result records, "
                               f"got {type(data).__name__}")
    img_lookup = {x: i for i, x in enumerate(gt.image_ids)}
    image = _index_of(_column(data, "image_id", source, "predictions"), img_lookup, source,
                      "predictions", data, "image_id", f"ground truth {gt.source}")
    cats = _column(data, "category_id", source, "predictions")
    cat_lookup = {x: i for i, x in enumerate(gt.category_ids)}
    try:
        category = np.array([cat_lookup.get(x, -1) for x in cats], np.int64)
    except TypeError:  # an unhashable category_id (a list, an object) is unknown
        category = np.array([cat_lookup.get(x, -1) if _hashable(x) else -1 for x in cats], np.int64)
    box = _numbers(_column(data, "bbox", source, "predictions"), source, "predictions", data, "bbox", 4)
    _check_box_sizes(box, source, "predictions", data)
    score = _numbers(_column(data, "score", source, "predictions"), source, "predictions", data, "score")
    known = category >= 0
    n_skipped = int((~known).sum())
    if n_skipped:
        unknown = sorted({repr(cats[i]) for i in np.flatnonzero(~known)[:1000]})
        warnings.warn(
            f"{source}: skipped {n_skipped} of {len(data)} predictions whose category_id is not in "
            f"the ground truth ({', '.join(unknown[:10])}{', ...' if len(unknown) > 10 else ''})",
            DetoptEvalWarning, stacklevel=3)
        image, category, box, score = image[known], category[known], box[known], score[known]
    return CocoPredictions(source, image, category, box, score, n_skipped)


def _decimals(x: np.ndarray, d: int) -> np.ndarray:
    """Each value as its ``d``-decimal text read back (``float(f"{v:.{d}f}")``, -0 as 0): what a
    COCO json written by detopt holds for ground-truth numbers."""
    flat = [float(f"{v:.{d}f}") + 0.0 for v in np.asarray(x, np.float64).ravel().tolist()]
    return np.array(flat, np.float64).reshape(np.shape(x))


def result_values(dets: Detections) -> tuple[np.ndarray, np.ndarray]:
    """What a COCO results record holds for one image's detections: ``bbox`` ``[x, y, w, h]``
    rounded to 3 decimals and ``score`` to 5 (Python's correctly rounded ``round``), float64.
    Used by the json records and the in-memory evaluation alike, so both score the same numbers."""
    b = np.asarray(dets.boxes, np.float64).reshape(-1, 4)
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    box = np.array([round(v, 3) for v in xywh.ravel().tolist()], np.float64).reshape(-1, 4)
    score = np.array([round(float(v), 5) for v in np.asarray(dets.scores).ravel()], np.float64)
    return box, score


def predictions_from_detections(gt: CocoGroundTruth, detections: Sequence[Detections],
                                image_ids: Sequence[Any] | None = None,
                                category_ids: Sequence[int] | None = None,
                                source: str = "detections") -> CocoPredictions:
    """Detections of each image as :class:`CocoPredictions` against ``gt``, without json.

    Args:
        detections: one :class:`Detections` per image (xyxy in the image's pixels).
        image_ids: the ground-truth image id of each entry (default ``gt.image_ids``).
        category_ids: the category id of each label (default ``label + 1``); labels whose id is
            not in ``gt`` are skipped and counted in one warning, as for json results.
    """
    ids = list(gt.image_ids) if image_ids is None else list(image_ids)
    if len(ids) != len(detections):
        raise DetoptInputError(f"{source}: {len(detections)} detection lists for {len(ids)} image ids")
    img_pos = {x: i for i, x in enumerate(gt.image_ids)}
    missing = [i for i in ids if i not in img_pos]
    if missing:
        raise DetoptInputError(f"{source}: image ids not in ground truth {gt.source}: {missing[:10]}")
    cat_pos = {x: i for i, x in enumerate(gt.category_ids)}
    images, cats, boxes, scores = [], [], [], []
    for iid, d in zip(ids, detections, strict=True):
        box, score = result_values(d)
        lab = np.asarray(d.labels, np.int64).reshape(-1)
        cid = lab + 1 if category_ids is None else np.asarray(category_ids, np.int64)[lab]
        images.append(np.full(len(score), img_pos[iid], np.int64))
        cats.append(np.array([cat_pos.get(int(c), -1) for c in cid], np.int64).reshape(-1))
        boxes.append(box)
        scores.append(score)
    image = np.concatenate(images) if images else np.zeros(0, np.int64)
    category = np.concatenate(cats) if cats else np.zeros(0, np.int64)
    box = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float64)
    score = np.concatenate(scores) if scores else np.zeros(0, np.float64)
    bad = (box[:, 2] < 0) | (box[:, 3] < 0)
    if bad.any():
        raise DetoptInputError(f"{source}: {int(bad.sum())} boxes have a negative width or height")
    known = category >= 0
    n_skipped = int((~known).sum())
    if n_skipped:
        warnings.warn(f"{source}: skipped {n_skipped} of {len(score)} detections whose category id is "
                      f"not in the ground truth", DetoptEvalWarning, stacklevel=3)
        image, category, box, score = image[known], category[known], box[known], score[known]
    return CocoPredictions(source, image, category, box, score, n_skipped)


def evaluate_detections(gt: CocoGroundTruth, detections: Sequence[Detections],
                        image_ids: Sequence[Any] | None = None,
                        category_ids: Sequence[int] | None = None,
                        max_dets: Sequence[int] = (1, 10, 100),
                        area_ranges: Mapping[str, Sequence[float]] | None = None) -> CocoEvalResult:
    """:func:`evaluate_coco` of in-memory detections (see :func:`predictions_from_detections`):
    the numbers pycocotools gives for the json results detopt writes of them, with no json."""
    preds = predictions_from_detections(gt, detections, image_ids, category_ids)
    return evaluate_coco(gt, preds, max_dets=max_dets, area_ranges=area_ranges)


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class CocoEvalResult:
    """The outcome of :func:`evaluate_coco`.

    stats: float64[12] in pycocotools' order (``STAT_NAMES``), -1 where pycocotools gives -1;
    precision: float64[T, R, K, A, M]; recall: float64[T, K, A, M]; scores: float64[T, R, K, A, M]
    (pycocotools' ``eval`` arrays, same shapes and values); per_class: category name ->
    {"AP", "AP50", "AP75", "AR<maxdet>"}; ``gt``/``predictions``/``matches`` feed ``curves``.
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    per_class: dict[str, dict[str, float]]
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    max_dets: tuple[int, ...]
    area_ranges: dict[str, tuple[float, float]]
    gt: CocoGroundTruth
    predictions: CocoPredictions
    matches: DetectionMatches

    def summary_lines(self) -> list[str]:
        """The 12 lines pycocotools' ``summarize`` prints."""
        t0, t1 = self.iou_thresholds[0], self.iou_thresholds[-1]
        m = self.max_dets
        rows = [(1, None, "all", m[2]), (1, 0.5, "all", m[2]), (1, 0.75, "all", m[2]),
                (1, None, "small", m[2]), (1, None, "medium", m[2]), (1, None, "large", m[2]),
                (0, None, "all", m[0]), (0, None, "all", m[1]), (0, None, "all", m[2]),
                (0, None, "small", m[2]), (0, None, "medium", m[2]), (0, None, "large", m[2])]
        out = []
        for (ap, thr, area, md), value in zip(rows, self.stats, strict=True):
            title = "Average Precision" if ap else "Average Recall"
            kind = "(AP)" if ap else "(AR)"
            iou = f"{t0:0.2f}:{t1:0.2f}" if thr is None else f"{thr:0.2f}"
            out.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={md:>3d} ] "
                       f"= {value:0.3f}")
        return out

    def summary(self) -> str:
        """The familiar 12-line table as one text (pycocotools prints it; print it yourself)."""
        return "\n".join(self.summary_lines())

    def per_class_table(self) -> str:
        """One row per category: AP, AP50, AP75, AR, ground-truth and prediction counts."""
        keys = list(next(iter(self.per_class.values())).keys()) if self.per_class else []
        width = max([len("class")] + [len(n) for n in self.per_class])
        n_gt = np.bincount(self.gt.category[~self.gt.crowd], minlength=len(self.gt.category_ids))
        n_dt = np.bincount(self.predictions.category, minlength=len(self.gt.category_ids))
        head = f"{'class':<{width}}  " + "  ".join(f"{k:>7}" for k in keys) + f"  {'gt':>7}  {'pred':>7}"
        lines = [head]
        for k, (name, row) in enumerate(self.per_class.items()):
            vals = "  ".join(f"{v:7.3f}" if v >= 0 else f"{'-':>7}" for v in row.values())
            lines.append(f"{name:<{width}}  {vals}  {n_gt[k]:>7d}  {n_dt[k]:>7d}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"stats": [12], "stat_names": [...], "per_class": {...}, "counts": {...}}``."""
        return {
            "stats": [float(x) for x in self.stats],
            "stat_names": list(STAT_NAMES),
            "per_class": {k: {n: float(v) for n, v in row.items()} for k, row in self.per_class.items()},
            "counts": {"images": len(self.gt.image_ids), "categories": len(self.gt.category_ids),
                       "ground_truth": len(self.gt), "predictions": len(self.predictions),
                       "predictions_skipped": self.predictions.n_skipped},
            "max_dets": list(self.max_dets),
            "area_ranges": {k: list(v) for k, v in self.area_ranges.items()},
        }


@dataclass(frozen=True)
class DetectionMatches:
    """Per-detection outcome at area range "all" and the largest maxDets (for curves).

    order: int64[D'] detection indices (rank < maxDets), category by category, each in
    pycocotools' order (-score, image, rank); cat_start: int64[K + 1] offsets into ``order``;
    status: int8[T, D] (0 FP, 1 TP, 2 ignored) over all detections; n_positive: int64[K]
    non-ignored ground truth per category.
    """

    order: np.ndarray
    cat_start: np.ndarray
    status: np.ndarray
    n_positive: np.ndarray


# --------------------------------------------------------------------------- evaluation
def _check_params(iou_type: str, max_dets: Sequence[int], area_ranges: Mapping[str, Sequence[float]] | None
                  ) -> tuple[tuple[int, ...], dict[str, tuple[float, float]]]:
    if iou_type != "bbox":
        raise DetoptInputError(f"iou_type={iou_type!r}: detopt evaluates 'bbox' only "
                               "(segm and keypoints are not supported)")
    try:
        md = tuple(sorted(int(m) for m in max_dets))
    except (TypeError, ValueError):
        raise DetoptInputError(f"max_dets must be three positive integers, got {max_dets!r}") from None
    if len(md) != 3 or md[0] < 1:
        raise DetoptInputError(f"max_dets must be three positive integers, got {max_dets!r}")
    ranges = dict(COCO_AREA_RANGES if area_ranges is None else area_ranges)
    out: dict[str, tuple[float, float]] = {}
    for label, rng in ranges.items():
        try:
            lo, hi = (float(v) for v in rng)
        except (TypeError, ValueError):
            raise DetoptInputError(f"area_ranges[{label!r}] must be (low, high), got {rng!r}") from None
        if not lo <= hi:
            raise DetoptInputError(f"area_ranges[{label!r}] = {rng!r}: low must not exceed high")
        out[str(label)] = (lo, hi)
    if "all" not in out:
        raise DetoptInputError(f"area_ranges needs an 'all' range, got labels {list(out)}")
    return md, out


def evaluate_coco(gt: Any, predictions: Any, iou_type: str = "bbox",
                  max_dets: Sequence[int] = (1, 10, 100),
                  area_ranges: Mapping[str, Sequence[float]] | None = None) -> CocoEvalResult:
    """COCO bbox evaluation equal to pycocotools' ``COCOeval`` (evaluate, accumulate, summarize).

    gt: COCO dict or json path (or a :class:`CocoGroundTruth`); predictions: COCO results list or
    json path (records ``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``).
    max_dets: three per-image limits; area_ranges: label -> (low, high) in pixels², must contain
    "all" (default COCO's all/small/medium/large). Stats whose area label is absent are -1.
    """
    md, ranges = _check_params(iou_type, max_dets, area_ranges)
    g = load_coco_gt(gt)
    d = load_coco_predictions(predictions, g)
    n_img = len(g.image_ids)
    n_cat = len(g.category_ids)
    labels = list(ranges)
    area_lo = np.array([ranges[k][0] for k in labels])
    area_hi = np.array([ranges[k][1] for k in labels])

    # ground truth by (category, image, file order); detections by (category, image, -score, file order)
    g_order = np.lexsort((g.image, g.category))
    g_key = g.category[g_order] * n_img + g.image[g_order]
    d_order = np.lexsort((-d.score, d.image, d.category))
    d_key = d.category[d_order] * n_img + d.image[d_order]
    bounds = K.pair_bounds(g_key, d_key)
    status, rank = K.match_pairs(
        bounds, np.ascontiguousarray(g.box[g_order]), g.area[g_order], g.crowd[g_order], g.id_zero[g_order],
        np.ascontiguousarray(d.box[d_order]), area_lo, area_hi, IOU_THRESHOLDS, md[-1])
    # pycocotools' accumulation order within a category: -score, then image, then rank
    d_cat = d.category[d_order]
    d_score = d.score[d_order]
    acc_order = np.lexsort((-d_score, d_cat))
    cat_start = np.searchsorted(d_cat[acc_order], np.arange(n_cat + 1)).astype(np.int64)
    gs_cat = g.category[g_order]
    gs_area = g.area[g_order]
    regular = ~g.crowd[g_order]
    n_positive = np.stack([
        np.bincount(gs_cat[regular & (gs_area >= lo) & (gs_area <= hi)], minlength=n_cat)
        for lo, hi in zip(area_lo, area_hi, strict=True)], axis=1).astype(np.int64)
    precision, recall, scores = K.accumulate(acc_order, cat_start, rank, status, d_score, n_positive,
                                             np.array(md, np.int64), RECALL_THRESHOLDS)
    stats = _summarize(precision, recall, labels, md)
    per_class = _per_class(precision, recall, g.category_names, labels, md)
    a_all = labels.index("all")
    keep = rank[acc_order] < md[-1]
    kept_order = acc_order[keep]
    matches = DetectionMatches(
        order=kept_order,
        cat_start=np.searchsorted(d_cat[kept_order], np.arange(n_cat + 1)).astype(np.int64),
        status=status[a_all], n_positive=n_positive[:, a_all].copy())
    # the matches index the sorted detections; keep predictions in that same order
    d_sorted = CocoPredictions(d.source, d.image[d_order], d_cat, d.box[d_order], d_score, d.n_skipped)
    return CocoEvalResult(stats, precision, recall, scores, per_class, IOU_THRESHOLDS, RECALL_THRESHOLDS,
                          md, ranges, g, d_sorted, matches)


def _mean_valid(s: np.ndarray) -> float:
    """pycocotools' ``np.mean(s[s > -1])``, -1 when nothing is valid."""
    valid = s[s > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def _summarize(precision: np.ndarray, recall: np.ndarray, labels: list[str], md: tuple[int, ...]
               ) -> np.ndarray:
    """The 12 numbers of pycocotools' ``summarizeDets``, with its indexing and means."""
    def one(ap: bool, thr: float | None, area: str, max_det: int) -> float:
        aind = [i for i, lab in enumerate(labels) if lab == area]
        mind = [i for i, m in enumerate(md) if m == max_det]
        if ap:
            s = precision
            if thr is not None:
                s = s[np.where(thr == IOU_THRESHOLDS)[0]]
            s = s[:, :, :, aind, mind]
        else:
            s = recall
            if thr is not None:
                s = s[np.where(thr == IOU_THRESHOLDS)[0]]
            s = s[:, :, aind, mind]
        return _mean_valid(s)

    m0, m1, m2 = md
    return np.array([
        one(True, None, "all", m2), one(True, 0.5, "all", m2), one(True, 0.75, "all", m2),
        one(True, None, "small", m2), one(True, None, "medium", m2), one(True, None, "large", m2),
        one(False, None, "all", m0), one(False, None, "all", m1), one(False, None, "all", m2),
        one(False, None, "small", m2), one(False, None, "medium", m2), one(False, None, "large", m2),
    ])


def _per_class(precision: np.ndarray, recall: np.ndarray, names: list[str], labels: list[str],
               md: tuple[int, ...]) -> dict[str, dict[str, float]]:
    a = labels.index("all")
    t50 = int(np.where(IOU_THRESHOLDS == 0.5)[0][0])
    t75 = int(np.where(IOU_THRESHOLDS == 0.75)[0][0])
    out = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, a, -1]
        out[name] = {"AP": _mean_valid(p), "AP50": _mean_valid(p[t50]), "AP75": _mean_valid(p[t75]),
                     f"AR{md[-1]}": _mean_valid(recall[:, k, a, -1])}
    return out

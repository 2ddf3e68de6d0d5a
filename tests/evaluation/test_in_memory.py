"""Evaluation in arrays: the ground truth built from records, its subsets and the evaluation of
in-memory detections equal, bit for bit, the json round trip and pycocotools on the json."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.data.formats.coco import coco_dict
from detopt.engine.validate import coco_records
from detopt.errors import DetoptInputError
from detopt.evaluation import (
    CocoGroundTruth,
    DetoptEvalWarning,
    evaluate_coco,
    evaluate_detections,
    load_coco_gt,
)
from detopt.structures import Detections, ImageRecord
from tests.evaluation.conftest import pycoco_eval
from tests.hyp import examples

NAMES = ["cat", "dog", "cat", "bird"]  # a repeated name: display names carry the id


def _assert_same_gt(a: CocoGroundTruth, b: CocoGroundTruth) -> None:
    assert a.image_ids == b.image_ids and a.category_ids == b.category_ids
    assert a.category_names == b.category_names and a.file_names == b.file_names
    for f in ("image", "category", "box", "area", "crowd", "id_zero"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape, f
        assert np.array_equal(x, y), f  # bit for bit (no tolerance)
        assert np.array_equal(np.signbit(x), np.signbit(y)) if x.dtype.kind == "f" else True


def _records(rng: np.random.Generator, n_images: int, own_ids: str) -> list[ImageRecord]:
    out = []
    for k in range(n_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(-5, 300, (n, 2))
        wh = rng.uniform(0, 80, (n, 2)) * (rng.random((n, 1)) > 0.1)  # some zero-size boxes
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        masks = None
        if rng.random() < 0.5:
            poly = lambda: rng.uniform(0, 300, 2 * int(rng.integers(3, 7))).astype(np.float32)  # noqa: E731
            masks = [[] if rng.random() < 0.3 else [poly()] for _ in range(n)]
        image_id = {"unique": 1000 - 7 * k, "none": None, "dup": 5}[own_ids]
        out.append(ImageRecord(f"/x/im{k}.jpg", 320, 240, boxes, rng.integers(0, len(NAMES), n),
                               rng.random(n) < 0.2, masks, image_id))
    return out


@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_images=st.integers(0, 7),
       own_ids=st.sampled_from(["unique", "none", "dup"]),
       cat_ids=st.sampled_from([None, [30, 10, 20, 40], [0, 1, 2, 3]]))
def test_ground_truth_from_records_equals_the_json_round_trip(seed, n_images, own_ids, cat_ids):
    recs = _records(np.random.default_rng(seed), n_images, own_ids)
    fnames = [f"im{k}.jpg" for k in range(len(recs))]
    mem = CocoGroundTruth.from_records(recs, NAMES, cat_ids, fnames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetoptEvalWarning)
        ref = load_coco_gt(coco_dict(recs, NAMES, fnames, cat_ids))
    _assert_same_gt(mem, ref)
    keep = mem.image_ids[::2]
    d = coco_dict(recs, NAMES, fnames, cat_ids)
    sub = {**d, "images": [im for im in d["images"] if im["id"] in set(keep)],
           "annotations": [a for a in d["annotations"] if a["image_id"] in set(keep)]}
    _assert_same_gt(mem.subset(keep), load_coco_gt(sub))


def _detections(rng: np.random.Generator, recs: list[ImageRecord]) -> list[Detections]:
    out = []
    for r in recs:
        m = int(rng.integers(0, 9))
        near = len(r) and rng.random() < 0.8
        src = r.boxes[rng.integers(0, len(r), m)] if near else rng.uniform(0, 200, (m, 4))
        corners = np.asarray(src, np.float32).reshape(m, 2, 2) + rng.normal(0, 3, (m, 2, 2))
        b = np.sort(corners, axis=1).reshape(m, 4).astype(np.float32)  # x1 <= x2, y1 <= y2
        s = rng.choice([0.5, 0.25, 0.125, 0.9], m).astype(np.float32) if rng.random() < 0.3 \
            else rng.random(m).astype(np.float32)  # ties on purpose
        out.append(Detections(b, s, rng.integers(0, len(NAMES), m)))
    return out


@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_images=st.integers(1, 7),
       cat_ids=st.sampled_from([None, [30, 10, 20, 40]]))
def test_evaluate_detections_equals_pycocotools_on_the_written_json(seed, n_images, cat_ids):
    rng = np.random.default_rng(seed)
    recs = _records(rng, n_images, "unique")
    fnames = [f"im{k}.jpg" for k in range(len(recs))]
    dets = _detections(rng, recs)
    ids = [r.image_id for r in recs]
    gt = CocoGroundTruth.from_records(recs, NAMES, cat_ids, fnames)
    mem = evaluate_detections(gt, dets, ids, cat_ids)
    gt_json = coco_dict(recs, NAMES, fnames, cat_ids)
    records = [r for d, i, f in zip(dets, ids, fnames, strict=True) for r in coco_records(d, i, f, cat_ids)]
    via_json = evaluate_coco(gt_json, records)
    assert np.array_equal(mem.stats, via_json.stats)  # identical, not close
    assert np.array_equal(mem.precision, via_json.precision)
    if records and any(len(r) for r in recs):
        ev = pycoco_eval(gt_json, [{k: v for k, v in x.items() if k != "file_name"} for x in records])
        assert np.array_equal(mem.stats, ev.stats)


def test_unknown_categories_are_skipped_and_counted_and_lengths_are_checked():
    recs = _records(np.random.default_rng(0), 3, "unique")
    gt = CocoGroundTruth.from_records(recs, NAMES, [7, 8, 9, 10])
    dets = [Detections(np.array([[0, 0, 9, 9]], np.float32), np.array([0.5], np.float32), np.array([3]))] * 3
    with pytest.warns(DetoptEvalWarning, match="skipped 3 of 3 detections"):
        res = evaluate_detections(gt, dets, [r.image_id for r in recs], [7, 8, 9, 99])
    assert res.predictions.n_skipped == 3
    with pytest.raises(DetoptInputError, match="2 detection lists for 3 image ids"):
        evaluate_detections(gt, dets[:2])
    with pytest.raises(DetoptInputError, match="not in ground truth"):
        evaluate_detections(gt, dets, [1, 2, 3])
    with pytest.raises(DetoptInputError, match="not in it"):
        gt.subset([123456])
    with pytest.raises(DetoptInputError, match=r"im0\.jpg: label 3 with 2 class names"):
        CocoGroundTruth.from_records([ImageRecord("/x/im0.jpg", 9, 9, [[0, 0, 1, 1]], [3])], NAMES[:2])

"""evaluate_coco against pycocotools (randomized and hand-computed cases) and on bad input."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detopt.errors import DetoptInputError
from detopt.evaluation import COCO_AREA_RANGES, DetoptEvalWarning, evaluate_coco
from detopt.testing import synthetic_coco
from tests.evaluation.conftest import assert_same_as_pycoco, pycoco_eval
from tests.hyp import examples

# --------------------------------------------------------------------------- seeded worlds
CASES = {
    "default": {},
    "crowded": {"crowd_frac": 0.3, "gt_per_image": 8.0},
    "over_100_dets": {"n_images": 12, "gt_per_image": 40.0, "extra_dets_per_gt": 3.0, "fp_per_image": 40.0,
                      "n_classes": 2},
    "tied_scores": {"score_decimals": 1, "box_decimals": 0},
    "degenerate": {"degenerate_frac": 0.2},
    "empty_images": {"empty_image_frac": 0.5},
    "absent_classes": {"absent_classes": 2, "n_classes": 6},
    "non_contiguous_ids": {"first_image_id": 1000, "image_id_step": 37, "category_ids": [90, 3, 57, 12, 7]},
    "no_misses": {"miss_frac": 0.0, "fp_per_image": 0.0, "wrong_class_frac": 0.0},
    "all_wrong": {"wrong_class_frac": 1.0, "n_classes": 3},
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pycocotools(case: str, seed: int) -> None:
    kw = {"n_images": 30, **CASES[case]}
    gt, dt = synthetic_coco(seed=seed, **kw)
    result = evaluate_coco(gt, dt)
    assert_same_as_pycoco(result, pycoco_eval(gt, dt))


def test_bit_identical_stats() -> None:
    gt, dt = synthetic_coco(60, n_classes=4, seed=11, score_decimals=2)
    result = evaluate_coco(gt, dt)
    ev = pycoco_eval(gt, dt)
    assert result.stats.tolist() == ev.stats.tolist()


def test_custom_max_dets_and_area_ranges() -> None:
    gt, dt = synthetic_coco(10, gt_per_image=30.0, fp_per_image=30.0, n_classes=2, seed=5)
    ranges = {"all": (0, 1e10), "small": (0, 400), "medium": (400, 5000), "large": (5000, 1e10),
              "huge": (50000, 1e10)}
    result = evaluate_coco(gt, dt, max_dets=(20, 1, 5), area_ranges=ranges)
    ev = pycoco_eval(gt, dt, max_dets=(1, 5, 20), area_ranges=ranges)
    # pycocotools averages stats[0] at a hard-coded maxDets=100 (-1 here); detopt at max(max_dets)
    assert ev.stats[0] == -1
    assert_same_as_pycoco(result, ev, stats_from=1)
    p = result.precision[:, :, :, 0, 2]
    assert result.stats[0] == np.mean(p[p > -1])


def test_ground_truth_id_zero_reproduces_pycocotools() -> None:
    gt, dt = synthetic_coco(8, n_classes=2, seed=3)
    for ann in gt["annotations"]:
        ann["id"] -= 1  # ids 0..n-1, as many converters write them
    with pytest.warns(DetoptEvalWarning, match="id 0"):
        result = evaluate_coco(gt, dt)
    assert_same_as_pycoco(result, pycoco_eval(gt, dt))


def test_json_paths_and_file_order(tmp_path) -> None:
    gt, dt = synthetic_coco(10, seed=4, score_decimals=1)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    from_files = evaluate_coco(tmp_path / "gt.json", str(tmp_path / "dt.json"))
    assert from_files.stats.tolist() == evaluate_coco(gt, dt).stats.tolist()
    # file order decides equal scores: reversing the list changes nothing only when pycocotools agrees
    rev = dt[::-1]
    assert_same_as_pycoco(evaluate_coco(gt, rev), pycoco_eval(gt, rev))


def test_inputs_not_mutated() -> None:
    gt, dt = synthetic_coco(5, seed=2)
    gt0, dt0 = copy.deepcopy(gt), copy.deepcopy(dt)
    evaluate_coco(gt, dt)
    assert gt == gt0 and dt == dt0


# --------------------------------------------------------------------------- hypothesis worlds
@st.composite
def small_worlds(draw):
    """A few images on a coarse grid (equal IoUs and equal scores are common), crowd regions,
    degenerate boxes, categories with and without ground truth."""
    n_img = draw(st.integers(1, 4))
    cat_ids = draw(st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True))
    img_ids = draw(st.lists(st.integers(0, 10**6), min_size=n_img, max_size=n_img, unique=True))
    coord = st.integers(0, 6).map(lambda v: v * 8.0)
    size = st.sampled_from([0.0, 4.0, 8.0, 16.0, 24.0, 40.0, 120.0])
    box = st.tuples(coord, coord, size, size).map(list)
    anns = draw(st.lists(st.tuples(st.sampled_from(img_ids), st.sampled_from(cat_ids), box,
                                   st.booleans(), st.sampled_from([0.5, 0.8, 1.0])), max_size=14))
    dets = draw(st.lists(st.tuples(st.sampled_from(img_ids), st.sampled_from(cat_ids), box,
                                   st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 1.0])),
                         min_size=1, max_size=25))  # pycocotools crashes on []
    gt = {"images": [{"id": i} for i in img_ids], "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids],
          "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b,
                           "area": b[2] * b[3] * f, "iscrowd": int(crowd and b[2] * b[3] > 0)}
                          for k, (i, c, b, crowd, f) in enumerate(anns)]}
    dt = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in dets]
    max_dets = draw(st.sampled_from([(1, 10, 100), (1, 2, 3), (1, 3, 10)]))
    if draw(st.booleans()):  # annotation ids from 0 (pycocotools' quirk, reproduced)
        for a in gt["annotations"]:
            a["id"] -= 1
    return gt, dt, max_dets


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_worlds())
def test_hypothesis_matches_pycocotools(world) -> None:
    gt, dt, max_dets = world
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetoptEvalWarning)
        result = evaluate_coco(gt, dt, max_dets=max_dets)
    ev = pycoco_eval(gt, dt, max_dets=max_dets)
    assert_same_as_pycoco(result, ev, stats_from=0 if max_dets[-1] == 100 else 1)


@settings(max_examples=examples(40), deadline=None)
@given(small_worlds(), st.randoms(use_true_random=False))
def test_image_and_category_listing_order_does_not_matter(world, rnd) -> None:
    gt, dt, max_dets = world
    shuffled = copy.deepcopy(gt)
    rnd.shuffle(shuffled["images"])
    rnd.shuffle(shuffled["categories"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetoptEvalWarning)
        a = evaluate_coco(gt, dt, max_dets=max_dets)
        b = evaluate_coco(shuffled, dt, max_dets=max_dets)
    assert a.stats.tolist() == b.stats.tolist()


# --------------------------------------------------------------------------- hand-computed
def _world(anns, dets, cats=(1,), images=(1,)):
    gt = {"images": [{"id": i} for i in images], "categories": [{"id": c, "name": f"c{c}"} for c in cats],
          "annotations": [{"id": k + 1, "image_id": a.get("image_id", 1),
                           "category_id": a.get("category_id", 1),
                           "bbox": a["bbox"], "area": a.get("area", a["bbox"][2] * a["bbox"][3]),
                           "iscrowd": a.get("iscrowd", 0)} for k, a in enumerate(anns)]}
    dt = [{"image_id": d.get("image_id", 1), "category_id": d.get("category_id", 1), "bbox": d["bbox"],
           "score": d["score"]} for d in dets]
    return gt, dt


def test_hand_perfect_detection() -> None:
    gt, dt = _world([{"bbox": [10, 10, 50, 50]}], [{"bbox": [10, 10, 50, 50], "score": 0.9}])
    r = evaluate_coco(gt, dt)
    # one medium object found exactly: precision is tp / (tp + fp + eps) as in pycocotools, recall 1;
    # -1 for the small and large ranges, which have no ground truth
    p = 1 / (1 + 2.0**-52)
    assert r.stats.tolist() == pytest.approx([p, p, p, -1, p, -1, 1, 1, 1, -1, 1, -1], abs=1e-15)


def test_hand_one_hit_one_false_positive_first() -> None:
    # the false positive scores higher: precision is 1/2 at recall 1 at every IoU
    gt, dt = _world([{"bbox": [0, 0, 100, 100]}],
                    [{"bbox": [200, 200, 50, 50], "score": 0.9}, {"bbox": [0, 0, 100, 100], "score": 0.8}],
                    images=(1,))
    r = evaluate_coco(gt, dt)
    assert r.stats[0] == 1 / (2 + 2.0**-52)
    assert r.stats[6] == 0.0 and r.stats[8] == 1.0  # AR@1 sees only the false positive


def test_hand_iou_threshold_steps() -> None:
    # IoU = 40*50/(50*50) = 0.8 -> true positive at .50 ... .80 (7 of 10 thresholds)
    gt, dt = _world([{"bbox": [0, 0, 50, 50]}], [{"bbox": [0, 0, 40, 50], "score": 0.5}])
    r = evaluate_coco(gt, dt)
    assert r.stats[:3].tolist() == pytest.approx([0.7, 1, 1], abs=1e-12)
    assert r.recall[:, 0, 0, 2].tolist() == [1.0] * 7 + [0.0] * 3


def test_hand_crowd_region_ignores_detections() -> None:
    # detections inside a crowd region (IoA >= t) are ignored, not false positives
    gt, dt = _world([{"bbox": [0, 0, 50, 50]}, {"bbox": [100, 0, 200, 200], "iscrowd": 1}],
                    [{"bbox": [0, 0, 50, 50], "score": 0.5}] +
                    [{"bbox": [110 + 20 * i, 10, 20, 20], "score": 0.9} for i in range(5)])
    assert evaluate_coco(gt, dt).stats[0] == pytest.approx(1.0, abs=1e-15)
    gt["annotations"][1]["iscrowd"] = 0  # now a regular object: four of the five are false positives
    assert evaluate_coco(gt, dt).stats[0] < 0.5


def test_empty_predictions_give_zero_stats() -> None:
    gt, _ = synthetic_coco(6, seed=1)
    r = evaluate_coco(gt, [])
    has = {lab: bool(((np.array([a["area"] for a in gt["annotations"] if not a["iscrowd"]]) >= lo) &
                      (np.array([a["area"] for a in gt["annotations"] if not a["iscrowd"]]) <= hi)).any())
           for lab, (lo, hi) in COCO_AREA_RANGES.items()}
    expected = [0.0 if has[a] else -1.0 for a in ("all", "all", "all", "small", "medium", "large",
                                                      "all", "all", "all", "small", "medium", "large")]
    assert r.stats.tolist() == expected


def test_empty_predictions_without_large_objects_give_minus_one() -> None:
    gt, _ = _world([{"bbox": [0, 0, 10, 10]}], [])
    assert evaluate_coco(gt, []).stats.tolist() == [0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1]


def test_no_ground_truth_at_all() -> None:
    gt, dt = _world([], [{"bbox": [0, 0, 10, 10], "score": 0.5}])
    assert evaluate_coco(gt, dt).stats.tolist() == [-1.0] * 12


def test_per_class_and_to_dict() -> None:
    gt, dt = synthetic_coco(20, n_classes=3, absent_classes=1, seed=8)
    r = evaluate_coco(gt, dt)
    assert list(r.per_class) == ["class_1", "class_3", "class_5"]
    assert r.per_class["class_5"] == {"AP": -1.0, "AP50": -1.0, "AP75": -1.0, "AR100": -1.0}
    ev = pycoco_eval(gt, dt)
    p = ev.eval["precision"][:, :, 0, 0, 2]
    assert r.per_class["class_1"]["AP"] == np.mean(p[p > -1])
    assert r.per_class["class_1"]["AP50"] == np.mean(p[0][p[0] > -1])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["stats"] == r.stats.tolist() and set(d["per_class"]) == set(r.per_class)


def test_summary_is_pycocotools_table(capsys) -> None:
    gt, dt = synthetic_coco(10, seed=6)
    text = evaluate_coco(gt, dt).summary()
    assert capsys.readouterr().out == ""  # library code returns text; the CLI prints it
    lines = [ln for ln in pycoco_eval(gt, dt).printed.splitlines() if ln.startswith(" Average")]
    assert len(lines) == 12
    assert text.splitlines() == lines


def test_unknown_prediction_category_is_skipped_and_counted() -> None:
    gt, dt = synthetic_coco(5, seed=2)
    extra = [{"image_id": gt["images"][0]["id"], "category_id": 999, "bbox": [0, 0, 5, 5], "score": 0.9}] * 3
    with pytest.warns(DetoptEvalWarning, match=r"skipped 3 of .*\(999\)"):
        r = evaluate_coco(gt, dt + extra)
    assert r.predictions.n_skipped == 3
    assert r.stats.tolist() == evaluate_coco(gt, dt).stats.tolist()
    assert_same_as_pycoco(r, pycoco_eval(gt, dt + extra))


def test_missing_area_and_iscrowd_are_filled_and_reported() -> None:
    gt, dt = synthetic_coco(5, seed=2, crowd_frac=0.0)
    full = copy.deepcopy(gt)
    for a in full["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    for a in gt["annotations"]:
        del a["area"], a["iscrowd"]
    with pytest.warns(DetoptEvalWarning, match="without 'area'.*without 'iscrowd'"):
        r = evaluate_coco(gt, dt)
    assert r.stats.tolist() == evaluate_coco(full, dt).stats.tolist()


# --------------------------------------------------------------------------- bad input
def _bad(gt_edit=None, dt_edit=None):
    gt, dt = synthetic_coco(4, seed=0, empty_image_frac=0.0)
    if gt_edit:
        gt_edit(gt)
    if dt_edit:
        dt_edit(dt)
    return gt, dt


@pytest.mark.parametrize("edit, match", [
    (lambda g: g["annotations"][2].pop("bbox"), r"annotations\[2\] \(id 3\) has no 'bbox' key"),
    (lambda g: g["annotations"][1].update(bbox=[1, 2, -3, 4]), r"annotations\[1\] \(id 2\).*negative width"),
    (lambda g: g["annotations"][1].update(bbox=[1, 2, 3]), r"annotations\[1\].*list of 4 numbers"),
    (lambda g: g["annotations"][0].update(bbox=[1, "2", 3, 4]), r"annotations\[0\].*must hold numbers"),
    (lambda g: g["annotations"][0].update(bbox=[1, float("nan"), 3, 4]), r"annotations\[0\].*not finite"),
    (lambda g: g["annotations"][3].update(image_id=424242), r"annotations\[3\].*image_id 424242 is not in"),
    (lambda g: g["annotations"][3].update(category_id=77), r"annotations\[3\].*category_id 77 is not in"),
    (lambda g: g["annotations"][4].update(id=1), r"annotations\[4\].*duplicate id 1"),
    (lambda g: g["images"].append(dict(g["images"][0])), r"images\[4\].*duplicate id"),
    (lambda g: g.pop("categories"), r"no 'categories' list"),
    (lambda g: g["images"][1].pop("id"), r"images\[1\] has no 'id' key"),
    (lambda g: g["images"][1].update(id=[1]), r"images\[1\].*id must be an integer or a string"),
    (lambda g: g["annotations"].__setitem__(0, [1, 2]), r"annotations\[0\] is a list, not an object"),
])
def test_bad_ground_truth(edit, match) -> None:
    gt, dt = _bad(gt_edit=edit)
    with pytest.raises(DetoptInputError, match=match):
        evaluate_coco(gt, dt)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d[5].update(image_id=999999), r"predictions\[5\]: image_id 999999 is not in the ground truth"),
    (lambda d: d[1].pop("score"), r"predictions\[1\] has no 'score' key"),
    (lambda d: d[2].update(bbox=[0, 0, 10, -1]), r"predictions\[2\].*negative width or height"),
    (lambda d: d[2].update(score=float("inf")), r"predictions\[2\]: score is not finite"),
    (lambda d: d[2].update(score=None), r"predictions\[2\]: score must hold numbers"),
])
def test_bad_predictions(edit, match) -> None:
    gt, dt = _bad(dt_edit=edit)
    with pytest.raises(DetoptInputError, match=match):
        evaluate_coco(gt, dt)


def test_unknown_images_are_counted() -> None:
    gt, dt = _bad()
    for d in dt[:3]:
        d["image_id"] = -5
    with pytest.raises(DetoptInputError, match=r"predictions\[0\].*\(3 records in all\)"):
        evaluate_coco(gt, dt)


def test_bad_files(tmp_path) -> None:
    (tmp_path / "bad.json").write_text('{"images": [\n  {"id": 1},\n  {"id": 2,,}\n]}')
    with pytest.raises(DetoptInputError, match=r"bad\.json: malformed JSON at line 3 column"):
        evaluate_coco(tmp_path / "bad.json", [])
    with pytest.raises(DetoptInputError, match="cannot read"):
        evaluate_coco(tmp_path / "missing.json", [])
    gt, _ = _bad()
    (tmp_path / "dt.json").write_text('{"annotations": []}')
    with pytest.raises(DetoptInputError, match="must be a JSON list"):
        evaluate_coco(gt, tmp_path / "dt.json")


def test_bad_parameters() -> None:
    gt, dt = _bad()
    with pytest.raises(DetoptInputError, match="bbox"):
        evaluate_coco(gt, dt, iou_type="segm")
    with pytest.raises(DetoptInputError, match="three positive integers"):
        evaluate_coco(gt, dt, max_dets=(10, 100))
    with pytest.raises(DetoptInputError, match="'all' range"):
        evaluate_coco(gt, dt, area_ranges={"small": (0, 1024)})


def test_warnings_do_not_fire_on_clean_input() -> None:
    gt, dt = synthetic_coco(5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_coco(gt, dt)

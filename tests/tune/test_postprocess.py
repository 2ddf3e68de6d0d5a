"""The post-processing study: the candidates path equals the standard evaluation path, every
setting is scored as pycocotools scores it, the held-out check picks on one half only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detopt.data.dataset import dataset_from_source
from detopt.data.synth import write_synthetic
from detopt.data.transforms.letterbox import LetterboxMeta
from detopt.engine.validate import coco_records, evaluate_detector
from detopt.errors import DetoptInputError
from detopt.evaluation import load_coco_gt
from detopt.models import Postprocessor, create_model
from detopt.ops.postprocess import postprocess
from detopt.testing import synthetic_coco
from detopt.tune import (
    DEFAULT,
    METHOD_SWEEPS,
    Candidates,
    Setting,
    apply_setting,
    best_per_method,
    collect_candidates,
    run_setting,
    study,
)
from tests.evaluation.conftest import pycoco_eval


@pytest.fixture(scope="module")
def world_json():
    """A synthetic COCO ground truth and detector output: 16 images, 3 classes."""
    return synthetic_coco(
        16,
        n_classes=3,
        gt_per_image=8,
        image_size=(160, 120),
        seed=5,
        crowd_frac=0.0,
        extra_dets_per_gt=2.0,
        score_decimals=4,
    )


@pytest.fixture(scope="module")
def world(world_json):
    """Candidates built from the synthetic detector output, identity letterbox."""
    gt, dt = world_json
    ids = [im["id"] for im in gt["images"]]
    boxes, scores, labels = [], [], []
    for i in ids:
        rec = [d for d in dt if d["image_id"] == i and d["score"] > 0.001]
        b = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in rec)], np.float32).reshape(
            -1, 4
        )
        boxes.append(b)
        scores.append(np.array([d["score"] for d in rec], np.float32))
        labels.append(np.array([d["category_id"] - 1 for d in rec], np.int64))
    meta = LetterboxMeta(1.0, 1.0, 0, 0, 160, 120)
    cands = Candidates(
        boxes,
        scores,
        labels,
        [meta] * len(ids),
        [(120, 160)] * len(ids),
        load_coco_gt(gt),
        ids,
        [f"im{i}.jpg" for i in ids],
        0.001,
    )
    return cands


def test_run_setting_scores_like_pycocotools(world, world_json):
    gt = world_json[0]
    s = Setting("soft_nms_gaussian", sigma=0.5, score_thr=0.01)
    r = run_setting(world, s, "g")
    records = []
    for i, (b, sc, lab) in enumerate(zip(world.boxes, world.scores, world.labels, strict=True)):
        d = postprocess(b, sc, lab, method=s.method, score_thr=s.score_thr, iou_thr=s.iou_thr, sigma=s.sigma)
        d.boxes[:, 0::2] = d.boxes[:, 0::2].clip(0, 160)
        d.boxes[:, 1::2] = d.boxes[:, 1::2].clip(0, 120)
        records += coco_records(d, gt["images"][i]["id"], world.file_names[i])
    ev = pycoco_eval(gt, [{k: v for k, v in x.items() if k != "file_name"} for x in records])
    assert r.ap == pytest.approx(ev.stats[0], abs=1e-12)
    assert r.ap50 == pytest.approx(ev.stats[1], abs=1e-12)
    assert r.ap_small == pytest.approx(ev.stats[3], abs=1e-12)
    assert r.dets_per_image == pytest.approx(len(records) / len(world))
    even = {im["id"] for k, im in enumerate(gt["images"]) if k % 2 == 0}
    sub_gt = {
        **gt,
        "images": [im for im in gt["images"] if im["id"] in even],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in even],
    }
    sub_dt = [{k: v for k, v in x.items() if k != "file_name"} for x in records if x["image_id"] in even]
    assert r.ap_even == pytest.approx(pycoco_eval(sub_gt, sub_dt).stats[0], abs=1e-12)
    odd = [{k: v for k, v in x.items() if k != "file_name"} for x in records if x["image_id"] not in even]
    odd_gt = {**gt, "images": [im for im in gt["images"] if im["id"] not in even],
              "annotations": [a for a in gt["annotations"] if a["image_id"] not in even]}
    assert r.ap_odd == pytest.approx(pycoco_eval(odd_gt, odd).stats[0], abs=1e-12)
    assert r.ms_per_image > 0
    assert "soft-NMS gaussian" in r.label and "sigma 0.5" in r.label


def test_study_best_grid_and_holdout(world):
    sweeps = {
        g: v
        for g, v in METHOD_SWEEPS.items()
        if g in ("hard NMS, per class", "soft-NMS gaussian", "WBF-style merge")
    }
    res = study(world, sweeps, score_grid=(0.001, 0.3), nms_iou_grid=(0.5, 0.7))
    settings_seen = [r.setting for r in res.results]
    assert len(settings_seen) == len(set(settings_seen))  # each setting scored once
    for iou in (0.5, 0.7):
        for s in (0.001, 0.3):
            assert Setting("nms", iou_thr=iou, score_thr=s) in settings_seen
    assert res.default.setting == DEFAULT
    assert res.best.ap == max(r.ap for r in res.results)
    pick = max(res.results, key=lambda r: (r.ap_even, -r.ms_per_image))
    assert res.holdout["chosen_on_even"] == pick.label
    assert res.holdout["gain_odd"] == pytest.approx(pick.ap_odd - res.default.ap_odd)
    per = best_per_method(res.results)
    assert [r.group for r in per] == list(sweeps)
    for r in per:
        assert r.ap == max(x.ap for x in res.results if x.group == r.group)
    assert res.to_dict()["best"]["label"] == res.best.label


def test_score_threshold_below_the_candidates_floor_is_refused(world):
    with pytest.raises(DetoptInputError, match="below the candidates' floor"):
        apply_setting(world, Setting(score_thr=0.0001))


def test_candidates_path_equals_the_standard_evaluation(tmp_path):
    """collect_candidates + the default setting gives exactly evaluate_detector's records and AP."""
    write_synthetic(tmp_path / "d", train=1, val=6, imgsz=96, seed=3)
    ds, names = dataset_from_source(tmp_path / "d" / "data.yaml", "val", 96)
    torch.manual_seed(0)
    model = create_model("yolo-p", len(names), imgsz=96).eval()
    pp = Postprocessor(model.strides, model.reg_max, method="nms", score_thr=0.001, iou_thr=0.7, max_det=300)
    ev = evaluate_detector(model, ds, names, pp, batch_size=4)
    cands = collect_candidates(model, ds, names, batch_size=3)
    dets, _ = apply_setting(cands, DEFAULT)
    records = cands.records(dets)
    assert len(records) > 0
    assert records == ev.records()
    assert run_setting(cands, DEFAULT).ap == pytest.approx(float(ev.result.stats[0]), abs=0)


@pytest.fixture
def toy_method():
    """A method registered through the registry alone: keep each class's best box only."""
    from detopt.ops.postprocess import METHOD_REGISTRY, register_method

    @register_method("top1_per_class", label="best box per class", sweep=(0.5,))
    def top1(b, s, lab, *, iou_thr, score_thr, sigma, agnostic):
        order = torch.sort(s, descending=True, stable=True).indices
        b, s, lab = b[order], s[order], lab[order]
        first = torch.ones_like(lab, dtype=torch.bool)
        if not agnostic and len(lab):
            seen = set()
            for i, v in enumerate(lab.tolist()):
                first[i] = v not in seen
                seen.add(v)
        elif len(lab):
            first[1:] = False
        return b[first], s[first], lab[first]

    yield "top1_per_class"
    METHOD_REGISTRY.remove("top1_per_class")


def test_a_method_added_through_the_registry_alone_is_accepted_everywhere(toy_method, world, tmp_path):
    from detopt.cli import build_parser
    from detopt.config import TrainConfig
    from detopt.report.html import _postprocess_section

    b, s, lab = world.boxes[0], world.scores[0], world.labels[0]
    det = postprocess(b, s, lab, method=toy_method)
    assert sorted(det.labels.tolist()) == sorted(set(lab[s > 0.001].tolist()))
    for k in set(lab.tolist()):
        assert det.scores[det.labels == k][0] == s[lab == k].max()
    model = create_model("yolo-p", 3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert len(Postprocessor(model.strides, model.reg_max, method=toy_method, score_thr=0.0)(out)[0]) <= 3
    args = build_parser().parse_args(["predict", "--weights", "w.pt", "--source", ".", "--nms", toy_method])
    assert args.nms == toy_method
    assert TrainConfig(data="x", nms=toy_method).nms == toy_method
    assert "best box per class" in METHOD_SWEEPS
    res = study(world, {"best box per class": METHOD_SWEEPS["best box per class"]}, score_grid=(0.001,),
                nms_iou_grid=(0.7,))
    best = [r.to_dict() for r in best_per_method(res.results)]
    assert "best box per class (IoU 0.5, score > 0.001)" in [r["label"] for r in best]
    section = _postprocess_section(
        {"results": [r.to_dict() for r in res.results], "best_per_method": best, "holdout": res.holdout,
         "default": res.default.to_dict(), "candidates_per_image": 10.0, "min_score": 0.001,
         "figures": {"tradeoff": str(tmp_path / "t.png"), "grid": str(tmp_path / "g.png")}},
        tmp_path,
    )
    assert "best box per class (IoU 0.5, score &gt; 0.001)" in section


def test_a_typo_in_the_method_fails_before_any_file_is_read(tmp_path, capsys):
    from detopt.cli import main

    missing = tmp_path / "no such data set"
    assert main(["train", "--data", str(missing), "nms=soft_nms_gausian"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nms:" in err and "did you mean soft_nms_gaussian" in err
    assert "registered: nms, soft_nms_linear, soft_nms_gaussian, diou_nms, matrix_nms, wbf" in err
    assert "no such" not in err.split("nms:")[0]  # the data set was never looked at

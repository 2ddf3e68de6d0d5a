"""Prediction files carry the data set's own category ids: pycocotools scores them against the
user's own json exactly as detopt does; checkpoints and exports remember the ids."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from detopt.cli import main
from detopt.data.formats import read_dataset, write_dataset
from detopt.engine import load_checkpoint
from detopt.engine.validate import coco_records
from detopt.inference import load_weights
from detopt.structures.detections import Detections
from tests.data.conftest import tiny_coco  # noqa: F401 - a fixture


def _coco_with_ids(synth_dir: Path, out: Path, cat_id) -> Path:
    """The synthetic set as COCO (``annotations/{train,val}.json``) with category ``k`` -> ``cat_id(k)``."""
    if not (out / "images").exists():
        shutil.copytree(synth_dir / "images", out / "images")
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        doc = json.loads((synth_dir / "annotations" / f"{split}.json").read_text())
        old = sorted(c["id"] for c in doc["categories"])
        new = {o: cat_id(k) for k, o in enumerate(old)}
        for c in doc["categories"]:
            c["id"] = new[c["id"]]
        doc["categories"].reverse()  # order in the file must not matter
        for a in doc["annotations"]:
            a["category_id"] = new[a["category_id"]]
            a["area"] = a["bbox"][2] * a["bbox"][3]  # what detopt's ground truth uses too
            a.pop("segmentation", None)
        (out / "annotations" / f"{split}.json").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def tens(synth_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(a COCO set with category ids 10, 20, ..., weights trained on it for two epochs)."""
    root = _coco_with_ids(synth_dir, tmp_path_factory.mktemp("tens") / "coco", lambda k: 10 * (k + 1))
    run = root.parent / "run"
    code = main(["train", "--data", str(root), "--out", str(run), "--model", "yolo-p", "--imgsz", "96",
                 "--epochs", "3", "--batch", "8", "--workers", "0", "progress=false", "close_mosaic=1",
                 "nbs=8", "warmup_epochs=0"])
    assert code == 0
    return root, run / "last.pt"


def _pycocotools(gt_json: Path, preds: list[dict]) -> tuple[np.ndarray, list[str]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        dt = gt.loadRes([{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in preds])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.summarize()
    return np.asarray(ev.stats), buf.getvalue().splitlines()


def _printed_stats(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith((" Average Precision", " Average Recall"))]


def test_val_json_scored_by_pycocotools_equals_detopt(tens, tmp_path, capsys):
    root, weights = tens
    ckpt = load_checkpoint(weights)
    assert ckpt["category_ids"] == [10, 20, 30, 40, 50, 60, 70, 80]
    preds_path = tmp_path / "pred.json"
    capsys.readouterr()
    assert main(["val", "--weights", str(weights), "--data", str(root), "--save-json", str(preds_path)]) == 0
    out = capsys.readouterr().out
    preds = json.loads(preds_path.read_text())
    assert preds and {r["category_id"] for r in preds} <= set(range(10, 90, 10))
    stats, lines = _pycocotools(root / "annotations" / "val.json", preds)
    assert _printed_stats(out) == lines  # the 12 lines, exactly
    assert stats[1] > 0  # a model that finds something: a wrong id would score 0 here
    # what label + 1 ids (the old behaviour) would have scored
    wrong = [dict(r, category_id=r["category_id"] // 10) for r in preds]
    assert _pycocotools(root / "annotations" / "val.json", wrong)[0][1] < stats[1]


def test_id_zero_and_mismatched_ids_need_remap(tens, synth_dir, tmp_path, capsys):
    root, weights = tens
    zero = _coco_with_ids(synth_dir, tmp_path / "zero", lambda k: k)  # ids 0..7
    capsys.readouterr()
    assert main(["val", "--weights", str(weights), "--data", str(zero)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ from the weights'" in err and "--remap" in err
    assert "0:" in err and "10:" in err
    p, p10 = tmp_path / "p.json", tmp_path / "p10.json"
    val = ["val", "--weights", str(weights), "--data"]
    assert main([*val, str(zero), "--remap", "--save-json", str(p)]) == 0
    out = capsys.readouterr().out
    preds = json.loads(p.read_text())
    assert _printed_stats(out) == _pycocotools(zero / "annotations" / "val.json", preds)[1]
    # the same detections as on the data set trained on, each with the id its class has here
    assert main(["val", "--weights", str(weights), "--data", str(root), "--save-json", str(p10)]) == 0
    tens_preds = json.loads(p10.read_text())
    assert preds and [dict(r, category_id=r["category_id"] // 10 - 1) for r in tens_preds] == preds
    # a data set whose class names differ cannot be remapped
    doc = json.loads((zero / "annotations" / "val.json").read_text())
    doc["categories"][0]["name"] = "zebra"
    (zero / "annotations" / "val.json").write_text(json.dumps(doc))
    (zero / "annotations" / "train.json").write_text(json.dumps(doc | {"annotations": []}))
    assert main(["val", "--weights", str(weights), "--data", str(zero), "--remap"]) == 2
    assert "'zebra'" in capsys.readouterr().err


def test_predict_and_exports_keep_the_ids(tens, tmp_path, capsys):
    root, weights = tens
    vp, pp, sp = tmp_path / "v.json", tmp_path / "p.json", tmp_path / "s.json"
    post = ["--conf", "0.01", "--iou", "0.6"]
    assert main(["val", "--weights", str(weights), "--data", str(root), "--save-json", str(vp), *post]) == 0
    src = root / "images" / "val"
    predict = ["predict", "--weights"]
    assert main([*predict, str(weights), "--source", str(src), "--save-json", str(pp), *post]) == 0
    st = tmp_path / "m.safetensors"
    assert main(["export", "--weights", str(weights), "--out", str(st)]) == 0
    assert load_weights(st).category_ids == [10, 20, 30, 40, 50, 60, 70, 80]
    assert main([*predict, str(st), "--source", str(src), "--save-json", str(sp), *post]) == 0

    def key(recs):
        return sorted((r["file_name"], r["category_id"], tuple(r["bbox"]), r["score"]) for r in recs)

    val, pred, exported = (json.loads(p.read_text()) for p in (vp, pp, sp))
    assert val and key(val) == key(pred) == key(exported)


def test_sources_without_ids_use_label_plus_one(synth_dir, tiny_coco, tmp_path):  # noqa: F811
    ds, _, _ = read_dataset(synth_dir / "data.yaml")
    assert ds.category_ids is None and ds.coco_category_ids() == list(range(1, 9))
    coco, _, _ = read_dataset(tiny_coco)
    assert coco.category_ids == [2, 5, 9] and coco.names == ["traffic light", "dög", "Person / 人"]
    # COCO -> COCO keeps the ids; COCO -> YOLO -> COCO gives 1..K
    write_dataset(coco, tmp_path / "c", "coco")
    again = json.loads((tmp_path / "c" / "train.json").read_text())
    assert sorted(c["id"] for c in again["categories"]) == [2, 5, 9]
    assert {a["category_id"] for a in again["annotations"]} <= {2, 5, 9}
    back, _, _ = read_dataset(tmp_path / "c" / "train.json")
    assert back.category_ids == [2, 5, 9] and back.names == coco.names
    write_dataset(coco, tmp_path / "y", "yolo")
    write_dataset(read_dataset(tmp_path / "y")[0], tmp_path / "c2", "coco")
    written = json.loads((tmp_path / "c2" / "train.json").read_text())
    assert sorted(c["id"] for c in written["categories"]) == [1, 2, 3]
    dets = Detections(np.array([[1, 2, 3, 4], [0, 0, 1, 1]], np.float32), np.array([0.9, 0.5], np.float32),
                      np.array([2, 0]))
    assert [r["category_id"] for r in coco_records(dets, 7, "a.jpg", [2, 5, 9])] == [9, 2]
    assert [r["category_id"] for r in coco_records(dets, 7, "a.jpg")] == [3, 1]

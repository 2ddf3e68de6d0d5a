"""The training engine end to end: overfitting, exact resume after SIGKILL, non-finite losses,
DDP with two gloo processes, and the train / val / predict / export commands."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detopt.cli import main
from detopt.config import TrainConfig
from detopt.data.synth import write_synthetic
from detopt.engine import DetoptTrainingError, Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def overfit_yaml(tmp_path_factory) -> Path:
    """Four synthetic 160 px images whose validation split is the training split itself."""
    out = tmp_path_factory.mktemp("overfit") / "four"
    write_synthetic(out, train=4, val=1, imgsz=160, seed=11)
    y = out / "overfit.yaml"
    y.write_text((out / "data.yaml").read_text().replace("val: images/val", "val: images/train"))
    return y


@pytest.mark.slow
def test_overfits_a_few_images(overfit_yaml, tmp_path):
    cfg = TrainConfig(data=str(overfit_yaml), out=str(tmp_path / "run"), model="yolo-p", imgsz=160,
                      epochs=250, batch=4, nbs=4, workers=0, augment=False, warmup_epochs=0, lrf=0.1,
                      ema=False, val_every=50, progress=False)
    summary = Trainer(cfg).train()
    assert summary["metrics"]["metrics/AP50"] >= 0.9, summary["metrics"]


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "detopt", "train", "--data", str(data), "--out", str(out), "--model",
            "yolo-p", "--imgsz", "64", "--epochs", "6", "--batch", "8", "--workers", "1",
            "nbs=16", "deterministic=true", "close_mosaic=2", "warmup_min_iters=4", "progress=false",
            *extra]


def _same_state(a: dict, b: dict, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(synth_dir, tmp_path):
    data = synth_dir / "data.yaml"
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(data, full), check=True, env=_env(), capture_output=True)

    proc = subprocess.Popen(_train_cmd(data, killed), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader workers, mid-run
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    done = load_checkpoint(last)["epoch"] + 1
    assert done < 6
    subprocess.run([sys.executable, "-m", "detopt", "train", "--resume", str(killed)], check=True,
                   env=_env(), capture_output=True)

    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 5
    for key in ("model", "ema", "optimizer", "scaler", "rng", "best_fitness", "metrics"):
        _same_state(a[key], b[key], key)
    rows = (killed / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(1, 7)]


class _Poisoned:
    """Wraps the criterion: the loss is NaN on the calls listed (or all of them)."""

    def __init__(self, inner, bad):
        self.inner, self.bad, self.calls = inner, bad, 0

    def __call__(self, outputs, targets):
        loss, items = self.inner(outputs, targets)
        self.calls += 1
        if self.bad is None or self.calls in self.bad:
            loss = loss * float("nan")
        return loss, items


def _small_cfg(synth_dir, tmp_path, **kw):
    values = dict(data=str(synth_dir / "data.yaml"), out=str(tmp_path / "run"), model="yolo-p",
                  imgsz=64, epochs=1, batch=8, workers=0, val=False, progress=False)
    return TrainConfig(**(values | kw))


def test_non_finite_steps_are_skipped_and_counted(synth_dir, tmp_path):
    trainer = Trainer(_small_cfg(synth_dir, tmp_path))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.criterion = _Poisoned(trainer.criterion, bad={2, 4})
    summary = trainer.train()
    assert summary["bad_steps"] == 2
    assert all(torch.isfinite(v.float()).all() for v in trainer.model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_persistent_non_finite_loss_stops_with_a_clear_message(synth_dir, tmp_path):
    trainer = Trainer(_small_cfg(synth_dir, tmp_path, max_bad_steps=3))
    trainer.criterion = _Poisoned(trainer.criterion, bad=None)
    with pytest.raises(DetoptTrainingError, match=r"not finite for 3 steps in a row.*lower lr0"):
        trainer.train()


def test_time_budget_sets_the_epochs(synth_dir, tmp_path):
    trainer = Trainer(_small_cfg(synth_dir, tmp_path, time=100))
    plan = trainer.plan
    assert plan.budget_epochs(epoch_seconds=30.0, done=0, elapsed=0.0) == 3
    assert plan.budget_epochs(epoch_seconds=30.0, done=3, elapsed=95.0) == 3  # no time left: stop here
    assert plan.budget_epochs(epoch_seconds=1000.0, done=0, elapsed=0.0) == 1  # at least one epoch
    plan.refine([40.0, 30.0, 30.0], done=3, elapsed=100.0)
    assert plan.epochs == 3  # the budget is spent: stop after the epoch just done


@pytest.mark.slow
def test_ddp_two_gloo_processes_hold_identical_weights(tmp_path):
    """Each epoch the two ranks load disjoint halves of the training set (together all of it), yet
    end with identical weights: the gradients were all-reduced (without the all-reduce their
    different shards would give different weights; without sharding the halves would overlap)."""
    data = tmp_path / "d"
    write_synthetic(data, train=16, val=2, imgsz=64, seed=5)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).with_name("ddp_worker.py")), str(data / "data.yaml"), str(out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [json.loads((out / f"seen{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 2  # epochs
    for a, b in zip(*seen, strict=True):
        assert len(a) == len(b) == 8 and not set(a) & set(b) and set(a) | set(b) == set(range(16))
    assert seen[0][0] != seen[0][1]  # reshuffled each epoch
    w0, w1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    ckpt = load_checkpoint(out / "last.pt")  # rank 0 wrote it after the second epoch
    assert ckpt["epoch"] == 1
    for k in w0:
        assert torch.equal(ckpt["model"][k], w0[k]), k


def test_train_val_predict_export_commands(synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    data = synth_dir / "data.yaml"
    code = main(["train", "--data", str(data), "--out", str(run), "--model", "yolo-p", "--imgsz", "64",
                 "--epochs", "2", "--batch", "8", "--workers", "0", "progress=false", "close_mosaic=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "M parameters" in out and "GFLOPs" in out and "last validation: mAP50-95" in out
    for name in ("last.pt", "best.pt", "config.yaml", "results.csv"):
        assert (run / name).is_file(), name
    header = (run / "results.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train/box", "train/cls", "train/dfl", "lr", "img/s", "metrics/AP"} <= set(header)

    preds = tmp_path / "preds.json"
    post = ["--conf", "0.01", "--iou", "0.6"]
    assert main(["val", "--weights", str(run / "best.pt"), "--data", str(data), "--save-json", str(preds),
                 "--plots", str(tmp_path / "plots"), *post]) == 0
    val_records = json.loads(preds.read_text())
    keys = {"image_id", "category_id", "bbox", "score", "file_name"}
    assert val_records and all(keys <= set(r) for r in val_records)
    assert (tmp_path / "plots" / "pr_curve.png").is_file()

    st = tmp_path / "m.safetensors"
    assert main(["export", "--weights", str(run / "best.pt"), "--out", str(st)]) == 0
    from detopt.inference import load_weights

    exported, ema = load_weights(st).model.state_dict(), load_checkpoint(run / "best.pt")["ema"]["module"]
    assert exported.keys() == ema.keys() and all(torch.equal(exported[k], ema[k]) for k in ema)  # the EMA
    src = synth_dir / "images" / "val"
    by_weights = {}
    for w in (run / "best.pt", st):
        drawn, pj = tmp_path / f"drawn-{w.suffix[1:]}", tmp_path / f"p-{w.suffix[1:]}.json"
        assert main(["predict", "--weights", str(w), "--source", str(src), "--out", str(drawn),
                     "--save-json", str(pj), *post]) == 0
        assert len(list(drawn.glob("*.png"))) == len(list(src.glob("*.*")))
        by_weights[w.suffix] = json.loads(pj.read_text())

    def key(records):
        return sorted((r["file_name"], r["category_id"], tuple(r["bbox"]), r["score"]) for r in records)

    # the same detections from val, predict on the checkpoint and predict on the export
    assert key(val_records) == key(by_weights[".pt"]) == key(by_weights[".safetensors"])


def test_predict_boxes_are_in_original_image_pixels(synth_dir, tmp_path):
    """A 128 x 96 image letterboxed to 64: scale 1/2, 8 px of padding above and below. The
    records are the network's boxes mapped back by hand: (x / 0.5, (y - 8) / 0.5)."""
    import cv2
    import numpy as np

    from detopt.inference import Predictor
    from detopt.models import Postprocessor, create_model

    torch.manual_seed(0)
    model = create_model("yolo-p", 8).eval()
    img = cv2.imread(str(sorted((synth_dir / "images" / "val").iterdir())[0]))[:96]
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), img)
    post = Postprocessor(model.strides, model.reg_max, score_thr=0.0, max_det=40)
    records = Predictor(model, [str(i) for i in range(8)], 64, post).predict_to(path)
    assert len(records) == 40
    small = cv2.resize(img, (64, 48), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((64, 64, 3), 114, np.uint8)
    canvas[8:56] = small
    x = torch.from_numpy(np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        net = post(model(x))[0]
    boxes = (net.boxes.numpy().astype(np.float64) - [0, 8, 0, 8]) / 0.5
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, 128)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, 96)
    got = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (r["bbox"] for r in records)])
    np.testing.assert_allclose(got, boxes, atol=2e-3)
    assert [r["score"] for r in records] == [round(float(v), 5) for v in net.scores]


def test_commands_reject_bad_input(synth_dir, tmp_path, capsys):
    assert main(["train", "--data", str(synth_dir / "data.yaml"), "lr=0.1"]) == 2
    assert "did you mean lrf, lr0" in capsys.readouterr().err
    assert main(["train", "--data", str(synth_dir / "data.yaml"), "--model", "yolo-x"]) == 2
    assert "unknown model 'yolo-x'" in capsys.readouterr().err
    assert main(["val", "--weights", str(tmp_path / "none.pt"), "--data", str(synth_dir / "data.yaml")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["predict", "--weights", str(tmp_path / "none.pt"), "--source", str(tmp_path)]) == 2


class _Recorder:
    """Wraps the criterion and records the input side of every batch (from the stride-8 level)."""

    def __init__(self, inner):
        self.inner, self.sizes = inner, []

    def __call__(self, outputs, targets):
        self.sizes.append(outputs[0].shape[-1] * 8)
        return self.inner(outputs, targets)


def test_multi_scale_draws_sizes_on_the_stride_grid(synth_dir, tmp_path):
    trainer = Trainer(_small_cfg(synth_dir, tmp_path, imgsz=96, batch=4, multi_scale=True, epochs=1))
    trainer.criterion = rec = _Recorder(trainer.criterion)
    trainer.train()
    assert len(rec.sizes) == 10
    assert all(s % 32 == 0 and 48 <= s <= 144 for s in rec.sizes)
    assert len(set(rec.sizes)) > 1


def test_close_mosaic_covers_the_last_epochs(synth_dir, tmp_path):
    trainer = Trainer(_small_cfg(synth_dir, tmp_path, epochs=20, close_mosaic=10))
    on = []
    for e in range(20):
        trainer._set_data_epoch(e)
        on.append(trainer.train_set.pipeline.mixing_on)
    assert on == [True] * 17 + [False] * 3  # min(10, round(0.15 * 20)) = 3 epochs without mosaic
    trainer = Trainer(_small_cfg(synth_dir, tmp_path, epochs=200, close_mosaic=10))
    trainer._set_data_epoch(189)
    assert trainer.train_set.pipeline.mixing_on
    trainer._set_data_epoch(190)
    assert not trainer.train_set.pipeline.mixing_on


def test_validation_warm_up_changes_nothing(synth_dir, tmp_path):
    """The warm-up before a time-budgeted run validates a few images and leaves every weight,
    buffer and the RNG as they were (exact resume depends on it)."""
    trainer = Trainer(_small_cfg(synth_dir, tmp_path, time=100, val=True))
    before = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    rng = torch.get_rng_state()
    assert trainer._warm_validation() > 0
    for k, v in trainer.ema.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)


def test_config_names_are_checked_before_any_file_is_read(tmp_path, capsys):
    missing = str(tmp_path / "absent")
    for override, needle in [("assigner=atts", "unknown assigner 'atts' (did you mean atss?)"),
                             ("cls_loss=focla", "unknown classification loss 'focla'"),
                             ("box_loss=ciuo", "unknown box loss 'ciuo' (did you mean ciou"),
                             ("assigner={name: atss, topk: 0}", "topk must be >= 1"),
                             ("assigner={name: atss, k: 3}", "unexpected keyword argument 'k'")]:
        assert main(["train", "--data", missing, override]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, (override, err)
        assert "absent" not in err  # never got as far as the data set


def test_train_with_atss_from_the_command_line(synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(synth_dir / "data.yaml"), "--out", str(run), "--model", "yolo-p",
                 "--imgsz", "64", "--epochs", "1", "--batch", "8", "--workers", "0", "progress=false",
                 "close_mosaic=0", "assigner=atss", "cls_loss=focal", "box_loss=giou"]) == 0
    cfg = load_checkpoint(run / "last.pt")["config"]
    assert (cfg["assigner"], cfg["cls_loss"], cfg["box_loss"]) == ("atss", "focal", "giou")
    assert "last validation: mAP50-95" in capsys.readouterr().out


def test_training_from_weights_starts_from_them(tiny_run, synth_dir, tmp_path, capsys):
    """weights=RUN/last.pt: the model is the file's (its values, its spec), fine-tuned from there;
    weights of other classes are one line before training; val --amp scores under bf16."""
    from detopt.engine.distill import load_float_model

    data = synth_dir / "data.yaml"
    src = load_float_model(tiny_run / "last.pt", load_checkpoint(tiny_run / "last.pt")["names"], "weights")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "ft"), model="yolo-n",
                      weights=str(tiny_run / "last.pt"), imgsz=128, epochs=1, batch=8, workers=0,
                      progress=False, channels_last=False)
    trainer = Trainer(cfg)
    start = trainer.model.state_dict()
    ref = src.state_dict()
    assert start.keys() == ref.keys() and all(torch.equal(start[k], ref[k]) for k in ref)
    assert trainer.model.spec["name"] == "yolo-p" and trainer.model.training
    trainer.train()
    ckpt = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert ckpt["spec"]["name"] == "yolo-p"
    assert any(not torch.equal(ckpt["model"][k], ref[k]) for k in ref if ref[k].is_floating_point())

    other = tmp_path / "other"
    write_synthetic(other, train=8, val=4, imgsz=64, seed=1)
    doc = (other / "data.yaml").read_text()
    (other / "data.yaml").write_text(doc.replace("0: disc", "0: dot"))
    assert main(["train", "--data", str(other / "data.yaml"), "--out", str(tmp_path / "bad"),
                 "--epochs", "1", f"weights={tiny_run / 'last.pt'}", "workers=0", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights:" in err and "differ from the data set's" in err

    assert main(["val", "--weights", str(tiny_run / "last.pt"), "--data", str(data), "--amp"]) == 0
    assert "Average Precision" in capsys.readouterr().out

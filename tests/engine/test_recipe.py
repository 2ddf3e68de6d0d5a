"""The short-budget recipe (adapted defaults, recorded with their reasons, an explicit value
always wins), persistent loader workers that still augment per epoch, and data.yaml files that
ultralytics reads from any working directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from detopt.cli import main
from detopt.config import TrainConfig, build_config, load_config
from detopt.data.formats import read_dataset
from detopt.engine import Trainer, load_checkpoint, probe
from detopt.engine.plan import VAL_SHARE
from detopt.engine.recipe import (
    LOADER_SHARE,
    SCALE_MIN_IMAGES,
    SHORT_BUDGET,
    adapt_to_budget,
    choose_model,
    estimate_images,
)
from detopt.errors import DetoptInputError

ROOT = Path(__file__).resolve().parents[2]
ADAMW_KEYS = {"lr0", "momentum", "warmup_bias_lr"}  # adapted only when the user picks AdamW


def _cfg(synth_dir, tmp_path, **kw) -> TrainConfig:
    values = dict(data=str(synth_dir / "data.yaml"), out=str(tmp_path / "run"), model="yolo-p", imgsz=64,
                  batch=8, workers=0, val=False, progress=False)
    return TrainConfig(**(values | kw))


def test_a_budget_adapts_every_key_not_given_and_nothing_else(synth_dir, tmp_path):
    plain = _cfg(synth_dir, tmp_path, epochs=3)
    assert adapt_to_budget(plain) == (plain, {})  # no budget: the long-run defaults stay
    short = _cfg(synth_dir, tmp_path, time=60)
    adapted, reasons = adapt_to_budget(short)
    # the model was given; MuSGD keeps SGD's lr0, momentum and bias warmup (AdamW's keys stay)
    assert set(reasons) == set(SHORT_BUDGET) - ADAMW_KEYS
    assert (adapted.nbs, adapted.warmup_epochs, adapted.close_mosaic) == (8, 1.0, 1)
    optimizer_keys = (adapted.optimizer, adapted.lr0, adapted.momentum, adapted.warmup_bias_lr)
    assert optimizer_keys == ("musgd", 0.01, 0.937, 0.1)
    untouched = set(TrainConfig.model_fields) - set(SHORT_BUDGET)
    assert all(getattr(adapted, k) == getattr(short, k) for k in untouched)
    assert adapt_to_budget(adapted) == (adapted, reasons)  # idempotent (the demo adapts first)
    # the model scale is not a config rule: the trainer chooses it from the data and this machine
    assert "model" not in adapt_to_budget(TrainConfig(data="d", time=600))[1]
    # an explicit value always wins, even when it equals the long-run default
    mine, reasons = adapt_to_budget(_cfg(synth_dir, tmp_path, time=60, nbs=64, close_mosaic=10))
    assert (mine.nbs, mine.close_mosaic, mine.warmup_epochs) == (64, 10, 1.0)
    assert set(reasons) == {"warmup_epochs", "optimizer"}
    # the optimizer's keys follow the optimizer: SGD given keeps SGD's defaults, AdamW given with
    # its own learning rate keeps that rate and takes the other AdamW values
    sgd, reasons = adapt_to_budget(_cfg(synth_dir, tmp_path, time=60, optimizer="sgd"))
    assert (sgd.optimizer, sgd.lr0, sgd.momentum, sgd.warmup_bias_lr) == ("sgd", 0.01, 0.937, 0.1)
    assert not ({"optimizer"} | ADAMW_KEYS) & set(reasons)
    adam, reasons = adapt_to_budget(_cfg(synth_dir, tmp_path, time=60, optimizer="adamw", lr0=3e-4))
    assert (adam.lr0, adam.momentum, adam.warmup_bias_lr) == (3e-4, 0.9, 0.0)
    assert {"momentum", "warmup_bias_lr"} <= set(reasons) and not {"optimizer", "lr0"} & set(reasons)
    assert adapt_to_budget(adam) == (adam, reasons)


def test_the_scale_is_the_largest_whose_estimated_images_reach_its_minimum():
    # the estimate: budget / (s/image x loader share x validation share), whatever the split's size
    assert estimate_images(600, 0.01, False) == pytest.approx(600 / (0.01 * LOADER_SHARE))
    assert estimate_images(600, 0.01, True) == pytest.approx(600 / (0.01 * LOADER_SHARE * VAL_SHARE))
    asked = []

    def speed(name):
        asked.append(name)
        return 0.02

    need = SCALE_MIN_IMAGES["yolo-n"]
    # a budget in which yolo-n sees exactly its minimum, then one a little shorter
    budget = need * 0.02 * LOADER_SHARE * (1 + 1e-9)
    model, why = choose_model(budget, 2000, speed, False)
    assert model == "yolo-n" and asked == ["yolo-n"] and f"{need:,}" in why and "20.0 ms/image" in why
    assert f"{need / 2000:.1f} epochs of 2000" in why
    model, why = choose_model(budget * 0.999, 2000, speed, False)
    assert model == "yolo-p" and "yolo-n would train on only" in why
    assert choose_model(budget * 0.999, 50, speed, False)[0] == "yolo-p"  # epochs do not decide
    assert choose_model(budget, 2000, speed, True)[0] == "yolo-p"  # validation takes its share
    # a table of three: the largest that qualifies; the smaller ones are not measured
    asked.clear()
    scales = {"a": 0, "b": 500, "c": 5000}
    assert choose_model(22, 100, speed, False, scales)[0] == "b" and asked == ["c", "b"]  # 1000 images
    assert choose_model(2, 100, speed, False, scales)[0] == "a"
    assert choose_model(200, 100, speed, False, scales)[0] == "c"


def test_the_probe_times_real_steps_and_leaves_the_rng_alone(monkeypatch):
    monkeypatch.setattr(probe, "_CACHE", {})
    cfg = TrainConfig(data="d", imgsz=64, batch=2, time=60)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    spi = probe.seconds_per_image("yolo-p", 3, cfg, torch.device("cpu"), steps=1, warmup=1)
    assert 0 < spi < 10 and torch.equal(torch.get_rng_state(), state)
    assert probe.seconds_per_image("yolo-p", 3, cfg, torch.device("cpu")) == spi  # cached
    assert len(probe._CACHE) == 1
    # another assigner (a dict config) or loss is another measurement, not the cached one
    atss = cfg.model_copy(update={"assigner": {"name": "atss", "topk": 9}})
    assert probe.seconds_per_image("yolo-p", 3, atss, torch.device("cpu"), steps=1, warmup=1) > 0
    focal = cfg.model_copy(update={"cls_loss": "focal"})
    probe.seconds_per_image("yolo-p", 3, focal, torch.device("cpu"), steps=1, warmup=1)
    assert len(probe._CACHE) == 3


def test_the_trainer_chooses_the_scale_only_when_none_is_given(synth_dir, tmp_path, monkeypatch):
    from detopt.engine import trainer as trainer_module

    calls = []

    def fake(name, nc, cfg, device):
        calls.append(name)
        return speeds[name]

    monkeypatch.setattr(trainer_module, "seconds_per_image", fake)
    base = dict(data=str(synth_dir / "data.yaml"), imgsz=64, batch=8, workers=0, val=False, progress=False,
                time=600)
    speeds = {"yolo-n": 1e-6}  # a fast machine: yolo-n fits many epochs
    t = Trainer(TrainConfig(out=str(tmp_path / "a"), **base))
    assert t.cfg.model == "yolo-n" and t.model.spec["name"] == "yolo-n" and calls == ["yolo-n"]
    assert "model" not in t.cfg.model_fields_set and "epochs of" in t.adapted["model"]
    speeds = {"yolo-n": 10.0}  # a slow machine: yolo-p
    t = Trainer(TrainConfig(out=str(tmp_path / "b"), **base))
    assert t.cfg.model == "yolo-p" and t.model.spec["name"] == "yolo-p"
    assert "would train on only" in t.adapted["model"]
    assert t.elapsed > 0  # the probe's seconds count in the budget
    calls.clear()  # a given model, no budget: nothing is measured
    assert Trainer(TrainConfig(out=str(tmp_path / "c"), model="yolo-n", **base)).cfg.model == "yolo-n"
    assert Trainer(TrainConfig(out=str(tmp_path / "d"), **(base | {"time": None}))).adapted == {}
    assert calls == []


def test_the_run_records_each_adapted_value_with_its_reason(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(synth_dir / "data.yaml"), "--out", str(out), "--model", "yolo-p",
            "--imgsz", "64", "--batch", "8", "--workers", "0", "--time", "4s", "val=false", "progress=false"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "accumulate 1" in printed
    assert "short-budget recipe: nbs=8, optimizer=musgd, warmup_epochs=1.0, close_mosaic=1" in printed
    text = (out / "config.yaml").read_text()
    for key in set(SHORT_BUDGET) - ADAMW_KEYS:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{key}:"))
        assert "# adapted: short budget" in line, line
    saved = load_config(TrainConfig, out / "config.yaml")  # the comments are only comments
    assert (saved.nbs, saved.warmup_epochs, saved.close_mosaic, saved.time) == (8, 1.0, 1, 4.0)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["nbs"] == 8 and ckpt["config"]["optimizer"] == "musgd"
    assert set(ckpt["adapted"]) == set(SHORT_BUDGET) - ADAMW_KEYS

    # resuming keeps the values and the reasons of the first start
    resumed = Trainer.resume(out, epochs=ckpt["epochs"] + 1)
    assert resumed.cfg.nbs == 8 and resumed.accumulate == 1 and set(resumed.adapted) == set(ckpt["adapted"])
    resumed.train()
    assert "# adapted: short budget" in (out / "config.yaml").read_text()

    # the user's own value, on the command line or in --config, is never replaced
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"nbs": 32, "close_mosaic": 0}))
    assert main([*args[:4], str(tmp_path / "r2"), "--config", str(mine), *args[5:], "warmup_epochs=2"]) == 0
    printed = capsys.readouterr().out
    assert "accumulate 4" in printed and "short-budget recipe: nbs" not in printed
    again = load_config(TrainConfig, tmp_path / "r2" / "config.yaml")
    assert (again.nbs, again.close_mosaic, again.warmup_epochs) == (32, 0, 2.0)


def test_persistent_workers_augment_each_epoch_as_the_main_process_does(synth_dir, tmp_path):
    """The epoch and the close-mosaic switch reach workers that live across epochs: every image a
    worker loads equals the same (epoch, index) built in this process."""
    closing = {"epochs": 3, "close_mosaic": 1, "close_mosaic_max_fraction": 1.0}
    trainer = Trainer(_cfg(synth_dir, tmp_path, workers=2, **closing))
    assert trainer.loader.persistent_workers
    reference = Trainer(_cfg(synth_dir, tmp_path, workers=0, **closing))
    seen_mixing = []
    for epoch in range(3):
        trainer._set_data_epoch(epoch)
        order = list(trainer.sampler)
        got = [b["images"] for b in trainer.loader]
        reference._set_data_epoch(epoch)
        seen_mixing.append(reference.train_set.pipeline.mixing_on)
        want = [reference.train_set[i]["image"] for i in order]
        got = torch.cat(got)
        assert torch.equal(got, torch.stack(want[: len(got)])), epoch
    assert seen_mixing == [True, True, False]  # the last epoch without mosaic, in the workers too
    first = trainer.loader._iterator
    trainer._set_data_epoch(0)
    next(iter(trainer.loader))
    assert trainer.loader._iterator is first  # the same worker processes, not started again


def test_data_yaml_has_no_path_and_reads_from_any_working_directory(synth_dir, tmp_path):
    spec = yaml.safe_load((synth_dir / "data.yaml").read_text())
    assert "path" not in spec and spec["train"] == "images/train"
    # ultralytics' rule (check_det_dataset): no 'path' -> the yaml's own folder; detopt reads the
    # same images from another working directory through a relative path to the yaml
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    rel = os.path.relpath(synth_dir / "data.yaml", moved)
    code = ("from detopt.data.formats import read_dataset; import sys; "
            f"ds, d, _ = read_dataset({rel!r}); print(len(ds.splits['train']), len(d))")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-c", code], cwd=moved, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ds, _, _ = read_dataset(synth_dir / "data.yaml")
    assert res.stdout.split() == [str(len(ds.splits["train"])), "0"]


def test_build_config_keeps_which_keys_were_given():
    cfg = build_config(TrainConfig, {"data": "d", "time": "10m"})
    assert cfg.model_fields_set == {"data", "time"}
    with pytest.raises(DetoptInputError, match="nbs"):
        build_config(TrainConfig, {"data": "d", "nbs": 0})

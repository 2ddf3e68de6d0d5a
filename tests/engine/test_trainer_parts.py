"""The trainer built from parts: each part overridable, the data set read once, callbacks that
see every epoch and can stop a run, and the epoch plan (length, schedule, close-mosaic) in one
place that leaves a YAML pipeline's own close-mosaic as written."""

import csv

import pytest
import torch
import yaml

from detopt import data as detopt_data
from detopt.config import TrainConfig
from detopt.data import formats
from detopt.engine import Callback, EpochPlan, Trainer


def _cfg(synth_dir, tmp_path, **kw):
    values = dict(data=str(synth_dir / "data.yaml"), out=str(tmp_path / "run"), model="yolo-p",
                  imgsz=64, epochs=1, batch=8, workers=0, val=False, progress=False)
    return TrainConfig(**(values | kw))


class _CountingCriterion:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, outputs, targets):
        self.calls += 1
        return self.inner(outputs, targets)


class _MyTrainer(Trainer):
    """Overrides two parts and nothing else."""

    def build_criterion(self):
        return _CountingCriterion(super().build_criterion())

    def build_optimizer(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr0)


def test_a_subclass_replaces_parts_and_the_loop_uses_them(synth_dir, tmp_path):
    trainer = _MyTrainer(_cfg(synth_dir, tmp_path))
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert trainer.criterion.calls == trainer.iters_per_epoch > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_the_data_set_is_read_once_for_both_splits(synth_dir, tmp_path, monkeypatch):
    calls = []
    real = formats.read_dataset

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(formats, "read_dataset", counting)
    trainer = Trainer(_cfg(synth_dir, tmp_path, val=True))
    assert len(calls) == 1
    assert len(trainer.train_set) > 0 and len(trainer.val_set) > 0
    # the one-split helper still reads on its own
    detopt_data.dataset.dataset_from_source(synth_dir / "data.yaml", "val", 64)
    assert len(calls) == 2


class _Recorder(Callback):
    def __init__(self, stop_after=None):
        self.events, self.stop_after = [], stop_after

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.start_epoch))

    def on_epoch_start(self, trainer, epoch):
        self.events.append(("epoch_start", epoch))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(("epoch_end", epoch, metrics["epoch"], "metrics/AP" in metrics))
        if self.stop_after is not None and epoch + 1 >= self.stop_after:
            trainer.request_stop()

    def on_train_end(self, trainer, summary):
        self.events.append(("end", summary["epochs"], summary["stopped_early"]))


def test_callbacks_see_every_epoch_with_its_metrics(synth_dir, tmp_path):
    rec = _Recorder()
    Trainer(_cfg(synth_dir, tmp_path, epochs=2, val=True), callbacks=[rec]).train()
    assert rec.events == [("start", 0), ("epoch_start", 0), ("epoch_end", 0, 1, True),
                          ("epoch_start", 1), ("epoch_end", 1, 2, True), ("end", 2, False)]


def test_a_callback_stops_the_run_after_an_epoch_with_its_checkpoint(synth_dir, tmp_path):
    rec = _Recorder(stop_after=1)
    trainer = Trainer(_cfg(synth_dir, tmp_path, epochs=3), callbacks=[rec])
    summary = trainer.train()
    assert summary["stopped_early"] and summary["epochs"] == 1
    assert rec.events[-1] == ("end", 1, True)
    assert [e[0] for e in rec.events].count("epoch_end") == 1
    with (tmp_path / "run" / "results.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]
    assert (tmp_path / "run" / "last.pt").is_file()


def test_resume_takes_callbacks_too(synth_dir, tmp_path):
    Trainer(_cfg(synth_dir, tmp_path, epochs=1)).train()
    rec = _Recorder()
    Trainer.resume(tmp_path / "run", callbacks=[rec], epochs=2).train()
    assert rec.events[0] == ("start", 1) and rec.events[-1] == ("end", 2, False)


# ------------------------------------------------------------------ the epoch plan
def _plan(**kw):
    base = dict(data="unused.yaml", epochs=20, close_mosaic=10)
    cfg = TrainConfig(**(base | kw))
    return EpochPlan.from_config(cfg, cfg.close_mosaic)


@pytest.mark.parametrize(("epochs", "close", "expected"), [(20, 10, 3), (200, 10, 10), (3, 10, 1), (20, 0, 0),
                                                           (5, 2, 1), (40, 2, 2)])
def test_close_mosaic_epochs_follow_the_rule(epochs, close, expected):
    plan = _plan(epochs=epochs, close_mosaic=close)
    assert plan.close_mosaic_epochs() == expected  # min(close, max(1, round(0.15 · epochs)))
    assert [plan.mixing_on(e) for e in range(epochs)] == [True] * (epochs - expected) + [False] * expected


def test_the_plan_fits_the_budget_and_the_schedule_follows_it():
    plan = _plan(time=100.0, epochs=300, warmup_epochs=3.0, warmup_min_iters=0)
    # 0.1 s per iteration, 50 iterations, validation: 5 s · 1.15 per epoch -> 17 epochs in 100 s
    plan.fit_first_epoch(0.1, 50, epoch=0, elapsed=0.0, validating=True)
    assert plan.epochs == int(100 // (0.1 * 50 * 1.15)) == 17
    sched = plan.schedule(50)
    assert sched.warmup_iters == min(150, round(plan.cfg.warmup_max_fraction * 17 * 50))
    plan.refine([9.0, 5.0, 5.0], done=3, elapsed=19.0)  # first epoch left out: 3 + 81 // 5 = 19
    assert plan.epochs == 19
    plan.refine([9.0, 5.0, 5.0], done=3, elapsed=100.0)
    assert plan.epochs == 3


def test_a_yaml_pipeline_keeps_its_own_close_mosaic(synth_dir, tmp_path):
    spec = {"close_mosaic": 0, "transforms": [{"name": "mosaic"}, {"name": "hflip"}]}
    aug = tmp_path / "aug.yaml"
    aug.write_text(yaml.safe_dump(spec))
    trainer = Trainer(_cfg(synth_dir, tmp_path, epochs=20, close_mosaic=10, pipeline=str(aug)))
    for e in range(20):
        trainer._set_data_epoch(e)
        assert trainer.train_set.pipeline.mixing_on  # the YAML said 0: mosaic to the end
    assert trainer.train_set.pipeline.close_mosaic == 0
    spec["close_mosaic"] = 2
    aug.write_text(yaml.safe_dump(spec))
    trainer = Trainer(_cfg(synth_dir, tmp_path, epochs=20, close_mosaic=10, pipeline=str(aug)))
    on = []
    for e in range(20):
        trainer._set_data_epoch(e)
        on.append(trainer.train_set.pipeline.mixing_on)
    assert on == [True] * 18 + [False] * 2
    assert trainer.train_set.pipeline.close_mosaic == 2  # never overwritten


# ------------------------------------------------------------------ one vocabulary
def test_one_spelling_per_setting_with_the_old_keys_and_flags_accepted():
    from detopt.cli import build_parser
    from detopt.config import build_config
    from detopt.errors import DetoptInputError

    cfg = build_config(TrainConfig, {"data": "d.yaml", "conf": 0.05, "iou": 0.6})  # keys of older runs
    assert (cfg.score_thr, cfg.iou_thr) == (0.05, 0.6)
    assert "conf" not in cfg.model_dump() and "iou" not in cfg.model_dump()
    with pytest.raises(DetoptInputError, match="'iou' and 'iou_thr' are one setting"):
        build_config(TrainConfig, {"data": "d.yaml", "iou": 0.6, "iou_thr": 0.5})
    parser = build_parser()
    for argv in (["--score-thr", "0.2", "--iou-thr", "0.4"], ["--conf", "0.2", "--iou", "0.4"]):
        args = parser.parse_args(["val", "--weights", "w.pt", "--data", "d.yaml", *argv])
        assert (args.score_thr, args.iou_thr) == (0.2, 0.4)
        args = parser.parse_args(["predict", "--weights", "w.pt", "--source", "x", *argv])
        assert (args.score_thr, args.iou_thr) == (0.2, 0.4)

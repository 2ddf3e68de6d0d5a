"""Schedules, EMA, optimizer groups, checkpoints and config against closed forms."""

import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from detopt.config import TrainConfig, build_config, parse_duration, parse_overrides
from detopt.engine import (
    ModelEMA,
    Schedule,
    atomic_save,
    build_optimizer,
    export_safetensors,
    load_checkpoint,
    load_safetensors,
    lr_factor,
    model_from_checkpoint,
    param_groups,
    set_hyperparameters,
)
from detopt.engine.trainer import EpochSampler
from detopt.errors import DetoptInputError
from detopt.models import create_model


@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_lr_factor_closed_forms(t):
    assert lr_factor("cosine", t, 0.01) == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * t)) / 2)
    assert lr_factor("linear", t, 0.01) == pytest.approx(1 - 0.99 * t)
    assert lr_factor("step", t, 0.01) == pytest.approx(0.1 ** ((t >= 0.7) + (t >= 0.9)))


def test_schedule_warmup_and_decay():
    s = Schedule(lr0=0.01, lrf=0.1, warmup_iters=100, warmup_bias_lr=0.1, momentum=0.9, warmup_momentum=0.8)
    lr, bias, mom = s.at(0, 1000)
    assert (lr, bias, mom) == (0.0, pytest.approx(0.1), pytest.approx(0.8))
    lr, bias, mom = s.at(50, 1000)
    assert lr == pytest.approx(0.005)
    assert bias == pytest.approx(0.1 + (0.01 - 0.1) * 0.5)
    assert mom == pytest.approx(0.85)
    assert s.at(100, 1000) == (pytest.approx(0.01), pytest.approx(0.01), 0.9)
    assert s.at(1000, 1000)[0] == pytest.approx(0.001)
    lrs = [s.at(i, 1000)[0] for i in range(100, 1001, 50)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    with pytest.raises(DetoptInputError):
        Schedule(lr0=0.01, kind="poly")


def test_ema_ramp_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()
    model(torch.randn(4, 1, 3, 3))  # moves BN running stats and num_batches_tracked
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2.0))
    assert ema.current_decay() == pytest.approx(d)
    now = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, d * before[k] + (1 - d) * now[k])
        else:
            assert torch.equal(v, now[k])
    assert not any(p.requires_grad for p in ema.module.parameters())
    state = ema.state_dict()
    other = ModelEMA(model, decay=0.9, tau=2.0)
    other.load_state_dict(state)
    assert other.updates == 1


def test_param_groups_partition_and_decay():
    model = create_model("yolo-p", 2)
    decay, norm, bias = param_groups(model)
    ids = [id(p) for p in decay + norm + bias]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(p.ndim == 4 for p in decay) and all(p.ndim == 1 for p in norm + bias)
    opt = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0, 0.0]
    assert opt.param_groups[0]["nesterov"]
    set_hyperparameters(opt, 0.01, 0.05, 0.8)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01, 0.05]
    assert all(g["momentum"] == 0.8 for g in opt.param_groups)
    adam = build_optimizer(model, "adamw", lr=0.001, momentum=0.9)
    set_hyperparameters(adam, 0.01, 0.05, 0.85)
    assert adam.param_groups[0]["betas"] == (0.85, 0.999)
    with pytest.raises(DetoptInputError, match="optimizer"):
        build_optimizer(model, "lion")


def _ckpt(model):
    return {"model": model.state_dict(), "ema": None, "spec": dict(model.spec), "names": ["a", "b"],
            "config": {"imgsz": 64}}


def test_atomic_save_leaves_the_old_file_on_failure(tmp_path):
    model = create_model("yolo-p", 2)
    path = atomic_save(_ckpt(model), tmp_path / "last.pt")
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_checkpoint_loads_weights_only_and_rebuilds(tmp_path):
    torch.manual_seed(0)
    model = create_model("yolo-p", 2).eval()
    path = atomic_save(_ckpt(model), tmp_path / "w.pt")
    again = model_from_checkpoint(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), again(x), strict=True):
            assert torch.equal(a, b)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_refuses_pickled_code_and_junk(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload(), "spec": {}}, protocol=2))
    with pytest.raises(DetoptInputError, match=r"evil\.pt: refused: the file holds pickled code") as e:
        load_checkpoint(evil)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(DetoptInputError, match=r"junk\.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(DetoptInputError, match="not a detopt checkpoint"):
        load_checkpoint(other)
    with pytest.raises(DetoptInputError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(1)
    model = create_model("yolo-p", 2, p2=True).eval()
    out = export_safetensors(_ckpt(model), tmp_path / "m.safetensors")
    again, names = load_safetensors(out)
    assert names == ["a", "b"] and again.p2
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), again(x), strict=True):
            assert torch.equal(a, b)


def test_config_overrides_and_errors():
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400 and parse_duration(90) == 90
    with pytest.raises(DetoptInputError, match="duration"):
        parse_duration("ten minutes")
    values = {"data": "d.yaml"} | parse_overrides(["lr0=0.02", "amp=false", "time=2m", "pipeline=aug.yaml"])
    cfg = build_config(TrainConfig, values)
    assert (cfg.lr0, cfg.amp, cfg.time, cfg.pipeline) == (0.02, False, 120.0, "aug.yaml")
    with pytest.raises(DetoptInputError, match=r"'lr' \(did you mean lrf, lr0"):
        build_config(TrainConfig, {"data": "d", "lr": 0.1})
    with pytest.raises(DetoptInputError, match="batch"):
        build_config(TrainConfig, {"data": "d", "batch": 0})
    with pytest.raises(DetoptInputError, match="key=value"):
        parse_overrides(["lr0"])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_sampler_is_a_function_of_seed_and_epoch(world):
    def order(epoch, rank):
        s = EpochSampler(10, seed=4, rank=rank, world=world)
        s.set_epoch(epoch)
        return list(s)

    shards = [order(2, r) for r in range(world)]
    assert sorted({i for sh in shards for i in sh}) == list(range(10))
    assert all(len(sh) == math.ceil(10 / world) for sh in shards)
    assert order(2, 0) == order(2, 0) and order(2, 0) != order(3, 0)
    assert np.all(np.diff(list(EpochSampler(5, shuffle=False))) == 1)

"""The search space: the file format, its checks (one line naming the file and key), and draws
that stay inside every range whatever the sampler."""

import math

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.config import TrainConfig
from detopt.errors import DetoptInputError
from detopt.tune.space import (
    DEFAULT_SPACE,
    Choice,
    Range,
    contains,
    describe,
    parse_param,
    read_space,
    suggest,
)


def _write(tmp_path, text):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def test_default_space_is_valid_train_keys_and_round_trips():
    for key, param in DEFAULT_SPACE.items():
        assert key in TrainConfig.model_fields
        again = parse_param(key, param.describe())  # every bound a value TrainConfig accepts
        assert again == param


def test_space_file_overrides_adds_and_removes(tmp_path):
    p = _write(tmp_path, "lr0: {low: 0.001, high: 0.05, log: true}\noptimizer: [sgd, adamw]\n"
                         "nbs: {low: 8, high: 64, step: 8}\nmixup: null\n")
    space = read_space(p)
    assert space["lr0"] == Range(0.001, 0.05, log=True)
    assert space["optimizer"] == Choice(("sgd", "adamw"))
    assert space["nbs"] == Range(8, 64, step=8, integer=True)
    assert "mixup" not in space and "momentum" in space
    assert describe(space)["optimizer"] == ["sgd", "adamw"]


@pytest.mark.parametrize(("text", "needle"), [
    ("lr: {low: 0.001, high: 0.1}\n", "unknown key 'lr'"),
    ("lr0: {low: 0.1, high: 0.1}\n", "lr0: empty range"),
    ("lr0: {low: 0.2, high: 0.1}\n", "lr0: empty range"),
    ("lr0: {low: 0, high: 0.1, log: true}\n", "log range needs low > 0"),
    ("optimizer: []\n", "optimizer: an empty list"),
    ("optimizer: [sgd, lion]\n", "optimizer: 'lion' is not a valid value"),
    ("momentum: {low: 0.9, high: 1.0}\n", "momentum: 1.0 is not a valid value"),
    ("epochs: [1, 2]\n", "'epochs' is set by each trial"),
    ("lr0: 0.01\n", "expected {low: .., high: ..}"),
    ("lr0: {low: 0.001, hi: 0.1}\n", "unknown field(s) ['hi']"),
    ("nbs: {low: 8.5, high: 64}\n", "nbs: an integer key needs integer bounds"),
    ("- lr0\n", "expected a mapping"),
    ("bogus: null\n", "null removes a default key"),
])
def test_bad_space_files_name_the_file_and_key(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(DetoptInputError) as e:
        read_space(p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_unknown_key_suggests_close_ones(tmp_path):
    with pytest.raises(DetoptInputError, match="did you mean lr0"):
        read_space(_write(tmp_path, "lr0_: {low: 0.001, high: 0.1}\n"))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["random", "tpe", "qmc"]), st.integers(0, 2**16))
def test_draws_stay_inside_every_range(sampler, seed):
    samplers = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler,
                "qmc": optuna.samplers.QMCSampler}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = dict(DEFAULT_SPACE) | {"nbs": Range(8, 64, step=8, integer=True),
                                   "optimizer": Choice(("sgd", "adamw"))}
    study = optuna.create_study(direction="maximize", sampler=samplers[sampler](seed=seed))
    for i in range(12):
        trial = study.ask()
        draw = suggest(trial, space)
        study.tell(trial, float(i % 5))
        for key, param in space.items():
            v = draw[key]
            if isinstance(param, Choice):
                assert v in param.values
                continue
            assert param.low <= v <= param.high, (key, v)
            if param.integer:
                assert isinstance(v, int) and (v - param.low) % param.step == 0
            elif param.step:
                assert math.isclose((v - param.low) / param.step, round((v - param.low) / param.step))
        TrainConfig(data="-", **draw)  # every draw is a valid training config


@pytest.mark.parametrize(("param", "value", "inside"), [
    (Range(0.001, 0.1, log=True), 0.01, True),
    (Range(0.001, 0.1, log=True), 0.2, False),
    (Range(0.0, 1.0, step=0.25), 0.5, True),
    (Range(0.0, 1.0, step=0.25), 0.3, False),
    (Range(1, 5, integer=True), 3, True),
    (Range(1, 5, integer=True), 2.5, False),
    (Range(0.0, 1.0), True, False),  # a bool is not a number here
    (Range(0.0, 1.0), "0.5", False),
    (Choice((16, 32, 64)), 32, True),
    (Choice((16, 32, 64)), 48, False),
    (Choice((0, 1)), False, False),  # False == 0, but not the same choice
    (Choice(("sgd", "adamw")), "sgd", True),
])
def test_contains_is_what_the_param_can_draw(param, value, inside):
    assert contains(param, value) is inside

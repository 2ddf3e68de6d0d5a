"""The search space of ``detopt tune``: which ``TrainConfig`` keys a study varies, and how.

A space file maps config keys to a range or a list of choices::

    lr0: {low: 1.0e-4, high: 1.0e-1, log: true}
    warmup_epochs: {low: 0, high: 5}            # floats unless both bounds are integers
    nbs: {low: 8, high: 64, step: 8}            # integers: both bounds integers
    optimizer: [sgd, adamw, musgd]              # a list: categorical choices
    imgsz: [256, 320]

It replaces the keys it names in :data:`DEFAULT_SPACE` (the guide's table) and adds the others;
``key: null`` removes a key from the default space. Everything is checked before the first
trial: the key is a ``TrainConfig`` field, the range is not empty (``low < high``; a log range
starts above 0), and each bound or choice is a value the config accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from detopt.config import TRIAL_KEYS, TrainConfig, build_config
from detopt.errors import DetoptInputError

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Range:
    """A numeric range ``[low, high]``: floats (``log`` for a log-uniform draw, optional
    ``step``) or integers when ``integer``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> float | int:
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Choice:
    """Categorical choices (strings, numbers or booleans)."""

    values: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def describe(self) -> list[Any]:
        return list(self.values)


Param = Range | Choice

DEFAULT_SPACE: dict[str, Param] = {
    # the guide's table ("Key Hyperparameters") and the detector's loss and augmentation gains;
    # the batch size is the nominal one (nbs): the loader's batch is a memory choice, not a
    # hyperparameter (gradients accumulate up to nbs)
    "lr0": Range(1e-4, 1e-1, log=True),
    "lrf": Range(0.01, 1.0, log=True),
    "momentum": Range(0.6, 0.98),
    "weight_decay": Range(1e-5, 1e-3, log=True),
    "warmup_epochs": Range(0.0, 5.0),
    "box_gain": Range(2.0, 15.0),
    "cls_gain": Range(0.2, 2.0),
    "dfl_gain": Range(0.5, 3.0),
    "mosaic": Range(0.0, 1.0),
    "mixup": Range(0.0, 0.5),
    "copy_paste": Range(0.0, 0.5),
    "hsv_h": Range(0.0, 0.1),
    "hsv_s": Range(0.0, 0.9),
    "hsv_v": Range(0.0, 0.9),
    "imgsz": Choice((256, 320, 384)),
    "nbs": Choice((16, 32, 64)),
}
"""The default space: the guide's ranges (learning rate 1e-4 to 1e-1, weight decay 1e-5 to 1e-3,
momentum, warmup) and the recipe's gains and augmentation probabilities around their defaults."""

OPTIMIZER_RANGES: dict[str, dict[str, Param]] = {
    "adamw": {"lr0": Range(1e-5, 1e-2, log=True)},
}
"""Keys of the default space whose range depends on the optimizer: an Adam step moves each weight by
about the learning rate, so AdamW's useful rates are ten times lower than SGD's."""


def default_space(optimizer: str = "sgd") -> dict[str, Param]:
    """:data:`DEFAULT_SPACE` with the ranges of ``optimizer`` (:data:`OPTIMIZER_RANGES`)."""
    return DEFAULT_SPACE | OPTIMIZER_RANGES.get(optimizer, {})


# keys a trial sets itself or that say where and on what it runs: searching them would change
# what a trial is, not how it trains
RESERVED = TRIAL_KEYS | {"images", "device", "val_split", "allow_outside_root", "max_pixels", "tensorboard",
                         "workers", "skip_invalid", "cache", "deterministic", "teacher"}


def _check_value(key: str, value: Any, where: str) -> None:
    """``value`` must be accepted by ``TrainConfig.key`` (bounds of ``momentum`` < 1, ...)."""
    try:
        build_config(TrainConfig, {"data": "-", key: value})
    except DetoptInputError as e:
        raise DetoptInputError(f"{where}: {key}: {value!r} is not a valid value ({e})") from None


def parse_param(key: str, spec: Any, where: str = "space") -> Param:
    """One entry of a space file -> a :data:`Param`, checked (see the module docstring)."""
    if key not in TrainConfig.model_fields:
        import difflib

        close = difflib.get_close_matches(key, list(TrainConfig.model_fields), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DetoptInputError(f"{where}: unknown key {key!r} (not a TrainConfig key){hint}")
    if key in RESERVED:
        raise DetoptInputError(f"{where}: {key!r} is set by each trial and cannot be searched")
    if isinstance(spec, list):
        if not spec:
            raise DetoptInputError(f"{where}: {key}: an empty list of choices")
        for v in spec:
            _check_value(key, v, where)
        return Choice(tuple(spec))
    if not isinstance(spec, dict):
        raise DetoptInputError(
            f"{where}: {key}: expected {{low: .., high: ..}} or a list of choices, got {spec!r}")
    unknown = sorted(set(spec) - {"low", "high", "log", "step"})
    if unknown:
        raise DetoptInputError(f"{where}: {key}: unknown field(s) {unknown} (low, high, log, step)")
    if "low" not in spec or "high" not in spec:
        raise DetoptInputError(f"{where}: {key}: a range needs both low and high, got {spec!r}")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    for name, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise DetoptInputError(f"{where}: {key}: {name} must be a finite number, got {v!r}")
    if not low < high:
        raise DetoptInputError(f"{where}: {key}: empty range (low {low} is not below high {high})")
    if log and low <= 0:
        raise DetoptInputError(f"{where}: {key}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise DetoptInputError(f"{where}: {key}: step must be positive and without log, got {step}")
    integer = isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int))
    if not integer and TrainConfig.model_fields[key].annotation is int:
        raise DetoptInputError(f"{where}: {key}: an integer key needs integer bounds, got {low}, {high}")
    _check_value(key, low, where)
    _check_value(key, high, where)
    return Range(float(low), float(high), log, None if step is None else float(step), integer)


def read_space(path: str | Path | None, base: dict[str, Param] | None = None) -> dict[str, Param]:
    """The default space updated by the YAML file ``path`` (None: the default space alone)."""
    space = dict(DEFAULT_SPACE if base is None else base)
    if path is None:
        return space
    where = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise DetoptInputError(f"{where}: cannot read the space file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise DetoptInputError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if doc is None:
        return space
    if not isinstance(doc, dict):
        raise DetoptInputError(f"{where}: expected a mapping of config keys, got {type(doc).__name__}")
    for key, spec in doc.items():
        if spec is None:
            if key not in space:
                raise DetoptInputError(f"{where}: {key}: null removes a default key, and it is not one")
            del space[key]
            continue
        space[str(key)] = parse_param(str(key), spec, where)
    if not space:
        raise DetoptInputError(f"{where}: the search space is empty")
    return space


def without(space: dict[str, Param], fixed: set[str]) -> dict[str, Param]:
    """``space`` less the keys the user fixed (a ``key=value`` override is not searched)."""
    return {k: v for k, v in space.items() if k not in fixed}


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    """One draw of every key of ``space`` through ``trial`` (its sampler decides)."""
    return {key: param.suggest(trial, key) for key, param in space.items()}


def contains(param: Param, value: Any) -> bool:
    """Whether ``value`` is a value ``param`` can draw (within the range and on its step; one of
    the choices)."""
    if isinstance(param, Choice):
        return any(value == v and type(value) is type(v) for v in param.values)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not param.low <= value <= param.high or (param.integer and value != int(value)):
        return False
    if param.step is not None:
        k = (value - param.low) / param.step
        return abs(k - round(k)) < 1e-9
    return True


def describe(space: dict[str, Param]) -> dict[str, Any]:
    """``space`` as the YAML a space file would hold (stored with the study; shown in reports)."""
    return {k: v.describe() for k, v in space.items()}

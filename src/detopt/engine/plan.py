"""The epoch plan of a training run: how many epochs, the learning-rate schedule over them, and
which last epochs run without mosaic. Every change of the planned length goes through here.

A fixed run (``epochs=N``) keeps its plan. A time-budgeted run (``time=S`` seconds) is planned
twice over: early in its first epoch from the measured seconds per iteration (so warmup, the
schedule and close-mosaic fit the real length), then after every epoch from the measured epoch
times (the first epoch, which carries the loader's start-up, is left out once there are others).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detopt.config import TrainConfig
from detopt.engine.schedules import Schedule

VAL_SHARE = 1.15
"""First estimate of (train + validation) / train seconds of one epoch when validating."""


@dataclass
class EpochPlan:
    """Planned length and the schedules that depend on it.

    Attributes:
        epochs: planned number of epochs (total, including those done before a resume).
        budget: the time budget in seconds, or None for a fixed number of epochs.
        close_mosaic: epochs without mixing at the end of a long run (the pipeline's own value).
        close_mosaic_max_fraction: a short run closes mosaic for at most this share of its epochs.
    """

    cfg: TrainConfig
    epochs: int
    budget: float | None
    close_mosaic: int
    close_mosaic_max_fraction: float

    @classmethod
    def from_config(cls, cfg: TrainConfig, close_mosaic: int) -> EpochPlan:
        """The plan of ``cfg``; ``close_mosaic`` is the pipeline's value (a YAML pipeline's own, or
        ``cfg.close_mosaic`` for the default pipeline)."""
        return cls(cfg, int(cfg.epochs), cfg.time, int(close_mosaic), float(cfg.close_mosaic_max_fraction))

    # ------------------------------------------------------------ length
    def budget_epochs(self, epoch_seconds: float, done: int, elapsed: float) -> int:
        """Epochs that fit the budget given the mean seconds of one (train + val) epoch, ``done``
        epochs finished and ``elapsed`` seconds spent: at least ``done`` and at least 1."""
        assert self.budget is not None
        left = self.budget - elapsed
        return max(done + int(left // max(epoch_seconds, 1e-6)), done, 1)

    def fit_first_epoch(self, seconds_per_iter: float, iters_per_epoch: int, epoch: int,
                        elapsed: float, validating: bool) -> None:
        """First estimate, from iterations timed early in the first epoch of this process."""
        share = VAL_SHARE if validating else 1.0
        planned = self.budget_epochs(seconds_per_iter * iters_per_epoch * share, epoch, elapsed)
        self.epochs = max(planned, epoch + 1)

    def refine(self, epoch_seconds: list[float], done: int, elapsed: float) -> None:
        """After an epoch: re-plan from the measured epoch times; stop when the budget is spent."""
        steady = epoch_seconds[1:] or epoch_seconds  # the first carries the loader's start-up
        self.epochs = self.budget_epochs(float(np.mean(steady)), done, elapsed)
        if elapsed >= self.budget:
            self.epochs = done

    def set_epochs(self, epochs: int, start: int) -> None:
        """Extend (or shorten) a resumed run explicitly; never below the epochs already done."""
        self.epochs = max(int(epochs), start)

    # ------------------------------------------------------------ what depends on it
    def close_mosaic_epochs(self) -> int:
        """``min(close_mosaic, max(1, round(close_mosaic_max_fraction · epochs)))`` (0 when
        close_mosaic is 0): a short run keeps mosaic for most of its epochs."""
        if not self.close_mosaic:
            return 0
        return min(self.close_mosaic, max(1, round(self.close_mosaic_max_fraction * self.epochs)))

    def mixing_on(self, epoch: int) -> bool:
        """Whether the mixing transforms run in ``epoch`` (0-based)."""
        n = self.close_mosaic_epochs()
        return not (n and epoch >= self.epochs - n)

    def schedule(self, iters_per_epoch: int) -> Schedule:
        """The learning-rate / momentum schedule over the planned iterations; warmup is
        ``max(warmup_epochs · iters, warmup_min_iters)`` capped at ``warmup_max_fraction`` of the
        run (short runs)."""
        cfg = self.cfg
        nb = iters_per_epoch
        warmup = max(round(cfg.warmup_epochs * nb), cfg.warmup_min_iters) if cfg.warmup_epochs else 0
        warmup = min(warmup, round(cfg.warmup_max_fraction * self.epochs * nb))
        return Schedule(cfg.lr0, cfg.lrf, cfg.schedule, cfg.momentum, warmup, cfg.warmup_bias_lr,
                        cfg.warmup_momentum)

"""Learning-rate and momentum schedules, per iteration: warmup then cosine, linear or step.

Stateless: the values are a function of the iteration, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detopt.errors import DetoptInputError

SCHEDULES = ("cosine", "linear", "step")
STEP_MILESTONES = (0.7, 0.9)


def lr_factor(kind: str, progress: float, lrf: float) -> float:
    """Multiplier of the base learning rate at ``progress ∈ [0, 1]`` of the post-warmup run.

    ``cosine``: from 1 to ``lrf`` along half a cosine; ``linear``: straight from 1 to ``lrf``;
    ``step``: ×√lrf at 70 % and again at 90 % (ends at ``lrf``).
    """
    t = min(max(progress, 0.0), 1.0)
    if kind == "cosine":
        return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * t))
    if kind == "linear":
        return 1 - (1 - lrf) * t
    if kind == "step":
        return math.sqrt(lrf) ** sum(t >= m for m in STEP_MILESTONES)
    raise DetoptInputError(f"schedule: expected one of {SCHEDULES}, got {kind!r}")


@dataclass(frozen=True)
class Schedule:
    """Warmup (linear, per iteration) then the decay of ``kind``.

    During warmup the bias group's learning rate falls from ``warmup_bias_lr`` to the scheduled
    value while the other groups rise from 0 to it, and the momentum rises from
    ``warmup_momentum`` to ``momentum`` (the YOLO recipe: biases warm up from a higher rate).
    """

    lr0: float
    lrf: float = 0.01
    kind: str = "cosine"
    momentum: float = 0.937
    warmup_iters: int = 0
    warmup_bias_lr: float = 0.1
    warmup_momentum: float = 0.8

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise DetoptInputError(f"schedule: expected one of {SCHEDULES}, got {self.kind!r}")
        if self.lr0 <= 0 or not 0 < self.lrf <= 1 or self.warmup_iters < 0:
            raise DetoptInputError(
                "need lr0 > 0, 0 < lrf <= 1, warmup_iters >= 0; "
                f"got {self.lr0}, {self.lrf}, {self.warmup_iters}"
            )

    def at(self, iteration: int, total_iters: int) -> tuple[float, float, float]:
        """``(lr of weights and norms, lr of biases, momentum)`` at ``iteration`` of ``total_iters``."""
        span = max(total_iters - self.warmup_iters, 1)
        lr = self.lr0 * lr_factor(self.kind, (iteration - self.warmup_iters) / span, self.lrf)
        if iteration >= self.warmup_iters:
            return lr, lr, self.momentum
        x = iteration / self.warmup_iters
        bias = self.warmup_bias_lr + (lr - self.warmup_bias_lr) * x
        mom = self.warmup_momentum + (self.momentum - self.warmup_momentum) * x
        return lr * x, bias, mom

"""Trainer callbacks: what the tuner, distillation and users hook into a run.

A callback is any object with some of these methods (each optional; :class:`Callback` has them
all as no-ops). ``trainer.request_stop()`` from any of them ends the run after the current
epoch, with its checkpoint written; ``train()``'s summary then says ``stopped_early``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detopt.engine.trainer import Trainer


class Callback:
    """Base class with every hook as a no-op; override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this process (after a resume: the first remaining one)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """After epoch ``epoch`` trained and (when due) validated; ``metrics`` is the row written
        to ``results.csv`` (``train/box``, ``metrics/AP``, ``lr``, ``time``, ...)."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the last epoch; ``summary`` is what ``train()`` returns."""


HOOKS = ("on_train_start", "on_epoch_start", "on_epoch_end", "on_train_end")


def run_hook(callbacks: list[Any], hook: str, *args: Any) -> None:
    """Call ``hook`` on every callback that has it, in order."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)

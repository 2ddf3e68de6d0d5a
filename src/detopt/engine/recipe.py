"""The short-budget recipe: defaults that adapt when a run is given a time budget.

The config's plain defaults are the long-run recipe (``nbs=64``, three warmup epochs, close-mosaic
10). Cut to a budget of minutes on a CPU, that recipe spends its few optimizer steps on a large
nominal batch and most of the run in warmup. When ``time`` is set, every key of
:data:`SHORT_BUDGET` the user did not give takes the short-budget value instead; each choice is
returned with its reason and written as a comment next to the key in the run's ``config.yaml``.
An explicit value (``nbs=64`` on the command line, a key of ``--config``) always wins.

The reasons cite measurements in ``benchmarks/README.md`` (the short-budget section).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detopt.config import TrainConfig

Rule = Callable[[TrainConfig], Any]

SMALL_MODEL_BUDGET = 20 * 60.0
"""Budgets up to this many seconds train ``yolo-p`` when no model is given (measured at 10
minutes; a longer budget keeps the config's default)."""

SHORT_BUDGET: dict[str, tuple[Rule, str]] = {
    "nbs": (
        lambda cfg: cfg.batch,
        "short budget: no gradient accumulation, 4x the optimizer steps of nbs=64 "
        "(benchmarks/README.md: about twice the mAP50-95 after 5 and 10 minutes)",
    ),
    "warmup_epochs": (
        lambda cfg: 1.0,
        "short budget: one warmup epoch (the long-run 3 would be most of a run of a few epochs)",
    ),
    "close_mosaic": (
        lambda cfg: 1,
        "short budget: one last epoch without mosaic (measured with nbs and warmup)",
    ),
    "model": (
        lambda cfg: "yolo-p" if cfg.time is not None and cfg.time <= SMALL_MODEL_BUDGET else None,
        "short budget: yolo-p makes more epochs than yolo-n and learns more in them "
        "(benchmarks/README.md: 10 minutes, mAP50-95 0.43 vs 0.32 for yolo-n, same seed)",
    ),
}
"""key -> (rule: its short-budget value from the config, or None to leave it; the reason written
to the run's config)."""


def adapt_to_budget(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, str]]:
    """``cfg`` with the short-budget values of the keys it did not set (only when ``cfg.time`` is
    given), and ``{key: reason}`` of each key the recipe set. Idempotent: adapting an adapted config
    gives it back with the same reasons. A config without a budget, or with every key given, comes
    back unchanged with ``{}``."""
    if cfg.time is None:
        return cfg, {}
    given = cfg.model_fields_set
    changes: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for key, (rule, reason) in SHORT_BUDGET.items():
        if key in given:
            continue
        value = rule(cfg)
        if value is not None:
            changes[key], reasons[key] = value, reason
    if not changes:
        return cfg, {}
    adapted = cfg.model_copy(update=changes)
    adapted.__pydantic_fields_set__ = set(given)  # adapted values stay "not given by the user"
    return adapted, reasons

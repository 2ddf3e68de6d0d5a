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

ADAMW_LR0 = 0.001
"""AdamW's learning rate in a short budget (when the user picks AdamW; MuSGD and SGD keep lr0)."""

SMALL_MODEL_BUDGET = 20 * 60.0
"""Budgets up to this many seconds train ``yolo-p`` when no model is given (measured at 10
minutes; a longer budget keeps the config's default)."""

SHORT_BUDGET: dict[str, tuple[Rule, str]] = {
    "nbs": (
        lambda cfg: cfg.batch,
        "short budget: no gradient accumulation, 4x the optimizer steps of nbs=64 "
        "(benchmarks/README.md: about twice the mAP50-95 after 5 and 10 minutes)",
    ),
    "optimizer": (
        lambda cfg: "musgd",
        "short budget: MuSGD (SGD + an orthogonalized Muon step on conv weights) learns most per "
        "epoch (benchmarks/README.md: 10 minutes, yolo-p, same seed: mAP50-95 0.424 in 7 epochs, "
        "AdamW 0.380 and SGD 0.251 in 8; ahead of SGD by 0.053-0.073 with 500 images, 3 and 16 "
        "classes)",
    ),
    "lr0": (
        lambda cfg: ADAMW_LR0 if cfg.optimizer == "adamw" else None,
        "short budget with AdamW (optimizer=adamw given): the learning rate of ultralytics' "
        "optimizer=auto for short runs (0.002·5/(4+classes), 0.00083 for 8 classes, measured), "
        "rounded to one value for every data set",
    ),
    "momentum": (
        lambda cfg: 0.9 if cfg.optimizer == "adamw" else None,
        "short budget with AdamW: beta1 0.9 (the usual Adam value)",
    ),
    "warmup_bias_lr": (
        lambda cfg: 0.0 if cfg.optimizer == "adamw" else None,
        "short budget with AdamW: biases warm up from 0 like the other weights (an Adam step is "
        "about lr per parameter, so SGD's bias warmup from 0.1 would move every bias by ~0.1 per step)",
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
to the run's config). The rules run in this order, each on the config the earlier ones adapted:
``lr0``, ``momentum`` and ``warmup_bias_lr`` follow the optimizer, so ``optimizer=sgd`` given by
the user keeps SGD's own defaults."""


def adapt_to_budget(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, str]]:
    """``cfg`` with the short-budget values of the keys it did not set (only when ``cfg.time`` is
    given), and ``{key: reason}`` of each key the recipe set. Idempotent: adapting an adapted config
    gives it back with the same reasons. A config without a budget, or with every key given, comes
    back unchanged with ``{}``."""
    if cfg.time is None:
        return cfg, {}
    given = cfg.model_fields_set
    reasons: dict[str, str] = {}
    adapted = cfg
    for key, (rule, reason) in SHORT_BUDGET.items():
        if key in given:
            continue
        value = rule(adapted)
        if value is not None:
            reasons[key] = reason
            adapted = adapted.model_copy(update={key: value})
    if not reasons:
        return cfg, {}
    adapted.__pydantic_fields_set__ = set(given)  # adapted values stay "not given by the user"
    return adapted, reasons

"""The short-budget recipe: defaults that adapt when a run is given a time budget.

The config's plain defaults are the long-run recipe (``nbs=64``, three warmup epochs, close-mosaic
10). Cut to a budget of minutes on a CPU, that recipe spends its few optimizer steps on a large
nominal batch and most of the run in warmup. When ``time`` is set, every key of
:data:`SHORT_BUDGET` the user did not give takes the short-budget value instead; each choice is
returned with its reason and written as a comment next to the key in the run's ``config.yaml``.
An explicit value (``nbs=64`` on the command line, a key of ``--config``) always wins.

The model scale is chosen separately (:func:`choose_model`, called by the trainer once the data
set is read): it needs the speed of this machine (and the split's size, for its reason).

The reasons cite measurements in ``benchmarks/README.md`` (the short-budget section).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detopt.config import TrainConfig
from detopt.engine.plan import VAL_SHARE

Rule = Callable[[TrainConfig], Any]

ADAMW_LR0 = 0.001
"""AdamW's learning rate in a short budget (when the user picks AdamW; MuSGD and SGD keep lr0)."""

SCALE_MIN_IMAGES: dict[str, int] = {"yolo-p": 0, "yolo-n": 20_000}
"""The scales the recipe chooses from when no model is given, smallest first, each with the
fewest training images (steps x batch, estimated for that scale in the budget) from which it
learned more than the scale before it (benchmarks/README.md, "The model scale"): the recipe
trains the largest scale whose estimate reaches its minimum. Images seen, not epochs: with 500
or 2 000 training images alike, yolo-n lost to yolo-p after ~10 000 images and won after ~21 000."""

LOADER_SHARE = 1.1
"""Trainer seconds per image / the probe's bare-step seconds per image (the loader, EMA and
bookkeeping). Measured on 2026-12-07 for yolo-n: the probe 45 img/s, the trainer's own 38 (1.19),
epochs with validation 36 (1.25 in all, against this share x ``VAL_SHARE`` = 1.27): the estimate
matched the epochs made within one (benchmarks/README.md, "The model scale")."""

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


def estimate_images(budget: float, seconds_per_image: float, validating: bool) -> float:
    """Training images (steps x batch) that fit ``budget`` seconds at ``seconds_per_image`` (a
    bare training step's, :func:`detopt.engine.probe.seconds_per_image`), with the loader's share
    and, when ``validating``, the validation after each epoch (the plan's first estimate)."""
    share = LOADER_SHARE * (VAL_SHARE if validating else 1.0)
    return budget / max(seconds_per_image * share, 1e-12)


def choose_model(budget: float, train_images: int, seconds_per_image: Callable[[str], float],
                 validating: bool, scales: dict[str, int] = SCALE_MIN_IMAGES) -> tuple[str, str]:
    """``(model, reason)``: the largest of ``scales`` whose estimated training images in ``budget``
    reach its minimum (the smallest scale when none does). ``seconds_per_image(name)`` measures a
    scale on this machine; it is called for the larger scales only, largest first, until one
    qualifies. ``train_images`` (the split's size) only puts the estimate in epochs for the reason."""
    names = list(scales)
    missed = ""
    for name in reversed(names[1:]):
        spi = seconds_per_image(name)
        seen = estimate_images(budget, spi, validating)
        smaller = names[names.index(name) - 1]
        fits = (f"about {seen:,.0f} training images ({seen / max(train_images, 1):.1f} epochs of "
                f"{train_images}) in {budget:.0f} s on this machine (measured {spi * 1e3:.1f} ms/image)")
        if seen >= scales[name]:
            return name, (
                f"short budget: {name} trains on {fits}, at least the {scales[name]:,} from which it "
                f"learned more than {smaller} (benchmarks/README.md, the model scale)")
        missed = missed or (
            f"short budget: {name} would train on only {fits}; it learned more than {smaller} "
            f"from {scales[name]:,} on")
    return names[0], (missed or "short budget: the only scale of the table") + (
        f"; {names[0]} learns more in fewer images (benchmarks/README.md, the model scale)")

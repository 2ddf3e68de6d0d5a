"""How fast a model trains on this machine: a few real training steps on random images, timed.

The short-budget recipe (:mod:`detopt.engine.recipe`) chooses the model scale from the training
images a budget allows, and those depend on the machine (a laptop, a 2-core server and a GPU differ by
10-100x), so they are measured, not looked up. A step here is the trainer's step without the
loader: the model under the run's precision and memory format, the run's loss on a few boxes per
image, backward and the run's optimizer.
"""

from __future__ import annotations

import time

import torch

from detopt.config import TrainConfig
from detopt.engine.criterion import criterion_for
from detopt.engine.optim import build_optimizer
from detopt.models import create_model
from detopt.runtime import autocast

BOXES_PER_IMAGE = 4
"""Random boxes per probe image (the loss's assignment cost grows with them; a few is typical)."""

_CACHE: dict[tuple, float] = {}


def _batch(cfg: TrainConfig, num_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """``images float [B, 3, S, S]`` in [0, 1] and targets of ``BOXES_PER_IMAGE`` random boxes each
    (``boxes float [M, 4]`` xyxy pixels, ``labels``, ``batch_index``, ``crowd``)."""
    b, s, k = cfg.batch, cfg.imgsz, BOXES_PER_IMAGE
    images = torch.rand(b, 3, s, s, generator=gen)
    centre = torch.rand(b * k, 2, generator=gen) * s * 0.8 + s * 0.1
    half = torch.rand(b * k, 2, generator=gen) * s * 0.15 + 4
    boxes = torch.cat([centre - half, centre + half], 1).clamp(0, s)
    targets = {
        "boxes": boxes,
        "labels": torch.randint(0, num_classes, (b * k,), generator=gen),
        "batch_index": torch.arange(b).repeat_interleave(k),
        "crowd": torch.zeros(b * k, dtype=torch.bool),
    }
    return images, targets


def seconds_per_image(model_name: str, num_classes: int, cfg: TrainConfig, device: torch.device,
                      steps: int = 3, warmup: int = 2) -> float:
    """Mean seconds per image of ``steps`` training steps (after ``warmup`` untimed ones) of the
    registered model ``model_name`` at ``cfg.batch`` x ``cfg.imgsz``, with ``cfg.amp``,
    ``cfg.channels_last``, ``cfg.p2``, the run's loss and ``cfg.optimizer``. The model's weights are
    thrown away; torch's global RNG is left as it was. Cached per process for the same settings."""
    key = (model_name, num_classes, cfg.batch, cfg.imgsz, cfg.amp, cfg.channels_last, cfg.p2,
           cfg.optimizer, repr(cfg.assigner), cfg.cls_loss, cfg.box_loss, str(device),
           torch.get_num_threads())
    if key in _CACHE:
        return _CACHE[key]
    rng_state = torch.get_rng_state()
    try:
        gen = torch.Generator().manual_seed(0)
        model = create_model(model_name, num_classes, p2=cfg.p2, imgsz=cfg.imgsz).to(device).train()
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        criterion = criterion_for(cfg, num_classes, model)
        optimizer = build_optimizer(model, cfg.optimizer, cfg.lr0, cfg.momentum, cfg.weight_decay)
        images, targets = _batch(cfg, num_classes, gen)
        images = images.to(device)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t0 = 0.0
        for i in range(warmup + steps):
            if i == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            with autocast(device, cfg.amp):
                outputs = model(images)
            loss, _ = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - t0) / (steps * cfg.batch)
    finally:
        torch.set_rng_state(rng_state)
    _CACHE[key] = seconds
    return seconds

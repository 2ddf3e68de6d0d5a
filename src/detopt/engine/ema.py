"""Exponential moving average of a model's weights *and* buffers (BatchNorm statistics)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """``ema = d·ema + (1 - d)·model`` after every optimizer step, with the ramped decay
    ``d = decay·(1 - exp(-updates / tau))`` (small early, so the average follows the fast early
    changes, then ``decay``). Floating-point buffers are averaged like parameters; integer
    buffers (``num_batches_tracked``) are copied.

    Args:
        model: the model to follow (unwrapped from DDP by the caller).
        decay: the asymptotic decay.
        tau: the ramp's time constant in updates.
    """

    def __init__(
        self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0
    ) -> None:
        if not 0 <= decay < 1 or tau <= 0:
            raise ValueError(f"need 0 <= decay < 1 and tau > 0, got {decay}, {tau}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            s = src[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(s.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(s)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])

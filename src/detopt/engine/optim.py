"""Optimizers with the usual parameter groups: weight decay on conv/linear weights only."""

from __future__ import annotations

import torch
from torch import nn

from detopt.errors import DetoptInputError

OPTIMIZERS = ("sgd", "adamw")
_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """``(weights that decay, norm weights, biases)``; every trainable parameter in exactly one."""
    decay, norm, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif isinstance(module, _NORMS):
                norm.append(p)
            else:
                decay.append(p)
    return decay, norm, bias


def build_optimizer(
    model: nn.Module, name: str = "sgd", lr: float = 0.01, momentum: float = 0.937, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW (``momentum`` is β₁) with three groups in this order: decaying
    weights, norm weights (no decay), biases (no decay; the schedule warms them up separately)."""
    decay, norm, bias = param_groups(model)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": norm, "weight_decay": 0.0},
        {"params": bias, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise DetoptInputError(f"optimizer: expected one of {OPTIMIZERS}, got {name!r}")


def set_hyperparameters(opt: torch.optim.Optimizer, lr: float, bias_lr: float, momentum: float) -> None:
    """Apply one step of the schedule to the three groups of :func:`build_optimizer`."""
    for i, g in enumerate(opt.param_groups):
        g["lr"] = bias_lr if i == 2 else lr
        if "momentum" in g:
            g["momentum"] = momentum
        elif "betas" in g:
            g["betas"] = (momentum, g["betas"][1])

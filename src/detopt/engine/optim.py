"""Optimizers with the usual parameter groups: weight decay on conv/linear weights only.

``OPTIMIZERS`` is the registry of names ``TrainConfig.optimizer`` takes: ``sgd`` (Nesterov),
``adamw`` and ``musgd`` (:class:`MuSGD`: SGD plus an orthogonalized Muon step on the matrix-shaped
weights, the hybrid ultralytics made its default in 2025). A builder is
``fn(groups, lr, momentum) -> Optimizer`` over the three groups of :func:`param_groups`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from detopt.registry import Registry

OptimizerBuilder = Callable[[list[dict[str, Any]], float, float], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")
_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""The quintic Newton-Schulz step ``X ← aX + b(XXᵀ)X + c(XXᵀ)²X`` of Muon (Jordan et al., 2024):
coefficients chosen for a steep slope at 0, so five steps map every singular value of a
Frobenius-normalised matrix that is not tiny into roughly [0.7, 1.2] (not exactly 1)."""


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


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """The approximate orthogonal factor of a matrix: ``U·f(S)·Vᵀ`` for ``g = U·S·Vᵀ``, where ``f``
    applies :data:`NS_COEFFICIENTS`' quintic ``steps`` times to ``S / ‖g‖_F`` (computed in float32,
    on the wide orientation: ``XXᵀ`` is the smaller Gram matrix).

    Args:
        g: Tensor[R, C].
    Returns:
        Tensor[R, C] of ``g``'s dtype.
    """
    if g.ndim != 2:
        raise ValueError(f"newton_schulz: expected a matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = g.float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class MuSGD(torch.optim.Optimizer):
    """SGD with momentum (Nesterov by default) on every parameter, plus, on the parameters of groups
    with ``muon=True`` (conv and linear weights), a Muon step: the momentum of the gradient
    orthogonalized by :func:`newton_schulz` (a conv weight ``[O, I, kh, kw]`` as the matrix
    ``[O, I·kh·kw]``), scaled by ``√max(1, rows/cols)``.

    One step of a Muon parameter ``p`` with gradient ``g``, learning rate ``lr``, momentum ``μ``,
    weight decay ``λ``::

        m ← μ·m + (1-μ)·g;  u = (1-μ)·g + μ·m  (Nesterov; else u = m)
        d = g + λ·p;  s ← μ·s + d;  v = d + μ·s  (Nesterov; else v = s)
        p ← p - lr·(muon_scale·NS(u)·√max(1, R/C) + sgd_scale·v)

    Other parameters take the SGD step ``p ← p - lr·v``. With ``muon_scale=0`` and
    ``sgd_scale=1`` this is ``torch.optim.SGD`` exactly (tested). The state (``momentum_buffer``,
    ``muon_buffer``) is the optimizer's own, so a checkpoint resumes exactly.

    Args:
        params: parameters or groups (a group's ``muon`` key marks its Muon parameters).
        lr, momentum, weight_decay, nesterov: as ``torch.optim.SGD``.
        muon_scale: weight of the Muon step; sgd_scale: weight of the SGD step on Muon parameters.
        ns_steps: Newton-Schulz steps.
    """

    def __init__(self, params: Any, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = True, muon: bool = False, muon_scale: float = 0.2,
                 sgd_scale: float = 1.0, ns_steps: int = 5) -> None:
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0 or muon_scale < 0 or sgd_scale < 0:
            raise ValueError(f"MuSGD: bad lr {lr}, momentum {momentum}, weight decay {weight_decay} "
                             f"or scales {muon_scale}, {sgd_scale}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov,
                    "muon": muon, "muon_scale": muon_scale, "sgd_scale": sgd_scale, "ns_steps": ns_steps}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd, nesterov = group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                o = self._muon_step(group, p) if group["muon"] and p.ndim >= 2 else None
                d = g.add(p, alpha=wd) if wd else g
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.clone()  # torch.optim.SGD's first step
                else:
                    state["momentum_buffer"].mul_(mu).add_(d)
                s = state["momentum_buffer"]
                v = d.add(s, alpha=mu) if nesterov else s
                if o is not None:
                    p.add_(o, alpha=-lr)
                p.add_(v, alpha=-lr * (group["sgd_scale"] if o is not None else 1.0))
        return loss

    def _muon_step(self, group: dict[str, Any], p: torch.Tensor) -> torch.Tensor:
        """The scaled Muon step of ``p`` (updates its ``muon_buffer``). Its cost is the
        Newton-Schulz products (``benchmarks/bench_train.py --optimizers``: ~48 ms per step for
        yolo-p's 59 conv weights on 2 CPU cores, ~9 % of a training step at batch 16)."""
        mu = group["momentum"]
        state = self.state[p]
        if "muon_buffer" not in state:
            state["muon_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m = state["muon_buffer"]
        m.lerp_(p.grad, 1 - mu)
        u = p.grad.lerp(m, mu) if group["nesterov"] else m
        rows, cols = p.shape[0], math.prod(p.shape[1:])
        o = newton_schulz(u.reshape(rows, cols), group["ns_steps"]).view(p.shape)
        return o.mul_(group["muon_scale"] * math.sqrt(max(1.0, rows / cols)))


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))


@OPTIMIZERS.register("musgd")
def _musgd(groups: list[dict[str, Any]], lr: float, momentum: float) -> torch.optim.Optimizer:
    groups = [{**g, "muon": i == 0} for i, g in enumerate(groups)]  # the decaying weights
    return MuSGD(groups, lr=lr, momentum=momentum, nesterov=True)


def build_optimizer(
    model: nn.Module, name: str = "sgd", lr: float = 0.01, momentum: float = 0.937, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """The registered optimizer ``name`` (``momentum`` is AdamW's β₁) with three groups in this
    order: decaying weights, norm weights (no decay), biases (no decay; the schedule warms them up
    separately)."""
    build = OPTIMIZERS.get(name, "optimizer")
    decay, norm, bias = param_groups(model)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": norm, "weight_decay": 0.0},
        {"params": bias, "weight_decay": 0.0},
    ]
    return build(groups, lr, momentum)


def set_hyperparameters(opt: torch.optim.Optimizer, lr: float, bias_lr: float, momentum: float) -> None:
    """Apply one step of the schedule to the three groups of :func:`build_optimizer`."""
    for i, g in enumerate(opt.param_groups):
        g["lr"] = bias_lr if i == 2 else lr
        if "momentum" in g:
            g["momentum"] = momentum
        elif "betas" in g:
            g["betas"] = (momentum, g["betas"][1])

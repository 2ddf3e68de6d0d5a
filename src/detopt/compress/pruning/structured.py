"""Structured pruning: remove whole output channels (units of :mod:`.graph`) so the model has
fewer parameters and FLOPs and runs faster everywhere, not only under a sparse kernel.

1. :func:`channel_importance` scores every channel id (``IMPORTANCES``: L1 norm of the filter,
   |BN scale|, first-order Taylor ``|Σ w·∂L/∂w|`` from a few batches); a unit's score is the sum
   over its member channels.
2. :func:`plan_pruning` chooses the units to remove so that a share ``ratio`` of the model's FLOPs
   goes: the same channel ratio in every family (found by bisection), or with ``global_rank``
   the lowest scores over the whole model (each family's scores divided by its mean first). Each
   family keeps a multiple of ``round_to`` channels (or all of them) and at least ``round_to``.
3. :func:`apply_pruning` slices the weights (convolutions: output and input channels; batch
   norms: features and statistics; C2f: its split widths) and records the new widths in
   ``model.spec["shapes"]`` so ``create_model`` rebuilds the pruned model from its spec.

Before fine-tuning, the pruned model computes exactly what the unpruned one computes with the
removed channels' batch-norm outputs zeroed (SiLU(0) = 0, so they contribute nothing downstream):
:func:`zero_units` makes that unpruned reference, which the tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from detopt.compress.pruning.graph import ChannelGraph
from detopt.errors import DetoptInputError
from detopt.models.shapes import module_shapes, replace_module, resized_bn, resized_conv
from detopt.registry import Registry

Importance = Callable[..., np.ndarray]
IMPORTANCES: Registry[Importance] = Registry("importance")


def _per_conv(graph: ChannelGraph, score: Callable[[str], np.ndarray]) -> np.ndarray:
    out = np.zeros(len(graph.unit_of), np.float64)
    for c in graph.convs:
        out[c.out_ids] = score(c.path)
    return out


@IMPORTANCES.register("l1")
def l1_importance(model: nn.Module, graph: ChannelGraph, **_: Any) -> np.ndarray:
    """``Σ |W[k]|`` of each output filter -> ``float64 [ids]``."""
    return _per_conv(graph, lambda p: model.get_submodule(p).weight.detach().double().abs().flatten(1)
                     .sum(1).cpu().numpy())


@IMPORTANCES.register("bn_scale")
def bn_scale_importance(model: nn.Module, graph: ChannelGraph, **_: Any) -> np.ndarray:
    """``|γ|`` of the batch norm that normalises each channel (network slimming); channels no
    batch norm sees score by their filter's L1 norm."""
    out = l1_importance(model, graph)
    seen = np.zeros(len(out), bool)
    for path, ids in graph.norms.items():
        gamma = model.get_submodule(path).weight.detach().abs().double().cpu().numpy()
        new = ~seen[ids]
        out[ids[new]] = gamma[new]
        seen[ids] = True
    return out


@IMPORTANCES.register("taylor")
def taylor_importance(model: nn.Module, graph: ChannelGraph, *,
                      loss_batches: Iterable[torch.Tensor] | None = None, **_: Any) -> np.ndarray:
    """First-order Taylor: ``|Σ_filter w·g|`` with ``g`` the gradient of the training loss summed
    over ``loss_batches`` (an iterable of scalar losses computed by ``model`` with grad on)."""
    if loss_batches is None:
        raise DetoptInputError("taylor importance needs training batches (a data set)")
    model.zero_grad(set_to_none=True)
    model.requires_grad_(True)
    n = 0
    with torch.enable_grad():
        for loss in loss_batches:
            loss.backward()
            n += 1
    if n == 0:
        raise DetoptInputError("taylor importance: no training batch")

    def score(p: str) -> np.ndarray:
        w = model.get_submodule(p).weight
        g = w.grad if w.grad is not None else torch.zeros_like(w)
        return (w.detach().double() * g.double()).flatten(1).sum(1).abs().cpu().numpy()

    out = _per_conv(graph, score)
    model.zero_grad(set_to_none=True)
    return out


def unit_scores(graph: ChannelGraph, channel_scores: np.ndarray) -> np.ndarray:
    """``[units]``: the sum of the channel scores of each unit's member channels."""
    return np.array([channel_scores[ids].sum() for ids in graph.units], np.float64)


def _keep(n: int, ratio: float, round_to: int) -> int:
    """Channels a family of ``n`` keeps at channel ratio ``ratio``: a multiple of ``round_to``
    rounded up (at least ``round_to``; never more than ``n``)."""
    k = max(round_to, int(math.ceil(n * (1.0 - ratio) / round_to)) * round_to)
    return min(n, k)


@dataclass
class PruningPlan:
    """Units to remove (``removed [units]`` bool) and the FLOPs before / after (2 per MAC)."""

    removed: np.ndarray
    flops_before: float
    flops_after: float

    @property
    def flops_removed(self) -> float:
        return 1.0 - self.flops_after / self.flops_before


def _removal(graph: ChannelGraph, order: list[np.ndarray], keep: list[int]) -> np.ndarray:
    removed = np.zeros(len(graph.units), bool)
    for units, k in zip(order, keep, strict=True):
        removed[units[: len(units) - k]] = True
    return removed


def plan_pruning(graph: ChannelGraph, scores: np.ndarray, ratio: float, round_to: int = 16,
                 global_rank: bool = False, max_channel_ratio: float = 0.9) -> PruningPlan:
    """Choose the units to remove so that about ``ratio`` of the FLOPs go (see the module
    docstring). ``scores [units]`` (higher = more important). No family loses more than
    ``max_channel_ratio`` of its channels. The FLOPs removed are at most ``ratio`` when the rounding
    allows it (bisection over a monotone count)."""
    if not 0.0 < ratio < 1.0:
        raise DetoptInputError(f"ratio: the share of FLOPs to remove must be in (0, 1), got {ratio}")
    if round_to < 1:
        raise DetoptInputError(f"round_to must be >= 1, got {round_to}")
    before = graph.macs()
    # each family's units, least important first
    order = [np.asarray(f)[np.argsort(scores[f], kind="stable")] for f in graph.families]
    floors = [max(_keep(len(f), max_channel_ratio, round_to), 1) for f in graph.families]

    def removal_at(t: float) -> np.ndarray:
        if not global_rank:
            return _removal(graph, order, [max(_keep(len(f), t, round_to), fl)
                                           for f, fl in zip(graph.families, floors, strict=True)])
        # global: a unit goes when its score / its family's mean is below the threshold t
        keep = []
        for f, units, fl in zip(graph.families, order, floors, strict=True):
            s = scores[units] / max(float(np.mean(scores[f])), 1e-12)
            n_low = int(np.searchsorted(s, t, side="left"))  # s is sorted ascending
            k = _keep(len(f), n_low / len(f), round_to)
            keep.append(max(k, fl))
        return _removal(graph, order, keep)

    target = before * (1.0 - ratio)
    hi = 1.0 if not global_rank else float(max(
        (scores[f] / max(float(np.mean(scores[f])), 1e-12)).max() for f in graph.families)) + 1.0
    lo = 0.0
    best = removal_at(0.0)
    for _ in range(50):  # smallest t reaching the target; more t removes more (monotone)
        mid = (lo + hi) / 2
        rem = removal_at(mid)
        if graph.macs(rem) <= target:
            hi, best = mid, rem
        else:
            lo = mid
    if graph.macs(best) > target:  # the floors stop short of the target: remove what they allow
        best = removal_at(hi)
    else:
        best = _give_back(graph, order, best, target, round_to)
    return PruningPlan(best, 2 * before, 2 * graph.macs(best))


def _give_back(graph: ChannelGraph, order: list[np.ndarray], removed: np.ndarray, target: float,
               round_to: int) -> np.ndarray:
    """Rounding to ``round_to`` overshoots (a family of 24 keeps 16 or 8): give back ``round_to``
    of the most important removed units of a family at a time, families with the least-removed
    share first, while the FLOPs stay within ``target``."""
    removed = removed.copy()
    changed = True
    while changed:
        changed = False
        fams = sorted(range(len(order)), key=lambda i: removed[order[i]].mean())
        for i in fams:
            units = order[i]
            gone = units[removed[units]]
            if len(gone) == 0:
                continue
            back = gone[-min(round_to, len(gone)):]  # the most important of the removed (sorted ascending)
            removed[back] = False
            if graph.macs(removed) <= target:
                changed = True
            else:
                removed[back] = True
    return removed


def _kept(ids: np.ndarray, gone: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~gone[ids])


@torch.no_grad()
def apply_pruning(model: nn.Module, graph: ChannelGraph, removed: np.ndarray) -> nn.Module:
    """Remove the units ``removed [units]`` from ``model`` in place (new, smaller layers with the
    kept weights) and record ``model.spec["shapes"]``. Returns ``model``."""
    gone = np.zeros(len(graph.unit_of), bool)
    for u in np.flatnonzero(removed):
        gone[graph.units[u]] = True
    for c in graph.convs:
        m = model.get_submodule(c.path)
        k_out = torch.as_tensor(_kept(c.out_ids, gone), device=m.weight.device)
        k_in = torch.as_tensor(_kept(c.in_ids, gone), device=m.weight.device)
        if len(k_out) == m.out_channels and len(k_in) == m.in_channels:
            continue
        new = resized_conv(m, len(k_out), len(k_in))
        new.weight.copy_(m.weight[k_out][:, k_in])
        if m.bias is not None:
            new.bias.copy_(m.bias[k_out])
        new.train(m.training)
        replace_module(model, c.path, new)
        # C2f-style modules re-cut their channel split from their first conv's kept outputs
        owner_path = c.path.rsplit(".", 2)[0] if c.path.count(".") >= 2 else ""
        owner = model.get_submodule(owner_path) if owner_path else None
        if owner is not None and hasattr(owner, "resplit") and c.path == f"{owner_path}.cv1.conv":
            owner.resplit(k_out.tolist())
    for path, ids in graph.norms.items():
        m = model.get_submodule(path)
        keep = torch.as_tensor(_kept(ids, gone), device=m.weight.device)
        if len(keep) == m.num_features:
            continue
        new = resized_bn(m, len(keep))
        for name in ("weight", "bias"):
            getattr(new, name).copy_(getattr(m, name)[keep])
        new.running_mean.copy_(m.running_mean[keep])
        new.running_var.copy_(m.running_var[keep])
        new.num_batches_tracked.copy_(m.num_batches_tracked)
        new.train(m.training)
        replace_module(model, path, new)
    spec = dict(getattr(model, "spec", {}))
    spec["shapes"] = module_shapes(model)
    model.spec = spec
    return model


@torch.no_grad()
def zero_units(model: nn.Module, graph: ChannelGraph, removed: np.ndarray) -> nn.Module:
    """The unpruned reference: ``model`` in place with each removed channel's batch norm made to
    output 0 (γ = β = 0), so the channel adds nothing anywhere downstream. Only for channels a
    batch norm (then a zero-preserving activation) follows, as in detopt's models."""
    gone = np.zeros(len(graph.unit_of), bool)
    for u in np.flatnonzero(removed):
        gone[graph.units[u]] = True
    for path, ids in graph.norms.items():
        m = model.get_submodule(path)
        idx = torch.as_tensor(np.flatnonzero(gone[ids]), device=m.weight.device)
        m.weight[idx] = 0
        m.bias[idx] = 0
    return model

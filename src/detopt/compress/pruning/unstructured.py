"""Unstructured pruning: global magnitude pruning of the convolution weights, made permanent.

The weights with the smallest ``|w|`` over every convolution (one threshold for the whole model)
become exactly 0 in the weights themselves: no mask module, no reparametrisation
(``torch.nn.utils.prune`` keeps ``weight_orig`` and a mask, and the model stays as large and as
slow). While fine-tuning, :class:`KeepZeros` zeroes the gradients of the pruned weights, so they
stay 0 under SGD (momentum and weight decay of a zero with a zero gradient stay zero) and in the
EMA.

What it is good for, honestly: the dense kernels of torch and ONNX Runtime do the same work on a
zero as on any other number, so latency does not change; the weights file compresses (zeros
deflate), and a sparse runtime elsewhere could skip them.
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import numpy as np
import torch
from torch import nn

from detopt.engine.callbacks import Callback
from detopt.errors import DetoptInputError


def conv_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """``path -> weight`` of every ``nn.Conv2d`` of ``model``."""
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float) -> float:
    """Zero the ``sparsity`` share of all convolution weights with the smallest ``|w|`` (ties at the
    threshold: by position, so exactly ``round(sparsity · N)`` become 0). Returns the threshold."""
    if not 0.0 < sparsity < 1.0:
        raise DetoptInputError(f"ratio: the sparsity must be in (0, 1), got {sparsity}")
    weights = list(conv_weights(model).values())
    flat = torch.cat([w.detach().abs().flatten().double() for w in weights])
    k = int(round(sparsity * flat.numel()))
    if k == 0:
        return 0.0
    order = torch.argsort(flat, stable=True)
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    drop[order[:k]] = True
    start = 0
    for w in weights:
        n = w.numel()
        w.masked_fill_(drop[start : start + n].view_as(w).to(w.device), 0.0)
        start += n
    return float(flat[order[k - 1]])


def sparsity_table(model: nn.Module) -> list[dict[str, Any]]:
    """Per convolution: ``{"layer", "weights", "zeros", "sparsity"}``."""
    rows = []
    for path, w in conv_weights(model).items():
        zeros = int((w == 0).sum())
        rows.append({"layer": path, "weights": w.numel(), "zeros": zeros, "sparsity": zeros / w.numel()})
    return rows


def overall_sparsity(model: nn.Module) -> float:
    rows = sparsity_table(model)
    return sum(r["zeros"] for r in rows) / max(sum(r["weights"] for r in rows), 1)


def compressed_bytes(model: nn.Module) -> tuple[int, int]:
    """``(raw bytes, gzip bytes)`` of the model's float32 state (what a file of it costs)."""
    buf = io.BytesIO()
    for v in model.state_dict().values():
        buf.write(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
    raw = buf.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=6))


class KeepZeros(Callback):
    """Fine-tuning callback: the convolution weights that are 0 when training starts get zero
    gradients, so they stay 0 (see the module docstring)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def on_train_start(self, trainer: Any) -> None:
        for w in conv_weights(trainer.model).values():
            mask = (w.detach() != 0).to(w.dtype)
            self.handles.append(w.register_hook(lambda g, mask=mask: g * mask))

    def on_train_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

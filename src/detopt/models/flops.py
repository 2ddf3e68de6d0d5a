"""Parameter and FLOP counts of a model."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, imgsz: int = 640, batch: int = 1) -> float:
    """FLOPs of one forward pass on ``[batch, 3, imgsz, imgsz]``, counted by
    ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs; convolutions and matmuls only)."""
    p = next(model.parameters())
    x = torch.zeros(batch, 3, imgsz, imgsz, dtype=p.dtype, device=p.device)
    was = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
    return float(counter.get_total_flops())

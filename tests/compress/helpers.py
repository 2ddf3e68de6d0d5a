"""Helpers shared by the compression tests."""

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Batch-norm statistics and affine terms drawn at random (in place), so a test of folding or of
    zeroed channels does not pass on the identity a fresh batch norm is; returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.2)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model

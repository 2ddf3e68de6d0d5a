"""The layer shapes of a model as plain data, so a structurally pruned model is rebuilt from its
spec (``create_model(name, nc, shapes=...)``) and its weights alone: no pickled module.

``shapes``: ``{"conv": {path: [out, in_per_group]}, "bn": {path: features},
"split": {path: [a, b]}}`` for every ``nn.Conv2d``, every ``nn.BatchNorm2d`` and every module
with channel ``split`` widths (:class:`~detopt.models.layers.C2f`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from detopt.errors import DetoptInputError


def module_shapes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The shapes of ``model``'s convolutions, batch norms and channel splits (JSON-ready)."""
    conv, bn, split = {}, {}, {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            conv[name] = [int(m.out_channels), int(m.in_channels // m.groups)]
        elif isinstance(m, nn.BatchNorm2d):
            bn[name] = int(m.num_features)
        if isinstance(getattr(m, "split", None), tuple):
            split[name] = [int(v) for v in m.split]
    return {"conv": conv, "bn": bn, "split": split}


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` (dotted) in ``model``."""
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)


def resized_conv(m: nn.Conv2d, out_channels: int, in_channels: int) -> nn.Conv2d:
    """An ``nn.Conv2d`` like ``m`` (kernel, stride, padding, dilation, bias) with other widths
    (groups 1 only: the grouped case never changes width here)."""
    if m.groups != 1:
        raise DetoptInputError(f"a grouped convolution (groups={m.groups}) cannot change its widths")
    return nn.Conv2d(in_channels, out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                     bias=m.bias is not None, padding_mode=m.padding_mode).to(m.weight.device, m.weight.dtype)


def resized_bn(m: nn.BatchNorm2d, features: int) -> nn.BatchNorm2d:
    """An ``nn.BatchNorm2d`` like ``m`` (eps, momentum, affine) over ``features`` channels."""
    return nn.BatchNorm2d(features, m.eps, m.momentum, m.affine, m.track_running_stats).to(
        device=m.running_mean.device if m.running_mean is not None else None)


def apply_shapes(model: nn.Module, shapes: dict[str, dict[str, Any]]) -> nn.Module:
    """Give ``model`` the layer widths of ``shapes`` (new, uninitialised layers where they differ;
    load the weights afterwards). Raises on a path the model does not have."""
    try:
        for path, (out, inp) in shapes.get("conv", {}).items():
            m = model.get_submodule(path)
            if not isinstance(m, nn.Conv2d):
                raise DetoptInputError(f"shapes: {path} is not a convolution")
            if (m.out_channels, m.in_channels // m.groups) != (out, inp):
                replace_module(model, path, resized_conv(m, int(out), int(inp)))
        for path, n in shapes.get("bn", {}).items():
            m = model.get_submodule(path)
            if not isinstance(m, nn.BatchNorm2d):
                raise DetoptInputError(f"shapes: {path} is not a batch norm")
            if m.num_features != n:
                replace_module(model, path, resized_bn(m, int(n)))
        for path, widths in shapes.get("split", {}).items():
            model.get_submodule(path).split = tuple(int(v) for v in widths)
    except AttributeError as e:
        raise DetoptInputError(f"shapes: the model has no layer {e}") from None
    return model

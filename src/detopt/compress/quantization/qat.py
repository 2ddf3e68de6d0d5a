"""Quantization-aware fine-tuning: the float network trained a little longer with INT8 simulated
in its forward pass, so its weights settle where ONNX Runtime's INT8 rounds them least.

What is simulated is what :mod:`.graph` produces: every convolution's (but those kept float)
weights int8 symmetric per output channel (``[-127, 127]``, scale ``max|w| / 127``), its input
and its output uint8 with a zero point (``rmin = min(0, low)``, ``rmax = max(0, high)``, 255
steps), BatchNorm folded into the convolution first (the exported graph has none). Rounding
passes gradients straight through
(``torch.fake_quantize_*``). Activation ranges start from the calibration images (min / max, as
the PTQ calibrator), follow the training batches with a moving average during a warm phase, then
freeze. The fine-tuning is :class:`detopt.engine.Trainer` (its time budget, EMA, checkpoints)
with a small learning rate and no mosaic; afterwards the fake-quantization is removed and the
float weights are quantized to the same QDQ format by :class:`.graph.GraphQuantizer`, so the same
runtime runs it and the report measures the real INT8 file.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detopt.engine import ModelTrainer, Trainer
from detopt.engine.callbacks import Callback
from detopt.errors import DetoptInputError

ACT_QMAX = 255
WEIGHT_QMAX = 127


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ``BatchNorm2d`` that follows a ``Conv2d`` in one module (attributes ``conv`` and
    ``bn``) into the convolution (which gains a bias); the BatchNorm becomes ``Identity``. In place;
    returns ``model``. Eval-mode outputs are unchanged (to float rounding)."""
    for mod in model.modules():
        conv, bn = getattr(mod, "conv", None), getattr(mod, "bn", None)
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(std)
        beta = bn.bias if bn.affine else torch.zeros_like(std)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True).to(conv.weight)
        with torch.no_grad():
            fused.weight.copy_(conv.weight * (gamma / std).reshape(-1, 1, 1, 1))
            b0 = conv.bias if conv.bias is not None else torch.zeros_like(std)
            fused.bias.copy_(beta + (b0 - bn.running_mean) * gamma / std)
        mod.conv = fused
        mod.bn = nn.Identity()
    return model


def _act_qparams(rng: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 scale and zero point of the range ``[low, high]`` as ONNX Runtime computes them."""
    lo = torch.clamp(rng[0], max=0.0)
    hi = torch.clamp(rng[1], min=0.0)
    scale = torch.clamp((hi - lo) / ACT_QMAX, min=1e-8)
    zero = torch.clamp(torch.round(-lo / scale), 0, ACT_QMAX).to(torch.int32)
    return scale, zero


def fake_quant_activation(x: Tensor, rng: Tensor) -> Tensor:
    """``x`` rounded to the uint8 grid of ``rng = [low, high]`` (straight-through gradient)."""
    scale, zero = _act_qparams(rng.float())
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, ACT_QMAX)


def fake_quant_weight(w: Tensor) -> Tensor:
    """``w: [C_out, ...]`` rounded to int8 per output channel, symmetric (straight-through)."""
    amax = w.detach().abs().flatten(1).amax(1)
    scale = torch.clamp(amax / WEIGHT_QMAX, min=1e-12)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


class FakeQuantConv2d(nn.Module):
    """A ``Conv2d`` with INT8 simulated: uint8 input, int8 per-channel weights, uint8 output.

    Buffers ``in_range``, ``out_range`` (``[low, high]``) follow the data while ``observing``
    (the first batch sets them, later ones move them by ``momentum``), then stay.
    """

    def __init__(self, conv: nn.Conv2d, momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = conv
        self.momentum = momentum
        self.observing = True
        self.register_buffer("in_range", torch.tensor([float("inf"), -float("inf")]))
        self.register_buffer("out_range", torch.tensor([float("inf"), -float("inf")]))

    @torch.no_grad()
    def _observe(self, rng: Tensor, x: Tensor) -> None:
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not torch.isfinite(rng[0]):
            rng[0], rng[1] = lo, hi
        else:
            rng[0] += self.momentum * (lo - rng[0])
            rng[1] += self.momentum * (hi - rng[1])

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            self._observe(self.in_range, x)
        x = fake_quant_activation(x, self.in_range)
        c = self.conv
        y = F.conv2d(x, fake_quant_weight(c.weight), c.bias, c.stride, c.padding, c.dilation, c.groups)
        if self.observing:
            self._observe(self.out_range, y)
        return fake_quant_activation(y, self.out_range)


def layer_name(conv_path: str) -> str:
    """The layer name :mod:`.graph` gives a convolution (``backbone.stem`` for the module
    ``backbone.stem.conv``; a bare ``nn.Conv2d`` such as ``head.cls.0.2`` keeps its path)."""
    return conv_path.removesuffix(".conv")


def _replace_convs(model: nn.Module, momentum: float, keep_float: frozenset[str] = frozenset(),
                   prefix: str = "") -> None:
    for name, child in list(model.named_children()):
        path = f"{prefix}{name}"
        if isinstance(child, nn.Conv2d):
            if layer_name(path) not in keep_float:
                setattr(model, name, FakeQuantConv2d(child, momentum))
        else:
            _replace_convs(child, momentum, keep_float, path + ".")


def fake_quant_modules(model: nn.Module) -> list[FakeQuantConv2d]:
    return [m for m in model.modules() if isinstance(m, FakeQuantConv2d)]


def set_observing(model: nn.Module, on: bool) -> None:
    for m in fake_quant_modules(model):
        m.observing = on


def prepare_qat(model: nn.Module, calib: np.ndarray, batch: int = 16, momentum: float = 0.1,
                keep_float: Sequence[str] = ()) -> nn.Module:
    """A copy of ``model`` with BatchNorm folded and every convolution a :class:`FakeQuantConv2d`
    whose ranges are the min / max of the *float* network over ``calib: float32 [N, 3, H, W]``
    (as the PTQ calibrator measures them); observers left on. The layers named in ``keep_float``
    (:func:`layer_name`: what the INT8 graph keeps float) stay plain float convolutions."""
    keep = frozenset(keep_float)
    qat = fold_batchnorm(copy.deepcopy(model).float().eval())
    known = {layer_name(n) for n, m in qat.named_modules() if isinstance(m, nn.Conv2d)}
    unknown = sorted(keep - known)
    if unknown:
        raise DetoptInputError(f"keep_float: unknown layer(s) {unknown[:3]}; layers: {sorted(known)[:8]} ...")
    convs = [m for n, m in qat.named_modules() if isinstance(m, nn.Conv2d) and layer_name(n) not in keep]
    seen: dict[int, list[Tensor]] = {i: [] for i in range(len(convs))}

    def hook(i: int):
        def record(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            x = args[0]
            seen[i].append(torch.stack([x.min(), x.max(), out.min(), out.max()]).float())
        return record

    handles = [c.register_forward_hook(hook(i)) for i, c in enumerate(convs)]
    try:
        with torch.no_grad():
            for s in range(0, len(calib), batch):
                qat(torch.from_numpy(np.ascontiguousarray(calib[s : s + batch])))
    finally:
        for h in handles:
            h.remove()
    _replace_convs(qat, momentum, keep)
    for i, m in enumerate(fake_quant_modules(qat)):  # same order as ``convs``: module order
        r = torch.stack(seen[i])
        m.in_range.copy_(torch.stack([r[:, 0].min(), r[:, 1].max()]))
        m.out_range.copy_(torch.stack([r[:, 2].min(), r[:, 3].max()]))
    return qat


def strip_qat(model: nn.Module) -> nn.Module:
    """A copy of a QAT model as a plain float network (each :class:`FakeQuantConv2d` its conv)."""
    out = copy.deepcopy(model)

    def unwrap(mod: nn.Module) -> None:
        for name, child in list(mod.named_children()):
            if isinstance(child, FakeQuantConv2d):
                setattr(mod, name, child.conv)
            else:
                unwrap(child)

    unwrap(out)
    return out.eval()


class FreezeObservers(Callback):
    """Stops the range observers (of the model and its EMA) after ``warm_epochs`` epochs."""

    def __init__(self, warm_epochs: int = 1) -> None:
        self.warm_epochs = warm_epochs

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch + 1 >= self.warm_epochs:
            set_observing(trainer.model, False)
            if trainer.ema is not None:
                set_observing(trainer.ema.module, False)


class QATTrainer(ModelTrainer):
    """The trainer of a fake-quantized model (:class:`~detopt.engine.trainer.ModelTrainer`)."""

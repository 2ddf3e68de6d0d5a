"""The float torch weights a compression step starts from, or one line saying why not."""

from __future__ import annotations

from pathlib import Path

import torch

from detopt.errors import DetoptInputError


def float_weights(path: str | Path, command: str):
    """:func:`detopt.inference.load_weights` of a ``.pt`` or ``.safetensors`` file holding float
    weights. An ONNX file (quantized or not) or integer parameters: a :class:`DetoptInputError`
    that names ``command`` and what to pass instead."""
    import onnx

    from detopt.compress.quantization.graph import is_quantized
    from detopt.inference import load_weights

    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise DetoptInputError(f"{path}: no such file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception:
            raise DetoptInputError(f"{path}: not a readable ONNX model") from None
        if is_quantized(proto):
            raise DetoptInputError(f"{path}: already quantized; {command} the float weights "
                                   "(.pt or .safetensors)")
        raise DetoptInputError(f"{path}: {command} starts from the float weights (.pt or .safetensors), "
                               "not from an ONNX export")
    w = load_weights(path)
    if any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16) for p in w.model.parameters()):
        raise DetoptInputError(f"{path}: already quantized (integer parameters); {command} the float weights")
    return w

"""What a compression step starts from: the float torch weights (or one line saying why not) and
the data set they were trained on, read once, its classes checked against the weights'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


@dataclass
class Start:
    """The inputs of a compression step (:func:`weights_and_data`)."""

    weights: Any  # detopt.inference.Weights
    model: nn.Module  # float32, eval mode
    imgsz: int
    names: list[str]
    train: Any  # DetectionDataset, letterboxed, no augmentation
    val: Any


def weights_and_data(cfg: Any, command: str) -> Start:
    """The float weights of ``cfg.weights`` and the ``train`` / ``cfg.val_split`` splits of
    ``cfg.data`` (keys ``images``, ``allow_outside_root``, ``max_pixels``, ``skip_invalid``,
    ``imgsz``; the data set read once). Classes that differ from the weights': one line naming both."""
    from detopt.data.dataset import read_source, split_dataset

    w = float_weights(cfg.weights, command)
    imgsz = cfg.imgsz or w.imgsz or 320
    ds, defects = read_source(cfg.data, cfg.images, cfg.allow_outside_root, cfg.max_pixels)
    if list(ds.names) != list(w.names):
        raise DetoptInputError(f"{cfg.data}: classes {list(ds.names)[:6]} differ from the weights' "
                               f"{list(w.names)[:6]}; {command} with the data set the weights were "
                               "trained on")
    kw = {"imgsz": imgsz, "skip_invalid": cfg.skip_invalid, "max_pixels": cfg.max_pixels}
    train = split_dataset(cfg.data, ds, defects, "train", **kw)
    val = split_dataset(cfg.data, ds, defects, cfg.val_split, **kw)
    return Start(w, w.model.float().eval(), imgsz, list(ds.names), train, val)

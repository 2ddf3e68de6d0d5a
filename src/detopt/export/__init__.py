"""Deployment: trained weights as files other runtimes load.

Formats are one registry (:data:`EXPORT_FORMATS`): ``safetensors`` (the weights, the model spec,
class names and category ids) and ``onnx`` (the network, its box decode and, optionally, any
post-processing method of :data:`~detopt.export.onnx_nms.ONNX_NMS` inside the graph). A format is
a function ``(weights_path, out, use_ema, **options) -> Path`` registered with
``EXPORT_FORMATS.add(name, fn)``; ``detopt export --format`` lists the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detopt.registry import Registry

EXPORT_FORMATS: Registry = Registry("export format")


def _safetensors(weights: str | Path, out: str | Path, use_ema: bool = True, **options: Any) -> Path:
    from detopt.engine.checkpoint import export_safetensors

    if options:
        raise TypeError(f"safetensors takes no options, got {sorted(options)}")
    return export_safetensors(weights, out, use_ema=use_ema)


def _onnx(weights: str | Path, out: str | Path, use_ema: bool = True, **options: Any) -> Path:
    from detopt.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from detopt.export.onnx_export import export_onnx
    from detopt.inference import load_weights

    if Path(weights).suffix == ".pt" and not use_ema:
        ckpt = load_checkpoint(weights)
        w = load_weights(weights)
        model = model_from_checkpoint(ckpt, use_ema=False)
    else:
        w = load_weights(weights)
        model = w.model
    if not hasattr(model, "state_dict"):
        from detopt.errors import DetoptInputError

        raise DetoptInputError(f"{weights}: export from a checkpoint (.pt) or safetensors, "
                               "not from an ONNX file")
    options.setdefault("imgsz", w.imgsz or 320)
    return export_onnx(model, out, names=w.names, category_ids=w.category_ids, **options)


EXPORT_FORMATS.add("safetensors", _safetensors)
EXPORT_FORMATS.add("onnx", _onnx)


def export(weights: str | Path, out: str | Path, format: str | None = None, use_ema: bool = True,
           **options: Any) -> Path:
    """Export trained weights to ``out`` in ``format`` (default: from the suffix of ``out``)."""
    if format is None:
        format = "onnx" if Path(out).suffix == ".onnx" else "safetensors"
    return EXPORT_FORMATS.get(format, "format")(weights, out, use_ema=use_ema, **options)


__all__ = ["EXPORT_FORMATS", "export"]

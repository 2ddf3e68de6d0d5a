"""INT8 quantization of trained detectors (``detopt quantize``): post-training static INT8 with
ONNX Runtime's QDQ quantizer, layer sensitivity, a keep-float search, and a report.

- :func:`quantize` (:mod:`.pipeline`): the whole step, from float weights to ``model-int8.onnx``
  and ``report.{json,md}``; ``method="qat"`` adds quantization-aware fine-tuning (:mod:`.qat`).
- :class:`GraphQuantizer` (:mod:`.graph`): one network graph quantized in its variants with
  ranges calibrated once; :data:`CALIBRATORS` the range methods.
- :func:`layer_sensitivity` (:mod:`.sensitivity`): each layer's error quantized alone.
"""

import importlib
from typing import Any

from detopt.compress.quantization.graph import CALIBRATORS, GraphQuantizer, conv_layers, is_quantized, sqnr_db

_LAZY = {  # the pipeline imports the trainer's evaluation: loaded on first use
    "QuantizeResult": "detopt.compress.quantization.pipeline",
    "quantize": "detopt.compress.quantization.pipeline",
    "LayerError": "detopt.compress.quantization.sensitivity",
    "layer_sensitivity": "detopt.compress.quantization.sensitivity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CALIBRATORS",
    "GraphQuantizer",
    "LayerError",
    "QuantizeResult",
    "conv_layers",
    "is_quantized",
    "layer_sensitivity",
    "quantize",
    "sqnr_db",
]

"""INT8 quantization of trained detectors (``detopt quantize``): post-training static INT8 with
ONNX Runtime's QDQ quantizer, layer sensitivity, a keep-float search, and a report.

- :func:`quantize` (:mod:`.pipeline`): the whole step, from float weights to ``model-int8.onnx``
  and ``report.{json,md}``; ``method="qat"`` adds quantization-aware fine-tuning (:mod:`.qat`).
- :class:`GraphQuantizer` (:mod:`.graph`): one network graph quantized in its variants with
  ranges calibrated once; :data:`CALIBRATORS` the range methods.
- :func:`layer_sensitivity` (:mod:`.sensitivity`): each layer's error quantized alone.
"""

from detopt._lazy import lazy_names
from detopt.compress.quantization.graph import CALIBRATORS, GraphQuantizer, conv_layers, is_quantized, sqnr_db

# the pipeline imports the trainer's evaluation: loaded on first use
__getattr__ = lazy_names(__name__, {"QuantizeResult": "pipeline", "quantize": "pipeline",
                                    "LayerError": "sensitivity", "layer_sensitivity": "sensitivity"})

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

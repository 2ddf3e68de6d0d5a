"""Making a trained detector smaller and faster. ``quantize`` (:mod:`.quantization`): INT8 to
ONNX with a report. Each step returns a model file and a report; fine-tuning goes through
:mod:`detopt.engine`."""

from detopt._lazy import lazy_names

# the pipeline imports the trainer's evaluation: loaded on first use
__getattr__ = lazy_names(__name__, {"quantize": "quantization.pipeline"})

__all__ = ["quantize"]

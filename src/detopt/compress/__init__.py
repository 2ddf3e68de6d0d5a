"""Making a trained detector smaller and faster. ``quantize`` (:mod:`.quantization`): INT8 to
ONNX with a report; ``prune`` (:mod:`.pruning`): structured or unstructured pruning, fine-tuned.
Each step returns a model file and a report; fine-tuning goes through :mod:`detopt.engine`."""

from detopt._lazy import lazy_names

# the pipeline imports the trainer's evaluation: loaded on first use
__getattr__ = lazy_names(__name__, {"quantize": "quantization.pipeline", "prune": "pruning.pipeline"})

__all__ = ["prune", "quantize"]

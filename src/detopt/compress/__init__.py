"""Making a trained detector smaller and faster. ``quantize`` (:mod:`.quantization`): INT8 to
ONNX with a report. Each step returns a model file and a report; fine-tuning goes through
:mod:`detopt.engine`."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "quantize":  # the pipeline imports the trainer's evaluation: loaded on first use
        from detopt.compress.quantization.pipeline import quantize

        return quantize
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["quantize"]

"""Inference: a predictor over image files, drawing, and loading trained weights."""

from detopt.inference.predictor import (
    Predictor,
    Weights,
    default_postprocessor,
    draw_detections,
    load_predictor,
    load_weights,
)

__all__ = [
    "Predictor",
    "Weights",
    "default_postprocessor",
    "draw_detections",
    "load_predictor",
    "load_weights",
]

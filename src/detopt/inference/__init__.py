"""Inference: a predictor over image files, drawing, and loading trained weights."""

from detopt.inference.predictor import Predictor, Weights, draw_detections, load_weights

__all__ = ["Predictor", "Weights", "draw_detections", "load_weights"]

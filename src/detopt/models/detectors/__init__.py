"""Detectors: backbone + neck + head assembled; raw head outputs out."""

from detopt.models.detectors.yolo import YOLODetector

__all__ = ["YOLODetector"]

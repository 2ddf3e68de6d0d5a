"""Thin containers used at the library's boundaries."""

from detopt.structures.detections import Detections

__all__ = ["Detections"]

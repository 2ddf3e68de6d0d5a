"""Thin containers used at the library's boundaries."""

from detopt.structures.detections import Detections
from detopt.structures.records import DatasetRecords, ImageRecord

__all__ = ["DatasetRecords", "Detections", "ImageRecord"]

"""Data sets: formats (COCO / YOLO / VOC), validation, the embedded synthetic set, loading."""

from detopt.data.defects import DEFECT_KINDS, Defect
from detopt.data.formats import detect_format, load_dataset, read_dataset, write_dataset
from detopt.structures.records import DatasetRecords, ImageRecord

__all__ = [
    "DEFECT_KINDS",
    "DatasetRecords",
    "Defect",
    "ImageRecord",
    "detect_format",
    "load_dataset",
    "read_dataset",
    "write_dataset",
]

"""The built-in scales of the YOLO-style detector.

=========  =========================  =========  ======  ==========  ===============================
name       widths (stem, C2..C5)      depths     neck    head        meant for
=========  =========================  =========  ======  ==========  ===============================
yolo-p     16, 24, 48, 96, 192        1 1 1 1    1       48 / 48     CPU training budgets (default)
yolo-n     16, 32, 64, 128, 256       1 2 2 1    1       64 / 64     YOLOv8n's shape
yolo-s     32, 64, 128, 256, 512      1 2 2 1    1       64 / 128    YOLOv8s's shape
yolo-m     48, 96, 192, 384, 576      2 4 4 2    2       64 / 192    YOLOv8m's shape
=========  =========================  =========  ======  ==========  ===============================

Options of every scale: ``p2`` (add a stride-4 level), ``reg_max`` (DFL bins, 16),
``imgsz`` (class-bias prior, 640).
"""

from __future__ import annotations

from detopt.models.detectors import YOLODetector
from detopt.models.registry import register_model

_SCALES = {
    "yolo-p": ((16, 24, 48, 96, 192), (1, 1, 1, 1), 1, (48, 48)),
    "yolo-n": ((16, 32, 64, 128, 256), (1, 2, 2, 1), 1, (64, 64)),
    "yolo-s": ((32, 64, 128, 256, 512), (1, 2, 2, 1), 1, (64, 128)),
    "yolo-m": ((48, 96, 192, 384, 576), (2, 4, 4, 2), 2, (64, 192)),
}


def _factory(name: str):
    channels, depths, neck_depth, head = _SCALES[name]

    def build(num_classes: int, p2: bool = False, reg_max: int = 16, imgsz: int = 640) -> YOLODetector:
        return YOLODetector(num_classes, channels, depths, neck_depth, head, p2, reg_max, imgsz)

    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"{name}: widths {channels}, depths {depths}, neck depth {neck_depth}, head {head}."
    return build


for _name in _SCALES:
    register_model(_name)(_factory(_name))

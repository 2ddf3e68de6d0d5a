"""Image + box transforms: functional kernels on numpy arrays (boxes xyxy absolute)."""

from detopt.data.transforms.letterbox import (
    LetterboxMeta,
    letterbox,
    letterbox_boxes,
    letterbox_image,
    letterbox_meta,
    resize_to_meta,
    unletterbox_boxes,
)

__all__ = [
    "LetterboxMeta",
    "letterbox",
    "letterbox_boxes",
    "letterbox_image",
    "letterbox_meta", "resize_to_meta",
    "unletterbox_boxes",
]

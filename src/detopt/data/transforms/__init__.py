"""Image + box transforms: pure functions on :class:`Sample` (numpy + OpenCV), and the letterbox."""

from detopt.data.transforms.geometric import (
    affine_matrix,
    hflip,
    random_affine,
    random_resized_crop,
    vflip,
    warp,
)
from detopt.data.transforms.letterbox import (
    LetterboxMeta,
    letterbox,
    letterbox_boxes,
    letterbox_image,
    letterbox_meta,
    resize_to_meta,
    unletterbox_boxes,
)
from detopt.data.transforms.sample import BoxFilter, Sample

__all__ = [
    "BoxFilter",
    "LetterboxMeta",
    "Sample",
    "affine_matrix",
    "hflip",
    "letterbox",
    "letterbox_boxes",
    "letterbox_image",
    "letterbox_meta",
    "random_affine",
    "random_resized_crop",
    "resize_to_meta",
    "unletterbox_boxes",
    "vflip",
    "warp",
]

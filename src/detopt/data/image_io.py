"""Image files: header-only size, full decode with OpenCV, and the checks ``validate`` runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from detopt.data.defects import Defect
from detopt.errors import DetoptDataError

_EXIF_ORIENTATION = 0x0112
_ORIENTATION_NAMES = {
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped vertically",
    5: "transposed",
    6: "rotated 90° clockwise",
    7: "transversed",
    8: "rotated 90° counter-clockwise",
}


def read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the stored pixels, read from the file header only.

    Raises:
        OSError: the file is missing, empty or not an image.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: the size is what we want
        with Image.open(path) as im:
            return int(im.width), int(im.height)


def decode_image(path: Path) -> np.ndarray:
    """Decode an image file to ``uint8 [H, W, 3]`` BGR, stored pixels (EXIF orientation not applied).

    Raises:
        DetoptDataError: naming the file when it is missing or does not decode.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for any file name (cv2.imread may not)
    except OSError as e:
        raise DetoptDataError(f"{path}: cannot read image: {e.strerror or e}") from None
    img = None
    if data.size:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DetoptDataError(f"{path}: not a decodable image ({data.size} bytes)")
    return img


def _truncated(data: bytes) -> str | None:
    """Why a JPEG or PNG byte string is cut short, or None when it ends where it should."""
    if data[:2] == b"\xff\xd8":
        if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            return "truncated JPEG (no end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-16:]:
            return "truncated PNG (no IEND chunk)"
    return None


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1 when absent or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def check_image(
    path: Path, width: int | None = None, height: int | None = None, declared_in: Path | None = None
) -> tuple[tuple[int, int] | None, list[Defect]]:
    """Decode one image completely and report what is wrong with it.

    Args:
        path: the image file.
        width, height: the size the annotations declare, checked against the decoded size.
        declared_in: the annotation file that declares that size (named in a size mismatch).

    Returns:
        ((width, height) of the decoded pixels, or None when it does not decode; defects).
    """
    defects: list[Defect] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, [Defect("missing_image", path, None, "image file does not exist", path)]
    except OSError as e:
        return None, [Defect("unreadable_image", path, None, f"cannot read: {e.strerror or e}", path)]
    if not data:
        return None, [Defect("unreadable_image", path, None, "empty file (0 bytes)", path)]
    why = _truncated(data)
    if why:
        return None, [Defect("unreadable_image", path, None, why, path)]
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.size == 0:
        return None, [
            Defect("unreadable_image", path, None, f"not a decodable image ({len(data)} bytes)", path)
        ]
    h, w = img.shape[:2]
    if width is not None and height is not None and (w, h) != (width, height):
        defects.append(
            Defect(
                "size_mismatch",
                declared_in or path,
                None,
                f"{path.name}: declared {width}x{height}, decoded {w}x{h}",
                path,
            )
        )
    orientation = exif_orientation(path)
    if orientation != 1:
        defects.append(
            Defect(
                "exif_rotation",
                path,
                None,
                f"EXIF orientation {orientation} ({_ORIENTATION_NAMES.get(orientation, 'unknown')}): "
                "viewers show it turned while labels usually refer to the stored pixels; "
                "re-save the image upright and check its labels",
                path,
            )
        )
    return (w, h), defects

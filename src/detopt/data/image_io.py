"""Image files: header-only size, full decode with OpenCV, and the checks ``validate`` runs."""

from __future__ import annotations

import io
import threading
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


DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image (width x height) read by default: PIL's own limit (``Image.MAX_IMAGE_PIXELS``).
A 20 000 x 20 000 PNG of 1 MB decodes to 1.2 GB; above the limit an image is a ``too_large``
defect, found from its header, and never decoded."""

# PIL refuses to even open (header only) images above twice its limit; detopt wants the size to
# judge it against its own limit, so the check is lifted while a header is read, under a lock.
_PIL_LOCK = threading.Lock()


def read_image_size(path: Path | io.BytesIO) -> tuple[int, int]:
    """``(width, height)`` of the stored pixels, read from the file header only (nothing decoded).

    Args:
        path: an image file, or its bytes in a ``BytesIO``.

    Raises:
        OSError: the file is missing, empty or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    with _PIL_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as im:
                return int(im.width), int(im.height)
        except UnidentifiedImageError:
            size = _pfm_size(path)  # the one IMAGE_SUFFIXES format PIL does not know
            if size is None:
                raise
            return size
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _pfm_size(path: Path | io.BytesIO) -> tuple[int, int] | None:
    """``(width, height)`` from a PFM header (``PF``/``Pf``, width, height, scale), or None."""
    if isinstance(path, io.BytesIO):
        path.seek(0)
        head = path.read(64)
    else:
        with open(path, "rb") as f:
            head = f.read(64)
    fields = head.split()
    if len(fields) < 4 or fields[0] not in (b"PF", b"Pf"):
        return None
    try:
        w, h = int(fields[1]), int(fields[2])
    except ValueError:
        return None
    return (w, h) if w > 0 and h > 0 else None


def too_large(width: int, height: int, max_pixels: int | None) -> str | None:
    """Why an image of ``width x height`` may not be decoded, or None when it may."""
    if max_pixels is None or width * height <= max_pixels:
        return None
    return (
        f"{width}x{height} = {width * height / 1e6:.1f} megapixels, more than the limit of "
        f"{max_pixels / 1e6:.1f} (--max-pixels); not decoded"
    )


def header_defect(path: Path, max_pixels: int | None) -> tuple[tuple[int, int] | None, Defect | None]:
    """Read an image's size from its header: ``((width, height), None)``, or ``(None, defect)`` when
    the file is not an image (``unreadable_image``) or is larger than ``max_pixels`` (``too_large``)."""
    try:
        w, h = read_image_size(path)
    except Exception as e:
        return None, Defect("unreadable_image", path, None, f"not an image: {type(e).__name__}: {e}", path)
    why = too_large(w, h, max_pixels)
    if why:
        return None, Defect("too_large", path, None, why, path)
    return (w, h), None


def decode_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to ``uint8 [H, W, 3]`` BGR, stored pixels (EXIF orientation not applied).

    The size is read from the header first: an image above ``max_pixels`` is never decoded.

    Raises:
        DetoptDataError: naming the file when it is missing, too large or does not decode.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for any file name (cv2.imread may not)
    except OSError as e:
        raise DetoptDataError(f"{path}: cannot read image: {e.strerror or e}") from None
    if max_pixels is not None and data.size:
        try:
            why = too_large(*read_image_size(io.BytesIO(data)), max_pixels)
        except Exception:
            why = None  # no header PIL knows: OpenCV decides below
        if why:
            raise DetoptDataError(f"{path}: too_large: {why}")
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
    path: Path,
    width: int | None = None,
    height: int | None = None,
    declared_in: Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[tuple[int, int] | None, list[Defect]]:
    """Decode one image completely and report what is wrong with it.

    The header is read first: a file that is not an image, or an image above ``max_pixels``, is
    reported without being decoded.

    Args:
        path: the image file.
        width, height: the size the annotations declare, checked against the decoded size.
        declared_in: the annotation file that declares that size (named in a size mismatch).
        max_pixels: largest ``width * height`` decoded (None: no limit).

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
    try:
        size = read_image_size(io.BytesIO(data))
    except Exception as e:
        return None, [
            Defect("unreadable_image", path, None, f"not an image: {type(e).__name__}: {e}", path)
        ]
    why = too_large(*size, max_pixels)
    if why:
        return None, [Defect("too_large", path, None, why, path)]
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


def check_images(
    records: list, max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int | None = None
) -> list[Defect]:
    """Decode every record's image once (:func:`check_image`, against its declared size) with
    ``workers`` threads; returns the defects found, EXIF orientation left out (the pixels are
    usable as stored).

    Args:
        records: :class:`~detopt.structures.records.ImageRecord` list.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    def one(r) -> list[Defect]:
        return check_image(r.path, r.width, r.height, max_pixels=max_pixels)[1]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(one, records))
    return [d for found in results for d in found if d.kind != "exif_rotation"]

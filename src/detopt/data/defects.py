"""Defects found in a data set, and the checks shared by every format.

Readers never stop at the first problem: they collect one :class:`Defect` per problem (file, line,
kind, what is wrong) and leave the defective image out of the records. ``detopt data validate``
prints them all; loading for training refuses a data set with defects unless asked to skip them.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Every kind of defect, with what it means. Reports count defects by these names.
DEFECT_KINDS: dict[str, str] = {
    "malformed_file": "a json/yaml/xml file that does not parse or lacks a required field",
    "field_count": "a label line with the wrong number of fields",
    "not_a_number": "a field that should be a number and is not",
    "non_finite": "NaN or infinity in a coordinate or size",
    "class_out_of_range": "a class id or name that is not among the class names",
    "non_positive_size": "a box (or image) with zero or negative width or height",
    "out_of_image": "a box beyond the image border by more than the tolerance",
    "missing_image": "an annotation or label whose image file does not exist",
    "label_without_image": "a label file with no image",
    "duplicate_id": "an id or file name used twice",
    "unreadable_image": "an empty, truncated or non-image file",
    "size_mismatch": "an image whose declared size differs from its decoded size",
    "exif_rotation": "an image whose EXIF orientation rotates or flips it (labels become ambiguous)",
    "outside_root": "a path (image, label, split entry) that resolves outside the data set's root",
    "too_large": "an image with more pixels than the limit (read from its header; never decoded)",
}

# Defects after which an image file must not be read again (missing, not an image, too large to
# decode, or outside the data set).
UNTOUCHABLE = frozenset({"missing_image", "unreadable_image", "outside_root", "too_large"})

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm", ".jp2"}
)


@dataclass(frozen=True)
class Defect:
    """One problem in a data set.

    Attributes:
        kind: a key of :data:`DEFECT_KINDS`.
        file: the file that holds the problem.
        line: 1-based line in a text label file, else None.
        message: what is wrong, with the offending value.
        image: the image the problem belongs to (it is left out of the records), or None.
    """

    kind: str
    file: Path
    line: int | None
    message: str
    image: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in DEFECT_KINDS:
            raise ValueError(f"unknown defect kind {self.kind!r}")

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}"
        return f"{where}: {self.kind}: {self.message}"


class RootGuard:
    """Says whether paths resolve inside one root folder (``..``, absolute paths and symlinks are
    resolved as the system would, as far as they exist); nothing is opened.

    Resolved folders are cached for the guard's life (one read of a data set), so checking the
    images of one folder costs one ``lstat`` each.

    Args:
        root: the folder paths must stay in.
        allow_outside: accept every path (``--allow-outside-root``).
    """

    def __init__(self, root: Path, allow_outside: bool = False) -> None:
        self.root = Path(root)
        self.allow_outside = allow_outside
        self.base = os.path.realpath(self.root) if not allow_outside else ""
        self._dirs: dict[str, str] = {}

    def _resolve(self, path: str) -> str:
        parent, name = os.path.split(path)
        if not name or name in (".", ".."):
            return os.path.realpath(path)
        d = self._dirs.get(parent)
        if d is None:
            d = self._dirs[parent] = os.path.realpath(parent or ".")
        full = os.path.join(d, name)
        return os.path.realpath(full) if os.path.islink(full) else full

    def why(self, path: Path | str) -> str | None:
        """Why ``path`` may not be used (it lands outside the root), or None when it may."""
        if self.allow_outside:
            return None
        try:
            text = os.fspath(path)
            # no abspath: it folds ``link/..`` lexically, where the system follows the link first
            resolved = self._resolve(text if os.path.isabs(text) else os.path.join(os.getcwd(), text))
        except (OSError, ValueError, RuntimeError) as e:  # NUL bytes, symlink loops
            return f"{path} cannot be resolved ({type(e).__name__}: {e})"
        base = self.base
        if resolved == base or resolved.startswith(base.rstrip(os.sep) + os.sep):
            return None
        return (
            f"{path} resolves to {resolved}, outside the data set root {base} "
            "(pass --allow-outside-root to accept it)"
        )


def inside_root(path: Path, root: Path, allow_outside: bool = False) -> str | None:
    """Why ``path`` may not be used, or None when it lies inside ``root`` (see :class:`RootGuard`;
    use a guard when checking many paths)."""
    return RootGuard(root, allow_outside).why(path)


def is_file(path: Path) -> bool:
    """``path.is_file()``, False for any path the system refuses (too long, NUL bytes, loops)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: Path) -> bool:
    """``path.is_dir()``, False for any path the system refuses."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def count_by_kind(defects: list[Defect]) -> dict[str, int]:
    """Number of defects of each kind, in :data:`DEFECT_KINDS` order (kinds with none left out)."""
    c = Counter(d.kind for d in defects)
    return {k: c[k] for k in DEFECT_KINDS if c[k]}


def refuse_or_warn(what: str, defects: list[Defect], skip_invalid: bool, kept: int) -> None:
    """Stop on ``defects`` (a :class:`DetoptDataError` listing them) unless ``skip_invalid``; then warn
    with the defective images left out, counted by kind. Nothing happens without defects.

    Args:
        what: names the data set in the message (a path, with the split when it matters).
        kept: images still used after the defective ones were left out.
    """
    if not defects:
        return
    from detopt.errors import DetoptDataError

    kinds = ", ".join(f"{n} {k}" for k, n in count_by_kind(defects).items())
    images = len({d.image for d in defects if d.image is not None})
    if not skip_invalid:
        listing = "\n".join(f"  {d}" for d in defects[:20])
        more = f"\n  ... and {len(defects) - 20} more" if len(defects) > 20 else ""
        raise DetoptDataError(
            f"{what}: {len(defects)} defects ({kinds}); fix them (see `detopt data validate`) or skip the "
            f"{images} defective images with --skip-invalid:\n{listing}{more}",
            defects,
        )
    warnings.warn(
        f"{what}: skipped {images} defective images ({len(defects)} defects: {kinds}); {kept} images kept",
        stacklevel=3,
    )


def parse_float(text: str) -> float | None:
    """``float(text)`` or None when ``text`` is not a number (``nan``/``inf`` parse)."""
    try:
        return float(text)
    except ValueError:
        return None


def check_box(
    box: list[float] | tuple[float, ...],
    width: int,
    height: int,
    tolerance: float,
    file: Path,
    line: int | None,
    what: str,
    image: Path | None,
) -> tuple[list[float] | None, list[Defect]]:
    """Check one absolute xyxy box against its image; clip it when it is off by ``tolerance`` px at most.

    Returns:
        (the clipped box, or None when defective; the defects found).
    """
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return None, [
            Defect("non_finite", file, line, f"{what}: non-finite coordinate in {_fmt(box)}", image)
        ]
    if x2 <= x1 or y2 <= y1:
        return None, [
            Defect(
                "non_positive_size",
                file,
                line,
                f"{what}: zero or negative width/height: box {_fmt(box)}",
                image,
            )
        ]
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        return None, [
            Defect(
                "out_of_image",
                file,
                line,
                f"{what}: box {_fmt(box)} is outside the {width}x{height} image "
                f"by more than {tolerance:g} px",
                image,
            )
        ]
    clipped = [
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
        min(max(x2, 0.0), width),
        min(max(y2, 0.0), height),
    ]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, [
            Defect(
                "out_of_image",
                file,
                line,
                f"{what}: box {_fmt(box)} has no area inside the {width}x{height} image",
                image,
            )
        ]
    return clipped, []


def _fmt(box: list[float] | tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in box) + "]"


def boxes_array(boxes: list[list[float]]) -> np.ndarray:
    """``float32 [N, 4]`` from a list of xyxy boxes (``[0, 4]`` when empty)."""
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)

"""What every writer shares: a safe output folder, image placement, unique names, number text."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from detopt.errors import DetoptDataError

IMAGE_MODES = ("copy", "link")

_announced: set[str] = set()


def announce(message: str) -> None:
    """Tell the user once per process how a data set was read (split names, image folders), through
    the ``detopt.data`` logger at INFO (the command line prints it)."""
    if message not in _announced:
        _announced.add(message)
        logging.getLogger("detopt.data").info(message)


def forget_announcements() -> None:
    """Let :func:`announce` say everything again (each command line run says it once)."""
    _announced.clear()


def fmt(v: float, decimals: int) -> str:
    """``v`` with at most ``decimals`` decimals, trailing zeros removed (``12.5``, ``3``, ``0.25``)."""
    s = f"{v:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies inside it (both resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


@contextmanager
def output_dir(dst: Path, sources: list[Path], overwrite: bool) -> Iterator[Path]:
    """A fresh folder to write a data set into; it becomes ``dst`` only when writing succeeds.

    The data set is written into a temporary sibling of ``dst`` and renamed at the end, so a failure
    leaves no half-written ``dst``.

    Raises:
        DetoptDataError: ``dst`` exists and is not empty without ``overwrite``; ``dst`` lies inside a
            source (or a source inside ``dst``, which ``overwrite`` would delete).
    """
    dst = Path(dst)
    for src in sources:
        root = src.parent if src.is_file() else src
        if _inside(dst, root):
            raise DetoptDataError(
                f"{dst}: the output folder lies inside the source {root}; choose a folder outside it"
            )
        if _inside(src, dst):
            raise DetoptDataError(
                f"{dst}: the source {src} lies inside the output folder; choose another output folder"
            )
    if dst.exists() and not dst.is_dir():
        raise DetoptDataError(f"{dst}: exists and is not a folder")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise DetoptDataError(
            f"{dst}: exists and is not empty; pass --overwrite (overwrite=True) to replace it"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)
    os.chmod(dst, 0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def place_image(src: Path, dst: Path, mode: str) -> None:
    """Copy (``mode="copy"``) or symlink (``"link"``, absolute target) an image file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copy2(src, dst)
    elif mode == "link":
        os.symlink(src.resolve(), dst)
    else:
        raise ValueError(f"mode must be one of {IMAGE_MODES}, got {mode!r}")


class UniqueNames:
    """Hands out file names that are unique by ``key`` (e.g. the stem, for YOLO/VOC label files)."""

    def __init__(self, by_stem: bool) -> None:
        self.by_stem = by_stem
        self.used: set[str] = set()
        self.renamed = 0

    def _key(self, name: str) -> str:
        return (Path(name).stem if self.by_stem else name).casefold()

    def take(self, name: str) -> str:
        """``name``, or ``stem_1.ext``, ``stem_2.ext``, ... when it (or its stem) is taken."""
        p = Path(name)
        candidate, i = name, 0
        while self._key(candidate) in self.used:
            i += 1
            candidate = f"{p.stem}_{i}{p.suffix}"
        self.used.add(self._key(candidate))
        self.renamed += i > 0
        return candidate


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")

"""Argument checks and numpy/torch plumbing shared by every op.

Every public op accepts numpy arrays or torch tensors and returns the same kind. The helpers
here validate shapes and values once, at the entry of a public function, and pick the compute
dtype: float64 when any float input is float64, float32 otherwise (integers and half
precision are computed in float32).
"""

from __future__ import annotations

import numpy as np
import torch

from detopt.errors import DetoptInputError
from detopt.structures.detections import ArrayLike

__all__ = ["ArrayLike"]  # re-exported for the ops modules


def is_tensor(x: object) -> bool:
    return isinstance(x, torch.Tensor)


def use_torch_path(x: object) -> bool:
    """True when the vectorized torch path must run: non-CPU tensors or tracing/export."""
    if not isinstance(x, torch.Tensor):
        return False
    if x.device.type != "cpu":
        return True
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    return bool(torch.compiler.is_compiling())


def compute_dtype(*xs: ArrayLike) -> np.dtype:
    """float64 if any input is float64, else float32."""
    for x in xs:
        dt = x.dtype
        if dt in (np.float64, torch.float64):
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def torch_dtype(dt: np.dtype) -> torch.dtype:
    return torch.float64 if dt == np.float64 else torch.float32


def _shape(x: ArrayLike) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _coerce(x: object, name: str) -> ArrayLike:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DetoptInputError(
            f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}"
        ) from exc


def _first_bad(x: ArrayLike) -> str:
    """Describe the first non-finite value of ``x`` (assumes there is one)."""
    if isinstance(x, torch.Tensor):
        flat = x.detach().reshape(-1).cpu().numpy()
    else:
        flat = np.asarray(x).reshape(-1)
    pos = int(np.flatnonzero(~np.isfinite(flat))[0])
    idx = np.unravel_index(pos, _shape(x)) if x.ndim else ()
    return f"{flat[pos]} at index {tuple(int(i) for i in idx)}"


def _all_finite(x: ArrayLike) -> bool:
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            return True
        return bool(torch.isfinite(x).all())
    if not np.issubdtype(x.dtype, np.floating):
        return True
    return bool(np.isfinite(x).all())


def check_boxes(boxes: object, name: str = "boxes") -> ArrayLike:
    """Validate ``boxes: [N, 4]`` with finite values; returns the array unchanged."""
    boxes = _coerce(boxes, name)
    if boxes.ndim != 2 or _shape(boxes)[1] != 4:
        raise DetoptInputError(f"{name}: expected shape [N, 4], got {list(_shape(boxes))}")
    if not _all_finite(boxes):
        raise DetoptInputError(f"{name}: contains a non-finite value ({_first_bad(boxes)})")
    return boxes


def check_vector(x: object, n: int, name: str, other: str = "boxes") -> ArrayLike:
    """Validate a 1-D per-box vector of length ``n`` with finite values."""
    x = _coerce(x, name)
    if x.ndim != 1:
        raise DetoptInputError(f"{name}: expected shape [N], got {list(_shape(x))}")
    if _shape(x)[0] != n:
        raise DetoptInputError(
            f"{name}: length {_shape(x)[0]} does not match {other} length {n}"
        )
    if not _all_finite(x):
        raise DetoptInputError(f"{name}: contains a non-finite value ({_first_bad(x)})")
    return x


def check_threshold(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise DetoptInputError(f"{name}: expected a number, got {value!r}") from exc
    if not np.isfinite(v):
        raise DetoptInputError(f"{name}: must be finite, got {value!r}")
    return v


def to_numpy(x: ArrayLike, dtype: np.dtype | type) -> np.ndarray:
    """Contiguous numpy copy-free view (when possible) of ``x`` in ``dtype``."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def labels_to_numpy(labels: ArrayLike) -> np.ndarray:
    """Labels as contiguous int64; fractional values are an error."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.dtype.kind == "f":
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise DetoptInputError("labels: expected integer class ids, got fractional values")
        return as_int
    if arr.dtype.kind not in "iub":
        raise DetoptInputError(f"labels: expected integer class ids, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def to_torch(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.detach()
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t


def like(result: np.ndarray, ref: object) -> ArrayLike:
    """Return ``result`` as the kind (and device) of ``ref``."""
    if isinstance(ref, torch.Tensor):
        return torch.from_numpy(result).to(ref.device)
    return result

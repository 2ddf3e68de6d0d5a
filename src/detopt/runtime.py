"""Runtime helpers shared by training and inference: the device and mixed precision.

Inference imports this module, not the trainer (see ``docs/architecture.md``).
"""

from __future__ import annotations

import torch

from detopt.errors import DetoptInputError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``.

    Raises:
        DetoptInputError: not a device name, or CUDA asked for and not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DetoptInputError(f"device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DetoptInputError(f"device: {name!r} asked for but CUDA is not available")
    return dev


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CPU, fp16 on CUDA (``enabled=False``: a no-op context)."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)

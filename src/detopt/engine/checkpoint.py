"""Checkpoints: atomic writes, safe loading (``weights_only``), model rebuild, safetensors export."""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detopt.errors import DetoptInputError


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``:
    a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no code runs while loading).

    Raises:
        DetoptInputError: missing, unreadable or not a detopt checkpoint (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DetoptInputError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        if _pickles_code(path):
            raise DetoptInputError(
                f"{path}: refused: the file holds pickled code (classes or functions), which detopt "
                "never loads; a detopt checkpoint holds tensors and plain data only") from None
        raise DetoptInputError(f"{path}: not a readable checkpoint (a corrupt or foreign pickle)") from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise DetoptInputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "spec" not in ckpt:
        raise DetoptInputError(f"{path}: not a detopt checkpoint (needs 'model' and 'spec')")
    return ckpt


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _pickles_code(path: Path) -> bool:
    """Whether the pickle of ``path`` (a plain pickle or torch's zip) names a class or a function:
    read with ``pickletools.genops``, which lists opcodes without running any."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                data = z.read(names[0]) if names else b""
        else:
            data = path.read_bytes()
        return any(op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:  # not a valid pickle: junk, not code
        return False


def _model_spec(spec: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """``(name, num_classes, options)`` of a stored model spec; files written before the
    vocabulary pass spell the image size ``img_size`` (read as ``imgsz``)."""
    options = dict(spec)
    name, nc = options.pop("name"), options.pop("num_classes")
    if "img_size" in options:
        options["imgsz"] = options.pop("img_size")
    return name, nc, options


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path, use_ema: bool = True) -> nn.Module:
    """Rebuild the model a checkpoint was trained as (``ckpt["spec"]``) and load its weights
    (the EMA's when present and ``use_ema``). Returns it in eval mode."""
    from detopt.models import create_model

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    name, nc, spec = _model_spec(ckpt["spec"])
    model = create_model(name, nc, **spec)
    state = ckpt["ema"]["module"] if use_ema and ckpt.get("ema") else ckpt["model"]
    model.load_state_dict(state)
    return model.eval()


def checkpoint_category_ids(ckpt: dict[str, Any]) -> list[int]:
    """The data set category id of each label a checkpoint was trained with (``1..K`` for
    checkpoints written before ids were recorded, and for sources without ids)."""
    names = list(ckpt.get("names", []))
    ids = ckpt.get("category_ids")
    if ids is None:
        return list(range(1, len(names) + 1))
    return [int(i) for i in ids]


def export_safetensors(ckpt: dict[str, Any] | str | Path, path: str | Path, use_ema: bool = True) -> Path:
    """Write the (EMA) weights as safetensors, with the model spec, class names and category ids as
    metadata."""
    import json

    from safetensors.torch import save_file

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    state = ckpt["ema"]["module"] if use_ema and ckpt.get("ema") else ckpt["model"]
    meta = {
        "spec": json.dumps(ckpt["spec"]),
        "names": json.dumps(list(ckpt.get("names", []))),
        "category_ids": json.dumps(checkpoint_category_ids(ckpt)),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_safetensors(path: str | Path) -> tuple[nn.Module, list[str]]:
    """Rebuild a model from :func:`export_safetensors` output -> ``(model in eval mode, class names)``."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from detopt.models import create_model

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "spec" not in meta:
        raise DetoptInputError(f"{path}: no detopt model spec in the safetensors metadata")
    name, nc, spec = _model_spec(json.loads(meta["spec"]))
    model = create_model(name, nc, **spec)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), json.loads(meta.get("names", "[]"))

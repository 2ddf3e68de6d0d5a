"""User-facing model names (``yolo-p``, ``yolo-n``, ...) mapped to factory functions."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from detopt.errors import DetoptInputError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a factory ``(num_classes, **options) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """The registered model names, sorted."""
    _load_builtin()
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model. The module remembers how it was built in ``model.spec``
    (``{"name", "num_classes", **options}``) so a checkpoint can rebuild it.

    Raises:
        DetoptInputError: unknown name (listing the close matches) or a bad option.
    """
    _load_builtin()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DetoptInputError(f"unknown model {name!r}{hint} (registered: {', '.join(sorted(_MODELS))})")
    try:
        model = _MODELS[name](num_classes=num_classes, **options)
    except TypeError as e:
        raise DetoptInputError(f"model {name!r}: {e}") from None
    model.spec = {"name": name, "num_classes": int(num_classes), **options}
    return model


def _load_builtin() -> None:
    import detopt.models.zoo  # noqa: F401  (registers the built-in scales)

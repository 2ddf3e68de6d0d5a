"""User-facing model names (``yolo-p``, ``yolo-n``, ...) mapped to factory functions: one
:class:`~detopt.registry.Registry`. The built-in scales register when ``detopt.models`` is
imported (``models/zoo.py``); a plug-in registers with ``@register_model("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from detopt.errors import DetoptInputError
from detopt.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a factory ``(num_classes, **options) -> nn.Module`` under ``name``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS.names())


def create_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model. The module remembers how it was built in ``model.spec``
    (``{"name", "num_classes", **options}``) so a checkpoint can rebuild it. The option
    ``shapes`` (:func:`detopt.models.shapes.module_shapes` of a pruned model) gives the layers
    those widths, whatever the factory.

    Raises:
        DetoptInputError: unknown name (listing the close matches) or a bad option.
    """
    factory = MODELS.get(name, "model")
    shapes = options.pop("shapes", None)  # a structurally pruned model's layer widths
    try:
        model = factory(num_classes=num_classes, **options)
    except TypeError as e:
        raise DetoptInputError(f"model {name!r}: {e}") from None
    if shapes is not None:
        from detopt.models.shapes import apply_shapes

        apply_shapes(model, shapes)
        options["shapes"] = shapes
    model.spec = {"name": name, "num_classes": int(num_classes), **options}
    return model

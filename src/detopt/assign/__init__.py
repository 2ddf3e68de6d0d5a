"""Label assignment: which anchor learns which ground-truth box (one assigner per file).

Every assigner has the same call shape (see ``detopt.assign._common``)::

    result = assigner(pred_scores, pred_boxes, anchors, gt_labels, gt_boxes, gt_mask)
"""

from collections.abc import Mapping
from typing import Any

from detopt.assign._common import IGNORE, Assigner, AssignResult
from detopt.assign.atss import ATSSAssigner
from detopt.assign.hungarian import HungarianMatcher
from detopt.assign.max_iou import MaxIoUAssigner
from detopt.assign.simota import SimOTAAssigner
from detopt.assign.task_aligned import TaskAlignedAssigner
from detopt.errors import DetoptInputError
from detopt.registry import Registry

#: User-facing assigner names (config files, CLI) -> classes: the only list.
ASSIGNERS: Registry[type[Assigner]] = Registry("assigner")
ASSIGNERS.add("tal", TaskAlignedAssigner)
ASSIGNERS.add("atss", ATSSAssigner)
ASSIGNERS.add("simota", SimOTAAssigner)
ASSIGNERS.add("max_iou", MaxIoUAssigner)
ASSIGNERS.add("hungarian", HungarianMatcher)


def build_assigner(spec: str | Mapping[str, Any]) -> Assigner:
    """An assigner from its name (``"atss"``) or a mapping (``{"name": "atss", "topk": 9}``): the
    class's ``train_defaults`` overridden by the mapping's other keys.

    Raises:
        DetoptInputError: unknown name (the registered ones listed) or a bad parameter.
    """
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if name is None:
            names = ", ".join(ASSIGNERS)
            raise DetoptInputError(f"assigner: a mapping needs a 'name' ({names}), got {spec!r}")
    else:
        raise DetoptInputError(f"assigner: a name or a mapping with a 'name', got {spec!r}")
    cls = ASSIGNERS.get(name, "assigner")
    try:
        return cls(**{**cls.train_defaults, **params})
    except TypeError as e:
        raise DetoptInputError(f"assigner {name}: {e}") from None


__all__ = [
    "ASSIGNERS",
    "IGNORE",
    "ATSSAssigner",
    "AssignResult",
    "Assigner",
    "HungarianMatcher",
    "MaxIoUAssigner",
    "SimOTAAssigner",
    "TaskAlignedAssigner",
    "build_assigner",
]

"""Label assignment: which anchor learns which ground-truth box (one assigner per file).

Every assigner has the same call shape (see ``detopt.assign._common``)::

    result = assigner(pred_scores, pred_boxes, anchors, gt_labels, gt_boxes, gt_mask)
"""

from detopt.assign._common import IGNORE, Assigner, AssignResult
from detopt.assign.atss import ATSSAssigner
from detopt.assign.hungarian import HungarianMatcher
from detopt.assign.max_iou import MaxIoUAssigner
from detopt.assign.simota import SimOTAAssigner
from detopt.assign.task_aligned import TaskAlignedAssigner

#: User-facing assigner names (config files, CLI) -> classes.
ASSIGNERS = {
    "max_iou": MaxIoUAssigner,
    "atss": ATSSAssigner,
    "tal": TaskAlignedAssigner,
    "simota": SimOTAAssigner,
    "hungarian": HungarianMatcher,
}

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
]

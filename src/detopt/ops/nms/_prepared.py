"""Input handling shared by the NMS variants: validate once, convert for the path that runs."""

from __future__ import annotations

import numpy as np
import torch

from detopt.ops._array import (
    ArrayLike,
    check_boxes,
    check_vector,
    compute_dtype,
    labels_to_numpy,
    like,
    to_numpy,
    to_torch,
    torch_dtype,
    use_torch_path,
)

_NO_LABELS = np.zeros(0, np.int64)
_MATRIX_EPS = 1e-12


class Prepared:
    """Validated inputs of one call, converted for the path that will run."""

    def __init__(self, boxes: object, scores: object, labels: object | None = None):
        self.boxes = check_boxes(boxes)
        n = int(self.boxes.shape[0])
        self.scores = check_vector(scores, n, "scores")
        self.labels = None if labels is None else check_vector(labels, n, "labels")
        self.dtype = compute_dtype(self.boxes, self.scores)
        self.torch_path = use_torch_path(self.boxes)
        self.n = n

    # numba path
    def np_boxes(self) -> np.ndarray:
        return to_numpy(self.boxes, self.dtype)

    def np_scores(self) -> np.ndarray:
        return to_numpy(self.scores, self.dtype)

    def np_labels(self) -> np.ndarray:
        return _NO_LABELS if self.labels is None else labels_to_numpy(self.labels)

    def scalar(self, v: float):
        return self.dtype.type(v)

    # torch path
    def t_boxes(self) -> torch.Tensor:
        return to_torch(self.boxes, torch_dtype(self.dtype))

    def t_scores(self) -> torch.Tensor:
        return to_torch(self.scores, torch_dtype(self.dtype)).to(self.boxes.device)

    def t_labels(self) -> torch.Tensor | None:
        if self.labels is None:
            return None
        return torch.from_numpy(labels_to_numpy(self.labels)).to(self.boxes.device)

    def out(self, arr: np.ndarray) -> ArrayLike:
        return like(arr, self.boxes)

"""The NMS family: one public function per variant.

numpy arrays and CPU tensors run the numba kernels (``_kernels``); tensors on another device,
or while tracing/exporting, run the vectorized torch twins (``_torch_paths``). Both give the
same indices. Indices are int64, sorted by decreasing score with ties broken by lower index.
Computation happens in float64 when boxes or scores are float64, in float32 otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from detopt.errors import DetoptInputError
from detopt.ops import _kernels, _soft_kernel, _torch_paths
from detopt.ops._array import (
    ArrayLike,
    check_boxes,
    check_threshold,
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


class _Prepared:
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


def _greedy(p: _Prepared, thr: float, diou: bool, beta: float) -> ArrayLike:
    if p.torch_path:
        return _torch_paths.nms(p.t_boxes(), p.t_scores(), p.t_labels(), thr, diou, beta)
    keep = _kernels.nms_kernel(p.np_boxes(), p.np_scores(), p.np_labels(), p.labels is not None,
                               p.scalar(thr), diou, p.scalar(beta))
    return p.out(keep)


def _diou(p: _Prepared, iou_threshold: float, beta: float) -> ArrayLike:
    beta = check_threshold(beta, "beta")
    if beta <= 0:
        raise DetoptInputError(f"beta: must be > 0, got {beta}")
    return _greedy(p, check_threshold(iou_threshold, "iou_threshold"), True, beta)


def nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float) -> ArrayLike:
    """Greedy non-maximum suppression (torchvision semantics).

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box is
            ``> iou_threshold``.

    Returns:
        ``[K]`` int64 indices of the kept boxes, by decreasing score (ties: lower index first).
    """
    p = _Prepared(boxes, scores)
    return _greedy(p, check_threshold(iou_threshold, "iou_threshold"), False, 1.0)


def batched_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike,
                iou_threshold: float) -> ArrayLike:
    """NMS run independently per label (boxes of different labels never suppress each other).

    Args:
        boxes: ``[N, 4]`` xyxy. scores: ``[N]``. labels: ``[N]`` integer class ids.

    Returns:
        ``[K]`` int64 indices, by decreasing score over all labels (ties: lower index first).
    """
    p = _Prepared(boxes, scores, labels)
    return _greedy(p, check_threshold(iou_threshold, "iou_threshold"), False, 1.0)


def diou_nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float,
             beta: float = 1.0) -> ArrayLike:
    """DIoU-NMS (Zheng et al. 2020): drop a box when ``IoU - (d²/c²)^β > iou_threshold`` with
    a kept, higher-scored box (d: centre distance, c: diagonal of the enclosing box).

    Returns ``[K]`` int64 indices by decreasing score.
    """
    return _diou(_Prepared(boxes, scores), iou_threshold, beta)


def _soft(p: _Prepared, iou_threshold: float, sigma: float, score_threshold: float,
          method: str) -> tuple[ArrayLike, ArrayLike]:
    if method not in ("gaussian", "linear"):
        raise DetoptInputError(f"method: expected 'gaussian' or 'linear', got {method!r}")
    thr = check_threshold(iou_threshold, "iou_threshold")
    sigma = check_threshold(sigma, "sigma")
    if sigma <= 0:
        raise DetoptInputError(f"sigma: must be > 0, got {sigma}")
    sthr = check_threshold(score_threshold, "score_threshold")
    linear = method == "linear"
    if p.torch_path:
        return _torch_paths.soft_nms(p.t_boxes(), p.t_scores(), p.t_labels(), thr, sigma, sthr,
                                     linear)
    keep, new = _soft_kernel.soft_nms_kernel(p.np_boxes(), p.np_scores(), p.np_labels(),
                                             p.labels is not None, p.scalar(thr),
                                             p.scalar(sigma), p.scalar(sthr), linear)
    return p.out(keep), p.out(new)


def soft_nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float = 0.3, sigma: float = 0.5,
             score_threshold: float = 0.001, method: str = "gaussian"
             ) -> tuple[ArrayLike, ArrayLike]:
    """Soft-NMS (Bodla et al. 2017).

    Repeatedly selects the highest-scoring remaining box (ties: lower index) and decays every
    remaining box j: gaussian ``s_j *= exp(-iou² / sigma)``; linear ``s_j *= 1 - iou`` only
    where ``iou > iou_threshold`` (``iou_threshold`` is unused by the gaussian method). Stops
    when the best remaining score is ``<= score_threshold``. The input is never modified.

    Returns:
        ``(indices [K] int64, new_scores [K])`` in selection order; ``new_scores`` are the
        decayed scores at selection (non-increasing).
    """
    return _soft(_Prepared(boxes, scores), iou_threshold, sigma, score_threshold, method)


def matrix_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike | None = None,
               kernel: str = "gaussian", sigma: float = 2.0) -> ArrayLike:
    """Matrix NMS (SOLOv2, Wang et al. 2020) applied to boxes, per label when given.

    For boxes sorted by decreasing score, ``decay_j = min_i f(iou_ij) / f(comp_i)`` over
    higher-scored boxes i of the same label, where ``comp_i`` is the largest IoU of box i with
    a box above it. Gaussian ``f(x) = exp(-sigma · x²)``; linear ``f(x) = 1 - x`` with the
    denominator clamped at 1e-12 (deviation from the paper: exact duplicates give 0, not NaN).

    Returns:
        ``[N]`` decayed scores ``scores · decay`` in input order (nothing is removed; threshold
        them or take the top-k afterwards).
    """
    if kernel not in ("gaussian", "linear"):
        raise DetoptInputError(f"kernel: expected 'gaussian' or 'linear', got {kernel!r}")
    sigma = check_threshold(sigma, "sigma")
    p = _Prepared(boxes, scores, labels)
    gaussian = kernel == "gaussian"
    if p.torch_path:
        s = p.t_scores()
        return s * _torch_paths.matrix_nms_decay(p.t_boxes(), s, p.t_labels(), gaussian, sigma,
                                                 _MATRIX_EPS)
    s = p.np_scores()
    decay = _kernels.matrix_nms_kernel(p.np_boxes(), s, p.np_labels(), p.labels is not None,
                                       gaussian, p.scalar(sigma), p.scalar(_MATRIX_EPS))
    return p.out(s * decay)


def batched_soft_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike,
                     iou_threshold: float = 0.3, sigma: float = 0.5,
                     score_threshold: float = 0.001, method: str = "gaussian"
                     ) -> tuple[ArrayLike, ArrayLike]:
    """:func:`soft_nms` run independently per label; selection order interleaves labels."""
    return _soft(_Prepared(boxes, scores, labels), iou_threshold, sigma, score_threshold, method)


def batched_diou_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike,
                     iou_threshold: float, beta: float = 1.0) -> ArrayLike:
    """:func:`diou_nms` run independently per label."""
    return _diou(_Prepared(boxes, scores, labels), iou_threshold, beta)

"""The NMS family: one module per technique, one public function per variant.

- ``greedy``: hard NMS, per-label (batched) NMS, DIoU-NMS;
- ``soft``: soft-NMS (gaussian, linear);
- ``matrix``: matrix NMS (SOLOv2).

Each module holds its numba kernel (numpy arrays and CPU tensors), its vectorized torch twin
(tensors on another device, tracing and export) and the public functions; both paths give the
same indices. The spatial grid the CPU kernels share is ``detopt.ops._grid``, the torch pair
measures ``detopt.ops._pairwise``. Indices are int64, sorted by decreasing score with ties
broken by lower index. Computation happens in float64 when boxes or scores are float64, in
float32 otherwise. See docs/architecture.md for how to add a method.
"""

from detopt.ops.nms.greedy import batched_diou_nms, batched_nms, diou_nms, nms
from detopt.ops.nms.matrix import matrix_nms
from detopt.ops.nms.soft import batched_soft_nms, soft_nms

__all__ = [
    "batched_diou_nms",
    "batched_nms",
    "batched_soft_nms",
    "diou_nms",
    "matrix_nms",
    "nms",
    "soft_nms",
]

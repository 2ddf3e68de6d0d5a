"""Raw head outputs -> final detections per image (decode, sigmoid, the NMS family, max_det)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detopt.constants import IOU_THRESHOLD, MAX_DET, PRE_NMS_TOPK, SCORE_THRESHOLD
from detopt.models.heads import decode_outputs
from detopt.ops.postprocess import METHOD_REGISTRY, postprocess
from detopt.structures.detections import Detections


class Postprocessor:
    """Decode and suppress, per image.

    Args:
        strides, reg_max: the model's (``model.strides``, ``model.reg_max``).
        method: a name of :data:`detopt.ops.postprocess.METHOD_REGISTRY` (``nms``,
            ``soft_nms_linear``, ``soft_nms_gaussian``, ``diou_nms``, ``matrix_nms``, ``wbf``, or
            one registered later).
        score_thr: drop candidates at or below this probability.
        iou_thr: the method's IoU threshold.
        max_det: detections kept per image.
        pre_nms_topk: candidates entering suppression.
        multi_label: every class above ``score_thr`` is a candidate (better mAP), else only the
            best class of each location (faster).
        agnostic: suppress across classes.

    ``__call__(outputs)``: ``[B, 4·R + C, H_l, W_l]`` per level -> ``B`` :class:`Detections`
    (tensors, xyxy in input pixels, by decreasing score).
    """

    def __init__(
        self,
        strides: Sequence[int],
        reg_max: int = 16,
        method: str = "nms",
        score_thr: float = SCORE_THRESHOLD,
        iou_thr: float = IOU_THRESHOLD,
        max_det: int = MAX_DET,
        pre_nms_topk: int = PRE_NMS_TOPK,
        multi_label: bool = False,
        agnostic: bool = False,
    ) -> None:
        METHOD_REGISTRY.check(method, "method")
        self.strides = tuple(strides)
        self.reg_max = reg_max
        self.method = method
        self.score_thr = score_thr
        self.iou_thr = iou_thr
        self.max_det = max_det
        self.pre_nms_topk = pre_nms_topk
        self.multi_label = multi_label
        self.agnostic = agnostic

    @torch.no_grad()
    def candidates(self, outputs: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """Per image, what enters suppression: ``(boxes [A, 4] xyxy, scores, labels)`` with
        ``scores [A]`` and ``labels [A]`` (best class), or ``scores [A, C]`` and ``labels None``
        when ``multi_label``. No threshold is applied yet."""
        d = decode_outputs([o.float() for o in outputs], self.strides, self.reg_max)
        probs = d.cls_logits.sigmoid()
        out = []
        for boxes, p in zip(d.boxes, probs, strict=True):
            if self.multi_label:
                out.append((boxes, p, None))
            else:
                s, lab = p.max(-1)
                out.append((boxes, s, lab))
        return out

    def suppress(self, boxes: Tensor, scores: Tensor, labels: Tensor | None) -> Detections:
        """One image's candidates (as :meth:`candidates` gives them) -> its detections."""
        return postprocess(boxes, scores, labels, method=self.method, score_thr=self.score_thr,
                           iou_thr=self.iou_thr, max_det=self.max_det, pre_nms_topk=self.pre_nms_topk,
                           agnostic=self.agnostic)

    def __call__(self, outputs: Sequence[Tensor]) -> list[Detections]:
        return [self.suppress(*c) for c in self.candidates(outputs)]

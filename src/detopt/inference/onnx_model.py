"""An exported detopt ONNX file run by ONNX Runtime, behind the same interface as a torch model.

:class:`OnnxDetector` stands where the torch detector stands (``model(images)``, ``eval()``,
``strides``); :class:`OnnxPostprocess` where the :class:`~detopt.models.Postprocessor` stands
(outputs -> :class:`Detections` in input pixels). So prediction, validation and the letterbox /
un-letterbox code are shared with torch weights. With post-processing inside the graph, the
thresholds given here feed the graph's threshold inputs; a ``none`` export is post-processed by
:func:`detopt.ops.postprocess.postprocess`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detopt.constants import IOU_THRESHOLD, MAX_DET, SCORE_THRESHOLD
from detopt.errors import DetoptInputError
from detopt.ops.postprocess import METHOD_REGISTRY, postprocess
from detopt.structures.detections import Detections


class OnnxDetector:
    """A detopt ONNX export on ONNX Runtime (CPU; CUDA first when the runtime has it).

    Attributes:
        names, category_ids, imgsz, dynamic, strides, max_stride, nms, max_det: from the file's
            metadata. ``inputs``: the threshold values fed to the graph on every call.
    """

    training = False

    def __init__(self, path: str | Path, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise DetoptInputError(f"{path}: no such file")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # threshold inputs with defaults are expected, not a warning
        if threads:
            opts.intra_op_num_threads = int(threads)
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DetoptInputError(f"{path}: not a readable ONNX model ({first[:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "detopt_version" not in meta or "names" not in meta:
            raise DetoptInputError(f"{path}: an ONNX model, but not one detopt exported (no detopt metadata)")
        m = {k: json.loads(v) for k, v in meta.items()}
        self.path = path
        self.names: list[str] = list(m["names"])
        self.category_ids: list[int] = [int(i) for i in m["category_ids"]]
        self.imgsz: int = int(m["imgsz"])
        self.dynamic: bool = bool(m["dynamic"])
        self.strides = tuple(int(s) for s in m["strides"])
        self.max_stride = int(m["stride"])
        self.nms: str = m["nms"]
        self.max_det: int | None = m.get("max_det")
        self.defaults: dict[str, float] = dict(m.get("thresholds", {}))
        self.inputs: dict[str, float] = dict(self.defaults)
        self.output_names = [o.name for o in self.session.get_outputs()]
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch: int | None = batch if isinstance(batch, int) else None

    # torch-model interface used by predict_batches / Predictor
    def eval(self) -> OnnxDetector:
        return self

    def train(self, mode: bool = True) -> OnnxDetector:
        if mode:
            raise DetoptInputError(f"{self.path}: an ONNX model cannot be trained")
        return self

    def to(self, device: Any) -> OnnxDetector:
        return self

    def check_size(self, imgsz: int) -> None:
        """A static export runs at its own size only; a dynamic one at multiples of the stride."""
        if not self.dynamic and imgsz != self.imgsz:
            raise DetoptInputError(f"{self.path}: exported for imgsz {self.imgsz} (static); "
                                   f"got {imgsz} (export with --dynamic for other sizes)")
        if imgsz % self.max_stride:
            raise DetoptInputError(f"imgsz {imgsz} must be a multiple of {self.max_stride}")

    def set_thresholds(self, **values: float | None) -> None:
        """Values of the graph's threshold inputs (``score_thr``, ``iou_thr``, ``sigma``) for the
        following calls; None keeps the file's default, a key the graph lacks is ignored."""
        for k, v in values.items():
            if k in self.defaults and v is not None:
                self.inputs[k] = float(v)

    def __call__(self, images: torch.Tensor) -> list[np.ndarray]:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), np.float32)
        thresholds = {k: np.asarray(v, np.float32) for k, v in self.inputs.items()}
        n = self.fixed_batch
        if n is None or x.shape[0] == n:
            return self.session.run(None, {"images": x, **thresholds})
        parts = [self.session.run(None, {"images": x[i : i + n], **thresholds}) for i in range(0, len(x), n)]
        return [np.concatenate(p, 0) for p in zip(*parts, strict=True)]  # a static export: its batch size


class OnnxPostprocess:
    """ONNX outputs -> one :class:`Detections` per image (tensors, input pixels, by decreasing score).

    For a graph with post-processing inside, ``method`` must be the graph's (or None) and the
    thresholds feed its inputs; for a ``none`` export, ``method`` and the thresholds run
    :func:`~detopt.ops.postprocess.postprocess` on each location's best class.
    """

    def __init__(self, detector: OnnxDetector, method: str | None = None,
                 score_thr: float = SCORE_THRESHOLD, iou_thr: float = IOU_THRESHOLD,
                 max_det: int = MAX_DET, sigma: float | None = None) -> None:
        self.detector = detector
        if detector.nms == "none":
            self.method = METHOD_REGISTRY.check(method or "nms", "nms")
        else:
            if method is not None and method != detector.nms:
                raise DetoptInputError(
                    f"{detector.path}: post-processing {detector.nms!r} is inside this export; "
                    f"--nms {method} needs a re-export (detopt export --nms {method}) or a 'none' export")
            self.method = detector.nms
            if detector.max_det is not None and max_det > detector.max_det:
                raise DetoptInputError(f"{detector.path}: exported with max_det {detector.max_det}; "
                                       f"got {max_det} (re-export with --max-det {max_det})")
        self.score_thr, self.iou_thr, self.max_det, self.sigma = score_thr, iou_thr, max_det, sigma
        detector.set_thresholds(score_thr=score_thr, iou_thr=iou_thr, sigma=sigma)

    def __call__(self, outputs: list[np.ndarray]) -> list[Detections]:
        if self.detector.nms == "none":
            boxes, scores = (torch.from_numpy(o) for o in outputs)
            out = []
            for b, p in zip(boxes, scores, strict=True):
                s, lab = p.max(-1)
                out.append(postprocess(b, s, lab, method=self.method, score_thr=self.score_thr,
                                       iou_thr=self.iou_thr, max_det=self.max_det, sigma=self.sigma))
            return out
        dets, num = outputs
        out = []
        for d, n in zip(dets, num, strict=True):
            rows = torch.from_numpy(np.ascontiguousarray(d[: min(int(n), self.max_det)]))
            out.append(Detections(rows[:, :4], rows[:, 4], rows[:, 5].round().to(torch.int64)))
        return out

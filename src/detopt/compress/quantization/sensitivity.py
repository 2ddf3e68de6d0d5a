"""Which layers INT8 hurts most: each layer quantized alone, the network's outputs compared with
the float network's on real images (signal-to-quantization-noise ratio, dB; lower is worse)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from detopt.compress.quantization.graph import GraphQuantizer, sqnr_db


@dataclass
class LayerError:
    """The outputs' SQNR (dB) with only ``layer`` quantized: class scores and boxes."""

    layer: str
    scores_db: float
    boxes_db: float

    @property
    def worst_db(self) -> float:
        return min(self.scores_db, self.boxes_db)


def run_network(model: onnx.ModelProto | str, images: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    """``{output name: array}`` of a network graph (``images -> boxes, scores``) on ``images``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"images": images}), strict=True))


def layer_sensitivity(gq: GraphQuantizer, images: np.ndarray, threads: int = 1) -> list[LayerError]:
    """Every layer of ``gq`` quantized alone on ``images: float32 [N, 3, H, W]`` -> its
    :class:`LayerError`, most sensitive (lowest worst-case SQNR) first; ties keep graph order."""
    ref = run_network(str(gq.prepared), images, threads)
    errors = []
    for layer in gq.layers:
        out = run_network(gq.quantize(only=[layer.name]), images, threads)
        errors.append(LayerError(layer.name, sqnr_db(ref["scores"], out["scores"]),
                                 sqnr_db(ref["boxes"], out["boxes"])))
    return sorted(errors, key=lambda e: e.worst_db)

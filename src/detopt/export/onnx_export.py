"""``detopt export --format onnx``: the network and its box decode exported by torch's exporter
(``torch.onnx.export(dynamo=True)``), the post-processing graph of :mod:`detopt.export.onnx_nms`
appended, metadata written, the result checked (``onnx.checker`` full check, shape inference).

Input ``images [B, 3, H, W]`` float32 in ``[0, 1]`` (letterboxed RGB-as-decoded, the layout
``detopt``'s loader gives). Outputs: with a post-processing method, ``detections [B, max_det, 6]``
and ``num_detections [B]``; with ``none``, ``boxes [B, A, 4]`` (xyxy, input pixels) and
``scores [B, A, C]`` (class probabilities).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from detopt import __version__
from detopt.constants import IOU_THRESHOLD, MAX_DET, PAD_VALUE, PRE_NMS_TOPK
from detopt.errors import DetoptInputError
from detopt.export.onnx_nms import ONNX_NMS, OPSET, NmsSpec, nms_model, threshold_inputs
from detopt.models.heads import decode_outputs

NO_NMS = "none"
MAX_SIDE = 4096
"""Largest dynamic image side the export allows (a bound torch.export needs)."""


class DecodedDetector(nn.Module):
    """A detector and its box decode: ``images -> (boxes [B, A, 4] xyxy, scores [B, A, C])``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = decode_outputs(self.model(images), self.model.strides, self.model.reg_max)
        return d.boxes, d.cls_logits.sigmoid()


def nearest_sizes(imgsz: int, stride: int) -> tuple[int, int]:
    """The multiples of ``stride`` just below and above ``imgsz``."""
    lo = max(stride, imgsz // stride * stride)
    return lo, lo + stride


def check_imgsz(imgsz: int, stride: int) -> None:
    if imgsz < stride or imgsz % stride:
        lo, hi = nearest_sizes(imgsz, stride)
        raise DetoptInputError(f"imgsz {imgsz} is not a multiple of the model's stride {stride}; "
                               f"nearest valid sizes: {lo} or {hi}")


def _export_network(model: nn.Module, imgsz: int, dynamic: bool, opset: int,
                    dynamic_batch: bool = False) -> onnx.ModelProto:
    wrapper = DecodedDetector(model).eval()
    stride = int(model.max_stride)
    x = torch.zeros(2 if dynamic or dynamic_batch else 1, 3, imgsz, imgsz)
    kwargs: dict[str, Any] = {}
    batch = torch.export.Dim("batch", min=1, max=1024)
    if dynamic_batch and not dynamic:
        kwargs["dynamic_shapes"] = ({0: batch},)
    if dynamic:
        h = torch.export.Dim("h", min=1, max=MAX_SIDE // stride)
        w = torch.export.Dim("w", min=1, max=MAX_SIDE // stride)
        kwargs["dynamic_shapes"] = ({0: batch, 2: stride * h, 3: stride * w},)
    # the exporter logs its progress and warns about absent torchvision: keep a library quiet
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, (x,), dynamo=True, opset_version=opset,
                                        input_names=["images"], output_names=["boxes", "scores"],
                                        verbose=False, **kwargs)
    finally:
        quiet.setLevel(level)
    return program.model_proto


def _rename_dims(model: onnx.ModelProto) -> None:
    """Readable names for the symbolic dimensions of the graph's inputs and outputs (the
    exporter's are ``s39``-like); fixed dimensions of a static export stay fixed."""
    for vi in list(model.graph.input) + list(model.graph.output):
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_param"):
                continue
            if i == 0:
                d.dim_param = "batch"
            elif vi.name == "images" and i in (2, 3):
                d.dim_param = "height" if i == 2 else "width"
            elif vi.name in ("boxes", "scores") and i == 1:
                d.dim_param = "anchors"


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    names: list[str],
    category_ids: list[int] | None = None,
    imgsz: int = 320,
    dynamic: bool = False,
    dynamic_batch: bool = False,
    nms: str = "nms",
    score_thr: float = 0.25,
    iou_thr: float = IOU_THRESHOLD,
    sigma: float | None = None,
    max_det: int = MAX_DET,
    agnostic: bool = False,
    opset: int = OPSET,
) -> Path:
    """Export ``model`` (a registered detopt detector) to ``out`` (written atomically).

    Args:
        names, category_ids: class names and the data set's category id of each (metadata).
        imgsz: the input side of a static export (a multiple of the stride); the example size
            of a dynamic one.
        dynamic: batch, height and width symbolic (multiples of the stride, up to 4096).
        dynamic_batch: the batch alone symbolic (the side stays ``imgsz``).
        nms: a name of :data:`~detopt.export.onnx_nms.ONNX_NMS` or ``"none"``.
        score_thr, iou_thr, sigma: defaults of the graph's threshold inputs.
        max_det: rows of ``detections`` per image; agnostic: suppress across classes.

    Returns:
        the path written. Raises :class:`DetoptInputError` for an unknown method, a bad size.
    """
    if nms != NO_NMS:
        ONNX_NMS.check(nms, "nms")
    if max_det < 1:
        raise DetoptInputError(f"max_det must be >= 1, got {max_det}")
    check_imgsz(imgsz, int(model.max_stride))
    net = export_network(model, imgsz, dynamic, opset, dynamic_batch=dynamic_batch)
    proto = with_postprocess(net, model, names=names, category_ids=category_ids, imgsz=imgsz,
                             dynamic=dynamic, nms=nms, score_thr=score_thr, iou_thr=iou_thr,
                             sigma=sigma, max_det=max_det, agnostic=agnostic, opset=opset)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


def export_network(model: nn.Module, imgsz: int, dynamic: bool = False,
                   opset: int = OPSET, dynamic_batch: bool = False) -> onnx.ModelProto:
    """The network and its box decode as ONNX (``images -> boxes, scores``), not yet checked.
    ``dynamic``: batch, height and width symbolic; ``dynamic_batch``: the batch alone."""
    check_imgsz(imgsz, int(model.max_stride))
    return _export_network(model.eval(), imgsz, dynamic, opset, dynamic_batch)


def with_postprocess(
    net: onnx.ModelProto,
    model: nn.Module,
    *,
    names: list[str],
    category_ids: list[int] | None,
    imgsz: int,
    dynamic: bool,
    nms: str,
    score_thr: float,
    iou_thr: float,
    sigma: float | None,
    max_det: int,
    agnostic: bool,
    opset: int,
    extra_meta: dict[str, Any] | None = None,
) -> onnx.ModelProto:
    """A copy of ``net`` (from :func:`export_network`) with the post-processing graph ``nms``
    appended, the metadata written (``extra_meta`` added) and the whole checked (full check,
    strict shape inference)."""
    out = onnx.ModelProto()
    out.CopyFrom(net)
    num_classes = len(names)
    meta: dict[str, Any] = {
        "detopt_version": __version__,
        "names": list(names),
        "category_ids": list(category_ids) if category_ids is not None else list(range(1, num_classes + 1)),
        "imgsz": imgsz,
        "dynamic": dynamic,
        "stride": int(model.max_stride),
        "strides": list(model.strides),
        "letterbox": {"pad_value": PAD_VALUE, "centered": True, "input": "float32 [0, 1], BGR as decoded"},
        "nms": nms,
        "spec": dict(getattr(model, "spec", {})),
        **(extra_meta or {}),
    }
    if nms != NO_NMS:
        spec = NmsSpec(max_det=max_det, pre_nms_topk=PRE_NMS_TOPK, agnostic=agnostic)
        thresholds = threshold_inputs(nms, score_thr=score_thr, iou_thr=iou_thr, sigma=sigma)
        post = nms_model(nms, num_classes, spec, opset=opset, **thresholds)
        post.ir_version = out.ir_version
        out = onnx.compose.merge_models(out, post, io_map=[("boxes", "boxes"), ("scores", "scores")],
                                        prefix2="post/")
        _unprefix(out, "post/", ["detections", "num_detections", *thresholds])
        meta.update(max_det=max_det, agnostic=agnostic, pre_nms_topk=PRE_NMS_TOPK, thresholds=thresholds)
    _rename_dims(out)
    out.producer_name = "detopt"
    out.producer_version = __version__
    del out.metadata_props[:]
    for key, value in meta.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(out, full_check=True)
    onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
    return out


def _unprefix(model: onnx.ModelProto, prefix: str, keep: list[str]) -> None:
    """Give the post-processing graph's outputs and threshold inputs their plain names back."""
    rename = {prefix + k: k for k in keep}
    g = model.graph
    for node in g.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
        node.output[:] = [rename.get(x, x) for x in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_in_subgraph(attr.g, rename)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = rename.get(vi.name, vi.name)
    for init in g.initializer:
        init.name = rename.get(init.name, init.name)


def _rename_in_subgraph(g: onnx.GraphProto, rename: dict[str, str]) -> None:
    for node in g.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_in_subgraph(attr.g, rename)

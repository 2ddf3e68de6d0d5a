"""Post-processing as ONNX graphs: every suppression method inside the exported model.

Each builder takes the decoded network outputs ``boxes [B, A, 4]`` (xyxy, input pixels) and
``scores [B, A, C]`` (class probabilities) and ends in the fixed-shape outputs
``detections [B, max_det, 6]`` (x1, y1, x2, y2, score, class; padded rows are 0) and
``num_detections [B]`` (int64). The thresholds are graph inputs with defaults (an initializer of
the same name), so one file serves several settings: ``score_thr``, ``iou_thr`` and, for the
gaussian methods, ``sigma`` (float32 scalars).

The semantics are those of :func:`detopt.ops.postprocess.postprocess` on the single-label
candidates the :class:`~detopt.models.Postprocessor` makes (each location's best class):
candidates scoring ``> score_thr``, the ``pre_nms_topk`` best, suppression per class (or across
classes), the ``max_det`` best by decreasing score. Hard NMS is ONNX ``NonMaxSuppression``;
soft-NMS and DIoU-NMS are a ``Loop`` over selections (one vectorized decay per selection, as
the torch twins do); matrix NMS is its closed form on the candidates above the threshold.
Every expression mirrors the torch twin's, in the same order.

A builder is registered with :func:`register_onnx_nms` under the name of the post-processing
method it implements (see ``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from detopt.constants import IOU_THRESHOLD, MAX_DET, PRE_NMS_TOPK, SCORE_THRESHOLD
from detopt.registry import Registry

OPSET = 18
"""The default opset of exported graphs (tested: 18 to 21)."""


class Graph:
    """A small builder of ONNX nodes: ``g.op("Add", a, b)`` returns the output name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}/{hint}_{self._n}"

    def op(self, op_type: str, *inputs: str, n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=outs[0], **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=np.float32) -> str:
        """A ``Constant`` node (works inside ``Loop`` bodies too)."""
        arr = np.asarray(value, dtype)
        return self.op("Constant", value=onnx.numpy_helper.from_array(arr))

    def i64(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    def dim(self, x: str, axis: int) -> str:
        """``x.shape[axis]`` as an int64 ``[1]`` tensor."""
        return self.op("Gather", self.op("Shape", x), self.i64(axis), axis=0)

    def unsqueeze(self, x: str, *axes: int) -> str:
        return self.op("Unsqueeze", x, self.i64(*axes))

    def squeeze(self, x: str, *axes: int) -> str:
        return self.op("Squeeze", x, self.i64(*axes))

    def col(self, x: str, k: int) -> str:
        """``x[..., k]`` of a last axis (the axis dropped)."""
        return self.op("Gather", x, self.const(k, np.int64), axis=-1)


@dataclass(frozen=True)
class NmsSpec:
    """Fixed settings baked into the graph (thresholds are inputs, see the module docstring)."""

    max_det: int = MAX_DET
    pre_nms_topk: int = PRE_NMS_TOPK
    agnostic: bool = False


Builder = Callable[[Graph, str, str, NmsSpec], tuple[str, str]]


@dataclass(frozen=True)
class OnnxNms:
    """A registered graph builder: ``build(g, boxes, scores, spec) -> (detections, num)``;
    ``inputs``: the threshold inputs it reads (besides ``score_thr``)."""

    build: Builder
    inputs: tuple[str, ...]
    default_sigma: float = 0.5


ONNX_NMS: Registry[OnnxNms] = Registry("ONNX post-processing method")
"""Post-processing methods that can live inside an exported graph, by the name of the method."""


def register_onnx_nms(name: str, inputs: tuple[str, ...] = ("iou_thr",),
                      default_sigma: float = 0.5) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        ONNX_NMS.add(name, OnnxNms(fn, tuple(inputs), default_sigma))
        return fn

    return deco


# --------------------------------------------------------------------------- shared stages
def _candidates(g: Graph, boxes: str, scores: str, spec: NmsSpec, with_index: bool = False) -> tuple:
    """Each location's best class, then the ``pre_nms_topk`` best locations by score (ties: lower
    index first, as a stable sort). Returns ``(boxes [B, K, 4], scores [B, K], labels [B, K]
    int64, K as int64 [1])`` and with ``with_index`` the location index of each ``[B, K]``."""
    best = g.op("ReduceMax", scores, g.i64(2), keepdims=0)
    label = g.op("ArgMax", scores, axis=2, keepdims=0, select_last_index=0)
    k = g.op("Min", g.dim(best, 1), g.i64(spec.pre_nms_topk))
    top_s, top_i = g.op("TopK", best, k, axis=1, largest=1, sorted=1, n_out=2)
    top_b = g.op("GatherND", boxes, g.unsqueeze(top_i, 2), batch_dims=1)
    top_l = g.op("GatherElements", label, top_i, axis=1)
    return (top_b, top_s, top_l, k, top_i) if with_index else (top_b, top_s, top_l, k)


def _pad_rows(g: Graph, dets: str, valid: str, spec: NmsSpec) -> tuple[str, str]:
    """``dets [B, k, 6]`` with ``valid [B, k]`` (k <= max_det, valid rows first) -> zeros on
    invalid rows, padded to ``[B, max_det, 6]``; and ``num_detections [B]``."""
    dets = g.op("Where", g.unsqueeze(valid, 2), dets, g.const(0.0))
    k = g.dim(dets, 1)
    pad = g.op("Sub", g.i64(spec.max_det), k)
    pads = g.op("Concat", g.i64(0), g.i64(0), g.i64(0), g.i64(0), pad, g.i64(0), axis=0)
    out = g.op("Pad", dets, pads, g.const(0.0), mode="constant")
    num = g.op("ReduceSum", g.op("Cast", valid, to=TensorProto.INT64), g.i64(1), keepdims=0)
    return out, num


def _rows(g: Graph, boxes: str, scores: str, labels: str) -> str:
    """``[..., 4]``, ``[...]``, ``[...]`` int64 -> ``[..., 6]`` (x1, y1, x2, y2, score, class)."""
    return g.op("Concat", boxes, g.unsqueeze(scores, -1),
                g.unsqueeze(g.op("Cast", labels, to=TensorProto.FLOAT), -1), axis=-1)


def _best_rows(g: Graph, rows: str, batch_of: str, score: str, batch: str, spec: NmsSpec,
               floor: float = -0.5) -> tuple[str, str]:
    """Selected rows ``[N, 6]`` of images ``batch_of [N]`` with ``score [N]`` -> the ``max_det``
    best of each image, by decreasing score (ties: earlier row first), padded."""
    b_range = g.op("Range", g.const(0, np.int64), g.squeeze(batch, 0), g.const(1, np.int64))
    mine = g.op("Equal", g.unsqueeze(b_range, 1), g.unsqueeze(batch_of, 0))  # [B, N]
    m = g.op("Where", mine, g.unsqueeze(score, 0), g.const(-1.0))
    k = g.op("Min", g.dim(score, 0), g.i64(spec.max_det))
    vals, idx = g.op("TopK", m, k, axis=1, largest=1, sorted=1, n_out=2)
    dets = g.op("Gather", rows, idx, axis=0)  # [B, k, 6]
    return _pad_rows(g, dets, g.op("Greater", vals, g.const(floor)), spec)


def _columns(g: Graph, boxes: str) -> tuple[str, str, str, str, str]:
    """``x1, y1, x2, y2`` of ``boxes [..., 4]`` (last axis dropped) and the areas (clamped sides)."""
    x1, y1, x2, y2 = (g.col(boxes, i) for i in range(4))
    zero = g.const(0.0)
    area = g.op("Mul", g.op("Max", g.op("Sub", x2, x1), zero), g.op("Max", g.op("Sub", y2, y1), zero))
    return x1, y1, x2, y2, area


def _iou_with(g: Graph, a: tuple[str, ...], b: tuple[str, ...]) -> str:
    """IoU of columns ``a`` with columns ``b`` (see :func:`_columns`; shapes broadcast), 0 where
    they do not intersect: the expressions of ``ops._pairwise.iou_matrix``."""
    ax1, ay1, ax2, ay2, area_a = a
    bx1, by1, bx2, by2, area_b = b
    zero = g.const(0.0)
    iw = g.op("Sub", g.op("Min", ax2, bx2), g.op("Max", ax1, bx1))
    ih = g.op("Sub", g.op("Min", ay2, by2), g.op("Max", ay1, by1))
    inter = g.op("Mul", iw, ih)
    union = g.op("Sub", g.op("Add", area_a, area_b), inter)
    ok = g.op("And", g.op("And", g.op("Greater", iw, zero), g.op("Greater", ih, zero)),
              g.op("Greater", union, zero))
    safe = g.op("Where", ok, union, g.const(1.0))
    return g.op("Where", ok, g.op("Div", inter, safe), zero)


def _diou_penalty_with(g: Graph, a: tuple[str, ...], b: tuple[str, ...]) -> str:
    """``d² / c²`` of columns ``a`` against columns ``b`` (``ops._pairwise.diou_penalty`` with
    beta 1)."""
    ax1, ay1, ax2, ay2, _ = a
    bx1, by1, bx2, by2, _ = b
    zero, half = g.const(0.0), g.const(0.5)
    ew = g.op("Max", g.op("Sub", g.op("Max", ax2, bx2), g.op("Min", ax1, bx1)), zero)
    eh = g.op("Max", g.op("Sub", g.op("Max", ay2, by2), g.op("Min", ay1, by1)), zero)
    c2 = g.op("Add", g.op("Mul", ew, ew), g.op("Mul", eh, eh))
    dx = g.op("Sub", g.op("Mul", g.op("Add", ax1, ax2), half), g.op("Mul", g.op("Add", bx1, bx2), half))
    dy = g.op("Sub", g.op("Mul", g.op("Add", ay1, ay2), half), g.op("Mul", g.op("Add", by1, by2), half))
    d2 = g.op("Add", g.op("Mul", dx, dx), g.op("Mul", dy, dy))
    pos = g.op("Greater", c2, zero)
    return g.op("Where", pos, g.op("Div", d2, g.op("Where", pos, c2, g.const(1.0))), zero)


# --------------------------------------------------------------------------- hard NMS
@register_onnx_nms("nms")
def hard_nms(g: Graph, boxes: str, scores: str, spec: NmsSpec) -> tuple[str, str]:
    """Greedy NMS per class (or across classes) with ONNX ``NonMaxSuppression``."""
    top_b, top_s, top_l, k = _candidates(g, boxes, scores, spec)
    if spec.agnostic:
        per_class = g.unsqueeze(top_s, 1)  # [B, 1, K]
    else:
        c = g.dim(scores, 2)
        classes = g.op("Range", g.const(0, np.int64), g.squeeze(c, 0), g.const(1, np.int64))
        onehot = g.op("Equal", g.unsqueeze(top_l, 1), g.unsqueeze(classes, 0, 2))  # [B, C, K]
        per_class = g.op("Where", onehot, g.unsqueeze(top_s, 1), g.const(-1.0))
    sel = g.op("NonMaxSuppression", top_b, per_class, k, g.unsqueeze("iou_thr", 0),
               g.unsqueeze("score_thr", 0), center_point_box=0)  # [N, 3]: image, class, index
    b_idx, k_idx = g.col(sel, 0), g.col(sel, 2)
    bk = g.op("Concat", g.unsqueeze(b_idx, 1), g.unsqueeze(k_idx, 1), axis=1)
    rows = _rows(g, g.op("GatherND", top_b, bk), g.op("GatherND", top_s, bk), g.op("GatherND", top_l, bk))
    return _best_rows(g, rows, b_idx, g.col(rows, 4), g.dim(boxes, 0), spec)


# --------------------------------------------------------------------------- greedy loops
def _selection_loop(g: Graph, boxes: str, scores: str, spec: NmsSpec,
                    update: Callable[[Graph, str, tuple, tuple, str], str]) -> tuple[str, str]:
    """Up to ``max_det`` selections: each takes every image's best live candidate (ties: lower
    index), records it and lets ``update(body, live, box_columns, columns, hit)`` rewrite the live
    scores of the candidates ``hit`` (same image and class, still live). Only candidates above the
    threshold enter, and the loop stops once no image selects anything, so its cost follows the
    detections, not ``max_det``."""
    top_b, top_s, top_l, _ = _candidates(g, boxes, scores, spec)
    # only candidates above the threshold can be selected: keep the most any image has (>= 1)
    above = g.op("Greater", top_s, "score_thr")
    n_above = g.op("ReduceMax", g.op("ReduceSum", g.op("Cast", above, to=TensorProto.INT64), g.i64(1),
                                     keepdims=0), g.i64(0), keepdims=1)  # [1]
    n_keep = g.op("Max", n_above, g.i64(1))
    top_b = g.op("Slice", top_b, g.i64(0), n_keep, g.i64(1))
    top_s = g.op("Slice", top_s, g.i64(0), n_keep, g.i64(1))
    top_l = g.op("Slice", top_l, g.i64(0), n_keep, g.i64(1))
    live0 = g.op("Where", g.op("Greater", top_s, "score_thr"), top_s, g.const(-1.0))
    trips = g.squeeze(g.op("Min", n_keep, g.i64(spec.max_det)), 0)
    # loop invariants, computed once: the candidates' columns and areas, their positions
    cols = _columns(g, top_b)
    positions = g.unsqueeze(g.op("Range", g.const(0, np.int64), g.squeeze(n_keep, 0), g.const(1, np.int64)),
                            0)
    body = Graph(f"{g.prefix}/loop")
    it, cond_in, live = "loop/iter", "loop/cond_in", "loop/live"
    best_s, best_i = body.op("TopK", live, body.i64(1), axis=1, largest=1, sorted=1, n_out=2)  # [B, 1]
    valid = body.op("Greater", best_s, "score_thr")  # [B, 1]
    box = _columns(body, body.op("GatherND", top_b, body.unsqueeze(best_i, 2), batch_dims=1))  # [B, 1] each
    hit = body.op("And", body.op("Greater", live, "score_thr"), valid)  # the chosen one is reset below
    if not spec.agnostic:
        hit = body.op("And", hit, body.op("Equal", top_l, body.op("GatherElements", top_l, best_i, axis=1)))
    after = update(body, live, box, cols, hit)
    live_out = body.op("Where", body.op("Equal", positions, best_i), body.const(-1.0), after)
    cond_out = body.op("Cast", body.op("ReduceMax", body.op("Cast", valid, to=TensorProto.INT64), keepdims=0),
                       to=TensorProto.BOOL)  # stop once no image selected anything
    index_out = body.op("Identity", best_i)
    score_out = body.op("Where", valid, best_s, body.const(-1.0))
    graph = helper.make_graph(
        body.nodes, "selection",
        [helper.make_tensor_value_info(it, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
         helper.make_tensor_value_info(live, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(live_out, TensorProto.FLOAT, None),
         helper.make_tensor_value_info(index_out, TensorProto.INT64, None),
         helper.make_tensor_value_info(score_out, TensorProto.FLOAT, None)])
    _, picks, picked = g.op("Loop", trips, g.const(True, np.bool_), live0, body=graph, n_out=3)
    idx = g.op("Transpose", g.squeeze(picks, 2), perm=[1, 0])  # [B, T] in selection order
    sel_s = g.op("Transpose", g.squeeze(picked, 2), perm=[1, 0])  # decayed score at selection, -1: none
    rows = _rows(g, g.op("GatherND", top_b, g.unsqueeze(idx, 2), batch_dims=1), sel_s,
                 g.op("GatherElements", top_l, idx, axis=1))
    return _pad_rows(g, rows, g.op("Greater", sel_s, g.const(-0.5)), spec)


@register_onnx_nms("soft_nms_gaussian", inputs=("sigma",), default_sigma=0.5)
def soft_nms_gaussian(g: Graph, boxes: str, scores: str, spec: NmsSpec) -> tuple[str, str]:
    """Gaussian soft-NMS: ``s *= exp(-iou² / sigma)`` for every live candidate of the class."""

    def update(b: Graph, live: str, box: tuple, cols: tuple, hit: str) -> str:
        iou = _iou_with(b, box, cols)
        decay = b.op("Exp", b.op("Div", b.op("Neg", b.op("Mul", iou, iou)), "sigma"))
        hit = b.op("And", hit, b.op("Greater", iou, b.const(0.0)))
        return b.op("Where", hit, b.op("Mul", live, decay), live)

    return _selection_loop(g, boxes, scores, spec, update)


@register_onnx_nms("soft_nms_linear")
def soft_nms_linear(g: Graph, boxes: str, scores: str, spec: NmsSpec) -> tuple[str, str]:
    """Linear soft-NMS: ``s *= 1 - iou`` where ``iou > iou_thr``."""

    def update(b: Graph, live: str, box: tuple, cols: tuple, hit: str) -> str:
        iou = _iou_with(b, box, cols)
        over = b.op("Greater", iou, "iou_thr")
        hit = b.op("And", b.op("And", hit, b.op("Greater", iou, b.const(0.0))), over)
        return b.op("Where", hit, b.op("Mul", live, b.op("Sub", b.const(1.0), iou)), live)

    return _selection_loop(g, boxes, scores, spec, update)


@register_onnx_nms("diou_nms")
def diou_nms(g: Graph, boxes: str, scores: str, spec: NmsSpec) -> tuple[str, str]:
    """DIoU-NMS: drop a candidate when ``IoU - d²/c² > iou_thr`` with a kept one of its class."""

    def update(b: Graph, live: str, box: tuple, cols: tuple, hit: str) -> str:
        iou = _iou_with(b, box, cols)
        crit = b.op("Sub", iou, _diou_penalty_with(b, box, cols))
        over = b.op("Greater", iou, "iou_thr")
        drop = b.op("And", b.op("And", hit, over), b.op("Greater", crit, "iou_thr"))
        return b.op("Where", drop, b.const(-1.0), live)

    return _selection_loop(g, boxes, scores, spec, update)


@register_onnx_nms("matrix_nms", inputs=("sigma",), default_sigma=2.0)
def matrix_nms(g: Graph, boxes: str, scores: str, spec: NmsSpec) -> tuple[str, str]:
    """Matrix NMS (gaussian), its closed form on the candidates above ``score_thr``:
    ``decay_j = min(1, min_i exp(-σ·iou_ij²) / exp(-σ·comp_i²))`` over higher-ranked intersecting
    candidates i of the class, ``comp_i`` the largest IoU of i with one above it."""
    top_b, top_s, top_l, _, top_i = _candidates(g, boxes, scores, spec, with_index=True)
    above = g.op("Greater", top_s, "score_thr")
    n_max = g.op("ReduceMax", g.op("ReduceSum", g.op("Cast", above, to=TensorProto.INT64), g.i64(1),
                                   keepdims=0), g.i64(0), keepdims=1)  # [1]
    top_b = g.op("Slice", top_b, g.i64(0), n_max, g.i64(1))
    top_s = g.op("Slice", top_s, g.i64(0), n_max, g.i64(1))
    top_l = g.op("Slice", top_l, g.i64(0), n_max, g.i64(1))
    iou = _iou_with(g, _columns(g, g.unsqueeze(top_b, 2)), _columns(g, g.unsqueeze(top_b, 1)))  # [B, K, K]
    rank = g.op("Range", g.const(0, np.int64), g.squeeze(n_max, 0), g.const(1, np.int64))
    mask = g.op("And", g.op("Less", g.unsqueeze(rank, 1), g.unsqueeze(rank, 0)),
                g.op("Greater", iou, g.const(0.0)))
    if not spec.agnostic:
        mask = g.op("And", mask, g.op("Equal", g.unsqueeze(top_l, 2), g.unsqueeze(top_l, 1)))
    comp = g.op("ReduceMax", g.op("Where", mask, iou, g.const(0.0)), g.i64(1), keepdims=0)  # [B, K]
    ci = g.unsqueeze(comp, 2)  # [B, K, 1]: comp of row i
    num = g.op("Exp", g.op("Neg", g.op("Mul", "sigma", g.op("Mul", iou, iou))))
    den = g.op("Exp", g.op("Neg", g.op("Mul", "sigma", g.op("Mul", ci, ci))))
    ratio = g.op("Where", mask, g.op("Div", num, den), g.const(1.0))
    decay = g.op("Min", g.op("ReduceMin", ratio, g.i64(1), keepdims=0), g.const(1.0))
    new = g.op("Mul", top_s, decay)
    keep = g.op("And", g.op("Slice", above, g.i64(0), n_max, g.i64(1)), g.op("Greater", new, "score_thr"))
    ranked = g.op("Where", keep, new, g.const(-1.0))
    # the final order breaks ties by location (a stable sort of the candidates in input order,
    # as postprocess does), not by the score rank the decay needs
    anchor = g.op("Slice", top_i, g.i64(0), n_max, g.i64(1))
    _, by_anchor = g.op("TopK", anchor, n_max, axis=1, largest=0, sorted=1, n_out=2)
    k = g.op("Min", n_max, g.i64(spec.max_det))
    vals, pos = g.op("TopK", g.op("GatherElements", ranked, by_anchor, axis=1), k, axis=1, largest=1,
                     sorted=1, n_out=2)
    idx = g.op("GatherElements", by_anchor, pos, axis=1)
    rows = _rows(g, g.op("GatherND", top_b, g.unsqueeze(idx, 2), batch_dims=1), vals,
                 g.op("GatherElements", top_l, idx, axis=1))
    return _pad_rows(g, rows, g.op("Greater", vals, g.const(-0.5)), spec)


# --------------------------------------------------------------------------- graph assembly
def threshold_inputs(name: str, score_thr: float = SCORE_THRESHOLD, iou_thr: float = IOU_THRESHOLD,
                     sigma: float | None = None) -> dict[str, float]:
    """The threshold inputs of method ``name`` with their defaults."""
    m = ONNX_NMS.get(name, "nms")
    values = {"score_thr": float(score_thr)}
    for key in m.inputs:
        if key == "iou_thr":
            values[key] = float(iou_thr)
        else:
            values[key] = float(m.default_sigma if sigma is None else sigma)
    return values


def nms_model(name: str, num_classes: int | None = None, spec: NmsSpec = NmsSpec(),
              opset: int = OPSET, **thresholds: float) -> onnx.ModelProto:
    """A model ``(boxes [B, A, 4], scores [B, A, C]) -> (detections, num_detections)`` running
    method ``name``; thresholds (``score_thr``, ``iou_thr``, ``sigma``) are inputs whose defaults
    are the given values (see :func:`threshold_inputs`)."""
    m = ONNX_NMS.get(name, "nms")
    defaults = threshold_inputs(name, **thresholds)
    g = Graph("nms")
    dets, num = m.build(g, "boxes", "scores", spec)
    dets = g.op("Identity", dets)
    num = g.op("Identity", num)
    g.nodes[-2].output[0] = "detections"
    g.nodes[-1].output[0] = "num_detections"
    c = num_classes if num_classes is not None else "classes"
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", "anchors", 4]),
              helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "anchors", c])]
    inits = []
    for key, value in defaults.items():
        inputs.append(helper.make_tensor_value_info(key, TensorProto.FLOAT, []))
        inits.append(onnx.numpy_helper.from_array(np.asarray(value, np.float32), key))
    outputs = [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch", spec.max_det, 6]),
               helper.make_tensor_value_info("num_detections", TensorProto.INT64, ["batch"])]
    graph = helper.make_graph(g.nodes, f"detopt-{name}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="detopt")
    model.ir_version = min(model.ir_version, 10)
    return model

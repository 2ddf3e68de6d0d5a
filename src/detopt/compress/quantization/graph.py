"""Static INT8 quantization of an exported detector network with ONNX Runtime's quantizer.

The graph quantized is :func:`detopt.export.onnx_export.export_network`'s (``images -> boxes,
scores``). Only the *network* is quantized: the ``Conv``, ``Sigmoid`` and ``Mul`` nodes (convolutions and
their SiLU, :data:`QUANTIZED_OPS`) among every ``Conv`` and every node a ``Conv`` depends on
(backbone, neck, head branches). The box decode after the last convolutions (DFL softmax and
expectation, anchor arithmetic, the class sigmoid) stays float, and so does the post-processing
graph appended afterwards, as the careful peers do (NNCF's ignored scope for YOLOv8).

Format: QDQ (``QuantizeLinear``/``DequantizeLinear`` pairs that ONNX Runtime fuses into integer
kernels), weights int8 per output channel (or per tensor), activations uint8 with a zero point
(the u8 x s8 pair that VNNI multiplies). Activation ranges come from calibration images once
(``calibration_cache``) and are reused for every variant: full INT8, one layer alone (the
sensitivity), and INT8 with some layers kept float.

A *layer* is one convolution and the SiLU that follows it (``Sigmoid`` + ``Mul`` on its output),
named by the torch module the exporter recorded (``backbone.stage2.cv1``).
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from detopt.errors import DetoptInputError
from detopt.registry import Registry

#: Calibration methods: how an activation's range is chosen from the calibration images.
CALIBRATORS: Registry = Registry("calibrator")


def _ort_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return getattr(CalibrationMethod, name)


CALIBRATORS.add("minmax", lambda: _ort_method("MinMax"))
CALIBRATORS.add("entropy", lambda: _ort_method("Entropy"))
CALIBRATORS.add("percentile", lambda: _ort_method("Percentile"))

#: Operator types quantized inside the network: convolutions and their SiLU (Sigmoid, Mul), which
#: ONNX Runtime runs as integer kernels. Quantizing Concat, Add, Split, MaxPool and Resize as well
#: measured no faster (Concat slower: 12.2 vs 9.3 ms for yolo-n at 320 px, 2 threads) and adds
#: rounding; they run float between dequantize and quantize.
QUANTIZED_OPS = ("Conv", "Mul", "Sigmoid")

#: What marks a graph detopt quantized (metadata key), so it is never quantized twice.
QUANTIZED_KEY = "quantization"


@dataclass(frozen=True)
class Layer:
    """One quantizable layer: ``name`` (torch module path), ``conv`` (the ONNX node's name) and
    ``nodes`` (the conv and its activation nodes: what is kept float together)."""

    name: str
    conv: str
    nodes: tuple[str, ...]


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def network_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes to quantize: every ``Conv`` and every node upstream of one, in graph
    order (what runs after the last convolutions -- the decode -- is left out)."""
    prod = _producers(model.graph)
    seen: set[str] = set()
    stack = [n for n in model.graph.node if n.op_type == "Conv"]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(prod[i] for i in n.input if i in prod)
    return [n.name for n in model.graph.node if n.name in seen]


def _module_name(node: onnx.NodeProto) -> str | None:
    """The torch module a node came from (``head.cls.2.1``), from the exporter's name scopes."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(p.value) if s]
            except (ValueError, SyntaxError):
                return None
            modules = [s for s in scopes[:-1] if s.startswith("model")]
            if not modules:
                return None
            name = modules[-1].removeprefix("model.").removeprefix("model")
            for suffix in (".bn", ".conv"):
                name = name.removesuffix(suffix)
            return name or None
    return None


def conv_layers(model: onnx.ModelProto) -> list[Layer]:
    """The network's layers in graph order (see the module docstring). Names come from the
    exporter's metadata; a node without it is named by its ONNX name."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    layers, used = [], set()
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        nodes = [n.name]
        users = consumers.get(n.output[0], [])
        sig = [u for u in users if u.op_type == "Sigmoid"]
        if sig:
            mul = [u for u in users if u.op_type == "Mul" and sig[0].output[0] in u.input]
            if mul:
                nodes += [sig[0].name, mul[0].name]
        name = _module_name(n) or n.name
        while name in used:  # two convolutions in one module: number them
            name += "'"
        used.add(name)
        layers.append(Layer(name, n.name, tuple(nodes)))
    return layers


def is_quantized(model: onnx.ModelProto) -> bool:
    """True for a graph with quantization nodes or detopt's quantization metadata."""
    if any(p.key == QUANTIZED_KEY for p in model.metadata_props):
        return True
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger")
               for n in model.graph.node)


class ArrayReader:
    """ONNX Runtime's calibration reader over ``images: float32 [N, 3, H, W]``, one image a call."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self._it: Iterator[int] = iter(range(len(images)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        i = next(self._it, None)
        return None if i is None else {"images": self.images[i : i + 1]}

    def rewind(self) -> None:
        self._it = iter(range(len(self.images)))

    def __len__(self) -> int:
        return len(self.images)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice and progress to the root logger and stdout."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


class GraphQuantizer:
    """Quantizes one network graph in its variants with ranges calibrated once.

    Args:
        net: the float network (``images -> boxes, scores``), from ``export_network``.
        images: calibration images, ``float32 [N, 3, H, W]`` in ``[0, 1]`` (letterboxed).
        calibrator: a name of :data:`CALIBRATORS`.
        per_channel: int8 weights per output channel (else per tensor).
        workdir: where the prepared model and the calibration cache live (default: a temporary
            folder removed with this object).
    """

    def __init__(self, net: onnx.ModelProto, images: np.ndarray, calibrator: str = "minmax",
                 per_channel: bool = True, workdir: str | Path | None = None) -> None:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if is_quantized(net):
            raise DetoptInputError("the network is already quantized: quantize the float weights")
        CALIBRATORS.check(calibrator, "calibrator")
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.float32:
            raise DetoptInputError(f"calibration images must be float32 [N, 3, H, W], got "
                                   f"{images.dtype} {list(images.shape)}")
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="detopt-quant-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.calibrator = calibrator
        self.per_channel = per_channel
        self.images = images
        self.layers = conv_layers(net)
        self.nodes = network_nodes(net)
        src = self.workdir / "float.onnx"
        onnx.save(net, str(src))
        self.prepared = self.workdir / "prepared.onnx"
        with _quiet():
            # shape inference only: graph optimizations would add ORT-only fused operators
            quant_pre_process(str(src), str(self.prepared), skip_optimization=True, skip_symbolic_shape=True)
        self.cache = self.workdir / f"calibration-{calibrator}.json"
        self._count = 0

    def quantize(self, keep_float: Sequence[str] = (), only: Sequence[str] | None = None) -> onnx.ModelProto:
        """The network with every layer INT8 except ``keep_float`` (layer names), or with only the
        layers ``only`` INT8 (everything else float, even where it reads the same tensor).
        Returns the QDQ model."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        by_name = {layer.name: layer for layer in self.layers}
        unknown = [n for n in [*keep_float, *(only or [])] if n not in by_name]
        if unknown:
            raise DetoptInputError(f"unknown layer(s) {unknown[:3]}; layers: {list(by_name)[:8]} ...")
        if only is not None:
            include = [n for name in only for n in by_name[name].nodes]
            exclude: list[str] = []
        else:
            include = list(self.nodes)
            exclude = [n for name in keep_float for n in by_name[name].nodes]
        self._count += 1
        out = self.workdir / f"int8-{self._count}.onnx"
        with _quiet():
            quantize_static(
                str(self.prepared), str(out), ArrayReader(self.images),
                quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_quantize=include, nodes_to_exclude=exclude, op_types_to_quantize=list(QUANTIZED_OPS),
                calibrate_method=CALIBRATORS.get(self.calibrator, "calibrator")(),
                calibration_cache_path=str(self.cache),
            )
        model = onnx.load(str(out))
        out.unlink()
        if only is not None:
            _float_for_the_rest(model, set(include), set(self.nodes))
        return model

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _float_for_the_rest(model: onnx.ModelProto, quantized: set[str], network: set[str]) -> None:
    """Network nodes outside ``quantized`` read the float tensor again where the quantizer gave
    them the dequantized copy made for a quantized neighbour (ONNX Runtime shares one Q/DQ pair
    between every reader of a tensor). So a layer quantized alone is its int8 weights, the uint8
    activations it reads and, for a last convolution, its output as the float decode reads it
    in full INT8 -- each activation counted once over all layers."""
    prod = _producers(model.graph)
    inits = {i.name for i in model.graph.initializer}
    float_of: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in prod:
            q = prod[n.input[0]]
            if q.op_type == "QuantizeLinear" and q.input[0] not in inits:
                float_of[n.output[0]] = q.input[0]
    for n in model.graph.node:
        if n.name in quantized or n.name not in network:
            continue
        n.input[:] = [float_of.get(i, i) for i in n.input]


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(Σ ref² / Σ (ref - approx)²)`` in dB
    (``inf`` when identical)."""
    ref = np.asarray(reference, np.float64)
    err = float(np.sum((ref - np.asarray(approx, np.float64)) ** 2))
    sig = float(np.sum(ref**2))
    if err == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(sig, 1e-300) / err)

"""Quantization-aware fine-tuning: BatchNorm folding exact, the simulated rounding equal to ONNX
Runtime's INT8 (weights and activations), every calibrator. (QAT through the trainer to an INT8
file: the pipeline run of test_quantization.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from detopt.compress.quantization.graph import GraphQuantizer
from detopt.compress.quantization.qat import (
    FakeQuantConv2d,
    _act_qparams,
    fake_quant_activation,
    fake_quant_weight,
    fold_batchnorm,
    layer_name,
    prepare_qat,
    strip_qat,
)
from detopt.errors import DetoptInputError
from detopt.models import create_model
from tests.compress.helpers import randomize_bn
from tests.hyp import examples


def test_folding_batchnorm_keeps_the_eval_outputs():
    torch.manual_seed(0)
    model = create_model("yolo-p", num_classes=3).eval()
    randomize_bn(model, 1)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def _one_conv_graph(weight: np.ndarray) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    c_out, c_in = weight.shape[:2]
    node = helper.make_node("Conv", ["images", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", c_in, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c_out, 8, 8])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _quantized_conv(w: np.ndarray, x: np.ndarray, **options):
    """The one-conv graph quantized by GraphQuantizer -> (initializers, producer of each tensor, conv)."""
    gq = GraphQuantizer(_one_conv_graph(w), x, **options)
    try:
        q = gq.quantize()
    finally:
        gq.close()
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    by_out = {n.output[0]: n for n in q.graph.node}
    return inits, by_out, next(n for n in q.graph.node if n.op_type == "Conv")


@settings(max_examples=examples(6), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lo=st.floats(-3.0, 0.5), width=st.floats(0.5, 6.0))
def test_simulated_rounding_is_onnxruntimes(seed, lo, width):
    """The int8 weights ORT writes (dequantized) equal ``fake_quant_weight``; the input's uint8
    scale / zero point ORT computes from the calibration range equal ``_act_qparams``."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(4, 3, 3, 3)) * rng.uniform(0.01, 2, size=(4, 1, 1, 1))).astype(np.float32)
    x = rng.uniform(lo, lo + width, size=(4, 3, 8, 8)).astype(np.float32)
    inits, by_out, conv = _quantized_conv(w, x)
    wdq = by_out[conv.input[1]]
    wq, ws = inits[wdq.input[0]], inits[wdq.input[1]]
    ort_w = wq.astype(np.float32) * ws.reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(fake_quant_weight(torch.from_numpy(w)).numpy(), ort_w, rtol=0, atol=1e-6)
    xdq = by_out[conv.input[0]]
    xs, xz = float(inits[xdq.input[1]]), int(inits[xdq.input[2]])
    scale, zero = _act_qparams(torch.tensor([x.min(), x.max()]))
    assert float(scale) == pytest.approx(xs, rel=1e-6)
    assert int(zero) == xz
    # and the activation rounding itself: ORT's QuantizeLinear -> DequantizeLinear
    t = torch.from_numpy(x)
    ours = fake_quant_activation(t, torch.tensor([x.min(), x.max()])).numpy()
    ref = (np.clip(np.round(x / xs) + xz, 0, 255) - xz) * xs  # ONNX QuantizeLinear: round half to even
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_prepare_and_strip(float_weights_tiny):
    model, calib = float_weights_tiny
    qat = prepare_qat(model, calib[:4])
    mods = [m for m in qat.modules() if isinstance(m, FakeQuantConv2d)]
    assert len(mods) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert all(torch.isfinite(m.in_range).all() and m.in_range[0] <= m.in_range[1] for m in mods)
    plain = strip_qat(qat)
    assert not any(isinstance(m, FakeQuantConv2d) for m in plain.modules())
    x = torch.from_numpy(calib[:2])
    with torch.no_grad():
        a, b = model.eval()(x), plain(x)
    for u, v in zip(a, b, strict=True):  # stripping gives the folded float network back
        torch.testing.assert_close(v, u, atol=1e-3, rtol=1e-3)


def test_layers_kept_float_are_not_simulated(float_weights_tiny):
    """The names QAT keeps float are the INT8 graph's layer names (exporter metadata), and those
    convolutions stay plain float ones; an unknown name is one line."""
    from detopt.compress.quantization.graph import conv_layers
    from detopt.export.onnx_export import export_network

    model, calib = float_weights_tiny
    graph_names = {layer.name for layer in conv_layers(export_network(model, 128))}
    torch_names = {layer_name(n) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert graph_names == torch_names
    keep = ["backbone.stem", "head.cls.0.2"]
    qat = prepare_qat(model, calib[:4], keep_float=keep)
    for name in keep:
        conv = qat.get_submodule(name + ".conv" if name == "backbone.stem" else name)
        assert type(conv) is nn.Conv2d
    fq = [m for m in qat.modules() if isinstance(m, FakeQuantConv2d)]
    assert len(fq) == len(torch_names) - 2
    with pytest.raises(DetoptInputError, match="unknown layer"):
        prepare_qat(model, calib[:4], keep_float=["backbone.nope"])


@pytest.fixture(scope="module")
def float_weights_tiny(tiny_run, synth_dir):
    from detopt.data.dataset import dataset_from_source
    from detopt.inference import load_weights

    w = load_weights(tiny_run / "last.pt")
    ds, _ = dataset_from_source(synth_dir / "data.yaml", "train", 128)
    calib = np.stack([ds[i]["image"].numpy() for i in range(8)]).astype(np.float32) / 255
    return w.model, calib


@pytest.mark.parametrize(("calibrator", "per_channel"), [("entropy", True), ("percentile", True),
                                                         ("minmax", False)])
def test_every_calibrator_and_per_tensor_weights(calibrator, per_channel):
    """Each registered range method calibrates; per-tensor weights get one scale; the rounding of
    the weights is the closed form for that scale."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    x = rng.uniform(-1, 2, size=(8, 3, 8, 8)).astype(np.float32)
    inits, by_out, conv = _quantized_conv(w, x, calibrator=calibrator, per_channel=per_channel)
    wdq = by_out[conv.input[1]]
    scale = inits[wdq.input[1]]
    assert scale.shape == ((4,) if per_channel else ())
    expected = np.abs(w).reshape(4, -1).max(1) / 127 if per_channel else np.abs(w).max() / 127
    np.testing.assert_allclose(scale, expected, rtol=1e-6)
    xdq = by_out[conv.input[0]]
    xs = float(inits[xdq.input[1]])
    assert 0 < xs <= (x.max() - min(x.min(), 0)) / 255 * (1 + 1e-6)  # within the min / max range

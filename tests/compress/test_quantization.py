"""INT8 post-training quantization: the graph quantized as claimed (integer weights per channel,
the decode and post-processing float), outputs close to FP32 on real images, the keep-float
search, the report, the command line, and bad input in one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.cli import main
from detopt.compress import quantize
from detopt.compress.quantization import GraphQuantizer, conv_layers, is_quantized, layer_sensitivity, sqnr_db
from detopt.compress.quantization.graph import network_nodes
from detopt.compress.quantization.sensitivity import run_network
from detopt.config import QuantizeConfig, build_config
from detopt.data.dataset import dataset_from_source
from detopt.errors import DetoptInputError
from detopt.export.onnx_export import export_network
from detopt.inference import load_weights
from tests.hyp import examples


@pytest.fixture(scope="module")
def float_net(tiny_run, synth_dir):
    w = load_weights(tiny_run / "last.pt")
    net = export_network(w.model, 128, dynamic_batch=True)
    ds, _ = dataset_from_source(synth_dir / "data.yaml", "val", 128)
    val = np.stack([ds[i]["image"].numpy() for i in range(len(ds))]).astype(np.float32) / 255
    tr, _ = dataset_from_source(synth_dir / "data.yaml", "train", 128)
    calib = np.stack([tr[i]["image"].numpy() for i in range(16)]).astype(np.float32) / 255
    return w, net, calib, val


@pytest.fixture(scope="module")
def quantizer(float_net):
    _, net, calib, _ = float_net
    gq = GraphQuantizer(net, calib)
    yield gq
    gq.close()


def _producer(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


# ------------------------------------------------------------------ closed forms
@settings(max_examples=examples(30), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), noise=st.floats(1e-4, 1.0))
def test_sqnr_is_the_closed_form(seed, noise):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    e = rng.normal(size=200) * noise
    expected = 10 * np.log10(np.sum(x**2) / np.sum(e**2))
    assert sqnr_db(x, x + e) == pytest.approx(expected, rel=1e-12)
    assert sqnr_db(x, x) == float("inf")


# ------------------------------------------------------------------ the graph
def test_layers_are_the_models_convolutions(float_net):
    w, net, _, _ = float_net
    layers = conv_layers(net)
    convs = [m for m in w.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(layers) == len(convs)
    assert len({la.name for la in layers}) == len(layers)
    for la in layers:  # each name is the torch module of that convolution (conv or its ConvBNAct)
        mod = w.model.get_submodule(la.name)
        assert isinstance(mod, torch.nn.Conv2d) or any(isinstance(c, torch.nn.Conv2d) for c in mod.children())
    # the decode after the last convolutions is not part of the network to quantize
    kinds = {n.op_type for n in net.graph.node if n.name not in set(network_nodes(net))}
    assert "Softmax" in kinds and "Conv" not in kinds


def test_full_int8_quantizes_every_conv_per_channel_and_leaves_the_decode_float(quantizer, float_net):
    _, net, _, _ = float_net
    q = quantizer.quantize()
    assert is_quantized(q) and not is_quantized(net)
    prod = _producer(q)
    inits = {i.name: i for i in q.graph.initializer}
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert len(convs) == len(quantizer.layers)
    for c in convs:
        wdq = prod[c.input[1]]
        assert wdq.op_type == "DequantizeLinear"  # int8 weights, dequantized into the conv
        wq = inits[wdq.input[0]]
        assert wq.data_type == onnx.TensorProto.INT8
        scale = onnx.numpy_helper.to_array(inits[wdq.input[1]])
        assert scale.shape == (wq.dims[0],)  # one scale per output channel
        assert prod[c.input[0]].op_type == "DequantizeLinear"  # uint8 activations
    # no float op of the decode reads a quantized tensor it produced itself
    decode = {n.name for n in q.graph.node} - set(network_nodes(q)) - {
        n.name for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    for n in q.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in prod:
            assert prod[n.input[0]].name not in decode or prod[n.input[0]].op_type == "Conv"
    for n in q.graph.node:
        if n.op_type in ("Softmax", "MatMul"):
            assert all(prod[i].op_type != "DequantizeLinear" for i in n.input if i in prod)


def test_int8_outputs_agree_with_fp32_on_real_images(quantizer, float_net):
    """Validation images (not calibration ones): boxes within 30 dB SQNR, class scores 20 dB
    (a uint8 activation has ~48 dB of range; errors add up over ~60 layers)."""
    _, net, _, val = float_net
    ref = run_network(net, val, 1)
    got = run_network(quantizer.quantize(), val, 1)
    assert sqnr_db(ref["boxes"], got["boxes"]) > 30
    assert sqnr_db(ref["scores"], got["scores"]) > 20


def test_kept_layers_stay_float_and_only_quantizes_one(quantizer):
    keep = [quantizer.layers[0].name, quantizer.layers[-1].name]
    q = quantizer.quantize(keep_float=keep)
    prod = _producer(q)
    by_conv = {n.name: n for n in q.graph.node if n.op_type == "Conv"}
    for la in quantizer.layers:
        c = by_conv[la.conv]
        float_weights = c.input[1] not in prod  # an initializer read directly
        assert float_weights == (la.name in keep)
    one = quantizer.quantize(only=[quantizer.layers[3].name])
    prod = _producer(one)
    quantized = [n for n in one.graph.node if n.op_type == "Conv" and n.input[1] in prod]
    assert [c.name for c in quantized] == [quantizer.layers[3].conv]
    with pytest.raises(DetoptInputError, match="unknown layer"):
        quantizer.quantize(keep_float=["no.such.layer"])


def test_sensitivity_touches_only_the_branch_of_the_layer(quantizer, float_net):
    """A class-branch convolution quantized alone cannot change the boxes (SQNR inf), a box-branch
    one cannot change the scores; the list is sorted most sensitive first."""
    _, _, _, val = float_net
    errs = layer_sensitivity(quantizer, val[:4], 1)
    assert sorted(e.layer for e in errs) == sorted(la.name for la in quantizer.layers)
    assert [e.worst_db for e in errs] == sorted(e.worst_db for e in errs)
    cls = [e for e in errs if e.layer.startswith("head.cls")]
    box = [e for e in errs if e.layer.startswith("head.box")]
    assert cls and box
    assert all(e.boxes_db == float("inf") and np.isfinite(e.scores_db) for e in cls)
    assert all(e.scores_db == float("inf") and np.isfinite(e.boxes_db) for e in box)


# ------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def report(tiny_run, synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant")
    lines: list[str] = []
    result = quantize({"weights": str(tiny_run / "last.pt"), "data": str(synth_dir / "data.yaml"),
                       "out": str(out), "calib": 16, "search_images": 8, "target_drop": 0.0, "max_kept": 2,
                       "threads": 1, "method": "qat", "epochs": 1, "workers": 0, "batch": 8},
                      on_progress=lines.append)
    return out, result, lines


def test_search_stops_at_the_target_or_the_budget(report):
    _, r, lines = report
    steps = r.search
    assert steps[0].kept_float == []
    for i, s in enumerate(steps[1:], 1):
        assert s.kept_float == [e.layer for e in r.sensitivity[:i]]  # most sensitive first, one by one
    assert all(s.drop > 0.0 for s in steps[:-1])  # it went on only while above the target
    assert steps[-1].drop <= 0.0 or len(steps) - 1 == 2
    assert r.target_reached == any(s.drop <= 0.0 for s in steps)
    assert any("search images" in x for x in lines)


def test_the_report_and_the_int8_file(report, synth_dir, capsys):
    out, r, _ = report
    doc = json.loads((out / "report.json").read_text())
    names = [v["name"] for v in doc["variants"]]
    assert names[:3] == ["FP32", "FP32", "INT8 PTQ"]
    assert [v["backend"] for v in doc["variants"][:2]] == ["torch eager", "onnxruntime"]
    for v in doc["variants"]:
        assert 0 <= v["map"] <= 1 and v["p50_ms"] > 0 and v["p90_ms"] >= v["p50_ms"]
    fp32 = doc["variants"][1]["size_mb"]
    int8 = [v["size_mb"] for v in doc["variants"] if v["name"].startswith("INT8")]
    assert len(int8) >= 2 and max(int8) < 0.4 * fp32  # int8 weights: a quarter of the float file + graph
    md = (out / "report.md").read_text()
    assert "| INT8 PTQ |" in md and "Keep-float search" in md
    assert (out / "tradeoff.png").stat().st_size > 0
    proto = onnx.load(str(r.model_path))
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    # QAT keeps float what the PTQ search kept float (neither simulated nor quantized)
    assert meta["quantization"]["method"] == "qat" and meta["quantization"]["kept_float"] == r.search_kept
    assert r.kept_float == r.search_kept
    assert meta["nms"] == "nms"
    # QAT: it ran through the trainer, and the report separates its INT8 cost from its training
    assert (out / "work/qat/last.pt").is_file()
    qat_name = "INT8 QAT" + (f", {len(r.search_kept)} layer(s) float" if r.search_kept else "")
    assert names[-2:] == ["FP32 after QAT fine-tuning", qat_name]
    assert "QAT trains the weights further" in md
    # the PTQ file with the kept float layers is the search's choice
    ptq = onnx.load(str(out / "work/model-int8.onnx"))
    ptq_meta = {p.key: json.loads(p.value) for p in ptq.metadata_props}
    assert ptq_meta["quantization"]["kept_float"] == r.search_kept
    # `detopt val` runs the INT8 file: the same mAP the report states
    assert main(["val", "--weights", str(r.model_path), "--data", str(synth_dir / "data.yaml"),
                 "--batch", "4"]) == 0
    text = capsys.readouterr().out
    stated = doc["variants"][-1]["map"]
    assert f"{stated:.3f}" in text


# ------------------------------------------------------------------ bad input
def test_bad_input_gets_one_line(tiny_run, synth_dir, tmp_path, capsys, report):
    data = str(synth_dir / "data.yaml")
    base = ["quantize", "--weights", str(tiny_run / "last.pt"), "--data", data, "--out", str(tmp_path / "q")]
    assert main([*base, "--calib", "5000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training split has 40 images" in err[0] and "--calib 5000" in err[0]
    # weights already quantized
    _, r, _ = report
    again = ["quantize", "--weights", str(r.model_path), "--data", data, "--out", str(tmp_path / "r")]
    assert main(again) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already quantized" in err[0]
    # a data set whose classes differ from the weights'
    other = tmp_path / "other.yaml"
    text = (synth_dir / "data.yaml").read_text().replace("disc", "plate")
    other.write_text(f"path: {synth_dir}\n" + text)  # the copy elsewhere points at the data
    assert main([*base[:3], "--data", str(other), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ from the weights'" in err[0]
    with pytest.raises(DetoptInputError, match=r"calibrator.*minmax"):
        build_config(QuantizeConfig, {"weights": "w", "data": "d", "out": "o", "calibrator": "minmx"})

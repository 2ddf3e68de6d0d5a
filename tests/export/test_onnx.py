"""ONNX export with post-processing inside the graph, checked against detopt's own
post-processing (an independent implementation: numba kernels), run by ONNX Runtime."""

from __future__ import annotations

import json
import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.cli import main
from detopt.data.dataset import dataset_from_source, make_loader
from detopt.engine.validate import evaluate_detector
from detopt.errors import DetoptInputError
from detopt.export.onnx_export import export_network, export_onnx, with_postprocess
from detopt.export.onnx_nms import ONNX_NMS, NmsSpec, nms_model
from detopt.inference import default_postprocessor, load_weights
from detopt.inference.onnx_model import OnnxDetector
from detopt.ops.postprocess import postprocess
from tests.hyp import examples

METHODS = list(ONNX_NMS.names())


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _reference(boxes, scores, method, agnostic, max_det, **thr):
    """detopt's postprocess of each image's best-class candidates -> rows [K, 6]."""
    out = []
    for b, s in zip(boxes, scores, strict=True):
        best, lab = s.max(-1), s.argmax(-1)
        d = postprocess(torch.from_numpy(b), torch.from_numpy(best), torch.from_numpy(lab), method=method,
                        agnostic=agnostic, max_det=max_det, **thr)
        out.append(np.concatenate([d.boxes.numpy(), d.scores.numpy()[:, None],
                                   d.labels.numpy()[:, None].astype(np.float32)], 1))
    return out


def _assert_rows_equal(dets, num, refs, box_tol=1e-3, score_tol=1e-5):
    for d, n, ref in zip(dets, num, refs, strict=True):
        assert int(n) == len(ref)
        got = d[: int(n)]
        assert np.all(d[int(n):] == 0)  # padded rows are zeros
        np.testing.assert_allclose(got[:, :4], ref[:, :4], atol=box_tol, rtol=0)
        np.testing.assert_allclose(got[:, 4], ref[:, 4], atol=score_tol, rtol=0)
        assert np.array_equal(got[:, 5], ref[:, 5])


# ------------------------------------------------------------------ the graphs alone
@settings(max_examples=examples(12), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), method=st.sampled_from(METHODS), agnostic=st.booleans(),
       n=st.integers(1, 300), score_thr=st.sampled_from([0.0, 0.05, 0.3]),
       iou_thr=st.sampled_from([0.3, 0.5, 0.7]), ties=st.booleans())
def test_each_graph_equals_postprocess_on_random_candidates(seed, method, agnostic, n, score_thr, iou_thr,
                                                            ties):
    rng = np.random.default_rng(seed)
    b, c = 2, 3
    ctr = rng.uniform(0, 200, (b, n, 2))
    wh = rng.uniform(2, 60, (b, n, 2))
    boxes = np.concatenate([ctr - wh / 2, ctr + wh / 2], -1).astype(np.float32)
    scores = (rng.integers(0, 8, (b, n, c)) / 8 if ties else rng.random((b, n, c)) ** 2).astype(np.float32)
    max_det = int(rng.integers(1, 60))
    model = nms_model(method, c, NmsSpec(max_det=max_det, agnostic=agnostic))
    onnx.checker.check_model(model, full_check=True)
    feed = {"boxes": boxes, "scores": scores, "score_thr": np.asarray(score_thr, np.float32)}
    thr = {"score_thr": score_thr}
    if "iou_thr" in ONNX_NMS[method].inputs:
        feed["iou_thr"], thr["iou_thr"] = np.asarray(iou_thr, np.float32), iou_thr
    if "sigma" in ONNX_NMS[method].inputs:
        feed["sigma"], thr["sigma"] = np.asarray(iou_thr * 2, np.float32), iou_thr * 2
    dets, num = _session(model).run(None, feed)
    assert dets.shape == (b, max_det, 6) and num.shape == (b,)
    refs = _reference(boxes, scores, method, agnostic, max_det, **thr)
    if ties and method == "nms":  # equal scores: the same set, any order among the ties
        for d, k, ref in zip(dets, num, refs, strict=True):
            assert int(k) == len(ref)
            assert sorted(map(tuple, d[: int(k)].round(4))) == sorted(map(tuple, ref.round(4)))
        return
    _assert_rows_equal(dets, num, refs, box_tol=0, score_tol=1e-6)


def test_thresholds_are_inputs_with_defaults():
    model = nms_model("soft_nms_gaussian", 2, NmsSpec(max_det=5), score_thr=0.2, sigma=0.7)
    inits = {i.name: float(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer}
    assert inits == pytest.approx({"score_thr": 0.2, "sigma": 0.7})
    assert {i.name for i in model.graph.input} >= {"boxes", "scores", "score_thr", "sigma"}
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[[0.9, 0], [0.5, 0], [0.15, 0]]], np.float32)
    s = _session(model)
    assert s.run(None, {"boxes": boxes, "scores": scores})[1].tolist() == [2]  # 0.15 <= 0.2
    lower = {"boxes": boxes, "scores": scores, "score_thr": np.asarray(0.1, np.float32)}
    assert s.run(None, lower)[1].tolist() == [3]


# ------------------------------------------------------------------ a trained model
@pytest.fixture(scope="module")
def trained(tiny_run):
    out = tiny_run
    w = load_weights(out / "last.pt")
    net = export_network(w.model, 128, dynamic=True)
    return out, w, net


def _val_batches(synth_dir, imgsz, batch):
    ds, _ = dataset_from_source(synth_dir / "data.yaml", "val", imgsz)
    return [b["images"].float().div(255).numpy() for b in make_loader(ds, batch_size=batch)]


@pytest.mark.parametrize(("method", "agnostic"), [(m, False) for m in METHODS] + [("nms", True)])
def test_the_graph_equals_postprocess_of_the_same_raw_outputs(trained, synth_dir, method, agnostic):
    """On every validation image: the ORT detections equal detopt's post-processing of the raw
    outputs the same file computes (the 'none' graph of the same network)."""
    _, w, net = trained
    kw = dict(names=w.names, category_ids=w.category_ids, imgsz=128, dynamic=True, score_thr=0.01,
              iou_thr=0.6, sigma=None, max_det=100, agnostic=agnostic, opset=18)
    full = _session(with_postprocess(net, w.model, nms=method, **kw))
    raw = _session(with_postprocess(net, w.model, nms="none", **kw))
    thr = {"score_thr": 0.01, "iou_thr": 0.6}
    if "sigma" in ONNX_NMS[method].inputs:
        thr = {"score_thr": 0.01, "sigma": ONNX_NMS[method].default_sigma}
    n_kept = 0
    for x in _val_batches(synth_dir, 128, 4):
        dets, num = full.run(None, {"images": x})
        boxes, scores = raw.run(None, {"images": x})
        _assert_rows_equal(dets, num, _reference(boxes, scores, method, agnostic, 100, **thr))
        n_kept += int(num.sum())
    assert n_kept > 0


def test_dynamic_batch_and_size_and_metadata(trained, tmp_path):
    _, w, net = trained
    proto = with_postprocess(net, w.model, names=w.names, category_ids=w.category_ids, imgsz=128,
                             dynamic=True, nms="nms", score_thr=0.25, iou_thr=0.7, sigma=None, max_det=50,
                             agnostic=False, opset=18)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    det = OnnxDetector(path)
    assert det.names == w.names and det.category_ids == w.category_ids and det.dynamic and det.max_det == 50
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["stride"] == 32 and meta["thresholds"] == {"score_thr": 0.25, "iou_thr": 0.7}
    assert meta["letterbox"]["pad_value"] == 114
    for b in (1, 3, 8):
        for side in (256, 416):
            dets, num = det(torch.rand(b, 3, side, side if b != 3 else 256))
            assert dets.shape == (b, 50, 6) and num.shape == (b,)


def test_val_on_the_onnx_file_matches_the_pt_weights(trained, synth_dir, tmp_path):
    _, w, _ = trained
    ds, names = dataset_from_source(synth_dir / "data.yaml", "val", 128)
    path = export_onnx(w.model, tmp_path / "m.onnx", names=w.names, category_ids=w.category_ids, imgsz=128,
                       dynamic=False, nms="nms", score_thr=0.001)
    onnx_w = load_weights(path)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 128, 128]  # a static export declares its size
    got = evaluate_detector(onnx_w.model, ds, names, default_postprocessor(onnx_w.model, None, 0.001))
    ref = evaluate_detector(w.model, ds, names, default_postprocessor(w.model, "nms", 0.001))
    # mAP50-95 and mAP50 within 0.001 (the network's float32 arithmetic differs in the last bits
    # between ONNX Runtime and torch; with this barely trained model many scores nearly tie)
    assert np.abs(got.result.stats[:2] - ref.result.stats[:2]).max() <= 1e-3
    assert got.num_detections == ref.num_detections
    with pytest.raises(DetoptInputError, match="static"):
        onnx_w.model.check_size(160)


def test_dynamic_batch_export_keeps_the_side_and_batches_like_single_images(trained, synth_dir, tmp_path):
    """--dynamic-batch: the batch alone is symbolic; a batch of 4 gives each image's own rows."""
    out, _, _ = trained
    path = tmp_path / "b.onnx"
    assert main(["export", "--weights", str(out / "last.pt"), "--out", str(path), "--dynamic-batch",
                 "--score-thr", "0.01"]) == 0
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 128, 128]
    s = _session(onnx.load(str(path)))
    x = _val_batches(synth_dir, 128, 4)[0]
    dets, num = s.run(None, {"images": x})
    assert dets.shape[0] == num.shape[0] == len(x) and num.sum() > 0
    for i in range(len(x)):
        d1, n1 = s.run(None, {"images": x[i : i + 1]})
        assert int(n1[0]) == int(num[i])
        np.testing.assert_allclose(d1[0, : n1[0]], dets[i, : num[i]], atol=1e-3)


# ------------------------------------------------------------------ the command line and bad input
def test_export_val_predict_commands(trained, synth_dir, tmp_path, capsys):
    out, _, _ = trained
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(out / "last.pt"), "--out", str(onnx_path),
                 "--nms", "soft_nms_gaussian", "--sigma", "0.4", "--max-det", "20"]) == 0
    assert "wrote" in capsys.readouterr().out
    det = OnnxDetector(onnx_path)
    assert det.nms == "soft_nms_gaussian" and det.defaults["sigma"] == pytest.approx(0.4) and not det.dynamic
    data = str(synth_dir / "data.yaml")
    assert main(["val", "--weights", str(onnx_path), "--data", data, "--max-det", "20"]) == 0
    assert "Average Precision" in capsys.readouterr().out
    assert main(["predict", "--weights", str(onnx_path), "--source", str(synth_dir / "images" / "val"),
                 "--max-det", "20", "--save-json", str(tmp_path / "p.json")]) == 0
    records = json.loads((tmp_path / "p.json").read_text())
    assert all(r["category_id"] in det.category_ids for r in records)
    assert main(["val", "--weights", str(onnx_path), "--data", data, "--nms", "nms"]) != 0
    err = capsys.readouterr().err
    assert "'soft_nms_gaussian' is inside this export" in err and err.count("\n") == 1


def test_bad_input_gets_one_line(trained, tmp_path, capsys):
    out, w, _ = trained
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    cut = tmp_path / "cut.onnx"
    export_onnx(w.model, tmp_path / "full.onnx", names=w.names, imgsz=128, nms="nms")
    cut.write_bytes((tmp_path / "full.onnx").read_bytes()[:5000])
    for path in (junk, cut):
        with pytest.raises(DetoptInputError, match=rf"{path.name}: not a readable ONNX model") as e:
            load_weights(path)
        assert "\n" not in str(e.value)
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"model": {}, "spec": {}, "x": print}, f)  # a function: code, not data
    with pytest.raises(DetoptInputError, match=r"evil\.pt: refused: the file holds pickled code") as e:
        load_weights(evil)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    with pytest.raises(DetoptInputError, match=r"imgsz 100 is not a multiple of the model's stride 32; "
                       r"nearest valid sizes: 96 or 128"):
        export_onnx(w.model, tmp_path / "x.onnx", names=w.names, imgsz=100)
    with pytest.raises(SystemExit):
        main(["export", "--weights", str(out / "last.pt"), "--out", str(tmp_path / "y.onnx"),
              "--nms", "typo"])
    err = capsys.readouterr().err
    assert "invalid choice: 'typo'" in err and "soft_nms_gaussian" in err


@pytest.mark.parametrize("opset", [18, 19, 20, 21])
def test_opsets(trained, opset):
    """The documented opsets: every post-processing graph, and the whole export at the newest."""
    _, w, _ = trained
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[[0.9, 0], [0.5, 0], [0.3, 0]]], np.float32)
    for method in METHODS:
        model = nms_model(method, 2, NmsSpec(max_det=4), opset=opset, score_thr=0.1, iou_thr=0.5)
        onnx.checker.check_model(model, full_check=True)
        assert int(_session(model).run(None, {"boxes": boxes, "scores": scores})[1][0]) >= 2
    if opset == 21:
        net = export_network(w.model, 96, dynamic=False, opset=21)
        proto = with_postprocess(net, w.model, names=w.names, category_ids=None, imgsz=96, dynamic=False,
                                 nms="soft_nms_linear", score_thr=0.01, iou_thr=0.5, sigma=None, max_det=10,
                                 agnostic=False, opset=21)
        assert proto.opset_import[0].version == 21
        x = np.random.default_rng(0).random((1, 3, 96, 96), np.float32)
        dets, _ = _session(proto).run(None, {"images": x})
        assert dets.shape == (1, 10, 6)


def test_every_graph_implements_a_registered_method():
    from detopt.export import EXPORT_FORMATS
    from detopt.ops.postprocess import METHOD_REGISTRY

    assert set(ONNX_NMS.names()) <= set(METHOD_REGISTRY.names())
    assert set(ONNX_NMS.names()) == set(METHOD_REGISTRY.names()) - {"wbf"}  # WBF: Python only (see README)
    assert set(EXPORT_FORMATS.names()) == {"safetensors", "onnx"}

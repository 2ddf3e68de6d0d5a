"""The deployment comparison: Pareto front against brute force, the recommendation rule, and the
measurement of real variants (accuracy of each file against its own evaluation, the torch and ONNX
Runtime FP32 files in agreement)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detopt.compress.deploy import DeployRow, VariantSpec, measure_variants, pareto_front, recommend


def _brute_front(acc, lat):
    out = []
    for i in range(len(acc)):
        dominated = any(
            acc[j] >= acc[i] and lat[j] <= lat[i] and (acc[j] > acc[i] or lat[j] < lat[i])
            for j in range(len(acc)) if j != i)
        out.append(not dominated)
    return out


values = st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 2))  # ties happen


@given(st.lists(st.tuples(values, values), min_size=1, max_size=12))
def test_pareto_front_is_the_brute_force_front(points):
    acc = [a for a, _ in points]
    lat = [t for _, t in points]
    front = pareto_front(acc, lat)
    assert front.tolist() == _brute_front(acc, lat)
    assert front.any()  # the most accurate of the fastest is never dominated
    best = max(range(len(acc)), key=lambda i: (acc[i], -lat[i]))
    assert front[best]


def test_pareto_front_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one length"):
        pareto_front([0.1, 0.2], [1.0])


def _row(name, m, ms, size=1.0):
    return DeployRow(name, "x", m, m, m, ms, ms, 1000 / ms, size, 1.0, 1.0, "f", [])


def test_recommend_takes_the_fastest_within_the_drop_and_names_the_fastest_of_all():
    rows = [_row("ref", 0.40, 30.0), _row("ort", 0.40, 12.0), _row("int8", 0.395, 8.0),
            _row("tiny", 0.30, 5.0)]
    rec = recommend(rows, reference=0, max_drop=0.01)
    assert rec["index"] == 2 and rec["fastest"] == 3
    assert math.isclose(rec["speedup"], 30.0 / 8.0)
    assert math.isclose(rec["delta_map"], -0.005)
    assert rec["text"].startswith("Deploy int8 (x): 3.75× faster than ref at batch 1 (8.0 vs 30.0 ms)")
    assert "tiny, is 6.00× faster but costs 0.1000 mAP50-95" in rec["text"]
    # a stricter tolerance keeps the FP32 runtime; the reference is always a candidate
    assert recommend(rows, max_drop=0.001)["index"] == 1
    assert recommend(rows[:1])["index"] == 0
    # the fastest within the drop is the fastest of all: no second sentence
    assert "fastest variant" not in recommend(rows, max_drop=0.2)["text"]
    with pytest.raises(ValueError):
        recommend([])


@pytest.fixture(scope="module")
def measured(tiny_run, synth_dir, tmp_path_factory):
    """The tiny run's weights as torch FP32, torch bf16 and an ONNX file, measured."""
    from detopt.data.dataset import dataset_from_source
    from detopt.export import export
    from detopt.inference import load_weights

    out = tmp_path_factory.mktemp("deploy")
    weights = tiny_run / "last.pt"
    w = load_weights(weights)
    onnx_path = export(weights, out / "model.onnx", nms="nms", dynamic_batch=True)
    st_path = export(weights, out / "model.safetensors")
    val, names = dataset_from_source(synth_dir / "data.yaml", "val", 128)
    specs = [
        VariantSpec("torch FP32", "torch", st_path, w.model, None, ["a"]),
        VariantSpec("given", "torch", st_path, w.model, (0.5, 0.6, 0.7), ["b"]),
        VariantSpec("torch bf16", "torch-bf16", st_path, w.model, None, ["c"]),
        VariantSpec("ORT FP32", "onnxruntime", onnx_path, w.model, None, ["d", "e"]),
    ]
    rows = measure_variants(specs, val, names, 128, threads=1, rounds=1, repeats=2)
    return rows, w, val, names, onnx_path, st_path


def test_measure_variants_scores_each_file(measured):
    from detopt.compress.quantization.pipeline import evaluate_file
    from detopt.engine.validate import evaluate_detector
    from detopt.models import Postprocessor, count_flops, count_parameters

    rows, w, val, names, onnx_path, st_path = measured
    assert [r.name for r in rows] == ["torch FP32", "given", "torch bf16", "ORT FP32"]
    post = Postprocessor(w.model.strides, w.model.reg_max, score_thr=0.001)
    ref = evaluate_detector(w.model, val, names, post, "cpu").result.stats
    assert (rows[0].map, rows[0].map50, rows[0].ap_small) == (float(ref[0]), float(ref[1]), float(ref[3]))
    assert (rows[1].map, rows[1].map50, rows[1].ap_small) == (0.5, 0.6, 0.7)  # taken as given
    ort = evaluate_file(onnx_path, val, names, threads=1).stats
    assert rows[3].map == float(ort[0])
    assert abs(rows[3].map - rows[0].map) < 2e-3  # the same network in ONNX Runtime
    bf16 = evaluate_detector(w.model, val, names, post, "cpu", amp=True).result.stats
    assert rows[2].map == float(bf16[0])
    for r in rows:
        assert r.p50_ms > 0 and r.p90_ms >= r.p50_ms and r.images_per_s_b8 > 0
        assert r.params_m == count_parameters(w.model) / 1e6
        assert r.gflops == count_flops(w.model, 128) / 1e9
    assert rows[0].size_mb == pytest.approx(st_path.stat().st_size / 1e6)
    assert rows[3].size_mb == pytest.approx(onnx_path.stat().st_size / 1e6)
    assert rows[3].commands == ["d", "e"]
    front = pareto_front([r.map for r in rows], [r.p50_ms for r in rows])
    assert [r.pareto for r in rows] == front.tolist()


def test_measure_variants_refuses_an_unknown_backend(measured):
    _, w, val, names, onnx_path, _ = measured
    with pytest.raises(ValueError, match="tensorrt"):
        measure_variants([VariantSpec("x", "tensorrt", onnx_path, w.model)], val, names, 128)


def test_deploy_chart_marks_the_front(tmp_path):
    from detopt.report.figures import plot_deploy_tradeoff

    rows = [_row("a", 0.4, 30.0).to_dict(), _row("b", 0.39, 10.0).to_dict(), _row("c", 0.3, 20.0).to_dict()]
    front = pareto_front([r["map"] for r in rows], [r["p50_ms"] for r in rows])
    for r, f in zip(rows, front, strict=True):
        r["pareto"] = bool(f)
    assert [r["pareto"] for r in rows] == [True, True, False]
    path = plot_deploy_tradeoff(rows, tmp_path / "chart.png")
    import cv2

    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 300
    assert np.ptp(img) > 0

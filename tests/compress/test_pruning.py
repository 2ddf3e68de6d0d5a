"""Structured and unstructured pruning: the pruned model has exactly the widths and FLOPs reported
and computes what the unpruned model computes with the removed channels zeroed; every registered
model prunes; importances equal brute-force references; the command writes a run whose best.pt
loads alone (val, export); bad input gets one line."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from torch import nn

from detopt.cli import main
from detopt.compress import prune
from detopt.compress.pruning.graph import trace_channels
from detopt.compress.pruning.structured import (
    IMPORTANCES,
    apply_pruning,
    plan_pruning,
    unit_scores,
    zero_units,
)
from detopt.compress.pruning.unstructured import magnitude_prune, overall_sparsity, sparsity_table
from detopt.engine import load_checkpoint, model_from_checkpoint
from detopt.errors import DetoptInputError
from detopt.inference import load_weights
from detopt.models import count_flops, count_parameters, create_model, list_models
from detopt.models.criterion import DetectionCriterion
from detopt.models.shapes import module_shapes
from tests.compress.helpers import randomize_bn
from tests.hyp import examples


def _prune(model: nn.Module, ratio: float, global_rank: bool = False, imgsz: int = 64):
    graph = trace_channels(model, imgsz)
    scores = unit_scores(graph, IMPORTANCES["l1"](model, graph))
    plan = plan_pruning(graph, scores, ratio, 8, global_rank)
    reference = zero_units(copy.deepcopy(model), graph, plan.removed)
    apply_pruning(model, graph, plan.removed)
    return graph, plan, reference


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("p2", [False, True])
def test_every_registered_model_prunes_to_the_zeroed_reference(name, p2):
    model = randomize_bn(create_model(name, 5, p2=p2), seed=len(name) + p2).eval()
    params0 = count_parameters(model)
    widths0 = {n: (m.in_channels, m.out_channels) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d)}
    _, plan, reference = _prune(model, 0.5, global_rank=p2)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(model(x), reference(x), strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # the FLOPs the plan reports are torch's own count of the pruned model
    assert count_flops(model, 64) == pytest.approx(plan.flops_after, rel=1e-9)
    assert count_flops(reference, 64) == pytest.approx(plan.flops_before, rel=1e-9)
    assert 0.5 - 1e-9 <= plan.flops_removed <= 0.55  # at least the ratio; the rounding overshoots little
    assert count_parameters(model) < params0
    # every width a convolution reads or writes is a multiple of round_to or left whole -- both
    # halves of a C2f split too, not only their sum (a 39-channel half runs as slowly as 48)
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            for now, was in zip((m.in_channels, m.out_channels), widths0[n], strict=True):
                assert now == was or now % 8 == 0, (n, now, was)
    # the prediction convolutions stay whole; the spec holds exactly the widths of the modules
    for level in range(len(model.strides)):
        assert model.head.box[level][-1].out_channels == 4 * model.reg_max
        assert model.head.cls[level][-1].out_channels == 5
    assert model.spec["shapes"] == module_shapes(model)
    rebuilt = create_model(name, 5, p2=p2, shapes=json.loads(json.dumps(model.spec["shapes"])))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(rebuilt.eval()(x), model(x), strict=True))


def test_the_tracer_counts_what_torch_counts_and_couples_residuals():
    model = create_model("yolo-n", 3)
    graph = trace_channels(model, 64)
    assert 2 * graph.macs() == count_flops(model, 64)  # torch's FlopCounterMode, not ours
    families = [sorted({graph.owner[i][0] for i in graph.units[f[0]]}) for f in graph.families]
    # backbone C2f with shortcuts: the second half of cv1 is one unit with every bottleneck output
    assert ["backbone.stages.1.1.cv1.conv", "backbone.stages.1.1.m.0.cv2.conv",
            "backbone.stages.1.1.m.1.cv2.conv"] in families
    assert ["backbone.stages.1.1.cv1.conv"] in families  # its first half is free
    # nothing that reaches an output is a unit
    pred = {f"head.{b}.{lv}.2" for b in ("box", "cls") for lv in range(3)}
    assert not any(graph.owner[i][0] in pred for u in graph.units for i in u)


def test_the_tracer_refuses_what_it_does_not_know():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            y = self.conv(x)
            return y * y.mean(1, keepdim=True)

    with pytest.raises(DetoptInputError, match=r"unsupported operation mean"):
        trace_channels(Odd(), 32)


def test_importances_equal_brute_force():
    model = randomize_bn(create_model("yolo-p", 3), seed=5).eval()
    graph = trace_channels(model, 64)
    l1 = IMPORTANCES["l1"](model, graph)
    bn = IMPORTANCES["bn_scale"](model, graph)
    for c in graph.convs:
        w = model.get_submodule(c.path).weight.detach().double()
        for k, i in enumerate(c.out_ids[:4]):
            assert l1[i] == pytest.approx(float(w[k].abs().sum()), rel=1e-12)
    conv = graph.conv("backbone.stem.conv")
    gamma = model.backbone.stem.bn.weight.detach().double().abs()
    assert np.allclose(bn[conv.out_ids], gamma.numpy())
    # taylor: |Σ w·∂L/∂w| per filter, the gradient of the summed losses
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = {"boxes": torch.tensor([[4.0, 4, 30, 30], [10, 20, 50, 60]]), "labels": torch.tensor([0, 2]),
               "batch_index": torch.tensor([0, 1]), "crowd": torch.tensor([False, False])}
    crit = DetectionCriterion(3, model.strides, model.reg_max)
    tay = IMPORTANCES["taylor"](model, graph, loss_batches=iter([crit(model(x), targets)[0]]))
    ref = copy.deepcopy(model)
    crit(ref(x), targets)[0].backward()
    w = ref.backbone.stages[2][0].conv.weight
    want = (w.detach().double() * w.grad.double()).flatten(1).sum(1).abs().numpy()
    got = tay[graph.conv("backbone.stages.2.0.conv").out_ids]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-12)
    with pytest.raises(DetoptInputError, match="taylor importance needs"):
        IMPORTANCES["taylor"](model, graph)


@settings(max_examples=examples(20), deadline=None)
@given(ratio=st.floats(0.1, 0.7), round_to=st.sampled_from([1, 4, 8]), global_rank=st.booleans(),
       seed=st.integers(0, 1000))
def test_plans_reach_the_target_without_overshooting_much(ratio, round_to, global_rank, seed):
    model = create_model("yolo-p", 3)
    graph = _GRAPH.setdefault("g", trace_channels(model, 64))
    scores = np.random.default_rng(seed).random(len(graph.units)) + 1e-3
    plan = plan_pruning(graph, scores, ratio, round_to, global_rank)
    assert plan.flops_removed >= ratio - 1e-9
    assert plan.flops_removed <= ratio + 0.05
    for f in graph.families:
        kept = int((~plan.removed[f]).sum())
        assert kept >= 1 and (kept == len(f) or kept % round_to == 0)


_GRAPH: dict = {}


def test_unstructured_pruning_zeroes_the_smallest_weights_exactly():
    model = randomize_bn(create_model("yolo-p", 3), seed=2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    magnitude_prune(model, 0.3)
    flat = np.concatenate([before[f"{n}.weight"].abs().flatten().numpy() for n, m in model.named_modules()
                           if isinstance(m, nn.Conv2d)])
    k = round(0.3 * flat.size)
    assert sum(r["zeros"] for r in sparsity_table(model)) == k
    assert overall_sparsity(model) == pytest.approx(k / flat.size)
    threshold = np.sort(flat)[k - 1]
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            w0 = before[f"{n}.weight"]
            assert torch.equal(m.weight[w0.abs() > threshold], w0[w0.abs() > threshold])
            assert (m.weight[w0.abs() < threshold] == 0).all()
    with pytest.raises(DetoptInputError, match=r"sparsity must be in \(0, 1\)"):
        magnitude_prune(model, 1.0)


def test_structured_command_writes_a_run_that_loads_alone(tiny_run, synth_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    args = ["prune", "--weights", str(tiny_run / "last.pt"), "--data", str(synth_dir / "data.yaml"),
            "--out", str(out), "--ratio", "0.5", "--steps", "2", "--importance", "taylor",
            "--finetune-epochs", "1", "--workers", "0", "--batch", "8"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "structured pruning:" in printed and "latency (batch 1, p50)" in printed
    for f in ("best.pt", "last.pt", "results.csv", "config.yaml", "prune.json", "steps/1/last.pt"):
        assert (out / f).is_file(), f
    report = json.loads((out / "prune.json").read_text())
    model = model_from_checkpoint(load_checkpoint(out / "best.pt"))  # weights + JSON spec only
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert report["widths_after"] == widths
    assert report["params_after"] == count_parameters(model)
    assert report["gflops_after"] == pytest.approx(count_flops(model, 128) / 1e9)
    assert 1 - report["gflops_after"] / report["gflops_before"] == pytest.approx(0.5, abs=0.02)
    assert [s["step"] for s in report["steps"]] == [1, 2] and report["map_after_finetune"] is not None
    assert {"torch_speedup", "ort_speedup"} <= set(report["latency"])
    # val and export read the pruned run as any other
    assert main(["val", "--weights", str(out / "best.pt"), "--data", str(synth_dir / "data.yaml")]) == 0
    onnx_path = tmp_path / "pruned.onnx"
    assert main(["export", "--weights", str(out / "best.pt"), "--format", "onnx",
                 "--out", str(onnx_path)]) == 0
    assert load_weights(onnx_path).names == load_weights(out / "best.pt").names


def test_unstructured_command_keeps_its_zeros_through_fine_tuning(tiny_run, synth_dir, tmp_path):
    out = tmp_path / "sparse"
    result = prune({"weights": str(tiny_run / "last.pt"), "data": str(synth_dir / "data.yaml"),
                    "out": str(out),
                    "method": "unstructured", "ratio": 0.6, "finetune_epochs": 1, "workers": 0, "batch": 8,
                    "latency": False})
    model = model_from_checkpoint(load_checkpoint(out / "last.pt"))
    assert overall_sparsity(model) >= 0.6 - 1e-6  # the zeros stayed zeros in the EMA weights
    assert result.size["gzip_after"] < result.size["gzip_before"]
    assert any("does not make dense kernels faster" in n for n in result.notes)


def test_bad_input_gets_one_line(tiny_run, synth_dir, tmp_path, capsys):
    base = ["prune", "--weights", str(tiny_run / "last.pt"), "--data", str(synth_dir / "data.yaml"),
            "--out", str(tmp_path / "p"), "--finetune-epochs", "0", "--no-latency"]
    for ratio in ("1.5", "0"):
        assert main([*base, "--ratio", ratio]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "ratio" in err[0], err
    # a teacher whose classes differ from the data's
    other = tmp_path / "other.yaml"
    other.write_text(f"path: {synth_dir}\n" + (synth_dir / "data.yaml").read_text().replace("disc", "plate"))
    teacher_out = tmp_path / "teacher"
    assert main(["prune", "--weights", str(tiny_run / "last.pt"), "--data", str(synth_dir / "data.yaml"),
                 "--out", str(teacher_out), "--finetune-epochs", "0", "--no-latency"]) == 0
    ck = load_checkpoint(teacher_out / "best.pt")
    ck["names"] = ["plate", *ck["names"][1:]]
    torch.save(ck, tmp_path / "renamed.pt")
    assert main([*base, "--teacher", str(tmp_path / "renamed.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teacher" in err[0], err
    # weights that were quantized
    q = helper.make_node("QuantizeLinear", ["x", "s"], ["y"])
    graph = helper.make_graph([q], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])])
    onnx.save(helper.make_model(graph), tmp_path / "model-int8.onnx")
    assert main([*base[:2], str(tmp_path / "model-int8.onnx"), *base[3:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already quantized" in err[0], err
    # no fine-tune: the pruned weights are the run
    assert (teacher_out / "best.pt").is_file() and load_weights(teacher_out / "best.pt").model is not None


def test_network_slimming_shrinks_the_bn_scales_before_pruning(tiny_run, synth_dir, tmp_path):
    out = tmp_path / "slim"
    r = prune({"weights": str(tiny_run / "last.pt"), "data": str(synth_dir / "data.yaml"), "out": str(out),
               "importance": "bn_scale", "sparsity_epochs": 1, "sparsity_l1": 5.0, "finetune_epochs": 0,
               "ratio": 0.3, "workers": 0, "batch": 8, "latency": False})
    phase = r.sparsity_phase
    # 5 steps: the subgradient takes ~10 % off Σ|γ|; one plain epoch moves it by ~0.1 %
    assert phase["epochs"] == 1 and phase["l1_after"] < 0.95 * phase["l1_before"]
    header = (out / "sparsity" / "results.csv").read_text().splitlines()[0]
    assert "train/bn_l1" in header
    assert r.gflops_after < r.gflops_before

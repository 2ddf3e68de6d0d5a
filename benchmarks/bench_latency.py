"""Inference latency per backend, side by side in one process.

For each model (yolo-p, yolo-n) and input size (320, 640): p50 / p90 milliseconds per image at
batch 1 and images per second at batch 8, with 1 and 2 threads, for

- torch eager fp32 (NCHW), torch channels_last, torch bf16 autocast (when the CPU has bf16),
  torch.compile (when it works here);
- ONNX Runtime fp32: the network and box decode alone (``--nms none``) and with each
  post-processing method inside the graph;
- detopt's Python-side post-processing of the network's outputs (``Postprocessor``) for comparison.

Weights are random (latency does not depend on them except through the number of candidates:
post-processing runs at score 0.25 on the outputs of a model whose class bias gives ~0.01, so
hard NMS sees few candidates; ``--score-thr 0.001`` stresses it). Ratios printed at the end are
the issue's goals: ORT end to end with hard NMS / ORT network alone (≤ 1.1×), soft-NMS in the
graph / network alone (≤ 1.5×), torch eager / ORT fp32 at batch 1, 2 threads, yolo-n 320 (≥ 2×).

    python benchmarks/bench_latency.py [--models yolo-p yolo-n] [--sizes 320 640] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from detopt.export.onnx_export import export_network, with_postprocess
from detopt.export.onnx_nms import ONNX_NMS
from detopt.models import Postprocessor, create_model


def _times(fn: Callable[[], object], reps: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _p(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _session(proto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _torch_runner(model: torch.nn.Module, channels_last: bool = False, bf16: bool = False) -> Callable:
    def run(x: torch.Tensor):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(x)

    return run


def _ort_runner(session: ort.InferenceSession) -> Callable:
    def run(x: torch.Tensor):
        return session.run(None, {"images": x.numpy()})

    return run


def _measure(run: Callable, x1: torch.Tensor, x8: torch.Tensor, reps: int, warmup: int = 3):
    """``(seconds per call at batch 1, seconds per call at batch 8)``."""
    return _times(partial(run, x1), reps, warmup), _times(partial(run, x8), max(3, reps // 5), warmup)


def _exports(model: torch.nn.Module, size: int, score_thr: float) -> dict[str, object]:
    net = export_network(model, size, dynamic=True)
    names = [f"c{i}" for i in range(8)]
    return {method: with_postprocess(net, model, names=names, category_ids=None, imgsz=size, dynamic=True,
                                     nms=method, score_thr=score_thr, iou_thr=0.7, sigma=None, max_det=300,
                                     agnostic=False, opset=18)
            for method in ["none", *ONNX_NMS.names()]}


def _rows(name: str, model: torch.nn.Module, protos: dict, size: int, threads: int, args, bf16: bool) -> dict:
    torch.set_num_threads(threads)
    x1, x8 = torch.rand(1, 3, size, size), torch.rand(8, 3, size, size)
    rows = {"torch eager fp32": _measure(_torch_runner(model), x1, x8, args.reps)}
    cl_model = create_model(name, 8, imgsz=320).eval()
    cl_model.load_state_dict(model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)
    rows["torch channels_last"] = _measure(_torch_runner(cl_model, channels_last=True), x1, x8, args.reps)
    if bf16:
        rows["torch bf16 autocast"] = _measure(_torch_runner(model, bf16=True), x1, x8, args.reps)
    try:
        rows["torch.compile"] = _measure(_torch_runner(torch.compile(model)), x1, x8, args.reps, warmup=2)
    except Exception as e:
        print(f"torch.compile unavailable here: {type(e).__name__}: {str(e)[:80]}")
    with torch.inference_mode():
        out1 = model(x1)
    pp = Postprocessor(model.strides, model.reg_max, score_thr=args.score_thr)
    rows["detopt Postprocessor (python side)"] = (_times(partial(pp, out1), args.reps), [])
    for method, proto in protos.items():
        label = "ORT fp32 network alone" if method == "none" else f"ORT fp32 + {method} in graph"
        rows[label] = _measure(_ort_runner(_session(proto, threads)), x1, x8, args.reps)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["yolo-p", "yolo-n"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--score-thr", type=float, default=0.25)
    ap.add_argument("--quick", action="store_true", help="yolo-p at 320, 2 threads, 10 reps")
    args = ap.parse_args()
    if args.quick:
        args.models, args.sizes, args.threads, args.reps = ["yolo-p"], [320], [2], 10
    warnings.simplefilter("ignore")
    print(f"# detopt latency benchmark ({platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__})")
    print(f"score threshold {args.score_thr}; ms per image: p50 / p90 at batch 1; img/s at batch 8\n")
    print("| model | size | threads | backend | p50 ms | p90 ms | img/s (b8) |")
    print("|---|---|---|---|---|---|---|")
    goals: dict[str, float] = {}
    cpuinfo = Path("/proc/cpuinfo")
    bf16 = cpuinfo.exists() and "avx512_bf16" in cpuinfo.read_text()
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, 8, imgsz=320).eval()
        for size in args.sizes:
            protos = _exports(model, size, args.score_thr)
            for threads in args.threads:
                rows = _rows(name, model, protos, size, threads, args, bf16)
                for label, (t1, t8) in rows.items():
                    ips = f"{8 / statistics.median(t8):.1f}" if t8 else "-"
                    print(f"| {name} | {size} | {threads} | {label} | {1000 * _p(t1, 50):.2f} | "
                          f"{1000 * _p(t1, 90):.2f} | {ips} |", flush=True)
                key = f"{name} {size} {threads}t"
                net = _p(rows["ORT fp32 network alone"][0], 50)
                goals[f"{key}: ORT + hard NMS / network alone (goal <= 1.1)"] = (
                    _p(rows["ORT fp32 + nms in graph"][0], 50) / net)
                goals[f"{key}: ORT + soft-NMS gaussian / network alone (goal <= 1.5)"] = (
                    _p(rows["ORT fp32 + soft_nms_gaussian in graph"][0], 50) / net)
                goals[f"{key}: torch eager fp32 / ORT fp32 network (goal >= 2 at yolo-n 320 2t)"] = (
                    _p(rows["torch eager fp32"][0], 50) / net)
    print("\n## ratios (p50 at batch 1)")
    for k, v in goals.items():
        print(f"- {k}: {v:.2f}")


if __name__ == "__main__":
    main()

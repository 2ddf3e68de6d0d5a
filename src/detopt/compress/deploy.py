"""The deployment comparison: the same detector as several deployable variants (torch FP32, torch
bf16 autocast, ONNX Runtime FP32 / INT8, pruned, pruned + INT8), measured side by side.

- :func:`measure_variants`: exact COCO accuracy of each variant on one split (or accuracy the
  caller already measured), then latency at batch 1 (p50 / p90) and images / s at batch 8 of every
  variant in alternating rounds within one process (a slow spell of a shared machine falls on all
  of them alike), file size, parameters and GFLOPs.
- :func:`pareto_front`: the variants no other variant beats on both accuracy and latency.
- :func:`recommend`: the variant to deploy, in words, computed from the numbers: the fastest
  whose mAP50-95 is within ``max_drop`` of the reference (torch FP32), and what the fastest of all
  would cost.

Torch variants run with the :class:`~detopt.models.Postprocessor` (hard NMS, score 0.25 when
timed), ONNX variants with the same post-processing inside the graph (its default score 0.25);
accuracy is always measured at score 0.001, as COCO evaluation wants.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detopt.constants import IOU_THRESHOLD, MAX_DET, SCORE_THRESHOLD
from detopt.data.dataset import DetectionDataset

#: Score threshold of the timed runs (a deployment's; accuracy is measured at 0.001).
TIMING_SCORE_THR = 0.25

BACKENDS = ("torch", "torch-bf16", "onnxruntime")


@dataclass
class VariantSpec:
    """One variant to measure.

    Attributes:
        name: what the table calls it ("ORT INT8 PTQ").
        backend: ``torch`` (eager FP32), ``torch-bf16`` (eager under bf16 autocast) or
            ``onnxruntime`` (a detopt ONNX export with the post-processing inside).
        path: the file deployed: weights (``.pt`` / ``.safetensors``) or the ``.onnx``.
        model: the float torch model the variant comes from (parameters, GFLOPs; the torch runs).
        accuracy: ``(mAP50-95, mAP50, AP_small)`` measured elsewhere on the same split, or None to
            measure here.
        commands: the commands that reproduce the file.
    """

    name: str
    backend: str
    path: Path
    model: torch.nn.Module
    accuracy: tuple[float, float, float] | None = None
    commands: list[str] = field(default_factory=list)


@dataclass
class DeployRow:
    """One measured variant (a row of the report's Deploy table)."""

    name: str
    backend: str
    map: float
    map50: float
    ap_small: float
    p50_ms: float
    p90_ms: float
    images_per_s_b8: float
    size_mb: float
    params_m: float
    gflops: float
    file: str
    commands: list[str]
    pareto: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pareto_front(accuracy: Sequence[float], latency: Sequence[float]) -> np.ndarray:
    """``bool [N]``: True where no other point is at least as accurate *and* at least as fast while
    strictly better in one of the two (higher ``accuracy`` is better, lower ``latency`` is better).
    Equal points are all on the front."""
    a = np.asarray(accuracy, np.float64)
    t = np.asarray(latency, np.float64)
    if a.shape != t.shape or a.ndim != 1:
        raise ValueError(f"accuracy {a.shape} and latency {t.shape} must be two vectors of one length")
    ge = (a[None, :] >= a[:, None]) & (t[None, :] <= t[:, None])  # [i, j]: j at least as good as i
    gt = (a[None, :] > a[:, None]) | (t[None, :] < t[:, None])
    return ~np.any(ge & gt, axis=1)


def recommend(rows: Sequence[DeployRow], reference: int = 0, max_drop: float = 0.01) -> dict[str, Any]:
    """The variant to deploy: the fastest (p50 at batch 1) whose mAP50-95 is at most ``max_drop``
    below ``rows[reference]``'s; and the fastest of all with what it costs. Returns the indices,
    the ratios and one sentence that says it."""
    if not rows:
        raise ValueError("no variants to recommend from")
    ref = rows[reference]
    ok = [i for i, r in enumerate(rows) if ref.map - r.map <= max_drop]
    pick = min(ok, key=lambda i: (rows[i].p50_ms, -rows[i].map))
    fastest = min(range(len(rows)), key=lambda i: (rows[i].p50_ms, -rows[i].map))
    r, f = rows[pick], rows[fastest]
    speed = ref.p50_ms / r.p50_ms
    text = (f"Deploy {r.name} ({r.backend}): {speed:.2f}× faster than {ref.name} at batch 1 "
            f"({r.p50_ms:.1f} vs {ref.p50_ms:.1f} ms) for {r.map - ref.map:+.4f} mAP50-95 "
            f"({r.map:.4f}), {r.size_mb:.1f} MB.")
    if fastest != pick:
        text += (f" The fastest variant, {f.name}, is {ref.p50_ms / f.p50_ms:.2f}× faster but costs "
                 f"{ref.map - f.map:.4f} mAP50-95, more than the {max_drop} accepted.")
    return {"index": pick, "fastest": fastest, "speedup": speed, "delta_map": r.map - ref.map,
            "max_drop": max_drop, "reference": reference, "text": text}


# --------------------------------------------------------------------------- runners
def _torch_runner(model: torch.nn.Module, bf16: bool) -> Callable[[np.ndarray], Any]:
    from detopt.models import Postprocessor

    post = Postprocessor(model.strides, model.reg_max, method="nms", score_thr=TIMING_SCORE_THR,
                         iou_thr=IOU_THRESHOLD, max_det=MAX_DET)
    model = model.eval()

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(torch.from_numpy(x))
        return post(out)

    return run


def _runner(spec: VariantSpec, threads: int) -> Callable[[np.ndarray], Any]:
    if spec.backend == "onnxruntime":
        from detopt.compress.quantization.pipeline import ort_session

        sess = ort_session(spec.path, threads)
        return lambda x: sess.run(None, {"images": x})
    return _torch_runner(spec.model, spec.backend == "torch-bf16")


def _accuracy(spec: VariantSpec, val: DetectionDataset, names: list[str], threads: int
              ) -> tuple[float, float, float]:
    from detopt.compress.quantization.pipeline import evaluate_file
    from detopt.engine.validate import evaluate_detector
    from detopt.models import Postprocessor

    if spec.backend == "onnxruntime":
        s = evaluate_file(spec.path, val, names, threads).stats
    else:
        post = Postprocessor(spec.model.strides, spec.model.reg_max, method="nms", score_thr=SCORE_THRESHOLD,
                             iou_thr=IOU_THRESHOLD, max_det=MAX_DET)
        s = evaluate_detector(spec.model.eval(), val, names, post, "cpu", batch_size=16,
                              amp=spec.backend == "torch-bf16").result.stats
    return float(s[0]), float(s[1]), float(s[3])


def measure_variants(specs: Sequence[VariantSpec], val: DetectionDataset, names: list[str], imgsz: int,
                     threads: int | None = None, rounds: int = 4, repeats: int = 10,
                     say: Callable[[str], None] = lambda _line: None) -> list[DeployRow]:
    """Measure every variant (see the module docstring) -> one :class:`DeployRow` each, with the
    Pareto front (mAP50-95 against p50 ms) marked. Latency inputs: the first 8 images of ``val``
    letterboxed as at evaluation."""
    from detopt.compress.quantization.pipeline import interleaved_latency, letterboxed
    from detopt.models import count_flops, count_parameters

    for s in specs:
        if s.backend not in BACKENDS:
            raise ValueError(f"{s.name}: backend {s.backend!r} is not one of {BACKENDS}")
    threads = threads or torch.get_num_threads()
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        acc = []
        for s in specs:
            if s.accuracy is None:
                say(f"  scoring {s.name} on {len(val)} images ...")
            acc.append(s.accuracy if s.accuracy is not None else _accuracy(s, val, names, threads))
        say(f"  timing {len(specs)} variants, batch 1 and 8, {threads} threads, alternating rounds ...")
        images = letterboxed(val, range(min(8, len(val))))
        times = interleaved_latency([_runner(s, threads) for s in specs], images, rounds, repeats)
    finally:
        torch.set_num_threads(prev)
    rows = []
    for s, a, t in zip(specs, acc, times, strict=True):
        rows.append(DeployRow(
            s.name, s.backend, *a, *t, size_mb=os.path.getsize(s.path) / 1e6,
            params_m=count_parameters(s.model) / 1e6, gflops=count_flops(s.model, imgsz) / 1e9,
            file=str(s.path), commands=list(s.commands)))
    for r, on in zip(rows, pareto_front([r.map for r in rows], [r.p50_ms for r in rows]), strict=True):
        r.pareto = bool(on)
    return rows


__all__ = ["DeployRow", "VariantSpec", "measure_variants", "pareto_front", "recommend"]

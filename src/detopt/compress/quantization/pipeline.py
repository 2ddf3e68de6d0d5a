"""``detopt quantize``: post-training static INT8 of a trained detector (and, with ``method="qat"``,
quantization-aware fine-tuning), with the post-processing inside the graph, a search for the
layers to keep float, and an honest report.

Steps (:func:`quantize`):

1. the float weights, the data set (read once) and its classes checked against the weights';
2. calibration images drawn (``seed``) from the training split, letterboxed as at evaluation (no
   augmentation); search images drawn from the rest of the training split;
3. the network exported with a dynamic batch and quantized (:mod:`.graph`): activations uint8,
   weights int8 per channel, the decode and the post-processing float;
4. ``keep_fp32="auto"``: when full INT8 loses more than ``target_drop`` mAP50-95 on the search
   images, the layers are ranked by the error each causes quantized alone (:mod:`.sensitivity`)
   and kept float, most sensitive first, one by one, until the drop is within the target or
   ``max_kept`` layers are kept;
5. ``method="qat"``: the float network fine-tuned with INT8 simulated (:mod:`.qat`, the trainer's
   time budget; the layers step 4 kept float are neither simulated nor quantized) and quantized
   the same way; it becomes ``model-int8.onnx``;
6. ``model-int8.onnx`` written (atomically) and every variant measured on the validation split:
   exact COCO mAP50-95 / mAP50 / AP_small, latency at batch 1 (p50 / p90), images / s at batch 8,
   file size -> ``report.json``, ``report.md``, ``tradeoff.png``.

The search scores on training images, never on the validation split the report scores on, so
the reported drop is not chosen on the images it is measured on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from detopt.compress.quantization.graph import QUANTIZED_KEY, GraphQuantizer
from detopt.compress.quantization.sensitivity import LayerError, layer_sensitivity
from detopt.compress.weights import weights_and_data
from detopt.config import QuantizeConfig
from detopt.constants import PAD_VALUE, SCORE_THRESHOLD
from detopt.data.dataset import DetectionDataset
from detopt.engine.validate import evaluate_detector
from detopt.errors import DetoptInputError
from detopt.evaluation import CocoEvalResult
from detopt.export.onnx_export import export_network, with_postprocess
from detopt.export.onnx_nms import OPSET

#: Fewest calibration images accepted (ranges from fewer are noise).
MIN_CALIB = 16


@dataclass
class Variant:
    """One model the report compares."""

    name: str
    backend: str
    map: float
    map50: float
    ap_small: float
    p50_ms: float
    p90_ms: float
    images_per_s_b8: float
    size_mb: float | None
    kept_float: list[str] = field(default_factory=list)


@dataclass
class SearchStep:
    """One point of the keep-float search: the layers kept float and the mAP50-95 on the search
    images."""

    kept_float: list[str]
    map: float
    drop: float


@dataclass
class QuantizeResult:
    """What :func:`quantize` wrote and measured (``report.json`` holds the same). ``kept_float``:
    the float layers of ``model_path``; ``search_kept``: those the PTQ search chose."""

    model_path: Path
    variants: list[Variant]
    search: list[SearchStep]
    sensitivity: list[LayerError]
    kept_float: list[str]
    target_reached: bool
    settings: dict[str, Any]
    search_kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model_path),
            "settings": self.settings,
            "variants": [asdict(v) for v in self.variants],
            "kept_float": self.kept_float,
            "search_kept": self.search_kept,
            "target_reached": self.target_reached,
            "search": [asdict(s) for s in self.search],
            "sensitivity": [asdict(s) for s in self.sensitivity],
        }


# --------------------------------------------------------------------------- inputs
def letterboxed(dataset: DetectionDataset, indices: Sequence[int]) -> np.ndarray:
    """``float32 [N, 3, S, S]`` in ``[0, 1]``: the images as evaluation feeds them (no augmentation)."""
    if len(indices) == 0:
        return np.zeros((0, 3, dataset.imgsz, dataset.imgsz), np.float32)
    return np.stack([dataset[int(i)]["image"].numpy() for i in indices]).astype(np.float32) / 255.0


def draw_images(n_available: int, calib: int, search: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random indices: ``calib`` calibration images, then up to ``search`` search images
    from the rest (fewer when the split is small)."""
    order = np.random.default_rng(seed).permutation(n_available)
    return np.sort(order[:calib]), np.sort(order[calib : calib + search])


def _subset(dataset: DetectionDataset, indices: Sequence[int]) -> DetectionDataset:
    return DetectionDataset([dataset.records[int(i)] for i in indices], imgsz=dataset.imgsz,
                            category_ids=dataset.category_ids, max_pixels=dataset.max_pixels)


# --------------------------------------------------------------------------- measuring
def ort_session(model: onnx.ModelProto | str | Path, threads: int):
    """A CPU ONNX Runtime session of ``model`` (a proto or a file) with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def evaluate_file(path: Path, dataset: DetectionDataset, names: list[str], threads: int,
                  batch_size: int = 8) -> CocoEvalResult:
    """Exact COCO evaluation of a detopt ONNX file (graph post-processing at score 0.001)."""
    from detopt.inference.onnx_model import OnnxDetector, OnnxPostprocess

    det = OnnxDetector(path, threads=threads, providers=["CPUExecutionProvider"])
    post = OnnxPostprocess(det, score_thr=SCORE_THRESHOLD, iou_thr=det.defaults.get("iou_thr", 0.7),
                           max_det=det.max_det or 300)
    return evaluate_detector(det, dataset, names, post, "cpu", batch_size=batch_size).result


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> np.ndarray:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out


def interleaved_latency(runs: Sequence[Callable[[np.ndarray], Any]], images: np.ndarray, rounds: int = 6,
                        repeats: int = 10) -> list[tuple[float, float, float]]:
    """Per runner ``(p50 ms, p90 ms)`` at batch 1 on ``images[0]`` and images / s at batch 8
    (``images[:8]``, repeated when fewer), measured in ``rounds`` that alternate the runners, so a
    slow spell of a shared machine falls on all of them alike."""
    one = images[:1]
    eight = np.concatenate([images] * (8 // len(images) + 1))[:8]
    t1: list[list[float]] = [[] for _ in runs]
    t8: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            t1[i].extend(time_calls(lambda run=run: run(one), repeats, warmup=1).tolist())
            t8[i].extend(time_calls(lambda run=run: run(eight), max(1, repeats // 5), warmup=0).tolist())
    return [(float(np.percentile(a, 50) * 1e3), float(np.percentile(a, 90) * 1e3), 8 / float(np.median(b)))
            for a, b in zip(t1, t8, strict=True)]


def _torch_runner(model: torch.nn.Module, postprocessor) -> Callable[[np.ndarray], Any]:
    def run(x: np.ndarray):
        with torch.inference_mode():
            return postprocessor(model(torch.from_numpy(x)))

    return run


def _onnx_runner(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    sess = ort_session(path, threads)
    return lambda x: sess.run(None, {"images": x})


def _eval_stats(r: CocoEvalResult) -> tuple[float, float, float]:
    s = r.stats
    return float(s[0]), float(s[1]), float(s[3])


def finetune_qat(model: torch.nn.Module, calib: np.ndarray, cfg: QuantizeConfig, imgsz: int, run: Path,
                 say: Callable[[str], None], keep_float: Sequence[str] = ()) -> torch.nn.Module:
    """Quantization-aware fine-tuning (:mod:`.qat`) of ``model`` on the training split ->
    the float network (BatchNorm folded) to quantize. ``keep_float``: layers that stay float in
    the INT8 graph, so they are not simulated in INT8 either."""
    from detopt.compress.quantization.qat import FreezeObservers, QATTrainer, prepare_qat, strip_qat
    from detopt.config import TrainConfig, build_config

    spec = dict(getattr(model, "spec", {}))
    budget = {"time": cfg.time} if cfg.time else {"epochs": cfg.epochs or 2}
    tcfg = build_config(TrainConfig, {
        "data": cfg.data, "images": cfg.images, "allow_outside_root": cfg.allow_outside_root,
        "max_pixels": cfg.max_pixels, "skip_invalid": cfg.skip_invalid, "out": str(run),
        "model": spec.get("name", "yolo-n"), "p2": bool(spec.get("p2", False)), "imgsz": imgsz,
        **budget, "batch": cfg.batch, "nbs": cfg.batch, "lr0": cfg.qat_lr, "lrf": 0.1,
        "warmup_epochs": 0, "warmup_min_iters": 0, "close_mosaic": 10_000, "close_mosaic_max_fraction": 1.0,
        "amp": False, "val": False, "progress": False, "seed": cfg.seed, "workers": cfg.workers,
    })
    qat_model = prepare_qat(model, calib, keep_float=keep_float)
    kept = f", {len(keep_float)} layer(s) float" if keep_float else ""
    say(f"QAT: fine-tuning with INT8 simulated ({tcfg.time or tcfg.epochs} {'s' if tcfg.time else 'epochs'}, "
        f"lr {cfg.qat_lr}, no mosaic, observers frozen after the first epoch{kept}) ...")
    trainer = QATTrainer(tcfg, qat_model, callbacks=[FreezeObservers(1)])
    trainer.train()
    tuned = trainer.ema.module if trainer.ema is not None else trainer.model
    return strip_qat(tuned).cpu()


# --------------------------------------------------------------------------- the pipeline
class _Builder:
    """Writes a network (float or quantized) as a detopt ONNX file with the configured
    post-processing inside."""

    def __init__(self, model: torch.nn.Module, names: list[str], category_ids: list[int],
                 cfg: QuantizeConfig, imgsz: int) -> None:
        self.model, self.names, self.ids, self.cfg, self.imgsz = model, names, category_ids, cfg, imgsz

    def write(self, net: onnx.ModelProto, path: Path, quant: dict[str, Any] | None) -> Path:
        opset = next((o.version for o in net.opset_import if o.domain in ("", "ai.onnx")), OPSET)
        proto = with_postprocess(
            net, self.model, names=self.names, category_ids=self.ids, imgsz=self.imgsz, dynamic=False,
            nms=self.cfg.nms, score_thr=self.cfg.score_thr, iou_thr=self.cfg.iou_thr, sigma=None,
            max_det=self.cfg.max_det, agnostic=False, opset=opset,
            extra_meta={QUANTIZED_KEY: quant} if quant is not None else None,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        onnx.save(proto, str(tmp))
        tmp.replace(path)
        return path


def quantize(cfg: QuantizeConfig | dict[str, Any], on_progress: Callable[[str], None] | None = None,
             network: onnx.ModelProto | None = None) -> QuantizeResult:
    """Post-training static INT8 (see the module docstring). ``cfg``: a :class:`QuantizeConfig`
    or its keys. ``on_progress`` receives one line per step (the CLI prints them). ``network``:
    the weights' network exported already (``export_network(model, imgsz, dynamic_batch=True)``),
    which saves exporting it again."""
    from detopt.config import build_config
    from detopt.models.postprocessor import Postprocessor

    if not isinstance(cfg, QuantizeConfig):
        cfg = build_config(QuantizeConfig, dict(cfg))
    say = on_progress or (lambda _line: None)
    threads = cfg.threads or torch.get_num_threads()
    out = Path(cfg.out)
    work = out / "work"

    start = weights_and_data(cfg, "quantize")
    w, model, imgsz, train, val = start.weights, start.model, start.imgsz, start.train, start.val
    if len(train) < max(cfg.calib, MIN_CALIB):
        raise DetoptInputError(f"{cfg.data}: the training split has {len(train)} images; --calib "
                               f"{cfg.calib} needs at least that many (lower --calib, at least {MIN_CALIB})")
    calib_idx, search_idx = draw_images(len(train), cfg.calib, cfg.search_images, cfg.seed)
    if len(search_idx) < 8:
        search_idx = calib_idx[: cfg.search_images]  # a tiny split: search on calibration images
    calib = letterboxed(train, calib_idx)
    search = _subset(train, search_idx)
    search_images = letterboxed(train, search_idx[:32])
    say(f"calibration: {len(calib_idx)} training images; search: {len(search_idx)} others; "
        f"report: {len(val)} {cfg.val_split} images; {threads} threads")

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # torch's timings at the stated thread count; restored at the end
    net = network if network is not None else export_network(model, imgsz, dynamic_batch=True)
    builder = _Builder(model, list(w.names), list(w.category_ids), cfg, imgsz)
    fp32_path = builder.write(net, work / "model-fp32.onnx", None)
    gq = GraphQuantizer(net, calib, cfg.calibrator, cfg.per_channel, workdir=work)
    meta = {"method": "ptq", "engine": "onnxruntime QDQ", "activations": "uint8", "weights": "int8",
            "per_channel": cfg.per_channel, "calibrator": cfg.calibrator, "calib": len(calib_idx),
            "seed": cfg.seed}

    def write_int8(keep: Sequence[str], path: Path) -> Path:
        return builder.write(gq.quantize(keep_float=keep), path, {**meta, "kept_float": list(keep)})

    try:
        full_path = write_int8([], work / "model-int8-full.onnx")
        base = _eval_stats(evaluate_file(fp32_path, search, list(w.names), threads))[0]
        full_map = _eval_stats(evaluate_file(full_path, search, list(w.names), threads))[0]
        steps = [SearchStep([], full_map, base - full_map)]
        say(f"search images: FP32 mAP50-95 {base:.4f}, INT8 {full_map:.4f} (drop {base - full_map:+.4f})")
        sens: list[LayerError] = []
        if cfg.keep_fp32 == "auto" and base - full_map > cfg.target_drop and cfg.max_kept > 0:
            say(f"ranking {len(gq.layers)} layers by the error each causes quantized alone ...")
            sens = layer_sensitivity(gq, search_images, threads)
            order = [s.layer for s in sens]
            for k in range(1, min(cfg.max_kept, len(order)) + 1):
                p = write_int8(order[:k], work / "model-int8-search.onnx")
                m = _eval_stats(evaluate_file(p, search, list(w.names), threads))[0]
                steps.append(SearchStep(order[:k], m, base - m))
                say(f"  keep {k} float ({order[k - 1]}): mAP50-95 {m:.4f} (drop {base - m:+.4f})")
                if base - m <= cfg.target_drop:
                    break
        elif isinstance(cfg.keep_fp32, list):
            p = write_int8(cfg.keep_fp32, work / "model-int8-search.onnx")
            m = _eval_stats(evaluate_file(p, search, list(w.names), threads))[0]
            steps.append(SearchStep(list(cfg.keep_fp32), m, base - m))
        if isinstance(cfg.keep_fp32, list):
            best = steps[-1]
        else:  # the fewest float layers within the target, else the smallest drop
            within = [st for st in steps if st.drop <= cfg.target_drop]
            best = within[0] if within else min(steps, key=lambda st: st.drop)
        kept = best.kept_float
        target_reached = min(s.drop for s in steps) <= cfg.target_drop
        ptq_path = write_int8(kept, (work if cfg.method == "qat" else out) / "model-int8.onnx")
        model_path = ptq_path
        if cfg.method == "qat":
            tuned = finetune_qat(model, calib, cfg, imgsz, work / "qat", say, keep_float=kept)
            tuned_net = export_network(tuned, imgsz, dynamic_batch=True)
            tuned_fp32_path = builder.write(tuned_net, work / "model-fp32-qat.onnx", None)
            gq_qat = GraphQuantizer(tuned_net, calib, cfg.calibrator, cfg.per_channel,
                                    workdir=work / "qat-graph")
            try:
                model_path = builder.write(gq_qat.quantize(keep_float=kept), out / "model-int8.onnx",
                                           {**meta, "method": "qat", "kept_float": list(kept)})
            finally:
                gq_qat.close()
        say(f"wrote {model_path}")

        # the report: every variant on the validation split
        sample = letterboxed(val, range(min(8, len(val))))
        names = list(w.names)
        post = Postprocessor(model.strides, model.reg_max, method="nms", score_thr=cfg.score_thr,
                             iou_thr=cfg.iou_thr, max_det=cfg.max_det)
        eval_post = Postprocessor(model.strides, model.reg_max, method="nms", score_thr=SCORE_THRESHOLD,
                                  iou_thr=cfg.iou_thr, max_det=cfg.max_det)
        rows = [("FP32", "onnxruntime", fp32_path, []), ("INT8 PTQ", "onnxruntime", full_path, [])]
        if kept:
            rows.append((f"INT8 PTQ, {len(kept)} layer(s) float", "onnxruntime", ptq_path, kept))
        if cfg.method == "qat":  # the tuned float weights: what QAT's own rounding costs is against them
            rows.append(("FP32 after QAT fine-tuning", "onnxruntime", tuned_fp32_path, []))
            rows.append((f"INT8 QAT{f', {len(kept)} layer(s) float' if kept else ''}", "onnxruntime",
                         model_path, kept))
        say("scoring every variant on the validation split ...")
        stats = [_eval_stats(evaluate_detector(model, val, names, eval_post, "cpu", batch_size=8).result)]
        stats += [_eval_stats(evaluate_file(path, val, names, threads)) for _, _, path, _ in rows]
        if cfg.latency:
            say("timing every variant (alternating rounds) ...")
            runners = [_torch_runner(model, post)] + [_onnx_runner(path, threads) for _, _, path, _ in rows]
            times = interleaved_latency(runners, sample)
        else:
            times = [(float("nan"),) * 3] * (len(rows) + 1)
        variants = [Variant("FP32", "torch eager", *stats[0], *times[0], None)]
        for (name, backend, path, keep), st, tm in zip(rows, stats[1:], times[1:], strict=True):
            variants.append(Variant(name, backend, *st, *tm, os.path.getsize(path) / 1e6, list(keep)))
    finally:
        gq.close()
        torch.set_num_threads(prev_threads)
    settings = {**cfg.model_dump(mode="json"), "threads": threads, "imgsz": imgsz,
                "pad_value": PAD_VALUE, "onnxruntime": _ort_version(), "torch": torch.__version__}
    result = QuantizeResult(model_path, variants, steps, sens, kept, target_reached, settings, kept)
    write_report(result, out)
    return result


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# --------------------------------------------------------------------------- report
def report_markdown(result: QuantizeResult) -> str:
    """The report a person reads: the variants side by side, then the search."""
    s = result.settings
    v0 = result.variants[0]
    lines = [
        "# INT8 quantization report",
        "",
        f"Weights `{s['weights']}`, data `{s['data']}`, {s['imgsz']} px, {s['threads']} threads; "
        f"calibration: {s['calib']} training images ({s['calibrator']}, seed {s['seed']}), weights int8 "
        f"{'per channel' if s['per_channel'] else 'per tensor'}, activations uint8; box decode and "
        f"post-processing ({s['nms']}) float. Accuracy: exact COCO evaluation on the `{s['val_split']}` "
        "split (score > 0.001); latency: one image, median and 90th percentile; throughput: batch 8.",
        "",
        "| model | backend | mAP50-95 | mAP50 | AP_small | p50 ms (b1) | p90 ms (b1) | images/s (b8) | "
        "size MB | speed-up vs FP32 torch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    def num(x: float, digits: int, suffix: str = "") -> str:
        return f"{x:.{digits}f}{suffix}" if x == x else "—"  # NaN: not timed (latency off)

    for v in result.variants:
        size = f"{v.size_mb:.2f}" if v.size_mb is not None else "—"
        lines.append(f"| {v.name} | {v.backend} | {v.map:.4f} | {v.map50:.4f} | {v.ap_small:.4f} | "
                     f"{num(v.p50_ms, 2)} | {num(v.p90_ms, 2)} | {num(v.images_per_s_b8, 1)} | {size} | "
                     f"{num(v0.p50_ms / v.p50_ms, 2, 'x')} |")
    fp32 = next(v for v in result.variants if v.name == "FP32" and v.backend == "onnxruntime")
    final = result.variants[-1]
    lines += [
        "",
        f"Final model `{result.model_path.name}`: mAP50-95 {final.map - fp32.map:+.4f} against FP32 "
        f"(ONNX Runtime), {num(fp32.p50_ms / final.p50_ms, 2, 'x')} its speed at batch 1, "
        f"{final.size_mb / fp32.size_mb:.2f}x its size.",
    ]
    tuned = next((v for v in result.variants if v.name == "FP32 after QAT fine-tuning"), None)
    if tuned is not None:
        lines.append(f"QAT trains the weights further ({s['time'] or s['epochs'] or 2} "
                     f"{'s' if s['time'] else 'epochs'}): against the same weights in float it changes "
                     f"mAP50-95 by {final.map - tuned.map:+.4f} (the cost of INT8 after QAT); against the "
                     f"starting FP32 weights by {final.map - fp32.map:+.4f}, which includes what the extra "
                     "training gained or lost.")
    if result.kept_float:
        lines.append(f"Layers kept float ({len(result.kept_float)}): " +
                     ", ".join(f"`{k}`" for k in result.kept_float) + ".")
    else:
        lines.append("No layer kept float.")
    if not result.target_reached:
        lines.append(f"**The target drop {s['target_drop']} was not reached** within {s['max_kept']} "
                     "float layers on the search images; the smallest drop found is kept.")
    lines += ["", "## Keep-float search (training images, not the report's)", "",
              "| layers float | mAP50-95 | drop |", "|---|---|---|"]
    for st in result.search:
        lines.append(f"| {len(st.kept_float)} | {st.map:.4f} | {st.drop:+.4f} |")
    if result.sensitivity:
        lines += ["", "## Most sensitive layers (quantized alone; output SQNR, dB)", "",
                  "| layer | scores SQNR | boxes SQNR |", "|---|---|---|"]
        for e in result.sensitivity[:15]:
            lines.append(f"| `{e.layer}` | {e.scores_db:.1f} | {e.boxes_db:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(result: QuantizeResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result.to_dict(), indent=2))
    (out / "report.md").write_text(report_markdown(result))
    if result.settings.get("latency", True):  # without timings there is nothing to plot
        plot_tradeoff(result.variants, out / "tradeoff.png")


def plot_tradeoff(variants: Sequence[Variant], path: Path) -> Path:
    """mAP50-95 against batch-1 latency, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for v in variants:
        ax.scatter(v.p50_ms, v.map, s=40)
        ax.annotate(f"{v.name} ({v.backend})", (v.p50_ms, v.map), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("latency per image, batch 1, p50 (ms)")
    ax.set_ylabel("mAP50-95 (validation)")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

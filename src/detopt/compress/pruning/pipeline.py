"""``detopt prune``: prune trained weights, fine-tune them, and report what it cost and gained.

Structured (default): ``steps`` times — trace the channels (:mod:`.graph`), score them, remove the
units that take the FLOPs to ``(1 - ratio)^(step / steps)`` of the original, evaluate, fine-tune
for ``finetune / steps`` (the trainer: EMA, time budget, checkpoints; ``teacher`` distils). The
pruned widths are in the checkpoints' model spec, so ``RUN/best.pt`` loads alone everywhere.

Unstructured: global magnitude pruning to the sparsity ``ratio``, fine-tuned with the zeros kept.

``RUN`` is a training run (``best.pt``, ``last.pt``, ``results.csv``, ``config.yaml``: the last
step's fine-tune; earlier steps in ``RUN/steps/<k>``) plus ``prune.json``: widths, parameters,
GFLOPs, mAP50-95 before / after pruning / after fine-tuning on the validation split (exact COCO
evaluation at score 0.001), latency before / after (torch eager and ONNX Runtime FP32, batch 1,
interleaved) and, for unstructured pruning, the sparsity per layer and the compressed size.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detopt.compress.pruning.graph import trace_channels
from detopt.compress.pruning.structured import IMPORTANCES, apply_pruning, plan_pruning, unit_scores
from detopt.compress.pruning.unstructured import (
    KeepZeros,
    compressed_bytes,
    magnitude_prune,
    overall_sparsity,
    sparsity_table,
)
from detopt.compress.weights import weights_and_data
from detopt.config import PruneConfig, TrainConfig, build_config
from detopt.constants import SCORE_THRESHOLD
from detopt.data.dataset import DetectionDataset, collate_detections
from detopt.engine.checkpoint import load_checkpoint
from detopt.engine.validate import evaluate_detector
from detopt.models import DetectionCriterion, Postprocessor, count_flops, count_parameters

FINETUNE_SHARE = 0.25
"""Default fine-tune budget: this share of the weights' own training time."""


@dataclass
class StepResult:
    step: int
    flops_removed: float  # of the original model, after this step
    gflops: float
    params_m: float
    map_pruned: float  # before this step's fine-tune
    map_tuned: float | None


@dataclass
class PruneResult:
    method: str
    ratio: float
    importance: str
    global_rank: bool
    map_before: float
    map_after_pruning: float
    map_after_finetune: float | None
    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float
    widths_before: dict[str, int]
    widths_after: dict[str, int]
    steps: list[StepResult] = field(default_factory=list)
    finetune_seconds: float | None = None
    latency: dict[str, Any] = field(default_factory=dict)
    sparsity: list[dict[str, Any]] = field(default_factory=list)
    size: dict[str, int] = field(default_factory=dict)
    sparsity_phase: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    out: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _widths(model: nn.Module) -> dict[str, int]:
    return {n: int(m.out_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _evaluate(model: nn.Module, val: DetectionDataset, names: list[str], device: torch.device) -> float:
    pp = Postprocessor(model.strides, model.reg_max, score_thr=SCORE_THRESHOLD)
    was = model.training
    model.eval()
    try:
        return float(evaluate_detector(model, val, names, pp, device, batch_size=16).result.stats[0])
    finally:
        model.train(was)


def _loss_batches(model: nn.Module, train: DetectionDataset, n: int, batch: int, seed: int,
                  device: torch.device) -> Iterator[torch.Tensor]:
    """``n`` training losses of ``model`` (letterboxed images, no augmentation; a seeded draw),
    computed lazily (only an importance that needs gradients draws them)."""
    crit = DetectionCriterion(model.num_classes, model.strides, model.reg_max)
    order = np.random.default_rng(seed).permutation(len(train))
    model.eval()  # the outputs are the same in both modes; eval leaves the BN statistics alone
    for k in range(n):
        idx = order[k * batch : (k + 1) * batch]
        if len(idx) == 0:
            break
        b = collate_detections([train[int(i)] for i in idx])
        images = b["images"].to(device).float().div_(255)
        targets = {key: b[key] for key in ("boxes", "labels", "batch_index", "crowd")}
        loss, _ = crit(model(images), targets)
        yield loss


def _finetune_budget(cfg: PruneConfig) -> tuple[float | None, int | None]:
    """``(seconds, None)`` or ``(None, epochs per step)`` of the fine-tune."""
    if cfg.finetune_epochs is not None:
        return None, cfg.finetune_epochs
    if cfg.finetune is not None:
        return cfg.finetune, None
    if Path(cfg.weights).suffix == ".pt":
        elapsed = float(load_checkpoint(cfg.weights).get("elapsed") or 0.0)
        if elapsed > 0:
            return FINETUNE_SHARE * elapsed, None
    return None, 5


def _slimming_trainer():
    """:class:`ModelTrainer` that adds ``bn_l1 · sign(γ)`` to the gradient of every batch-norm scale
    before each step (network slimming's L1 subgradient, after clipping, so the clip does not
    scale it away) and logs ``Σ|γ|`` as ``bn_l1``; built on first use (the trainer is lazy)."""
    from detopt.engine.trainer import ModelTrainer

    class SlimmingTrainer(ModelTrainer):
        def __init__(self, cfg: TrainConfig, model: nn.Module, bn_l1: float, callbacks: list[Any]) -> None:
            self.bn_l1 = bn_l1
            super().__init__(cfg, model, callbacks=callbacks)

        def _gammas(self) -> list[torch.Tensor]:
            return [m.weight for m in self.model.modules() if isinstance(m, nn.BatchNorm2d)]

        def compute_loss(self, images: torch.Tensor, outputs: list[torch.Tensor], targets: dict[str, Any],
                         epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
            loss, items = super().compute_loss(images, outputs, targets, epoch)
            return loss, {**items, "bn_l1": float(sum(g.detach().abs().sum() for g in self._gammas()))}

        def adjust_gradients(self) -> None:
            for g in self._gammas():
                if g.grad is not None:
                    g.grad.add_(torch.sign(g.detach()), alpha=self.bn_l1)

    return SlimmingTrainer


def finetune(model: nn.Module, cfg: PruneConfig, imgsz: int, out: Path, seconds: float | None,
              epochs: int | None, callbacks: list[Any], bn_l1: float | None = None
              ) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune ``model`` on the training split into the run folder ``out`` -> (EMA model, summary);
    with ``bn_l1``, the slimming phase (L1 on the BN scales, no teacher)."""
    from detopt.engine.trainer import ModelTrainer

    spec = dict(model.spec)
    budget = {"time": seconds} if seconds is not None else {"epochs": max(int(epochs or 1), 1)}
    tcfg = build_config(TrainConfig, {
        "data": cfg.data, "images": cfg.images, "allow_outside_root": cfg.allow_outside_root,
        "max_pixels": cfg.max_pixels, "skip_invalid": cfg.skip_invalid, "out": str(out),
        "model": spec.get("name", "yolo-n"), "p2": bool(spec.get("p2", False)), "imgsz": imgsz, **budget,
        "batch": cfg.batch, "nbs": cfg.batch, "lr0": cfg.lr0, "lrf": 0.1, "warmup_epochs": 0,
        "warmup_min_iters": 0, "seed": cfg.seed, "workers": cfg.workers, "device": cfg.device,
        "teacher": None if bn_l1 else cfg.teacher, "val_split": cfg.val_split, "progress": False,
    })
    if bn_l1:
        trainer = _slimming_trainer()(tcfg, model, bn_l1, callbacks)
    else:
        trainer = ModelTrainer(tcfg, model, callbacks=callbacks)
    summary = trainer.train()
    tuned = trainer.ema.module if trainer.ema is not None else trainer.model
    return tuned.float().cpu().eval(), summary


def _latency(before: nn.Module, after: nn.Module, imgsz: int, threads: int,
             say: Callable[[str], None]) -> dict[str, Any]:
    """ms per image at batch 1 (p50) of both models, torch eager and ONNX Runtime FP32 network
    (interleaved rounds), with the speed-ups."""
    from detopt.compress.quantization.pipeline import interleaved_latency, ort_session
    from detopt.export.onnx_export import export_network

    images = np.random.default_rng(0).random((8, 3, imgsz, imgsz), dtype=np.float32)
    runs, labels = [], []
    for label, m in (("before", before), ("after", after)):
        m = m.eval()
        sess = ort_session(export_network(m, imgsz, dynamic_batch=True), threads)

        def torch_run(x: np.ndarray, m: nn.Module = m) -> Any:
            with torch.inference_mode():
                return m(torch.from_numpy(x))

        runs += [torch_run, lambda x, s=sess: s.run(None, {"images": x})]
        labels += [f"torch_{label}", f"ort_{label}"]
    say(f"latency: torch eager and ONNX Runtime FP32, batch 1, {threads} threads, interleaved ...")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = interleaved_latency(runs, images, rounds=4, repeats=10)
    finally:
        torch.set_num_threads(prev)
    out: dict[str, Any] = {"threads": threads, "imgsz": imgsz}
    for label, (p50, p90, ips) in zip(labels, res, strict=True):
        out[label] = {"p50_ms": p50, "p90_ms": p90, "img_s_b8": ips}
    out["torch_speedup"] = out["torch_before"]["p50_ms"] / out["torch_after"]["p50_ms"]
    out["ort_speedup"] = out["ort_before"]["p50_ms"] / out["ort_after"]["p50_ms"]
    return out


def prune(cfg: PruneConfig | dict[str, Any], on_progress: Callable[[str], None] | None = None) -> PruneResult:
    """Prune and fine-tune (see the module docstring). ``cfg``: a :class:`PruneConfig` or its keys."""
    from detopt.runtime import resolve_device

    if not isinstance(cfg, PruneConfig):
        cfg = build_config(PruneConfig, dict(cfg))
    say = on_progress or (lambda _line: None)
    out = Path(cfg.out)
    start = weights_and_data(cfg, "prune")
    w, imgsz, names, train, val = start.weights, start.imgsz, start.names, start.train, start.val
    model = start.model.requires_grad_(True)  # loaded for inference; trained here
    if cfg.teacher is not None:
        from detopt.engine.distill import load_teacher

        load_teacher(cfg.teacher, names)  # one line now, not after pruning
    device = resolve_device(cfg.device)
    threads = cfg.threads or torch.get_num_threads()
    original = copy.deepcopy(model)
    flops0, params0 = count_flops(model, imgsz), count_parameters(model)
    widths0 = _widths(model)
    say(f"{cfg.weights}: {params0 / 1e6:.2f} M parameters, {flops0 / 1e9:.2f} GFLOPs at {imgsz}; "
        f"evaluating on {len(val)} {cfg.val_split} images ...")
    map0 = _evaluate(model, val, names, device)
    seconds, epochs = _finetune_budget(cfg)
    steps = cfg.steps if cfg.method == "structured" else 1
    per_step = None if seconds is None else seconds / steps
    tuning = seconds is not None or (epochs or 0) > 0
    how = f"{seconds:.0f} s" if seconds is not None else f"{epochs} epochs"
    say(f"mAP50-95 before: {map0:.4f}; fine-tune: {how}" + (f" over {steps} steps" if steps > 1 else ""))
    result = PruneResult(cfg.method, cfg.ratio, cfg.importance, cfg.global_rank, map0, map0, None, params0, 0,
                         flops0 / 1e9, 0.0, widths0, {}, out=str(out), finetune_seconds=seconds)
    model = model.to(device)
    if cfg.method == "structured" and (cfg.sparsity or cfg.sparsity_epochs):
        say(f"network slimming: training with L1 {cfg.sparsity_l1} on the BN scales for "
            + (f"{cfg.sparsity:.0f} s" if cfg.sparsity else f"{cfg.sparsity_epochs} epochs") + " ...")
        l1_before = _bn_l1(model)
        model, summary = finetune(model, cfg, imgsz, out / "sparsity", cfg.sparsity, cfg.sparsity_epochs, [],
                                   bn_l1=cfg.sparsity_l1)
        model = model.to(device)
        slim_map = float(summary["metrics"].get("metrics/AP", 0.0))
        result.sparsity_phase = {"l1_before": l1_before, "l1_after": _bn_l1(model),
                                 "epochs": summary["epochs"], "map": slim_map}
        say(f"network slimming: Σ|γ| {l1_before:.1f} -> {result.sparsity_phase['l1_after']:.1f}, "
            f"mAP50-95 {result.sparsity_phase['map']:.4f}")
    if cfg.method == "structured":
        for step in range(1, steps + 1):
            target = (1.0 - cfg.ratio) ** (step / steps) * flops0
            current = count_flops(model, imgsz)
            if current > target:
                graph = trace_channels(model, imgsz)
                scores = IMPORTANCES[cfg.importance](
                    model, graph, loss_batches=_loss_batches(model, train, cfg.taylor_batches, cfg.batch,
                                                             cfg.seed + step, device))
                plan = plan_pruning(graph, unit_scores(graph, scores), 1.0 - target / current, cfg.round_to,
                                    cfg.global_rank)
                apply_pruning(model, graph, plan.removed)
            else:  # an earlier step's rounding got here already
                say(f"step {step}/{steps}: the FLOPs are already within the target; nothing to remove")
            model.eval()
            flops = count_flops(model, imgsz)
            pruned_map = _evaluate(model, val, names, device)
            say(f"step {step}/{steps}: {1 - flops / flops0:.1%} of the FLOPs removed "
                f"({flops / 1e9:.2f} GFLOPs, {count_parameters(model) / 1e6:.2f} M parameters); "
                f"mAP50-95 {pruned_map:.4f} before fine-tuning")
            if step == 1:
                result.map_after_pruning = pruned_map
            tuned_map = None
            if tuning:
                run = out if step == steps else out / "steps" / str(step)
                model, summary = finetune(model, cfg, imgsz, run, per_step, epochs, [])
                model = model.to(device)
                tuned_map = float(summary["metrics"].get("metrics/AP", _evaluate(model, val, names, device)))
                say(f"step {step}/{steps}: fine-tuned {summary['epochs']} epochs -> mAP50-95 {tuned_map:.4f}")
            result.steps.append(StepResult(step, 1 - flops / flops0, flops / 1e9,
                                           count_parameters(model) / 1e6, pruned_map, tuned_map))
        result.map_after_finetune = result.steps[-1].map_tuned
    else:
        raw0, gz0 = compressed_bytes(model)
        threshold = magnitude_prune(model, cfg.ratio)
        result.map_after_pruning = _evaluate(model, val, names, device)
        say(f"unstructured: {overall_sparsity(model):.1%} of the conv weights set to 0 "
            f"(|w| <= {threshold:.3g}); "
            f"mAP50-95 {result.map_after_pruning:.4f} before fine-tuning")
        if tuning:
            model, summary = finetune(model, cfg, imgsz, out, seconds, epochs, [KeepZeros()])
            result.map_after_finetune = float(summary["metrics"].get("metrics/AP", 0.0))
        gz1 = compressed_bytes(model)[1]
        result.sparsity = sparsity_table(model)
        result.size = {"raw_bytes": raw0, "gzip_before": gz0, "gzip_after": gz1}
        result.notes.append(
            "Unstructured sparsity does not make dense kernels faster: torch and ONNX Runtime multiply "
            "the zeros like any other weight (see the latency). It shrinks the compressed file "
            f"({gz0 / 1e6:.2f} MB -> {gz1 / 1e6:.2f} MB gzip) and would pay off with a sparse runtime.")
    model = model.float().cpu().eval()
    if not tuning:
        from detopt.engine.checkpoint import atomic_save

        atomic_save(_checkpoint_of(model, w, cfg), out / "best.pt")
        atomic_save(_checkpoint_of(model, w, cfg), out / "last.pt")
    result.params_after = count_parameters(model)
    result.gflops_after = count_flops(model, imgsz) / 1e9
    result.widths_after = _widths(model)
    if cfg.latency:
        result.latency = _latency(original, model, imgsz, threads, say)
        if cfg.method == "unstructured":
            result.notes.append(f"Latency torch {result.latency['torch_speedup']:.2f}x, ONNX Runtime "
                                f"{result.latency['ort_speedup']:.2f}x: unchanged within noise, as expected.")
    write_json(result, out / "prune.json")
    return result


def _bn_l1(model: nn.Module) -> float:
    return float(sum(m.weight.detach().abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm2d)))


def _checkpoint_of(model: nn.Module, w: Any, cfg: PruneConfig) -> dict[str, Any]:
    """A checkpoint of a pruned model that was not fine-tuned (loads like a trained run's)."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return {"epoch": -1, "epochs": 0, "model": state, "ema": None, "spec": dict(model.spec),
            "names": list(w.names), "category_ids": list(w.category_ids),
            "config": {"imgsz": cfg.imgsz or w.imgsz}, "elapsed": 0.0}


def write_json(result: PruneResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=1))
    os.replace(tmp, path)

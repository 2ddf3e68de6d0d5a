"""``detopt demo``: the whole optimize loop on the embedded data set, ending in ``RUN/report.html``.

Steps (each a function of its own, each writing its artefacts into ``RUN``):

1. :func:`synthesize` — the embedded data set (``RUN/data``: YOLO + COCO);
2. :func:`analyse_data` — file validation, statistics, sample grids (``RUN/analysis``);
3. :func:`fit_anchors` — IoU k-means + evolution vs Euclidean k-means (``RUN/analysis``);
4. :func:`train_model` — the default CPU model on the time budget (``RUN/train``; an unfinished
   run is resumed exactly, a finished one reused);
5. :func:`evaluate_model` — exact COCO evaluation of the EMA weights, per-class AP, PR / F1 /
   confusion plots, predictions drawn (``RUN/eval``);
6. :func:`study_postprocessing` — every NMS variant and the IoU / score thresholds scored on the
   validation predictions (``RUN/postprocess``);

the speed half (skipped with ``speed=False``, ``--accuracy-only``):

7. :func:`prune_model` — half the FLOPs removed, one epoch of fine-tuning distilled from the
   unpruned model (``RUN/prune``);
8. :func:`export_models` — both models as safetensors and ONNX with NMS in the graph
   (``RUN/deploy``), each INT8-quantized (``RUN/quantize``, ``RUN/quantize-pruned``);
9. :func:`measure_deploy` — seven deployment variants measured side by side: accuracy, latency,
   throughput, size; the Pareto front, the recommendation, the commands (``RUN/deploy``);
10. :func:`tune_study` — a small study of fine-tuning hyperparameters, shown, not applied
    (``RUN/tune``);
11. :func:`detopt.report.write_report` — ``RUN/report.html``.

Every step records its parameters and summary in ``RUN/steps/<step>.json``; a second run with the
same parameters (and the same trained weights for the steps after training) reuses it instead of
recomputing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detopt.config import DemoConfig, PruneConfig, TrainConfig, build_config

STEPS = ("data", "analysis", "anchors", "train", "evaluate", "postprocess", "prune", "export", "deploy",
         "tune", "report")


# --------------------------------------------------------------------------- step cache
def _json_ready(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _files_in(summary: Any) -> list[str]:
    """Every ``.png`` / ``.json`` / ``.pt`` path named in a summary (relative to RUN)."""
    if isinstance(summary, dict):
        return [p for v in summary.values() for p in _files_in(v)]
    if isinstance(summary, list):
        return [p for v in summary for p in _files_in(v)]
    if isinstance(summary, str) and summary.endswith((".png", ".json", ".pt")) and "/" in summary:
        return [summary]
    return []


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_ready(doc), indent=1))
    os.replace(tmp, path)


class _Steps:
    """Runs steps, reusing a step's summary when its parameters match and its files exist."""

    def __init__(self, run: Path, log: Callable[[str], None]) -> None:
        self.run, self.log = run, log
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []

    def __call__(
        self, name: str, params: dict[str, Any], fn: Callable[[], dict[str, Any]], cache: bool = True
    ) -> dict[str, Any]:
        """``fn()``'s summary, or the stored one when ``cache`` and the parameters match."""
        from detopt import __version__

        params = _json_ready(params | {"detopt": __version__})
        path = self.run / "steps" / f"{name}.json"
        if cache and path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                doc = {}
            files_ok = all((self.run / p).exists() for p in _files_in(doc.get("summary")))
            if doc.get("params") == params and files_ok:
                self.log(f"[{name}] reusing {path.relative_to(self.run)} (same parameters)")
                self.seconds[name] = float(doc.get("seconds", 0.0))
                self.reused.append(name)
                return doc["summary"]
        self.log(f"[{name}] running")
        t = time.perf_counter()
        summary = _json_ready(fn())
        self.seconds[name] = time.perf_counter() - t
        _write_json(path, {"params": params, "seconds": self.seconds[name], "summary": summary})
        self.log(f"[{name}] done in {self.seconds[name]:.1f} s")
        return summary


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- steps
def synthesize(run: Path, cfg: DemoConfig) -> dict[str, Any]:
    """Write the embedded data set into ``run/data``."""
    from detopt.data.synth import default_workers, write_synthetic

    r = cfg.resolved()
    counts = write_synthetic(
        run / "data",
        train=r["train_images"],
        val=r["val_images"],
        imgsz=cfg.imgsz,
        seed=cfg.seed,
        workers=default_workers(),
        overwrite=True,
    )
    return {"counts": counts, "data_yaml": "data/data.yaml"}


def analyse_data(run: Path, cfg: DemoConfig) -> dict[str, Any]:
    """Validate every file, compute the statistics and draw sample grids (``run/analysis``)."""
    from detopt.data.dataset import DetectionDataset
    from detopt.data.formats import load_dataset
    from detopt.data.preview import preview_grid
    from detopt.data.stats import dataset_stats, save_stats_plots
    from detopt.data.transforms.pipeline import default_pipeline
    from detopt.data.validate import validate_dataset
    from detopt.report.figures import write_png

    data_yaml = run / "data" / "data.yaml"
    out = run / "analysis"
    report = validate_dataset(data_yaml)
    ds = load_dataset(data_yaml)
    st = dataset_stats(ds)
    plots = {p.stem: p for p in save_stats_plots(st, out)}
    train = ds.splits["train"]
    plain = DetectionDataset(train, imgsz=cfg.imgsz)
    aug = DetectionDataset(train, imgsz=cfg.imgsz, pipeline=default_pipeline(cfg.imgsz), seed=cfg.seed)
    n = 9 if cfg.quick else 16
    samples = write_png(out / "samples.png", preview_grid(plain, ds.names, n, cfg.seed))
    augmented = write_png(out / "augmented.png", preview_grid(aug, ds.names, n, cfg.seed))

    def rel(p: Path) -> str:
        return Path(p).relative_to(run).as_posix()

    return {
        "description": (
            f"The embedded synthetic data set (detopt data synth, seed {cfg.seed}): "
            f"{len(ds.splits['train'])} training and {len(ds.splits['val'])} validation images of "
            f"{cfg.imgsz}x{cfg.imgsz} px, {len(ds.names)} classes that differ by shape and texture "
            f"({', '.join(ds.names)}), many small objects, occlusion and clutter."
        ),
        "names": list(ds.names),
        "validation": {"ok": report.ok, "lines": report.lines(), "defects": report.by_kind()},
        "stats": st.to_dict(),
        "figures": {
            "samples": rel(samples),
            "augmented": rel(augmented),
            **{k: rel(v) for k, v in plots.items()},
        },
    }


def fit_anchors(run: Path, cfg: DemoConfig) -> dict[str, Any]:
    """Anchor-fit analysis of the training boxes (``run/analysis/anchors.png``)."""
    from detopt.anchors import euclidean_kmeans_anchors, kmeans_anchors, normalized_wh
    from detopt.anchors.plot import save_anchor_plot
    from detopt.data.formats import load_dataset

    ds = load_dataset(run / "data" / "data.yaml")
    wh = normalized_wh(ds.splits["train"])
    k, levels, thr = 9, 3, 0.5
    kw = {"levels": levels, "thr": thr, "seed": cfg.seed}
    ours = kmeans_anchors(wh, k, cfg.imgsz, generations=200 if cfg.quick else 1000, **kw)
    base = euclidean_kmeans_anchors(wh, k, cfg.imgsz, **kw)
    path = save_anchor_plot(wh * cfg.imgsz, [ours, base], run / "analysis" / "anchors.png")
    fits = []
    for f in (ours, base):
        d = f.to_dict()
        fits.append(
            {
                "method": f.method,
                "mean_best_iou": f.mean_best_iou,
                "bpr": f.bpr,
                "anchors_per_box": f.anchors_per_box,
                "fitness": f.fitness,
                "per_level": [lvl.tolist() for lvl in f.per_level()],
                "fit": d,
            }
        )
    return {
        "k": k,
        "levels": levels,
        "thr": thr,
        "imgsz": cfg.imgsz,
        "boxes": len(wh),
        "fits": fits,
        "figure": path.relative_to(run).as_posix(),
    }


def _train_config(run: Path, cfg: DemoConfig) -> TrainConfig:
    from detopt.engine.recipe import adapt_to_budget

    r = cfg.resolved()
    values = {
        "data": str(run / "data" / "data.yaml"),
        "out": str(run / "train"),
        "imgsz": cfg.imgsz,
        "time": r["minutes"] * 60.0,
        "batch": 16,
        "workers": cfg.workers,
        "device": cfg.device,
        "seed": cfg.seed,
        "progress": sys.stderr.isatty(),
    } | ({"model": r["model"]} if r["model"] is not None else {}) | dict(cfg.train)
    # the short-budget recipe (nbs, warmup, close-mosaic, the optimizer) fills the keys not given, as
    # in `train`; the trainer chooses the model scale when none is given
    return adapt_to_budget(build_config(TrainConfig, values))[0]


_VOLATILE = ("out", "progress", "workers", "device", "data")  # keys that do not change the result


def train_model(run: Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume, or reuse) the model of the demo in ``run/train``."""
    from detopt.engine import Trainer
    from detopt.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from detopt.models import count_flops, count_parameters
    from detopt.report.figures import plot_training_curves

    tcfg = _train_config(run, cfg)
    out = run / "train"
    last = out / "last.pt"
    want = {k: v for k, v in tcfg.model_dump(mode="json").items() if k not in _VOLATILE}
    trainer = None
    reused = False
    if last.is_file():
        ckpt = load_checkpoint(last)
        have = {k: v for k, v in ckpt["config"].items() if k not in _VOLATILE}
        if "model" not in tcfg.model_fields_set:  # the recipe chose the scale on this machine
            have["model"] = want["model"]
        if have != want:
            log(f"[train] {out} was trained with another config; training again")
            shutil.rmtree(out)
        elif int(ckpt["epoch"]) + 1 >= int(ckpt["epochs"]):
            log(f"[train] {out} holds a finished run with this config; reusing it")
            reused = True
        else:
            log(f"[train] resuming {out} at epoch {int(ckpt['epoch']) + 2}")
            trainer = Trainer.resume(out, **{k: getattr(tcfg, k) for k in _VOLATILE})  # RUN may have moved
        del ckpt
    if not reused:
        trainer = trainer or Trainer(tcfg)
        m = trainer.model
        log(
            f"[train] {trainer.cfg.model}: {count_parameters(m) / 1e6:.2f} M parameters, "
            f"budget {tcfg.time:.0f} s, {len(trainer.train_set)} training images"
        )
        trainer.train()
        del trainer
    with (out / "results.csv").open(newline="") as f:
        rows = [dict(r) for r in csv.DictReader(f)]
    ckpt = load_checkpoint(last)
    model = model_from_checkpoint(ckpt)
    fig = plot_training_curves(rows, run / "train" / "curves.png")
    r = cfg.resolved()
    return {
        "config": ckpt["config"],
        "rows": rows,
        "epochs": int(ckpt["epoch"]) + 1,
        "elapsed": float(ckpt["elapsed"]),
        "bad_steps": int(ckpt["bad_steps"]),
        "params_m": count_parameters(model) / 1e6,
        "gflops": count_flops(model, cfg.imgsz) / 1e9,
        "train_images": r["train_images"],  # what synthesize wrote
        "val_images": r["val_images"],
        "names": list(ckpt["names"]),
        "reused": reused,
        "run": "train",
        "figure": fig.relative_to(run).as_posix(),
        "weights": "train/last.pt",
    }


class _Context:
    """What steps 5-6 share within one invocation: the model's validation candidates."""

    def __init__(self, run: Path, cfg: DemoConfig) -> None:
        self.run, self.cfg = run, cfg
        self._cands = None
        self.val_paths: list[Path] = []

    def candidates(self):
        if self._cands is None:
            from detopt.data.dataset import dataset_from_source
            from detopt.inference import load_weights
            from detopt.runtime import resolve_device
            from detopt.tune import collect_candidates

            model, names, _, _ = load_weights(self.run / "train" / "last.pt")
            val, _ = dataset_from_source(self.run / "data" / "data.yaml", "val", self.cfg.imgsz)
            self._cands = collect_candidates(
                model, val, names, resolve_device(self.cfg.device), batch_size=32
            )
            self.val_paths = [r.path for r in val.records]
        return self._cands


def evaluate_model(run: Path, cfg: DemoConfig, ctx: _Context) -> dict[str, Any]:
    """COCO evaluation of the final EMA weights with the default post-processing (``run/eval``)."""
    from detopt.data.image_io import decode_image
    from detopt.evaluation.curves import f1_curve, image_outcomes
    from detopt.evaluation.plots import save_plots
    from detopt.report.figures import draw_outcomes, tile, write_png
    from detopt.tune import DEFAULT, apply_setting

    cands = ctx.candidates()
    dets, _ = apply_setting(cands, DEFAULT)
    out = run / "eval"
    _write_json(out / "predictions.json", cands.records(dets))
    res = cands.evaluate(dets)
    f1 = f1_curve(res, 0.5)
    conf = float(f1.best_confidence) if np.isfinite(f1.best_f1) else 0.25
    plots = save_plots(res, out, iou_thr=0.5, score_thr=conf)
    doc = res.to_dict()
    _write_json(out / "metrics.json", doc)
    n_gt = np.bincount(res.gt.category[~res.gt.crowd], minlength=len(res.gt.category_ids))
    n_dt = np.bincount(res.predictions.category, minlength=len(res.gt.category_ids))
    names = list(res.gt.category_names)

    # predictions drawn on evenly spaced validation images
    k = 4 if cfg.quick else 8
    picks = np.unique(np.linspace(0, len(cands) - 1, k).round().astype(int))
    gt = cands.gt
    label_ids = cands.category_ids or list(range(1, len(gt.category_ids) + 1))
    label_of = np.array([label_ids.index(c) for c in gt.category_ids], np.int64)  # gt category -> label
    pos_of = {iid: k for k, iid in enumerate(gt.image_ids)}
    tiles, tp_n, fp_n, miss_n = [], 0, 0, 0
    for i in picks:
        d = dets[i]
        keep = np.asarray(d.scores) >= conf
        db, ds_, dl = np.asarray(d.boxes)[keep], np.asarray(d.scores)[keep], np.asarray(d.labels)[keep]
        rows = (gt.image == pos_of[cands.image_ids[i]]) & ~gt.crowd
        x, y, w, h = gt.box[rows].T
        gb = np.stack([x, y, x + w, y + h], axis=1).reshape(-1, 4)
        gl = label_of[gt.category[rows]]
        tp, hit = image_outcomes(db, ds_, dl, gb, gl, 0.5)
        tp_n, fp_n, miss_n = tp_n + int(tp.sum()), fp_n + int((~tp).sum()), miss_n + int((~hit).sum())
        tiles.append(draw_outcomes(decode_image(ctx.val_paths[i]), db, ds_, dl, tp, gb, gl, hit, names))
    drawn = write_png(out / "predictions.png", tile(tiles, cols=2 if cfg.quick else 4))
    return {
        "evaluation": {
            "stat_names": doc["stat_names"],
            "stats": doc["stats"],
            "summary_lines": res.summary_lines(),
            "per_class": doc["per_class"],
            "gt_per_class": {n: int(c) for n, c in zip(names, n_gt, strict=True)},
            "dt_per_class": {n: int(c) for n, c in zip(names, n_dt, strict=True)},
            "counts": doc["counts"],
            "confidence": conf,
            "setting": DEFAULT.label(),
            "figures": {k2: Path(v).relative_to(run).as_posix() for k2, v in plots.items()},
            "metrics": "eval/metrics.json",
            "predictions": "eval/predictions.json",
        },
        "predictions": {
            "figure": drawn.relative_to(run).as_posix(),
            "images": len(picks),
            "confidence": conf,
            "tp": tp_n,
            "fp": fp_n,
            "missed": miss_n,
        },
    }


def study_postprocessing(
    run: Path, cfg: DemoConfig, ctx: _Context, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every NMS variant and the IoU / score thresholds on the validation candidates."""
    from detopt.report.figures import plot_nms_grid, plot_postprocess_tradeoff
    from detopt.tune import best_per_method, study

    cands = ctx.candidates()
    if cfg.quick:
        from detopt.tune import METHOD_SWEEPS

        sweeps = {g: (fixed, knob, values[::2]) for g, (fixed, knob, values) in METHOD_SWEEPS.items()}
        res = study(cands, sweeps, score_grid=(0.001, 0.05, 0.25), nms_iou_grid=(0.5, 0.7))
    else:
        res = study(cands, on_result=lambda r: log(
            f"  {r.label:<58} mAP {r.ap:.4f}  AP_small {r.ap_small:.4f}  {r.ms_per_image:7.3f} ms/img"))
    doc = res.to_dict()
    out = run / "postprocess"
    _write_json(out / "study.json", doc)
    tradeoff = plot_postprocess_tradeoff(doc["results"], out / "tradeoff.png")
    grid = plot_nms_grid(doc["results"], out / "nms_grid.png")
    best = [r.to_dict() for r in best_per_method(res.results)]
    for r in best:
        log(
            f"  {r['label']:<58} mAP {r['ap']:.4f}  AP_small {r['ap_small']:.4f}  "
            f"{r['ms_per_image']:.3f} ms/img"
        )
    return {
        **doc,
        "best_per_method": best,
        "candidates_per_image": float(np.mean([len(s) for s in cands.scores])) if len(cands) else 0.0,
        "min_score": cands.min_score,
        "figures": {
            "tradeoff": tradeoff.relative_to(run).as_posix(),
            "grid": grid.relative_to(run).as_posix(),
        },
        "study": "postprocess/study.json",
    }


# --------------------------------------------------------------------------- the speed half
PRUNE_RATIO = 0.5  # share of the FLOPs the prune step removes
PRUNE_ROUND_TO: int = PruneConfig.model_fields["round_to"].default  # in the prune step's cache key


def _rel(run: Path, p: str | Path) -> str:
    return Path(p).resolve().relative_to(run).as_posix()


def _cli_path(run: Path, p: str | Path) -> str:
    """A path for a command shown in the report: relative to the working directory when inside it."""
    p = Path(p).resolve()
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return p.as_posix()


def prune_model(run: Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Structured pruning of the trained model (half its FLOPs, L1 importance, widths multiples of
    16), fine-tuned for one epoch with the unpruned model as the teacher (``run/prune``)."""
    from detopt.compress import prune

    weights, data = run / "train" / "last.pt", run / "data" / "data.yaml"
    keys = {"weights": str(weights), "data": str(data), "out": str(run / "prune"), "ratio": PRUNE_RATIO,
            "round_to": PRUNE_ROUND_TO, "teacher": str(weights), "finetune_epochs": 1, "seed": cfg.seed,
            "workers": cfg.workers, "device": cfg.device, "latency": False}
    if (run / "prune").exists():
        shutil.rmtree(run / "prune")  # a fresh run folder (the step is reused whole, never resumed)
    res = prune(keys, on_progress=lambda line: log(f"  {line}"))
    w = lambda p: _cli_path(run, p)  # noqa: E731
    return {
        "ratio": PRUNE_RATIO,
        "importance": res.importance,
        "map_before": res.map_before,
        "map_after_pruning": res.map_after_pruning,
        "map_after_finetune": res.map_after_finetune,
        "params_before": res.params_before,
        "params_after": res.params_after,
        "gflops_before": res.gflops_before,
        "gflops_after": res.gflops_after,
        "weights": "prune/best.pt",
        "report": "prune/prune.json",
        "command": (f"detopt prune --weights {w(weights)} --data {w(data)} --out {w(run / 'prune')} "
                    f"--ratio {PRUNE_RATIO} --teacher {w(weights)} --finetune-epochs 1 --no-latency"),
    }


def export_models(run: Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The trained and the pruned weights as deployable files, then each quantized to INT8.

    ``run/deploy``: safetensors, and ONNX with hard NMS inside the graph (batch symbolic, default
    score threshold 0.25, a graph input). ``run/quantize`` and ``run/quantize-pruned``: INT8
    post-training quantization (ONNX Runtime QDQ, MinMax calibration on training images, the
    keep-float search) of the same exported network (exported once: the exporter is the slow part)."""
    from detopt.compress import quantize
    from detopt.constants import IOU_THRESHOLD, MAX_DET
    from detopt.export import export
    from detopt.export.onnx_export import export_network, with_postprocess
    from detopt.export.onnx_nms import OPSET
    from detopt.inference import load_weights

    data = run / "data" / "data.yaml"
    calib, search = (16, 8) if cfg.quick else (128, 64)
    out: dict[str, Any] = {"files": {}, "commands": {}, "quantize": {}}
    w = lambda p: _cli_path(run, p)  # noqa: E731
    for key, weights, folder in (("trained", run / "train" / "last.pt", run / "quantize"),
                                 ("pruned", run / "prune" / "best.pt", run / "quantize-pruned")):
        stem = "model" if key == "trained" else "model-pruned"
        log(f"  {key} weights: exporting ...")
        wt = load_weights(weights)
        net = export_network(wt.model, cfg.imgsz, dynamic_batch=True)
        proto = with_postprocess(net, wt.model, names=list(wt.names), category_ids=list(wt.category_ids),
                                 imgsz=cfg.imgsz, dynamic=False, nms="nms", score_thr=0.25,
                                 iou_thr=IOU_THRESHOLD, sigma=None, max_det=MAX_DET, agnostic=False,
                                 opset=OPSET)
        onnx_path = _save_onnx(proto, run / "deploy" / f"{stem}.onnx")
        st_path = export(weights, run / "deploy" / f"{stem}.safetensors")
        out["files"][key] = {"onnx": _rel(run, onnx_path), "safetensors": _rel(run, st_path)}
        out["commands"][key] = {
            "onnx": f"detopt export --weights {w(weights)} --out {w(onnx_path)} --nms nms --dynamic-batch",
            "safetensors": f"detopt export --weights {w(weights)} --out {w(st_path)}",
        }
        log(f"  {key} weights: INT8 ...")
        res = quantize({"weights": str(weights), "data": str(data), "out": str(folder), "calib": calib,
                        "search_images": search, "seed": cfg.seed, "workers": cfg.workers, "latency": False},
                       on_progress=lambda line: log(f"    {line}"), network=net)
        doc = res.to_dict()
        final = next(v for v in reversed(doc["variants"]) if v["name"].startswith("INT8"))
        torch_row = next(v for v in doc["variants"] if v["backend"] == "torch eager")
        out["quantize"][key] = {
            "model": _rel(run, res.model_path),
            "report": _rel(run, folder / "report.json"),
            "int8": [final["map"], final["map50"], final["ap_small"]],
            "torch_fp32": [torch_row["map"], torch_row["map50"], torch_row["ap_small"]],
            "kept_float": doc["kept_float"],
            "search": doc["search"],
            "calib": calib,
            "command": (f"detopt quantize --weights {w(weights)} --data {w(data)} --out {w(folder)} "
                        f"--calib {calib} --search-images {search}"),
        }
    return out


def _save_onnx(proto: Any, path: Path) -> Path:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def measure_deploy(run: Path, cfg: DemoConfig, training: dict[str, Any], pruned: dict[str, Any],
                   exported: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every variant side by side (:func:`detopt.compress.deploy.measure_variants`): the Deploy
    table, its Pareto front, the chart and the recommendation (``run/deploy``)."""
    import torch

    from detopt.compress.deploy import VariantSpec, measure_variants, recommend
    from detopt.data.dataset import dataset_from_source
    from detopt.inference import load_weights
    from detopt.report.figures import plot_deploy_tradeoff

    data = run / "data" / "data.yaml"
    trained = load_weights(run / "train" / "last.pt")
    small = load_weights(run / "prune" / "best.pt")
    val, names = dataset_from_source(data, "val", cfg.imgsz)
    f, c, quant = exported["files"], exported["commands"], exported["quantize"]
    w = lambda p: _cli_path(run, p)  # noqa: E731
    r = cfg.resolved()
    train_cmd = (f"detopt demo --out {w(run)}" + (" --quick" if cfg.quick else "")
                 + f"  # trains {training['config']['model']} for {r['minutes']:g} min "
                 + f"into {w(run / 'train')}")
    val_cmd = f"detopt val --weights {w(run / 'train' / 'last.pt')} --data {w(data)}"
    pval_cmd = f"detopt val --weights {w(run / 'prune' / 'best.pt')} --data {w(data)}"

    def acc(x: list[float]) -> tuple[float, float, float]:
        return (float(x[0]), float(x[1]), float(x[2]))

    specs = [
        VariantSpec("torch FP32", "torch", run / f["trained"]["safetensors"], trained.model,
                    acc(quant["trained"]["torch_fp32"]), [train_cmd, val_cmd]),
        VariantSpec("torch bf16", "torch-bf16", run / f["trained"]["safetensors"], trained.model, None,
                    [f"{val_cmd} --amp"]),
        VariantSpec("ORT FP32", "onnxruntime", run / f["trained"]["onnx"], trained.model, None,
                    [c["trained"]["onnx"]]),
        VariantSpec("ORT INT8 PTQ", "onnxruntime", run / quant["trained"]["model"], trained.model,
                    acc(quant["trained"]["int8"]), [quant["trained"]["command"]]),
        VariantSpec(f"pruned {PRUNE_RATIO:.0%} + KD, torch FP32", "torch", run / f["pruned"]["safetensors"],
                    small.model, acc(quant["pruned"]["torch_fp32"]), [pruned["command"], pval_cmd]),
        VariantSpec("pruned, ORT FP32", "onnxruntime", run / f["pruned"]["onnx"], small.model, None,
                    [pruned["command"], c["pruned"]["onnx"]]),
        VariantSpec("pruned + INT8 PTQ", "onnxruntime", run / quant["pruned"]["model"], small.model,
                    acc(quant["pruned"]["int8"]), [pruned["command"], quant["pruned"]["command"]]),
    ]
    threads = torch.get_num_threads()
    rows = measure_variants(specs, val, names, cfg.imgsz, threads=threads, rounds=2 if cfg.quick else 4,
                            repeats=4 if cfg.quick else 10, say=log)
    rec = recommend(rows, reference=0, max_drop=0.01)
    docs = [x.to_dict() for x in rows]
    for d in docs:
        d["file"] = _rel(run, d["file"])
    chart = plot_deploy_tradeoff(docs, run / "deploy" / "tradeoff.png")
    for d in docs:
        log(f"  {d['name']:<28} mAP50-95 {d['map']:.4f}  p50 {d['p50_ms']:6.2f} ms  "
            f"{d['images_per_s_b8']:6.1f} img/s (b8)  {d['size_mb']:5.2f} MB"
            + ("  *" if d["pareto"] else ""))
    log(f"  {rec['text']}")
    doc = {"rows": docs, "recommendation": rec, "threads": threads, "imgsz": cfg.imgsz,
           "val_images": len(val), "figure": _rel(run, chart), "prune": pruned, "quantize": quant}
    _write_json(run / "deploy" / "deploy.json", doc)
    return doc


TUNE_SPACE = {
    # what a fine-tune of trained weights is sensitive to: the step size, its decay, the momentum and
    # how strongly the images are mixed and distorted
    "lr0": {"low": 1e-4, "high": 3e-2, "log": True},
    "lrf": {"low": 0.01, "high": 1.0, "log": True},
    "momentum": {"low": 0.8, "high": 0.98},
    "mosaic": {"low": 0.0, "high": 1.0},
    "scale": {"low": 0.0, "high": 0.7},
}


def tune_study(run: Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """A small hyperparameter study (``run/tune``): short fine-tunes of the trained weights on a
    slice of the training split, scored on the first validation images, the median pruner stopping
    weak trials after their first epoch; trial 0 is the base values. Its findings are shown, not
    applied (short trials on few images are a hint; the report says so and gives the command of a
    real study)."""
    import yaml

    from detopt.config import TuneConfig
    from detopt.data.formats import load_dataset
    from detopt.tune import search

    ds = load_dataset(run / "data" / "data.yaml")
    n_train, n_val, trials, epochs = (48, 24, 2, 1) if cfg.quick else (128, 80, 5, 2)
    train_recs, val_recs = ds.splits["train"], ds.splits["val"]
    step = max(1, len(train_recs) // n_train)
    out = run / "tune"
    if out.exists():
        shutil.rmtree(out)  # a new study (the step is reused whole, never resumed)
    out.mkdir(parents=True)
    # the study's slice of the data set lives beside it (the data set's root is run/data)
    data = run / "data"
    picked = train_recs[::step][:n_train]
    (data / "tune-train.txt").write_text("".join(f"{r.path.resolve()}\n" for r in picked))
    (data / "tune-val.txt").write_text("".join(f"{r.path.resolve()}\n" for r in val_recs[:n_val]))
    (data / "tune.yaml").write_text(yaml.safe_dump({"train": "tune-train.txt", "val": "tune-val.txt",
                                                    "names": list(ds.names)}))  # root: this folder
    from detopt.tune.space import DEFAULT_SPACE

    space = {k: None for k in DEFAULT_SPACE} | TUNE_SPACE  # these keys alone
    (out / "space.yaml").write_text(yaml.safe_dump(space))
    weights = run / "train" / "last.pt"
    tcfg = build_config(TuneConfig, {
        "data": str(data / "tune.yaml"), "out": str(out / "study"), "space": str(out / "space.yaml"),
        "trials": trials, "trial_epochs": epochs, "sampler": "tpe", "pruner": "median", "seed": cfg.seed,
        "postprocess": False, "baseline": True,
        "train": {"weights": str(weights), "imgsz": cfg.imgsz, "batch": 16, "nbs": 16, "warmup_epochs": 0,
                  "warmup_min_iters": 0, "close_mosaic": 0, "workers": cfg.workers, "device": cfg.device},
    })
    summary = search(tcfg, log=lambda line: log(f"  {line}"))
    w = lambda p: _cli_path(run, p)  # noqa: E731
    summary["setup"] = {
        "train_images": min(n_train, len(train_recs[::step])),
        "val_images": min(n_val, len(val_recs)),
        "epochs": epochs,
        "weights": "train/last.pt",
        "space_file": "tune/space.yaml",
        "command": (f"detopt tune --data {w(data / 'tune.yaml')} --out {w(out / 'study')} --space "
                    f"{w(out / 'space.yaml')} --trials {trials} --trial-epochs {epochs} --pruner median "
                    "--baseline --no-postprocess "
                    f"weights={w(weights)} nbs=16 warmup_epochs=0 close_mosaic=0"),
        "real_command": (f"detopt tune --data {w(run / 'data' / 'data.yaml')} --out runs/tune --trials 40 "
                         "--time 8h --trial-time 10m --workers 2"),
    }
    summary["figures"] = {k: _rel(run, out / "study" / v) for k, v in summary.get("figures", {}).items()}
    return summary


def environment(wall: float, seconds: dict[str, float], reused: list[str], argv: list[str]) -> dict[str, Any]:
    """Versions, CPU, threads, and the wall time of each step."""
    import cv2
    import matplotlib
    import numba
    import torch

    import detopt

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        "detopt": detopt.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "CPU": cpu,
        "CPU cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "CUDA": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba threads": str(numba.config.NUMBA_NUM_THREADS),
        "opencv": cv2.__version__,
        "matplotlib": matplotlib.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    return {
        "versions": versions,
        "step_seconds": dict(seconds),
        "reused": list(reused),
        "wall_seconds": wall,
        "command": " ".join(argv),
    }


# --------------------------------------------------------------------------- the loop
def run(
    out: str | Path = "runs/demo",
    minutes: float | None = None,
    quick: bool = False,
    log: Callable[[str], None] = print,
    **options: Any,
) -> Path:
    """Run the whole demo into ``out`` and return the path of ``report.html``.

    Args:
        out: the run folder (created; its steps are reused when their parameters match).
        minutes: training time budget (default 8, or 0.25 with ``quick``).
        quick: a small data set and a 15-second training: every step in under a minute (smoke tests, CI).
        options: other :class:`~detopt.config.DemoConfig` keys (``seed``, ``imgsz``, ``device``,
            ``workers``, ``train_images``, ``val_images``, ``model``, ``speed``, ``train`` overrides).
    """
    cfg = build_config(DemoConfig, {"out": str(out), "minutes": minutes, "quick": quick} | options)
    return run_config(cfg, log)


def _deploy_card(deploy: dict[str, Any]) -> str:
    rec = deploy["recommendation"]
    row = deploy["rows"][rec["index"]]
    return f"{row['name']}, {rec['speedup']:.1f}× torch FP32"


def run_config(cfg: DemoConfig, log: Callable[[str], None] = print, argv: list[str] | None = None) -> Path:
    """:func:`run` with a validated :class:`~detopt.config.DemoConfig`."""
    from detopt.report import write_report

    t0 = time.perf_counter()
    run_dir = Path(cfg.out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    r = cfg.resolved()
    _train_config(run_dir, cfg)  # a bad training override fails now, not after the first steps
    step = _Steps(run_dir, log)
    data_params = {"train": r["train_images"], "val": r["val_images"], "imgsz": cfg.imgsz, "seed": cfg.seed}
    step("data", data_params, lambda: synthesize(run_dir, cfg))
    analysis = step("analysis", data_params | {"quick": cfg.quick}, lambda: analyse_data(run_dir, cfg))
    anchors = step("anchors", data_params | {"quick": cfg.quick}, lambda: fit_anchors(run_dir, cfg))
    training = step("train", {}, lambda: train_model(run_dir, cfg, log), cache=False)
    if training["reused"]:
        step.reused.append("train")
    last = run_dir / "train" / "last.pt"
    weights = {"weights": _digest(last)}
    ctx = _Context(run_dir, cfg)
    ev = step(
        "evaluate", data_params | weights | {"quick": cfg.quick}, lambda: evaluate_model(run_dir, cfg, ctx)
    )
    pp = step(
        "postprocess",
        data_params | weights | {"quick": cfg.quick},
        lambda: study_postprocessing(run_dir, cfg, ctx, log),
    )
    deploy = tune = None
    if cfg.speed:
        pruned = step("prune", data_params | weights | {"quick": cfg.quick, "ratio": PRUNE_RATIO,
                                                         "round_to": PRUNE_ROUND_TO},
                      lambda: prune_model(run_dir, cfg, log))
        both = weights | {"pruned": _digest(run_dir / "prune" / "best.pt")}
        exported = step("export", data_params | both | {"quick": cfg.quick},
                        lambda: export_models(run_dir, cfg, log))
        deploy = step("deploy", data_params | both | {"quick": cfg.quick},
                      lambda: measure_deploy(run_dir, cfg, training, pruned, exported, log))
        tune = step("tune", data_params | weights | {"quick": cfg.quick, "space": TUNE_SPACE},
                    lambda: tune_study(run_dir, cfg, log))
    wall = time.perf_counter() - t0
    env = environment(wall, step.seconds, step.reused, argv or ["detopt.demo.run", f"out={cfg.out}"])
    stats = dict(zip(ev["evaluation"]["stat_names"], ev["evaluation"]["stats"], strict=True))
    best = max(pp["best_per_method"], key=lambda x: x["ap"])
    summary = {
        "title": "detopt demo report",
        "subtitle": (
            f"{training['config']['model']} trained for {training['elapsed'] / 60:.1f} min on "
            f"{training['train_images']} synthetic images; this invocation took {wall / 60:.1f} min "
            f"({'quick' if cfg.quick else 'full'} mode, {env['versions']['date']})"
            + (
                ". Quick mode is a smoke test of the pipeline: a tiny model trained for seconds, so its "
                "accuracy numbers mean nothing; run without --quick for a real model."
                if cfg.quick
                else ""
            )
        ),
        "headline": {
            "mAP50-95": f"{stats['AP']:.3f}",
            "mAP50": f"{stats['AP50']:.3f}",
            "AP small": f"{stats['AP_small']:.3f}" if stats["AP_small"] >= 0 else "-",
            "epochs": str(training["epochs"]),
            "best post-processing": f"{best['label'].split(' (')[0]}: {best['ap']:.3f}",
            "held-out gain": f"{pp['holdout']['gain_odd']:+.4f}",
        } | ({"deploy": _deploy_card(deploy)} if deploy else {}),
        "data": analysis,
        "anchors": anchors,
        "training": training,
        "evaluation": ev["evaluation"],
        "predictions": ev["predictions"],
        "postprocessing": pp,
        "environment": env,
    } | ({"deploy": deploy, "tune": tune} if deploy else {})
    _write_json(run_dir / "steps" / "report.json", summary)
    path = write_report(run_dir, summary)
    log(
        f"mAP50-95 {stats['AP']:.4f}  mAP50 {stats['AP50']:.4f}  AP_small {stats['AP_small']:.4f}; "
        f"best post-processing: {best['label']} mAP50-95 {best['ap']:.4f}"
    )
    if deploy:
        log(deploy["recommendation"]["text"])
    log(f"wrote {path} ({wall:.0f} s)")
    return path

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
7. :func:`detopt.report.write_report` — ``RUN/report.html``.

Every step records its parameters and summary in ``RUN/steps/<step>.json``; a second run with the
same parameters (and the same trained weights for steps 5-6) reuses it instead of recomputing.
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

from detopt.config import DemoConfig, TrainConfig, build_config

STEPS = ("data", "analysis", "anchors", "train", "evaluate", "postprocess", "report")


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
    # the short-budget recipe (nbs, warmup, close-mosaic, the model) fills the keys not given, as
    # in `train`
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
            f"[train] {tcfg.model}: {count_parameters(m) / 1e6:.2f} M parameters, budget {tcfg.time:.0f} s, "
            f"{len(trainer.train_set)} training images"
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
        minutes: training time budget (default 8, or 0.4 with ``quick``).
        quick: a small data set and a tiny model: about a minute end to end (smoke tests, CI).
        options: other :class:`~detopt.config.DemoConfig` keys (``seed``, ``imgsz``, ``device``,
            ``workers``, ``train_images``, ``val_images``, ``model``, ``train`` overrides).
    """
    cfg = build_config(DemoConfig, {"out": str(out), "minutes": minutes, "quick": quick} | options)
    return run_config(cfg, log)


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
        },
        "data": analysis,
        "anchors": anchors,
        "training": training,
        "evaluation": ev["evaluation"],
        "predictions": ev["predictions"],
        "postprocessing": pp,
        "environment": env,
    }
    _write_json(run_dir / "steps" / "report.json", summary)
    path = write_report(run_dir, summary)
    log(
        f"mAP50-95 {stats['AP']:.4f}  mAP50 {stats['AP50']:.4f}  AP_small {stats['AP_small']:.4f}; "
        f"best post-processing: {best['label']} mAP50-95 {best['ap']:.4f}"
    )
    log(f"wrote {path} ({wall:.0f} s)")
    return path

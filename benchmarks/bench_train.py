"""Training: throughput at 320 px / batch 16, and mAP on held-out data after a time budget.

1. Throughput: one full training epoch over the synthetic train split (2 000 images) through the
   real loader (mosaic, affine, HSV, flip in 2 worker processes), per model and precision. The
   img/s is the trainer's own (images / wall time of the epoch, loader start-up included).
2. ``--budget 10m``: the plain command ``detopt train --time 10m`` (the short-budget recipe of
   ``detopt.engine.recipe`` fills the defaults) for each of ``--seeds``; the last epoch's EMA
   weights scored on the run's val split and on 500 held-out images the run never saw (the
   generator with another seed); mean and spread over the seeds. ``--also KEYS`` also runs the plain
   command with those keys given (``optimizer=sgd``: the SGD recipe); ``--compare`` also runs the
   long-run defaults (``nbs=64``, warmup 3, close-mosaic 10) given explicitly.
3. ``--optimizers``: the milliseconds of one step of each registered optimizer per model.

The peer, ultralytics YOLOv8n, cannot run on this machine (it imports torchvision, whose CPU
build does not exist here), so its figures are the ones measured in ``shared/docs/PEERS.md``
(9.4 img/s at 320 px / batch 16; mAP50-95 0.0625 after 10 minutes on the 2 000-image synthetic
set), and the ratios divide by them.

    python benchmarks/bench_train.py [--models yolo-n yolo-p] [--fp32] [--budget 10m]
        [--seeds 0 1 2] [--compare] [--also 'optimizer=sgd'] [--train-images 500] [--skip-throughput]
        [--data DIR] [--classes 3|16] [--optimizers]

``--classes 3`` / ``--classes 16`` relabel the same images to fewer or more classes (see
``CLASS_REGIMES``): the data regimes of the short-budget recipe's measurements.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

from detopt.config import TrainConfig, parse_duration, parse_overrides
from detopt.constants import SMALL_AREA
from detopt.data.dataset import dataset_from_source
from detopt.data.formats.yolo import data_yaml_text
from detopt.data.synth import CLASSES, write_synthetic
from detopt.engine import Trainer, evaluate_detector, model_from_checkpoint
from detopt.engine.checkpoint import load_checkpoint
from detopt.models import Postprocessor, count_flops, count_parameters

ULTRALYTICS_IMG_S = 9.4  # shared/docs/PEERS.md: YOLOv8n, 320 px, batch 16, this machine
ULTRALYTICS_SYNTH_MAP = 0.0625  # PEERS.md: YOLOv8n, 10 min, `detopt data synth --train 2000 --val 300`


def optimizer_steps(models: list[str], repeat: int = 20) -> None:
    """Milliseconds of one ``optimizer.step()`` of each registered optimizer on each model's
    parameters (random gradients, channels_last weights as in training), side by side."""
    import time

    import torch

    from detopt.engine.optim import OPTIMIZERS, build_optimizer
    from detopt.models import create_model

    print("optimizer step, ms (random gradients; a training step of batch 16 is ~500 ms here)")
    print(f"{'model':<8} " + " ".join(f"{n:>8}" for n in OPTIMIZERS.names()) + "   ratio to sgd")
    for name in models:
        ms = {}
        for opt_name in OPTIMIZERS.names():
            torch.manual_seed(0)
            model = create_model(name, 8).to(memory_format=torch.channels_last)
            opt = build_optimizer(model, opt_name, 0.01, 0.9, 5e-4)
            for p in model.parameters():
                p.grad = torch.randn_like(p) * 1e-3
            for _ in range(3):
                opt.step()
            t = time.perf_counter()
            for _ in range(repeat):
                opt.step()
            ms[opt_name] = (time.perf_counter() - t) / repeat * 1e3
        ratios = " ".join(f"{ms[n] / ms['sgd']:.1f}x" for n in ms)
        print(f"{name:<8} " + " ".join(f"{v:>8.1f}" for v in ms.values()) + f"   {ratios}")


def throughput(data: Path, out: Path, model: str, amp: bool) -> float:
    cfg = TrainConfig(data=str(data / "data.yaml"), out=str(out), model=model, imgsz=320, batch=16,
                      epochs=1, workers=2, amp=amp, val=False, progress=False)
    trainer = Trainer(cfg)
    trainer.train()
    with (out / "results.csv").open() as f:
        return float(next(csv.DictReader(f))["img/s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="a synthetic data set (default: generate 2000 + 300 images)")
    ap.add_argument("--models", nargs="+", default=["yolo-n", "yolo-p"])
    ap.add_argument("--fp32", action="store_true", help="also measure without bf16 autocast")
    ap.add_argument("--budget", help="also train for this long (e.g. 10m) and evaluate on held-out data")
    ap.add_argument("--peer-map", type=float, default=ULTRALYTICS_SYNTH_MAP,
                    help="ultralytics YOLOv8n mAP50-95 after the same budget (default: PEERS.md's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of --budget")
    ap.add_argument("--compare", action="store_true", help="--budget: also the long-run defaults")
    ap.add_argument("--also", action="append", default=[], metavar="KEYS",
                    help="--budget: also the plain command with these keys given, e.g. "
                         "'optimizer=sgd' (repeatable; space-separated key=value pairs)")
    ap.add_argument("--train-images", type=int, default=2000, help="size of the generated train split")
    ap.add_argument("--skip-throughput", action="store_true", help="only the --budget runs")
    ap.add_argument("--budget-model", help="--budget: this model instead of the default")
    ap.add_argument("--optimizers", action="store_true", help="only the cost of one optimizer step")
    ap.add_argument("--classes", type=int, choices=sorted(CLASS_REGIMES),
                    help="--budget: relabel the data (and the held-out set) to 3 coarse or 16 fine classes")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    if args.optimizers:
        optimizer_steps(args.models)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        data = args.data
        if data is None:
            data = root / "synth"
            write_synthetic(data, train=args.train_images, val=300, imgsz=320, seed=0, workers=2,
                            overwrite=True)
        if args.classes:
            data = relabel(data, root / f"synth-{args.classes}-classes", args.classes)
        if args.skip_throughput:
            budget_runs(args, data, root)
            return

        print("training throughput, 320 px, batch 16, 2 loader workers, one epoch of 2000 images")
        print(f"{'model':<8} {'precision':<9} {'params':>8} {'GFLOPs@320':>10} {'img/s':>7} "
              f"{'ultralytics':>11} {'ratio':>6}")
        for name in args.models:
            for amp in [True, False] if args.fp32 else [True]:
                ips = throughput(data, root / f"tp-{name}-{amp}", name, amp)
                m = model_from_checkpoint(load_checkpoint(root / f"tp-{name}-{amp}" / "last.pt"))
                print(f"{name:<8} {'bf16' if amp else 'fp32':<9} {count_parameters(m) / 1e6:>7.2f}M "
                      f"{count_flops(m, 320) / 1e9:>10.2f} {ips:>7.1f} {ULTRALYTICS_IMG_S:>11.1f} "
                      f"{ips / ULTRALYTICS_IMG_S:>5.1f}x")
        print("(ultralytics: PEERS.md figure, it cannot run here; ratio = ours / ultralytics)")

        if args.budget:
            budget_runs(args, data, root)


CLASS_REGIMES: dict[int, tuple[str, ...]] = {
    3: ("round", "angular", "line"),
    16: tuple(f"{size} {name}" for name in CLASSES for size in ("small", "large")),
}
"""Other class counts for the same images: 3 coarse classes (disc, ring, crescent -> round;
triangle, square, star -> angular; cross, arrow -> line) and 16 fine ones (each shape split at
COCO's small-object area, ``detopt.constants.SMALL_AREA``, so the class also depends on the
object's size)."""

_COARSE = {0: 0, 1: 0, 6: 0, 2: 1, 3: 1, 4: 1, 5: 2, 7: 2}


def relabel_line(line: str, classes: int, imgsz: int) -> str:
    """One YOLO label row (``cls cx cy w h``, normalized) with the class of ``CLASS_REGIMES[classes]``."""
    cls, cx, cy, w, h = line.split()
    old = int(cls)
    if classes == 3:
        new = _COARSE[old]
    else:
        new = 2 * old + int(float(w) * float(h) * imgsz * imgsz >= SMALL_AREA)
    return f"{new} {cx} {cy} {w} {h}"


def relabel(data: Path, out: Path, classes: int, imgsz: int = 320) -> Path:
    """A copy of the synthetic YOLO data set ``data`` whose labels have ``classes`` classes (the
    images copied, the COCO annotations left out); reused when ``out`` already holds it."""
    import shutil

    if (out / "data.yaml").is_file():
        return out
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(data / "images", tmp / "images")
    splits = []
    for split_dir in sorted((data / "labels").iterdir()):
        splits.append(split_dir.name)
        (tmp / "labels" / split_dir.name).mkdir(parents=True)
        for f in split_dir.glob("*.txt"):
            rows = [relabel_line(r, classes, imgsz) for r in f.read_text().splitlines() if r.strip()]
            (tmp / "labels" / split_dir.name / f.name).write_text("".join(r + "\n" for r in rows))
    (tmp / "data.yaml").write_text(data_yaml_text(splits, list(CLASS_REGIMES[classes])))
    tmp.rename(out)
    return out


LONG_RUN = {"nbs": 64, "warmup_epochs": 3.0, "close_mosaic": 10}
"""The config's plain defaults, given explicitly: the recipe a budget replaced."""


def _finished(run: Path) -> tuple[int, float, int, float] | None:
    """``(epochs, seconds, accumulate, last val mAP50-95)`` of a finished run in ``run``, else None."""
    if not (run / "last.pt").is_file():
        return None
    ckpt = load_checkpoint(run / "last.pt")
    if int(ckpt["epoch"]) + 1 < int(ckpt["epochs"]):
        return None
    cfg = ckpt["config"]
    accumulate = max(round(cfg["nbs"] / cfg["batch"]), 1)
    return int(ckpt["epochs"]), float(ckpt["elapsed"]), accumulate, float(ckpt["metrics"]["metrics/AP"])


def budget_runs(args: argparse.Namespace, data: Path, root: Path) -> None:
    """Train with the plain command (``--time`` and nothing else) for each seed, evaluate on the
    run's own val split and on held-out images; with ``--compare``, the long-run defaults too."""
    seconds = parse_duration(args.budget)
    held = root / "held-out"
    write_synthetic(held, train=0, val=500, imgsz=320, seed=1, workers=2, overwrite=True)
    if args.classes:
        held = relabel(held, root / f"held-out-{args.classes}-classes", args.classes)
    held_set, held_names = dataset_from_source(held / "data.yaml", "val", 320)
    recipes: dict[str, tuple[str, dict]] = {"adapted (plain command)": ("adapted", {})}
    if args.compare:
        recipes["long-run defaults (nbs=64 warmup 3 close-mosaic 10)"] = ("long", LONG_RUN)
    for keys in args.also:
        pairs = keys.split()
        recipes[f"plain command + {keys}"] = ("-".join(pairs).replace("=", "_"), parse_overrides(pairs))
    which = args.budget_model or "the recipe's model"
    print(f"\n{args.budget} budget, {which} at 320 px, "
          f"`detopt train --time {args.budget}` "
          f"on {data}; seeds {args.seeds}")
    for label, (slug, extra) in recipes.items():
        vals, helds = [], []
        for seed in args.seeds:
            run = root / f"budget-{slug}-{seed}"
            scale = {"model": args.budget_model} if args.budget_model else {}
            cfg = TrainConfig(data=str(data / "data.yaml"), out=str(run), time=seconds, seed=seed,
                              progress=False, **scale, **extra)
            done = _finished(run)
            if done is None:  # train (a finished run of an earlier invocation is reused)
                trainer = Trainer(cfg)
                trainer.train()
                done = _finished(run)
            ckpt = load_checkpoint(run / "last.pt")
            chosen = ckpt.get("adapted", {}).get("model")
            if chosen:  # no --budget-model: the recipe chose the scale on this machine
                print(f"  {label:<52} seed {seed}: {chosen}", flush=True)
            epochs, elapsed, accumulate, val_map = done
            model = model_from_checkpoint(ckpt)
            pp = Postprocessor(model.strides, model.reg_max, score_thr=0.001, iou_thr=0.7, max_det=300)
            res = evaluate_detector(model, held_set, held_names, pp).result
            vals.append(val_map)
            helds.append(res.stats[0])
            print(f"  {label:<52} seed {seed}: {epochs:>2} epochs, "
                  f"{elapsed:.0f} s, accumulate {accumulate}, "
                  f"val mAP50-95 {val_map:.4f}, held-out {res.stats[0]:.4f}", flush=True)
        v, h = np.array(vals), np.array(helds)
        print(f"  {label:<52} mean val {v.mean():.4f} (spread {v.max() - v.min():.4f}), "
              f"held-out {h.mean():.4f} (spread {h.max() - h.min():.4f})")
        if args.peer_map:
            print(f"  {'':<52} ultralytics YOLOv8n: {args.peer_map:.4f}; "
                  f"ratio (val) {v.mean() / args.peer_map:.1f}x")


if __name__ == "__main__":
    main()

"""Training: throughput at 320 px / batch 16, and mAP on held-out data after a time budget.

1. Throughput: one full training epoch over the synthetic train split (2 000 images) through the
   real loader (mosaic, affine, HSV, flip in 2 worker processes), per model and precision. The
   img/s is the trainer's own (images / wall time of the epoch, loader start-up included).
2. ``--budget 10m``: train ``yolo-n`` with the short-budget recipe (``nbs=16``) for that long,
   then evaluate the EMA weights of the last epoch on a held-out set the run never saw (the
   synthetic generator with another seed; the run's own val split only picks ``best.pt``).

The peer, ultralytics YOLOv8n, cannot run on this machine (it imports torchvision, whose CPU
build does not exist here), so its figure is the one measured in ``shared/docs/PEERS.md``
(9.4 img/s, same machine, 320 px, batch 16). Its 10-minute mAP can be passed in with
``--peer-map`` to print the ratio.

    python benchmarks/bench_train.py [--models yolo-n yolo-p] [--fp32] [--budget 10m] [--peer-map X]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from detopt.config import TrainConfig, parse_duration
from detopt.data.dataset import dataset_from_source
from detopt.data.synth import write_synthetic
from detopt.engine import Trainer, evaluate_detector, model_from_checkpoint
from detopt.engine.checkpoint import load_checkpoint
from detopt.models import Postprocessor, count_flops, count_parameters

ULTRALYTICS_IMG_S = 9.4  # shared/docs/PEERS.md: YOLOv8n, 320 px, batch 16, this machine


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
    ap.add_argument("--peer-map", type=float, help="ultralytics YOLOv8n mAP50-95 after the same budget")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        data = args.data
        if data is None:
            data = root / "synth"
            write_synthetic(data, train=2000, val=300, imgsz=320, seed=0, workers=2, overwrite=True)

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
            seconds = parse_duration(args.budget)
            held = root / "held-out"
            write_synthetic(held, train=0, val=500, imgsz=320, seed=1, workers=2, overwrite=True)
            run = root / "budget"
            # the short-budget recipe: no accumulation (4x more optimizer steps than nbs=64);
            # warmup and close-mosaic are capped at 10 % / 15 % of the run by default
            cfg = TrainConfig(data=str(data / "data.yaml"), out=str(run), time=seconds, nbs=16,
                              progress=False)
            t0 = time.perf_counter()
            summary = Trainer(cfg).train()
            wall = time.perf_counter() - t0
            ckpt = load_checkpoint(run / "last.pt")
            model = model_from_checkpoint(ckpt)
            ds, names = dataset_from_source(held / "data.yaml", "val", cfg.imgsz)
            pp = Postprocessor(model.strides, model.reg_max, score_thr=0.001, iou_thr=0.7, max_det=300)
            res, _, _ = evaluate_detector(model, ds, names, pp)
            print(f"\n{args.budget} budget ({cfg.model}, short-budget recipe nbs=16): "
                  f"{summary['epochs']} epochs, "
                  f"{summary['elapsed']:.0f} s training + validation ({wall:.0f} s with setup)")
            print(f"held-out ({len(ds)} images never seen): mAP50-95 {res.stats[0]:.4f}  "
                  f"mAP50 {res.stats[1]:.4f}  AP_small {res.stats[3]:.4f}")
            if args.peer_map:
                print(f"ultralytics YOLOv8n (given): mAP50-95 {args.peer_map:.4f}; "
                      f"ratio {res.stats[0] / args.peer_map:.1f}x")


if __name__ == "__main__":
    main()

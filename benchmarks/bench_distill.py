"""Knowledge distillation: a small student trained with a teacher against the same student trained
alone, on the same time budget, side by side.

For each seed: ``detopt train`` of the student alone and with ``teacher=W`` (KD terms of
``TrainConfig.kd``), both with the same budget and recipe; the final EMA weights of each are
scored with the exact COCO evaluation on the validation split. The goal: the distilled student
beats the student alone by >= 0.010 mAP50-95, mean of 2 seeds. The teacher's forward pass costs
time inside the budget, so the distilled student takes fewer steps: the comparison is per budget.

    detopt data synth runs/shapes
    detopt train --data runs/shapes/data.yaml --model yolo-n --imgsz 320 --time 20m --out runs/teacher
    python benchmarks/bench_distill.py --teacher runs/teacher/last.pt --data runs/shapes/data.yaml \\
        --time 8m kd.feat=0 kd.compile=true

Trailing ``kd.KEY=VALUE`` arguments set the KD keys (YAML scalars). The figures, and how much the
teacher's own accuracy decides, are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from detopt.config import TrainConfig
from detopt.data.dataset import dataset_from_source
from detopt.engine import Trainer, evaluate_detector
from detopt.inference import load_weights
from detopt.models import Postprocessor


def _score(run: Path, data: str, imgsz: int) -> tuple[float, float]:
    w = load_weights(run / "last.pt")
    ds, names = dataset_from_source(data, "val", imgsz)
    m = w.model
    post = Postprocessor(m.strides, m.reg_max, score_thr=0.001)
    r = evaluate_detector(m, ds, names, post, "cpu", batch_size=16).result
    return float(r.stats[0]), float(r.stats[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--student", default="yolo-p")
    ap.add_argument("--time", default="3m", help="training budget of each run")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="runs/bench-distill")
    ap.add_argument("kd", nargs="*", help="kd.KEY=VALUE overrides of the KD weights")
    args = ap.parse_args()
    kd = {k.removeprefix("kd."): yaml.safe_load(v) for k, v in (x.split("=", 1) for x in args.kd)}
    print(f"student {args.student}, teacher {args.teacher}, {args.time} per run, {args.imgsz} px, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, kd {kd or 'defaults'}")
    gains = []
    for seed in args.seeds:
        row = {}
        for mode in ("alone", "teacher"):
            out = Path(args.out) / f"seed{seed}-{mode}"
            extra = {"teacher": args.teacher, "kd": kd} if mode == "teacher" else {}
            cfg = TrainConfig(data=args.data, out=str(out), model=args.student, imgsz=args.imgsz,
                              time=args.time, nbs=16, seed=seed, progress=False, val=False, **extra)
            t = time.perf_counter()
            summary = Trainer(cfg).train()
            spent = time.perf_counter() - t
            m, m50 = _score(out, args.data, args.imgsz)
            row[mode] = m
            print(f"seed {seed} {mode:8s}: mAP50-95 {m:.4f} mAP50 {m50:.4f} "
                  f"({summary.get('epochs', '?')} epochs, {spent:.0f} s)")
        gains.append(row["teacher"] - row["alone"])
        print(f"seed {seed}: distilled - alone = {gains[-1]:+.4f}")
    print(f"\nmean gain {statistics.mean(gains):+.4f} mAP50-95 over {len(gains)} seeds (goal >= +0.010)")


if __name__ == "__main__":
    main()

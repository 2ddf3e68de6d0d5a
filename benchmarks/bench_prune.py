"""Structured pruning of a trained yolo-n: FLOPs removed, mAP50-95 drop after a fine-tune of a
quarter of the training budget, and the speed-up in torch and ONNX Runtime at batch 1.

For each ``--ratios`` value, ``detopt.compress.prune`` removes that share of the FLOPs from the
same weights (``--importance``, uniform per layer or ``--global``), fine-tunes for
``--finetune-share`` of the weights' own training time, and reports mAP50-95 on the validation
split before pruning, right after, and after fine-tuning (exact COCO evaluation at score 0.001),
with the latency of the unpruned and the pruned network measured in interleaved rounds in this
process. A control row fine-tunes the unpruned weights with the same budget (``--no-control`` to
skip): on weights trained for minutes, fine-tuning alone adds accuracy, and the drop that pruning
costs is the gap to that row. ``--unstructured R`` also runs global magnitude pruning to
sparsity R, to show what it does (and does not do) to latency and file size.

    python benchmarks/bench_prune.py --weights RUN/last.pt --data DATA [--ratios 0.3 0.5]
        [--importance l1] [--global] [--finetune-share 0.25] [--unstructured 0.5] [--out DIR]

Without ``--weights``, yolo-n is first trained for ``--budget`` (default 10m) on the synthetic set
(``detopt data synth --train 2000 --val 300 --seed 0``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from detopt.compress import prune
from detopt.compress.pruning.pipeline import finetune
from detopt.config import PruneConfig, TrainConfig, build_config, parse_duration
from detopt.data.synth import write_synthetic
from detopt.engine import Trainer, load_checkpoint
from detopt.inference import load_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help="trained weights (default: train yolo-n for --budget)")
    ap.add_argument("--data", type=Path, help="their data set (default: the synthetic set)")
    ap.add_argument("--budget", default="10m", help="training budget when no --weights are given")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5], help="shares of FLOPs to remove")
    ap.add_argument("--importance", default="l1")
    ap.add_argument("--global", dest="global_rank", action="store_true")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--finetune-share", type=float, default=0.25, help="fine-tune / training time")
    ap.add_argument("--unstructured", type=float, help="also global magnitude pruning to this sparsity")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--round-to", type=int, default=16)
    ap.add_argument("--no-control", action="store_true", help="skip fine-tuning the unpruned weights")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        data, weights = args.data, args.weights
        if data is None:
            data = root / "synth"
            if not (data / "data.yaml").is_file():
                write_synthetic(data, train=2000, val=300, imgsz=320, seed=0, workers=2, overwrite=True)
        data_yaml = data / "data.yaml" if data.is_dir() else data
        if weights is None:
            run = root / "train"
            Trainer(TrainConfig(data=str(data_yaml), out=str(run), time=parse_duration(args.budget),
                                progress=False)).train()
            weights = run / "last.pt"
        elapsed = float(load_checkpoint(weights).get("elapsed") or 0.0)
        budget = args.finetune_share * elapsed
        print(f"weights {weights} (trained {elapsed:.0f} s); fine-tune {budget:.0f} s "
              f"({args.finetune_share:.0%}); importance {args.importance}, "
              f"{'global' if args.global_rank else 'uniform per layer'}, {args.steps} step(s)")
        print(f"{'pruning':<22} {'GFLOPs':>13} {'params M':>12} {'mAP before':>10} {'pruned':>7} "
              f"{'tuned':>7} {'drop':>7} {'torch ms':>13} {'x':>5} {'ORT ms':>13} {'x':>5}")
        if not args.no_control:  # the unpruned weights fine-tuned alike: what the extra training alone gives
            w = load_weights(weights)
            pcfg = build_config(PruneConfig, {"weights": str(weights), "data": str(data_yaml),
                                              "out": str(root / "control")})
            _, summary = finetune(w.model.float().requires_grad_(True), pcfg, w.imgsz or 320,
                                  root / "control", budget, None, [])
            control = float(summary["metrics"]["metrics/AP"])
            print(f"{'unpruned, fine-tuned':<22} {'':>13} {'':>12} {'':>10} {'':>7} {control:>7.4f}   "
                  "(control: the same fine-tune without pruning)", flush=True)
        jobs = [("structured", r) for r in args.ratios]
        if args.unstructured:
            jobs.append(("unstructured", args.unstructured))
        for method, ratio in jobs:
            r = prune({"weights": str(weights), "data": str(data_yaml),
                       "out": str(root / f"{method}-{ratio}"), "method": method, "ratio": ratio,
                       "importance": args.importance,
                       "global_rank": args.global_rank, "steps": args.steps, "finetune": budget,
                       "round_to": args.round_to})
            lat = r.latency
            tuned = r.map_after_finetune if r.map_after_finetune is not None else float("nan")
            label = f"{method} {ratio:.0%}"
            print(f"{label:<22} {r.gflops_before:>5.2f} -> {r.gflops_after:<5.2f} "
                  f"{r.params_before / 1e6:>4.2f} -> {r.params_after / 1e6:<4.2f} {r.map_before:>10.4f} "
                  f"{r.map_after_pruning:>7.4f} {tuned:>7.4f} {r.map_before - tuned:>7.4f} "
                  f"{lat['torch_before']['p50_ms']:>5.1f} -> {lat['torch_after']['p50_ms']:<5.1f} "
                  f"{lat['torch_speedup']:>4.2f}x {lat['ort_before']['p50_ms']:>5.1f} -> "
                  f"{lat['ort_after']['p50_ms']:<5.1f} {lat['ort_speedup']:>4.2f}x", flush=True)
            for note in r.notes:
                print(f"  {note}")


if __name__ == "__main__":
    main()

"""Hyperparameter search: how much training compute the pruner saves, and whether the best config
found beats the defaults on data the study never saw.

For each ``--seeds`` value, two studies of the same space, sampler and seed run on the synthetic
set (yolo-p, ``--epochs`` per trial): one without pruning (``--trials`` trials) and one with the
Hyperband pruner (the same number of trials, extended to twice as many when its best mAP50-95 has
not reached the unpruned study's best). The pruned study's compute is counted, trial by trial in
order, until it reaches that value; the ratio to the whole
unpruned study's compute is printed (training seconds of every trial, validation included; also
in epochs). Then the best config of the pruned study and the defaults (the same fixed keys, no
searched key) each train once more with the trial budget, and both are scored on a held-out set
(the synthetic generator with another seed), with the exact COCO evaluation.

    python benchmarks/bench_tune.py [--trials 8] [--epochs 10] [--seeds 0 1] [--train-images 500]
        [--imgsz 256] [--out runs/bench-tune]

(The trials must be long enough to learn something: at 256 px yolo-p leaves mAP50-95 ~0 for its
first ~3000 images on this data; 10 epochs of 500 images reach about 0.02 with the defaults.)

Finished studies in ``--out`` are resumed, not rerun (a journal file per study).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import optuna

from detopt.config import TrainConfig, TuneConfig, build_config
from detopt.data.dataset import dataset_from_source
from detopt.data.synth import write_synthetic
from detopt.engine import Trainer, evaluate_detector
from detopt.inference import default_postprocessor, load_weights
from detopt.tune.hpo import open_storage, search


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="detopt", storage=open_storage(None, out))
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def _cost(t: optuna.trial.FrozenTrial) -> tuple[float, int]:
    return float(t.user_attrs.get("seconds", 0.0)), len(t.intermediate_values)


def compute_to_reach(trials: list[optuna.trial.FrozenTrial], target: float) -> tuple[float, int, int] | None:
    """Seconds and epochs spent, in trial order, until a complete trial's value reaches
    ``target`` (and that trial's number); None if none does."""
    seconds, epochs = 0.0, 0
    for t in trials:
        s, e = _cost(t)
        seconds, epochs = seconds + s, epochs + e
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and t.value >= target - 1e-12:
            return seconds, epochs, t.number
    return None


def held_out_map(values: dict[str, Any], out: Path, heldout: Path) -> float:
    """Train ``values`` into ``out`` (reused when finished) and score ``last.pt`` on ``heldout``."""
    if not (out / "last.pt").is_file():
        Trainer(build_config(TrainConfig, values | {"out": str(out), "progress": False})).train()
    w = load_weights(out / "last.pt")
    ds, names = dataset_from_source(heldout, "val", values.get("imgsz", 320))
    ev = evaluate_detector(w.model, ds, names, default_postprocessor(w.model, score_thr=0.001), "cpu",
                           batch_size=32)
    return float(ev.result.stats[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--train-images", type=int, default=500)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-tune"))
    ap.add_argument("--space", type=Path, help="space file (default: the default space less MixUp and "
                    "copy-paste, which each run the whole pipeline on a second image: 2.5x slower epochs "
                    "on 2 cores)")
    args = ap.parse_args()

    root = args.out
    data = root / "synth"
    if not (data / "data.yaml").is_file():
        write_synthetic(data, train=args.train_images, val=100, imgsz=args.imgsz, seed=0, workers=2,
                        overwrite=True)
    heldout = root / "heldout"
    if not (heldout / "data.yaml").is_file():
        write_synthetic(heldout, train=16, val=200, imgsz=args.imgsz, seed=1000, workers=2, overwrite=True)
    fixed = {"model": "yolo-p", "imgsz": args.imgsz, "batch": 16, "workers": 2}
    space = args.space
    if space is None:
        space = root / "space.yaml"
        space.write_text("mixup: null\ncopy_paste: null\n")
    rows = []
    for seed in args.seeds:
        res = {}

        def study(pruner: str, trials: int, seed: int = seed) -> list[optuna.trial.FrozenTrial]:
            out = root / f"seed{seed}-{pruner}"
            cfg = TuneConfig(data=str(data / "data.yaml"), out=str(out), trials=trials,
                             trial_epochs=args.epochs, pruner=pruner, seed=seed, postprocess=False,
                             train=fixed, space=str(space))
            search(cfg, log=lambda m: print(f"[seed {seed} {pruner}] {m}", flush=True))
            return _trials(out)

        res["none"] = study("none", args.trials)
        target = max(t.value for t in res["none"] if t.state == optuna.trial.TrialState.COMPLETE)
        # the same study with the pruner: the same trials first (same seed, so the same draws); if
        # it has not reached the unpruned best, extended (a re-run) to twice as many trials
        res["hyperband"] = study("hyperband", args.trials)
        if compute_to_reach(res["hyperband"], target) is None:
            res["hyperband"] = study("hyperband", 2 * args.trials)
        plain = res["none"]
        best_plain = target
        total_s = sum(_cost(t)[0] for t in plain)
        total_e = sum(_cost(t)[1] for t in plain)
        reach = compute_to_reach(res["hyperband"], best_plain)
        pruned_best = max(t.value for t in res["hyperband"] if t.state == optuna.trial.TrialState.COMPLETE)
        row = {"seed": seed, "best_plain": best_plain, "plain_s": total_s, "plain_epochs": total_e,
               "pruned_best": pruned_best,
               "pruned_all_s": sum(_cost(t)[0] for t in res["hyperband"]),
               "pruned_count": sum(t.state == optuna.trial.TrialState.PRUNED for t in res["hyperband"])}
        if reach is not None:
            row |= {"reach_s": reach[0], "reach_epochs": reach[1], "reach_trial": reach[2],
                    "ratio_s": reach[0] / total_s, "ratio_epochs": reach[1] / total_e}
        # held out: the pruned study's best config against the defaults, same budget
        best = max((t for t in res["hyperband"] if t.state == optuna.trial.TrialState.COMPLETE),
                   key=lambda t: t.value)
        base = {"data": str(data / "data.yaml"), **fixed, "epochs": args.epochs, "seed": seed, "val": False}
        row["heldout_best"] = held_out_map(base | dict(best.params), root / f"seed{seed}-final-best", heldout)
        row["heldout_default"] = held_out_map(base, root / f"seed{seed}-final-default", heldout)
        rows.append(row)
        print(row, flush=True)

    print(f"\n{args.trials} trials x {args.epochs} epochs (yolo-p, {args.imgsz} px, {args.train_images} "
          "training images); compute = training seconds of every trial, validation included\n")
    print("| seed | best mAP, no pruning | its compute | pruned study reaches it at | share | "
          "pruned: trials pruned, best | held-out mAP: best config | defaults |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        reach = (f"{r['reach_s']:.0f} s, {r['reach_epochs']} epochs (trial {r['reach_trial']})"
                 if "reach_s" in r else "not reached")
        share = (f"{r['ratio_s']:.0%} of the time, {r['ratio_epochs']:.0%} of the epochs"
                 if "reach_s" in r else "-")
        print(f"| {r['seed']} | {r['best_plain']:.4f} | {r['plain_s']:.0f} s, {r['plain_epochs']} epochs | "
              f"{reach} | {share} | {r['pruned_count']}, {r['pruned_best']:.4f} | "
              f"{r['heldout_best']:.4f} | {r['heldout_default']:.4f} |")
    reached = [r for r in rows if "reach_s" in r]
    if len(reached) == len(rows):
        mean = sum(r["ratio_s"] for r in rows) / len(rows)
        print(f"\nmean share of the unpruned study's compute to reach its best: {mean:.0%} (goal <= 50%)")
    else:
        print(f"\nthe pruned study did not reach the unpruned best in {len(rows) - len(reached)} of "
              f"{len(rows)} seeds")


if __name__ == "__main__":
    main()

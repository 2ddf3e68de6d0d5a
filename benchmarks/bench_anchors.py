"""Anchor fit: IoU k-means + evolution (ours) vs the Euclidean k-means of the seed guide.

Two box populations, k = 9 anchors over 3 levels, several seeds each:

- the embedded synthetic set (``detopt data synth``), boxes letterboxed to the training size;
- a skewed set: tall pedestrians, wide vehicles and thin poles with log-normal sizes, the
  aspect-ratio mix where Euclidean clustering is known to do worst.

Quality, not speed, is the point: the table prints mean best IoU and BPR (best possible recall at
IoU 0.5) for both methods and the difference (ours - Euclidean). Fit times are printed too.

    python benchmarks/bench_anchors.py [--images 1000] [--imgsz 640] [--seeds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from detopt.anchors import euclidean_kmeans_anchors, kmeans_anchors, normalized_wh
from detopt.data.formats import load_dataset
from detopt.data.synth import write_synthetic


def skewed_wh(n: int, seed: int) -> np.ndarray:
    """Normalised (w, h): 50 % tall (h/w ≈ 2.5), 35 % wide (w/h ≈ 2.2), 15 % thin poles (h/w ≈ 6)."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, n, p=[0.5, 0.35, 0.15])
    size = np.exp(rng.normal(np.log([0.06, 0.12, 0.05])[kind], 0.7))
    ratio = np.exp(rng.normal(np.log([2.5, 1 / 2.2, 6.0])[kind], 0.25))  # h / w
    wh = np.stack([size / np.sqrt(ratio), size * np.sqrt(ratio)], 1)
    return np.clip(wh, 1e-3, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000, help="synthetic training images")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=9)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic(Path(tmp) / "s", train=args.images, val=0, imgsz=320, seed=0)
        synth = normalized_wh(load_dataset(Path(tmp) / "s" / "data.yaml").splits["train"])
    sets = {"synthetic": synth, "skewed aspect": skewed_wh(len(synth), 0)}
    print(f"k = {args.k} over 3 levels at {args.imgsz} px, BPR at IoU 0.5; {args.seeds} seeds per set\n")
    head = f"{'set':<14} {'seed':>4} {'boxes':>6} | {'mean best IoU':^23} | {'BPR @0.5':^23} | {'fit s':^11}"
    print(head)
    print(
        f"{'':<14} {'':>4} {'':>6} | {'ours':>7} {'eucl':>7} {'diff':>7} | {'ours':>7} {'eucl':>7} "
        f"{'diff':>7} | {'ours':>5} {'eucl':>5}"
    )
    print("-" * len(head))
    for name, wh in sets.items():
        diffs = []
        for seed in range(args.seeds):
            t = time.perf_counter()
            ours = kmeans_anchors(wh, args.k, args.imgsz, seed=seed)
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            base = euclidean_kmeans_anchors(wh, args.k, args.imgsz, seed=seed)
            t_base = time.perf_counter() - t
            d_iou, d_bpr = ours.mean_best_iou - base.mean_best_iou, ours.bpr - base.bpr
            diffs.append((d_iou, d_bpr))
            print(
                f"{name:<14} {seed:>4} {len(wh):>6} | {ours.mean_best_iou:>7.4f} {base.mean_best_iou:>7.4f} "
                f"{d_iou:>+7.4f} | {ours.bpr:>7.4f} {base.bpr:>7.4f} {d_bpr:>+7.4f} | "
                f"{t_ours:>5.2f} {t_base:>5.2f}"
            )
        d = np.array(diffs)
        print(
            f"{name:<14} {'min':>4} {'':>6} | {'':>15} {d[:, 0].min():>+7.4f} | {'':>15} "
            f"{d[:, 1].min():>+7.4f} |"
        )
    print("\ngoal: ours never worse than Euclidean (every diff >= 0)")


if __name__ == "__main__":
    main()

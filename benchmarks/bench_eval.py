"""COCO bbox evaluation speed: detopt vs faster-coco-eval vs pycocotools, end to end.

End to end means JSON files in, the 12 stats out: every tool reads the ground truth and the
results from disk, evaluates, accumulates and summarizes (pycocotools' prints go to a null sink).
The data set is detector-like output from ``detopt.testing.synthetic_coco``: by default 2 000
images, 20 classes, ~30k ground-truth boxes, ~84k detections (the size in shared/docs/PEERS.md).
Each tool runs ``--reps`` times in this process (median reported; numba kernels come from the
on-disk cache); detopt's first call in a fresh process (cache load, or compile when the cache is
empty) is reported separately. The stats of every tool are compared with pycocotools'.

    python benchmarks/bench_eval.py [--images 2000] [--reps 5] [--no-pycocotools] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from detopt.evaluation import evaluate_coco
from detopt.testing import synthetic_coco

try:
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster
except ImportError:  # peers are test extras
    FCOCO = None
try:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
except ImportError:
    COCO = None


def detopt_stats(gt: str, dt: str) -> np.ndarray:
    return evaluate_coco(gt, dt).stats


def peer_stats(coco_cls, eval_cls, gt: str, dt: str) -> np.ndarray:
    """pycocotools' API, as pycocotools and faster-coco-eval both implement it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(gt)
        ev = eval_cls(coco_gt, coco_gt.loadRes(dt), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12])


def timed(fn: Callable[[], np.ndarray], reps: int) -> tuple[float, np.ndarray]:
    """Median seconds over ``reps`` runs and the last result."""
    times = []
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def first_call_seconds(gt: str, dt: str, cold: bool) -> float:
    """detopt's first evaluation in a fresh interpreter (imports excluded); cold = empty numba cache."""
    code = ("import time; from detopt.evaluation import evaluate_coco; t = time.perf_counter(); "
            f"evaluate_coco({gt!r}, {dt!r}); print(time.perf_counter() - t)")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-pycocotools", action="store_true", help="skip the slow reference timing")
    ap.add_argument("--quick", action="store_true", help="200 images, 2 repetitions, no cold start")
    args = ap.parse_args()
    if args.quick:
        args.images, args.reps = 200, 2

    gt, dt = synthetic_coco(args.images, n_classes=20, gt_per_image=15.5, extra_dets_per_gt=1.8,
                            fp_per_image=6.0, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = str(Path(tmp) / "gt.json"), str(Path(tmp) / "pred.json")
        Path(gt_path).write_text(json.dumps(gt))
        Path(dt_path).write_text(json.dumps(dt))
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"python {platform.python_version()}")
        print(f"# {len(gt['images'])} images, {len(gt['categories'])} classes, {len(gt['annotations'])} "
              f"ground truth, {len(dt)} detections; JSON files in, 12 stats out; median of {args.reps}")
        detopt_stats(gt_path, dt_path)  # warm the numba cache
        rows = []
        t_ours, s_ours = timed(lambda: detopt_stats(gt_path, dt_path), args.reps)
        rows.append(("detopt", t_ours, s_ours))
        if FCOCO is not None:
            t, s = timed(lambda: peer_stats(FCOCO, COCOeval_faster, gt_path, dt_path), args.reps)
            rows.append(("faster-coco-eval", t, s))
        ref = None
        if COCO is not None and not args.no_pycocotools:
            t, ref = timed(lambda: peer_stats(COCO, COCOeval, gt_path, dt_path), 1)
            rows.append(("pycocotools", t, ref))
        print("\n| tool | time (s) | detopt / tool | max |stats - pycocotools| |")
        print("|---|---|---|---|")
        for name, t, s in rows:
            diff = "n/a" if ref is None else f"{np.abs(np.asarray(s) - ref).max():.1e}"
            print(f"| {name} | {t:.3f} | {t_ours / t:.2f} | {diff} |")
        if not args.quick:
            warm = first_call_seconds(gt_path, dt_path, cold=False)
            cold = first_call_seconds(gt_path, dt_path, cold=True)
            print(f"\ndetopt first call in a fresh process: {warm:.2f} s from the numba cache, "
                  f"{cold:.2f} s with an empty cache (compilation)")


if __name__ == "__main__":
    main()

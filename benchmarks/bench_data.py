"""Data pipeline throughput: synthesis, reading, validation, loading.

No peer runs here: the usual peer for these steps (ultralytics' data checks and loaders) is AGPL
and may not be installed next to detopt. The figures are rates on this machine, with the goal of
the issue next to them (synthesis >= 200 images/s on one core).

    python benchmarks/bench_data.py [--images 600] [--imgsz 320]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numba
import torch

from detopt.data.dataset import dataset_from_source, make_loader
from detopt.data.formats import read_dataset
from detopt.data.synth import write_synthetic
from detopt.data.validate import validate_dataset


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600, help="training images to synthesize (val: 1/6 of it)")
    ap.add_argument("--imgsz", type=int, default=320)
    args = ap.parse_args()
    n_train, n_val = args.images, max(1, args.images // 6)
    n = n_train + n_val
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"numba {numba.__version__}; {n} images of {args.imgsz} px\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_synthetic(tmp / "warm", train=2, val=1, imgsz=args.imgsz)  # numba kernel from the cache
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if cpus:
            os.sched_setaffinity(0, {min(cpus)})  # one core, OpenCV's threads included
        try:
            _, dt = _timed(lambda: write_synthetic(tmp / "s1", train=n_train, val=n_val, imgsz=args.imgsz))
        finally:
            if cpus:
                os.sched_setaffinity(0, cpus)
        rows.append(("synth, 1 process pinned to 1 core", n / dt, "≥ 200 images/s"))
        cores = os.cpu_count() or 1
        if cores > 1:
            _, dt = _timed(lambda: write_synthetic(tmp / "s2", train=n_train, val=n_val, imgsz=args.imgsz,
                                                   workers=cores))
            rows.append((f"synth, {cores} processes", n / dt, ""))
        src = tmp / "s1"
        _, dt = _timed(lambda: read_dataset(src / "data.yaml"))
        rows.append(("read YOLO (labels + image headers)", n / dt, ""))
        _, dt = _timed(lambda: read_dataset(src / "annotations"))
        rows.append(("read COCO json", n / dt, ""))
        report, dt = _timed(lambda: validate_dataset(src))
        assert report.ok
        rows.append(("validate (decode every image)", n / dt, ""))
        ds, _ = dataset_from_source(src / "data.yaml", "train", imgsz=args.imgsz, check_images=False)
        for workers in (0, cores):
            loader = make_loader(ds, batch_size=32, shuffle=True, workers=workers)
            _, dt = _timed(lambda loader=loader: sum(len(b["images"]) for b in loader))
            rows.append((f"DataLoader, decode + letterbox, {workers} workers", len(ds) / dt, ""))
        _, dt = _timed(lambda: ds.cache_images())
        rows.append(("RAM cache fill (threads)", len(ds) / dt, ""))
        loader = make_loader(ds, batch_size=32, shuffle=True, workers=0)
        _, dt = _timed(lambda: sum(len(b["images"]) for b in loader))
        rows.append(("DataLoader from the RAM cache, 0 workers", len(ds) / dt, ""))
    w = max(len(r[0]) for r in rows)
    print(f"{'step':<{w}}  {'images/s':>9}  goal")
    for name, rate, goal in rows:
        print(f"{name:<{w}}  {rate:>9.0f}  {goal}")


if __name__ == "__main__":
    main()

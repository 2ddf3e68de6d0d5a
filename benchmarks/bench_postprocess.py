"""Post-processing speed: detopt vs OpenCV and ensemble-boxes, side by side in one process.

Inputs are dense detector-like candidates (~20 per object, 1024 px image), float32. Each case
reports the median of repeated calls after a warm-up (numba kernels come from the on-disk
cache, so compile time is excluded); the first-call times are reported separately, both from
the cache (this process) and cold (a subprocess with an empty numba cache).

    python benchmarks/bench_postprocess.py [--quick] [--no-cold]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from detopt.ops import diou_nms, matrix_nms, nms, soft_nms, weighted_boxes_fusion
from detopt.testing import detector_like_boxes

try:
    import cv2
except ImportError:  # peers are test extras
    cv2 = None
try:
    from ensemble_boxes import weighted_boxes_fusion as eb_wbf
    from ensemble_boxes.ensemble_boxes_nms import cpu_soft_nms_float, nms_float_fast
except ImportError:
    eb_wbf = cpu_soft_nms_float = nms_float_fast = None


def timeit(fn: Callable[[], object], min_time: float = 0.4, max_reps: int = 2000) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def wbf_inputs(n_models: int, per_model: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    b0, s0, l0 = detector_like_boxes(per_model, per_object=20, n_classes=1, seed=seed,
                                     dtype=np.float64)
    bl, sl, ll = [], [], []
    for _ in range(n_models):
        bl.append(np.clip((b0 + rng.normal(0, 3, b0.shape)) / 1024, 0, 1))
        sl.append(np.clip(s0 * rng.uniform(0.8, 1, len(s0)), 0.01, 1))
        ll.append(l0.copy())
    return bl, sl, ll


def rows(quick: bool) -> list[tuple[str, float, str, float | None]]:
    out = []
    nms_sizes = [1000, 5000] if quick else [1000, 5000, 20000]
    for n in nms_sizes:
        b, s, _ = detector_like_boxes(n, per_object=20, seed=1)
        ours = timeit(lambda b=b, s=s: nms(b, s, 0.5))
        if cv2 is not None:
            xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1).astype(np.float64)
            sl = s.astype(np.float64)
            peer = timeit(lambda xywh=xywh, sl=sl: cv2.dnn.NMSBoxes(xywh, sl, 0.0, 0.5))
            out.append((f"hard NMS, {n} boxes", ours, "cv2.dnn.NMSBoxes", peer))
        else:
            out.append((f"hard NMS, {n} boxes", ours, "OpenCV not installed", None))
        if nms_float_fast is not None and n <= 5000:
            dets = np.concatenate([b / 1024, s[:, None]], 1).astype(np.float64)
            s64 = s.astype(np.float64)
            peer = timeit(lambda dets=dets, s64=s64: nms_float_fast(dets, s64, 0.5))
            out.append((f"hard NMS, {n} boxes", ours, "ensemble-boxes nms", peer))
    for n in [1000] if quick else [1000, 5000]:
        b, s, _ = detector_like_boxes(n, per_object=20, seed=2)
        ours = timeit(lambda b=b, s=s: soft_nms(b, s, 0.3, 0.5, 0.001, "gaussian"))
        if cv2 is not None:
            rect = np.round(np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)).astype(np.int32)
            peer = timeit(lambda rect=rect, s=s: cv2.dnn.softNMSBoxes(
                rect, s, 0.001, 0.3, 0, 0.5, cv2.dnn.SOFT_NMSMETHOD_SOFTNMS_GAUSSIAN))
            out.append((f"gaussian soft-NMS, {n} boxes", ours, "cv2.dnn.softNMSBoxes", peer))
        if cpu_soft_nms_float is not None:
            nb = (b / 1024).astype(np.float64)
            s64 = s.astype(np.float64)
            peer = timeit(lambda nb=nb, s64=s64: cpu_soft_nms_float(nb.copy(), s64.copy(), 0.3,
                                                                    0.5, 0.001, 2))
            out.append((f"gaussian soft-NMS, {n} boxes", ours, "ensemble-boxes", peer))
    for per in [200] if quick else [200, 1000]:
        bl, sl, ll = wbf_inputs(5, per)
        ours = timeit(lambda bl=bl, sl=sl, ll=ll: weighted_boxes_fusion(bl, sl, ll))
        peer = timeit(lambda bl=bl, sl=sl, ll=ll: eb_wbf(bl, sl, ll)) if eb_wbf else None
        out.append((f"WBF, 5 models x {per} boxes", ours, "ensemble-boxes", peer))
    b, s, lab = detector_like_boxes(5000, per_object=20, n_classes=5, seed=3)
    out.append(("DIoU-NMS, 5000 boxes", timeit(lambda: diou_nms(b, s, 0.5)), "(no peer)", None))
    out.append(("matrix NMS, 5000 boxes", timeit(lambda: matrix_nms(b, s, lab)), "(no peer)",
                None))
    return out


_FIRST_CALL = """
import time, numpy as np
t0 = time.perf_counter()
from detopt.ops import nms, soft_nms, diou_nms, matrix_nms, weighted_boxes_fusion
from detopt.testing import detector_like_boxes
t_import = time.perf_counter() - t0
b, s, lab = detector_like_boxes(1000, per_object=20, n_classes=2)
res = {"import": t_import}
for name, fn in [("nms", lambda: nms(b, s, 0.5)), ("soft_nms", lambda: soft_nms(b, s)),
                 ("diou_nms", lambda: diou_nms(b, s, 0.5)),
                 ("matrix_nms", lambda: matrix_nms(b, s, lab)),
                 ("wbf", lambda: weighted_boxes_fusion([b / 1024], [s], [lab]))]:
    t0 = time.perf_counter(); fn(); res[name] = time.perf_counter() - t0
print(" ".join(f"{k}={v:.3f}" for k, v in res.items()))
"""


def first_call(cold: bool) -> str:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if cold:
            env["NUMBA_CACHE_DIR"] = tmp
        r = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True,
                           text=True, check=True)
    return r.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-compile measurement")
    args = ap.parse_args()
    print(f"# detopt post-processing benchmark ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numpy {np.__version__}, "
          f"OpenCV {cv2.__version__ if cv2 else '-'})")
    print(f"first call, numba cache warm (s): {first_call(cold=False)}")
    if not args.no_cold:
        print(f"first call, numba cache cold, includes compilation (s): {first_call(cold=True)}")
    print()
    header = f"| {'case':<32} | {'detopt (ms)':>11} | {'peer':<22} | {'peer (ms)':>9} | " \
             f"{'ratio ours/peer':>15} | {'speed-up':>8} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for case, ours, peer_name, peer in rows(args.quick):
        if peer is None:
            print(f"| {case:<32} | {ours:>11.3f} | {peer_name:<22} | {'-':>9} | {'-':>15} | "
                  f"{'-':>8} |")
        else:
            print(f"| {case:<32} | {ours:>11.3f} | {peer_name:<22} | {peer:>9.3f} | "
                  f"{ours / peer:>15.4f} | {peer / ours:>7.1f}x |")


if __name__ == "__main__":
    main()

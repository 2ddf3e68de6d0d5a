import numpy as np
import pytest

from detopt.testing import detector_like_boxes


def uniform_boxes(rng, n, span=200.0, max_wh=60.0, degenerate=0.05, dtype=np.float64):
    xy = rng.uniform(-span / 4, span, (n, 2))
    wh = rng.uniform(1, max_wh, (n, 2))
    wh[rng.random(n) < degenerate, 0] = 0.0
    boxes = np.concatenate([xy, xy + wh], 1).astype(dtype)
    m = max(n, 1)
    scores = rng.permutation(n).astype(dtype) / m + rng.uniform(0, 1 / (4 * m), n)
    return boxes, scores.astype(dtype)


CASES = ["dense", "uniform", "crowded", "tiny"]


def make_case(kind: str, seed: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if kind == "dense":
        b, s, lab = detector_like_boxes(300, per_object=15, n_classes=3, seed=seed, dtype=dtype)
        return b, s, lab
    if kind == "uniform":
        b, s = uniform_boxes(rng, 250, dtype=dtype)
    elif kind == "crowded":
        b, s = uniform_boxes(rng, 200, span=40, max_wh=30, dtype=dtype)
    else:
        b, s = uniform_boxes(rng, 3, dtype=dtype)
    return b, s, rng.integers(0, 3, len(s))


@pytest.fixture(params=[(k, s) for k in CASES for s in range(3)], ids=lambda p: f"{p[0]}-{p[1]}")
def case(request):
    return make_case(*request.param)

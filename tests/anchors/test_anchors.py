import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.anchors import (
    AnchorGenerator,
    anchor_points,
    euclidean_kmeans_anchors,
    feature_shapes,
    fit_metrics,
    kmeans_anchors,
    normalized_wh,
    wh_iou,
)
from detopt.cli import main
from detopt.errors import DetoptInputError
from detopt.ops import box_iou
from detopt.structures.records import ImageRecord
from tests.hyp import examples


def test_generator_layout_sizes_and_ratios():
    gen = AnchorGenerator(sizes=[[32, 64], [128]], ratios=[0.5, 1.0, 2.0], strides=[8, 16])
    a = gen([(3, 4), (2, 2)])
    assert gen.num_anchors == [6, 3]
    assert a.level_sizes == (3 * 4 * 6, 2 * 2 * 3) and len(a) == 72 + 12
    wh = a.boxes[:, 2:] - a.boxes[:, :2]
    # location (y=1, x=2) of level 0, anchor j = size 64, ratio 2 -> index (1*4 + 2)*6 + 5
    i = (1 * 4 + 2) * 6 + 5
    torch.testing.assert_close(a.points[i], torch.tensor([2.5 * 8, 1.5 * 8]))
    assert wh[i, 0] * wh[i, 1] == pytest.approx(64**2, rel=1e-5)
    assert wh[i, 1] / wh[i, 0] == pytest.approx(2.0, rel=1e-5)
    assert (a.strides[:72] == 8).all() and (a.strides[72:] == 16).all()
    # level 1 starts at (0.5, 0.5) * 16 with three ratios of size 128
    torch.testing.assert_close(a.points[72:75], torch.tensor([[8.0, 8.0]] * 3))
    torch.testing.assert_close((wh[72:75].prod(1)).sqrt(), torch.tensor([128.0] * 3))


def test_generator_from_wh_and_points():
    gen = AnchorGenerator.from_wh([[(10, 13), (16, 30)], [(33, 23)]], strides=[8, 16], offset=0.0)
    a = gen(feature_shapes((32, 16), [8, 16]))
    assert a.level_sizes == (4 * 2 * 2, 2 * 1 * 1)
    torch.testing.assert_close(a.boxes[1], torch.tensor([-8.0, -15.0, 8.0, 15.0]))
    p = anchor_points([(2, 3)], [32], cell_size=5.0)
    torch.testing.assert_close(p.boxes[4], torch.tensor([48 - 80.0, 48 - 80.0, 48 + 80.0, 48 + 80.0]))
    assert feature_shapes((33, 64), [8, 16, 32]) == [(5, 8), (3, 4), (2, 2)]


def test_generator_errors():
    with pytest.raises(DetoptInputError, match="strides"):
        AnchorGenerator(sizes=[[32]], strides=[8, 16])
    with pytest.raises(DetoptInputError, match="positive"):
        AnchorGenerator(sizes=[[0]], strides=[8])
    with pytest.raises(DetoptInputError, match="feature shapes"):
        AnchorGenerator(sizes=[[32]], strides=[8])([(2, 2), (1, 1)])


def test_wh_iou_equals_box_iou_of_centred_boxes():
    rng = np.random.default_rng(0)
    wh, an = rng.uniform(1, 50, (30, 2)), rng.uniform(1, 50, (7, 2))
    centred = lambda x: np.concatenate([-x / 2, x / 2], 1)  # noqa: E731
    np.testing.assert_allclose(wh_iou(wh, an), box_iou(centred(wh), centred(an)), atol=1e-12)


def test_fit_metrics_brute_force():
    rng = np.random.default_rng(1)
    wh, an = rng.uniform(2, 60, (40, 2)), rng.uniform(2, 60, (5, 2))
    m = fit_metrics(wh, an, thr=0.4)
    best = [max(wh_iou(wh[i : i + 1], an)[0]) for i in range(40)]
    assert m["mean_best_iou"] == pytest.approx(np.mean(best))
    assert m["bpr"] == pytest.approx(np.mean([b >= 0.4 for b in best]))
    count = [sum(wh_iou(wh[i : i + 1], an)[0] >= 0.4) for i in range(40)]
    assert m["anchors_per_box"] == pytest.approx(np.mean(count))


def clustered_wh(seed, centres, n=300, spread=0.03):
    rng = np.random.default_rng(seed)
    c = np.asarray(centres)[rng.integers(0, len(centres), n)]
    return c * np.exp(rng.normal(0, spread, (n, 2)))


def test_kmeans_recovers_clusters():
    centres = np.array([[0.02, 0.04], [0.1, 0.05], [0.3, 0.3], [0.05, 0.3], [0.5, 0.2], [0.15, 0.15]])
    fit = kmeans_anchors(clustered_wh(0, centres), k=6, imgsz=100, levels=2, generations=200)
    want = centres[np.argsort(centres.prod(1))] * 100
    np.testing.assert_allclose(fit.anchors, want, rtol=0.05)
    assert fit.mean_best_iou > 0.9 and fit.bpr == 1.0
    assert [len(x) for x in fit.per_level()] == [3, 3]
    assert (np.diff(fit.anchors.prod(1)) >= 0).all()


def test_kmeans_deterministic_and_evolution_never_worse():
    wh = np.exp(np.random.default_rng(3).normal(np.log(0.1), 0.7, (2000, 2)))
    a = kmeans_anchors(wh, 9, 640, generations=300, seed=5)
    b = kmeans_anchors(wh, 9, 640, generations=300, seed=5)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    start = kmeans_anchors(wh, 9, 640, generations=0, seed=5)
    assert a.mean_best_iou >= start.mean_best_iou and a.bpr >= start.bpr and a.fitness >= start.fitness


@settings(max_examples=examples(6), deadline=None)
@given(st.integers(0, 10_000), st.floats(0.2, 1.2), st.sampled_from([0.0, 0.8, -0.8]))
def test_iou_kmeans_not_worse_than_euclidean(seed, spread, skew):
    """Mean best IoU of ours >= the Euclidean baseline, on log-normal sizes with skewed aspects."""
    rng = np.random.default_rng(seed)
    s = np.exp(rng.normal(np.log(0.08), spread, 1500))
    ar = np.exp(rng.normal(skew, 0.5, 1500))
    wh = np.clip(np.stack([s * np.sqrt(ar), s / np.sqrt(ar)], 1), 1e-3, 1.0)
    ours = kmeans_anchors(wh, 9, 640, generations=200, seed=seed)
    base = euclidean_kmeans_anchors(wh, 9, 640, seed=seed)
    assert ours.mean_best_iou >= base.mean_best_iou


def test_kmeans_errors():
    with pytest.raises(DetoptInputError, match="split evenly"):
        kmeans_anchors(np.ones((20, 2)) * 0.1, k=8, levels=3)
    with pytest.raises(DetoptInputError, match="at least k"):
        kmeans_anchors(np.ones((5, 2)) * 0.1, k=9)
    with pytest.raises(DetoptInputError, match="positive"):
        kmeans_anchors(np.zeros((20, 2)), k=9)


def test_normalized_wh_uses_longer_side_and_skips_crowd_and_empty(tmp_path):
    r = ImageRecord(
        tmp_path / "a.jpg",
        width=200,
        height=100,
        boxes=np.array([[0, 0, 50, 20], [10, 10, 10, 30], [0, 0, 100, 100]], np.float32),
        labels=np.zeros(3, np.int64),
        crowd=np.array([False, False, True]),
    )
    np.testing.assert_allclose(normalized_wh([r, ImageRecord(tmp_path / "b.jpg", 10, 10)]), [[0.25, 0.1]])


def test_cli_anchors(synth_dir, tmp_path, capsys):
    out_png, out_json = tmp_path / "a.png", tmp_path / "a.json"
    rc = main(
        [
            "anchors",
            "--data",
            str(synth_dir / "data.yaml"),
            "--imgsz",
            "320",
            "--k",
            "6",
            "--levels",
            "2",
            "--generations",
            "100",
            "--plot",
            str(out_png),
            "--json",
            str(out_json),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "mean_best_iou" in text and "euclidean-kmeans" in text
    fits = json.loads(out_json.read_text())["fits"]
    assert fits[0]["mean_best_iou"] >= fits[1]["mean_best_iou"]
    assert out_png.stat().st_size > 10_000
    assert main(["anchors", "--data", str(synth_dir / "data.yaml"), "--k", "100000"]) == 2
    assert "need at least k" in capsys.readouterr().err
    assert not math.isnan(fits[0]["bpr"])

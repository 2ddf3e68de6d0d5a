import warnings

import numpy as np
import pytest
import torch
from ensemble_boxes import weighted_boxes_fusion as eb_wbf

from detopt.ops import weighted_boxes_fusion
from detopt.ops.wbf import CONF_TYPES, fuse_clusters
from detopt.testing import detector_like_boxes


def models(seed, n_models=4, n=120, n_classes=3, outside=False):
    """Several 'models' predicting the same objects with their own jitter and misses."""
    rng = np.random.default_rng(seed)
    b0, s0, l0 = detector_like_boxes(n, per_object=6, n_classes=n_classes, seed=seed,
                                     dtype=np.float64)
    out_b, out_s, out_l = [], [], []
    for _ in range(n_models):
        keep = rng.random(len(b0)) < 0.85
        b = b0[keep] + rng.normal(0, 4, (keep.sum(), 4))
        b = b / 1024.0
        if not outside:
            b = np.clip(b, 0, 1)
        s = np.clip(s0[keep] * rng.uniform(0.7, 1.0, keep.sum()), 0.01, 0.999)
        out_b.append(b)
        out_s.append(s)
        out_l.append(l0[keep])
    return out_b, out_s, out_l


def _sorted(b, s, lab):
    o = np.lexsort((b[:, 0], -np.round(s, 9)))
    return b[o], s[o], np.asarray(lab)[o]


def assert_same(ours, theirs):
    b1, s1, l1 = _sorted(*ours)
    b2, s2, l2 = _sorted(*theirs)
    assert b1.shape == b2.shape
    np.testing.assert_allclose(b1, b2, atol=1e-5)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    np.testing.assert_array_equal(l1, l2.astype(np.int64))


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("seed", range(4))
def test_wbf_matches_ensemble_boxes(conf_type, seed):
    bl, sl, ll = models(seed)
    weights = [1, 2, 1, 0.5] if seed % 2 else None
    kw = dict(weights=weights, iou_thr=0.55, skip_box_thr=0.05 * seed, conf_type=conf_type)
    assert_same(weighted_boxes_fusion(bl, sl, ll, **kw), eb_wbf(bl, sl, ll, **kw))


@pytest.mark.parametrize("iou_thr", [0.0, 0.3, 0.8])
def test_wbf_thresholds_and_overflow(iou_thr):
    bl, sl, ll = models(11, n_models=3)
    for overflow in (False, True):
        kw = dict(iou_thr=iou_thr, allows_overflow=overflow)
        assert_same(weighted_boxes_fusion(bl, sl, ll, **kw), eb_wbf(bl, sl, ll, **kw))


def test_wbf_clips_swaps_and_counts_skipped_boxes():
    bl, sl, ll = models(5, n_models=2, outside=True)
    bl[0][0] = [0.5, 0.5, 0.2, 0.1]  # inverted corners
    bl[1][0] = [0.3, 0.3, 0.3, 0.6]  # zero area
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = eb_wbf(bl, sl, ll)
    with pytest.warns(UserWarning, match=r"skipped 1 zero-area boxes"):
        got = weighted_boxes_fusion(bl, sl, ll)
    assert_same(got, want)


def test_wbf_torch_twin_and_tensor_io():
    bl, sl, ll = models(3, n_models=3)
    b = np.concatenate(bl)
    s = np.concatenate(sl)
    lab = np.concatenate(ll)
    mod = np.concatenate([np.full(len(x), i) for i, x in enumerate(bl)])
    w = np.array([1.0, 3.0, 2.0])
    for ct in CONF_TYPES:
        a = fuse_clusters(b, s, lab, mod, w, 0.55, ct)
        t = fuse_clusters(b, s, lab, mod, w, 0.55, ct, device=torch.device("cpu"))
        for x, y in zip(a, t, strict=True):
            np.testing.assert_array_equal(x, y)
    tb = weighted_boxes_fusion([torch.from_numpy(x).float() for x in bl], sl, ll)
    assert isinstance(tb[0], torch.Tensor) and tb[0].dtype == torch.float32


def test_wbf_empty_and_single():
    b, s, lab = weighted_boxes_fusion([np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0)])
    assert b.shape == (0, 4) and s.shape == (0,) and lab.shape == (0,)
    b, s, lab = weighted_boxes_fusion([np.array([[0.1, 0.1, 0.4, 0.5]])], [np.array([0.8])],
                                      [np.array([2])], weights=[2.0])
    np.testing.assert_allclose(b, [[0.1, 0.1, 0.4, 0.5]])
    np.testing.assert_allclose(s, [0.8])
    assert lab.tolist() == [2]


def test_wbf_fuses_by_score_weighted_average():
    bl = [np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([[0.2, 0.1, 0.6, 0.5]])]
    sl = [np.array([0.9]), np.array([0.3])]
    ll = [np.array([0]), np.array([0])]
    b, s, _ = weighted_boxes_fusion(bl, sl, ll, iou_thr=0.5)
    np.testing.assert_allclose(b, [[0.125, 0.1, 0.525, 0.5]], atol=1e-7)
    np.testing.assert_allclose(s, [0.6])


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(conf_type="mean"), "conf_type: expected one of"),
        (dict(weights=[1, 2, 3]), "weights: 3 weights for 1 models"),
        (dict(iou_thr=1.5), r"iou_thr: must be in \[0, 1\]"),
    ],
)
def test_wbf_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        weighted_boxes_fusion([np.zeros((1, 4))], [np.ones(1)], [np.zeros(1)], **kw)


def test_wbf_bad_arrays_name_the_model():
    with pytest.raises(ValueError, match=r"scores_list\[1\]: length 2 does not match boxes_list\[1\]"):
        weighted_boxes_fusion([np.zeros((1, 4)), np.zeros((1, 4))], [np.ones(1), np.ones(2)],
                              [np.zeros(1), np.zeros(1)])
    with pytest.raises(ValueError, match=r"boxes_list\[0\]: contains a non-finite"):
        weighted_boxes_fusion([np.array([[0, 0, np.nan, 1]])], [np.ones(1)], [np.zeros(1)])

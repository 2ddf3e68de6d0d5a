import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.anchors import AnchorGenerator, anchor_points, feature_shapes
from detopt.assign import (
    ASSIGNERS,
    IGNORE,
    ATSSAssigner,
    HungarianMatcher,
    MaxIoUAssigner,
    SimOTAAssigner,
    TaskAlignedAssigner,
)
from detopt.errors import DetoptInputError
from tests.hyp import examples
from tests.reference import assign_reference as ref

F64 = torch.float64
IMG = 96
STRIDES = (8, 16)
C = 4


def random_gts(rng, n, separated=False):
    if separated:  # one GT per 48-px quadrant, so no two GTs compete for anchors
        cells = rng.permutation(4)[:n]
        xy = np.stack([cells % 2 * 48 + rng.uniform(6, 14, n), cells // 2 * 48 + rng.uniform(6, 14, n)], 1)
        wh = rng.uniform(16, 30, (n, 2))
    else:
        xy = rng.uniform(0, IMG - 20, (n, 2))
        wh = rng.uniform(6, 50, (n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, IMG)], 1)


def scene(seed, counts=(3, 0, 2), m=4, separated=False, point_anchors=True):
    """A padded batch: per image ``counts[i]`` GTs; predictions near the anchor points."""
    rng = np.random.default_rng(seed)
    shapes = feature_shapes((IMG, IMG), STRIDES)
    if point_anchors:
        anchors = anchor_points(shapes, STRIDES, dtype=F64)
    else:
        anchors = AnchorGenerator([[16, 24], [40]], ratios=[0.5, 1.0, 2.0], strides=STRIDES)(shapes, F64)
    a, b = len(anchors), len(counts)
    gt_boxes = np.zeros((b, m, 4))
    gt_labels = np.zeros((b, m), np.int64)
    gt_mask = np.zeros((b, m), bool)
    for i, n in enumerate(counts):
        slots = rng.permutation(m)[:n]  # padding is not only at the end
        gt_boxes[i, slots] = random_gts(rng, n, separated)
        gt_labels[i, slots] = rng.integers(0, C, n)
        gt_mask[i, slots] = True
        gt_boxes[i, ~gt_mask[i]] = rng.uniform(0, IMG, 4)  # garbage in padding must not matter
    pts = anchors.points.numpy()
    half = rng.uniform(4, 20, (b, a, 2))
    jitter = rng.uniform(-0.9, 0.9, (b, a, 2)) * half  # the box still contains its point
    c = pts[None] + jitter
    pred_boxes = np.concatenate([c - half, c + half], -1)
    pred_scores = rng.uniform(0.01, 0.99, (b, a, C))
    t = lambda x: torch.tensor(x)  # noqa: E731
    return (t(pred_scores), t(pred_boxes), anchors, t(gt_labels), t(gt_boxes), t(gt_mask))


def per_image(args, i):
    scores, boxes, _anchors, labels, gts, mask = args
    valid = np.flatnonzero(mask[i].numpy())
    return valid, scores[i].numpy(), boxes[i].numpy(), gts[i].numpy()[valid], labels[i].numpy()[valid]


def check_result(res, args, ref_fn):
    scores, _boxes, anchors, labels, gts, _mask = args
    b, _a, c = scores.shape
    for i in range(b):
        valid, s, bx, g, lab = per_image(args, i)
        out = ref_fn(s, bx, anchors, g, lab)
        want_idx, want_q = out[0], out[1]
        want = np.where(want_idx >= 0, np.append(valid, -1)[np.maximum(want_idx, 0)], -1)
        np.testing.assert_array_equal(res.gt_index[i].numpy(), want)
        fg = want >= 0
        np.testing.assert_array_equal(res.fg_mask[i].numpy(), fg)
        np.testing.assert_allclose(res.target_scores[i].numpy().sum(1), np.where(fg, want_q, 0), atol=1e-9)
        np.testing.assert_array_equal(
            res.target_scores[i].numpy().argmax(1)[fg & (want_q > 0)],
            labels[i].numpy()[want[fg & (want_q > 0)]],
        )
        np.testing.assert_array_equal(res.target_boxes[i].numpy()[fg], gts[i].numpy()[want[fg]])
        assert (res.target_boxes[i].numpy()[~fg] == 0).all()
        exp_labels = np.where(fg, labels[i].numpy()[np.maximum(want, 0)], c)  # (m > 0 here)
        if len(out) > 2:
            exp_labels[out[2]] = IGNORE
        np.testing.assert_array_equal(res.target_labels[i].numpy(), exp_labels)


@pytest.mark.parametrize("seed", range(6))
def test_max_iou_matches_reference(seed):
    args = scene(seed, counts=(4, 0, 3), point_anchors=False)
    res = MaxIoUAssigner(0.5, 0.4)(*args)
    check_result(res, args, lambda s, b, an, g, lab: ref.max_iou(an.boxes.numpy(), g, 0.5, 0.4))
    assert (res.target_labels == IGNORE).any() and res.fg_mask.any()


@pytest.mark.parametrize("seed", range(6))
def test_atss_matches_reference(seed):
    args = scene(seed, counts=(4, 0, 3), point_anchors=False)
    res = ATSSAssigner(topk=9)(*args)
    check_result(res, args, lambda s, b, an, g, lab: ref.atss(an.boxes.numpy(), an.level_sizes, g, 9))
    assert res.fg_mask.any()


@pytest.mark.parametrize("seed", range(6))
def test_task_aligned_matches_reference(seed):
    args = scene(seed, counts=(4, 0, 3))
    res = TaskAlignedAssigner(topk=10)(*args)
    check_result(res, args, lambda s, b, an, g, lab: ref.task_aligned(s, b, an.points.numpy(), g, lab, 10))
    assert res.fg_mask.any()


@pytest.mark.parametrize("seed", range(6))
def test_simota_matches_reference(seed):
    args = scene(seed, counts=(4, 0, 3))
    res = SimOTAAssigner()(*args)
    check_result(
        res, args, lambda s, b, an, g, lab: ref.simota(s, b, an.points.numpy(), an.strides.numpy(), g, lab)
    )
    assert res.fg_mask.any()


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_is_the_minimum_cost_matching(seed):
    rng = np.random.default_rng(seed)
    q, n = 6, int(rng.integers(1, 4))
    gts = random_gts(rng, n)
    boxes = random_gts(rng, q)
    scores = rng.uniform(0.01, 0.99, (q, C))
    labels = rng.integers(0, C, n)
    m = HungarianMatcher(l1_normalizer=IMG)
    t = lambda x: torch.tensor(x)  # noqa: E731
    cost = ref.hungarian_cost(scores, boxes, gts, labels, norm=IMG)
    np.testing.assert_allclose(m.cost_matrix(t(scores), t(boxes), t(labels), t(gts)).numpy(), cost, atol=1e-9)
    res = m(
        t(scores)[None], t(boxes)[None], None, t(labels)[None], t(gts)[None], torch.ones(1, n, dtype=bool)
    )
    idx = res.gt_index[0].numpy()
    assert sorted(idx[idx >= 0]) == list(range(n))  # one query per GT
    got = sum(cost[qi, gi] for qi, gi in enumerate(idx) if gi >= 0)
    best = min(sum(cost[p[g], g] for g in range(n)) for p in itertools.permutations(range(q), n))
    assert got == pytest.approx(best, abs=1e-9)


def test_max_iou_hand_built():
    """GT [0,0,10,10]; anchors: itself (IoU 1), a half-overlap (1/3: ignored), far (0: negative);
    a second GT whose best anchor only reaches 0.25 still gets it (low-quality match)."""
    anchors_xyxy = torch.tensor(
        [[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60], [30, 30, 50, 50.0]], dtype=F64
    )
    from detopt.anchors import Anchors

    an = Anchors(anchors_xyxy, torch.full((4,), 8.0, dtype=F64), (4,))
    gt = torch.tensor([[[0, 0, 10, 10], [30, 30, 40, 40.0]]], dtype=F64)
    args = (
        torch.full((1, 4, 2), 0.5, dtype=F64),
        anchors_xyxy[None].clone(),
        an,
        torch.tensor([[1, 0]]),
        gt,
        torch.ones(1, 2, dtype=bool),
    )
    res = MaxIoUAssigner(0.7, 0.3)(*args)
    assert res.gt_index.tolist() == [[0, -1, -1, 1]]
    assert res.target_labels.tolist() == [[1, IGNORE, 2, 0]]
    res = MaxIoUAssigner(0.7, 0.3, low_quality_match=False)(*args)
    assert res.target_labels.tolist() == [[1, IGNORE, 2, 2]]


def test_atss_hand_built():
    """One level, 8-px cells with 8-px anchors; a 24x24 GT centred on a cell: the 9 nearest
    anchors are the 3x3 block, all with IoU 64/576, std 0, all inside -> exactly those 9."""
    an = anchor_points([(8, 8)], [8], dtype=F64)
    gt = torch.tensor([[[8, 8, 32, 32.0]]], dtype=F64)
    args = (
        torch.full((1, 64, 1), 0.5, dtype=F64),
        an.boxes[None].clone(),
        an,
        torch.zeros(1, 1, dtype=torch.long),
        gt,
        torch.ones(1, 1, dtype=bool),
    )
    res = ATSSAssigner()(*args)
    want = sorted(y * 8 + x for y in (1, 2, 3) for x in (1, 2, 3))
    assert res.fg_mask[0].nonzero()[:, 0].tolist() == want


def test_task_aligned_hand_built():
    """Points inside the GT ranked by s^0.5 u^6; top-k = 2 keeps the two best; the best gets a
    score target equal to the best IoU."""
    an = anchor_points([(1, 4)], [10], dtype=F64)  # points x = 5, 15, 25, 35 at y = 5
    gt = torch.tensor([[[0, 0, 30, 10.0]]], dtype=F64)  # contains the first three points
    boxes = torch.tensor([[[0, 0, 30, 10], [0, 0, 20, 10], [10, 0, 30, 10], [0, 0, 30, 10.0]]], dtype=F64)
    scores = torch.tensor([[[0.1], [0.9], [0.9], [0.99]]], dtype=F64)
    res = TaskAlignedAssigner(topk=2)(
        scores, boxes, an, torch.zeros(1, 1, dtype=torch.long), gt, torch.ones(1, 1, dtype=bool)
    )
    # t = 0.1^0.5 * 1, 0.9^0.5 * (2/3)^6, 0.9^0.5 * (2/3)^6; point 3 is outside
    assert res.fg_mask[0].tolist() == [True, True, False, False]
    assert res.target_scores[0, 0, 0].item() == pytest.approx(1.0)
    t1, t0 = 0.9**0.5 * (2 / 3) ** 6, 0.1**0.5
    assert res.target_scores[0, 1, 0].item() == pytest.approx(t1 / t0)


def test_task_aligned_tiny_alignment_still_targets_the_best_iou():
    """Early in training a small object's IoU with the predicted boxes is ~0.03, so s^0.5 u^6 is
    ~1e-10: the score target must still reach the best IoU (an additive 1e-9 in the denominator
    would zero it, and with it the box-loss weight)."""
    an = anchor_points([(1, 2)], [8], dtype=torch.float32)  # points x = 4, 12
    gt = torch.tensor([[[0, 0, 16, 8.0]]])
    boxes = torch.tensor([[[-56, -56, 64, 64], [-40, -52, 60, 60.0]]])  # huge: IoU ~ 0.01
    res = TaskAlignedAssigner(topk=2)(
        torch.full((1, 2, 1), 0.01), boxes, an, torch.zeros(1, 1, dtype=torch.long), gt,
        torch.ones(1, 1, dtype=bool),
    )
    ious = [128 / (120 * 120), 128 / (100 * 112)]
    assert res.fg_mask[0].tolist() == [True, True]
    assert res.target_scores[0, :, 0].max().item() == pytest.approx(max(ious), rel=1e-5)


def test_simota_hand_built():
    """Points x = 4..44 (stride 8); GT [0, 0, 24, 8] holds points 0-2, its centre region (2.5
    strides) points 0-3. Top-10 IoU sum 1 + .5 + .5 + 1 = 3 -> k = 3; point 3 predicts the GT
    exactly but is outside the box, so its cost carries the penalty: positives are points 0-2,
    with the IoU of their predictions as score targets."""
    an = anchor_points([(1, 6)], [8], dtype=F64)
    boxes = torch.tensor(
        [[[0, 0, 24, 8], [0, 0, 12, 8], [12, 0, 24, 8], [0, 0, 24, 8], [40, 0, 48, 8], [40, 0, 48, 8.0]]],
        dtype=F64,
    )
    res = SimOTAAssigner()(
        torch.full((1, 6, 2), 0.5, dtype=F64),
        boxes,
        an,
        torch.tensor([[1]]),
        torch.tensor([[[0, 0, 24, 8.0]]], dtype=F64),
        torch.ones(1, 1, dtype=bool),
    )
    assert res.fg_mask[0].tolist() == [True, True, True, False, False, False]
    torch.testing.assert_close(res.target_scores[0, :3, 1], torch.tensor([1.0, 0.5, 0.5], dtype=F64))
    assert (res.target_scores[0, :, 0] == 0).all()


ALL = [MaxIoUAssigner, ATSSAssigner, TaskAlignedAssigner, SimOTAAssigner, HungarianMatcher]


@pytest.mark.parametrize("cls", ALL)
@settings(max_examples=examples(12), deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4))
def test_invariants(cls, seed, n):
    """Each anchor at most one GT (by construction), padding never assigned, every GT of a
    scene with separated objects gets a positive, and GT order does not matter."""
    args = scene(seed, counts=(n, 0), separated=True, point_anchors=cls is not MaxIoUAssigner)
    if cls is ATSSAssigner:
        args = (
            *args[:2],
            anchor_points(feature_shapes((IMG, IMG), STRIDES), STRIDES, cell_size=5, dtype=F64),
            *args[3:],
        )
    res = cls()(*args)
    mask = args[5]
    assigned = res.gt_index[res.fg_mask]
    assert mask.gather(1, res.gt_index.clamp(min=0))[res.fg_mask].all()  # padding never assigned
    assert (res.gt_index[~res.fg_mask] == -1).all() and not res.fg_mask[1].any()
    if cls is not ATSSAssigner:  # ATSS's mean + std threshold can exceed every inside candidate
        assert set(assigned.tolist()) == set(mask[0].nonzero()[:, 0].tolist())  # every GT is learned
    # permute the GT slots of image 0: the same anchors, relabelled GT indices
    perm = torch.randperm(args[3].shape[1], generator=torch.Generator().manual_seed(seed))
    res2 = cls()(*args[:3], args[3][:, perm], args[4][:, perm], args[5][:, perm])
    assert torch.equal(res.fg_mask, res2.fg_mask)
    torch.testing.assert_close(res2.target_scores, res.target_scores)
    torch.testing.assert_close(res2.target_boxes, res.target_boxes)
    torch.testing.assert_close(torch.where(res2.fg_mask, perm[res2.gt_index.clamp(min=0)], -1), res.gt_index)


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_no_gt_at_all_and_float32(name):
    args = scene(0, counts=(0, 0), m=0, point_anchors=name != "max_iou")
    args = tuple(x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in args)
    res = ASSIGNERS[name]()(*args)
    assert not res.fg_mask.any() and (res.target_scores == 0).all()
    assert res.target_scores.dtype == torch.float32


def test_input_errors():
    args = scene(0)
    with pytest.raises(DetoptInputError, match="pred_boxes"):
        TaskAlignedAssigner()(args[0], args[1][:, :5], *args[2:])
    with pytest.raises(DetoptInputError, match="gt_labels"):
        TaskAlignedAssigner()(*args[:3], args[3] + C, *args[4:])
    with pytest.raises(DetoptInputError, match="Anchors"):
        ATSSAssigner()(args[0], args[1], args[2].boxes, *args[3:])
    with pytest.raises(DetoptInputError, match="gt_mask"):
        SimOTAAssigner()(*args[:5], args[5].long())

"""Decoding against a brute-force float64 loop; the criterion against its definition."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.assign import TaskAlignedAssigner
from detopt.errors import DetoptInputError
from detopt.models import DetectionCriterion, create_model, decode_outputs, dfl_expectation, pad_targets
from tests.hyp import examples
from tests.reference.loss_reference import box_loss, dfl


def _outputs(b, c, r, shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 4 * r + c, h, w, generator=g, dtype=torch.float64) for h, w in shapes]


def test_decode_matches_a_loop():
    r, c, strides, shapes = 4, 2, (8, 16), [(3, 5), (2, 3)]
    outs = _outputs(2, c, r, shapes)
    d = decode_outputs(outs, strides, r)
    a = 0
    for o, s, (h, w) in zip(outs, strides, shapes, strict=True):
        for y in range(h):
            for x in range(w):
                for bi in range(2):
                    v = o[bi, :, y, x].numpy()
                    dist = []
                    for side in range(4):
                        logits = v[side * r : (side + 1) * r]
                        p = np.exp(logits - logits.max())
                        p /= p.sum()
                        dist.append(float((p * np.arange(r)).sum()) * s)
                    cx, cy = (x + 0.5) * s, (y + 0.5) * s
                    want = [cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]]
                    np.testing.assert_allclose(d.boxes[bi, a].numpy(), want, rtol=1e-12, atol=1e-9)
                    np.testing.assert_array_equal(d.cls_logits[bi, a].numpy(), v[4 * r :])
                assert d.anchors.strides[a] == s
                a += 1
    assert d.box_logits.shape == (2, a, 4, r)


def test_decode_checks_channels():
    with pytest.raises(DetoptInputError, match="4·reg_max"):
        decode_outputs([torch.zeros(1, 64, 2, 2)], (8,), 16)
    with pytest.raises(DetoptInputError, match="strides"):
        decode_outputs([torch.zeros(1, 66, 2, 2)], (8, 16), 16)


def test_initial_box_is_about_two_strides_wide():
    """The box-bias prior: geometric over bins with ratio 1/2, mean Σ k 2^-k / Σ 2^-k ≈ 1."""
    model = create_model("yolo-n", 3)
    bias = model.head.box[0][-1].bias.detach().reshape(4, 16)
    mean = dfl_expectation(bias.double())
    k = np.arange(16)
    want = (k * 0.5**k).sum() / (0.5**k).sum()
    np.testing.assert_allclose(mean.numpy(), want, rtol=1e-6)
    cls_bias = model.head.cls[0][-1].bias.detach()
    np.testing.assert_allclose(cls_bias.numpy(), math.log(5 / 3 / (640 / 8) ** 2), rtol=1e-6)


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.integers(0, 3), max_size=12), st.integers(4, 5))
def test_pad_targets_round_trip(batch_index, b):
    n = len(batch_index)
    boxes = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4)
    labels = torch.arange(n)
    bi = torch.tensor(batch_index, dtype=torch.long)
    gb, gl, gm = pad_targets(boxes, labels, bi, b)
    assert gb.shape[:2] == gl.shape == gm.shape
    assert gm.sum() == n
    for img in range(b):
        mine = (bi == img).nonzero()[:, 0]
        k = len(mine)
        assert gm[img, :k].all() and not gm[img, k:].any()
        assert torch.equal(gl[img, :k], labels[mine])  # order kept within an image
        assert torch.equal(gb[img, :k], boxes[mine])


def _targets():
    return {
        "boxes": torch.tensor(
            [[4.0, 6.0, 30.0, 28.0], [20.0, 2.0, 60.0, 40.0], [8.0, 8.0, 24.0, 50.0], [0.0, 0.0, 63.0, 63.0]],
            dtype=torch.float64,
        ),
        "labels": torch.tensor([0, 2, 1, 1]),
        "batch_index": torch.tensor([0, 0, 1, 1]),
        "crowd": torch.tensor([False, False, False, True]),
    }


def test_criterion_equals_its_definition():
    """Total = B·(7.5·box + 0.5·cls + 1.5·dfl) with each term recomputed here from the assigner's
    targets by the float64 reference losses (crowd boxes left out)."""
    r, c, strides, shapes = 8, 3, (8, 16, 32), [(8, 8), (4, 4), (2, 2)]
    outs = _outputs(2, c, r, shapes, seed=1)
    crit = DetectionCriterion(c, strides, r)
    total, items = crit(outs, _targets())

    d = decode_outputs(outs, strides, r)
    t = _targets()
    keep = ~t["crowd"]
    gb, gl, gm = pad_targets(t["boxes"][keep], t["labels"][keep], t["batch_index"][keep], 2)
    res = TaskAlignedAssigner()(d.cls_logits.sigmoid(), d.boxes, d.anchors, gl, gb, gm)
    ts = res.target_scores.numpy()
    norm = max(ts.sum(), 1.0)
    x = d.cls_logits.numpy()
    bce = np.maximum(x, 0) - x * ts + np.log1p(np.exp(-np.abs(x)))
    cls = bce.sum() / norm
    box = dfl_sum = 0.0
    pts = d.anchors.points.numpy()
    st_ = d.anchors.strides.numpy()
    for bi, ai in zip(*np.nonzero(res.fg_mask.numpy()), strict=True):
        w = ts[bi, ai].sum()
        tb = res.target_boxes[bi, ai].numpy()
        box += box_loss("ciou", d.boxes[bi, ai].numpy(), tb) * w
        ltrb = np.r_[pts[ai] - tb[:2], tb[2:] - pts[ai]] / st_[ai]
        dfl_sum += np.mean([dfl(d.box_logits[bi, ai, k].numpy(), ltrb[k]) for k in range(4)]) * w
    assert res.fg_mask.sum() > 0
    np.testing.assert_allclose(items["cls"], cls, rtol=1e-9)
    np.testing.assert_allclose(items["box"], box / norm, rtol=1e-6)
    np.testing.assert_allclose(items["dfl"], dfl_sum / norm, rtol=1e-9)
    np.testing.assert_allclose(
        float(total), 2 * (7.5 * box / norm + 0.5 * cls + 1.5 * dfl_sum / norm), rtol=1e-6
    )


def test_criterion_without_objects_is_pure_background():
    r, c = 4, 2
    outs = _outputs(1, c, r, [(4, 4)], seed=2)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "batch_index": torch.zeros(0, dtype=torch.long),
        "crowd": torch.zeros(0, dtype=torch.bool),
    }
    total, items = DetectionCriterion(c, (8,), r)(outs, empty)
    want = F.binary_cross_entropy_with_logits(
        decode_outputs(outs, (8,), r).cls_logits, torch.zeros(1, 16, c, dtype=torch.float64), reduction="sum"
    )
    assert items["box"] == items["dfl"] == 0.0
    np.testing.assert_allclose(items["cls"], float(want), rtol=1e-12)
    np.testing.assert_allclose(float(total), 0.5 * float(want), rtol=1e-12)  # B = 1, cls gain 0.5


class _Frozen:
    """The targets of one assignment, frozen: the criterion detaches the predictions it hands to
    the assigner (targets are constants of the step), so finite differences must not move them."""

    def __init__(self, result):
        self.result = result

    def __call__(self, *args):
        return self.result


@pytest.mark.parametrize("cls_loss", ["bce", "vfl", "qfl"])
def test_criterion_gradcheck(cls_loss):
    r, c, strides, shapes = 4, 3, (8, 16), [(4, 4), (2, 2)]
    outs = [o.requires_grad_() for o in _outputs(2, c, r, shapes, seed=3)]
    t = _targets()
    t["boxes"] = t["boxes"] * 0.5  # inside the 32 x 32 input
    d = decode_outputs([o.detach() for o in outs], strides, r)
    keep = ~t["crowd"]
    gb, gl, gm = pad_targets(t["boxes"][keep], t["labels"][keep], t["batch_index"][keep], 2)
    res = TaskAlignedAssigner()(d.cls_logits.sigmoid(), d.boxes, d.anchors, gl, gb, gm)
    assert res.fg_mask.sum() > 0
    # box_gain 0: CIoU's α is a constant of the step (no_grad, as in the paper), which finite
    # differences cannot hold still; the CIoU gradient is checked in tests/losses.
    crit = DetectionCriterion(c, strides, r, assigner=_Frozen(res), cls_loss=cls_loss, box_gain=0.0)

    def f(*o):
        return crit(list(o), t)[0]

    assert torch.autograd.gradcheck(f, tuple(outs), eps=1e-6, atol=1e-5)


def test_criterion_rejects_unknown_loss_and_class_mismatch():
    with pytest.raises(DetoptInputError, match="cls_loss"):
        DetectionCriterion(2, (8,), 4, cls_loss="focall")
    with pytest.raises(DetoptInputError, match="classes"):
        DetectionCriterion(5, (8,), 4)(_outputs(2, 3, 4, [(2, 2)]), _targets())


def _train_steps(synth_dir, criterion_kw: dict, steps: int = 3) -> tuple[list[float], int]:
    """A few SGD steps of yolo-p on one synthetic batch; (losses, positives the assigner made)."""
    from detopt.data.dataset import dataset_from_source, make_loader

    ds, names = dataset_from_source(synth_dir / "data.yaml", "train", 96)
    batch = next(iter(make_loader(ds, batch_size=4)))
    torch.manual_seed(0)
    model = create_model("yolo-p", len(names))
    crit = DetectionCriterion(len(names), model.strides, model.reg_max, **criterion_kw)
    positives = []
    assign = crit.assigner.assign

    def counting(*a):
        res = assign(*a)
        positives.append(int(res.fg_mask.sum()))
        return res

    crit.assigner.assign = counting
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(steps):
        total, _ = crit(model(batch["images"].float() / 255), batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    return losses, sum(positives)


@pytest.mark.parametrize("name", ["tal", "atss", "simota", "max_iou"])
def test_training_steps_with_each_assigner(synth_dir, name):
    from detopt.assign import ASSIGNERS, build_assigner

    assigner = build_assigner(name)
    assert type(assigner) is ASSIGNERS[name]
    losses, positives = _train_steps(synth_dir, {"assigner": assigner})
    assert positives > 0 and all(math.isfinite(v) for v in losses)  # the assigner ran and assigned


@pytest.mark.parametrize("kw", [{"cls_loss": c} for c in ("bce", "focal", "vfl", "qfl")]
                         + [{"box_loss": b} for b in ("diou", "giou", "iou")])
def test_training_steps_with_each_loss(synth_dir, kw):
    from detopt.models.criterion import BOX_LOSSES, CLS_LOSSES

    crit_default = DetectionCriterion(8, (8, 16, 32), 16)
    assert (crit_default.cls_loss, crit_default.box_loss) == ("bce", "ciou")
    losses, positives = _train_steps(synth_dir, kw)
    assert positives > 0 and all(math.isfinite(v) for v in losses)
    assert set(CLS_LOSSES) == {"bce", "focal", "vfl", "qfl"}
    assert set(BOX_LOSSES) == {"ciou", "diou", "giou", "iou"}


def test_losses_are_the_registered_functions():
    """Each name computes its function: the criterion's class term with focal equals the focal
    loss summed over the same targets."""
    from detopt.losses import sigmoid_focal_loss

    crit = DetectionCriterion(3, (8,), 4, cls_loss="focal")
    x, t = torch.randn(2, 5, 3), torch.rand(2, 5, 3)
    assert torch.equal(crit._cls(x, t), sigmoid_focal_loss(x, t, reduction="sum"))
    valid = torch.tensor([[True, False, True, True, False], [True] * 5])
    assert torch.equal(crit._cls(x, t, valid), sigmoid_focal_loss(x, t)[valid].sum())

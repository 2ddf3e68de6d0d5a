import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.errors import DetoptInputError
from detopt.losses import (
    ciou_loss,
    diou_loss,
    distribution_focal_loss,
    giou_loss,
    iou_loss,
    quality_focal_loss,
    reduce_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    softmax_focal_loss,
    varifocal_loss,
)
from detopt.ops import box_iou, complete_box_iou, distance_box_iou, generalized_box_iou
from tests.hyp import examples
from tests.reference import loss_reference as ref

T = torch.tensor
F64 = torch.float64


def logits_and_targets(seed, shape=(40, 5), soft=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 4, shape)
    x.flat[:4] = [35.0, -35.0, 0.0, 12.0]  # saturated and exact-zero logits
    if soft:
        t = rng.uniform(0, 1, shape) * (rng.random(shape) < 0.4)
    else:
        t = (rng.random(shape) < 0.2).astype(np.float64)
    return x, t


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 2.0), (0.5, 0.0), (0.25, 1.5)])
def test_sigmoid_focal_closed_form(seed, alpha, gamma):
    x, t = logits_and_targets(seed, soft=seed == 2)
    got = sigmoid_focal_loss(T(x), T(t), alpha=alpha, gamma=gamma).numpy()
    np.testing.assert_allclose(
        got, ref.elementwise(ref.sigmoid_focal, x, t, alpha=alpha, gamma=gamma), rtol=1e-9, atol=1e-9
    )


def test_sigmoid_focal_gamma0_no_alpha_is_bce():
    x, t = logits_and_targets(0)
    got = sigmoid_focal_loss(T(x), T(t), alpha=-1, gamma=0.0)
    torch.testing.assert_close(
        got, torch.nn.functional.binary_cross_entropy_with_logits(T(x), T(t), reduction="none")
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("alpha", [None, 0.5, [0.1, 0.2, 0.3, 0.25, 0.15]])
def test_softmax_focal_closed_form(seed, alpha):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 5, (30, 5))
    y = rng.integers(0, 5, 30)
    a = None if alpha is None else (T(alpha, dtype=F64) if isinstance(alpha, list) else alpha)
    got = softmax_focal_loss(T(x), T(y), alpha=a, gamma=2.0).numpy()
    want = [ref.softmax_focal(list(x[i]), int(y[i]), alpha, 2.0) for i in range(30)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_softmax_focal_gamma0_is_cross_entropy():
    rng = np.random.default_rng(0)
    x, y = T(rng.normal(0, 3, (20, 4))), T(rng.integers(0, 4, 20))
    torch.testing.assert_close(
        softmax_focal_loss(x, y, gamma=0.0), torch.nn.functional.cross_entropy(x, y, reduction="none")
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_qfl_closed_form(seed, beta):
    x, q = logits_and_targets(seed, soft=True)
    got = quality_focal_loss(T(x), T(q), beta=beta).numpy()
    np.testing.assert_allclose(got, ref.elementwise(ref.qfl, x, q, beta=beta), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("beta", [2.0, 1.0, 3.0])
def test_qfl_with_hard_targets_is_focal_loss(beta):
    """GFL paper: with y in {0, 1}, QFL is the focal loss with gamma = beta (and no alpha)."""
    x, t = logits_and_targets(5)
    torch.testing.assert_close(
        quality_focal_loss(T(x), T(t), beta=beta), sigmoid_focal_loss(T(x), T(t), alpha=-1, gamma=beta)
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("alpha,gamma", [(0.75, 2.0), (0.5, 1.0)])
def test_vfl_closed_form(seed, alpha, gamma):
    x, q = logits_and_targets(seed, soft=True)
    got = varifocal_loss(T(x), T(q), alpha=alpha, gamma=gamma).numpy()
    np.testing.assert_allclose(
        got, ref.elementwise(ref.vfl, x, q, alpha=alpha, gamma=gamma), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("beta", [0.0, 1.0, 1 / 9])
def test_smooth_l1_closed_form(beta):
    rng = np.random.default_rng(1)
    p, t = rng.normal(0, 2, (50, 4)), rng.normal(0, 2, (50, 4))
    got = smooth_l1_loss(T(p), T(t), beta=beta).numpy()
    np.testing.assert_allclose(got, ref.elementwise(ref.smooth_l1, p - t, beta=beta), rtol=1e-12)
    if beta:
        torch.testing.assert_close(
            T(got), torch.nn.functional.smooth_l1_loss(T(p), T(t), reduction="none", beta=beta)
        )


def random_pairs(seed, n=60):
    """Aligned box pairs in pixels, with zero-width, zero-height, point and identical boxes."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    a = np.concatenate([xy, xy + rng.uniform(1, 60, (n, 2))], 1)
    b = a + rng.normal(0, 15, (n, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + rng.uniform(1, 5, (n, 2)))
    a[0, 2] = a[0, 0]  # zero width
    a[1, 3] = a[1, 1]  # zero height
    a[2, 2:] = a[2, :2]  # a point
    b[3] = a[3]  # identical
    a[4, 2:], b[4, 2:] = a[4, :2], a[4, :2]  # the same point twice
    b[5] = [1e3, 1e3, 1e3, 1e3]  # far-away point
    return a, b


BOX_LOSSES = [
    (iou_loss, "iou", box_iou),
    (giou_loss, "giou", generalized_box_iou),
    (diou_loss, "diou", distance_box_iou),
    (ciou_loss, "ciou", complete_box_iou),
]


@pytest.mark.parametrize("fn,kind,pairwise", BOX_LOSSES)
@pytest.mark.parametrize("seed", range(3))
def test_box_losses_closed_form_and_ops_diagonal(fn, kind, pairwise, seed):
    a, b = random_pairs(seed)
    got = fn(T(a), T(b)).numpy()
    want = np.array([ref.box_loss(kind, a[i], b[i]) for i in range(len(a))])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, 1 - np.diag(pairwise(a, b)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fn", [f for f, _, _ in BOX_LOSSES])
def test_box_losses_degenerate_values_and_gradients_finite(fn):
    a, b = random_pairs(0, n=8)
    pred = T(a, requires_grad=True)
    target = T(b, requires_grad=True)
    loss = fn(pred, target)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(target.grad).all()


def _ref_v(a, b):
    import math

    wa, ha = a[2] - a[0], a[3] - a[1]
    wb, hb = b[2] - b[0], b[3] - b[1]
    return 4 / math.pi**2 * (math.atan2(wb, hb) - math.atan2(wa, ha)) ** 2


def test_ciou_gradient_treats_alpha_as_a_constant():
    """gradcheck for CIoU: the paper's gradient is that of ``1 - DIoU + α₀ v`` with α frozen at its
    current value, so compare autograd against central differences of that float64 closed form."""
    a, b = random_pairs(3, n=12)
    a, b = a[6:], b[6:]
    pred = T(a, requires_grad=True)
    ciou_loss(pred, T(b), eps=0.0).sum().backward()
    h = 1e-6
    for i in range(len(a)):
        alpha0 = ref.box_loss("ciou", a[i], b[i]) - ref.box_loss("diou", a[i], b[i])
        alpha0 = alpha0 / _ref_v(a[i], b[i]) if _ref_v(a[i], b[i]) > 0 else 0.0

        def g(z, i=i, alpha0=alpha0):
            return ref.box_loss("diou", z, b[i]) + alpha0 * _ref_v(z, b[i])

        num = [(g(a[i] + h * e) - g(a[i] - h * e)) / (2 * h) for e in np.eye(4)]
        np.testing.assert_allclose(pred.grad[i].numpy(), num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_dfl_closed_form(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (40, 16))
    t = rng.uniform(-1, 17, 40)
    t[:4] = [0.0, 15.0, 14.99, 7.0]  # edges and an integer
    got = distribution_focal_loss(T(x), T(t)).numpy()
    want = [ref.dfl(list(x[i]), float(t[i])) for i in range(40)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_dfl_integer_target_is_cross_entropy_of_its_bin():
    rng = np.random.default_rng(0)
    x = T(rng.normal(0, 2, (10, 8)))
    t = T(rng.integers(0, 7, 10)).double()
    torch.testing.assert_close(
        distribution_focal_loss(x, t), torch.nn.functional.cross_entropy(x, t.long(), reduction="none")
    )


def _gradcheck_inputs(seed):
    x, t = logits_and_targets(seed, shape=(6, 3), soft=True)
    x = np.clip(x, -6, 6)  # away from saturation, where finite differences lose precision
    return T(x, requires_grad=True), T(t)


@pytest.mark.parametrize(
    "name", ["sigmoid_focal", "softmax_focal", "qfl", "vfl", "smooth_l1", "dfl", "iou", "giou", "diou"]
)
def test_gradcheck_float64(name):
    x, t = _gradcheck_inputs(0)
    labels = T(np.random.default_rng(3).integers(0, 3, 6))
    a, b = random_pairs(3, n=12)
    a, b = a[6:], b[6:]  # non-degenerate pairs: finite differences need a smooth neighbourhood
    box = T(a, requires_grad=True)
    cases = {
        "sigmoid_focal": (lambda z: sigmoid_focal_loss(z, t), x),
        "softmax_focal": (lambda z: softmax_focal_loss(z, labels), x),
        "qfl": (lambda z: quality_focal_loss(z, t), x),
        "vfl": (lambda z: varifocal_loss(z, t), x),
        "smooth_l1": (lambda z: smooth_l1_loss(z, t + 0.37, beta=0.5), x),
        "dfl": (lambda z: distribution_focal_loss(z, T([0.3, 1.5, 1.99, 0.0, 1.2, 0.9], dtype=F64)), x),
        "iou": (lambda z: iou_loss(z, T(b)), box),
        "giou": (lambda z: giou_loss(z, T(b)), box),
        "diou": (lambda z: diou_loss(z, T(b)), box),
    }
    fn, inp = cases[name]
    assert torch.autograd.gradcheck(fn, (inp,), eps=1e-6, atol=1e-6)


def test_reductions_and_normalizer():
    x, t = logits_and_targets(0)
    none = sigmoid_focal_loss(T(x), T(t))
    torch.testing.assert_close(sigmoid_focal_loss(T(x), T(t), reduction="sum"), none.sum())
    torch.testing.assert_close(sigmoid_focal_loss(T(x), T(t), reduction="mean"), none.mean())
    torch.testing.assert_close(reduce_loss(none, "mean", normalizer=7), none.sum() / 7)
    torch.testing.assert_close(reduce_loss(none, "mean", normalizer=T(0.0, dtype=F64)), none.sum())
    w = T(np.random.default_rng(0).random(none.shape))
    torch.testing.assert_close(reduce_loss(none, "sum", weight=w), (none * w).sum())
    with pytest.raises(DetoptInputError, match="reduction"):
        iou_loss(T([[0.0, 0, 1, 1]]), T([[0.0, 0, 1, 1]]), reduction="avg")


def test_shape_errors():
    with pytest.raises(DetoptInputError, match="shapes differ"):
        sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(DetoptInputError, match=r"\[N, 4\]"):
        giou_loss(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(DetoptInputError, match="reg_max"):
        distribution_focal_loss(torch.zeros(3, 4), torch.zeros(4))


coord = st.floats(-50, 150, allow_nan=False, width=64)


@settings(max_examples=examples(80), deadline=None)
@given(st.lists(coord, min_size=8, max_size=8))
def test_box_losses_properties(v):
    a = T([[min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])]], dtype=F64)
    b = T([[min(v[4], v[6]), min(v[5], v[7]), max(v[4], v[6]), max(v[5], v[7])]], dtype=F64)
    li, lg, ld, lc = (f(a, b).item() for f in (iou_loss, giou_loss, diou_loss, ciou_loss))
    assert 0 <= li <= 1 and 0 <= lg <= 2 and 0 <= ld <= 2 and lc >= ld - 1e-12
    assert lg >= li - 1e-12 and ld >= li - 1e-12
    for f in (iou_loss, giou_loss, diou_loss):  # symmetric in its arguments
        assert f(a, b).item() == pytest.approx(f(b, a).item(), abs=1e-12)
    assert iou_loss(a, a).item() == (0.0 if (a[0, 2] > a[0, 0] and a[0, 3] > a[0, 1]) else 1.0)

"""MuSGD and its Newton-Schulz step against independent references: the SVD closed form,
``torch.optim.SGD`` and a float64 step written out from the update rule; exact resume."""

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from detopt.config import TrainConfig
from detopt.engine.optim import NS_COEFFICIENTS, OPTIMIZERS, MuSGD, build_optimizer, newton_schulz
from detopt.errors import DetoptInputError


def _ns_by_svd(g: np.ndarray, steps: int = 5) -> np.ndarray:
    """U f(S) Vᵀ in float64, f the quintic applied ``steps`` times to S / ‖g‖_F."""
    u, s, vt = np.linalg.svd(g.astype(np.float64), full_matrices=False)
    x = s / (np.linalg.norm(g.astype(np.float64)) + 1e-7)
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return (u * x) @ vt


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 24), cols=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_newton_schulz_is_the_svd_closed_form(rows, cols, seed):
    g = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    got = newton_schulz(torch.from_numpy(g)).double().numpy()
    np.testing.assert_allclose(got, _ns_by_svd(g), atol=2e-4)


def test_newton_schulz_orthogonalizes_a_badly_conditioned_matrix():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(32, 32))
    v, _ = torch.linalg.qr(torch.randn(48, 48))
    s = torch.logspace(0, -1.5, 32)  # condition number ~30
    g = u @ torch.diag(s) @ v[:32]
    sv = torch.linalg.svdvals(newton_schulz(g))
    assert 0.6 < float(sv.min()) and float(sv.max()) < 1.25  # all directions near unit length
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.zeros(2, 3, 4))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))


def _steps(model: nn.Module, opt: torch.optim.Optimizer, n: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(4, 3, 9, 9, generator=g)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def test_musgd_without_muon_is_torch_sgd():
    a, b = _model(), _model()
    groups = lambda m: [{"params": [p for n, p in m.named_parameters() if n.endswith("weight")],  # noqa: E731
                         "weight_decay": 1e-2}, {"params": [p for n, p in m.named_parameters()
                                                            if n.endswith("bias")], "weight_decay": 0.0}]
    ours = MuSGD(groups(a), lr=0.05, momentum=0.9, muon=True, muon_scale=0.0, sgd_scale=1.0)
    ref = torch.optim.SGD(groups(b), lr=0.05, momentum=0.9, nesterov=True)
    _steps(a, ours, 5)
    _steps(b, ref, 5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_musgd_step_against_the_rule_in_float64():
    """Two steps on one conv weight, computed again in float64 from the documented rule."""
    torch.manual_seed(3)
    w = nn.Parameter(torch.randn(6, 2, 3, 3))
    lr, mu, wd, ms, ss = 0.1, 0.8, 1e-2, 0.3, 0.7
    opt = MuSGD([{"params": [w], "muon": True}], lr=lr, momentum=mu, weight_decay=wd, muon_scale=ms,
                sgd_scale=ss)
    p = w.detach().double().numpy().copy()
    m = np.zeros_like(p)
    s = None
    for k in range(2):
        grad = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(k))
        w.grad = grad.clone()
        opt.step()
        g = grad.double().numpy()
        m = mu * m + (1 - mu) * g
        u = (1 - mu) * g + mu * m
        o = _ns_by_svd(u.reshape(6, 18)).reshape(p.shape) * math.sqrt(max(1, 6 / 18))
        d = g + wd * p
        s = d.copy() if s is None else mu * s + d
        p = p - lr * (ms * o + ss * (d + mu * s))
        np.testing.assert_allclose(w.detach().double().numpy(), p, atol=1e-5)


def test_musgd_moves_only_muon_groups_by_the_orthogonal_step_and_descends():
    torch.manual_seed(0)
    w, b = nn.Parameter(torch.randn(8, 8)), nn.Parameter(torch.randn(8))
    opt = MuSGD([{"params": [w], "muon": True}, {"params": [b], "muon": False}], lr=0.05, momentum=0.9)
    start = float(w.detach().square().sum() + b.detach().square().sum())
    for _ in range(60):
        opt.zero_grad()
        (w.square().sum() + b.square().sum()).backward()
        opt.step()
    assert float(w.detach().square().sum() + b.detach().square().sum()) < 0.1 * start
    assert set(opt.state[w]) == {"muon_buffer", "momentum_buffer"}
    assert set(opt.state[b]) == {"momentum_buffer"}


def test_musgd_state_resumes_exactly_with_channels_last():
    a = _model().to(memory_format=torch.channels_last)
    opt = build_optimizer(a, "musgd", lr=0.02, momentum=0.9, weight_decay=5e-4)
    assert [g["muon"] for g in opt.param_groups] == [True, False, False]
    _steps(a, opt, 3)
    b = _model().to(memory_format=torch.channels_last)
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(b, "musgd", lr=0.02, momentum=0.9, weight_decay=5e-4)
    buf = io.BytesIO()  # through a file, as a checkpoint (a state dict shares the live buffers)
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt_b.load_state_dict(torch.load(buf, weights_only=True))
    _steps(a, opt, 2, seed=7)
    _steps(b, opt_b, 2, seed=7)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_optimizer_names_come_from_the_registry():
    assert set(OPTIMIZERS.names()) >= {"sgd", "adamw", "musgd"}
    assert TrainConfig(data="d", optimizer="musgd").optimizer == "musgd"
    with pytest.raises(ValueError, match="musgd"):  # the error lists the registered names
        TrainConfig(data="d", optimizer="muon")
    with pytest.raises(DetoptInputError, match="optimizer: unknown optimizer 'lion'"):
        build_optimizer(_model(), "lion")

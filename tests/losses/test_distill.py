"""Distillation losses against float64 brute-force references, zero at equality, gradcheck; the
trainer with a teacher logs every KD term; bad teachers and keys get one line."""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.config import TrainConfig, build_config, parse_overrides
from detopt.engine import Trainer
from detopt.engine.distill import Distiller
from detopt.errors import DetoptInputError
from detopt.losses.distill import channel_distill_loss, class_distill_loss, localization_distill_loss
from detopt.models import create_model
from detopt.models.heads import decode_outputs
from tests.hyp import examples


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _ref_class(s: np.ndarray, t: np.ndarray, temp: float) -> np.ndarray:
    out = np.zeros(s.shape[:-1])
    for idx in np.ndindex(*s.shape[:-1]):
        total = 0.0
        for c in range(s.shape[-1]):
            p, q = _sig(t[idx][c] / temp), _sig(s[idx][c] / temp)
            total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
        out[idx] = total * temp**2
    return out


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _ref_kl_rows(s: np.ndarray, t: np.ndarray, temp: float) -> np.ndarray:
    """KL(softmax(t/T) || softmax(s/T)) * T^2 over the last axis, one loop per row."""
    out = np.zeros(s.shape[:-1])
    for idx in np.ndindex(*s.shape[:-1]):
        p, q = _softmax(t[idx] / temp), _softmax(s[idx] / temp)
        out[idx] = float(np.sum(p * np.log(p / q))) * temp**2
    return out


@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), temp=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_losses_equal_float64_references(seed, temp):
    rng = np.random.default_rng(seed)
    s, t = rng.normal(0, 3, (2, 5, 4)), rng.normal(0, 3, (2, 5, 4))
    got = class_distill_loss(torch.from_numpy(s), torch.from_numpy(t), temp).numpy()
    np.testing.assert_allclose(got, _ref_class(s, t, temp), rtol=1e-9, atol=1e-12)
    sb, tb = rng.normal(0, 2, (2, 5, 4, 8)), rng.normal(0, 2, (2, 5, 4, 8))
    got = localization_distill_loss(torch.from_numpy(sb), torch.from_numpy(tb), temp).numpy()
    np.testing.assert_allclose(got, _ref_kl_rows(sb, tb, temp).mean(-1), rtol=1e-9, atol=1e-12)
    sf, tf = rng.normal(0, 1, (2, 3, 4, 5)), rng.normal(0, 1, (2, 3, 4, 5))
    got = channel_distill_loss(torch.from_numpy(sf), torch.from_numpy(tf), temp).numpy()
    ref = _ref_kl_rows(sf.reshape(2, 3, 20), tf.reshape(2, 3, 20), temp)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_losses_along_other_dims_equal_the_last_dim_form():
    """``dim`` / ``bins_dim``: a head's channel-first maps give the channel-last values."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    t = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    last = class_distill_loss(s.movedim(1, -1), t.movedim(1, -1), 2.0)
    torch.testing.assert_close(class_distill_loss(s, t, 2.0, dim=1), last, rtol=1e-12, atol=1e-14)
    sb = torch.randn(2, 4, 7, 3, 3, generator=g, dtype=torch.float64)
    tb = torch.randn(2, 4, 7, 3, 3, generator=g, dtype=torch.float64)
    last = localization_distill_loss(sb.permute(0, 3, 4, 1, 2), tb.permute(0, 3, 4, 1, 2), 1.5)
    for dim in (2, -3):
        got = localization_distill_loss(sb, tb, 1.5, bins_dim=dim)
        torch.testing.assert_close(got, last, rtol=1e-12, atol=1e-14)


def test_losses_are_zero_at_equality_and_pass_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 5, generator=g, dtype=torch.float64) * 4
    assert class_distill_loss(x, x.clone()).abs().max() < 1e-12
    assert localization_distill_loss(x.reshape(3, 6, 5)[:, :4], x[:, :4].clone()).abs().max() < 1e-12
    f = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    assert channel_distill_loss(f, f.clone()).abs().max() < 1e-12
    t = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    s = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: class_distill_loss(a, t, 2.0), (s,))
    tb = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    sb = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: localization_distill_loss(a, tb, 1.5), (sb,))
    tf = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    sf = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: channel_distill_loss(a, tf, 2.0), (sf,))


def test_distiller_is_zero_when_the_student_is_the_teacher_and_adapts_widths():
    torch.manual_seed(0)
    teacher = create_model("yolo-n", num_classes=3).eval()
    student = copy.deepcopy(teacher).train()
    d = Distiller(teacher, student, 64)
    x = torch.rand(2, 3, 64, 64)
    student.eval()
    loss, items = d.loss(x, student(x))
    assert set(items) == {"kd_cls", "kd_ld", "kd_feat"}
    assert all(abs(v) < 1e-5 for v in items.values()) and float(loss.detach()) < 1e-4
    small = create_model("yolo-p", num_classes=3)
    d2 = Distiller(teacher, small, 64)
    assert any(isinstance(a, torch.nn.Conv2d) for a in d2.adapters)  # narrower student: 1x1 adapters
    loss, items = d2.loss(x, small(x))
    assert all(v > 0 for v in items.values())
    loss.backward()
    assert all(p.grad is not None for a in d2.adapters for p in a.parameters())


def test_distiller_reduces_terms_as_float64_references():
    """kd_cls: KL summed over locations / the teacher's summed best score (at least 1); kd_ld:
    the per-location LD weighted by that score (brute-force loops in float64)."""
    torch.manual_seed(3)
    teacher = create_model("yolo-p", num_classes=3).eval()
    student = create_model("yolo-p", num_classes=3).eval()
    d = Distiller(teacher, student, 64, feat_weight=0.0, temperature=2.0)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        s_out = [o + torch.randn_like(o) for o in student(x)]  # fresh heads start near-constant
        _, items = d.loss(x, s_out)
        sd = decode_outputs([o.double() for o in s_out], teacher.strides, teacher.reg_max)
        td = decode_outputs([o.double() for o in teacher(x)], teacher.strides, teacher.reg_max)
    sc, tc = sd.cls_logits.numpy(), td.cls_logits.numpy()  # [B, A, C]
    sb, tb = sd.box_logits.numpy(), td.box_logits.numpy()  # [B, A, 4, R]
    conf = np.array([[max(_sig(v) for v in tc[b, a]) for a in range(tc.shape[1])]
                     for b in range(tc.shape[0])])
    kl_cls = _ref_class(sc, tc, 2.0)  # [B, A]
    assert items["kd_cls"] == pytest.approx(kl_cls.sum() / max(conf.sum(), 1.0), rel=1e-4)
    ld = _ref_kl_rows(sb, tb, 2.0).mean(-1)  # [B, A]
    assert min(items["kd_cls"], items["kd_ld"]) > 0.01
    assert items["kd_ld"] == pytest.approx((ld * conf).sum() / conf.sum(), rel=1e-4)
    other = create_model("yolo-p", num_classes=4).eval()  # one class more: the maps differ
    why = r"head outputs: student \(2, 68, 8, 8\) and teacher \(2, 67"
    with torch.no_grad(), pytest.raises(DetoptInputError, match=why):
        Distiller(teacher, other, 64, feat_weight=0.0, cls_weight=0.0).loss(x, other(x))


def test_compiled_teacher_matches_eager_and_falls_back(monkeypatch, caplog):
    """kd.compile: the compiled teacher gives the eager outputs for its first batch shape; other
    shapes run eager; a compiler that fails gives one warning line and the eager teacher."""
    torch.manual_seed(0)
    teacher, student = create_model("yolo-p", num_classes=3).eval(), create_model("yolo-p", num_classes=3)
    x, x3 = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref, ref3 = teacher(x), teacher(x3)
    d = Distiller(teacher, student, 64, feat_weight=0.0, compile_teacher=True)
    got = d.teacher_outputs(x)
    assert d._compiled is not None and d._compiled[0] == (2, 3, 64, 64)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(d.teacher_outputs(x3), ref3, strict=True))  # eager

    def broken(model, **kwargs):
        def fail(images):
            raise RuntimeError("no C++ compiler\nsecond line")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    d = Distiller(teacher, student, 64, feat_weight=0.0, compile_teacher=True)
    with caplog.at_level("WARNING", logger="detopt.engine.distill"):
        got = d.teacher_outputs(x)
    lines = [r.getMessage() for r in caplog.records if r.name == "detopt.engine.distill"]
    assert len(lines) == 1 and "kd.compile" in lines[0] and "no C++ compiler" in lines[0], lines
    assert "second line" not in lines[0] and not d.compile_teacher
    assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))


@pytest.fixture(scope="module")
def kd_run(tiny_run, synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("kd") / "run"
    cfg = TrainConfig(data=str(synth_dir / "data.yaml"), out=str(out), model="yolo-p", imgsz=128, epochs=2,
                      batch=8, workers=0, val=False, progress=False, seed=1,
                      teacher=str(tiny_run / "last.pt"), kd={"stop_epochs": 1})
    Trainer(cfg).train()
    return out


def test_training_with_a_teacher_logs_each_term_and_stops_it_at_the_end(kd_run):
    rows = list(csv.DictReader((kd_run / "results.csv").open()))
    assert len(rows) == 2
    first, last = rows
    for k in ("train/kd_cls", "train/kd_ld", "train/kd_feat"):
        assert float(first[k]) > 0  # the teacher was used: a run without it cannot pass unnoticed
        assert float(last[k]) == 0  # kd.stop_epochs=1: the last epoch without the teacher
    from detopt.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(kd_run / "last.pt")
    assert ckpt["distiller"] is not None  # the adapters resume with the run


def test_bad_teacher_and_keys_get_one_line(tiny_run, synth_dir, tmp_path):
    other = tmp_path / "other.yaml"
    text = (synth_dir / "data.yaml").read_text().replace("disc", "plate")
    other.write_text(f"path: {synth_dir}\n" + text)  # the copy elsewhere points at the data
    cfg = TrainConfig(data=str(other), out=str(tmp_path / "r"), model="yolo-p", imgsz=128, epochs=1, batch=8,
                      workers=0, val=False, progress=False, teacher=str(tiny_run / "last.pt"),
                      allow_outside_root=True)
    with pytest.raises(DetoptInputError, match=r"teacher: .* differ from the data set's"):
        Trainer(cfg)
    with pytest.raises(DetoptInputError, match=r"kd\.clss"):
        build_config(TrainConfig, {"data": "d", **parse_overrides(["kd.clss=1"])})
    assert parse_overrides(["kd.cls=0.5", "kd.ld=0", "lr0=0.1"]) == {"kd": {"cls": 0.5, "ld": 0}, "lr0": 0.1}
    cfg = TrainConfig(data=str(synth_dir / "data.yaml"), out=str(tmp_path / "r2"),
                      teacher=str(tmp_path / "no.pt"))
    with pytest.raises(DetoptInputError, match="no such file"):
        Trainer(cfg)

"""The trainer's side of knowledge distillation (``detopt train ... teacher=W``): the frozen
teacher, forward hooks on both necks, the 1×1 adapters, and the weighted sum of the terms of
:mod:`detopt.losses.distill` (see there for the definitions)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from detopt.errors import DetoptInputError
from detopt.losses.distill import channel_distill_loss, class_distill_loss, localization_distill_loss

log = logging.getLogger(__name__)


def load_float_model(path: str | Path, names: Sequence[str], key: str = "teacher") -> nn.Module:
    """Float weights (a checkpoint's EMA, or a safetensors export) as a model of their own spec
    (scale, pruned widths), in eval mode; one line naming ``key`` when the file is missing, is not
    float weights, or its classes are not the data set's ``names``."""
    from detopt.engine.checkpoint import load_checkpoint, load_safetensors, model_from_checkpoint

    path = Path(path)
    if not path.is_file():
        raise DetoptInputError(f"{key}: {path}: no such file")
    if path.suffix == ".safetensors":
        model, t_names = load_safetensors(path)
    elif path.suffix == ".pt":
        ckpt = load_checkpoint(path)
        model, t_names = model_from_checkpoint(ckpt), list(ckpt.get("names", []))
    else:
        why = "a quantized or ONNX model cannot teach" if key == "teacher" else "not an ONNX export"
        raise DetoptInputError(f"{key}: {path}: expected a checkpoint (.pt) or a safetensors export ({why})")
    if list(t_names) != list(names):
        raise DetoptInputError(f"{key}: {path}: its classes {list(t_names)[:6]} differ from the data "
                               f"set's {list(names)[:6]}")
    return model.float().eval()


def load_teacher(path: str | Path, names: Sequence[str]) -> nn.Module:
    """The teacher's float weights in eval mode (:func:`load_float_model`)."""
    return load_float_model(path, names, "teacher")


class _NeckTap:
    """Keeps the neck's outputs of the last forward pass (a forward hook)."""

    def __init__(self, model: nn.Module) -> None:
        self.feats: list[Tensor] = []
        neck = getattr(model, "neck", None)
        if neck is None:
            raise DetoptInputError(f"{type(model).__name__} has no .neck: feature distillation needs one")
        self.handle = neck.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple, out: Sequence[Tensor]) -> None:
        self.feats = list(out)

    def remove(self) -> None:
        self.handle.remove()


class Distiller(nn.Module):
    """The teacher and the adapters; ``loss(images, student_outputs)`` after the student's forward.

    Args:
        teacher: a trained detopt detector (put in eval mode, frozen).
        student: the model being trained (its neck is tapped for ``feat_weight > 0``).
        imgsz: the training input size (to size the adapters).
        cls_weight, ld_weight, feat_weight: weights of the three terms (0 switches a term off).
        temperature: of the logit terms; ``feat_temperature`` of the feature term.
        bf16: run the teacher under bf16 autocast.
        compile_teacher: run the teacher through ``torch.compile`` (inductor) for the batch shape it first
            sees (other shapes, e.g. a last short batch, run eager); if compiling fails (no C++
            compiler, an unsupported op) one warning line and the eager teacher.
    Attributes:
        adapters: one 1×1 conv (or identity) per neck level, trained with the student.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, imgsz: int, cls_weight: float = 1.0,
                 ld_weight: float = 1.0, feat_weight: float = 1.0, temperature: float = 1.0,
                 feat_temperature: float = 1.0, bf16: bool = False,
                 compile_teacher: bool = False) -> None:
        super().__init__()
        if teacher.reg_max != student.reg_max:
            raise DetoptInputError(f"teacher reg_max {teacher.reg_max} != student reg_max {student.reg_max}")
        if tuple(teacher.strides) != tuple(student.strides):
            raise DetoptInputError(f"teacher strides {tuple(teacher.strides)} != student strides "
                                   f"{tuple(student.strides)}")
        self.teacher = [teacher.eval()]  # a list: not a submodule (not saved, not trained, not in .to())
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.weights = {"cls": cls_weight, "ld": ld_weight, "feat": feat_weight}
        self.temperature, self.feat_temperature, self.bf16 = temperature, feat_temperature, bf16
        self.compile_teacher = compile_teacher
        self._compiled: tuple[tuple[int, ...], Callable[[Tensor], Sequence[Tensor]]] | None = None
        self.student_tap = _NeckTap(student) if feat_weight > 0 else None
        self.teacher_tap = _NeckTap(teacher) if feat_weight > 0 else None
        adapters: list[nn.Module] = []
        if feat_weight > 0:
            with torch.no_grad():
                x = torch.zeros(1, 3, imgsz, imgsz, device=next(student.parameters()).device)
                was = student.training
                student.eval()
                student(x)
                student.train(was)
                teacher(x.to(next(teacher.parameters()).device))
            for s, t in zip(self.student_tap.feats, self.teacher_tap.feats, strict=True):
                cs, ct = s.shape[1], t.shape[1]
                adapters.append(nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1))
        self.adapters = nn.ModuleList(adapters)

    def teacher_outputs(self, images: Tensor) -> list[Tensor]:
        """The teacher's raw outputs (float32) for ``images: [B, 3, H, W]``, without gradients;
        its neck outputs land in ``teacher_tap`` (feature term)."""
        teacher = self.teacher[0]
        forward: Callable[[Tensor], Sequence[Tensor]] = teacher
        if self.compile_teacher:
            shape = tuple(images.shape)
            if self._compiled is None:
                self._compiled = (shape, torch.compile(teacher, dynamic=False))
            if self._compiled[0] == shape:
                forward = self._compiled[1]
        use_bf16 = self.bf16 and images.device.type == "cpu"
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            try:
                out = forward(images)
            except Exception as e:  # inductor's failures have no common type
                if forward is teacher:
                    raise
                log.warning("kd.compile: compiling the teacher failed (%s: %s); it runs eager",
                            type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
                self.compile_teacher, self._compiled = False, None
                out = teacher(images)
        return [o.float() for o in out]

    def loss(self, images: Tensor, student_outputs: Sequence[Tensor], active: bool = True
             ) -> tuple[Tensor, dict[str, float]]:
        """``(weighted KD loss × batch, {kd_cls, kd_ld, kd_feat})``; zeros when not ``active``."""
        names = ("kd_cls", "kd_ld", "kd_feat")
        zero = student_outputs[0].sum() * 0.0
        if not active:
            return zero, dict.fromkeys(names, 0.0)
        r = self.teacher[0].reg_max
        t_out = self.teacher_outputs(images)
        b = images.shape[0]
        terms = {"kd_cls": zero, "kd_ld": zero, "kd_feat": zero}
        # per level on the head's [B, 4R + C, H, W] maps (no flattening copy, no box decode)
        kl_cls, ld_w, w_sum = zero, zero, zero
        for s, t in zip(student_outputs, t_out, strict=True):
            if s.shape != t.shape:
                raise DetoptInputError(f"head outputs: student {tuple(s.shape)} and teacher "
                                       f"{tuple(t.shape)} differ (same strides, reg_max, classes needed)")
            s = s.float()
            w = torch.sigmoid(t[:, 4 * r:]).amax(1)  # [B, H, W]: the teacher's confidence per location
            w_sum = w_sum + w.sum()
            if self.weights["cls"] > 0:
                kl = class_distill_loss(s[:, 4 * r:], t[:, 4 * r:], self.temperature, dim=1)
                kl_cls = kl_cls + kl.sum()
            if self.weights["ld"] > 0:
                sb, tb = s[:, :4 * r].unflatten(1, (4, r)), t[:, :4 * r].unflatten(1, (4, r))
                ld_w = ld_w + (localization_distill_loss(sb, tb, self.temperature, bins_dim=2) * w).sum()
        if self.weights["cls"] > 0:
            # summed over locations and divided by the teacher's summed confidence (a soft count of
            # the object locations), as the detection loss divides by the summed target scores: a
            # mean over every location would weigh the few object locations ~1/100 of the class loss
            terms["kd_cls"] = kl_cls / w_sum.clamp(min=1.0)
        if self.weights["ld"] > 0:
            terms["kd_ld"] = ld_w / w_sum.clamp(min=1e-6)
        if self.weights["feat"] > 0:
            pairs = zip(self.adapters, self.student_tap.feats, self.teacher_tap.feats, strict=True)
            per_level = [channel_distill_loss(adapt(s.float()), t.float(), self.feat_temperature).mean()
                         for adapt, s, t in pairs]
            terms["kd_feat"] = torch.stack(per_level).mean()
        total = sum(self.weights[k.removeprefix("kd_")] * v for k, v in terms.items()) * b
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def close(self) -> None:
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.remove()

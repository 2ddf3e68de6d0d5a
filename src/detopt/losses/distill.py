"""Knowledge distillation for dense detectors: a trained teacher guides a student on the same
augmented batch (``detopt train ... teacher=W``, keys under ``kd.``).

Three terms, each zero when the student's outputs equal the teacher's:

- **classification** (:func:`class_distill_loss`): per location, the binary KL divergence of the
  student's class probabilities from the teacher's (sigmoid heads: every class is a Bernoulli),
  with temperature ``T`` (logits divided by ``T``, the loss multiplied by ``T²``), summed over
  classes; the trainer sums it over locations and divides by the teacher's summed best class
  score (as the detection loss divides by its summed target scores; a plain mean over every
  location, nearly all background, weighed it ~1/100 of the class loss and taught nothing);
- **localization** (:func:`localization_distill_loss`, LD, Zheng et al. 2022): the KL divergence
  of the student's box-side distributions (DFL bins) from the teacher's, with temperature,
  averaged over the four sides and over locations weighted by the teacher's best class score (so
  the background, where the teacher's boxes mean nothing, weighs little);
- **features** (:func:`channel_distill_loss`, channel-wise distillation, Shu et al. 2021): on each
  neck output, every channel's spatial map turned into a distribution (softmax over positions at
  temperature ``T``) and the student's KL from the teacher's, times ``T²``, averaged over channels
  and levels; a 1×1 adapter maps the student's channels to the teacher's when widths differ.

Teacher and student must share strides, ``reg_max`` and classes (every detopt model at one input
size does), so locations align one to one. The teacher runs in eval mode without gradients (bf16
autocast on a CPU with bf16). The trainer's side (teacher, taps, adapters, weights) is
:class:`detopt.engine.distill.Distiller`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detopt.errors import DetoptInputError


def _f(x: Tensor) -> Tensor:
    """float64 stays float64 (references, gradcheck); anything else computes in float32."""
    return x if x.dtype == torch.float64 else x.float()


def _check_pair(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise DetoptInputError(f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                               "differ (same strides, reg_max, classes and input size needed)")


def class_distill_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                       dim: int = -1) -> Tensor:
    """Per location ``Σ_c KL(Bern(σ(t_c/T)) ‖ Bern(σ(s_c/T))) · T²``.

    Args:
        student_logits, teacher_logits: ``[..., C]`` class logits (the classes along ``dim``:
            ``dim=1`` for a head's ``[B, C, H, W]`` maps).
    Returns:
        ``[...]`` (one value per location: ``dim`` summed away).
    """
    _check_pair(student_logits, teacher_logits, "class logits")
    t = _f(teacher_logits.detach()) / temperature
    s = _f(student_logits) / temperature
    p = torch.sigmoid(t)
    # KL = BCE(s, p) - H(p): both with logits, stable for large |logits|
    kl = (F.binary_cross_entropy_with_logits(s, p, reduction="none")
          - F.binary_cross_entropy_with_logits(t, p, reduction="none"))
    return kl.sum(dim) * temperature**2


def localization_distill_loss(student_box_logits: Tensor, teacher_box_logits: Tensor,
                              temperature: float = 1.0, bins_dim: int = -1) -> Tensor:
    """Per location the mean over the four sides of ``KL(softmax(t/T) ‖ softmax(s/T)) · T²``.

    Args:
        student_box_logits, teacher_box_logits: ``[..., 4, R]`` distance-distribution logits (the
            ``R`` bins along ``bins_dim``, the four sides along the dimension before it:
            ``bins_dim=2`` for a head's ``[B, 4, R, H, W]``).
    Returns:
        ``[...]`` (one value per location: sides and bins reduced away).
    """
    _check_pair(student_box_logits, teacher_box_logits, "box logits")
    t = F.log_softmax(_f(teacher_box_logits.detach()) / temperature, bins_dim)
    s = F.log_softmax(_f(student_box_logits) / temperature, bins_dim)
    kl = (t.exp() * (t - s)).sum(bins_dim)
    return kl.mean(bins_dim - 1 if bins_dim >= 0 else bins_dim) * temperature**2


def channel_distill_loss(student_feat: Tensor, teacher_feat: Tensor, temperature: float = 1.0) -> Tensor:
    """Channel-wise distillation of ``[B, C, H, W]`` maps: per (image, channel)
    ``KL(softmax_hw(t/T) ‖ softmax_hw(s/T)) · T²`` -> ``[B, C]``."""
    _check_pair(student_feat, teacher_feat, "features")
    t = F.log_softmax(_f(teacher_feat.detach()).flatten(2) / temperature, -1)
    s = F.log_softmax(_f(student_feat).flatten(2) / temperature, -1)
    return (t.exp() * (t - s)).sum(-1) * temperature**2



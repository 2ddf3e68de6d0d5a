"""PNG plots of the evaluation curves (matplotlib's object API, no pyplot state, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from detopt.evaluation.coco import CocoEvalResult
from detopt.evaluation.curves import (
    ConfusionMatrix,
    F1Curve,
    PRCurves,
    confusion_matrix,
    f1_curve,
    pr_curves,
)

_MAX_LEGEND = 20  # more classes than this: per-class lines stay, their legend goes


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def plot_pr_curves(curves: PRCurves, path: str | Path) -> Path:
    """Precision-recall per class (thin) and averaged over classes (thick), at IoU .5 and .5:.95."""
    fig = Figure(figsize=(14, 5.5), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = ((curves.precision_50, curves.mean_50, curves.ap50, "IoU 0.50"),
              (curves.precision_50_95, curves.mean_50_95, curves.ap, "IoU 0.50:0.95"))
    few = len(curves.class_names) <= _MAX_LEGEND
    for ax, (per_class, mean, ap, title) in zip(axes, panels, strict=True):
        for k, name in enumerate(curves.class_names):
            if np.isnan(per_class[k]).all():
                continue
            ax.plot(curves.recall, per_class[k], lw=1, alpha=0.6,
                    label=f"{name} {ap[k]:.3f}" if few else None, color=None if few else "grey")
        if not np.isnan(mean).all():
            ax.plot(curves.recall, mean, lw=3, color="blue", label=f"all classes {np.nanmean(ap):.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall", ylabel="Precision",
               title=f"Precision-recall, {title}")
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(fig, path)


def plot_f1_curve(curve: F1Curve, path: str | Path) -> Path:
    """F1 against confidence per class (thin) and averaged (thick), best threshold marked."""
    fig = Figure(figsize=(8.5, 5.5), layout="constrained")
    ax = fig.subplots()
    few = len(curve.class_names) <= _MAX_LEGEND
    for k, name in enumerate(curve.class_names):
        if np.isnan(curve.f1[k]).all():
            continue
        ax.plot(curve.confidence, curve.f1[k], lw=1, alpha=0.6, label=name if few else None,
                color=None if few else "grey")
    if not np.isnan(curve.best_f1):
        ax.plot(curve.confidence, curve.mean_f1, lw=3, color="blue",
                label=f"all classes {curve.best_f1:.3f} at {curve.best_confidence:.3f}")
        ax.axvline(curve.best_confidence, color="blue", ls="--", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Confidence", ylabel="F1",
           title=f"F1 against confidence, IoU {curve.iou_thr:.2f}")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_confusion_matrix(cm: ConfusionMatrix, path: str | Path, normalize: bool = True) -> Path:
    """Heat map of the confusion matrix (columns normalized to 1 when ``normalize``)."""
    values = cm.normalized() if normalize else cm.matrix.astype(np.float64)
    n = len(cm.class_names)
    side = min(4 + 0.45 * n, 30)
    fig = Figure(figsize=(side, side * 0.85))
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(n)
    ax.set_xticks(ticks, cm.class_names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, cm.class_names, fontsize=7)
    ax.set(xlabel="True", ylabel="Predicted",
           title=f"Confusion matrix{' (normalized)' if normalize else ''}: IoU {cm.iou_thr:.2f}, "
                 f"confidence {cm.score_thr:.3f}")
    if n <= 30:
        top = values.max() if values.size else 0
        for i in range(n):
            for j in range(n):
                if cm.matrix[i, j] and (not normalize or values[i, j] >= 0.005):
                    text = f"{values[i, j]:.2f}" if normalize else f"{cm.matrix[i, j]:d}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=6,
                            color="white" if values[i, j] > 0.5 * top else "black")
    return _save(fig, path)


def save_plots(result: CocoEvalResult, out_dir: str | Path, iou_thr: float = 0.5,
               score_thr: float | None = None) -> dict[str, Path]:
    """Write pr_curve.png, f1_curve.png, confusion_matrix.png (normalized) and
    confusion_matrix_counts.png into ``out_dir``. The confusion matrix uses
    ``score_thr`` or, when None, the confidence that maximises the mean F1."""
    out = Path(out_dir)
    f1 = f1_curve(result, iou_thr)
    conf = score_thr
    if conf is None:
        conf = f1.best_confidence if not np.isnan(f1.best_f1) else 0.25
    cm = confusion_matrix(result, iou_thr, conf)
    return {
        "pr_curve": plot_pr_curves(pr_curves(result), out / "pr_curve.png"),
        "f1_curve": plot_f1_curve(f1, out / "f1_curve.png"),
        "confusion_matrix": plot_confusion_matrix(cm, out / "confusion_matrix.png", normalize=True),
        "confusion_matrix_counts": plot_confusion_matrix(cm, out / "confusion_matrix_counts.png",
                                                         normalize=False),
    }

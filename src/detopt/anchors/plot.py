"""The anchor-fit figure: boxes and fitted anchors in ``(w, h)`` space."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detopt.anchors.kmeans import AnchorFit

_MARKERS = ("*", "X", "P", "D")


def save_anchor_plot(
    wh_px: np.ndarray, fits: Sequence[AnchorFit], path: str | Path, max_points: int = 20_000, seed: int = 0
) -> Path:
    """Scatter of box sizes (``wh_px: [N, 2]`` pixels at the fit's size) with each fit's anchors.

    Log-log axes; at most ``max_points`` boxes are drawn (a random subset), all anchors are.
    """
    from matplotlib.figure import Figure

    wh_px = np.asarray(wh_px, np.float64)
    if len(wh_px) > max_points:
        wh_px = wh_px[np.random.default_rng(seed).choice(len(wh_px), max_points, replace=False)]
    fig = Figure(figsize=(6.0, 5.2))
    ax = fig.add_subplot()
    ax.scatter(wh_px[:, 0], wh_px[:, 1], s=3, alpha=0.25, color="0.45", lw=0, label=f"boxes ({len(wh_px)})")
    for i, f in enumerate(fits):
        ax.scatter(
            f.anchors[:, 0],
            f.anchors[:, 1],
            s=90,
            marker=_MARKERS[i % len(_MARKERS)],
            edgecolor="black",
            lw=0.6,
            label=f"{f.method}: mean best IoU {f.mean_best_iou:.3f}, BPR {f.bpr:.3f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    size = fits[0].imgsz if fits else "?"
    ax.set_xlabel(f"box width (px at {size})")
    ax.set_ylabel(f"box height (px at {size})")
    ax.set_title("Box sizes and fitted anchors (w, h)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out

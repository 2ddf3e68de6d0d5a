"""Figures of the run report (matplotlib's object API, no pyplot state; OpenCV for drawn images)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.figure import Figure

from detopt.inference.predictor import draw_labelled_box

# BGR colours of the outcome drawing: true positive, false positive, missed ground truth
TP_BGR, FP_BGR, MISS_BGR = (60, 180, 60), (0, 140, 255), (40, 40, 230)


def write_png(path: str | Path, image_bgr: np.ndarray) -> Path:
    """Write a BGR ``uint8`` image as PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), image_bgr):
        raise OSError(f"{path}: could not write the PNG")
    tmp.replace(path)
    return path


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _column(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])


def plot_training_curves(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Four panels over epochs from ``results.csv`` rows: the loss terms (box, cls, dfl), the
    learning rate at the end of each epoch, validation mAP50-95 / mAP50, and training images/s."""
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    ep = _column(rows, "epoch")
    for key, colour in (("train/box", "#4878d0"), ("train/cls", "#d65f5f"), ("train/dfl", "#6acc64")):
        a.plot(ep, _column(rows, key), "o-", color=colour, label=key.split("/")[1])
    a.set(title="Training loss terms (mean over the epoch)", xlabel="epoch", ylabel="loss")
    a.legend(frameon=False)
    b.plot(ep, _column(rows, "lr"), "o-", color="#956cb4")
    b.set(title="Learning rate (last iteration of the epoch)", xlabel="epoch", ylabel="lr")
    b.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for key, label, colour in (
        ("metrics/AP", "mAP50-95", "#4878d0"),
        ("metrics/AP50", "mAP50", "#ee854a"),
        ("metrics/AP_small", "AP small", "#d65f5f"),
    ):
        if rows and key in rows[0]:
            c.plot(ep, _column(rows, key), "o-", color=colour, label=label)
    c.set(
        title="Validation (EMA weights, after each epoch)", xlabel="epoch", ylabel="COCO AP", ylim=(0, None)
    )
    c.legend(frameon=False)
    d.plot(ep, _column(rows, "img/s"), "o-", color="#797979")
    d.set(title="Training throughput", xlabel="epoch", ylabel="images / s", ylim=(0, None))
    for ax in (a, b, c, d):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def draw_outcomes(
    image_bgr: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    det_tp: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_matched: np.ndarray,
    names: Sequence[str],
    scale: float = 2.0,
) -> np.ndarray:
    """The image enlarged ``scale`` times with true positives (green), false positives (orange,
    with their score) and missed ground truth (red, dashed look: thin double box) drawn.

    Boxes are xyxy in the image's pixels; ``det_tp`` / ``gt_matched`` from
    :func:`detopt.evaluation.curves.image_outcomes`.
    """
    img = cv2.resize(image_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)

    def rect(box: np.ndarray, colour: tuple[int, int, int], text: str, thick: int) -> None:
        white = (255, 255, 255)
        draw_labelled_box(img, np.asarray(box, np.float64) * scale, colour, text, thick, 0.38, white)

    def name(k: int) -> str:
        return names[k] if 0 <= k < len(names) else str(k)

    for box, k, hit in zip(np.asarray(gt_boxes).reshape(-1, 4), gt_labels, gt_matched, strict=True):
        if not hit:
            rect(box, MISS_BGR, f"missed {name(int(k))}", 1)
            x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
            cv2.rectangle(img, (x1 - 2, y1 - 2), (x2 + 2, y2 + 2), MISS_BGR, 1, cv2.LINE_AA)
    for box, s, k, tp in zip(
        np.asarray(det_boxes).reshape(-1, 4), det_scores, det_labels, det_tp, strict=True
    ):
        rect(box, TP_BGR if tp else FP_BGR, f"{name(int(k))} {float(s):.2f}", 2 if tp else 1)
    return img


def tile(images: Sequence[np.ndarray], cols: int, pad: int = 4) -> np.ndarray:
    """Images (BGR, any sizes) in a grid of ``cols`` columns on white, top-left aligned in cells."""
    if not images:
        raise ValueError("tile: no images")
    rows = math.ceil(len(images) / cols)
    ch = max(im.shape[0] for im in images)
    cw = max(im.shape[1] for im in images)
    out = np.full((rows * (ch + pad) + pad, cols * (cw + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        out[y : y + im.shape[0], x : x + im.shape[1]] = im
    return out


def plot_postprocess_tradeoff(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """mAP50-95 against suppression milliseconds per image, one marker per setting, a colour per
    method; the best setting of each method is labelled."""
    fig = Figure(figsize=(10, 5.8), layout="constrained")
    ax = fig.subplots()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    cmap = [f"C{i % 10}" for i in range(len(groups))]
    for g, colour in zip(groups, cmap, strict=True):
        sel = [r for r in rows if r["group"] == g]
        ax.scatter(
            [r["ms_per_image"] for r in sel],
            [r["ap"] for r in sel],
            s=30,
            color=colour,
            label=g if g != "grid" else "hard NMS, IoU × score grid",
            alpha=0.8,
            marker="o" if g != "grid" else "x",
        )
        if g != "grid":
            best = max(sel, key=lambda r: r["ap"])
            ax.annotate(
                best["label"].split(" (")[0],
                (best["ms_per_image"], best["ap"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                color=colour,
            )
    ax.set_xscale("log")
    ax.set(
        xlabel="suppression time per image (ms, log scale; this machine's CPU)",
        ylabel="COCO mAP50-95 (validation)",
        title="Post-processing: accuracy against time",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def plot_nms_grid(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Heat map of hard NMS (per class): mAP50-95 over IoU threshold × score threshold."""
    sel = [r for r in rows if r["setting"]["method"] == "nms" and not r["setting"]["agnostic"]]
    ious = sorted({r["setting"]["iou_thr"] for r in sel})
    scores = sorted({r["setting"]["score_thr"] for r in sel})
    grid = np.full((len(ious), len(scores)), np.nan)
    for r in sel:
        grid[ious.index(r["setting"]["iou_thr"]), scores.index(r["setting"]["score_thr"])] = r["ap"]
    fig = Figure(figsize=(1.2 * len(scores) + 3, 0.55 * len(ious) + 2), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="mAP50-95")
    ax.set_xticks(range(len(scores)), [f"{s:g}" for s in scores])
    ax.set_yticks(range(len(ious)), [f"{v:g}" for v in ious])
    ax.set(
        xlabel="score threshold",
        ylabel="IoU threshold",
        title="Hard NMS per class: mAP50-95 (blank: not evaluated)",
    )
    top = np.nanmax(grid) if np.isfinite(grid).any() else 0.0
    for i in range(len(ious)):
        for j in range(len(scores)):
            if np.isfinite(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if grid[i, j] > 0.6 * top else "white",
                )
    return _save(fig, path)


def plot_deploy_tradeoff(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """mAP50-95 against p50 milliseconds at batch 1, one point per deployment variant (keys
    ``name``, ``map``, ``p50_ms``, ``pareto``); the Pareto front (no variant both faster and more
    accurate) joined by a line and its points filled."""
    fig = Figure(figsize=(9, 5.4), layout="constrained")
    ax = fig.subplots()
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["p50_ms"])
    if front:
        ax.step([r["p50_ms"] for r in front], [r["map"] for r in front], where="post", color="#2a9d8f",
                lw=1.5, alpha=0.7, label="Pareto front")
    for i, r in enumerate(rows):
        colour = f"C{i % 10}"
        ax.scatter([r["p50_ms"]], [r["map"]], s=70, color=colour if r["pareto"] else "white",
                   edgecolors=colour, linewidths=2, zorder=3)
        ax.annotate(r["name"], (r["p50_ms"], r["map"]), fontsize=8, xytext=(6, 4), textcoords="offset points",
                    color=colour)
    ax.set(xlabel="latency per image at batch 1, p50 (ms, this machine's CPU; lower is better)",
           ylabel="COCO mAP50-95 (validation)", title="Deployment variants: accuracy against latency")
    ax.grid(alpha=0.3)
    if front:
        ax.legend(fontsize=8, loc="lower right", frameon=False)
    return _save(fig, path)

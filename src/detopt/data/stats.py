"""``detopt data stats``: classes, boxes per image, sizes, aspect ratios, imbalance; a PNG of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detopt.constants import MEDIUM_AREA, SMALL_AREA
from detopt.structures.records import DatasetRecords

SMALL, MEDIUM = SMALL_AREA, MEDIUM_AREA  # COCO's area limits


@dataclass
class DatasetStats:
    """Statistics of a data set (crowd boxes left out).

    Attributes:
        names: class names.
        images, boxes, backgrounds: counts.
        instances: ``int64 [K]`` boxes per class.
        images_with: ``int64 [K]`` images that contain each class.
        boxes_per_image: ``int64 [I]``.
        areas: ``float64 [B]`` box areas (px²); ``labels`` ``int64 [B]`` their classes.
        aspect: ``float64 [B]`` width / height.
        rel_size: ``float64 [B]`` sqrt(box area / image area).
    """

    names: list[str]
    images: int
    boxes: int
    backgrounds: int
    instances: np.ndarray
    images_with: np.ndarray
    boxes_per_image: np.ndarray
    areas: np.ndarray
    labels: np.ndarray
    aspect: np.ndarray
    rel_size: np.ndarray

    def size_counts(self) -> dict[str, int]:
        """COCO small / medium / large box counts (by w·h)."""
        a = self.areas
        return {
            "small": int((a < SMALL).sum()),
            "medium": int(((a >= SMALL) & (a < MEDIUM)).sum()),
            "large": int((a >= MEDIUM).sum()),
        }

    def imbalance_ratio(self) -> float:
        """Instances of the most frequent class over the rarest present one (inf when a class has none)."""
        if not len(self.instances) or self.instances.max() == 0:
            return float("nan")
        if self.instances.min() == 0:
            return float("inf")
        return float(self.instances.max() / self.instances.min())

    def to_dict(self) -> dict:
        q = [0.05, 0.25, 0.5, 0.75, 0.95]

        def quant(x: np.ndarray) -> dict[str, float] | None:
            return (
                {f"p{int(p * 100)}": round(float(v), 4) for p, v in zip(q, np.quantile(x, q), strict=True)}
                if len(x)
                else None
            )

        per_class = {}
        for k, n in enumerate(self.names):
            a = self.areas[self.labels == k]
            per_class[n] = {
                "instances": int(self.instances[k]),
                "images": int(self.images_with[k]),
                "small": int((a < SMALL).sum()),
                "medium": int(((a >= SMALL) & (a < MEDIUM)).sum()),
                "large": int((a >= MEDIUM).sum()),
            }
        bpi = self.boxes_per_image
        return {
            "images": self.images,
            "boxes": self.boxes,
            "backgrounds": self.backgrounds,
            "classes": len(self.names),
            "per_class": per_class,
            "sizes": self.size_counts(),
            "boxes_per_image": {
                "mean": round(float(bpi.mean()), 4) if len(bpi) else 0.0,
                "max": int(bpi.max()) if len(bpi) else 0,
            },
            "aspect_ratio_w_over_h": quant(self.aspect),
            "relative_size": quant(self.rel_size),
            "imbalance_ratio": self.imbalance_ratio(),
        }

    def lines(self) -> list[str]:
        d = self.to_dict()
        out = [
            f"{self.images} images, {self.boxes} boxes, {self.backgrounds} background images, "
            f"{len(self.names)} classes",
            "",
            f"{'class':<20} {'instances':>9} {'images':>7} {'small':>6} {'medium':>6} {'large':>6}",
        ]
        for n, v in d["per_class"].items():
            out.append(
                f"{n[:20]:<20} {v['instances']:>9} {v['images']:>7} {v['small']:>6} {v['medium']:>6} "
                f"{v['large']:>6}"
            )
        s = d["sizes"]
        total = max(1, self.boxes)
        out += [
            "",
            f"sizes (COCO): small {s['small']} ({s['small'] / total:.1%}), medium {s['medium']} "
            f"({s['medium'] / total:.1%}), large {s['large']} ({s['large'] / total:.1%})",
            f"boxes per image: mean {d['boxes_per_image']['mean']:.2f}, max {d['boxes_per_image']['max']}",
        ]
        if d["aspect_ratio_w_over_h"]:
            a = d["aspect_ratio_w_over_h"]
            out.append(f"aspect ratio w/h: median {a['p50']:.3g}, 5-95 % {a['p5']:.3g} .. {a['p95']:.3g}")
            r = d["relative_size"]
            out.append(
                f"relative size sqrt(box/image): median {r['p50']:.3g}, "
                f"5-95 % {r['p5']:.3g} .. {r['p95']:.3g}"
            )
        out.append(f"imbalance ratio (most / least frequent class): {d['imbalance_ratio']:.3g}")
        return out


def dataset_stats(ds: DatasetRecords) -> DatasetStats:
    """Statistics of every split together."""
    recs = ds.all_records()
    k = len(ds.names)
    boxes, labels, img_area, per_image = [], [], [], []
    images_with = np.zeros(k, np.int64)
    for r in recs:
        keep = ~r.crowd
        b, lab = r.boxes[keep].astype(np.float64), r.labels[keep]
        boxes.append(b)
        labels.append(lab)
        img_area.append(np.full(len(b), float(r.width) * float(r.height)))
        per_image.append(len(b))
        images_with[np.unique(lab)] += 1
    b = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    lab = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    ia = np.concatenate(img_area) if img_area else np.zeros(0)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    areas = w * h
    per_image_arr = np.asarray(per_image, np.int64)
    return DatasetStats(
        names=list(ds.names),
        images=len(recs),
        boxes=len(b),
        backgrounds=int((per_image_arr == 0).sum()),
        instances=np.bincount(lab, minlength=k).astype(np.int64),
        images_with=images_with,
        boxes_per_image=per_image_arr,
        areas=areas,
        labels=lab,
        aspect=w / np.maximum(h, 1e-12),
        rel_size=np.sqrt(areas / np.maximum(ia, 1e-12)),
    )


def save_stats_plots(st: DatasetStats, out_dir: str | Path) -> list[Path]:
    """Write ``classes.png``, ``boxes_per_image.png``, ``sizes.png``, ``aspect_ratios.png``."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig: Figure, name: str) -> None:
        fig.tight_layout()
        p = out / name
        fig.savefig(p, dpi=110)
        paths.append(p)

    fig = Figure(figsize=(max(5.0, 0.45 * len(st.names) + 2), 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(st.names))
    ax.bar(x, st.instances, color="#4878d0")
    ax.set_xticks(
        x, st.names, rotation=45 if len(st.names) > 6 else 0, ha="right" if len(st.names) > 6 else "center"
    )
    ax.set_ylabel("instances")
    ir = st.imbalance_ratio()
    ax.set_title(f"instances per class (imbalance ratio {ir:.3g})")
    save(fig, "classes.png")

    fig = Figure(figsize=(5, 3.6))
    ax = fig.add_subplot()
    bpi = st.boxes_per_image
    ax.hist(bpi, bins=np.arange(0, (bpi.max() if len(bpi) else 0) + 2) - 0.5, color="#6acc64")
    ax.set_xlabel("boxes per image")
    ax.set_ylabel("images")
    ax.set_title(f"boxes per image ({st.backgrounds} backgrounds)")
    save(fig, "boxes_per_image.png")

    fig = Figure(figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    sc = st.size_counts()
    ax1.bar(list(sc), list(sc.values()), color=["#d65f5f", "#ee854a", "#4878d0"])
    ax1.set_title("COCO size classes")
    ax1.set_ylabel("boxes")
    side = np.sqrt(st.areas)
    if len(side):
        ax2.hist(side, bins=np.geomspace(max(side.min(), 0.5), max(side.max(), 1.0), 40), color="#956cb4")
        ax2.set_xscale("log")
    for v in (32, 96):
        ax2.axvline(v, color="k", lw=0.8, ls="--")
    ax2.set_xlabel("sqrt(box area) px")
    ax2.set_title("box sizes")
    save(fig, "sizes.png")

    fig = Figure(figsize=(5, 3.6))
    ax = fig.add_subplot()
    if len(st.aspect):
        ax.hist(np.log2(np.clip(st.aspect, 1e-3, 1e3)), bins=40, color="#82c6e2")
    ax.set_xlabel("log2(width / height)")
    ax.set_ylabel("boxes")
    ax.set_title("aspect ratios")
    save(fig, "aspect_ratios.png")
    return paths

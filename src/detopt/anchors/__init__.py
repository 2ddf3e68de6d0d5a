"""Anchors: generators over feature maps, and anchor shapes fitted to a data set."""

from detopt.anchors.generator import AnchorGenerator, Anchors, anchor_points, feature_shapes
from detopt.anchors.kmeans import (
    DEFAULT_THR,
    AnchorFit,
    euclidean_kmeans_anchors,
    fit_metrics,
    kmeans_anchors,
    normalized_wh,
    wh_iou,
)

__all__ = [
    "DEFAULT_THR",
    "AnchorFit",
    "AnchorGenerator",
    "Anchors",
    "anchor_points",
    "euclidean_kmeans_anchors",
    "feature_shapes",
    "fit_metrics",
    "kmeans_anchors",
    "normalized_wh",
    "wh_iou",
]

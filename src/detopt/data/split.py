"""Train/val split stratified by class presence (iterative stratification, Sechidis et al. 2011)."""

from __future__ import annotations

import numpy as np

from detopt.structures.records import DatasetRecords, ImageRecord


def stratified_split(
    records: list[ImageRecord], num_classes: int, val: float, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split images so that each class appears in ~``val`` of its images in the validation part.

    Iterative stratification: take the class with the fewest unassigned images; give each of them
    to the part that still wants most images of that class (ties: the part that wants most images,
    then a seeded coin). Background images fill the parts up to their sizes at the end.

    Args:
        records: images (any order; the result does not depend on it beyond the seed's coin flips,
            as images are first sorted by path).
        num_classes: number of class names.
        val: fraction in [0, 1] of images for validation.
        seed: the coin flips and the order within a class.

    Returns:
        (train records, val records), each in path order.
    """
    if not 0.0 <= val <= 1.0:
        raise ValueError(f"val must be in [0, 1], got {val}")
    recs = sorted(records, key=lambda r: str(r.path))
    n = len(recs)
    rng = np.random.default_rng(seed)
    present = [np.unique(r.labels[~r.crowd]) if len(r) else np.zeros(0, np.int64) for r in recs]
    frac = np.array([1.0 - val, val])
    want_images = frac * n
    counts = np.zeros(num_classes, np.int64)
    for p in present:
        counts[p] += 1
    want_class = frac[:, None] * counts[None, :]
    part = np.full(n, -1, np.int64)
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i in rng.permutation(n):
        for c in present[i]:
            by_class[c].append(int(i))
    left = counts.copy()
    while left.sum() > 0:
        c = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
        for i in by_class[c]:
            if part[i] >= 0:
                continue
            w = want_class[:, c]
            best = np.flatnonzero(w == w.max())
            if len(best) > 1:
                wi = want_images[best]
                best = best[wi == wi.max()]
            s = int(best[0] if len(best) == 1 else rng.choice(best))
            part[i] = s
            want_images[s] -= 1
            want_class[s, present[i]] -= 1
            left[present[i]] -= 1
        left[c] = 0
    for i in rng.permutation(n):
        if part[i] < 0:
            s = int(np.argmax(want_images))
            part[i] = s
            want_images[s] -= 1
    return [r for r, s in zip(recs, part, strict=True) if s == 0], [
        r for r, s in zip(recs, part, strict=True) if s == 1
    ]


def split_dataset(ds: DatasetRecords, val: float, seed: int = 0) -> DatasetRecords:
    """Every split of ``ds`` pooled and split again into ``train`` and ``val``."""
    train, valid = stratified_split(ds.all_records(), len(ds.names), val, seed)
    return DatasetRecords(names=list(ds.names), splits={"train": train, "val": valid})

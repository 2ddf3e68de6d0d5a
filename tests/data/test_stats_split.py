"""Statistics against a brute-force count; the stratified split; the data commands end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from detopt.cli import main
from detopt.data.formats import read_dataset
from detopt.data.split import split_dataset, stratified_split
from detopt.data.stats import dataset_stats
from detopt.structures.records import DatasetRecords, ImageRecord
from tests.data.test_formats import assert_same_objects


def test_stats_match_a_brute_force_count(synth_dir, tiny_coco):
    for src in (synth_dir / "data.yaml", tiny_coco):
        ds, _, _ = read_dataset(src)
        st = dataset_stats(ds)
        inst = [0] * len(ds.names)
        small = medium = large = backgrounds = 0
        for r in ds.all_records():
            n = 0
            for b, lab, c in zip(r.boxes.tolist(), r.labels.tolist(), r.crowd.tolist(), strict=True):
                if c:
                    continue
                n += 1
                inst[lab] += 1
                a = (b[2] - b[0]) * (b[3] - b[1])
                small += a < 1024
                medium += 1024 <= a < 9216
                large += a >= 9216
            backgrounds += n == 0
        assert st.instances.tolist() == inst
        assert st.size_counts() == {"small": small, "medium": medium, "large": large}
        assert st.backgrounds == backgrounds and st.boxes == sum(inst)
        assert st.imbalance_ratio() == pytest.approx(max(inst) / min(inst))
        assert json.dumps(st.to_dict())  # serializable


def _multilabel_records(n: int, k: int, seed: int) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    recs = []
    freq = np.geomspace(0.6, 0.03, k)  # imbalanced classes
    for i in range(n):
        present = np.flatnonzero(rng.random(k) < freq)
        labels = np.repeat(present, rng.integers(1, 4, len(present)))
        boxes = np.tile([[0, 0, 5, 5]], (len(labels), 1))
        recs.append(ImageRecord(Path(f"/x/{i:04d}.jpg"), 10, 10, boxes, labels))
    return recs


@pytest.mark.parametrize("val", [0.0, 0.1, 0.2, 0.5, 1.0])
def test_split_is_stratified_complete_and_deterministic(val):
    recs = _multilabel_records(600, 8, seed=1)
    tr, va = stratified_split(recs, 8, val, seed=0)
    assert len(tr) + len(va) == 600 and not {r.path for r in tr} & {r.path for r in va}
    assert abs(len(va) - val * 600) <= 1
    for c in range(8):
        n_all = sum(bool((r.labels == c).any()) for r in recs)
        n_val = sum(bool((r.labels == c).any()) for r in va)
        assert abs(n_val - val * n_all) <= max(1.0, 0.05 * n_all), (c, n_val, n_all)
    again = stratified_split(list(reversed(recs)), 8, val, seed=0)
    assert [r.path for r in again[1]] == [r.path for r in va]
    if 0 < val < 1:
        other = stratified_split(recs, 8, val, seed=1)
        assert [r.path for r in other[1]] != [r.path for r in va]


def _worst_deviation(recs, va, n_classes: int, val: float) -> float:
    """The largest |images of a class in val - val * images of the class| over the classes."""
    out = 0.0
    for c in range(n_classes):
        n_all = sum(bool((r.labels == c).any()) for r in recs)
        n_val = sum(bool((r.labels == c).any()) for r in va)
        out = max(out, abs(n_val - val * n_all))
    return out


def test_split_beats_a_random_split_on_rare_classes():
    """Over several data sets and seeds, the stratified split's worst per-class deviation is at most
    one image and no larger than that of any of 30 random splits of the same size (whose median is
    three images or more)."""
    recs = _multilabel_records(400, 8, seed=2)
    _, va = stratified_split(recs, 8, 0.2, seed=0)
    ds = split_dataset(DatasetRecords([str(i) for i in range(8)], {"all": recs}), 0.2, seed=0)
    assert [r.path for r in ds.splits["val"]] == [r.path for r in va]
    for data_seed in (2, 3, 4):
        recs = _multilabel_records(400, 8, seed=data_seed)
        rng = np.random.default_rng(data_seed)
        random_worst = []
        for _ in range(30):
            pick = rng.permutation(len(recs))[: len(va)]
            random_worst.append(_worst_deviation(recs, [recs[i] for i in pick], 8, 0.2))
        for seed in range(3):
            _, va = stratified_split(recs, 8, 0.2, seed=seed)
            ours = _worst_deviation(recs, va, 8, 0.2)
            assert ours <= 1.0 and ours <= min(random_worst), (data_seed, seed, ours, min(random_worst))
        assert np.median(random_worst) >= 3.0  # what stratification saves on these data sets


def test_data_commands_end_to_end(synth_dir, tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "stats",
                str(synth_dir),
                "--plots",
                str(tmp_path / "plots"),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "imbalance ratio" in out and "sizes (COCO)" in out
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == [
        "aspect_ratios.png",
        "boxes_per_image.png",
        "classes.png",
        "sizes.png",
    ]
    assert main(["data", "split", str(synth_dir), str(tmp_path / "split"), "--val", "0.3", "--link"]) == 0
    _, defects, _ = read_dataset(tmp_path / "split")  # --link: every image lies in the source
    assert defects and {d.kind for d in defects} == {"outside_root"}
    ds, defects, fmt = read_dataset(tmp_path / "split", allow_outside_root=True)
    assert fmt == "yolo" and not defects and list(ds.splits) == ["train", "val"]
    n_train, n_val = len(ds.splits["train"]), len(ds.splits["val"])
    assert n_train + n_val == 50 and abs(n_val - 15) <= 1  # class balance may cost one image of size
    convert = ["data", "convert", str(tmp_path / "split"), str(tmp_path / "voc"), "--to", "voc"]
    capsys.readouterr()
    assert main(convert) == 2 and "outside_root" in capsys.readouterr().err
    assert main([*convert, "--allow-outside-root"]) == 0
    assert f"wrote {tmp_path / 'voc'} (voc): 50 images" in capsys.readouterr().out
    voc, defects, _ = read_dataset(tmp_path / "voc")
    assert not defects and {k: len(v) for k, v in voc.splits.items()} == {"train": n_train, "val": n_val}
    assert_same_objects(ds, voc, tol=1e-3)  # the copy reads back as the source
    # two defective images: --skip-invalid leaves exactly them out and counts them
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "voc", bad)
    victims = sorted((bad / "JPEGImages").iterdir())[:2]
    victims[0].write_bytes(b"")
    victims[1].write_bytes(victims[1].read_bytes()[:100])
    to_yolo = ["data", "convert", str(bad), str(tmp_path / "y"), "--to", "yolo"]
    assert main(to_yolo) == 2 and not (tmp_path / "y").exists()
    assert "2 defects (2 unreadable_image)" in capsys.readouterr().err
    assert main([*to_yolo, "--skip-invalid"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 2 defective images (2 defects: 2 unreadable_image); 48 images kept" in err
    assert "(yolo): 48 images" in out
    y, _, _ = read_dataset(tmp_path / "y")
    kept = {r.path.name for r in y.all_records()}
    assert kept == {r.path.name for r in voc.all_records()} - {v.name for v in victims}
    assert main([*convert, "--allow-outside-root"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*convert, "--allow-outside-root", "--overwrite"]) == 0
    assert (
        main(
            [
                "data",
                "synth",
                str(tmp_path / "syn"),
                "--train",
                "3",
                "--val",
                "1",
                "--imgsz",
                "64",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "train 3 images" in capsys.readouterr().out
    assert (tmp_path / "syn" / "annotations" / "val.json").exists()

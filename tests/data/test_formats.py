"""COCO / YOLO / VOC readers and writers: round trips, format details, safe output folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detopt.data.formats import detect_format, load_dataset, read_dataset, write_dataset
from detopt.data.formats._common import place_image
from detopt.data.formats.yolo import label_path
from detopt.errors import DetoptDataError
from detopt.structures.records import DatasetRecords, ImageRecord
from tests.data.conftest import write_image
from tests.hyp import examples


def _by_name(ds: DatasetRecords) -> dict[str, ImageRecord]:
    return {r.path.name: r for r in ds.all_records()}


def assert_same_objects(
    a: DatasetRecords, b: DatasetRecords, drop_crowd: bool = False, tol: float = 0.01
) -> None:
    """Same images (by file name), same boxes within ``tol`` px in the same order, same class names."""
    assert sorted(a.names) == sorted(b.names)
    ra, rb = _by_name(a), _by_name(b)
    assert ra.keys() == rb.keys()
    for name, x in ra.items():
        y = rb[name]
        assert (x.width, x.height) == (y.width, y.height), name
        keep = ~x.crowd if drop_crowd else np.ones(len(x), bool)
        np.testing.assert_allclose(y.boxes, x.boxes[keep], atol=tol, rtol=0, err_msg=name)
        assert [b.names[k] for k in y.labels] == [a.names[k] for k in x.labels[keep]], name
        if not drop_crowd:
            np.testing.assert_array_equal(y.crowd, x.crowd[keep])


def _round_trip(src: Path, tmp: Path) -> tuple[DatasetRecords, list[DatasetRecords], list[list[str]]]:
    ds0, defects, _ = read_dataset(src)
    assert defects == []
    chain, notes, cur = [], [], src
    for i, to in enumerate(("yolo", "voc", "coco")):
        out = tmp / f"{i}_{to}"
        ds_cur, defects, fmt = read_dataset(cur)
        assert defects == []
        notes.append(write_dataset(ds_cur, out, to))
        ds_new, defects, fmt = read_dataset(out)
        assert defects == [] and fmt == to
        chain.append(ds_new)
        cur = out
    return ds0, chain, notes


def test_round_trip_tiny_edge_cases(tiny_coco, tmp_path):
    ds0, (yolo, voc, coco), notes = _round_trip(tiny_coco, tmp_path)
    assert ds0.names == ["traffic light", "dög", "Person / 人"]  # category id order
    assert any("1 crowd boxes left out" in n for n in notes[0])
    for ds in (yolo, voc, coco):
        assert_same_objects(ds0, ds, drop_crowd=True)
        assert len(_by_name(ds)["empty.png"]) == 0
    assert coco.names == ds0.names  # and the class order survives all three formats


def test_round_trip_synthetic(synth_dir, tmp_path):
    ds0, (yolo, voc, coco), notes = _round_trip(synth_dir / "annotations", tmp_path)
    assert ds0.num_boxes > 200
    assert any("masks dropped" in n for n in notes[0])
    for ds in (yolo, voc, coco):
        assert_same_objects(ds0, ds)
        assert set(ds.splits) == {"train", "val"}
        assert {s: len(v) for s, v in ds.splits.items()} == {"train": 40, "val": 10}


def test_coco_to_coco_keeps_masks_crowd_and_image_ids(tiny_coco, synth_dir, tmp_path):
    ds0, _, _ = read_dataset(synth_dir / "annotations" / "train.json")
    write_dataset(ds0, tmp_path / "c", "coco")
    ds1, defects, _ = read_dataset(tmp_path / "c")
    assert defects == []
    for a, b in zip(ds0.splits["train"], ds1.splits["train"], strict=True):
        assert a.image_id == b.image_id
        assert len(a.masks) == len(b.masks)
        for pa, pb in zip(a.masks, b.masks, strict=True):
            assert len(pa) == len(pb)
            for x, y in zip(pa, pb, strict=True):
                np.testing.assert_allclose(x, y, atol=0.005)
    t0, _, _ = read_dataset(tiny_coco)
    write_dataset(t0, tmp_path / "t", "voc")
    t1, _, _ = read_dataset(tmp_path / "t")
    assert_same_objects(t0, t1)  # VOC's difficult flag carries COCO's crowd flag


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 1600), h=st.integers(1, 1600), data=st.data())
def test_round_trip_random_boxes_each_format(tmp_path_factory, w, h, data):
    n = data.draw(st.integers(0, 6))
    boxes = []
    for _ in range(n):
        x1 = data.draw(st.floats(0, w - 0.01, allow_nan=False))
        y1 = data.draw(st.floats(0, h - 0.01, allow_nan=False))
        x2 = data.draw(st.floats(x1 + 0.01, w, allow_nan=False))
        y2 = data.draw(st.floats(y1 + 0.01, h, allow_nan=False))
        boxes.append([x1, y1, x2, y2])
    tmp = tmp_path_factory.mktemp("rt")
    img = write_image(tmp / "src" / "im.png", w, h)
    labels = np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int64)
    ds = DatasetRecords(
        ["a", "b", "c"], {"train": [ImageRecord(img, w, h, np.asarray(boxes, np.float32), labels)]}
    )
    ds = DatasetRecords(ds.names, {"train": [ImageRecord(img, w, h, ds.splits["train"][0].boxes, labels)]})
    for to in ("coco", "yolo", "voc"):
        write_dataset(ds, tmp / to, to)
        back, defects, _ = read_dataset(tmp / to)
        assert defects == []
        assert_same_objects(ds, back, tol=0.01)


def test_yolo_details(tmp_path):
    root = tmp_path / "y"
    write_image(root / "images" / "train" / "a.jpg", 100, 50)
    write_image(root / "images" / "train" / "b.jpg", 100, 50)  # no label file: a background image
    write_image(root / "images" / "val" / "c.png", 20, 20)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n\n1 0.1 0.2 0.3 0.2 0.2 0.4\n"
    )  # a box, a blank line, a polygon
    (root / "val.txt").write_text("./images/val/c.png\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: val.txt\nnames: [cat, dog]\n")
    ds, defects, fmt = read_dataset(root)
    assert fmt == "yolo" and defects == []
    a, b = ds.splits["train"]
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [10, 10, 30, 20]], atol=1e-4)
    assert a.masks[0] == [] and len(a.masks[1]) == 1
    np.testing.assert_allclose(a.masks[1][0], [10, 10, 30, 10, 20, 20], atol=1e-4)
    assert len(b) == 0 and [r.path.name for r in ds.splits["val"]] == ["c.png"]
    assert label_path(Path("/d/images/x/images/y.jpg")) == Path("/d/images/x/labels/y.txt")
    assert label_path(Path("/d/flat/y.jpg")) == Path("/d/flat/y.txt")


def test_yolo_names_mapping_and_errors(tmp_path):
    write_image(tmp_path / "images" / "train" / "a.jpg", 8, 8)
    y = tmp_path / "data.yaml"
    y.write_text("train: images/train\nnames: {0: x, 1: y}\n")
    assert read_dataset(y)[0].names == ["x", "y"]
    for text, msg in [
        ("train: images/train\nnames: {0: x, 2: y}\n", "keys must be 0..1"),
        ("train: images/train\nnc: 3\nnames: [x]\n", "'nc' is 3"),
        ("names: [x]\n", "at least one of"),
        ("train: [images/train\n", "not valid yaml"),
    ]:
        y.write_text(text)
        with pytest.raises(DetoptDataError, match=msg):
            read_dataset(y)


def test_voc_details(tmp_path):
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "x.jpg", 30, 20)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename>"  # no <size>: read from the image header
        "<object><name>zebra</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>10</xmax><ymax>20</ymax></bndbox></object>"
        "<object><name>ant</name><difficult>1</difficult><bndbox><xmin>5.5</xmin><ymin>2</ymin>"
        "<xmax>30</xmax><ymax>7</ymax></bndbox></object></annotation>"
    )
    ds, defects, fmt = read_dataset(root)
    assert fmt == "voc" and defects == [] and list(ds.splits) == ["train"]
    r = ds.splits["train"][0]
    assert ds.names == ["ant", "zebra"] and (r.width, r.height) == (30, 20)
    np.testing.assert_allclose(r.boxes, [[0, 0, 10, 20], [4.5, 1, 30, 7]])  # 1-based inclusive → continuous
    assert r.crowd.tolist() == [False, True]


def test_detect_format(tmp_path, tiny_coco):
    assert detect_format(tiny_coco) == ("coco", tiny_coco)
    assert detect_format(tiny_coco.parent)[0] == "coco"
    with pytest.raises(DetoptDataError, match="no such file"):
        detect_format(tmp_path / "missing")
    (tmp_path / "e").mkdir()
    with pytest.raises(DetoptDataError, match="no data set found"):
        detect_format(tmp_path / "e")


def test_writers_never_overwrite_nor_write_inside_the_source(tiny_coco, tmp_path):
    ds, _, _ = read_dataset(tiny_coco)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(DetoptDataError, match="not empty; pass --overwrite"):
        write_dataset(ds, out, "yolo", sources=[tiny_coco])
    assert (out / "keep.txt").read_text() == "precious"
    with pytest.raises(DetoptDataError, match="lies inside the source"):
        write_dataset(ds, tiny_coco.parent / "converted", "yolo", sources=[tiny_coco])
    assert not (tiny_coco.parent / "converted").exists()
    with pytest.raises(DetoptDataError, match="lies inside the source"):  # the images' folder counts too
        write_dataset(ds, tiny_coco.parent / "images" / "x", "voc")
    with pytest.raises(DetoptDataError, match="lies inside the output folder"):
        write_dataset(ds, tmp_path, "voc", sources=[tiny_coco], overwrite=True)
    assert tiny_coco.exists()
    write_dataset(ds, out, "yolo", overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "data.yaml").exists()


def test_link_mode_and_failed_write_leaves_nothing(tiny_coco, tmp_path, monkeypatch):
    ds, _, _ = read_dataset(tiny_coco)
    write_dataset(ds, tmp_path / "linked", "voc", mode="link")
    imgs = list((tmp_path / "linked" / "JPEGImages").iterdir())
    assert imgs and all(p.is_symlink() and p.resolve().is_file() for p in imgs)
    # the links point outside the new data set: reading it back needs allow_outside_root
    _, defects, _ = read_dataset(tmp_path / "linked")
    assert {d.kind for d in defects} == {"outside_root"} and len(defects) == len(imgs)
    again, defects, _ = read_dataset(tmp_path / "linked", allow_outside_root=True)
    assert not defects and again.num_images == ds.num_images
    bad = DatasetRecords(
        ds.names, {"train": [*ds.splits["train"], ImageRecord(tmp_path / "elsewhere" / "gone.jpg", 5, 5)]}
    )
    with pytest.raises(DetoptDataError, match="missing_image"):  # checked before anything is written
        write_dataset(bad, tmp_path / "partial", "coco")
    assert not (tmp_path / "partial").exists()
    calls = []

    def fail_second(src, dst, mode):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full")
        place_image(src, dst, mode)

    monkeypatch.setattr("detopt.data.formats.coco.place_image", fail_second)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(ds, tmp_path / "partial", "coco")
    assert not (tmp_path / "partial").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_load_dataset_stops_on_defects_unless_skipping(tiny_coco):
    d = json.loads(tiny_coco.read_text(encoding="utf-8"))
    d["annotations"][1]["bbox"] = [3, 4, -1, 5]
    tiny_coco.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(
        DetoptDataError, match=r"1 defects \(1 non_positive_size\).*skip the 1 defective"
    ) as e:
        load_dataset(tiny_coco)
    assert e.value.defects[0].kind == "non_positive_size"
    with pytest.warns(UserWarning, match="skipped 1 defective images"):
        ds = load_dataset(tiny_coco, skip_invalid=True)
    assert ds.num_images == 3 and "plain.jpg" not in _by_name(ds)


def test_relative_paths_resolved_from_anywhere(tiny_coco, monkeypatch):
    monkeypatch.chdir(tiny_coco.parent.parent)
    ds, defects, _ = read_dataset(Path(tiny_coco.parent.name) / tiny_coco.name)
    assert defects == [] and all(r.path.is_absolute() and r.path.is_file() for r in ds.all_records())
    assert os.path.isabs(ds.all_records()[0].path)

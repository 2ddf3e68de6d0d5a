"""A bad-input corpus with one defect per file: validate names each one (file, line, kind)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detopt.cli import main
from detopt.data.defects import DEFECT_KINDS
from detopt.data.validate import validate_dataset
from tests.data.conftest import write_huge_png, write_image
from tests.hyp import examples

# label text -> (kind, line) of the one defect it holds
YOLO_BAD_LABELS = {
    "fields": ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", ("field_count", 2)),
    "six_fields": ("0 0.5 0.5 0.2 0.2 0.9\n", ("field_count", 1)),
    "nan_text": ("0 0.5 abc 0.2 0.2\n", ("not_a_number", 1)),
    "frac_class": ("1.5 0.5 0.5 0.2 0.2\n", ("not_a_number", 1)),
    "nan": ("\n\n0 nan 0.5 0.2 0.2\n", ("non_finite", 3)),
    "inf": ("0 0.5 0.5 inf 0.2\n", ("non_finite", 1)),
    "class": ("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.2 0.2\n", ("class_out_of_range", 2)),
    "negclass": ("-1 0.5 0.5 0.2 0.2\n", ("class_out_of_range", 1)),
    "zero": ("0 0.5 0.5 0 0.2\n", ("non_positive_size", 1)),
    "neg": ("0 0.5 0.5 0.2 -0.2\n", ("non_positive_size", 1)),
    "outside": ("0 1.5 0.5 0.2 0.2\n", ("out_of_image", 1)),
    "polyout": ("1 0.1 0.1 0.9 0.1 0.5 1.2\n", ("out_of_image", 1)),
}


def _jpeg(path: Path, w: int = 40, h: int = 30) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


def _exif_rotated(path: Path) -> None:
    from PIL import Image

    im = Image.new("RGB", (40, 30), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif)


@pytest.fixture
def bad_yolo(tmp_path) -> tuple[Path, dict[tuple[str, str, int | None], str]]:
    """A YOLO set: good images, and one file per defect. Returns (data.yaml, expected defects)."""
    root = tmp_path / "bad yolo"
    img_dir, lab_dir = root / "images" / "train", root / "labels" / "train"
    expected: dict[tuple[str, str, int | None], str] = {}
    for i in range(3):  # clean images, one of them a background
        _jpeg(img_dir / f"good{i}.jpg")
        if i:
            (lab_dir / f"good{i}.txt").parent.mkdir(parents=True, exist_ok=True)
            (lab_dir / f"good{i}.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.999 0.5 0.002 0.2\n")
    for stem, (text, (kind, line)) in YOLO_BAD_LABELS.items():
        _jpeg(img_dir / f"{stem}.jpg")
        (lab_dir / f"{stem}.txt").write_text(text)
        expected[(kind, f"{stem}.txt", line)] = stem
    (lab_dir / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    expected[("label_without_image", "orphan.txt", None)] = "orphan"
    (img_dir / "empty.jpg").write_bytes(b"")
    expected[("unreadable_image", "empty.jpg", None)] = "empty"
    data = _jpeg(img_dir / "truncated.jpg", 200, 150)
    (img_dir / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expected[("unreadable_image", "truncated.jpg", None)] = "truncated"
    (img_dir / "text.jpg").write_text("this is not an image\n")
    expected[("unreadable_image", "text.jpg", None)] = "text"
    _exif_rotated(img_dir / "rotated.jpg")
    expected[("exif_rotation", "rotated.jpg", None)] = "rotated"
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [a, b]\n")
    return root / "data.yaml", expected


def _found(report) -> set[tuple[str, str, int | None]]:
    return {(d.kind, d.file.name, d.line) for d in report.defects}


def test_yolo_corpus_every_defect_named(bad_yolo):
    yaml_path, expected = bad_yolo
    report = validate_dataset(yaml_path)
    assert _found(report) == set(expected)
    assert report.clean_images == 3 and report.backgrounds == 1 and report.boxes == 4
    assert not report.ok and report.format == "yolo"
    assert sum(report.by_kind().values()) == len(expected)
    # every line names the file and, for label files, the line
    for d in report.defects:
        text = str(d)
        assert str(d.file) in text and d.kind in text
        if d.line is not None:
            assert f"{d.file}:{d.line}:" in text


def test_cli_validate_exit_status(bad_yolo, capsys, tmp_path):
    yaml_path, expected = bad_yolo
    assert main(["data", "validate", str(yaml_path), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "fields.txt:2: field_count: 4 fields" in out
    assert f"{len(expected)} defects in" in out and "1 background images" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert len(doc["defects"]) == len(expected)
    for stem in ["empty", "truncated", "text", "rotated", "orphan", *YOLO_BAD_LABELS]:
        for p in yaml_path.parent.rglob(f"{stem}.*"):
            p.unlink()
    assert main(["data", "validate", str(yaml_path)]) == 0
    assert "no defects" in capsys.readouterr().out
    assert main(["data", "validate", str(tmp_path / "nothing")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.fixture
def bad_coco(tmp_path) -> tuple[Path, set[tuple[str, str, int | None]]]:
    root = tmp_path / "coco"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg"):
        _jpeg(root / "img" / name)
    _jpeg(tmp_path / "outside.jpg")
    write_huge_png(root / "img" / "h.png", 10_000, 9_000)  # 90 MP > PIL's 89.5 MP
    images = [
        {"id": 1, "file_name": "img/a.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "img/b.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "img/c.jpg", "width": 40, "height": 30},  # duplicate id
        {"id": 4, "file_name": "img/missing.jpg", "width": 40, "height": 30},  # missing image
        {"id": 5, "file_name": "img/d.jpg", "width": 41, "height": 30},  # size mismatch
        {"id": 6, "file_name": "img/e.jpg", "width": 40, "height": 30},
        {"id": 7, "file_name": "img/f.jpg", "width": 40, "height": 30},
        {"id": 8, "file_name": "img/g.jpg", "width": 40, "height": 30},
        {"id": 9, "file_name": "../outside.jpg", "width": 40, "height": 30},  # outside the root
        {"id": 10, "file_name": "img/h.png", "width": 40, "height": 30},  # too large (header)
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 1, "image_id": 6, "category_id": 1, "bbox": [1, 1, 5, 5]},  # duplicate annotation id
        {"id": 3, "image_id": 7, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, "x", 5, 5]},  # not a number
        {"id": 5, "image_id": 8, "category_id": 1, "bbox": [float("nan"), 1, 5, 5]},  # NaN
        {"id": 6, "image_id": 77, "category_id": 1, "bbox": [1, 1, 5, 5]},
    ]  # no such image
    (root / "train.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]})
    )
    expected = {
        ("duplicate_id", "train.json", None),
        ("missing_image", "train.json", None),
        ("size_mismatch", "d.jpg", None),
        ("duplicate_id", "train.json", None),
        ("class_out_of_range", "train.json", None),
        ("not_a_number", "train.json", None),
        ("non_finite", "train.json", None),
        ("outside_root", "train.json", None),
        ("too_large", "h.png", None),
    }
    return root / "train.json", expected


def test_coco_corpus_every_defect_named(bad_coco):
    path, expected = bad_coco
    report = validate_dataset(path)
    assert _found(report) == expected
    msgs = "\n".join(report.lines())
    for needle in [
        "image id 2 used twice",
        "annotation id used twice",
        "category_id 99",
        "missing.jpg does not exist",
        "declared 41x30, decoded 40x30",
        "image_id 77 is not among",
        "non-number",
        "non-finite",
        f"images[8] (id 9): {path.parent / '../outside.jpg'} resolves to "
        f"{path.parent.parent / 'outside.jpg'}",
        "10000x9000 = 90.0 megapixels, more than the limit of 89.5",
    ]:
        assert needle in msgs
    assert len(report.defects) == 10  # two missing_image: a file and an image_id


def test_malformed_files_are_reported_not_raised(tmp_path):
    (tmp_path / "broken.json").write_text('{"images": [}')
    r = validate_dataset(tmp_path / "broken.json")
    assert [(d.kind, d.line) for d in r.defects] == [("malformed_file", 1)]
    voc = tmp_path / "voc"
    _jpeg(voc / "JPEGImages" / "x.jpg")
    _jpeg(voc / "JPEGImages" / "y.jpg")
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "x.xml").write_text("<annotation><filename>x.jpg</filename><object>")
    (voc / "Annotations" / "y.xml").write_text(
        "<annotation><filename>y.jpg</filename><object><name>cow</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>500</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    (voc / "classes.txt").write_text("dog\n")
    r = validate_dataset(voc)
    assert {(d.kind, d.file.name) for d in r.defects} == {
        ("malformed_file", "x.xml"),
        ("class_out_of_range", "y.xml"),
        ("out_of_image", "y.xml"),
    }


def test_odd_json_and_yaml_values_are_defects_not_crashes(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
        "annotations": [
            {"id": [1], "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 2, "image_id": [1], "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 3, "image_id": 1, "category_id": {"x": 1}, "bbox": [1, 1, 2, 2]},
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "odd.json").write_text(json.dumps(doc))
    r = validate_dataset(tmp_path / "odd.json")
    assert [d.kind for d in r.defects] == ["malformed_file", "missing_image", "class_out_of_range"]
    (tmp_path / "data.yaml").write_text("path: 7\ntrain: .\nnames: {'0': a}\n")
    r = validate_dataset(tmp_path / "data.yaml")
    assert [d.kind for d in r.defects] == ["malformed_file"] and "keys must be 0..0" in r.defects[0].message


def test_split_overlap_is_a_defect(tmp_path):
    _jpeg(tmp_path / "images" / "a.jpg")
    (tmp_path / "data.yaml").write_text("train: images\nval: images\nnames: [a]\n")
    r = validate_dataset(tmp_path / "data.yaml")
    assert [d.kind for d in r.defects] == ["duplicate_id"] and "both 'train' and 'val'" in r.defects[
        0
    ].message


def test_the_corpora_cover_every_defect_kind(bad_yolo, bad_coco, tmp_path):
    (tmp_path / "broken.json").write_text("{")
    kinds = set()
    for src in (bad_yolo[0], bad_coco[0], tmp_path / "broken.json"):
        kinds |= {d.kind for d in validate_dataset(src).defects}
    assert kinds == set(DEFECT_KINDS)


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.-+e nainf\t\n#x")), max_size=80))
def test_any_label_text_gives_a_report_never_an_exception(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("fuzz")
    write_image(root / "images" / "a.png", 16, 16)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text(text)
    (root / "data.yaml").write_text("train: images\nnames: [a, b]\n")
    r = validate_dataset(root / "data.yaml")
    assert r.images == 1
    assert r.clean_images + bool(r.defects) == 1
    shutil.rmtree(root)

"""Data sets as users download them: the COCO 2017 layout (and LVIS / Objects365 names), per-split
image folders, VOCdevkit with VOC2007 + VOC2012. Each layout is built with generated images and the
real file and folder names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detopt.cli import main
from detopt.data.formats import coco_split_files, detect_format, read_dataset
from tests.data.conftest import write_image


def _coco_split(path: Path, names: list[str], first_id: int) -> dict:
    """A COCO json for ``names`` (80 categories with COCO's gapped ids, as the download has)."""
    cats = [{"id": i, "name": f"c{i}", "supercategory": "s"} for i in range(1, 91) if i % 12]  # gaps
    images, anns = [], []
    for k, n in enumerate(names):
        iid = first_id + k
        images.append({"id": iid, "file_name": n, "width": 48, "height": 32})
        anns.append({"id": iid, "image_id": iid, "category_id": cats[k % len(cats)]["id"],
                     "bbox": [2, 3, 10 + k, 8], "area": (10 + k) * 8, "iscrowd": 0})
    doc = {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return doc


def _coco2017(root: Path) -> Path:
    """``coco/annotations/instances_{train,val}2017.json`` + ``coco/{train,val}2017/*.jpg``, with the
    captions and keypoints files that sit beside them in the download."""
    for split, n, first in (("train", 5, 9), ("val", 3, 139)):
        names = [f"{first + k:012d}.jpg" for k in range(n)]
        for name in names:
            write_image(root / f"{split}2017" / name, 48, 32)
        _coco_split(root / "annotations" / f"instances_{split}2017.json", names, first)
    captions = {"images": [], "annotations": []}
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps(captions))
    _coco_split(root / "annotations" / "person_keypoints_val2017.json", [], 1)
    return root


def test_coco_2017_download_layout(tmp_path, capsys):
    coco = _coco2017(tmp_path / "coco")
    assert detect_format(coco) == ("coco", coco / "annotations")
    for src in (coco, coco / "annotations"):
        ds, defects, fmt = read_dataset(src)
        assert fmt == "coco" and defects == []
        assert {k: len(v) for k, v in ds.splits.items()} == {"train": 5, "val": 3}
        roots = {"train": (coco / "train2017").absolute(), "val": (coco / "val2017").absolute()}
        assert ds.image_roots == roots
        assert len(ds.names) == 83 and ds.category_ids[:3] == [1, 2, 3] and 12 not in ds.category_ids
    capsys.readouterr()
    assert main(["data", "validate", str(coco)]) == 0
    out = capsys.readouterr().out
    assert out.count("instances_train2017.json -> split 'train'") == 1  # printed once
    assert f"images in {(coco / 'val2017').absolute()}" in out and "8 clean" in out
    assert main(["data", "stats", str(coco)]) == 0
    dst = tmp_path / "yolo"
    assert main(["data", "convert", str(coco), str(dst), "--to", "yolo"]) == 0
    assert sorted(p.name for p in (dst / "images" / "val").iterdir()) == [
        "000000000139.jpg", "000000000140.jpg", "000000000141.jpg"]
    assert len(list((dst / "images" / "train").iterdir())) == 5


@pytest.mark.slow
def test_one_training_step_on_the_coco_layout(tmp_path, capsys):
    coco = _coco2017(tmp_path / "coco")
    run = tmp_path / "run"
    assert main(["train", "--data", str(coco), "--out", str(run), "--model", "yolo-p", "--imgsz", "64",
                 "--epochs", "1", "--batch", "4", "--workers", "0", "progress=false", "close_mosaic=0"]) == 0
    out = capsys.readouterr().out
    assert "5 training images" in out and "last validation: mAP50-95" in out


@pytest.mark.parametrize("where", ["split", "images/split", "images", "root"])
def test_image_folders_found_per_split(tmp_path, where):
    root = tmp_path / "ds"
    for split in ("train", "val"):
        folder = {"split": root / split, "images/split": root / "images" / split, "images": root / "images",
                  "root": root}[where]
        names = [f"{split}_{k}.jpg" for k in range(2)]
        for n in names:
            write_image(folder / n, 48, 32)
        _coco_split(root / "annotations" / f"{split}.json", names, 1 if split == "train" else 100)
    ds, defects, _ = read_dataset(root)
    assert defects == [] and {k: len(v) for k, v in ds.splits.items()} == {"train": 2, "val": 2}


def test_images_per_split_from_the_command_line(tmp_path, capsys):
    root = tmp_path / "ds"
    for split, folder in (("train", "pics_a"), ("val", "pics_b")):
        names = [f"{split}_{k}.jpg" for k in range(2)]
        for n in names:
            write_image(tmp_path / folder / n, 48, 32)
        _coco_split(root / f"{split}.json", names, 1 if split == "train" else 100)
    assert main(["data", "validate", str(root)]) == 1  # not found next to the jsons
    assert "missing_image" in capsys.readouterr().out
    per_split = [f"train={tmp_path / 'pics_a'}", f"val={tmp_path / 'pics_b'}"]
    args = ["data", "validate", str(root), "--images", *per_split]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"images in {tmp_path / 'pics_a'}" in out and "4 clean" in out
    ds, defects, _ = read_dataset(root, images_dir={"train": tmp_path / "pics_a", "val": tmp_path / "pics_b"})
    assert not defects and ds.num_images == 4
    assert main(["data", "validate", str(root), "--images", "train=x", "nonsense"]) == 2
    assert "SPLIT=DIR" in capsys.readouterr().err


def test_standard_annotation_file_names(tmp_path):
    for name in ("instances_train2017", "instances_val2017", "lvis_v1_train", "lvis_v1_val",
                 "zhiyuan_objv2_train", "zhiyuan_objv2_val", "image_info_test-dev2017"):
        (tmp_path / f"{name}.json").write_text("{}")
    got = {s: p.name for s, p in coco_split_files(tmp_path).items()}
    # instances_* files win (the download layout); the others would share split names
    assert got == {"train": "instances_train2017.json", "val": "instances_val2017.json"}
    for f in tmp_path.glob("instances_*"):
        f.unlink()
    got = {s: p.name for s, p in coco_split_files(tmp_path).items()}
    assert got == {"lvis_v1_train": "lvis_v1_train.json", "lvis_v1_val": "lvis_v1_val.json",
                   "zhiyuan_objv2_train": "zhiyuan_objv2_train.json",
                   "zhiyuan_objv2_val": "zhiyuan_objv2_val.json",
                   "image_info_test-dev2017": "image_info_test-dev2017.json"}
    for f in tmp_path.glob("lvis*"):
        f.unlink()
    got = {s: p.name for s, p in coco_split_files(tmp_path).items()}
    assert got == {"train": "zhiyuan_objv2_train.json", "val": "zhiyuan_objv2_val.json",
                   "image_info_test-dev2017": "image_info_test-dev2017.json"}
    for f in tmp_path.glob("*"):
        f.unlink()
    for name in ("train", "val", "test", "lvis_v1_train"):
        (tmp_path / f"{name}.json").write_text("{}")
    got = {s: p.name for s, p in coco_split_files(tmp_path).items()}
    assert got == {"train": "train.json", "val": "val.json", "test": "test.json",
                   "lvis_v1_train": "lvis_v1_train.json"}


def _voc_year(root: Path, year: str, lists: dict[str, list[str]]) -> None:
    for ids in lists.values():
        for i in ids:
            write_image(root / "JPEGImages" / f"{i}.jpg", 48, 32)
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{i}.xml").write_text(
                f"<annotation><folder>VOC{year}</folder><filename>{i}.jpg</filename><size><width>48</width>"
                "<height>32</height><depth>3</depth></size><object><name>dog</name><difficult>0</difficult>"
                "<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>18</ymax></bndbox></object>"
                "</annotation>")
    main_dir = root / "ImageSets" / "Main"
    main_dir.mkdir(parents=True, exist_ok=True)
    for name, ids in lists.items():
        (main_dir / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    (main_dir / "dog_trainval.txt").write_text("".join(f"{i}  1\n" for i in lists.get("trainval", [])))


def test_vocdevkit_2007_and_2012(tmp_path, capsys):
    kit = tmp_path / "VOCdevkit"
    _voc_year(kit / "VOC2007", "2007", {"train": ["000005", "000007"], "val": ["000009"],
                                        "trainval": ["000005", "000007", "000009"],
                                        "test": ["000001", "000002"]})
    _voc_year(kit / "VOC2012", "2012", {"train": ["2008_000008"], "val": ["2008_000015"],
                                        "trainval": ["2008_000008", "2008_000015"]})
    for src in (kit, tmp_path):  # the devkit itself, or the folder holding it
        ds, defects, fmt = read_dataset(src)
        assert fmt == "voc" and defects == [] and ds.names == ["dog"]
        assert {k: sorted(r.path.stem for r in v) for k, v in ds.splits.items()} == {
            "train": ["000005", "000007", "000009", "2008_000008", "2008_000015"],
            "val": ["000001", "000002"],
        }
    capsys.readouterr()
    assert main(["data", "validate", str(kit)]) == 0
    out = capsys.readouterr().out
    assert "VOC2007 trainval -> train; VOC2007 test -> val; VOC2012 trainval -> train" in out
    assert main(["data", "convert", str(kit), str(tmp_path / "y"), "--to", "yolo"]) == 0
    assert len(list((tmp_path / "y" / "images" / "train").iterdir())) == 5
    # one year as downloaded: VOC2012 trainval only (no test) keeps its train / val lists
    ds, defects, _ = read_dataset(kit / "VOC2012")
    assert not defects and {k: len(v) for k, v in ds.splits.items()} == {"train": 1, "val": 1}

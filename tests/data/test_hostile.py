"""Hostile data sets: paths that escape the root, files that are not images, decompression bombs.

Every reader resolves each path (``..``, absolute names, symlinks) and refuses one that lands
outside the data set (``outside_root``) without opening it; ``convert`` never copies such a file;
an image above the pixel limit is ``too_large`` from its header and is never decoded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detopt.cli import main
from detopt.config import TrainConfig
from detopt.data.dataset import DetectionDataset
from detopt.data.formats import read_dataset
from detopt.data.image_io import DEFAULT_MAX_PIXELS, decode_image
from detopt.data.validate import validate_dataset
from detopt.errors import DetoptDataError, DetoptError
from detopt.structures.records import ImageRecord
from tests.data.conftest import write_huge_png, write_image
from tests.hyp import examples

SECRET = "TOP-SECRET-CREDENTIAL-1234"

# ------------------------------------------------------------------ an audit of every file opened
_opened: list[str] = []
_recording: list[bool] = [False]


def _audit(event: str, args: tuple) -> None:
    if _recording[0] and event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
        p = args[0]
        if isinstance(p, (str, bytes, os.PathLike)):
            _opened.append(os.fsdecode(p))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one records only while asked


def _opened_outside(call, root: Path, watched: Path) -> tuple[object, list[str]]:
    """Run ``call()``; return (its result or the DetoptError raised, every file or folder under
    ``watched`` that it opened or listed outside ``root``)."""
    _opened.clear()
    _recording[0] = True
    try:
        try:
            result = call()
        except DetoptError as e:
            result = e
    finally:
        _recording[0] = False
    root_r, watched_r = root.resolve(), watched.resolve()
    bad = []
    for p in _opened:
        try:
            r = Path(p).resolve()
        except (OSError, ValueError, RuntimeError):
            continue
        if (r == watched_r or watched_r in r.parents) and not (r == root_r or root_r in r.parents):
            bad.append(p)
    return result, bad


def _secret_dir(tmp_path: Path) -> Path:
    """Files a hostile data set points at: a credential and a real image, outside the data set."""
    d = tmp_path / "private"
    d.mkdir(exist_ok=True)
    (d / "hostname").write_text(SECRET)
    (d / "id_rsa.jpg").write_text(SECRET)
    write_image(d / "photo.jpg", 40, 30)
    return d


def _no_secret_in(folder: Path) -> None:
    """No file of ``folder`` holds (or links to) the planted secret."""
    for p in folder.rglob("*"):
        if p.is_file():  # follows symlinks: a link to the secret is caught too
            assert SECRET.encode() not in p.read_bytes(), p


# ------------------------------------------------------------------ COCO
def _hostile_coco(tmp_path: Path) -> tuple[Path, Path]:
    secret = _secret_dir(tmp_path)
    root = tmp_path / "ds"
    write_image(root / "images" / "good.jpg", 40, 30)
    write_image(root / "images" / "good2.jpg", 40, 30)
    (root / "images" / "link.jpg").symlink_to(secret / "photo.jpg")
    rel = os.path.relpath(secret / "hostname", root / "images")
    images = [
        {"id": 1, "file_name": "good.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": rel, "width": 40, "height": 30},  # ../../private/hostname
        {"id": 3, "file_name": str(secret / "id_rsa.jpg"), "width": 40, "height": 30},  # absolute
        {"id": 4, "file_name": "link.jpg", "width": 40, "height": 30},  # symlink out
        {"id": 5, "file_name": "good2.jpg", "width": 40, "height": 30},
    ]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in range(1, 6)]
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (root / "images" / "train.json").write_text(json.dumps(doc))
    return root / "images" / "train.json", secret


def test_coco_paths_outside_the_root_are_defects_never_opened(tmp_path):
    src, secret = _hostile_coco(tmp_path)
    report, outside = _opened_outside(lambda: validate_dataset(src), src.parent, tmp_path)
    assert outside == []
    by_kind = report.by_kind()
    assert by_kind == {"outside_root": 3}, report.lines()
    lines = [str(d) for d in report.defects]
    assert any("images[1] (id 2)" in s and str(secret / "hostname") in s for s in lines)
    assert any("images[2] (id 3)" in s and str(secret / "id_rsa.jpg") in s for s in lines)
    assert any("images[3] (id 4)" in s and str(secret / "photo.jpg") in s for s in lines)
    assert all(len(s.splitlines()) == 1 for s in lines)
    assert report.clean_images == 2


def test_convert_refuses_hostile_sets_and_copies_only_clean_images(tmp_path, capsys):
    src, _ = _hostile_coco(tmp_path)
    for to in ("yolo", "coco", "voc"):
        dst = tmp_path / f"out-{to}"
        assert main(["data", "convert", str(src), str(dst), "--to", to]) == 2
        err = capsys.readouterr().err
        assert "3 defects (3 outside_root)" in err and "--skip-invalid" in err
        assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(f".out-{to}")]
        for mode in ("--copy", "--link"):
            dst = tmp_path / f"out-{to}{mode}"
            assert main(["data", "convert", str(src), str(dst), "--to", to, "--skip-invalid", mode]) == 0
            out, err = capsys.readouterr()
            assert f"wrote {dst} ({to}): 2 images" in out
            assert "skipped 3 defective images (3 defects: 3 outside_root); 2 images kept" in err
            _no_secret_in(dst)
            names = sorted(p.name for p in dst.rglob("*") if p.suffix in (".jpg", ".png"))
            assert names == ["good.jpg", "good2.jpg"]


def test_convert_never_copies_a_file_that_does_not_decode(tmp_path, capsys):
    """The readers read headers only: a JPEG cut short after its header reads as an image. The
    writer decodes every image first, whatever the flags, and never copies one that fails."""
    import cv2
    import numpy as np

    from detopt.data.formats import write_dataset
    from detopt.structures.records import DatasetRecords

    root = tmp_path / "ds"
    write_image(root / "a.jpg", 40, 30)
    _, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8))
    (root / "b.jpg").write_bytes(buf.tobytes()[: len(buf) * 2 // 3])  # header intact, data cut
    images = [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(["a.jpg", "b.jpg"])]
    doc = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (root / "train.json").write_text(json.dumps(doc))
    ds, defects, _ = read_dataset(root / "train.json")
    assert not defects and ds.num_images == 2  # the header reads fine
    assert main(["data", "convert", str(root / "train.json"), str(tmp_path / "y"), "--to", "yolo"]) == 2
    assert "unreadable_image" in capsys.readouterr().err and not (tmp_path / "y").exists()
    args = ["data", "convert", str(root / "train.json"), str(tmp_path / "y"), "--to", "yolo"]
    assert main([*args, "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 defective images (1 defects: 1 unreadable_image); 1 images kept" in err
    assert sorted(p.name for p in (tmp_path / "y" / "images" / "train").iterdir()) == ["a.jpg"]
    # the library call too, with records made by hand (no reader involved)
    (root / "c.jpg").write_bytes(SECRET.encode())
    bad = DatasetRecords(["x"], {"train": [ds.splits["train"][0], ImageRecord(root / "c.jpg", 40, 30)]})
    with pytest.raises(DetoptDataError, match="unreadable_image"):
        write_dataset(bad, tmp_path / "z", "coco", mode="link")
    assert not (tmp_path / "z").exists()
    with pytest.warns(UserWarning, match="skipped 1 defective images"):
        write_dataset(bad, tmp_path / "z", "coco", mode="link", skip_invalid=True)
    _no_secret_in(tmp_path / "z")
    assert [p.name for p in (tmp_path / "z" / "images" / "train").iterdir()] == ["a.jpg"]


def test_allow_outside_root_accepts_deliberate_paths(tmp_path):
    src, secret = _hostile_coco(tmp_path)
    (secret / "hostname").unlink()
    (secret / "id_rsa.jpg").unlink()
    write_image(secret / "hostname", 40, 30, value=10)  # a real image now (no suffix needed)
    write_image(secret / "id_rsa.jpg", 40, 30, value=20)
    ds, defects, _ = read_dataset(src, allow_outside_root=True)
    assert defects == [] and ds.num_images == 5
    _, defects, _ = read_dataset(src)
    assert [d.kind for d in defects] == ["outside_root"] * 3


# ------------------------------------------------------------------ YOLO
def test_yolo_path_tricks_are_defects(tmp_path):
    secret = _secret_dir(tmp_path)
    root = tmp_path / "y"
    write_image(root / "images" / "train" / "a.jpg", 40, 30)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    write_image(root / "images" / "train" / "b.jpg", 40, 30)
    (root / "labels" / "train" / "b.txt").symlink_to(secret / "hostname")  # label file points out
    (root / "images" / "train" / "c.jpg").symlink_to(secret / "photo.jpg")  # image points out
    write_image(root / "images" / "val" / "v.jpg", 40, 30)
    (root / "val.txt").write_text(f"images/val/v.jpg\n../private/photo.jpg\n{secret / 'id_rsa.jpg'}\n")
    spec = f"path: .\ntrain: images/train\nval: val.txt\ntest: {secret}\nnames: [a]\n"
    (root / "data.yaml").write_text(spec)
    report, outside = _opened_outside(lambda: validate_dataset(root / "data.yaml"), root, tmp_path)
    assert outside == []
    got = sorted((d.kind, d.file.name, d.line) for d in report.defects)
    assert got == [
        ("outside_root", "b.txt", None),
        ("outside_root", "c.jpg", None),
        ("outside_root", "data.yaml", None),
        ("outside_root", "val.txt", 2),
        ("outside_root", "val.txt", 3),
    ], report.lines()
    assert SECRET not in "\n".join(report.lines())
    assert "'test':" in next(str(d) for d in report.defects if d.file.name == "data.yaml")
    # path: outside the yaml's folder
    (root / "data.yaml").write_text(f"path: {secret}\ntrain: .\nnames: [a]\n")
    _, defects, _ = read_dataset(root / "data.yaml")
    assert [(d.kind, d.file.name) for d in defects] == [("outside_root", "data.yaml")]
    assert "'path':" in str(defects[0])


# ------------------------------------------------------------------ VOC
def test_voc_path_tricks_are_defects(tmp_path):
    secret = _secret_dir(tmp_path)
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "a.jpg", 40, 30)
    (root / "Annotations").mkdir()
    xml = (
        "<annotation><filename>{}</filename><object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    (root / "Annotations" / "a.xml").write_text(xml.format("a.jpg"))
    (root / "Annotations" / "b.xml").write_text(xml.format("../../private/photo.jpg"))
    (root / "Annotations" / "c.xml").write_text(xml.format(secret / "hostname"))
    (secret / "evil.xml").write_text(xml.format("a.jpg"))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\n../../private/evil\n")
    report, outside = _opened_outside(lambda: validate_dataset(root), root, tmp_path)
    assert outside == []
    got = sorted((d.kind, d.file.name) for d in report.defects)
    assert got == [("outside_root", "b.xml"), ("outside_root", "c.xml"), ("outside_root", "evil.xml")]
    assert report.clean_images == 1


# ------------------------------------------------------------------ decompression bombs
def _rss_of_validate(src: Path) -> tuple[int, dict]:
    code = (
        "import json, resource, sys\n"
        "from detopt.data.validate import validate_dataset\n"
        "r = validate_dataset(sys.argv[1])\n"
        "print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, r.by_kind()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, check=True)
    kb, kinds = json.loads(out.stdout.strip().splitlines()[-1])
    return kb * 1024, kinds


@pytest.mark.slow
def test_a_decompression_bomb_is_too_large_and_never_decoded(tmp_path, capsys):
    bomb = tmp_path / "bomb"
    write_huge_png(bomb / "images" / "train" / "big.png", 20_000, 20_000)
    assert (bomb / "images" / "train" / "big.png").stat().st_size < 2_000_000
    (bomb / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    one = tmp_path / "one"
    write_image(one / "images" / "train" / "a.png", 64, 64)
    (one / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    rss_bomb, kinds = _rss_of_validate(bomb / "data.yaml")
    rss_one, clean = _rss_of_validate(one / "data.yaml")
    assert kinds == {"too_large": 1} and clean == {}
    assert rss_bomb - rss_one < 100 * 2**20, (rss_bomb, rss_one)
    assert main(["data", "validate", str(bomb / "data.yaml")]) == 1
    out = capsys.readouterr().out
    assert "big.png: too_large: 20000x20000 = 400.0 megapixels, more than the limit of 89.5" in out


def test_max_pixels_sets_the_limit_everywhere(tmp_path, capsys):
    root = tmp_path / "y"
    write_image(root / "images" / "train" / "a.png", 40, 30)
    write_image(root / "images" / "train" / "b.png", 20, 10)
    (root / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    assert main(["data", "validate", str(root), "--max-pixels", "1000"]) == 1
    assert "a.png: too_large: 40x30" in capsys.readouterr().out
    assert main(["data", "validate", str(root), "--max-pixels", "1200"]) == 0
    assert main(["data", "stats", str(root), "--max-pixels", "1000"]) == 2
    assert "too_large" in capsys.readouterr().err
    ds, defects, _ = read_dataset(root / "data.yaml", max_pixels=None)
    assert not defects and ds.num_images == 2
    # the loader checks the header before decoding, whatever the records say
    rec = ImageRecord(root / "images" / "train" / "a.png", 40, 30)
    with pytest.raises(DetoptDataError, match="too_large"):
        DetectionDataset([rec], imgsz=64, max_pixels=1000)[0]
    with pytest.raises(DetoptDataError, match="too_large"):
        decode_image(rec.path, max_pixels=1199)
    assert decode_image(rec.path, max_pixels=1200).shape == (30, 40, 3)
    assert TrainConfig(data="x").max_pixels == DEFAULT_MAX_PIXELS


# ------------------------------------------------------------------ property tests
_TRICKS = st.sampled_from([
    "good.jpg", "../private/photo.jpg", "../../private/hostname", "{secret}/hostname", "link.jpg",
    "./good.jpg", "sub/../../private/photo.jpg", "", "\x00", "a" * 5000, "ñü/画像.jpg", "\n\t\r",
    "good.jpg/..", "/", "..", "~/.ssh/id_rsa", "C:\\windows\\x.jpg", "%2e%2e/private",
])
_NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True), st.none(),
    st.text(max_size=5), st.just([[[[1]]]]),
)


def _hostile_root(tmp_path: Path) -> tuple[Path, Path]:
    secret = _secret_dir(tmp_path)
    root = tmp_path / "ds"
    if not root.exists():
        write_image(root / "good.jpg", 40, 30)
        (root / "link.jpg").symlink_to(secret / "photo.jpg")
    return root, secret


def _check_property(src: Path, root: Path, tmp_path: Path) -> None:
    first, outside = _opened_outside(lambda: validate_dataset(src), root, tmp_path)
    assert outside == []
    again, _ = _opened_outside(lambda: validate_dataset(src), root, tmp_path)
    if isinstance(first, DetoptError):
        assert type(again) is type(first) and str(again) == str(first)
    else:
        assert [str(d) for d in first.defects] == [str(d) for d in again.defects]
        assert SECRET not in "\n".join(first.lines())


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(_TRICKS, min_size=1, max_size=5),
    nums=st.lists(_NUMBERS, min_size=6, max_size=6),
    cat_name=st.text(max_size=30),
    nest=st.integers(0, 3),
)
def test_hostile_coco_property(tmp_path_factory, names, nums, cat_name, nest):
    tmp = tmp_path_factory.mktemp("hc")
    root, secret = _hostile_root(tmp)
    images = [
        {"id": i, "file_name": n.replace("{secret}", str(secret)), "width": nums[0], "height": nums[1]}
        for i, n in enumerate(names)
    ]
    bbox: object = nums[2:6]
    for _ in range(nest):
        bbox = [bbox]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": bbox} for i in range(len(names))]
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": cat_name}]}
    (root / "train.json").write_text(json.dumps(doc))
    _check_property(root / "train.json", root, tmp)


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(_TRICKS, min_size=1, max_size=4),
    label=st.text(max_size=60),
    path_key=st.sampled_from([".", "..", "{secret}", "", "sub/../.."]),
)
def test_hostile_yolo_property(tmp_path_factory, entries, label, path_key):
    tmp = tmp_path_factory.mktemp("hy")
    root, secret = _hostile_root(tmp)
    (root / "list.txt").write_text("\n".join(e.replace("{secret}", str(secret)) for e in entries))
    (root / "good.txt").write_text(label)  # good.jpg's label (no images/ folder: next to it)
    key = path_key.replace("{secret}", str(secret))
    spec = {"path": key, "train": "list.txt", "val": ".", "names": ["a"]}
    (root / "data.yaml").write_text(json.dumps(spec))  # JSON is YAML
    _check_property(root / "data.yaml", root, tmp)


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    filename=_TRICKS,
    ids=st.lists(_TRICKS, min_size=1, max_size=3),
    size=st.lists(st.sampled_from(["40", "-1", "1e400", "nan", "", "99999999999999999999", "x"]), min_size=2,
                  max_size=2),
    name=st.text(max_size=20),
)
def test_hostile_voc_property(tmp_path_factory, filename, ids, size, name):
    from xml.sax.saxutils import escape

    tmp = tmp_path_factory.mktemp("hv")
    secret = _secret_dir(tmp)
    root = tmp / "voc"
    write_image(root / "JPEGImages" / "good.jpg", 40, 30)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    clean = "".join(c for c in name if c.isprintable())
    xml = (f"<annotation><filename>{escape(filename.replace('{secret}', str(secret)))}</filename>"
           f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
           f"<object><name>{escape(clean)}</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax>"
           "<ymax>9</ymax></bndbox></object></annotation>")
    for i in ids:
        stem = i.replace("{secret}", str(secret)).replace("\n", "").replace("\r", "") or "empty"
        try:
            (root / "Annotations" / f"{stem}.xml").write_text(xml)
        except (OSError, ValueError):
            pass
    (root / "ImageSets" / "Main" / "train.txt").write_text(
        "\n".join(i.replace("{secret}", str(secret)) for i in ids)
    )
    _check_property(root, root, tmp)


def test_a_million_empty_annotations_and_deep_nesting(tmp_path):
    root, _ = _hostile_root(tmp_path)
    doc = {"images": [{"id": 1, "file_name": "good.jpg"}], "annotations": [{}] * 1_000_000,
           "categories": [{"id": 1, "name": "a"}]}
    (root / "many.json").write_text(json.dumps(doc))
    r = validate_dataset(root / "many.json")
    assert r.by_kind() == {"missing_image": 1_000_000} and r.clean_images == 1
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    r = validate_dataset(root / "deep.json")
    assert [d.kind for d in r.defects] == ["malformed_file"]
    (root / "data.yaml").write_text("names: " + "[" * 10_000 + "]" * 10_000 + "\ntrain: .\n")
    with pytest.raises(DetoptDataError, match="malformed_file"):
        read_dataset(root / "data.yaml")


@settings(max_examples=examples(150), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["a", "b", "in", "out", "..", ".", "x.jpg", "loop"]), min_size=1,
                      max_size=7),
       absolute=st.booleans())
def test_root_guard_agrees_with_the_system(tmp_path_factory, parts, absolute):
    """The cached guard decides as ``os.path.realpath`` does, ``link/..`` included (a lexical
    ``..`` fold would say inside where the system goes outside)."""
    from detopt.data.defects import RootGuard

    tmp = tmp_path_factory.getbasetemp() / "guard-tree"
    root = tmp / "root"
    if not root.exists():
        (root / "a" / "b").mkdir(parents=True)
        (tmp / "elsewhere" / "deep").mkdir(parents=True)
        (root / "a" / "in").symlink_to(root / "a" / "b")
        (root / "a" / "out").symlink_to(tmp / "elsewhere" / "deep")
        (root / "out").symlink_to(tmp / "elsewhere" / "deep")
        (root / "loop").symlink_to(root / "loop")
    p = (root if absolute else Path(os.path.relpath(root))) / Path(*parts)
    guard = RootGuard(root)
    real = os.path.realpath(p)
    expected = real == os.path.realpath(root) or real.startswith(os.path.realpath(root) + os.sep)
    assert (guard.why(p) is None) == expected, (p, real)
    assert (guard.why(p) is None) == (guard.why(p) is None)  # the cache changes nothing


def test_pfm_is_sized_from_its_own_header(tmp_path):
    """PIL does not read PFM (an IMAGE_SUFFIXES format): its header is parsed by detopt."""
    import cv2
    import numpy as np

    from detopt.data.image_io import check_image, read_image_size

    p = tmp_path / "f.pfm"
    assert cv2.imwrite(str(p), np.random.default_rng(0).random((20, 30, 3)).astype(np.float32))
    assert read_image_size(p) == (30, 20)
    assert check_image(p, 30, 20) == ((30, 20), [])
    assert check_image(p, max_pixels=599)[1][0].kind == "too_large"
    (tmp_path / "g.pfm").write_bytes(b"PF\nx y\n-1\n")
    assert check_image(tmp_path / "g.pfm")[1][0].kind == "unreadable_image"

"""The embedded synthetic data set: deterministic, varied, labels that match the pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detopt.data.formats import read_dataset
from detopt.data.synth import CLASSES, SceneGenerator, write_synthetic
from detopt.data.validate import validate_dataset
from tests.data.test_formats import assert_same_objects


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed_and_independent_of_workers(tmp_path):
    write_synthetic(tmp_path / "a", train=5, val=2, imgsz=96, seed=11)
    write_synthetic(tmp_path / "b", train=5, val=2, imgsz=96, seed=11, workers=2)
    write_synthetic(tmp_path / "c", train=5, val=2, imgsz=96, seed=12)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


@pytest.fixture(scope="module")
def scenes():
    gen = SceneGenerator(320, seed=0)
    return [gen.render("train", i) for i in range(120)]


def test_classes_sizes_occlusion(scenes):
    objs = [o for _, oo in scenes for o in oo]
    labels = np.array([o.label for o in objs])
    assert len(CLASSES) >= 6 and set(labels) == set(range(len(CLASSES)))
    counts = np.bincount(labels)
    assert counts.max() / counts.min() < 2.0  # balanced on purpose; imbalance is a separate knob
    b = np.array([o.box for o in objs])
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    assert side.min() <= 8 and side.max() >= 0.45 * 320
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    assert (area < 32**2).mean() > 0.4  # many small objects
    n_overlap = 0
    for _, oo in scenes:
        bb = np.array([o.box for o in oo]).reshape(-1, 4)
        ix = np.minimum(bb[:, None, 2], bb[None, :, 2]) - np.maximum(bb[:, None, 0], bb[None, :, 0])
        iy = np.minimum(bb[:, None, 3], bb[None, :, 3]) - np.maximum(bb[:, None, 1], bb[None, :, 1])
        n_overlap += int(((ix > 0) & (iy > 0)).sum() - len(bb)) // 2
    assert n_overlap > 50
    assert any(
        len(oo) == 0 for _, oo in [*scenes, *[SceneGenerator(320, 0).render("val", i) for i in range(60)]]
    )


def test_each_box_is_the_bounding_box_of_its_visible_pixels(monkeypatch):
    """Scenes painted with one unique flat colour per object (same shapes, occlusion and paint
    order; no texture, lighting or noise): each object's box is exactly the bounding box of the
    pixels of its colour, and its area their count."""
    import detopt.data.synth as synth

    painted: dict[int, tuple[int, int, int]] = {}
    count = [0]
    real_pair, real_paint = synth._colour_pair, synth._paint

    def unique_pair(rng):
        real_pair(rng)  # the same random draws as a real scene
        count[0] += 1
        k = count[0]
        c = np.array([k % 256, (k // 256) % 256, 77], np.float32)  # the background is (0, 0, 0)
        return c, c.copy()

    def recording_paint(img, ids, mask, ox, oy, kind, c1, c2, *rest):
        new_id = rest[-2]
        if new_id:
            painted[new_id] = tuple(int(v) for v in c1)
        real_paint(img, ids, mask, ox, oy, 0, c1, c2, *rest)  # flat

    monkeypatch.setattr(synth, "_colour_pair", unique_pair)
    monkeypatch.setattr(synth, "_paint", recording_paint)
    gen = SceneGenerator(160, 5)
    gen.backgrounds = [np.zeros((320, 320, 3), np.uint8)]
    gen._finish = lambda img, shift, rng: img
    n_objects = n_not_rectangles = 0
    for i in range(40):
        painted.clear()
        img, objs = gen.render("train", i)
        assert len(objs) == len(painted)
        for j, o in enumerate(objs, 1):
            ys, xs = np.nonzero((img == np.array(painted[j], np.uint8)).all(-1))
            assert o.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), (i, j)
            assert o.area == len(xs)
            n_objects += 1
            n_not_rectangles += o.area < (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])
    assert n_objects > 150 and n_not_rectangles > 20


def test_boxes_and_masks_are_the_visible_pixels(scenes):
    for img, objs in scenes[:30]:
        assert img.shape == (320, 320, 3) and img.dtype == np.uint8
        for o in objs:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 320
            assert 1 <= o.area <= (x2 - x1) * (y2 - y1)
            pts = np.concatenate([np.asarray(p).reshape(-1, 2) for p in o.polygons]) if o.polygons else None
            if pts is not None:  # contour points are pixel centres inside the box
                assert pts[:, 0].min() >= x1 and pts[:, 0].max() <= x2 - 1
                assert pts[:, 1].min() >= y1 and pts[:, 1].max() <= y2 - 1


def test_written_set_is_clean_and_coco_matches_yolo(synth_dir):
    report = validate_dataset(synth_dir)
    assert report.ok and report.images == 50
    yolo, _, _ = read_dataset(synth_dir / "data.yaml")
    coco, _, _ = read_dataset(synth_dir / "annotations")
    assert_same_objects(yolo, coco, tol=1e-4)
    assert yolo.names == list(CLASSES)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco_masks_decode_with_pycocotools(synth_dir):
    mask_utils = pytest.importorskip("pycocotools.mask")
    d = json.loads((synth_dir / "annotations" / "train.json").read_text())
    checked = 0
    for a in d["annotations"]:
        if not a["segmentation"]:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], 128, 128))
        m = mask_utils.decode(rle)
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        if len(xs):
            assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
            checked += 1
    assert checked > 100

"""Letterbox (checked by painting boxes and finding the painted pixels again), Dataset, collate, loader."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.data.dataset import DetectionDataset, collate_detections, dataset_from_source, make_loader
from detopt.data.formats import read_dataset
from detopt.data.transforms import letterbox, letterbox_meta, unletterbox_boxes
from detopt.errors import DetoptDataError
from detopt.structures.records import ImageRecord
from tests.hyp import examples


def _painted_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(img[..., 0] > 127)
    if not len(xs):
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@settings(max_examples=examples(120), deadline=None)
@given(
    h=st.integers(8, 400),
    w=st.integers(8, 400),
    size=st.sampled_from([64, 100, 160, 320]),
    data=st.data(),
    scaleup=st.booleans(),
)
def test_letterbox_maps_boxes_onto_the_painted_pixels(h, w, size, data, scaleup):
    x1 = data.draw(st.integers(0, w - 1))
    y1 = data.draw(st.integers(0, h - 1))
    x2 = data.draw(st.integers(x1 + 1, w))
    y2 = data.draw(st.integers(y1 + 1, h))
    img = np.zeros((h, w, 3), np.uint8)
    img[y1:y2, x1:x2] = 255
    out, boxes, meta = letterbox(
        img, np.array([[x1, y1, x2, y2]], np.float32), size, pad_value=0, scaleup=scaleup
    )
    assert out.shape == (size, size, 3)
    b = boxes[0]
    # aspect kept: both axes scale alike up to the rounding of the resized size
    assert abs(meta.scale_x - meta.scale_y) <= 1.0 / min(h, w) + 1e-9
    if min(b[2] - b[0], b[3] - b[1]) < 2:
        return  # a box resized below two pixels is blended away by the interpolation
    found = _painted_box(out)
    assert found is not None
    np.testing.assert_allclose(found, b, atol=1.0)
    # the padding stays padding
    assert out[: meta.pad_y].max(initial=0) == 0 and out[meta.pad_y + meta.resized_h :].max(initial=0) == 0
    np.testing.assert_allclose(unletterbox_boxes(boxes, meta), [[x1, y1, x2, y2]], atol=1e-3)


def test_letterbox_meta_exact_cases():
    m = letterbox_meta(100, 200, 320)
    assert (m.resized_w, m.resized_h, m.pad_x, m.pad_y) == (320, 160, 0, 80) and m.scale_x == m.scale_y == 1.6
    m = letterbox_meta(50, 40, 320, scaleup=False)
    assert (m.scale_x, m.resized_w, m.pad_x, m.pad_y) == (1.0, 40, 140, 135)
    with pytest.raises(ValueError, match="positive"):
        letterbox_meta(0, 10, 32)


def test_dataset_items_rgb_and_cache(tmp_path):
    import cv2

    img = np.zeros((60, 120, 3), np.uint8)
    img[10:30, 20:60] = (0, 0, 255)  # red in BGR
    p = tmp_path / "r.png"
    cv2.imwrite(str(p), img)
    recs = [ImageRecord(p, 120, 60, [[20, 10, 60, 30]], [1], crowd=[True]), ImageRecord(p, 120, 60)]
    ds = DetectionDataset(recs, imgsz=64)
    it = ds[0]
    assert it["image"].shape == (3, 64, 64) and it["image"].dtype == torch.uint8
    x1, y1, x2, y2 = it["boxes"][0].round().int().tolist()
    assert (x1, y1, x2, y2) == (11, 21, 32, 32)  # scale 64/120, pad y 16
    inside = it["image"][:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]
    assert inside[0].min() > 200 and inside[2].max() < 50  # channel 0 is red: RGB
    assert it["crowd"].tolist() == [True] and it["labels"].tolist() == [1]
    cached = DetectionDataset(recs, imgsz=64, cache=True)
    assert torch.equal(cached[0]["image"], it["image"]) and torch.equal(cached[0]["boxes"], it["boxes"])
    batch = collate_detections([ds[0], ds[1], ds[0]])
    assert batch["images"].shape == (3, 3, 64, 64)
    assert batch["counts"].tolist() == [1, 0, 1] and batch["batch_index"].tolist() == [0, 2]
    assert batch["boxes"].shape == (2, 4)


def test_decode_failure_names_the_file(tmp_path):
    p = tmp_path / "bad.jpg"
    p.write_bytes(b"nope")
    with pytest.raises(DetoptDataError, match=r"bad\.jpg: not a decodable image"):
        DetectionDataset([ImageRecord(p, 10, 10)], imgsz=32)[0]


def test_loader_with_workers_sees_every_image_once(synth_dir):
    ds, names = dataset_from_source(synth_dir / "data.yaml", "val", imgsz=96)
    assert len(names) == 8 and len(ds) == 10
    seen = []
    for batch in make_loader(ds, batch_size=4, shuffle=True, workers=2, seed=1):
        assert batch["images"].shape[1:] == (3, 96, 96)
        assert int(batch["counts"].sum()) == len(batch["boxes"]) == len(batch["batch_index"])
        seen += batch["indices"]
    assert sorted(seen) == list(range(10))
    order = [b["indices"] for b in make_loader(ds, batch_size=4, shuffle=True, seed=1)]
    assert order == [b["indices"] for b in make_loader(ds, batch_size=4, shuffle=True, seed=1)]


def test_defective_items_stop_training_unless_skipped(synth_dir, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(synth_dir, root)
    victim = sorted((root / "images" / "val").iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])  # the header reads; the pixels are cut
    with pytest.raises(DetoptDataError, match=rf"{victim.name}: unreadable_image: truncated JPEG"):
        dataset_from_source(root / "data.yaml", "val", imgsz=64)
    with pytest.warns(UserWarning, match="skipped 1 defective images"):
        ds, _ = dataset_from_source(root / "data.yaml", "val", imgsz=64, skip_invalid=True)
    assert len(ds) == 9 and ds.skipped == {"unreadable_image": 1}
    label = root / "labels" / "train" / "train_000002.txt"
    label.write_text(label.read_text() + "9 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DetoptDataError, match=r"train_000002\.txt:.*class_out_of_range"):
        dataset_from_source(root / "data.yaml", "train", imgsz=64)
    with pytest.raises(DetoptDataError, match="no split 'test'"):
        dataset_from_source(synth_dir / "data.yaml", "test")
    assert read_dataset(synth_dir / "data.yaml")[0].num_images == 50


def test_dataset_with_augmentation_pipeline_is_reproducible(synth_dir):
    from detopt.data.formats import load_dataset
    from detopt.data.transforms.pipeline import default_pipeline

    recs = load_dataset(synth_dir / "annotations").splits["train"]
    assert recs[0].masks is not None  # COCO carries the polygons copy-paste needs
    ds = DetectionDataset(recs, imgsz=96, pipeline=default_pipeline(96, close_mosaic=1), seed=3)
    a, b = ds[5], ds[5]
    assert a["image"].shape == (3, 96, 96) and torch.equal(a["image"], b["image"])
    assert torch.equal(a["boxes"], b["boxes"]) and len(a["crowd"]) == len(a["boxes"])
    ds.set_epoch(1, 3)
    c = ds[5]
    assert not torch.equal(a["image"], c["image"])
    assert (c["boxes"] >= 0).all() and (c["boxes"] <= 96).all()
    ds.set_epoch(2, 3)  # close mosaic: the last epoch sees only image 5 (letterboxed, jittered)
    assert not ds.pipeline.mixing_on
    d = ds[5]
    assert set(d["labels"].tolist()) <= set(recs[5].labels.tolist())


def test_augmented_samples_leave_crowd_regions_out(synth_dir):
    from detopt.data.formats import load_dataset
    from detopt.data.transforms.pipeline import Compose

    recs = load_dataset(synth_dir / "annotations").splits["train"]
    r = recs[0]
    r.crowd = np.zeros(len(r), bool)
    r.crowd[0] = True
    ds = DetectionDataset([r], imgsz=96, pipeline=Compose([], 96))
    s = ds.raw_sample(0)
    assert len(s.labels) == len(r) - 1 and len(s.masks) == len(r) - 1
    assert len(ds[0]["boxes"]) == len(r) - 1

"""Fixtures: a hand-written tiny COCO set with edge cases (synth_dir lives in tests/conftest.py)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest


def write_image(path: Path, w: int, h: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", np.full((h, w, 3), value, np.uint8))
    assert ok
    buf.tofile(path)
    return path


def write_huge_png(path: Path, w: int, h: int) -> Path:
    """A valid grey PNG of ``w x h`` black pixels, streamed (a 20 000 x 20 000 image is ~0.4 MB on
    disk and 400 MB decoded: a decompression bomb), without ever holding the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)  # filter byte + pixels
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def tiny_coco(tmp_path) -> Path:
    """Edge cases: an empty image, boxes touching every border, unicode and spaces in file names,
    fractional coordinates, a crowd box, non-contiguous category ids, a one-pixel box."""
    root = tmp_path / "tiny"
    files = [
        ("images/plain.jpg", 64, 48),
        ("images/ünï cödé 画像.png", 50, 70),
        ("images/empty.png", 32, 32),
        ("images/sub dir/edge.png", 40, 30),
    ]
    for name, w, h in files:
        write_image(root / name, w, h)
    images = [{"id": i + 10, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(files)]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 5, "bbox": [0, 0, 64, 48], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 9, "bbox": [3.25, 4.5, 10.125, 7.75], "iscrowd": 0},
        {"id": 3, "image_id": 10, "category_id": 2, "bbox": [20, 20, 30, 20], "iscrowd": 1},
        {"id": 4, "image_id": 11, "category_id": 9, "bbox": [49, 69, 1, 1], "iscrowd": 0},
        {"id": 5, "image_id": 11, "category_id": 2, "bbox": [0.001, 12.5, 49.999, 0.5], "iscrowd": 0},
        {"id": 6, "image_id": 13, "category_id": 5, "bbox": [0, 0, 40, 1], "iscrowd": 0},
        {"id": 7, "image_id": 13, "category_id": 5, "bbox": [39, 0, 1, 30], "iscrowd": 0},
        {"id": 8, "image_id": 13, "category_id": 9, "bbox": [0, 29, 40, 1], "iscrowd": 0},
    ]
    cats = [{"id": 9, "name": "Person / 人"}, {"id": 2, "name": "traffic light"}, {"id": 5, "name": "dög"}]
    (root / "train.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}, ensure_ascii=False),
        encoding="utf-8",
    )
    return root / "train.json"

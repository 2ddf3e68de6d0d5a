import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detopt.data.transforms import (
    BoxFilter,
    Sample,
    affine_matrix,
    hflip,
    random_affine,
    random_resized_crop,
    vflip,
    warp,
)
from tests.data.transforms.scenes import check_boxes, make_scene
from tests.hyp import examples

NEAREST = cv2.INTER_NEAREST


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("flip", [hflip, vflip])
def test_flips_exact(flip, masks):
    s = make_scene(np.random.default_rng(0), masks=masks)
    out = flip(s)
    check_boxes(s, out, tol=0.0 if not masks else 1.0)
    assert np.array_equal(flip(out).image, s.image)
    np.testing.assert_allclose(flip(out).boxes, s.boxes)


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        {"degrees": 0.0, "scale": 1.0},
        {"degrees": 30.0, "scale": 1.0},
        {"degrees": -75.0, "scale": 0.7},
        {"degrees": 10.0, "scale": 1.6, "translate": (0.2, -0.1)},
        {"degrees": 0.0, "scale": 1.0, "shear": (12.0, -8.0)},
        {"degrees": 5.0, "scale": 0.9, "perspective": (4e-4, -3e-4)},
    ],
)
def test_warp_boxes_match_pixels(kw, masks):
    s = make_scene(np.random.default_rng(1), masks=masks)
    m = affine_matrix(s.size, (150, 180), **kw)
    out = warp(s, m, (150, 180), interpolation=NEAREST)
    rotated = bool(kw.get("degrees") or kw.get("shear") or kw.get("perspective"))
    # The painted truth is itself sampled: mask polygons are rasterized (±0.5 px of the outline),
    # then resampled by the warp, magnified by the scale. Without rotation 1 px holds; rotated
    # objects get 2 px without masks (the bar) and 1.5 px with masks.
    tol = (1.5 if masks else 2.0) if rotated else 1.0
    check_boxes(s, out, tol=tol * max(1.0, kw["scale"]), area_scale=abs(np.linalg.det(m[:2, :2])))


def test_identity_warp_is_exact():
    s = make_scene(np.random.default_rng(2))
    out = warp(s, np.eye(3), s.size, interpolation=NEAREST)
    assert np.array_equal(out.image, s.image)
    np.testing.assert_array_equal(out.boxes, s.boxes)


def test_masks_give_tighter_boxes_under_rotation():
    s = make_scene(np.random.default_rng(3), masks=True)
    m = affine_matrix(s.size, s.size, degrees=45)
    with_masks = warp(s, m, s.size, interpolation=NEAREST)
    without = warp(Sample(s.image, s.boxes, s.labels), m, s.size, interpolation=NEAREST)
    common = np.intersect1d(with_masks.labels, without.labels)
    a = with_masks.boxes[np.searchsorted(with_masks.labels, common)]
    b = without.boxes[np.searchsorted(without.labels, common)]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    assert (area(a) <= area(b) + 1e-3).all() and (area(a) < area(b)).any()


def test_box_filter_drops_mostly_hidden_and_small():
    s = make_scene(np.random.default_rng(4))
    m = affine_matrix(s.size, s.size, translate=(0.45, 0.0))  # push most objects off the right side
    f = BoxFilter(min_size=2, min_visible=0.5)
    out = warp(s, m, s.size, box_filter=f, interpolation=NEAREST)
    assert len(out.labels) < len(s.labels)
    check_boxes(s, out, tol=1.0, min_visible=0.5, area_scale=1.0)
    tiny = warp(s, affine_matrix(s.size, s.size, scale=0.02), s.size, interpolation=NEAREST)
    assert len(tiny.labels) == 0


def test_random_resized_crop():
    rng = np.random.default_rng(5)
    s = make_scene(rng, masks=True)
    dropped = 0
    for k in range(40):  # small crops cut objects: the dropped ones must be mostly hidden
        scale = (0.25, 1.0) if k < 10 else (0.05, 0.3)
        out = random_resized_crop(s, rng, (96, 96), scale=scale, interpolation=NEAREST)
        assert out.size == (96, 96)
        dropped += check_boxes(s, out, tol=1.5)
    assert dropped > 0


transforms_st = st.lists(st.sampled_from(["hflip", "vflip", "affine", "crop"]), min_size=1, max_size=4)


@settings(max_examples=examples(40), deadline=None)
@given(seed=st.integers(0, 2**31), ops=transforms_st, masks=st.booleans())
def test_random_compositions_keep_boxes_right(seed, ops, masks):
    rng = np.random.default_rng(seed)
    s = make_scene(rng, masks=masks)
    cur = s
    rotated = False
    for op in ops:
        if op == "hflip":
            cur = hflip(cur)
        elif op == "vflip":
            cur = vflip(cur)
        elif op == "affine":
            cur = random_affine(
                cur, rng, degrees=30, translate=0.1, scale=0.3, shear=5, interpolation=NEAREST
            )
            rotated = True
        else:
            cur = random_resized_crop(cur, rng, (140, 170), scale=(0.5, 1.0), interpolation=NEAREST)
    # the bars of test_warp_boxes_match_pixels, times the largest magnification here (a crop of
    # half the area resized back: up to 1.7), plus a pixel per further resampling
    warps = sum(o in ("affine", "crop") for o in ops)
    base = ((1.5 if masks else 2.0) if rotated else 1.0) * (1.7 if "crop" in ops else 1.3)
    tol = base + max(0, warps - 1)
    check_boxes(s, cur, tol=tol)
    assert not math.isnan(float(cur.boxes.sum()))

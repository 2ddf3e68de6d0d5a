import numpy as np
import pytest

from detopt.data.transforms import hflip
from detopt.data.transforms.albumentations_adapter import Albumentations
from detopt.data.transforms.pipeline import HSV, Compose
from detopt.errors import DetoptInputError
from tests.data.transforms.scenes import check_boxes, make_scene

A = pytest.importorskip("albumentations")


def test_albumentations_compose_as_a_transform():
    s = make_scene(np.random.default_rng(0), masks=True)
    aug = A.Compose(
        [A.HorizontalFlip(p=1.0)], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"])
    )
    out = Albumentations(aug)(s, np.random.default_rng(0))
    ours = hflip(s)
    assert np.array_equal(out.image, ours.image) and out.masks is None
    np.testing.assert_allclose(out.boxes, ours.boxes, atol=1e-4)
    check_boxes(s, out, tol=1e-3)
    piped = Compose([Albumentations(aug), HSV(p=0.0)], 200)(s, np.random.default_rng(0))
    assert piped.size == (200, 200)


def test_albumentations_needs_voc_bbox_params():
    with pytest.raises(DetoptInputError, match="bbox_params"):
        Albumentations(A.Compose([A.HorizontalFlip()]))
    bad = A.Compose([A.HorizontalFlip()], bbox_params=A.BboxParams(format="coco", label_fields=["labels"]))
    with pytest.raises(DetoptInputError, match="pascal_voc"):
        Albumentations(bad)

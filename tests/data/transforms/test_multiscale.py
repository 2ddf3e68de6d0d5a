import numpy as np
import pytest
import torch

from detopt.data.transforms.multiscale import random_train_size, resize_batch
from detopt.errors import DetoptInputError


def test_sizes_are_stride_multiples_in_range():
    rng = np.random.default_rng(0)
    sizes = {random_train_size(rng, 320, 32) for _ in range(500)}
    assert sizes == set(range(160, 481, 32))
    assert random_train_size(rng, 40, 32, (0.1, 0.2)) == 32
    with pytest.raises(DetoptInputError):
        random_train_size(rng, 320, 0)


@pytest.mark.parametrize("size", [64, 96, 160])
def test_boxes_follow_the_pixels(size):
    img = torch.zeros(2, 3, 128, 128, dtype=torch.uint8)
    img[0, :, 32:80, 16:48] = 255  # box [16, 32, 48, 80]
    boxes = torch.tensor([[16.0, 32, 48, 80]])
    out, b = resize_batch(img, boxes, size)
    assert out.shape == (2, 3, size, size) and out.dtype == torch.float32
    ys, xs = torch.nonzero(out[0, 0] > 127.5, as_tuple=True)
    pixels = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    torch.testing.assert_close(b[0], boxes[0] * size / 128)
    assert (b[0] - pixels).abs().max() <= 1.0

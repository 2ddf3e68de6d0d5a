from pathlib import Path

import pytest

import tests.hyp  # noqa: F401 - loads the hypothesis profile (ci: derandomized) before any test
from detopt.data.synth import write_synthetic


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic data set (YOLO + COCO), shared by every test package."""
    out = tmp_path_factory.mktemp("synth") / "shapes"
    write_synthetic(out, train=40, val=10, imgsz=128, seed=3)
    return out

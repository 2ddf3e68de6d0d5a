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


@pytest.fixture(scope="session")
def tiny_run(synth_dir, tmp_path_factory) -> Path:
    """A yolo-p trained 4 epochs at 128 px on :func:`synth_dir` (its run folder; ``last.pt``),
    shared by the export and compression tests."""
    from detopt.config import TrainConfig
    from detopt.engine import Trainer

    out = tmp_path_factory.mktemp("tiny") / "run"
    cfg = TrainConfig(data=str(synth_dir / "data.yaml"), out=str(out), model="yolo-p", imgsz=128, epochs=4,
                      batch=8, workers=0, val=False, progress=False, seed=0)
    Trainer(cfg).train()
    return out

import cv2
import numpy as np

from detopt.cli import main


def test_data_preview_writes_grid(synth_dir, tmp_path, capsys):
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(
        "size: 96\ntransforms:\n  - {name: mosaic}\n  - {name: copy_paste, p: 1.0}\n"
        "  - {name: affine, degrees: 10}\n  - {name: hsv}\n  - {name: hflip}\n"
    )
    out = tmp_path / "prev"
    assert (
        main(
            [
                "data",
                "preview",
                str(synth_dir / "annotations"),
                "--pipeline",
                str(cfg),
                "--out",
                str(out),
                "-n",
                "5",
            ]
        )
        == 0
    )
    img = cv2.imread(str(out / "preview.png"))
    assert img.shape == (2 * 98, 3 * 98, 3)  # 5 tiles of 96 px in a 3-column grid, 2 px gutters
    assert (img[-98:, -98:] == 255).all()  # the sixth cell stays empty
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 100
    assert "5 samples" in capsys.readouterr().out


def test_data_preview_bad_pipeline_is_a_clear_error(synth_dir, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("size: 96\ntransforms:\n  - {name: mosiac}\n")
    assert main(["data", "preview", str(synth_dir), "--pipeline", str(cfg), "--out", str(tmp_path)]) == 2
    assert "unknown transform 'mosiac'" in capsys.readouterr().err

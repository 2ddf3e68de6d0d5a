import re
import subprocess
import sys

import pytest

from detopt.cli import main

# every command that works, with a test of its own (tests/): the help must list exactly these
COMMANDS = {"info", "eval", "data", "anchors", "train", "val", "predict", "export", "quantize", "prune",
            "tune", "demo"}
DATA_COMMANDS = {"synth", "convert", "validate", "stats", "split", "preview"}


def _listed(help_text: str) -> set[str]:
    """Sub-command names of an argparse help page (the indented ``name   help`` rows)."""
    return set(re.findall(r"^    ([a-z]+)\s{2,}\S", help_text, flags=re.M))


def test_help_lists_only_working_commands(capsys):
    assert main([]) == 0
    assert _listed(capsys.readouterr().out) == COMMANDS
    with pytest.raises(SystemExit) as e:
        main(["data", "--help"])
    assert e.value.code == 0
    assert _listed(capsys.readouterr().out) == DATA_COMMANDS


ALL = [[c] for c in sorted(COMMANDS)] + [["data", c] for c in sorted(DATA_COMMANDS)]


@pytest.mark.parametrize("argv", ALL)
def test_every_command_has_a_help_page(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: detopt {' '.join(argv)}") and len(out.splitlines()) > 3


def test_info_prints_versions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "numba" in out and "detopt" in out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "detopt", "--help"], capture_output=True, text=True,
                       check=True)
    assert "usage: detopt" in r.stdout


def _write_world(tmp_path, **kw):
    import json

    from detopt.testing import synthetic_coco

    gt, dt = synthetic_coco(12, n_classes=3, seed=2, **kw)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dt))
    return gt, dt


def test_eval_prints_tables_and_writes_json_and_plots(tmp_path, capsys):
    import json

    from detopt.evaluation import evaluate_coco

    gt, dt = _write_world(tmp_path)
    code = main(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                 "--json", str(tmp_path / "out" / "metrics.json"), "--plots", str(tmp_path / "plots")])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("Average Precision") == 6 and out.count("Average Recall") == 6
    assert "class_1" in out and "AP50" in out
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = evaluate_coco(gt, dt)
    assert saved["stats"] == expected.stats.tolist()
    assert set(saved["per_class"]) == {"class_1", "class_3", "class_5"}
    assert saved["per_class"]["class_1"]["AP50"] == pytest.approx(expected.per_class["class_1"]["AP50"])
    for name in ("pr_curve", "f1_curve", "confusion_matrix", "confusion_matrix_counts"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 0


def test_eval_bad_input_is_one_clear_line(tmp_path, capsys):
    _write_world(tmp_path)
    (tmp_path / "bad.json").write_text("[{\"image_id\": 1,")
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.json: malformed JSON at line 1" in err


def test_eval_reports_skipped_predictions(tmp_path, capsys):
    import json

    gt, dt = _write_world(tmp_path)
    dt.append({"image_id": gt["images"][0]["id"], "category_id": 4242, "bbox": [1, 1, 5, 5], "score": 0.5})
    (tmp_path / "pred.json").write_text(json.dumps(dt))
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]) == 0
    captured = capsys.readouterr()
    assert "warning: " in captured.err and "skipped 1 of" in captured.err
    assert "1 skipped" in captured.out


def test_eval_rejects_uncomputed_iou_threshold(tmp_path, capsys):
    _write_world(tmp_path)
    with pytest.raises(SystemExit):
        main(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
              "--iou-thr", "0.52"])
    assert "0.50, 0.55" in capsys.readouterr().err


def test_cli_nms_choices_are_the_postprocess_methods():
    from detopt.cli import build_parser
    from detopt.ops.postprocess import METHODS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for cmd in ("val", "predict"):
        nms = next(a for a in sub.choices[cmd]._actions if a.dest == "nms")
        assert tuple(nms.choices) == tuple(METHODS) == (
            "nms", "soft_nms_linear", "soft_nms_gaussian", "diou_nms", "matrix_nms", "wbf")


def test_inference_imports_no_trainer():
    """``import detopt.inference`` loads the checkpoint reader and the runtime helpers, not the
    training loop (nor DDP)."""
    code = "import sys, detopt.inference; print(sorted(m for m in sys.modules if m.startswith('detopt.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "detopt.engine.checkpoint" in out and "detopt.runtime" in out
    assert "detopt.engine.trainer" not in out and "detopt.tune" not in out

"""`detopt demo --quick` end to end: the report's sections and images, the step artefacts and
their reuse, numbers that agree with the artefacts, and the page rendered by headless Chromium."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from detopt.cli import main
from detopt.config import DemoConfig
from detopt.errors import DetoptInputError
from detopt.report import SECTIONS, image_paths

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def _demo(*args: str) -> str:
    """Run ``detopt demo ARGS`` in this process; returns what it printed (it must succeed)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["demo", *args]) == 0
    return buf.getvalue()


def _browser() -> str:
    """A headless Chromium; skipped without one, unless DETOPT_REQUIRE_BROWSER is set (CI), where
    its absence fails the test."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("DETOPT_REQUIRE_BROWSER"):
        pytest.fail("no headless Chromium found (make browser installs the Debian package)")
    pytest.skip("no headless Chromium (make browser installs the Debian package)")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One quick demo (about a minute), run through the command line, then run again."""
    out = tmp_path_factory.mktemp("demo") / "run"
    logs = [_demo("--quick", "--out", str(out), "--workers", "1") for _ in range(2)]
    return out, logs


@pytest.mark.slow
def test_quick_demo_writes_every_section_and_image(demo_run):
    out, logs = demo_run
    page = (out / "report.html").read_text()
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in page
    srcs = image_paths(page)
    assert len(srcs) >= 15
    for src in srcs:
        assert not src.startswith("/"), src  # relative: the folder can be moved or zipped
        assert (out / src).is_file() and (out / src).stat().st_size > 1000, src
    # every figure has a caption
    assert page.count("<figure>") == len(srcs) == page.count("<figcaption>")
    for name in (
        "samples",
        "augmented",
        "classes",
        "sizes",
        "anchors",
        "curves",
        "pr_curve",
        "f1_curve",
        "confusion_matrix",
        "predictions",
        "tradeoff",
        "nms_grid",
        "history",
    ):
        assert any(Path(s).stem == name for s in srcs), name
    # the post-processing table covers every method of the study
    for method in (
        "hard NMS, per class",
        "hard NMS, class-agnostic",
        "soft-NMS linear",
        "soft-NMS gaussian",
        "DIoU-NMS",
        "matrix NMS",
        "WBF-style merge",
    ):
        assert method in page, method
    assert "wrote" in logs[0] and "report.html" in logs[0]


@pytest.mark.slow
def test_quick_demo_numbers_agree_with_its_artefacts(demo_run):
    out, _ = demo_run
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    summary = json.loads((out / "steps" / "report.json").read_text())
    assert summary["evaluation"]["stats"] == metrics["stats"]
    assert summary["headline"]["mAP50-95"] == f"{metrics['stats'][0]:.3f}"
    study = json.loads((out / "postprocess" / "study.json").read_text())
    default = study["default"]
    assert default["setting"] == {
        "method": "nms",
        "iou_thr": 0.7,
        "score_thr": 0.001,
        "sigma": None,
        "agnostic": False,
        "max_det": 300,
    }
    assert default["ap"] == pytest.approx(metrics["stats"][0], abs=1e-12)  # same predictions, same AP
    assert study["best"]["ap"] == max(r["ap"] for r in study["results"])
    preds = json.loads((out / "eval" / "predictions.json").read_text())
    assert len(preds) == metrics["counts"]["predictions"]
    ckpt_rows = (out / "train" / "results.csv").read_text().strip().splitlines()
    assert len(ckpt_rows) - 1 == summary["training"]["epochs"] >= 1
    assert summary["environment"]["command"].startswith("detopt demo --quick --out ")
    env = summary["environment"]["versions"]
    assert env["torch"] and env["CPU cores"] == str(os.cpu_count())


@pytest.mark.slow
def test_quick_demo_deploy_table_and_tune_study(demo_run):
    """The Deploy section: seven variants measured, each file present, the recommendation computed
    from the rows, the Pareto front marked, commands that reproduce each file; the tune study has
    its baseline trial and is shown, not applied."""
    from detopt.compress.deploy import pareto_front

    out, logs = demo_run
    summary = json.loads((out / "steps" / "report.json").read_text())
    dep = summary["deploy"]
    rows = dep["rows"]
    assert [r["name"] for r in rows] == ["torch FP32", "torch bf16", "ORT FP32", "ORT INT8 PTQ",
                                         "pruned 50% + KD, torch FP32", "pruned, ORT FP32",
                                         "pruned + INT8 PTQ"]
    for r in rows:
        f = out / r["file"]
        assert f.is_file() and r["size_mb"] == pytest.approx(f.stat().st_size / 1e6)
        assert r["p50_ms"] > 0 and r["images_per_s_b8"] > 0 and r["commands"]
        assert all(c.startswith("detopt ") for c in r["commands"])
    assert [r["pareto"] for r in rows] == pareto_front([r["map"] for r in rows],
                                                       [r["p50_ms"] for r in rows]).tolist()
    # the pruned variants are smaller; INT8 files about a third of the FP32 ones
    assert rows[4]["gflops"] < 0.6 * rows[0]["gflops"] and rows[4]["params_m"] < rows[0]["params_m"]
    assert rows[3]["size_mb"] < 0.45 * rows[2]["size_mb"]
    # the recommendation is the fastest within 0.01 of torch FP32
    rec = dep["recommendation"]
    ok = [i for i, r in enumerate(rows) if rows[0]["map"] - r["map"] <= 0.01]
    assert rec["index"] == min(ok, key=lambda i: (rows[i]["p50_ms"], -rows[i]["map"]))
    assert rec["text"] in logs[0] and rows[rec["index"]]["name"] in summary["headline"]["deploy"]
    # accuracy rows come from the quantize reports and the files themselves
    q = json.loads((out / "quantize" / "report.json").read_text())
    int8 = [v for v in q["variants"] if v["name"].startswith("INT8")][-1]
    assert rows[3]["map"] == int8["map"]
    assert rows[0]["map"] == next(v["map"] for v in q["variants"] if v["backend"] == "torch eager")
    page = (out / "report.html").read_text()
    assert "Commands that reproduce each variant" in page and "detopt quantize --weights" in page
    assert rec["text"].split(":")[0] in page
    # the tune study: trial 0 is the base values; its findings are not applied
    tune = summary["tune"]
    assert tune["baseline"] is True and tune["trials"][0]["number"] == 0
    assert tune["trials"][0]["lr0"] == 0.01 and len(tune["trials"]) == tune["target_trials"]
    assert "are not applied to the model of this report" in page
    assert summary["training"]["config"]["lr0"] == 0.01  # the demo's own model kept its recipe


@pytest.mark.slow
def test_second_run_reuses_every_step(demo_run):
    out, logs = demo_run
    second = logs[1]
    steps = ("data", "analysis", "anchors", "evaluate", "postprocess", "prune", "export", "deploy", "tune")
    for step in steps:
        assert f"[{step}] reusing" in second, step
    assert "holds a finished run with this config; reusing it" in second
    summary = json.loads((out / "steps" / "report.json").read_text())
    assert set(summary["environment"]["reused"]) >= {
        "data",
        "analysis",
        "anchors",
        "train",
        "evaluate",
        "postprocess",
        "prune",
        "export",
        "deploy",
        "tune",
    }


@pytest.mark.slow
def test_demo_retrains_when_the_config_changes(demo_run, tmp_path):
    """A changed training key is not silently served from the old run; unchanged steps stay reused."""
    src, _ = demo_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    log = _demo("--quick", "--out", str(out), "--workers", "0", "--minutes", "0.1", "--accuracy-only",
                "lr0=0.02")
    assert "trained with another config; training again" in log
    assert "[data] reusing" in log and "[evaluate] running" in log
    summary = json.loads((out / "steps" / "report.json").read_text())
    assert summary["training"]["config"]["lr0"] == 0.02
    assert "deploy" not in summary and "tune" not in summary  # --accuracy-only
    assert 'id="deploy"' not in (out / "report.html").read_text()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    """Headless Chromium renders the report to a PNG, and the page's own check counts no image that
    failed to load. CI installs the browser (Makefile `browser`) and sets DETOPT_REQUIRE_BROWSER=1."""
    out, _ = demo_run
    browser = _browser()
    url = (out / "report.html").resolve().as_uri()
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    n_img = len(image_paths((out / "report.html").read_text()))
    assert f'data-images="{n_img}"' in body.group(0), body.group(0)
    assert 'data-missing-images="0"' in body.group(0), body.group(0)
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1400,3000", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (3000, 1400)
    assert img.std() > 20  # a rendered page, not a blank one


def test_report_check_catches_a_missing_image(tmp_path):
    """The page's own check: an image removed after writing is reported by the browser."""
    browser = _browser()
    (tmp_path / "a.png").write_bytes(b"not a png")
    page = tmp_path / "r.html"
    from detopt.report.html import _SCRIPT

    page.write_text(
        f'<html><body><img src="a.png"><img src="gone.png"><script>{_SCRIPT}</script></body></html>'
    )
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'data-missing-images="2"' in dom and "2 image(s) of this report are missing" in dom


def test_demo_config_defaults_and_errors():
    assert DemoConfig().resolved() == {
        "minutes": 8.0,
        "train_images": 2000,
        "val_images": 300,
        "model": None,  # the short-budget recipe's choice
    }
    from detopt.demo import _train_config

    # no model given: left to the trainer, which measures this machine (engine.recipe.choose_model)
    assert "model" not in _train_config(Path("run"), DemoConfig()).model_fields_set
    assert _train_config(Path("run"), DemoConfig(model="yolo-s")).model == "yolo-s"
    q = DemoConfig(quick=True, minutes=1.5).resolved()
    assert q["minutes"] == 1.5 and q["model"] == "yolo-p"
    from detopt.config import build_config

    with pytest.raises(DetoptInputError, match="did you mean minutes"):
        build_config(DemoConfig, {"minute": 3})
    with pytest.raises(SystemExit):
        main(["demo", "--minutes", "0"])


def test_a_bad_training_override_fails_before_any_step(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--quick", "--out", str(out), "lr0=-1"]) == 2
    assert "lr0" in capsys.readouterr().err
    assert not (out / "steps").exists() and not (out / "data").exists()


@pytest.mark.slow
def test_demo_resumes_an_unfinished_training_run(demo_run, tmp_path):
    """A moved RUN whose last.pt says more epochs were planned is resumed, not retrained."""
    from detopt.engine import atomic_save, load_checkpoint

    out = tmp_path / "moved"
    shutil.copytree(demo_run[0], out)
    ckpt = load_checkpoint(out / "train" / "last.pt")
    done = int(ckpt["epoch"]) + 1
    ckpt["epochs"] = done + 1
    atomic_save(ckpt, out / "train" / "last.pt")
    log = _demo("--quick", "--out", str(out), "--workers", "0", "--accuracy-only")
    assert f"resuming {out / 'train'} at epoch {done + 1}" in log, log
    assert load_checkpoint(out / "train" / "last.pt")["epoch"] >= done
    assert "[evaluate] running" in log  # new weights: evaluated again

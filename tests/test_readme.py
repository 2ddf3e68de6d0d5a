"""The README's Python snippets run, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippets write runs/...: keep them out of the checkout
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert len(namespace["det"]) <= 300
    assert namespace["report"].name == "report.html" and namespace["report"].is_file()


def _run_bash_block(needle: str, cwd: Path) -> None:
    """Run the README's first bash block containing ``needle`` as written (venv paths mapped to this
    one), failing on the first command that fails."""
    import subprocess
    import sys

    blocks = [b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S) if needle in b]
    assert blocks, f"no README bash block with {needle!r}"
    script = blocks[0].replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, check=True, capture_output=True)


def test_readme_eval_commands_run(tmp_path):
    """The README's `detopt eval` shell block runs as written."""
    _run_bash_block("detopt eval", tmp_path)
    assert (tmp_path / "runs/eval-demo/metrics.json").exists()
    assert len(list((tmp_path / "runs/eval-demo/plots").glob("*.png"))) == 4


def test_readme_data_commands_run(tmp_path):
    """The README's `detopt data` shell block runs as written, every command succeeding."""
    _run_bash_block("detopt data synth", tmp_path)
    assert (tmp_path / "runs/shapes-voc/classes.txt").exists()
    assert len(list((tmp_path / "runs/shapes-stats").glob("*.png"))) == 4
    assert (tmp_path / "runs/shapes-resplit/data.yaml").exists()


def test_readme_anchors_commands_run(tmp_path):
    """The README's `detopt anchors` shell block runs as written."""
    import json

    _run_bash_block("detopt anchors", tmp_path)
    fits = json.loads((tmp_path / "runs/anchors.json").read_text())["fits"]
    assert fits[0]["mean_best_iou"] >= fits[1]["mean_best_iou"]
    assert (tmp_path / "runs/anchors.png").stat().st_size > 10_000


def test_readme_preview_commands_run(tmp_path):
    """The README's `detopt data preview` shell block runs as written."""
    _run_bash_block("detopt data preview", tmp_path)
    assert (tmp_path / "runs/preview/preview.png").stat().st_size > 50_000


def test_readme_training_commands_run(tmp_path):
    """The README's train / resume / val / export / predict block runs as written."""
    import json

    _run_bash_block("detopt train --data runs/shapes-t", tmp_path)
    assert (tmp_path / "runs/train-t/results.csv").read_text().count("\n") == 4  # header + 3 epochs
    val = json.loads((tmp_path / "runs/val-t.json").read_text())
    pred = json.loads((tmp_path / "runs/pred-t.json").read_text())
    assert (tmp_path / "runs/train-t/model.safetensors").is_file()
    assert len(list((tmp_path / "runs/pred-t").glob("*.png"))) == 8

    # hard NMS keeps a box by what scores above it only: predict at --score-thr 0.01 (the export) is
    # exactly val at 0.001 (the checkpoint) above 0.01
    def key(records):
        return sorted((r["file_name"], r["category_id"], tuple(r["bbox"]), r["score"]) for r in records)

    assert pred and key(pred) == key([r for r in val if r["score"] > 0.01])


def test_readme_layout_commands_run(tmp_path):
    """The README's layouts block runs as written on a COCO 2017 download layout and a VOCdevkit
    made with the real names."""
    from tests.data.test_layouts import _coco2017, _voc_year

    _coco2017(tmp_path / "coco")
    kit = tmp_path / "VOCdevkit"
    _voc_year(kit / "VOC2007", "2007", {"trainval": ["000005", "000007"], "test": ["000001"]})
    _voc_year(kit / "VOC2012", "2012", {"trainval": ["2008_000008"], "train": ["2008_000008"], "val": []})
    _run_bash_block("detopt data validate coco", tmp_path)
    assert len(list((tmp_path / "runs/voc0712-yolo/images/train").iterdir())) == 3
    assert len(list((tmp_path / "runs/voc0712-yolo/images/val").iterdir())) == 1


def test_readme_onnx_commands_run(tmp_path):
    """The README's ONNX block runs as written: export with soft-NMS inside, val and predict on it."""
    import json

    _run_bash_block("detopt export --weights runs/train-o/best.pt", tmp_path)
    assert (tmp_path / "runs/train-o/model.onnx").is_file()
    val = json.loads((tmp_path / "runs/val-o.json").read_text())
    assert val and all(r["score"] >= 0.001 for r in val)  # 5 decimals in the json
    assert len(list((tmp_path / "runs/pred-o").glob("*.png"))) > 0


def test_readme_quantize_commands_run(tmp_path):
    """The README's quantization block runs as written: an INT8 file, its report, val on it."""
    import json

    _run_bash_block("detopt quantize --weights runs/train-q/best.pt", tmp_path)
    assert (tmp_path / "runs/int8-q/model-int8.onnx").is_file()
    doc = json.loads((tmp_path / "runs/int8-q/report.json").read_text())
    assert [v["name"] for v in doc["variants"]][:3] == ["FP32", "FP32", "INT8 PTQ"]
    assert (tmp_path / "runs/int8-q/report.md").read_text().startswith("# INT8 quantization report")
    assert doc["variants"][-1]["name"] == "INT8 QAT"


def test_readme_distillation_commands_run(tmp_path):
    """The README's distillation block runs as written and logs the KD terms."""
    import csv

    _run_bash_block("teacher=runs/teacher-k/best.pt", tmp_path)
    rows = list(csv.DictReader((tmp_path / "runs/student-k/results.csv").open()))
    assert float(rows[0]["train/kd_cls"]) > 0 and float(rows[-1]["train/kd_cls"]) == 0


def test_readme_prune_commands_run(tmp_path):
    """The README's pruning block runs as written: a smaller run that val reads, a sparse one."""
    import json

    _run_bash_block("detopt prune --weights runs/train-pr/best.pt", tmp_path)
    doc = json.loads((tmp_path / "runs/pruned-pr/prune.json").read_text())
    assert doc["gflops_after"] < 0.55 * doc["gflops_before"] and doc["params_after"] < doc["params_before"]
    assert (tmp_path / "runs/pruned-pr/steps/1/best.pt").is_file()
    sparse = json.loads((tmp_path / "runs/sparse-pr/prune.json").read_text())
    assert sparse["method"] == "unstructured" and sparse["size"]["gzip_after"] < sparse["size"]["gzip_before"]


def test_readme_tune_commands_run(tmp_path):
    """The README's `detopt tune` block runs as written: two workers, a resumed and extended study,
    best.yaml into detopt train."""
    import csv

    _run_bash_block("detopt tune", tmp_path)
    study = tmp_path / "runs/tune-tu"
    rows = list(csv.DictReader((study / "trials.csv").open()))
    # two workers on one journal file, then a re-run that adds a slot: exactly 4 trials, every
    # slot once, nothing failed, no lock error or traceback in the workers' logs
    assert sorted(int(r["slot"]) for r in rows) == [0, 1, 2, 3]
    assert sorted(int(r["number"]) for r in rows) == [0, 1, 2, 3]
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
    logs = [p.read_text() for p in sorted(study.glob("worker-*.log"))]
    assert len(logs) == 2 and "trial" in "".join(logs)
    for bad in ("locked", "Traceback", "Error"):
        assert bad not in "".join(logs)
    assert sorted(p.name for p in (study / "trials").iterdir()) == ["0000", "0001", "0002", "0003"]
    assert (tmp_path / "runs/train-tu/last.pt").is_file()
    assert (tmp_path / "runs/tune-tu/report.html").is_file()

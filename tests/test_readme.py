"""The README's Python snippets run, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert len(namespace["det"]) <= 300


def test_readme_eval_commands_run(tmp_path):
    """The README's `detopt eval` shell block runs as written (venv paths mapped to this one)."""
    import subprocess
    import sys

    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    blocks = [b for b in blocks if "detopt eval" in b]
    assert blocks
    bindir = Path(sys.executable).parent
    script = blocks[0].replace(".venv/bin/", f"{bindir}/")
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "runs/eval-demo/metrics.json").exists()
    assert len(list((tmp_path / "runs/eval-demo/plots").glob("*.png"))) == 4


def test_readme_data_commands_run(tmp_path):
    """The README's `detopt data` shell block runs as written, every command succeeding."""
    import subprocess
    import sys

    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    blocks = [b for b in blocks if "detopt data synth" in b]
    assert blocks
    bindir = Path(sys.executable).parent
    script = blocks[0].replace(".venv/bin/", f"{bindir}/")
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "runs/shapes-voc/classes.txt").exists()
    assert len(list((tmp_path / "runs/shapes-stats").glob("*.png"))) == 4
    assert (tmp_path / "runs/shapes-resplit/data.yaml").exists()

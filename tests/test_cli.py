import subprocess
import sys

from detopt.cli import main


def test_help_lists_only_working_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "info" in out


def test_info_prints_versions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "numba" in out and "detopt" in out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "detopt", "--help"], capture_output=True, text=True,
                       check=True)
    assert "usage: detopt" in r.stdout

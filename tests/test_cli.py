"""The `gflow` command line."""

import json
import subprocess
import sys

import pytest

from gflow import cli


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "gflow.cli", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout


def test_run_from_toml_writes_summary_and_figure(tmp_path):
    cfg = tmp_path / "flow.toml"
    cfg.write_text('dataset = "gaussian"\nn = 12\nd = 4\nwidth = 6\ninit_scale = 1e-3\nt1 = 1.0\nnum_saves = 5\n')
    assert cli.main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--rtol", "1e-5"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "success"
    assert summary["config"]["rtol"] == 1e-5 and summary["n"] == 12
    assert summary["loss_final"] < summary["loss_initial"]
    assert (tmp_path / "out" / "flow.png").stat().st_size > 1000


@pytest.mark.parametrize("text, message", [("widht = 3\n", "unknown key 'widht'"), ("width = 'ten'\n", "must be of type int")])
def test_run_rejects_bad_config(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert cli.main(["run", "--config", str(cfg), "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err

"""The `gflow` command line."""

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from gflow import cli
from gflow.studies.single_run import RunConfig

SMALL = ["--dataset", "gaussian", "--n", "12", "--d", "4", "--width", "6", "--t1", "1", "--num-saves", "5"]


def strict_json(path):
    """The JSON in `path`, refusing NaN and ±Infinity (which `json.loads` accepts by default)."""
    def refuse(name):
        raise ValueError(f"{path} is not strict JSON: it holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "gflow.cli", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout


def test_commands_are_discovered_from_the_study_modules():
    """Every module of gflow.studies whose source defines `register` is a command (nothing listed
    by hand, so a sixth paper's study module needs no edit here), and every paper's command (a
    module with `PARTS`) takes --parts through `register_study`."""
    import argparse

    from gflow import studies

    folder = Path(studies.__file__).parent
    defines = sorted(p.stem for p in folder.glob("*.py") if "\ndef register(subparsers)" in p.read_text())
    modules = cli.study_modules()
    assert [m.__name__.rsplit(".", 1)[1] for m in modules] == defines
    papers = {}
    for module in modules:
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers(dest="command"))
        (command,) = parser._subparsers._group_actions[0].choices
        if hasattr(module, "PARTS"):
            papers[command] = module.PARTS
            assert parser.parse_args([command, "--parts", module.PARTS[-1]]).parts == module.PARTS[-1]
    assert {"align", "boursier", "condensation", "hinge-meanfield", "kumar-haupt"} <= set(papers)
    assert {"run", "sweep"}.isdisjoint(papers)


def test_run_from_toml_writes_summary_and_figure(tmp_path, capfd):
    cfg = tmp_path / "flow.toml"
    cfg.write_text('dataset = "gaussian"\nn = 12\nd = 4\nwidth = 6\ninit_scale = 1e-3\nt1 = 1.0\nnum_saves = 5\n')
    assert cli.main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--rtol", "1e-5", "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")  # --quiet: no progress bar, no summary; success: no reason
    summary = strict_json(tmp_path / "out" / "summary.json")
    assert summary["status"] == "success" and summary["t_final"] == 1.0
    assert summary["config"]["rtol"] == 1e-5 and summary["n"] == 12
    assert summary["loss_final"] < summary["loss_initial"]
    assert (tmp_path / "out" / "flow.png").stat().st_size > 1000


@pytest.mark.parametrize("text, message", [("widht = 3\n", "unknown key 'widht'"), ("width = 'ten'\n", "must be of type int")])
def test_run_rejects_bad_config(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert cli.main(["run", "--config", str(cfg), "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_run_help_gives_every_option_its_meaning_and_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    entries = {}
    for entry in re.split(r"\n  (?=--)", out.split("options:", 1)[1])[1:]:
        flag = entry.split()[0].rstrip(",")
        entries[flag] = " ".join(entry.split())
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in entries, f"{flag} missing from `gflow run --help`"
        assert entries[flag].endswith(f"(default: {f.default})"), entries[flag]
        meaning = entries[flag].split(None, 1 if f.type is bool else 2)[-1]
        assert len(meaning) > len(f"(default: {f.default})") + 10, f"{flag} has no meaning: {entries[flag]!r}"
    assert entries["--out"].endswith("(default: results/run)")
    assert "--no-balanced" in out


def test_run_stopped_by_max_steps_exits_1_with_reason_strict_json_and_marked_figure(tmp_path, capfd):
    out = tmp_path / "out"
    assert cli.main(["run", *SMALL, "--init-scale", "1e-3", "--max-steps", "5", "--out", str(out)]) == 1
    err = capfd.readouterr().err
    reasons = [line for line in err.splitlines() if line.startswith("gflow run:")]
    assert len(reasons) == 1, err
    summary = strict_json(out / "summary.json")
    assert summary["status"] == "max_steps" and summary["num_steps"] == 5
    assert 0 < summary["t_final"] < 1
    assert f"max_steps: stopped at t = {summary['t_final']:.4g} of t1 = 1 after 5 steps" in reasons[0]
    assert "--max-steps" in reasons[0]  # how to fix it
    assert "%|" in err  # the progress bar (tqdm, on stderr)
    # the values at the stop are those of the state where the solve ended, all finite
    assert summary["loss_final"] < summary["loss_initial"]
    assert (out / "flow.png").stat().st_size > 1000


def test_run_with_overflowing_loss_writes_null_not_nan(tmp_path, capsys):
    # ε = 30 makes exp(−y f) overflow at t = 0: the loss is inf, which JSON cannot hold
    out = tmp_path / "out"
    assert cli.main(["run", *SMALL, "--init-scale", "30", "--max-steps", "5", "--out", str(out)]) == 1
    summary = strict_json(out / "summary.json")
    assert summary["loss_initial"] is None and summary["loss_final"] is None
    assert summary["status"] in ("max_steps", "nonfinite")
    captured = capsys.readouterr()
    assert f"gflow run: {summary['status']}: stopped" in captured.err


@pytest.mark.parametrize("command", [["run", "--config"], ["sweep"]])
def test_missing_or_unreadable_config_is_a_one_line_error(tmp_path, capsys, command):
    missing = tmp_path / "nope.toml"
    assert cli.main([*command, str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"gflow {command[0]}: error: {missing}: no such config file"
    assert cli.main([*command, str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "is a directory, not a TOML config file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

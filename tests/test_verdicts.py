"""The verdict type of every study (`gflow.studies.verdicts`): outcomes, exit rule, files."""

import argparse
import json
import subprocess

import numpy as np
import pytest

from gflow.studies import command
from gflow.studies import verdicts as V


def _row(outcome_passed=True, premise=True, headline=False):
    return V.check("X", "a claim (Paper 2024, Thm 1)", "a quantity", 0.5, "≤ 1", outcome_passed, basis="paper",
                   premise=premise, premise_reason="nothing to measure", headline=headline)


def test_check_outcomes_and_premise_absent_never_passes():
    assert _row(True).outcome == "pass" and _row(True).passed
    assert _row(False).outcome == "fail"
    for passed in (True, False, np.True_):
        row = _row(passed, premise=False)
        assert row.outcome == "not-applicable" and not row.passed and row.reason == "nothing to measure"


def test_check_rejects_non_boolean_criteria_and_bad_fields():
    with pytest.raises(TypeError, match="passed must be a boolean"):
        V.check("X", "c", "q", np.nan, "≤ 1", np.nan, basis="paper")  # bool(nan) would be True
    with pytest.raises(TypeError, match="premise"):
        V.check("X", "c", "q", 1.0, "≤ 1", True, basis="paper", premise=np.array([True, False]))
    with pytest.raises(ValueError, match="premise_reason"):
        V.check("X", "c", "q", 1.0, "≤ 1", True, basis="paper", premise=False)
    with pytest.raises(ValueError, match="basis"):
        V.check("X", "c", "q", 1.0, "≤ 1", True, basis="folklore")
    with pytest.raises(ValueError, match="outcome"):
        V.Verdict("X", "c", "q", 1.0, None, "≤ 1", "paper", "maybe")
    with pytest.raises(ValueError, match="reason"):
        V.Verdict("X", "c", "q", 1.0, None, "≤ 1", "paper", "not-applicable")


@pytest.mark.parametrize("rows, status", [
    ([], 0),
    ([(True, True, True), (True, True, False)], 0),
    ([(True, True, False), (False, True, False)], 1),
    ([(True, True, True), (True, False, False)], 0),  # a side row not applicable: reported, exit 0
    ([(True, False, True)], 1),  # the headline not applicable: the claim was not tested
])
def test_exit_rule(rows, status):
    assert V.exit_status([_row(*r) for r in rows]) == status


def test_write_read_round_trip_markdown_and_manifest(tmp_path):
    rows = [_row(True, headline=True), _row(False), _row(True, premise=False)]
    rows[0] = V.check("X", "c", "q", np.float64(0.25), "≤ 1", np.True_, basis="derivation",
                      uncertainty="95% CI [0.2, 0.3] over 3 seeds", details={"fit": np.array([1.0, 2.0])})
    V.write(tmp_path, rows, {"wall_seconds": 1.5}, seeds=range(3))
    back = V.read(tmp_path)
    assert [r.outcome for r in back] == ["pass", "fail", "not-applicable"]
    assert back[0].measured == 0.25 and back[0].details == {"fit": [1.0, 2.0]}
    assert back[1:] == rows[1:]
    table = (tmp_path / "verdicts.md").read_text()
    assert "**FAIL**" in table and "not applicable: X, a quantity: nothing to measure" in table
    assert "exit status 1" in table
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert set(m) == {"revision", "dirty", "argv", "seeds", "versions", "wall_seconds", "date_utc"}
    assert m["seeds"] == [0, 1, 2] and m["wall_seconds"] == 1.5
    assert set(m["versions"]) == {"gflow", "jax", "jaxlib", "diffrax", "numpy"} and m["versions"]["numpy"] == np.__version__
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=V.__file__.rsplit("/gflow/", 1)[0]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "unknown"
    assert m["revision"] == head


@pytest.mark.parametrize("passes, status", [((True, True), 0), ((True, False), 1), ((), 0)])
def test_register_study_runs_writes_and_exits_by_the_rule(tmp_path, passes, status):
    seen = {}

    def run(out, quick, rtol, width):
        seen.update(quick=quick, rtol=rtol, width=width)
        rows = [V.check("X", f"claim {i}", "q", i, "exact", ok, basis="pilot") for i, ok in enumerate(passes)]
        V.write(out, rows, {"quick": quick}, seeds=[0])
        return rows

    parser = argparse.ArgumentParser()
    command.register_study(parser.add_subparsers(dest="command"), "toy", "toy study", run, tmp_path, rtol=1e-7,
                     options=lambda p: p.add_argument("--width", type=int, default=3))
    args = parser.parse_args(["toy", "--quick", "--out", str(tmp_path), "--width", "5"])
    assert args.func(args) == status
    assert seen == {"quick": True, "rtol": 1e-7, "width": 5}
    assert [v.passed for v in V.read(tmp_path)] == list(passes)
    bad = parser.parse_args(["toy", "--rtol", "0.5", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--rtol"):
        bad.func(bad)


def test_register_study_without_rtol_or_quick(tmp_path):
    parser = argparse.ArgumentParser()
    command.register_study(parser.add_subparsers(dest="command"), "toy", "toy", lambda out: [], tmp_path, rtol=None, quick=False)
    args = parser.parse_args(["toy"])
    assert "rtol" not in vars(args) and "quick" not in vars(args) and args.func(args) == 0


def test_parts_option_is_parsed_once_for_every_study(tmp_path):
    """--parts: comma-separated names of the study's parts, all by default; a name not among them
    (or an empty list) is a ValueError before anything runs."""
    assert command.parse_parts(None, ("A", "B-c")) == ("A", "B-c")
    assert command.parse_parts("B-c, A", ("A", "B-c")) == ("B-c", "A")
    for bad in ("A,D9", ""):
        with pytest.raises(ValueError, match="--parts takes"):
            command.parse_parts(bad, ("A", "B-c"))
    seen = []
    parser = argparse.ArgumentParser()
    command.register_study(parser.add_subparsers(dest="command"), "toy", "toy", lambda out, parts: seen.append(parts) or [],
                     tmp_path, rtol=None, quick=False, parts=("A", "B-c"))
    for argv, parts in ((["toy"], ("A", "B-c")), (["toy", "--parts", "B-c"], ("B-c",))):
        args = parser.parse_args(argv)
        assert args.func(args) == 0 and seen[-1] == parts
    args = parser.parse_args(["toy", "--parts", "A,X"])
    with pytest.raises(ValueError, match="--parts takes"):
        args.func(args)


def test_rows_must_be_verdicts():
    """The table, the exit rule and the writer take Verdicts only: a dict row (the retired
    pre-`Verdict` form) is a TypeError, not a silently passing row."""
    row = {"experiment": "E", "claim": "bad", "measured": 1.0, "pass": True}
    for call in (lambda: V.exit_status([row]), lambda: V.markdown_table([row])):
        with pytest.raises(TypeError, match="Verdicts"):
            call()

"""Issue 17's rule on the stress corpus (benchmarks/stress.py): on every case the switching solve
reaches t1, takes at most 1.5× the plain solve's steps where the plain solve does not grind
(fewer where it does), and its final weights are at least as close to the reference (the
independent Filippov integrator of benchmarks/filippov_reference.py where affordable) as the
plain solve's at the same rtol.

Default run: the `quick` cases (one small objective, one compilation). `-m slow`: every case,
with references cached in results/stress/refs (shared with `python benchmarks/stress.py`).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import stress  # noqa: E402

QUICK = [name for name, case in stress.CASES.items() if case.quick]


def test_corpus_spans_the_issue():
    cases = list(stress.CASES.values())
    assert len(cases) >= 40
    assert {"issue17a", "issue17b"} <= set(stress.CASES)
    assert {c.data for c in cases} == {"hyperplane", "separated"}
    assert {c.reduction for c in cases} == {"sum", "mean"}
    assert {c.activation for c in cases} == {"relu", "leaky_relu"}
    assert {c.loss for c in cases} == {"exponential", "logistic", "square"}
    assert min(c.width for c in cases) <= 10 and max(c.width for c in cases) >= 200
    assert min(c.n for c in cases) <= 20 and max(c.n for c in cases) >= 1000
    assert min(c.eps for c in cases) <= 1e-6 and max(c.eps for c in cases) >= 1e-1
    assert min(c.rtol for c in cases) <= 1e-9 and max(c.rtol for c in cases) >= 1e-4
    assert len({c.seed for c in cases}) >= 5


def test_check_applies_the_rule():
    def row(sw_status, sw_steps, pl_status, pl_steps, sw_err, pl_err):
        side = lambda status, steps, err: {"status": status, "t": 1.0, "accepted": steps, "rejected": 0,
                                           "steps": steps, "error": err, "stats": {}}
        return {"case": {"t1": 1.0}, "switching": side(sw_status, sw_steps, sw_err), "plain": side(pl_status, pl_steps, pl_err)}

    assert stress.check(row("success", 150, "success", 100, 1e-7, 1e-6)) == []
    assert stress.check(row("success", 151, "success", 100, 1e-7, 1e-6))  # > 1.5× steps
    assert stress.check(row("max_steps", 10, "success", 100, None, 1e-6))  # does not reach t1
    assert stress.check(row("success", 100, "success", 100, 2e-6, 1e-6))  # less accurate
    assert stress.check(row("success", 100, "success", 100, 5e-11, 1e-11)) == []  # both at the floor
    assert stress.check(row("success", 900, "max_steps", 1000, 1e-7, None)) == []  # plain grinds
    assert stress.check(row("success", 1000, "max_steps", 1000, 1e-7, None))  # grinds too, not cheaper
    default = {**row("success", 100, "success", 100, 1e-7, 1e-6), "default": row("max_steps", 10, "success", 1, None, None)["switching"]}
    assert stress.check(default) == [] and stress.check(default, "default")  # the rule on the default solve


def test_default_is_the_documented_rule():
    import gflow

    loose = next(c for c in stress.CASES.values() if c.rtol >= gflow.flow.SWITCHING_MAX_RTOL)
    tight = next(c for c in stress.CASES.values() if c.rtol < gflow.flow.SWITCHING_MAX_RTOL)
    assert stress.default_is(loose, "stalled") == "plain"
    assert stress.default_is(tight, "success") == "switching"
    assert stress.default_is(tight, "stalled") == "switching, then plain"


def _assert_rule(name, refs):
    row = stress.run_case(stress.CASES[name], refs, log=lambda m: None)
    assert row["reference"]["ok"], row["reference"]
    sw, pl, df = row["switching"], row["plain"], row["default"]
    # the default solve ran the solve gflow's rule names (`stats`, read from the solve itself)
    which = stress.default_is(stress.CASES[name], sw["status"])
    assert df["stats"]["switching"] == (which == "switching"), (which, df["stats"])
    assert df["stats"]["switching_stalled"] == ("then" in which), (which, df["stats"])
    assert not row["check_default"], f"{name} (default solve): {'; '.join(row['check_default'])}"
    assert not row["check"], (
        f"{name}: {'; '.join(row['check'])} | switching {sw['status']} t={sw['t']:.4g} "
        f"{sw['accepted']}+{sw['rejected']} err={sw['error']} | plain {pl['status']} t={pl['t']:.4g} "
        f"{pl['accepted']}+{pl['rejected']} err={pl['error']}"
    )


@pytest.mark.parametrize("name", QUICK)
def test_rule_on_quick_cases(name, tmp_path_factory):
    _assert_rule(name, tmp_path_factory.getbasetemp() / "stress-refs")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in stress.CASES if n not in QUICK])
def test_rule_on_corpus(name):
    _assert_rule(name, ROOT / "results" / "stress" / "refs")


def test_proposed_default_picks_by_rtol_and_surfaces():
    side = lambda status, steps: {"status": status, "t": 1.0, "accepted": steps, "rejected": 0, "steps": steps,
                                  "error": None, "stats": {}}
    row = {"case": {"name": "big", "t1": 1.0, "n": 1000, "width": 100, "rtol": 1e-6},
           "switching": side("success", 2000), "plain": side("success", 800)}
    assert stress.proposed_default(row, 1e-5, float("inf"))[0] == "switching"
    assert stress.proposed_default(row, 1e-5, float("inf"))[1]  # 2.5× the plain solve's steps
    assert stress.proposed_default(row, 1e-5, 20_000) == ("plain", [])
    assert stress.proposed_default(row, 1e-6, float("inf")) == ("plain", [])
    stalled = {**row, "case": {**row["case"], "name": "stalls"}, "switching": side("stalled", 300), "plain": side("max_steps", 800)}
    assert stress.proposed_default(stalled, 1e-5, float("inf"))[0] == "switching, then plain"
    assert "1 of 2" in stress.rule_table([row, stalled], rules=((1e-5, 20_000),))

"""Issue 17's rule on the stress corpus (benchmarks/stress.py): a solve reaches t1, takes at most
1.5× the plain solve's steps where the plain solve does not grind (fewer where it does), and its
final weights are at least as close to the reference (the independent Filippov integrator of
benchmarks/filippov_reference.py where affordable) as the plain solve's at the same rtol. Judged
for the default solve (`switching=None`, which must also have run the solve its rtol rule names)
and for the switching solve forced.

Default run: the `quick` cases (one small objective, one compilation), both rules. `-m slow`:
every case, the rule for the default solve (`switching=None`) and for the forced switching solve
apart, the cases where a rule is known not to hold marked xfail with the measured reason
(`DEFAULT_FAILS`, `FORCED_FAILS`); references cached in results/stress/refs (shared with
`python benchmarks/stress.py`).
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
    from gflow import options as o

    assert (o.SWITCHING_MAX_RTOL, o.SWITCHING_MAX_SURFACES) == (1e-4, 20_000)
    C = stress.CASES
    # rtol 1e-4 (kinks-rtol1e-04, K = 800) is not below 1e-4; n20's rtol 1e-5 is
    assert stress.default_is(C["kinks-rtol1e-04"], "success") == ("plain", o.SWITCHING_LOOSE_RTOL)
    assert stress.default_is(C["n20"], "success") == ("switching", o.SWITCHING_RAN)
    # K = n·h = 100,000 > 20,000 at rtol 1e-6; K = 20,000 (width200) is not above it
    assert stress.default_is(C["big-sep-n1000-h100"], "success") == ("plain", o.SWITCHING_MANY_SURFACES)
    assert stress.default_is(C["width200"], "success") == ("switching", o.SWITCHING_RAN)
    assert stress.default_is(C["issue17a"], "stalled") == ("switching, then plain", o.SWITCHING_FELL_BACK)
    assert stress.default_is(C["issue17a"], "nonfinite") == ("switching, then plain", o.SWITCHING_FELL_BACK)


# where issue 17's rule does not hold (benchmarks/stress.py, docs/benchmarks.md "Stress corpus"):
# measured on this revision, or last measured on an earlier one and not re-run since
FORCED_FAILS = {
    "big-n1000-h100": "5.0x steps at rtol 1e-4 on bb2ac34 (284+23 against 59+2 plain, 128 crossing slots): "
                      "event-bound, 162 sliding starts + 106 exits, each a step end, against the 92 steps allowed",
}
DEFAULT_FAILS = {}  # rtol < 1e-4 and K <= 20,000 passes every measured case
_ROWS = {}


def _row(name, refs):
    # one run per case for both rules
    if name not in _ROWS:
        _ROWS[name] = stress.run_case(stress.CASES[name], refs, log=lambda m: None)
    return _ROWS[name]


def _describe(row, key):
    sw, pl = row[key], row["plain"]
    return (f"{row['case']['name']} ({key}): {'; '.join(row['check' if key == 'switching' else 'check_default'])} | "
            f"{key} {sw['status']} t={sw['t']:.4g} {sw['accepted']}+{sw['rejected']} err={sw['error']} | "
            f"plain {pl['status']} t={pl['t']:.4g} {pl['accepted']}+{pl['rejected']} err={pl['error']}")


def _assert_default(name, refs):
    row = _row(name, refs)
    assert row["reference"]["ok"], row["reference"]
    # the default solve ran the solve gflow's rule names (`stats`, read from the solve itself)
    which, reason = stress.default_is(stress.CASES[name], row["switching"]["status"])
    assert row["default"]["stats"]["switching"] == (which == "switching"), (which, row["default"]["stats"])
    assert row["default"]["stats"]["switching_fallback"] == ("then" in which), (which, row["default"]["stats"])
    assert row["default"]["stats"]["switching_reason"] == reason, (which, row["default"]["stats"])
    assert not row["check_default"], _describe(row, "default")


def _assert_forced(name, refs):
    row = _row(name, refs)
    assert row["reference"]["ok"], row["reference"]
    assert not row["check"], _describe(row, "switching")


@pytest.mark.parametrize("name", QUICK)
def test_rule_on_quick_cases(name, tmp_path_factory):
    refs = tmp_path_factory.getbasetemp() / "stress-refs"
    _assert_default(name, refs)
    _assert_forced(name, refs)


def _corpus(fails):
    marks = lambda n: [pytest.mark.xfail(reason=fails[n], strict=False)] if n in fails else []
    return [pytest.param(n, marks=marks(n)) for n in stress.CASES if n not in QUICK]


@pytest.mark.slow
@pytest.mark.parametrize("name", _corpus(DEFAULT_FAILS))
def test_default_rule_on_corpus(name):
    _assert_default(name, ROOT / "results" / "stress" / "refs")


@pytest.mark.slow
@pytest.mark.parametrize("name", _corpus(FORCED_FAILS))
def test_forced_rule_on_corpus(name):
    _assert_forced(name, ROOT / "results" / "stress" / "refs")


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

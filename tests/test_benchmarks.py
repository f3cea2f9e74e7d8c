"""Smoke test of the benchmark harness: `benchmarks/report.py --quick` in one process.

Kinks and sweeps are other engineers' benchmarks with their own tests; they are skipped here to
keep this test short.
"""

import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _finite_numbers(x):
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return []
    if isinstance(x, (int, float)):
        return [x]
    items = x.values() if isinstance(x, dict) else x
    return [v for item in items for v in _finite_numbers(item)]


@pytest.mark.slow  # ~80 s: the benchmark report's quick mode (make bench runs it in full)
def test_quick_report(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import report
    finally:
        sys.path.remove(str(BENCH))
    report.main(["--quick", "--out", str(tmp_path), "--skip", "kinks,sweeps"])

    text = (tmp_path / "REPORT.md").read_text()
    for title in ("Work-precision", "Hardware", "memory of a long solve", "Not available: skipped"):
        assert title in text
    assert (tmp_path / "work_precision.png").stat().st_size > 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    parts = bench["parts"]
    for part in ("work_precision", "hardware", "memory"):
        assert parts[part]["available"], part
        numbers = _finite_numbers(parts[part]["result"])
        assert numbers and all(math.isfinite(v) for v in numbers), part

    wp = parts["work_precision"]["result"]
    _check_reference_cache(report.work_precision, wp["problems"][0], tmp_path)
    rows = wp["rows"]
    assert all(r["ok"] for r in rows)
    assert {"gflow", "gflow plain", "naive diffrax", "optax GD", "scipy"} <= {r["family"] for r in rows}
    # the switching reference agrees with an independent integrator and gradient (scipy DOP853 at
    # rtol 1e-8 on the numpy ∇L, whose own global error is ~1e-8 in loss)
    xcheck = wp["problems"][0]["reference"]["xcheck"]
    assert xcheck["ok"] and xcheck["loss"] < 1e-7 and xcheck["weights"] < 1e-6
    tsit5 = sorted((r["setting"], r["loss_error"], r["weight_error"]) for r in rows if r["method"] == "gflow tsit5")
    (tight, loss_tight, w_tight), (loose, loss_loose, w_loose) = tsit5[0], tsit5[-1]
    assert tight < loose and loss_tight < loss_loose and w_tight < w_loose
    gd = sorted((r["setting"], r["weight_error"]) for r in rows if r["method"] == "optax GD")
    # GD is first order: halving lr halves the error (independent check of the reference)
    assert 1.6 < gd[1][1] / gd[0][1] < 2.4

    hw = parts["hardware"]["result"]
    assert all(0 < r["fraction_of_peak"] for r in hw["rows"])
    mem = {(r["recording"], r["saves"]): r["peak_bytes"] for r in parts["memory"]["result"]["rows"]}
    state = parts["memory"]["result"]["state_bytes"]
    # saving the weights at 1000 times costs at least 1000 states more than observables only
    assert mem[("gflow weights", 1000)] - mem[("gflow observables", 1000)] > 900 * state


def _check_reference_cache(work_precision, info, folder):
    """The run saved its references (rtol and 10× rtol) as npz artefacts keyed by the problem, the
    method and rtol; a later call loads them instead of solving, and the stored weights
    reproduce the stored loss."""
    import numpy as np

    problem = next(p for p in work_precision.QUICK if p.name == info["problem"]["name"])
    rtol = info["reference"]["rtol"]
    keys = {work_precision.reference_key(problem, r) for r in (rtol, 10 * rtol)}
    assert len(keys) == 2 and {p.name for p in folder.glob("ref-*.npz")} == {f"ref-{k}.npz" for k in keys}
    messages = []
    ref = work_precision.reference(problem, rtol, folder, log=messages.append)
    assert messages and "cached" in messages[0]
    assert ref["final_loss"] == info["reference"]["final_loss"] and ref["steps"] == info["reference"]["steps"]
    objective, params0 = work_precision._setup(problem)
    W = params0["W"]
    theta = {"W": ref["theta"][: W.size].reshape(W.shape), "v": ref["theta"][W.size :]}
    assert abs(float(objective(theta)) - ref["final_loss"]) < 1e-12 * ref["final_loss"]


def test_default_beside_frontier():
    """speedups() states gflow twice: the frontier over its options and the one default run
    (`gflow.simulate`'s own solver and rtol), with ratios only where the default reaches 1e-6."""
    sys.path.insert(0, str(BENCH))
    try:
        import work_precision as wp
    finally:
        sys.path.remove(str(BENCH))
    method, rtol = wp.default_setting()

    def row(m, setting, wall, loss_error):
        return {"method": m, "family": wp.family(m), "setting": setting, "wall_s": wall, "grad_evals": 1,
                "loss_error": loss_error, "weight_error": 1e-3, "ok": True}

    rows = [row(method, rtol, 2.0, 5e-7), row(method, 1e-8, 4.0, 1e-9), row("gflow dopri8", 1e-4, 1.0, 1e-7),
            row("optax GD", 1e-2, 1.0, 1e-3), row("scipy DOP853", 1e-5, 30.0, 1e-7)]
    s = wp.speedups(rows)["loss_error/wall_s"]
    assert s["best"]["gflow"][:2] == (1.0, "gflow dopri8") and math.isclose(s["vs_gd"], 1e3) and s["vs_scipy"] == 30.0
    # GD extrapolated along its first-order line: 1 s at 1e-3 → 1000 s at 1e-6; the default took 2 s
    assert s["default"]["cost"] == 2.0 and s["default"]["reached"]
    assert math.isclose(s["default_vs_gd"], 500.0) and s["default_vs_scipy"] == 15.0
    w = wp.speedups(rows)["weight_error/wall_s"]
    assert not w["default"]["reached"] and w["default_vs_gd"] is None and w["default_vs_scipy"] is None

"""Plain adaptive solve vs gflow's switching-aware solve of ReLU gradient flows (issue 5).

For each problem and rtol in (1e-4, 1e-6, 1e-8) it reports accepted/rejected steps, final loss,
the error of the final weights against a reference, and wall time as a ratio plain/switching
(both compiled beforehand, measured in this process). The reference is the switching solve with
a second integrator (Dopri8, rtol 1e-12), cached in results/kinks/reference_*.npy (delete it to
recompute); with `--scipy RTOL` the final weights are also compared with scipy DOP853 (numpy
gradient, no JAX) at that rtol. scipy at rtol ≤ 1e-11 is out of reach on problems with sliding:
like every plain solver it chatters across the surface, at a cost ∝ 1/rtol.

    python benchmarks/kinks.py --quick          # the issue's problem only (< 2 min)
    python benchmarks/kinks.py                  # + digits and a width-100 net on 200 points
    python benchmarks/kinks.py --scipy 1e-9     # + scipy DOP853 comparison

Writes results/kinks/kinks.json and prints a markdown table.
"""

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import gflow
from gflow import baselines, data, losses, models


def problems(quick):
    yield "gaussian n=40 d=10 h=20", data.hyperplane(40, 10), 20, 1e-2, 5.0
    if quick:
        return
    X, y = data.digits((0, 1))
    yield "digits 0/1 n=360 d=64 h=20", (X, y), 20, 1e-2, 5.0
    yield "gaussian n=200 d=20 h=100", data.hyperplane(200, 20), 100, 1e-2, 5.0


def slug(name):
    return name.replace(" ", "_").replace("=", "").replace("/", "")


def flat(params):
    return np.concatenate([np.ravel(params["W"]), np.ravel(params["v"])])


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def reference(path, solve):
    """θ_ref(t1), cached in `path` (on the width-100 net it takes minutes)."""
    if path.exists():
        return np.load(path)
    ref = flat(solve(True, 1e-12, "dopri8").final_params)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, ref)
    return ref


def run(name, X, y, width, init_scale, t1, rtols, max_steps, scipy_rtol, out_dir):
    L = losses.objective(models.two_layer, "exponential", X, y, reduction="mean")
    params0 = models.init_two_layer(jax.random.PRNGKey(0), X.shape[1], width, init_scale)

    def solve(switching, rtol, solver="tsit5"):
        sw = L.switching if switching else False  # explicit: at rtol ≥ 1e-5 None would pick plain
        return gflow.simulate(L, params0, t1, rtol=rtol, solver=solver, switching=sw, max_steps=max_steps)

    ref = reference(out_dir / f"reference_{slug(name)}.npy", solve)
    scale = np.max(np.abs(ref))
    out = {"problem": name, "n": int(X.shape[0]), "d": int(X.shape[1]), "width": width, "rows": []}
    if scipy_rtol:
        grad = baselines.two_layer_numpy_grad(X, y, "exponential", "mean")
        _, ps, info = baselines.scipy_flow(
            lambda p: dict(zip(("W", "v"), grad(p["W"], p["v"]))),
            jax.tree.map(np.asarray, params0),
            t1,
            rtol=scipy_rtol,
        )
        out["scipy"] = {
            "rtol": scipy_rtol,
            "nfev": int(info["nfev"]),
            "wall": info["wall"],
            "error_vs_reference": float(np.max(np.abs(flat(ps[-1]) - ref)) / scale),
        }
    for switching in (False, True):
        solve(switching, rtols[0])  # compile once; rtol is traced
    for rtol in rtols:
        for switching in (False, True):
            traj, wall = timed(lambda: solve(switching, rtol))
            row = {
                "method": "switching" if switching else "plain",
                "rtol": rtol,
                "status": str(traj.status),
                "accepted": int(traj.num_accepted_steps),
                "rejected": int(traj.num_rejected_steps),
                "final_loss": float(traj.final_loss),
                "error": float(np.max(np.abs(flat(traj.final_params) - ref)) / scale),
                "wall": wall,
                "stats": {k: int(v) for k, v in traj.stats.items()},
            }
            if scipy_rtol:
                row["error_vs_scipy"] = float(np.max(np.abs(flat(traj.final_params) - flat(ps[-1]))) / scale)
            out["rows"].append(row)
    return out


def table(result):
    lines = [
        f"### {result['problem']}",
        "",
        "| rtol | method | accepted | rejected | total ratio | final loss | weight error | wall ratio "
        "| crossings (stepped over) | sliding |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = result["rows"]
    for plain, sw in zip(rows[::2], rows[1::2]):
        ratio = (plain["accepted"] + plain["rejected"]) / (sw["accepted"] + sw["rejected"])
        for r in (plain, sw):
            note = "" if r["status"] == "success" else f" ({r['status']})"
            lines.append(
                f"| {r['rtol']:.0e} | {r['method']}{note} | {r['accepted']:,} | {r['rejected']:,} | "
                + (f"{ratio:.3g}× | " if r is sw else "1 | ")
                + f"{r['final_loss']:.10f} | {r['error']:.1e} | "
                + (f"{plain['wall'] / sw['wall']:.2g}× | " if r is sw else "1 | ")
                + (
                    f"{r['stats']['num_crossings']} ({r['stats']['num_crossings_stepped_over']}) | "
                    f"{r['stats']['num_sliding_starts']} |"
                    if r is sw
                    else "| |"
                )
            )
    if "scipy" in result:
        s = result["scipy"]
        lines.append(
            f"\nscipy DOP853 rtol {s['rtol']:.0e}: {s['nfev']:,} evaluations, {s['wall']:.1f} s, "
            f"error vs reference {s['error_vs_reference']:.1e}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the issue's problem only")
    parser.add_argument("--scipy", type=float, default=0.0, help="also compare with scipy DOP853 at this rtol")
    parser.add_argument("--max-steps", type=int, default=400_000)
    parser.add_argument("--only", default="", help="run only problems whose name contains this")
    parser.add_argument("--out", type=Path, default=Path("results/kinks"))
    args = parser.parse_args()
    results = []
    for name, (X, y), width, init_scale, t1 in problems(args.quick):
        if args.only not in name:
            continue
        result = run(name, X, y, width, init_scale, t1, (1e-4, 1e-6, 1e-8), args.max_steps, args.scipy, args.out)
        print(table(result) + "\n", flush=True)
        results.append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = slug(args.only)
    (args.out / f"kinks{'_' + suffix if suffix else ''}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

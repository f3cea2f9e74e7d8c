"""The switching solve of this tree against a previous revision's, imported beside it in one
process: accepted/rejected steps, crossings and final parameters must agree (a refactor proves
itself by measurement).

    git -C /work/main archive HEAD gflow | tar -x -C /tmp/ab_old && mv /tmp/ab_old/gflow /tmp/ab_old/gflow_old
    nice -n 10 python benchmarks/ab_switching.py --old /tmp/ab_old [--only issue17,deep]

Cases: benchmarks/kinks.py's three problems at rtol 1e-6 (switching forced), issue 17's
reproducer (hyperplane(40, 10, seed 0), width 20, ε = 1e-3, exponential loss, sum reduction,
rtol 1e-6, t ≤ 5), and three objectives whose kinks `gflow.kinks.find` reads from the program
(benchmarks/kinks_any.py's deep, leaky and mlp models, rtol 1e-6). Prints a markdown table; the
largest relative difference of the final parameters is max|θ_new − θ_old| / max|θ_old|; wall is
the least of `--repeat` compiled calls (old and new alternating), compile the first call minus
that.

`--max-crossings B` gives both sides' own switching solves (the first four cases) B crossing
slots: the default buffer grew with K on 1d69a9c (`crossing_buffer`: 45 slots on the digits case,
K = 7,200, and 125 on the n = 200 case, K = 20,000, where 246eb4c had 32), which changes the steps
by itself; with the old buffer pinned only the solve's own changes remain.
"""

import argparse
import dataclasses
import importlib
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this tree's gflow, before an installed one


def two_layer(g, X, y, width, init_scale, reduction, balanced=False, seed=0):
    L = g.losses.objective(g.models.two_layer, "exponential", X, y, reduction=reduction)
    params0 = g.models.init_two_layer(jax.random.PRNGKey(seed), X.shape[1], width, init_scale, balanced=balanced)
    return L, params0


def cases(g):
    """name → (objective, params0, t1, rtol, switching) built with the package `g`."""
    X, y = g.data.hyperplane(40, 10)
    yield "kinks: gaussian n=40 d=10 h=20", *two_layer(g, X, y, 20, 1e-2, "mean"), 5.0, 1e-6, "own"
    X, y = g.data.digits((0, 1))
    yield "kinks: digits 0/1 n=360 d=64 h=20", *two_layer(g, X, y, 20, 1e-2, "mean"), 5.0, 1e-6, "own"
    X, y = g.data.hyperplane(200, 20)
    yield "kinks: gaussian n=200 d=20 h=100", *two_layer(g, X, y, 100, 1e-2, "mean"), 5.0, 1e-6, "own"
    X, y = g.data.hyperplane(40, 10, np.random.default_rng(0))
    yield "issue17: n=40 d=10 h=20 eps=1e-3 sum", *two_layer(g, X, y, 20, 1e-3, "sum", balanced=True), 5.0, 1e-6, "own"
    import kinks_any

    for kind in ("deep", "leaky", "mlp"):
        seed, t1 = kinks_any.HORIZONS[kind]
        L, params0, _, _ = kinks_any.problem(kind, seed)
        yield f"found: {kind} (kinks.find)", L, params0, t1, 1e-6, None


def solve(g, L, params0, t1, rtol, switching, max_crossings=None):
    sw = L.switching if switching == "own" else None
    if sw is not None and max_crossings is not None:
        sw = dataclasses.replace(sw, max_crossings=max_crossings)
    return g.simulate(L, params0, t1, rtol=rtol, switching=sw, max_steps=100_000, save_params=False)


def flat(params):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(params)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="folder holding the previous revision as gflow_old/")
    parser.add_argument("--only", default="", help="comma-separated substrings of case names")
    parser.add_argument("--repeat", type=int, default=1, help="compiled calls per side (alternating)")
    parser.add_argument("--max-crossings", type=int, default=None,
                        help="crossing slots of both sides' own switching solves (default: each side's default)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.old))
    old = importlib.import_module("gflow_old")
    import gflow as new

    assert Path(old.__file__).resolve() != Path(new.__file__).resolve()
    print(f"old: {Path(old.__file__).parent}\nnew: {Path(new.__file__).parent}\n")
    print("| case | old acc/rej | new acc/rej | crossings old/new | status | max rel Δθ | wall old/new (s) "
          "| compile old/new (s) |")
    print("|---|---|---|---|---|---|---|---|")
    only = [s for s in args.only.split(",") if s]
    for (name, *a_old), (_, *a_new) in zip(cases(old), cases(new)):
        if only and not any(s in name for s in only):
            continue
        out = {}
        for tag, g, a in (("old", old, a_old), ("new", new, a_new)):
            start = time.perf_counter()
            jax.block_until_ready(solve(g, *a, args.max_crossings))  # compile and run
            first = time.perf_counter() - start
            out[tag] = [None, first, first]
        for _ in range(args.repeat):  # alternating, so that both sides see the same load
            for tag, g, a in (("old", old, a_old), ("new", new, a_new)):
                start = time.perf_counter()
                traj = jax.block_until_ready(solve(g, *a, args.max_crossings))
                wall = time.perf_counter() - start
                out[tag] = [traj, min(out[tag][1], wall), out[tag][2]]
        out = {tag: (traj, wall, first - wall) for tag, (traj, wall, first) in out.items()}
        (o, wo, co), (n, wn, cn) = out["old"], out["new"]
        ref = flat(o.final_params)
        diff = np.max(np.abs(flat(n.final_params) - ref)) / np.max(np.abs(ref))
        cross = lambda t: int(t.stats.get("num_crossings", -1))
        print(
            f"| {name} | {int(o.num_accepted_steps)}/{int(o.num_rejected_steps)} | "
            f"{int(n.num_accepted_steps)}/{int(n.num_rejected_steps)} | {cross(o)}/{cross(n)} | "
            f"{o.status}/{n.status} | {diff:.1e} | {wo:.2f}/{wn:.2f} | {co:.0f}/{cn:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

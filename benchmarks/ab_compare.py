"""A/B: this checkout's gflow against another revision's, imported beside it in one process.

    python benchmarks/ab_compare.py [--old-rev REV] [--old-repo DIR]

The old revision's `gflow` package is extracted with `git archive` into a temporary folder,
renamed `gflow_old` (gflow imports itself only relatively) and imported next to `gflow`. Each
case is solved by both; the script prints num_steps (old / new) and the largest relative
difference of the final parameters, and exits 1 if any step count differs or a final parameter
differs by more than 1e-12 relative (the refactors it checks must not change a single step).
"""

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
ROOT = Path(__file__).resolve().parents[1]


def import_old(repo, rev):
    where = Path(tempfile.mkdtemp(prefix="ab_old_"))
    archive = subprocess.run(["git", "-C", repo, "archive", rev, "gflow"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    (where / "gflow").rename(where / "gflow_old")
    sys.path.insert(0, str(where))
    return importlib.import_module("gflow_old")


def rel_diff(a, b):
    a, b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)]), np.concatenate(
        [np.ravel(x) for x in jax.tree.leaves(b)]
    )
    ok = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return np.inf
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300), initial=0.0))


def tanh_case(g):
    X, y = g.data.hyperplane(40, 10, seed=0)
    L = g.losses.objective(lambda p, X: g.models.two_layer(p, X, "tanh"), "logistic", X, y)
    p0 = g.models.init_two_layer(jax.random.PRNGKey(0), 10, 20, 0.5, activation="tanh")
    return g.simulate(L, p0, 100.0, rtol=1e-9, saveat=jnp.linspace(0, 100, 6), event=lambda p: L(p) - 0.2)


def relu_case(g):
    X, y = g.data.hyperplane(40, 10, seed=0)
    L = g.losses.objective(g.models.two_layer, "exponential", X, y)
    p0 = g.models.init_two_layer(jax.random.PRNGKey(0), 10, 20, 1e-2)
    return g.simulate(L, p0, 5.0, rtol=1e-7, saveat=jnp.linspace(0, 5, 6))


def _batch_problem(g, count):
    X, y = g.data.hyperplane(40, 10, seed=0)
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y)}

    def objective(p, a):
        return jnp.mean(jnp.log1p(jnp.exp(-a["y"] * g.models.two_layer(p, a["X"], "tanh"))))

    keys = jax.random.split(jax.random.PRNGKey(1), count)
    inits = [g.models.init_two_layer(k, 10, 20, s, activation="tanh") for k, s in zip(keys, [1e-3, 1e-1, 0.5][:count])]
    P = jax.tree.map(lambda *xs: jnp.stack(xs), *inits)
    return objective, P, args


def batch_case(lanes, count):
    def run(g):
        objective, P, args = _batch_problem(g, count)
        traj, _ = g.batching.solve_batch(objective, P, 100.0, args=args, shared_args=True, rtol=1e-8,
                                         saveat=jnp.linspace(0, 100, 4), lanes=lanes,
                                         event=lambda p, a: objective(p, a) - 0.2)
        return traj

    return run


def sweep_case(g, out):
    spec = g.sweep.Spec(problem="two_layer_separated", axes={"init_scale": [1e-3, 1e-1], "seed": [0, 1]},
                        fixed={"n": 6, "width": 8}, t1=3.0, num_saves=3, rtol=1e-7, lanes=2)
    g.sweep.run(spec, out=out, progress=False)
    ds = g.sweep.load(out)
    return ds["num_steps"].values, ds["loss"].values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="HEAD")
    parser.add_argument("--old-repo", default="/work/main")
    parser.add_argument("--new-root", default=str(ROOT), help="folder holding the new gflow package")
    a = parser.parse_args()
    sys.path.insert(0, a.new_root)
    import gflow as new

    old = import_old(a.old_repo, a.old_rev)
    print(f"old: {a.old_repo}@{a.old_rev} ({old.__file__}); new: {new.__file__}")
    cases = {
        "simulate plain (tanh, rtol 1e-9, event L = 0.2)": tanh_case,
        "simulate switching (relu, hyperplane(40,10), width 20, eps 1e-2, rtol 1e-7)": relu_case,
        "solve_batch 1 lane (3 points, event L = 0.2)": batch_case(1, 3),
        "solve_batch 3 lanes (3 points, event L = 0.2)": batch_case(3, 3),
    }
    failed = False
    for name, fn in cases.items():
        walls = []
        trajs = []
        for g in (old, new):
            start = time.perf_counter()
            t = jax.tree.map(np.asarray, fn(g))
            walls.append(time.perf_counter() - start)
            trajs.append(t)
        o, n = trajs
        same_steps = np.array_equal(o.num_steps, n.num_steps) and np.array_equal(o.num_grad_evals, n.num_grad_evals)
        d_final = rel_diff(n.final_params, o.final_params)
        d_loss = rel_diff(n.loss, o.loss)
        same_status = np.array_equal(o.status_code, n.status_code) and rel_diff(n.t_event, o.t_event) <= 1e-12
        print(f"{name}: num_steps old {o.num_steps.tolist()} new {n.num_steps.tolist()}; "
              f"status {o.status_code.tolist()} / {n.status_code.tolist()}; t_event {n.t_event.tolist()}; max rel diff final params "
              f"{d_final:.3g}, loss {d_loss:.3g}; stats keys old {sorted(o.stats)} new {len(n.stats)}; "
              f"wall old {walls[0]:.2f} s new {walls[1]:.2f} s (first call, compile included)")
        failed |= not (same_steps and same_status and d_final <= 1e-12 and d_loss <= 1e-12)
    with tempfile.TemporaryDirectory() as tmp:
        (so, lo), (sn, ln) = (sweep_case(g, Path(tmp) / g.__name__) for g in (old, new))
    d = rel_diff(ln, lo)
    print(f"sweep.run (2x2 grid, lanes 2): num_steps old {so.ravel().tolist()} new {sn.ravel().tolist()}; "
          f"max rel diff loss {d:.3g}")
    failed |= not (np.array_equal(so, sn) and d <= 1e-12)
    print("FAIL" if failed else "OK: step counts equal, final params/losses equal to 1e-12")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of `gflow.sweep` against the two obvious alternatives, in one process run.

For each grid it times (warm: an untimed run to t1/1000 first compiles the same programs):

- `loop`:  a Python loop of the jitted `gflow.simulate`, one point after another;
- `vmap`:  `jax.jit(jax.vmap(simulate))` per group of equal shapes (all lanes in lockstep until
  the slowest is done);
- `sweep`: `gflow.sweep.run` with `--workers` threads, `--lanes` lanes per chunk and `--chunk`
  points per chunk (default: gflow's defaults, lanes="auto": on a CPU one lane and one point per
  chunk), including its planning and file writes;
- `balanced`: the same with `balance=True` (a pilot solve at 100× the rtol orders the points by
  cost: longest first, into the least loaded chunk), the pilot included in the time.

Grids (two-layer ReLU, balanced init, exponential loss summed over μ-separated data from
`gflow.data.separated`, T = 40, rtol 1e-6): `init16`, 16 init scales 1e-8…1e-2 on one dataset
(μ = 0.3, n = 200, d = 256, width 100); `grid444`, 4×4×4 (ε, μ, n); `mixed`, init scales × μ on
less separated data (n = 200, d = 50, orthant construction), where step counts differ by 10× or
more. `--full` (the default) runs the issue's sizes; `--quick` shrinks n, d and the width so
that the whole run takes a few minutes.

Prints a table and writes JSON (default results/sweep_throughput.json): wall times and CPU
seconds (all threads), speed-ups as ratios, the vmap's lockstep efficiency (mean steps / max
steps per group), the sweep's per-chunk efficiency, and the largest difference in final loss
between the sweep and the loop.
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import data, models, sweep


def objective(params, args):
    return jnp.sum(jnp.exp(-args["y"] * models.two_layer(params, args["X"])))


def param_norm(params, args):
    return gflow.observables.param_norm(params)


OBSERVABLES = {"param_norm": param_norm}


def problem(point):
    """One grid point: data of separation μ (equiangular if d ≥ n + 1), balanced init at ε."""
    X, y = _data(point["n"], point["d"], point["mu"], point["seed"])
    params0 = models.init_two_layer(jax.random.PRNGKey(point["seed"]), point["d"], point["width"], point["init_scale"])
    return sweep.Problem(objective, params0, {"X": X, "y": y}, OBSERVABLES)


@functools.cache
def _data(n, d, mu, seed):
    return data.separated(seed, n, d, mu, equiangular=d >= n + 1)


# Small inits leave the plateau late and cross many ReLU kinks (~1,450 steps at μ = 0.05); large
# ones on well-separated data converge in few steps (~140 at ε = 2.5, μ = 0.9): a 10× spread.
MIXED_INIT_SCALES = [1e-8, 1e-6, 1e-4, 1e-2, 0.5, 1.0, 2.0, 2.5]


def grids(quick):
    n, d, w = (40, 64, 20) if quick else (200, 256, 100)
    ns = [5, 10, 20, 40] if quick else [25, 50, 100, 200]
    base = {"seed": 0, "width": w}
    return {
        "init16": ({"init_scale": list(np.logspace(-8, -2, 16))}, {**base, "mu": 0.3, "n": n, "d": d}),
        "grid444": (
            {"init_scale": [1e-6, 1e-5, 1e-4, 1e-3], "mu": [0.1, 0.2, 0.4, 0.8], "n": ns},
            {**base, "d": d},
        ),
        "mixed": (
            {"init_scale": MIXED_INIT_SCALES, "mu": [0.05, 0.3, 0.9]},
            {**base, "n": n, "d": 10 if quick else 50},
        ),
    }


def run_loop(spec, ts):
    final, steps = {}, {}
    for i, point in enumerate(spec.points()):
        p = problem(point)
        traj = gflow.simulate(
            objective, p.params0, spec.t1, args=p.args, saveat=ts, rtol=spec.rtol,
            observables=OBSERVABLES, save_params=False, max_steps=spec.max_steps,
        )
        final[i], steps[i] = float(traj.loss[-1]), int(traj.num_steps)
    return final, steps


@functools.cache
def _vmapped(rtol, max_steps, shared):
    def one(p, a, ts):
        return gflow.simulate(
            objective, p, ts[-1], args=a, saveat=ts, rtol=rtol, observables=OBSERVABLES,
            save_params=False, max_steps=max_steps,
        )

    return jax.jit(jax.vmap(one, in_axes=(0, None if shared else 0, None)))


def run_vmap(spec, ts):
    final, steps, efficiency = {}, {}, []
    points = spec.points()
    for group in sweep.groups(spec):
        probs = [problem(points[i]) for i in group]
        P = jax.tree.map(lambda *x: jnp.stack(x), *[p.params0 for p in probs])
        shared = all(sweep._same(probs[0].args, p.args) for p in probs)
        A = probs[0].args if shared else jax.tree.map(lambda *x: jnp.stack(x), *[p.args for p in probs])
        traj = _vmapped(spec.rtol, spec.max_steps, shared)(P, A, ts)
        n_steps = np.asarray(traj.num_steps)
        efficiency.append(float(n_steps.mean() / n_steps.max()))
        for k, i in enumerate(group):
            final[i], steps[i] = float(traj.loss[k, -1]), int(n_steps[k])
    return final, steps, efficiency


def run_sweep(spec, ts, out, workers, balance, chunk):
    if chunk == 0:  # one chunk per worker and group (the layout used before lanes="auto")
        chunk = math.ceil(max(map(len, sweep.groups(spec))) / workers)
    ds = sweep.run(spec, out=out, chunk_size=chunk, progress=False, resume=False, workers=workers,
                   balance=balance)
    final = ds["loss"].isel(time=-1).values.ravel()
    return (dict(enumerate(final)), ds["chunk_efficiency"].values.tolist(), ds["num_steps"].values.ravel(),
            ds["chunk_wall_time"].values.tolist())


def timed(fn, spec, *args):
    """(wall seconds, CPU seconds of all threads, result) of a warm call: a first call on
    [0, t1/1000] compiles the same programs (t1 is traced, not baked in)."""
    short = dataclasses.replace(spec, t1=spec.t1 / 1000)
    fn(short, jnp.linspace(0.0, short.t1, short.num_saves), *args)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(spec, jnp.linspace(0.0, spec.t1, spec.num_saves), *args)
    return time.perf_counter() - start, time.process_time() - cpu, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small problems, a few minutes")
    size.add_argument("--full", action="store_true", help="the issue's sizes (the default)")
    parser.add_argument("--lanes", type=lambda v: v if v == "auto" else int(v), default="auto",
                        help="pool width of each sweep chunk (default: gflow's 'auto')")
    parser.add_argument("--chunk", type=int, default=None,
                        help="points per chunk (default: gflow's; 0: one chunk per worker and group)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="sweep threads")
    parser.add_argument("--grids", default="init16,grid444,mixed")
    parser.add_argument("--skip-vmap", action="store_true", help="do not time the vmap (NaN)")
    parser.add_argument("--skip-balanced", action="store_true",
                        help="time only the grid-order sweep (then the balanced columns repeat it)")
    parser.add_argument("--out", type=Path, default=Path("results/sweep_throughput.json"))
    args = parser.parse_args(argv)
    report = {"quick": args.quick, "skip_vmap": args.skip_vmap, "skip_balanced": args.skip_balanced,
              "lanes": args.lanes, "chunk": args.chunk, "workers": args.workers, "device": str(jax.devices()[0]),
              "cpu_count": os.cpu_count(), "grids": {}}
    table = grids(args.quick)
    for name in args.grids.split(","):
        axes, fixed = table[name]
        spec = sweep.Spec(problem=problem, axes=axes, fixed=fixed, t1=40.0, num_saves=2, rtol=1e-6, lanes=args.lanes)
        t_loop, c_loop, (loss_loop, steps) = timed(run_loop, spec)
        if args.skip_vmap:
            t_vmap, c_vmap, vmap_eff = math.nan, math.nan, [math.nan]
        else:
            t_vmap, c_vmap, (_, _, vmap_eff) = timed(run_vmap, spec)
        sweeps = {}
        for balance in (False, True)[: 1 if args.skip_balanced else 2]:
            with tempfile.TemporaryDirectory() as tmp:
                sweeps[balance] = timed(run_sweep, spec, Path(tmp), args.workers, balance, args.chunk)
        t_sweep, c_sweep, (loss_sweep, sweep_eff, sweep_steps, sweep_chunk_wall) = sweeps[False]
        t_bal, c_bal, (loss_bal, bal_eff, bal_steps, bal_chunk_wall) = sweeps.get(True, sweeps[False])
        ref = np.array([loss_loop[i] for i in sorted(loss_loop)])
        got = np.array([loss_sweep[i] for i in sorted(loss_sweep)])
        got_bal = np.array([loss_bal[i] for i in sorted(loss_bal)])
        counts = np.array([steps[i] for i in sorted(steps)])
        row = {
            "points": len(ref),
            "steps_min": int(counts.min()),
            "steps_max": int(counts.max()),
            "steps_equal_to_loop": bool(np.array_equal(counts, sweep_steps) and np.array_equal(counts, bal_steps)),
            "seconds": {"loop": t_loop, "vmap": t_vmap, "sweep": t_sweep, "sweep_balanced": t_bal},
            "cpu_seconds": {"loop": c_loop, "vmap": c_vmap, "sweep": c_sweep, "sweep_balanced": c_bal},
            "speedup_vs_loop": t_loop / t_sweep,
            "speedup_vs_vmap": t_vmap / t_sweep,
            "balanced_speedup_vs_loop": t_loop / t_bal,
            "balanced_speedup_vs_vmap": t_vmap / t_bal,
            "vmap_over_loop": t_vmap / t_loop,
            "vmap_lockstep_efficiency": vmap_eff,
            "sweep_chunk_efficiency": sweep_eff,
            "sweep_chunk_wall_time": sweep_chunk_wall,
            "balanced_chunk_efficiency": bal_eff,
            "balanced_chunk_wall_time": bal_chunk_wall,
            "max_rel_diff_final_loss_sweep_vs_loop": float(
                max(np.max(np.abs(x - ref) / np.abs(ref)) for x in (got, got_bal))
            ),
        }
        report["grids"][name] = row
        print(
            f"{name:8s} {len(ref):3d} pts, steps {row['steps_min']}…{row['steps_max']}: "
            f"loop {t_loop:6.2f} s, vmap {t_vmap:6.2f} s, sweep {t_sweep:6.2f} s, balanced "
            f"{t_bal:6.2f} s → sweep {row['speedup_vs_loop']:.2f}× / balanced "
            f"{row['balanced_speedup_vs_loop']:.2f}× vs loop, {row['speedup_vs_vmap']:.2f}× / "
            f"{row['balanced_speedup_vs_vmap']:.2f}× vs vmap (CPU s: loop {c_loop:.1f}, vmap "
            f"{c_vmap:.1f}, sweep {c_sweep:.1f}, balanced {c_bal:.1f}); efficiency vmap "
            f"{np.mean(vmap_eff):.2f}, sweep {np.mean(sweep_eff):.2f}, balanced {np.mean(bal_eff):.2f}; "
            f"max rel diff {row['max_rel_diff_final_loss_sweep_vs_loop']:.1e}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))  # after each grid: partial runs count
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

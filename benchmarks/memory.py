"""Memory benchmark: a long solve keeps memory O(state + observables), not O(steps).

Issue 7, comparison 5. The solve of `gflow.simulate` (two-layer ReLU, exponential loss, μ-separated
data) is compiled with `jax.jit(...).lower(...).compile()` and XLA's buffer assignment reports
its peak memory (`memory_analysis().peak_memory_in_bytes`: arguments + outputs + temporaries),
the same number on every run and every machine load. gflow runs the plain adaptive solve
(`switching=False`); in full mode the event-driven switching solve (gflow's default for ReLU
nets, with its pattern of n·h signs and sliding buffers in the state) is measured as well.
Three ways of recording a trajectory:

- gflow, observables only (`save_params=False`): loss, ‖w_j‖ and v_j² − ‖w_j‖² at the save times;
- gflow, full weights saved at the same times (`save_params=True`);
- diffrax `SaveAt(steps=True)`, recording θ at every step, as one would without gflow.

Expected: gflow's peak does not change with `max_steps`, grows with the number of save times only
by the saved values (observables: O(h) per save; weights: O(h·d) per save); `steps=True` grows
with `max_steps` × state. In full mode the longest observables-only configuration is also run.

Run standalone: `python benchmarks/memory.py [--quick] [--out DIR]`.
"""

import argparse
import json
import time
from pathlib import Path

import diffrax
import jax
import numpy as np

import gflow
from gflow import losses, models, observables

N, D, WIDTH, INIT_SCALE, MU = 200, 50, 100, 1e-4, 0.3
FULL = {"t1": 1e4, "saves": (10, 10_000), "max_steps": (10_000, 1_000_000), "steps_true": (1_000, 10_000),
        "switching_saves": (10,)}
QUICK = {"t1": 100.0, "saves": (1000,), "max_steps": (10_000,), "steps_true": (), "switching_saves": ()}
OBSERVABLES = {"neuron_norms": observables.neuron_norms, "balancedness": observables.balancedness}


def problem():
    """(objective, params0) of the memory benchmark."""
    X, y = gflow.data.separated(np.random.default_rng(0), N, D, MU, equiangular=False)
    objective = losses.objective(models.two_layer, losses.exponential, X, y, "sum")
    return objective, models.init_two_layer(jax.random.PRNGKey(0), D, WIDTH, INIT_SCALE)


def gflow_solve(objective, t1, saves, max_steps, save_params, switching=False):
    """The jitted gflow solve for one configuration (a function of params0); `switching=None`
    is gflow's default for this objective, the switching solve."""
    ts = np.linspace(0.0, t1, saves)

    def solve(params0):
        return gflow.simulate(objective, params0, t1, saveat=ts, observables=OBSERVABLES,
                              save_params=save_params, max_steps=max_steps, switching=switching)  # fmt: skip

    return jax.jit(solve)


def steps_solve(objective, t1, max_steps):
    """diffrax recording θ at every step: memory max_steps × state."""

    def solve(params0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(gflow.vector_field(objective)), diffrax.Tsit5(), 0.0, t1, None, params0,
            saveat=diffrax.SaveAt(steps=True),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-12),
            max_steps=max_steps, throw=False,
        ).ys  # fmt: skip

    return jax.jit(solve)


def peak_bytes(jitted, params0):
    """(compiled executable, XLA's peak memory in bytes) of `jitted` at params0."""
    compiled = jitted.lower(params0).compile()
    return compiled, int(compiled.memory_analysis().peak_memory_in_bytes)


def run(quick=False, log=print):
    """Peak memory of every configuration; returns a JSON-ready dict."""
    cfg = QUICK if quick else FULL
    objective, params0 = problem()
    state = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params0))
    log(f"memory: n={N}, d={D}, h={WIDTH}, state {state / 1e3:.1f} kB, T={cfg['t1']:g}")
    log(f"  {'recording':<22} {'saves':>7} {'max_steps':>10} {'peak MB':>10}")
    rows = []

    def add(recording, saves, max_steps, jitted):
        compiled, peak = peak_bytes(jitted, params0)
        rows.append({"recording": recording, "saves": saves, "max_steps": max_steps, "peak_bytes": peak})
        log(f"  {recording:<22} {saves:>7} {max_steps:>10} {peak / 1e6:>10.3f}")
        return compiled

    longest = None
    for max_steps in cfg["max_steps"]:
        for saves in cfg["saves"]:
            for save_params, recording in ((False, "gflow observables"), (True, "gflow weights")):
                compiled = add(recording, saves, max_steps, gflow_solve(objective, cfg["t1"], saves, max_steps, save_params))
                if not save_params:
                    longest = compiled
        for saves in cfg["switching_saves"]:
            add("gflow switching obs.", saves, max_steps,
                gflow_solve(objective, cfg["t1"], saves, max_steps, False, switching=None))  # fmt: skip
    for max_steps in cfg["steps_true"]:
        add("diffrax SaveAt(steps)", max_steps, max_steps, steps_solve(objective, cfg["t1"], max_steps))

    solve = None
    if not quick:
        start = time.perf_counter()
        traj = jax.block_until_ready(longest(params0))
        solve = {"saves": cfg["saves"][-1], "max_steps": cfg["max_steps"][-1], "t1": cfg["t1"],
                 "status": str(traj.status), "num_steps": int(traj.num_steps),
                 "final_loss": float(traj.final_loss), "wall_s": time.perf_counter() - start}  # fmt: skip
        log(f"  ran the longest observables-only solve: {solve['num_steps']} steps to T={cfg['t1']:g}, "
            f"status {solve['status']}, {solve['wall_s']:.1f} s")  # fmt: skip
    return {"state_bytes": state, "n": N, "d": D, "h": WIDTH, "t1": cfg["t1"], "rows": rows, "long_solve": solve}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two configurations only")
    parser.add_argument("--out", default="results/bench", help="output folder for memory.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(run(args.quick), indent=1))
    print(f"wrote {out / 'memory.json'}")


if __name__ == "__main__":
    main()

"""Work-precision benchmark: one gradient-flow trajectory, gflow against the tools in use today.

Issue 3 (benchmark) and issue 7 (comparison 1). Problem: the two-layer ReLU network
f(x) = Σ_j v_j relu(w_jᵀx) of Min, Mallada & Vidal (2024) with the exponential loss summed over
the data, from balanced small initialisation at scale ε, flowed to time T. Data: μ-separated
(`gflow.data.separated`: equiangular when d ≥ n + 1, else every cosine ≥ μ; issue 7's n=200,
d=256 and, with `--issue3`, issue 3's n=200, d=50) and scikit-learn's digits (0 vs 1, centred).

Methods, all integrating the same flow dθ/dt = −∇L(θ) on [0, T] in float64:

- gflow: `gflow.simulate(gflow.objective(two_layer, ...), ...)` with Tsit5, Dopri5, Dopri8 at
  several rtol, as a user gets it: the objective carries its ReLU switching surfaces, so the
  event-driven Filippov solve (`gflow.switching`) is on; scale-aware atol.
- gflow plain: the same with `switching=False`, the plain adaptive solve that steps over kinks;
- naive diffrax: `diffrax.diffeqsolve` with Tsit5 and `PIDController(rtol, atol=rtol)`, the call
  one writes without gflow;
- optax GD: `gflow.baselines.gradient_descent` at several lr (GD is the Euler method of the flow,
  error O(lr), cost T/lr gradients);
- scipy: `solve_ivp` DOP853 (and LSODA where `Problem.lsoda`) through `gflow.baselines.scipy_flow`
  on the pure-numpy gradient `gflow.baselines.two_layer_numpy_grad`.

The flow is piecewise smooth (∇L jumps where a pre-activation w_jᵀx_i changes sign), so the
reference is the switching solve with Dopri8 at a tight rtol; its uncertainty is estimated by a
second solve at 10× its rtol, and it is cross-checked against scipy DOP853 at `xcheck_rtol`
(an independent integrator and gradient). Errors are relative: |L(θ(T)) − L_ref| / L_ref (final
loss) and ‖θ(T) − θ_ref‖ / ‖θ_ref‖ (final weights). Wall times exclude JIT compilation: every
jitted function is warmed up on the same problem first (rtol and lr are traced, so changing them
does not recompile). Costs at equal accuracy: `cost_at_accuracy`.

Run standalone: `python benchmarks/work_precision.py [--quick] [--issue3] [--only NAME] [--out DIR]
[--no-cache]`; the references are cached in DIR as `ref-<hash>.npz` (`reference`).
"""

import argparse
import hashlib
import inspect
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import baselines, models

TARGET = 1e-6  # the accuracy at which the issues compare speed (final loss and final weights)


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: data, network, ε, horizon T and the method settings to try."""

    name: str
    data: str  # "separated" or "digits"
    n: int
    d: int  # ignored for digits (d = 64)
    width: int
    init_scale: float
    t1: float
    rtols: tuple[float, ...]  # gflow (switching solve)
    plain_rtols: tuple[float, ...]  # gflow plain and naive diffrax
    lrs: tuple[float, ...]  # optax GD
    scipy_rtols: tuple[float, ...]
    ref_rtol: float  # the switching reference
    xcheck_rtol: float | None  # scipy DOP853 cross-check of the reference (None: not run)
    mu: float = 0.3
    solvers: tuple[str, ...] = ("tsit5", "dopri5", "dopri8")
    plain_solvers: tuple[str, ...] = ("tsit5", "dopri5")
    ref_solver: str = "dopri8"
    lsoda: bool = False
    seed: int = 0


# Issue 7's problems: μ-separated n=200, d=256 and digits. Switching solve with Tsit5 and
# Dopri8 (Dopri5 adds one compilation and lies between them); the plain solve with Dopri5 (best
# in final weights) and Dopri8 (best in final loss) in the earlier, plain-only runs (d=256:
# Tsit5, issue 7's orientation figures, and Dopri5; plain Dopri8 costs ~10⁵ ∇L at rtol 1e-6 there,
# and its final-weight error needs rtol ~1e-9 to approach 1e-6). scipy's
# cost grows ~3-4× per decade of rtol on these kinks (n=200, d=50: rtol 1e-9 did not finish in
# 19 min), so the scipy check of the reference at rtol 1e-11 runs on the small problem only.
FULL = (
    Problem("separated n200 d256", "separated", 200, 256, 100, 1e-4, 40.0,
            rtols=(1e-4, 1e-6, 1e-7, 1e-8), plain_rtols=(1e-5, 1e-7, 1e-9), lrs=(2e-2, 1e-2),
            scipy_rtols=(1e-4, 1e-5, 1e-6), ref_rtol=1e-9, xcheck_rtol=None,
            solvers=("tsit5", "dopri8"), plain_solvers=("tsit5", "dopri5")),
    Problem("digits 0/1 n100", "digits", 100, 64, 50, 1e-4, 10.0,
            rtols=(1e-4, 1e-6, 1e-8), plain_rtols=(1e-4, 1e-5, 1e-6), lrs=(1e-2, 5e-3),
            scipy_rtols=(1e-4, 1e-5, 1e-6), ref_rtol=1e-10, xcheck_rtol=1e-7,
            solvers=("tsit5", "dopri8"), plain_solvers=("dopri5", "dopri8")),
    Problem("separated n20 d30", "separated", 20, 30, 10, 1e-4, 5.0,
            rtols=(1e-4, 1e-6, 1e-8), plain_rtols=(1e-4, 1e-5, 1e-6), lrs=(2e-2, 1e-2),
            scipy_rtols=(1e-5, 1e-6), ref_rtol=1e-11, xcheck_rtol=1e-11,
            solvers=("tsit5", "dopri8"), plain_solvers=("dopri5", "dopri8")),
)  # fmt: skip

# Issue 3's problem (`--issue3`): μ-separated n=200, d=50.
ISSUE3 = (
    Problem("separated n200 d50", "separated", 200, 50, 100, 1e-4, 40.0,
            rtols=(1e-4, 1e-6, 1e-8), plain_rtols=(1e-4, 1e-5, 1e-6), lrs=(2e-2, 1e-2, 5e-3),
            scipy_rtols=(1e-5, 1e-6), ref_rtol=1e-11, xcheck_rtol=None,
            solvers=("tsit5", "dopri8"), plain_solvers=("dopri5", "dopri8")),
)  # fmt: skip

# Tiny, and few compilations: the reference is a tight switching Tsit5 solve (the solver measured).
QUICK = (
    Problem("separated n20 d30 (quick)", "separated", 20, 30, 10, 1e-4, 5.0,
            rtols=(1e-4, 1e-7), plain_rtols=(1e-4, 1e-7), lrs=(2e-2, 1e-2), scipy_rtols=(1e-5,),
            ref_rtol=1e-12, xcheck_rtol=1e-8, solvers=("tsit5",), plain_solvers=("tsit5",),
            ref_solver="tsit5"),
)  # fmt: skip

MAX_STEPS = 2_000_000
BUDGET_S = 30.0  # a setting is skipped when the looser one already took longer (noisy machine)
FAMILIES = ("gflow", "gflow plain", "naive diffrax", "optax GD", "scipy")


def family(method):
    """The tool a row measures, one of `FAMILIES`: "gflow tsit5" → "gflow", "scipy DOP853" → "scipy"."""
    return next(f for f in sorted(FAMILIES, key=len, reverse=True) if method.startswith(f))


def make_data(problem):
    """(X, y) of a `Problem`: μ-separated data (`gflow.data.separated`, equiangular when
    d ≥ n + 1, else cosines ≥ μ) or digits subsampled to n examples."""
    rng = np.random.default_rng(problem.seed)
    if problem.data == "separated":
        equiangular = problem.d >= problem.n + 1
        return gflow.data.separated(rng, problem.n, problem.d, problem.mu, equiangular=equiangular)
    if problem.data == "digits":
        X, y = gflow.data.digits((0, 1))
        idx = rng.choice(len(y), size=min(problem.n, len(y)), replace=False)
        return X[idx], y[idx]
    raise ValueError(f"unknown data {problem.data!r}: use 'separated' or 'digits'")


def _timed(fn, min_total=1.0, max_repeats=3, long=5.0):
    """(result, best wall time in s) of `fn()`: calls under `long` s run at least twice (the
    machine is shared; the best of the repeats is the least disturbed)."""
    times = []
    while True:
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
        if len(times) >= max_repeats or times[0] > long or (len(times) >= 2 and sum(times) >= min_total):
            return out, min(times)


@eqx.filter_jit
def naive_diffrax(objective, params0, t1, rtol, max_steps):
    """The flow as one writes it with diffrax alone: Tsit5, PIDController(rtol, atol=rtol)."""
    term = diffrax.ODETerm(lambda t, y, args: jax.tree.map(jnp.negative, jax.grad(objective)(y)))
    sol = diffrax.diffeqsolve(
        term, diffrax.Tsit5(), 0.0, t1, None, params0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol),
        max_steps=max_steps, throw=False,
    )  # fmt: skip
    return jax.tree.map(lambda x: x[-1], sol.ys), sol.stats["num_steps"], sol.result


def _flat(params):
    return np.concatenate([np.ravel(np.asarray(params[k])) for k in ("W", "v")])


def _sweep(settings, measure, predict=None, log=print):
    """Run `measure(s)` for settings ordered cheap → expensive, skipping once over budget.

    `predict(row, s)` estimates the wall time of setting s from the last row (GD: wall ∝ 1/lr);
    without it a setting is skipped when the previous one already took more than BUDGET_S.
    """
    rows, last = [], None
    for s in settings:
        if last is not None:
            expected = predict(last, s) if predict else last["wall_s"]
            if expected > BUDGET_S:
                log(f"  skipped {last['method']} {s:.0e}: expected > {BUDGET_S:g} s")
                continue
        last = measure(s)
        rows.append(last)
        log(f"  {last['method']:<18} {last['setting']:8.0e}  wall {last['wall_s']:8.3f} s  "
            f"grads {last['grad_evals']:>9}  L(T) {last['final_loss']:.12e}"
            + (f"  crossings {last['crossings']}" if last.get("crossings") is not None else "")
            + ("" if last["ok"] else "  [FAILED]"))  # fmt: skip
    return rows


def _relative_errors(loss, theta, loss_ref, theta_ref):
    return {
        "loss": abs(loss - loss_ref) / abs(loss_ref),
        "weights": float(np.linalg.norm(theta - theta_ref) / np.linalg.norm(theta_ref)),
    }


def _setup(problem):
    """(objective, params0) of `problem`: the sum-reduced exponential loss of the two-layer net."""
    X, y = make_data(problem)
    objective = gflow.objective(models.two_layer, "exponential", X, y, "sum")
    params0 = models.init_two_layer(jax.random.PRNGKey(problem.seed), X.shape[1], problem.width,
                                    problem.init_scale)  # fmt: skip
    return objective, params0


def reference_key(problem, rtol):
    """Hash of what determines a reference solve: the problem's data, network, ε, T, seed, the
    reference solver and rtol (not the settings of the methods compared against it)."""
    fields = {k: getattr(problem, k) for k in ("data", "n", "d", "width", "init_scale", "t1", "mu", "seed")}
    text = json.dumps({**fields, "method": f"switching {problem.ref_solver}", "rtol": rtol}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference(problem, rtol, cache=None, log=print):
    """The switching `problem.ref_solver` solve of `problem` at `rtol`, as a dict (theta: flat
    final weights, final_loss, steps, crossings, wall_s, status). With a `cache` folder it is
    computed once, saved as `ref-<reference_key>.npz` and loaded by later runs (issue 7's
    n=200, d=256 reference takes tens of minutes)."""
    path = None if cache is None else Path(cache) / f"ref-{reference_key(problem, rtol)}.npz"
    if path is not None and path.exists():
        log(f"  reference rtol {rtol:.0e}: cached {path}")
        return dict(np.load(path))
    objective, params0 = _setup(problem)
    start = time.perf_counter()
    traj = gflow.simulate(objective, params0, problem.t1, solver=problem.ref_solver, rtol=rtol,
                          max_steps=MAX_STEPS)  # fmt: skip
    out = {"theta": _flat(traj.final_params), "final_loss": float(traj.final_loss),
           "steps": int(traj.num_steps), "crossings": int(traj.stats["num_crossings"]),
           "wall_s": time.perf_counter() - start, "status": int(traj.status_code)}  # fmt: skip
    if not traj.ok:
        raise RuntimeError(f"reference solve of {problem.name} at rtol {rtol:g} failed: {traj.status}")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def run_problem(problem, log=print, cache=None):
    """Measure every method on `problem`; returns (rows, info) with errors filled in. References
    are read from / saved to the `cache` folder (see `reference`)."""
    X, y = make_data(problem)
    objective, params0 = _setup(problem)
    t1 = problem.t1

    def row(method, setting, wall, grad_evals, steps, params, ok, crossings=None):
        return {"problem": problem.name, "method": method, "family": family(method), "setting": float(setting),
                "wall_s": float(wall), "grad_evals": int(grad_evals), "steps": int(steps),
                "crossings": crossings, "final_loss": float(objective(params)), "theta": _flat(params),
                "ok": bool(ok)}  # fmt: skip

    def flow(solver, rtol, switching=None):
        # switching=None: gflow's default for this objective (the switching solve below rtol 1e-4,
        # the plain solve at looser tolerances: `gflow.options.SWITCHING_MAX_RTOL`)
        return gflow.simulate(objective, params0, t1, solver=solver, rtol=rtol, max_steps=MAX_STEPS,
                              switching=switching)  # fmt: skip

    numpy_grad = baselines.two_layer_numpy_grad(X, y, loss="exponential", reduction="sum")
    numpy_params0 = jax.tree.map(np.asarray, params0)

    def scipy_run(method, rtol):
        _, saved, info = baselines.scipy_flow(lambda p: dict(zip(("W", "v"), numpy_grad(p["W"], p["v"]))),
                                               numpy_params0, t1, method=method, rtol=rtol)  # fmt: skip
        return row(f"scipy {method}", rtol, info["wall"], info["nfev"], info["nfev"], saved[-1], info["status"] == 0)

    rows, xcheck = [], None
    if problem.xcheck_rtol is not None:
        xcheck = scipy_run("DOP853", problem.xcheck_rtol)
        rows.append(xcheck)

    for switching, solvers, rtols in ((None, problem.solvers, problem.rtols),
                                      (False, problem.plain_solvers, problem.plain_rtols)):  # fmt: skip
        for solver in solvers:
            for warm in (1e-3, 1e-6):  # warm-up: compile each path once (rtol is traced within a path)
                flow(solver, warm, switching)
            name = f"gflow {solver}" if switching is None else f"gflow plain {solver}"

            def measure(rtol, solver=solver, switching=switching, name=name):
                traj, wall = _timed(lambda: flow(solver, rtol, switching))
                crossings = int(traj.stats["num_crossings"]) if "num_crossings" in traj.stats else None
                return row(name, rtol, wall, traj.num_grad_evals, traj.num_steps, traj.final_params, traj.ok,
                           crossings)  # fmt: skip

            rows += _sweep(rtols, measure, log=log)

    def naive(rtol):
        return naive_diffrax(objective, params0, jnp.asarray(t1), jnp.asarray(rtol), MAX_STEPS)

    naive(1e-3)  # warm-up (compile)

    def measure_naive(rtol):
        (theta, steps, result), wall = _timed(lambda: naive(rtol))
        return row("naive diffrax", rtol, wall, 6 * steps + 1, steps, theta, result == diffrax.RESULTS.successful)

    rows += _sweep(problem.plain_rtols, measure_naive, log=log)

    baselines.gradient_descent(objective, params0, t1 / 4, t1)  # warm-up (compile)

    def measure_gd(lr):
        traj, wall = _timed(lambda: baselines.gradient_descent(objective, params0, lr, t1))
        return row("optax GD", lr, wall, traj.num_grad_evals, traj.num_steps, traj.final_params, traj.ok)

    rows += _sweep(problem.lrs, measure_gd, predict=lambda last, lr: last["wall_s"] * last["setting"] / lr, log=log)

    for method in ("DOP853", "LSODA") if problem.lsoda else ("DOP853",):
        rows += _sweep(problem.scipy_rtols, lambda rtol, method=method: scipy_run(method, rtol), log=log)

    # the reference last: a run can measure while another process computes it into the cache
    ref = reference(problem, problem.ref_rtol, cache, log)
    check = reference(problem, 10 * problem.ref_rtol, cache, log)
    theta_ref, loss_ref = ref["theta"], float(ref["final_loss"])
    ref_unc = _relative_errors(float(check["final_loss"]), check["theta"], loss_ref, theta_ref)
    log(f"  reference: switching {problem.ref_solver} rtol {problem.ref_rtol:.0e}: {int(ref['steps'])} steps, "
        f"{int(ref['crossings'])} crossings, {float(ref['wall_s']):.1f} s (with compile), "
        f"L(T) = {loss_ref:.15e}; vs rtol {10 * problem.ref_rtol:.0e}: loss {ref_unc['loss']:.1e}, "
        f"weights {ref_unc['weights']:.1e}")  # fmt: skip

    if xcheck is not None:
        r = xcheck
        xcheck = {"rtol": problem.xcheck_rtol, "nfev": r["grad_evals"], "wall_s": r["wall_s"], "ok": r["ok"],
                  **_relative_errors(r["final_loss"], r["theta"], loss_ref, theta_ref)}  # fmt: skip
        log(f"  cross-check: scipy DOP853 rtol {problem.xcheck_rtol:.0e} ({r['grad_evals']} evals, "
            f"{r['wall_s']:.1f} s) vs reference: loss {xcheck['loss']:.1e}, weights {xcheck['weights']:.1e}")  # fmt: skip
    for r in rows:
        err = _relative_errors(r["final_loss"], r.pop("theta"), loss_ref, theta_ref)
        r["loss_error"], r["weight_error"] = err["loss"], err["weights"]
    info = {
        "problem": asdict(problem),
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "mu_hat": gflow.data.separation(X, y),
        "reference": {"solver": problem.ref_solver, "rtol": problem.ref_rtol, "steps": int(ref["steps"]),
                      "crossings": int(ref["crossings"]), "wall_s": float(ref["wall_s"]),
                      "final_loss": loss_ref, "uncertainty": ref_unc, "xcheck": xcheck},  # fmt: skip
    }
    return rows, info


def cost_at_accuracy(rows, method, target=TARGET, error="loss_error", cost="wall_s"):
    """Cost of `method` at `error` = target, interpolated log-log between measured settings.

    Returns (cost, how) with how "interpolated", "extrapolated" or "measured" (a setting already
    at or below target, nearest above it not measured), or (None, reason). Beyond the most accurate
    setting, GD is extrapolated along its first-order line (error ∝ lr, cost ∝ 1/lr, so
    cost·error is constant); adaptive solvers along the line through their two most accurate
    settings.
    """
    pts = sorted((r[error], r[cost]) for r in rows if r["method"] == method and r["ok"] and r[error] > 0)
    if not pts:
        return None, "no successful run"
    below = [p for p in pts if p[0] <= target]
    above = [p for p in pts if p[0] > target]
    if below and above:
        (e0, c0), (e1, c1) = below[-1], above[0]
        w = math.log(target / e0) / math.log(e1 / e0)
        return math.exp((1 - w) * math.log(c0) + w * math.log(c1)), "interpolated"
    if below:
        return min(c for _, c in below), "measured"
    e0, c0 = pts[0]
    if method == "optax GD":
        return c0 * e0 / target, "extrapolated"
    if len(pts) < 2 or pts[1][0] <= e0 or pts[1][1] >= c0:
        return None, "target not reached"
    e1, c1 = pts[1]
    slope = math.log(c0 / c1) / math.log(e0 / e1)
    log_cost = math.log(c0) + slope * math.log(target / e0)
    if log_cost > math.log(1e12):  # a solver whose error barely falls (naive diffrax): no estimate
        return None, "target not reached"
    return math.exp(log_cost), "extrapolated"


def default_setting():
    """(method name, rtol) of `gflow.simulate` called with no options, e.g. ("gflow tsit5", 1e-6)."""
    defaults = inspect.signature(gflow.simulate).parameters
    return f"gflow {defaults['solver'].default}", defaults["rtol"].default


def speedups(rows, target=TARGET):
    """Cost at equal accuracy of every method, the best method of every family, and the ratios
    gflow (the frontier over its switching-solve options) and gflow plain vs optax GD and vs scipy.
    "default" is the one run of `default_setting()`: its cost and error, and the same ratios where
    its error is at or below target (None where it was not run or misses the target)."""
    methods = sorted({r["method"] for r in rows})
    out = {}
    for error in ("loss_error", "weight_error"):
        for cost in ("wall_s", "grad_evals"):
            table = {m: cost_at_accuracy(rows, m, target, error, cost) for m in methods}
            best = {}
            for f in FAMILIES:
                found = [(c, m, how) for m, (c, how) in table.items() if family(m) == f and c]
                best[f] = min(found) if found else None

            def ratio(slow, fast):
                return best[slow][0] / best[fast][0] if best[slow] and best[fast] else None

            method, rtol = default_setting()
            default = next((r for r in rows if r["method"] == method and r["setting"] == rtol and r["ok"]), None)
            reached = default is not None and default[error] <= target

            def default_ratio(slow):
                return best[slow][0] / default[cost] if reached and best[slow] else None

            out[f"{error}/{cost}"] = {
                "methods": {m: {"cost": c, "how": how} for m, (c, how) in table.items()},
                "best": best,
                "default": None if default is None else {"method": method, "rtol": rtol, "cost": default[cost],
                                                         "error": default[error], "reached": reached},
                "default_vs_gd": default_ratio("optax GD"),
                "default_vs_scipy": default_ratio("scipy"),
                "vs_gd": ratio("optax GD", "gflow"),
                "vs_scipy": ratio("scipy", "gflow"),
                "plain_vs_gd": ratio("optax GD", "gflow plain"),
                "plain_vs_scipy": ratio("scipy", "gflow plain"),
            }
    return out


def plot(rows, infos, path):
    """Work-precision plots: error vs wall time and vs gradient evaluations, one row per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [i["problem"]["name"] for i in infos]
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4 * len(names)), squeeze=False)
    for ax_row, name in zip(axes, names):
        sub = [r for r in rows if r["problem"] == name and r["ok"]]
        for ax, cost, label in ((ax_row[0], "wall_s", "wall time [s]"), (ax_row[1], "grad_evals", "gradient evaluations")):
            for method in sorted({r["method"] for r in sub}):
                pts = sorted((r[cost], r["loss_error"]) for r in sub if r["method"] == method)
                ax.loglog(*zip(*pts), "o-" if family(method) == "gflow" else "s--", label=method)
            ax.axhline(TARGET, color="grey", ls=":")
            ax.set(xlabel=label, ylabel="relative error of L(T)", title=name)
        ax_row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def problems(quick=False, issue3=False, only=None):
    """The problems to run: QUICK, or FULL (+ ISSUE3); `only` keeps the one of that name."""
    chosen = QUICK if quick else FULL + (ISSUE3 if issue3 else ())
    if only is None:
        return chosen
    found = [p for p in QUICK + FULL + ISSUE3 if p.name == only]
    if not found:
        raise ValueError(f"no problem named {only!r}: choose from {[p.name for p in QUICK + FULL + ISSUE3]}")
    return tuple(found)


def run(quick=False, log=print, issue3=False, only=None, cache=None):
    """Run the benchmark on every problem of `problems(quick, issue3, only)`; returns a JSON-ready
    dict. References are cached in the `cache` folder (see `reference`)."""
    rows, infos = [], []
    for problem in problems(quick, issue3, only):
        log(f"work-precision: {problem.name} (n={problem.n}, width={problem.width}, "
            f"ε={problem.init_scale:g}, T={problem.t1:g})")  # fmt: skip
        start = time.perf_counter()
        r, info = run_problem(problem, log=log, cache=cache)
        info["seconds"] = time.perf_counter() - start
        info["speedups"] = speedups(r)
        rows += r
        infos.append(info)
        for key in ("loss_error/wall_s", "weight_error/wall_s"):
            s = info["speedups"][key]
            log(f"  at {key.split('_')[0]} error {TARGET:g}: gflow {_fmt(s['best']['gflow'])}; "
                f"vs GD {_ratio(s['vs_gd'])}, vs scipy {_ratio(s['vs_scipy'])}; "
                f"gflow plain vs scipy {_ratio(s['plain_vs_scipy'])}")  # fmt: skip
    return {"target": TARGET, "rows": rows, "problems": infos}


def _fmt(best):
    return "n/a" if best is None else f"{best[0]:.3g} s ({best[1]}, {best[2]})"


def _ratio(x):
    return "n/a" if x is None else f"{x:.3g}×"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny problem (< 1 min)")
    parser.add_argument("--issue3", action="store_true", help="add issue 3's n=200, d=50 problem")
    parser.add_argument("--only", help="run only the problem of this name (e.g. 'digits 0/1 n100')")
    parser.add_argument("--out", default="results/bench", help="output folder (also caches the references)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the references, save nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(args.quick, issue3=args.issue3, only=args.only, cache=None if args.no_cache else out)
    (out / "work_precision.json").write_text(json.dumps(result, indent=1))
    plot(result["rows"], result["problems"], out / "work_precision.png")
    print(f"wrote {out / 'work_precision.json'} and {out / 'work_precision.png'}")


if __name__ == "__main__":
    main()

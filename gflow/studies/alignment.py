"""`gflow align`: early neuron alignment (Min, Mallada & Vidal, ICLR 2024), the headline experiment.

Two-layer ReLU nets f(x) = Σ_j v_j σ(⟨w_j, x⟩), balanced init at scale ε, sum-reduced
exponential or 2·logistic loss, on equiangular data of separation exactly μ (`gflow.data.separated`):

1. μ-scaling of the alignment time t_align(δ) against the bound 4 log n/√μ,
2. n-scaling with the sum and the 1/n-scaled loss,
3. ε-independence of t_align and t_esc ≈ ln(1/ε)/‖x_+‖,
4. the late phase: L·t bounded, stable rank → `min2024.stable_rank_limit`, balancedness,
5. the same observables on digits 0 vs 1 (and MNIST when `--mnist DIR` is given).

The synthetic grid points of one data size n are solved by the continuous-batching pool
`gflow.batching.solve_batch` (the data, loss, scale and phase are per-point `args`, so each n
compiles once). A point runs in phases that continue from the previous one's final state: to
t_align (alignment event), to t_esc (loss ≤ L(0)/2), then free to `t_late`. See
docs/alignment.md for the measured verdict.
Writes `results.nc` (one netCDF group per experiment), `verdict.json`, `verdict.md` and figures.
"""

import functools
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..status import EVENT

ALIGN, ESCAPE, FREE = 0, 1, 2  # lane phases: what the event watches
NUM_SAVES = 48


@dataclass(frozen=True)
class AlignConfig:
    """The grids of `gflow align` (defaults: the `make demo` grid; `FULL` overrides for --full)."""

    seeds: tuple = (0, 1, 2)
    n: int = 20  # μ- and ε-grids: n points, d = n + 1, half of each class
    width: int = 50
    mus: tuple = (0.05, 0.1, 0.2, 0.4, 0.8)
    mu: float = 0.2  # for the n- and ε-grids
    init_scale: float = 1e-6
    eps_grid: tuple = (1e-3, 1e-6, 1e-9, 1e-12)
    ns: tuple = (4, 8, 16, 32)
    t_late: float = 1e3
    delta: float = 1e-2
    rtol: float = 1e-7
    max_steps: int = 200_000
    lanes: int = 8  # width of the solve_batch pool
    synthetic: bool = True  # the μ-, ε- and late-phase grids
    digits_n: int = 60  # subsample of digits 0 vs 1 (0: skip)
    digits_t1: float = 30.0
    real_seeds: tuple = (0,)
    mnist: str | None = None
    mnist_n: int = 200
    bootstrap: int = 2000


FULL = dict(
    seeds=(0, 1, 2, 3, 4),
    ns=(4, 8, 16, 32, 64, 128, 256),
    t_late=1e4,
    digits_n=360,
    mnist_n=1000,
    real_seeds=(0, 1, 2),
)


# ----------------------------------------------------------------------------- the lanes' flows
def _loss(params, lane):
    """L = scale · Σ_i ℓ(f(x_i), y_i), ℓ the exponential or 2·logistic loss (scale 1 or 1/n)."""
    import jax.numpy as jnp

    from .. import losses, models

    f = models.two_layer(params, lane["X"])
    y = lane["y"]
    ell = jnp.where(lane["logistic"], losses.logistic(f, y, factor=2.0), losses.exponential(f, y))
    return lane["scale"] * jnp.sum(ell)


def _objective(params, lane):
    """rate · L: the flow dθ/dτ = −rate·∇L(θ) is the gradient flow in the time t = rate·τ."""
    return lane["rate"] * _loss(params, lane)


def _event(params, lane):
    import jax.numpy as jnp

    from ..observables import aligned

    is_aligned = jnp.all(aligned(params, lane["X"], lane["y"], lane["delta"]))
    escaped = _loss(params, lane) <= 0.5 * lane["L0"]
    return jnp.where(lane["phase"] == ALIGN, is_aligned, (lane["phase"] == ESCAPE) & escaped)


@functools.cache
def _observables():
    """One dict of functions for every solve, so that the pool compiles once per data shape."""
    from .. import observables as obs

    return {
        "cos": lambda p, lane: obs.class_cosines(lane["X"], lane["y"])(p),
        "aligned": lambda p, lane: obs.alignment_indicator(lane["X"], lane["y"], lane["delta"])(p),
        "balancedness": lambda p, lane: obs.balancedness(p),
        "stable_rank": lambda p, lane: obs.weight_stable_rank(p),
        "norms": lambda p, lane: obs.neuron_norms(p),
        "energy": lambda p, lane: obs.group_energies(p),
    }


def _save_grid(t1, first):
    """0 and a geometric grid from `first`·t1 to t1: the directions move on every time scale."""
    return np.concatenate([[0.0], np.geomspace(first * t1, t1, NUM_SAVES - 1)])


def _solve_phase(cfg, params, lanes, phase, t1, rate=None):
    """Every lane from `params` at τ = 0 to its event (or τ = t1), by the continuous-batching pool
    (`gflow.batching.solve_batch`, `cfg.lanes` lanes); returns the numpy Trajectory stacked along
    lanes and the pool's `PoolStats`. Each phase restarts the solver, as `gflow.simulate` from
    the phase's initial state would (scale-aware atol from that state)."""
    import jax

    from ..batching import solve_batch

    count = len(lanes["y"])
    args = dict(lanes, phase=np.full(count, phase), rate=np.ones(count) if rate is None else rate)
    ts = _save_grid(t1, 1e-4 if phase == ALIGN else 1e-5)
    traj, stats = solve_batch(_objective, params, t1, args=args, saveat=ts, rtol=cfg.rtol,
                              observables=_observables(), event=_event, max_steps=cfg.max_steps,
                              lanes=cfg.lanes)
    return jax.tree.map(np.asarray, traj), stats


def build_lanes(cfg, specs):
    """Initial parameters and lane data (`args`) of `specs` (dicts: n, mu, eps, seed, logistic,
    mean; all of one n), stacked along a leading lane axis."""
    import jax

    from .. import data, models

    params, lanes = [], []
    for s in specs:
        X, y = data.separated(1000 * s["seed"] + s["n"], s["n"], s["n"] + 1, s["mu"])
        params.append(models.init_two_layer(jax.random.PRNGKey(s["seed"]), s["n"] + 1, cfg.width, s["eps"]))
        lanes.append(dict(X=X, y=y, logistic=bool(s.get("logistic", False)),
                          scale=1.0 / s["n"] if s.get("mean") else 1.0, delta=cfg.delta))
    stack = lambda *xs: np.stack([np.asarray(x) for x in xs])
    return jax.tree.map(stack, *params), jax.tree.map(stack, *lanes)


def run_lanes(cfg, specs, t_align_max, t_late=None):
    """Run the phases (to t_align; with `t_late`, then to t_esc and on to t_late) of every lane
    spec, one pool per data size n; returns a dict of per-lane numpy arrays in the order of specs.
    Lane k aligns by `t_align_max[k]` or fails the bound."""
    t_align_max = np.broadcast_to(np.asarray(t_align_max, float), (len(specs),))
    order, parts, start = [], [], time.perf_counter()
    for n in sorted({s["n"] for s in specs}):
        idx = [k for k, s in enumerate(specs) if s["n"] == n]
        order += idx
        parts.append(_run_group(cfg, [specs[k] for k in idx], t_align_max[idx], t_late))
    inverse = np.argsort(order)

    def merge(*xs):
        return np.concatenate(xs)[inverse]

    def pad(W, d):  # final W of different n, zero-padded to the largest d
        return np.pad(W, ((0, 0), (0, 0), (0, d - W.shape[-1])))

    out = {k: merge(*(p[k] for p in parts)) for k in parts[0] if k not in ("trace", "final_params", "data", "pool")}
    out["trace"] = {k: merge(*(p["trace"][k] for p in parts)) for k in parts[0]["trace"]}
    d = max(p["final_params"]["W"].shape[-1] for p in parts)
    out["final_params"] = dict(W=merge(*(pad(p["final_params"]["W"], d) for p in parts)),
                               v=merge(*(p["final_params"]["v"] for p in parts)))
    data = [xy for p in parts for xy in p["data"]]
    out["data"] = [data[k] for k in inverse]
    steps = [sum(getattr(s, key) for p in parts for s in p["pool"]) for key in ("lane_steps", "iterations")]
    out["pool"] = dict(lanes=cfg.lanes, lane_steps=steps[0], iterations=steps[1],
                       efficiency=steps[0] / max(1, cfg.lanes * steps[1]))
    out["wall_seconds"] = time.perf_counter() - start
    return out


def _run_group(cfg, specs, t_align_max, t_late):
    """The phases of lanes of one data size. The flow is autonomous, so each phase runs in its
    own time τ from 0 and continues the previous phase's `final_params`: (1) to the alignment
    event, t1 = max bound (a lane that aligns after its own bound fails the verdict), (2) to the
    escape event L ≤ L(0)/2, (3) free, as dθ/dτ = −c_k ∇L with c_k chosen so that τ = T ends
    every lane at exactly t = t_late (c_k ∈ (0, 1]: a Runge–Kutta step h in τ is the step c_k·h
    in t, and the step-size control is invariant under this rescaling but for the first step)."""
    import jax

    params, lanes = build_lanes(cfg, specs)
    lanes["L0"] = np.asarray(jax.vmap(_loss)(params, lanes))
    p1, s1 = _solve_phase(cfg, params, lanes, ALIGN, float(np.max(t_align_max)))
    out = dict(
        t_align=np.where(p1.status_code == EVENT, p1.t_event, np.nan),
        status_align=p1.status_code,
        steps_align=p1.num_steps,
        rejected_align=p1.num_rejected_steps,
        loss_at_align=np.asarray(jax.vmap(_loss)(p1.final_params, lanes)),
        L0=lanes["L0"],
    )
    phases, times, losses, pool = [p1], [p1.ts], [p1.loss], [s1]
    if t_late is not None:
        start = p1.t_final
        if not t_late > np.max(start):
            raise ValueError(f"t_late = {t_late} must exceed the alignment phase's end {np.max(start):g}")
        p2, s2 = _solve_phase(cfg, p1.final_params, lanes, ESCAPE, t_late - np.max(start))
        escaped_first = out["loss_at_align"] <= 0.5 * lanes["L0"]
        out["t_esc"] = np.where((p2.status_code == EVENT) & ~escaped_first, start + p2.t_event, np.nan)
        out["status_esc"] = p2.status_code
        out["steps_esc"] = p2.num_steps
        times.append(start[:, None] + p2.ts)
        start = start + p2.t_final
        horizon = t_late - np.min(start)
        rate = np.maximum((t_late - start) / horizon, 1e-12)  # > 0 also for a lane that ran to t_late
        p3, s3 = _solve_phase(cfg, p2.final_params, lanes, FREE, horizon, rate)
        out["status_late"] = p3.status_code
        out["steps_late"] = p3.num_steps
        phases += [p2, p3]
        times.append(start[:, None] + rate[:, None] * p3.ts)
        losses += [p2.loss, p3.loss / rate[:, None]]  # the objective was rate · L
        pool += [s2, s3]
    trace = {"t": np.concatenate(times, axis=1), "loss": np.concatenate(losses, axis=1)}
    for name in phases[0].observables:
        trace[name] = np.concatenate([p.observables[name] for p in phases], axis=1)
    out["trace"] = trace
    out["final_params"] = phases[-1].final_params
    out["data"] = [(X, y) for X, y in zip(lanes["X"], lanes["y"])]
    out["pool"] = pool
    return out


# ----------------------------------------------------------------------------- experiments
def synthetic_specs(cfg):
    """Lanes of the n = cfg.n grids: μ-scaling (exponential and logistic) and ε-scaling.

    The ε-grid reuses the μ = cfg.mu, ε = cfg.init_scale lanes of the exponential μ-grid."""
    specs = [
        dict(experiment="mu", n=cfg.n, mu=mu, eps=cfg.init_scale, seed=s, logistic=logistic)
        for logistic in (False, True)
        for mu in cfg.mus
        for s in cfg.seeds
    ]
    specs += [
        dict(experiment="eps", n=cfg.n, mu=cfg.mu, eps=eps, seed=s, logistic=False)
        for eps in cfg.eps_grid
        if not (eps == cfg.init_scale and cfg.mu in cfg.mus)
        for s in cfg.seeds
    ]
    return specs


def n_specs(cfg):
    """Lanes of the n-scaling grid (μ = cfg.mu, d = n + 1), sum and 1/n-scaled loss."""
    return [
        dict(experiment="n", n=n, mu=cfg.mu, eps=cfg.init_scale, seed=s, mean=mean)
        for mean in (False, True)
        for n in cfg.ns
        for s in cfg.seeds
    ]


def _bound(specs):
    from ..theory import min2024

    bound = min2024.t_align_bound([s["n"] for s in specs], [s["mu"] for s in specs])
    return bound * np.array([s["n"] if s.get("mean") else 1 for s in specs])


def run_synthetic(cfg):
    from ..theory import min2024

    specs = synthetic_specs(cfg)
    out = run_lanes(cfg, specs, _bound(specs), t_late=cfg.t_late)
    out["bound"] = _bound(specs)
    out["escape_slope_pred"] = np.array([min2024.escape_slope(X, y) for X, y in out["data"]])
    out["class_cosine"] = np.array([min2024.class_cosine(X, y) for X, y in out["data"]])
    out["specs"] = specs
    return out


def run_n_scaling(cfg):
    specs = n_specs(cfg)
    out = run_lanes(cfg, specs, _bound(specs))
    out["bound"] = _bound(specs)
    out["specs"] = specs
    return out


def run_real(cfg, name):
    """Digits 0 vs 1 (or MNIST), sum-reduced exponential loss, one run per seed in
    `cfg.real_seeds` (the subsample and the init differ by seed), from t = 0 to digits_t1.

    This data is not μ-separated, and the plain solve chatters on ReLU kinks (200,000 Tsit5
    steps reach t < 0.1 at n = 60): these runs use `gflow.objective`'s event-driven Filippov
    integration (`gflow.switching`). No alignment event: neurons that align with x̄_± can still
    activate points of the other class, so the cone condition of t_align need not ever hold."""
    import functools

    import jax

    from .. import data, models, objective, simulate

    specs, trajs, sets = [], [], []
    start = time.perf_counter()
    for s in cfg.real_seeds:
        if name == "digits":
            X, y = data.digits((0, 1), center=True)
            idx = np.sort(np.random.default_rng(s).choice(len(y), size=min(cfg.digits_n, len(y)), replace=False))
            X, y = X[idx], y[idx]
        else:
            X, y = data.mnist(cfg.mnist, (0, 1), n=cfg.mnist_n, seed=s)
        L = objective(models.two_layer, "exponential", X, y, reduction="sum")
        p0 = models.init_two_layer(jax.random.PRNGKey(s), X.shape[1], cfg.width, cfg.init_scale)
        lane = dict(X=X, y=y, delta=cfg.delta)
        ts = np.concatenate([[0.0], np.geomspace(1e-3, cfg.digits_t1, NUM_SAVES - 1)])
        traj = simulate(L, p0, cfg.digits_t1, saveat=ts, rtol=cfg.rtol, max_steps=cfg.max_steps, save_params=False,
                        observables={k: functools.partial(f, lane=lane) for k, f in _observables().items()})
        trajs.append(jax.tree.map(np.asarray, traj))
        specs.append(dict(experiment=name, n=len(y), d=X.shape[1], mu=np.nan, eps=cfg.init_scale, seed=s))
        sets.append((X, y))
    stack = functools.partial(np.stack, axis=0)
    trace = {"t": stack([t.ts for t in trajs]), "loss": stack([t.loss for t in trajs])}
    trace |= {k: stack([t.observables[k] for t in trajs]) for k in trajs[0].observables}
    loss0 = trace["loss"][:, :1]
    return dict(
        specs=specs,
        trace=trace,
        final_params={k: stack([t.final_params[k] for t in trajs]) for k in ("W", "v")},
        L0=loss0[:, 0],
        t_align=np.full(len(specs), np.nan),
        t_esc=np.array([np.interp(0.5, (tr.loss / tr.loss[0])[::-1], tr.ts[::-1]) for tr in trajs]),
        status=np.array([int(t.status_code) for t in trajs]),
        steps=np.array([int(t.num_steps) for t in trajs]),
        mu_hat=np.array([data.separation(X, y) for X, y in sets]),
        wall_seconds=time.perf_counter() - start,
    )


# ----------------------------------------------------------------------------- analysis
def fit_slope(x, Y, *, n_boot=2000, seed=0):
    """Least-squares slope of the seed-mean of Y (rows: seeds, columns: points at x) against x,
    with a 95% bootstrap interval from resampling the seeds (rows) with replacement.
    Returns (slope, low, high)."""
    x = np.asarray(x, dtype=float)
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    if not np.all(np.isfinite(Y)):
        return np.nan, np.nan, np.nan
    xc = x - x.mean()

    def slope(rows):
        return float(xc @ (rows.mean(axis=0) - rows.mean()) / (xc @ xc))

    rng = np.random.default_rng(seed)
    boots = [slope(Y[rng.integers(0, len(Y), len(Y))]) for _ in range(n_boot)]
    return slope(Y), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def _grid(values, specs, select, axis_key, seeds):
    """Matrix seeds × sorted axis values of `values` over the lanes passing `select`."""
    axis = sorted({s[axis_key] for s in specs if select(s)})
    M = np.full((len(seeds), len(axis)), np.nan)
    for k, s in enumerate(specs):
        if select(s):
            M[seeds.index(s["seed"]), axis.index(s[axis_key])] = values[k]
    return np.array(axis), M


def _row(claim, measured, predicted, tolerance, passed):
    return dict(claim=claim, measured=measured, predicted=predicted, tolerance=tolerance, passed=bool(passed))


def _late_window(trace, t_min):
    """Mask of the late-phase saves: finite, t ≥ t_min."""
    t = trace["t"]
    return np.isfinite(t) & (t >= t_min)


def balance_drift(trace):
    """max over saves and neurons of |b_j(t) − b_j(0)| / ‖W(t)‖_F², b_j = v_j² − ‖w_j‖²."""
    b = trace["balancedness"]
    drift = np.max(np.abs(b - b[:, :1]), axis=-1) / trace["energy"].sum(axis=-1)
    return np.nanmax(drift, axis=-1)  # saves after an event are NaN


def synthetic_verdict(cfg, out):
    """Verdict rows for the μ-, ε- and late-phase claims (Min et al. 2024, Thm 1 and §4)."""
    from ..theory import min2024

    specs, seeds = out["specs"], list(cfg.seeds)
    rows, fits = [], {}
    ratio = out["t_align"] / out["bound"]
    rows.append(_row("t_align ≤ 4 log n/√μ (every μ, ε, loss lane)", f"max t_align/bound = {np.max(ratio):.3g}",
                     "≤ 1", "all lanes aligned before the bound", np.all(ratio <= 1)))
    for logistic, name in ((False, "exponential"), (True, "logistic")):
        mus, T = _grid(out["t_align"], specs,
                       lambda s: s["experiment"] == "mu" and s["logistic"] == logistic, "mu", seeds)
        slope, lo, hi = fit_slope(np.log(mus), np.log(T), n_boot=cfg.bootstrap)
        fits[f"mu_exponent_{name}"] = dict(slope=slope, ci95=[lo, hi], mu=mus.tolist(), t_align=T.tolist())
        rows.append(_row(f"μ-exponent of t_align ({name} loss)", f"{slope:.3f} [{lo:.3f}, {hi:.3f}]",
                         "−1/2", "in [−0.6, −0.4]", -0.6 <= slope <= -0.4))
    is_eps = lambda s: s["mu"] == cfg.mu and not s["logistic"] and s["eps"] in cfg.eps_grid  # noqa: E731
    eps, Ta = _grid(out["t_align"], specs, is_eps, "eps", seeds)
    small = eps <= 1e-6
    spread = np.max(Ta[:, small].max(axis=1) / Ta[:, small].min(axis=1) - 1)
    fits["t_align_vs_eps"] = dict(eps=eps.tolist(), t_align=Ta.tolist())
    rows.append(_row("t_align independent of ε (ε ≤ 1e-6)", f"max spread {spread:.2%}", "0", "< 5%", spread < 0.05))
    _, Te = _grid(out["t_esc"], specs, is_eps, "eps", seeds)
    slope, lo, hi = fit_slope(np.log(1 / eps), Te, n_boot=cfg.bootstrap)
    pred = float(np.mean([out["escape_slope_pred"][k] for k, s in enumerate(specs) if is_eps(s)]))
    fits["escape_slope"] = dict(slope=slope, ci95=[lo, hi], predicted=pred, eps=eps.tolist(), t_esc=Te.tolist())
    rows.append(_row("escape slope d t_esc/d ln(1/ε)", f"{slope:.4f} [{lo:.4f}, {hi:.4f}]",
                     f"1/‖x_+‖ = {pred:.4f}", "within 5%", abs(slope / pred - 1) < 0.05))
    early = np.array([s["eps"] <= 1e-3 for s in specs])
    order = np.all(out["t_align"][early] < out["t_esc"][early])
    rows.append(_row("t_align < t_esc for ε ≤ 1e-3", f"{np.sum(out['t_align'][early] < out['t_esc'][early])}/"
                     f"{early.sum()} lanes", "all", "strict", order))
    tr = out["trace"]
    late = _late_window(tr, 8.0)
    Lt = np.where(late, tr["loss"] * tr["t"], np.nan)
    rise = np.nanmax(np.diff(Lt, axis=1) / Lt[:, :-1])
    rows.append(_row("L·t bounded and non-increasing for t ≥ 8", f"max L·t = {np.nanmax(Lt):.3g}, "
                     f"max relative rise {rise:.1e}", "non-increasing", "rise ≤ 1e-6", rise <= 1e-6))
    A = tr["energy"][:, -1]
    srank = tr["stable_rank"][:, -1]
    pred_srank = min2024.stable_rank_limit(out["class_cosine"], A[:, 0], A[:, 1])
    err = np.max(np.abs(srank / pred_srank - 1))
    k0 = int(np.argmax([s["mu"] == cfg.mu for s in specs]))
    fits["stable_rank"] = dict(measured=srank.tolist(), predicted=pred_srank.tolist(),
                               equal_energy=(2 / (1 + np.abs(out["class_cosine"]))).tolist())
    rows.append(_row(f"stable rank at t = {cfg.t_late:g} (all lanes)", f"max rel. error {err:.1e} "
                     f"(μ={cfg.mu}: {srank[k0]:.5f})", f"(A₊+A₋)/λ_max; μ={cfg.mu}: {pred_srank[k0]:.5f}",
                     "within 2%", err < 0.02))
    drift = balance_drift(tr)
    rows.append(_row("balancedness drift max|Δ(v_j²−‖w_j‖²)|/‖W‖_F²", f"{np.max(drift):.1e}", "0 (conserved)",
                     "< 1e-9", np.max(drift) < 1e-9))
    return rows, fits


def n_verdict(cfg, out):
    """Verdict rows for the n-scaling: the bound (sum loss, and n× for the 1/n-scaled loss) and
    at most logarithmic growth."""
    specs, seeds = out["specs"], list(cfg.seeds)
    rows, fits = [], {}
    for mean, name in ((False, "sum"), (True, "1/n-scaled")):
        sel = [k for k, s in enumerate(specs) if s["mean"] == mean]
        ratio = out["t_align"][sel] / out["bound"][sel]
        bound_txt = "4 log n/√μ" if not mean else "n·4 log n/√μ"
        rows.append(_row(f"t_align ≤ {bound_txt} ({name} loss, n ∈ {list(cfg.ns)})",
                         f"max ratio {np.max(ratio):.3g}", "≤ 1", "every lane", np.all(ratio <= 1)))
        ns, T = _grid(out["t_align"], specs, lambda s: s["mean"] == mean, "n", seeds)
        slope, lo, hi = fit_slope(np.log(ns), T, n_boot=cfg.bootstrap)
        cap = 4 / np.sqrt(cfg.mu)
        fits[f"n_scaling_{'mean' if mean else 'sum'}"] = dict(slope_vs_log_n=slope, ci95=[lo, hi], n=ns.tolist(),
                                                              t_align=T.tolist())
        rows.append(_row(f"t_align grows at most like log n ({name} loss)",
                         f"d t_align/d ln n = {slope:.3g} [{lo:.3g}, {hi:.3g}]; t_align {np.nanmin(T):.3g}–"
                         f"{np.nanmax(T):.3g}", f"≤ 4/√μ = {cap:.3g}", "slope ≤ bound's slope", slope <= cap))
    return rows, fits


def real_verdict(cfg, out, name):
    """Digits/MNIST: most live neurons aligned with x̄_± before the loss drops, stable rank ≤ 2."""
    tr = out["trace"]
    fractions = []
    for k in range(len(out["specs"])):
        before = np.isfinite(tr["loss"][k]) & (tr["loss"][k] >= 0.9 * out["L0"][k])
        i = np.max(np.nonzero(before)[0])
        v = out["final_params"]["v"][k]
        live = tr["norms"][k, -1] > 100 * tr["norms"][k, 0]
        cos_own = np.where(v > 0, tr["cos"][k, i, :, 0], tr["cos"][k, i, :, 1])
        fractions.append(np.mean(cos_own[live] > 0.9) if live.any() else np.nan)
    srank = tr["stable_rank"][:, -1]
    label = f"{name} 0 vs 1 (n={out['specs'][0]['n']}, μ̂={np.mean(out['mu_hat']):.2f})"
    return [
        _row(f"{label}: live neurons with cos(w, x̄_±) > 0.9 before L drops", f"{np.nanmin(fractions):.0%} (worst seed)",
             "most", "> 50%", np.nanmin(fractions) > 0.5),
        _row(f"{label}: stable rank at t = {np.nanmax(tr['t']):g}", f"{np.max(srank):.3f} (max over seeds)", "≤ ~2",
             "≤ 2", np.max(srank) <= 2),
    ]


# ----------------------------------------------------------------------------- outputs
def to_dataset(out):
    """One experiment's lanes as an xarray Dataset: per-lane scalars on dim `lane`, traces on
    (`lane`, `save`[, `neuron`[, `class`]])."""
    import xarray as xr

    specs = out["specs"]
    coords = {key: ("lane", np.array([float(s.get(key, np.nan)) for s in specs]))
              for key in ("n", "mu", "eps", "seed")}
    coords["loss_name"] = ("lane", np.array(["logistic" if s.get("logistic") else "exponential" for s in specs]))
    coords["reduction"] = ("lane", np.array(["mean" if s.get("mean") else "sum" for s in specs]))
    coords["experiment"] = ("lane", np.array([s["experiment"] for s in specs]))
    data_vars = {k: ("lane", np.asarray(v)) for k, v in out.items()
                 if isinstance(v, np.ndarray) and v.shape == (len(specs),)}
    dims = {2: ("lane", "save"), 3: ("lane", "save", "neuron"), 4: ("lane", "save", "neuron", "class")}
    for k, v in out["trace"].items():
        if k == "energy":
            data_vars["energy"] = (("lane", "save", "group"), v)
        else:
            data_vars[f"trace_{k}"] = (dims[v.ndim], v)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["wall_seconds"] = float(out["wall_seconds"])
    ds.attrs.update({f"pool_{k}": v for k, v in out.get("pool", {}).items()})
    return ds


def write_results(path, datasets):
    path.unlink(missing_ok=True)
    for group, ds in datasets.items():
        ds.to_netcdf(path, group=group, engine="h5netcdf", mode="a")


def verdict_markdown(rows):
    lines = ["| claim | measured | predicted / bound | tolerance | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['claim']} | {r['measured']} | {r['predicted']} | {r['tolerance']} | "
                     f"{'PASS' if r['passed'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def _plots(cfg, results, fits, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..theory import min2024

    paths = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(str(out_dir / name))

    if "n_scaling" in results:
        fig, ax = plt.subplots(figsize=(5, 4))
        for red, color in (("sum", "C0"), ("mean", "C2")):
            f = fits[f"n_scaling_{red}"]
            ns = np.array(f["n"])
            for T in f["t_align"]:
                ax.loglog(ns, T, "o", color=color, ms=5)
            ax.plot([], [], "o", color=color, label=f"{red}-reduced loss")
        ax.loglog(ns, min2024.t_align_bound(ns, cfg.mu), "k--", label="4 log n/√μ")
        ax.set(xlabel="n", ylabel="t_align(δ)", title=f"n-scaling, μ={cfg.mu}")
        ax.legend(fontsize=8)
        save(fig, "t_align_vs_n.png")

    if "synthetic" in results:
        syn = results["synthetic"]
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, marker in (("exponential", "o"), ("logistic", "x")):
            f = fits[f"mu_exponent_{name}"]
            mus = np.array(f["mu"])
            for T in f["t_align"]:
                ax.loglog(mus, T, marker, color="C0" if marker == "o" else "C1", ms=5)
            ax.plot([], [], marker, color="C0" if marker == "o" else "C1", label=f"{name}: slope {f['slope']:.3f}")
        ax.loglog(mus, min2024.t_align_bound(cfg.n, mus), "k--", label="bound 4 log n/√μ")
        ax.set(xlabel="μ", ylabel="t_align(δ)", title=f"alignment time, n={cfg.n}, ε={cfg.init_scale:g}")
        ax.legend(fontsize=8)
        save(fig, "t_align_vs_mu.png")

        f = fits["escape_slope"]
        x = np.log(1 / np.array(f["eps"]))
        fig, ax = plt.subplots(figsize=(5, 4))
        for Te, Ta in zip(f["t_esc"], fits["t_align_vs_eps"]["t_align"]):
            ax.plot(x, Te, "o", color="C3", ms=5)
            ax.plot(x, Ta, "s", color="C0", ms=4)
        mean = np.nanmean(f["t_esc"], axis=0)
        ax.plot(x, mean.mean() + f["predicted"] * (x - x.mean()), "k--", label=f"slope 1/‖x₊‖ = {f['predicted']:.4f}")
        ax.plot([], [], "o", color="C3", label=f"t_esc (fit slope {f['slope']:.4f})")
        ax.plot([], [], "s", color="C0", label="t_align")
        ax.set(xlabel="ln(1/ε)", ylabel="t", title=f"escape vs ln 1/ε (n={cfg.n}, μ={cfg.mu})")
        ax.legend(fontsize=8)
        save(fig, "escape_vs_log_eps.png")

        tr = syn["trace"]
        specs = syn["specs"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for k, s in enumerate(specs):
            if s["seed"] != cfg.seeds[0] or s["experiment"] != "mu" or s["logistic"]:
                continue
            t = tr["t"][k]
            ok = np.isfinite(t) & (t > 0)
            ax1.loglog(t[ok], (tr["loss"][k] * t)[ok], label=f"μ={s['mu']}")
            ax2.semilogx(t[ok], tr["stable_rank"][k][ok], label=f"μ={s['mu']}")
            ax2.axhline(fits["stable_rank"]["predicted"][k], color="k", ls=":", lw=0.8)
        ax1.set(xlabel="t", ylabel="L·t", title="loss × t (exponential loss)")
        ax2.set(xlabel="t", ylabel="‖W‖_F²/‖W‖₂²", title="stable rank (dotted: prediction)")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
        save(fig, "late_phase.png")

        k = next(i for i, s in enumerate(specs) if s["mu"] == cfg.mu and s["eps"] == cfg.init_scale and not s["logistic"])
        save(_cosine_figure(plt, syn, k, f"synthetic n={cfg.n}, μ={cfg.mu}, ε={cfg.init_scale:g}"), "cosines_synthetic.png")
    for name in ("digits", "mnist"):
        if name in results:
            save(_cosine_figure(plt, results[name], 0, f"{name} 0 vs 1"), f"cosines_{name}.png")
            save(_rows_figure(plt, results[name], 0, name), f"rows_{name}.png")
    return paths


def _cosine_figure(plt, out, k, title):
    tr = out["trace"]
    t = tr["t"][k]
    v = out["final_params"]["v"][k]
    order = np.argsort(t)
    fig, ax = plt.subplots(figsize=(6, 4))
    for j in range(len(v)):
        own = tr["cos"][k, :, j, 0 if v[j] > 0 else 1]
        ax.semilogx(t[order], own[order], color="C0" if v[j] > 0 else "C3", lw=0.6)
    ax.axvline(out["t_align"][k], color="k", ls="--", lw=0.8, label="t_align")
    if "t_esc" in out and np.isfinite(out["t_esc"][k]):
        ax.axvline(out["t_esc"][k], color="k", ls=":", lw=0.8, label="t_esc")
    ax.set(xlabel="t", ylabel="cos(w_j, x̄ of own class)", title=f"{title} (blue v>0, red v<0)", ylim=(-1, 1.02))
    ax.legend(fontsize=8)
    return fig


def _rows_figure(plt, out, k, name):
    W = out["final_params"]["W"][k][:, : out["specs"][k]["d"]]
    side = int(round(np.sqrt(W.shape[1])))
    norms = np.linalg.norm(W, axis=1)
    top = np.argsort(norms)[::-1][:16]
    fig, axes = plt.subplots(2, 8, figsize=(10, 3))
    for ax, j in zip(axes.ravel(), top):
        ax.imshow(W[j].reshape(side, side), cmap="RdBu_r")
        ax.set_title(f"v{'>' if out['final_params']['v'][k][j] > 0 else '<'}0", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{name}: the 16 largest first-layer rows w_j at t = {np.nanmax(out['trace']['t'][k]):g}")
    return fig


def run(cfg: AlignConfig, out_dir: Path) -> dict:
    """Run every experiment of `cfg`, write results.nc, verdict.json, verdict.md and figures
    into `out_dir`; returns the verdict dictionary."""
    results, rows, fits, timing = {}, [], {}, {}
    steps = []
    if cfg.synthetic:
        steps.append(("synthetic", lambda: run_synthetic(cfg), lambda o: synthetic_verdict(cfg, o)))
    if cfg.ns:
        steps.append(("n_scaling", lambda: run_n_scaling(cfg), lambda o: n_verdict(cfg, o)))
    if cfg.digits_n:
        steps.append(("digits", lambda: run_real(cfg, "digits"), lambda o: (real_verdict(cfg, o, "digits"), {})))
    if cfg.mnist:
        steps.append(("mnist", lambda: run_real(cfg, "mnist"), lambda o: (real_verdict(cfg, o, "MNIST"), {})))
    if not steps:
        raise ValueError("nothing to run: enable the synthetic grids, the n-scaling, digits or MNIST")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, go, judge in steps:
        start = time.perf_counter()
        results[name] = go()
        timing[name] = time.perf_counter() - start
        print(f"gflow align: {name}: {len(results[name]['specs'])} runs in {timing[name]:.0f} s", flush=True)
        r, f = judge(results[name])
        rows += r
        fits.update(f)
    write_results(out_dir / "results.nc", {k: to_dataset(v) for k, v in results.items()})
    figures = _plots(cfg, results, fits, out_dir)
    pool = {k: v["pool"] for k, v in results.items() if "pool" in v}
    verdict = dict(rows=rows, fits=fits, config=asdict(cfg), wall_seconds=timing, pool=pool, figures=figures,
                   all_passed=all(r["passed"] for r in rows))
    (out_dir / "verdict.json").write_text(json.dumps(verdict, indent=2, default=float))
    (out_dir / "verdict.md").write_text(verdict_markdown(rows))
    return verdict


def register(subparsers):
    p = subparsers.add_parser("align", help="early neuron alignment (Min, Mallada & Vidal 2024): grids and verdict")
    p.add_argument("--full", action="store_true", help="the large grids (5 seeds, n up to 256, t to 1e4, all digits)")
    p.add_argument("--seeds", type=int, help="number of seeds per grid point")
    p.add_argument("--rtol", type=float, help=f"solver rtol (default {AlignConfig.rtol})")
    p.add_argument("--mnist", type=str, help="directory with MNIST IDX files: adds the MNIST 0 vs 1 run")
    p.add_argument("--no-digits", action="store_true", help="skip the digits run")
    p.add_argument("--no-synthetic", action="store_true", help="skip the μ-, ε- and late-phase grids")
    p.add_argument("--no-n-scaling", action="store_true", help="skip the n-scaling grid")
    p.add_argument("--ns", type=str, help="n-scaling grid, comma-separated (default 4,8,16,32; --full to 256)")
    p.add_argument("--lanes", type=int, help=f"width of the solve_batch pool (default {AlignConfig.lanes})")
    p.add_argument("--out", type=Path, default=Path("results/alignment"))
    p.set_defaults(func=main)


def config_from_args(args) -> AlignConfig:
    cfg = AlignConfig(**FULL) if args.full else AlignConfig()
    if args.seeds is not None:
        if args.seeds < 2:
            raise ValueError(f"--seeds must be ≥ 2 (bootstrap intervals need several seeds), got {args.seeds}")
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    if args.rtol is not None:
        if not 0 < args.rtol < 1e-3:
            raise ValueError(f"--rtol must lie in (0, 1e-3), got {args.rtol}")
        cfg = replace(cfg, rtol=args.rtol)
    if args.lanes is not None:
        if args.lanes < 1:
            raise ValueError(f"--lanes must be a positive integer, got {args.lanes}")
        cfg = replace(cfg, lanes=args.lanes)
    if args.mnist:
        cfg = replace(cfg, mnist=args.mnist)
    if args.no_digits:
        cfg = replace(cfg, digits_n=0)
    if args.no_synthetic:
        cfg = replace(cfg, synthetic=False)
    if args.ns is not None:
        try:
            ns = tuple(int(n) for n in args.ns.split(","))
        except ValueError:
            raise ValueError(f"--ns must be comma-separated integers, e.g. 4,8,16, got {args.ns!r}") from None
        if len(ns) < 2 or min(ns) < 2:
            raise ValueError(f"--ns needs at least two sizes n ≥ 2 (a slope is fitted), got {args.ns!r}")
        cfg = replace(cfg, ns=ns)
    if args.no_n_scaling:
        cfg = replace(cfg, ns=())
    return cfg


def main(args) -> int:
    import jax

    cfg = config_from_args(args)
    if cfg.mnist:  # fail before hours of compute if the files are missing
        from .. import data

        data.mnist(cfg.mnist, (0, 1), n=None)
    # Compiled solves persist across runs (the tests' cache when run from the repository root).
    jax.config.update("jax_compilation_cache_dir", os.environ.get("GFLOW_JAX_CACHE", ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    verdict = run(cfg, args.out)
    print(verdict_markdown(verdict["rows"]))
    print(f"wrote {args.out}/results.nc, verdict.json, verdict.md and {len(verdict['figures'])} figures")
    return 0 if verdict["all_passed"] else 1

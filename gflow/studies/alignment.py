"""`gflow align`: early neuron alignment (Min, Mallada & Vidal, ICLR 2024), the headline experiment.

Two-layer ReLU nets f(x) = Σ_j v_j σ(⟨w_j, x⟩), balanced init at scale ε, sum-reduced
exponential or 2·logistic loss, on equiangular data of separation exactly μ (`gflow.data.separated`):

- E1.1 μ-scaling of the alignment time t_align(δ) (exponential loss), its ratio to the
  reconstructed bound 4 log n/√μ, and the 2·logistic loss's identical early dynamics,
- E1.2 n-scaling (sum loss): does t_align grow faster than log n?
- E1.3 ε-independence of t_align and t_esc ≈ ln(1/ε)/‖x_+‖,
- E1.4 the late phase: L·t non-increasing, stable rank → 2/(1+|c|), balancedness conserved,
- E1.5 digits 0 vs 1 (and MNIST when `--mnist DIR` is given): live neurons aligned with x̄_±.

The verdict rows are pure functions of the measured arrays (`gflow.theory.min2024`'s
`*_verdict`), tested on wrong inputs in tests/test_theory_min2024.py. The synthetic grid points
of one data size n are solved by the continuous-batching pool `gflow.batching.solve_batch` (the
data, loss and phase are per-point `args`, so each n compiles once). A point runs in phases
that continue from the previous one's final state: to t_align (alignment event), to t_esc
(loss ≤ L(0)/2), then free to `t_late`.
Writes `results.nc` (one netCDF group per experiment), the verdicts and manifest
(`gflow.studies.verdicts.write`) and figures; docs/alignment.md shows the measured verdict.
"""

import functools
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..status import EVENT
from ..theory import min2024
from . import verdicts as verdicts_io

ALIGN, ESCAPE, FREE = 0, 1, 2  # lane phases: what the event watches
NUM_SAVES = 48


@dataclass(frozen=True)
class AlignConfig:
    """The grids of `gflow align` (defaults: the `make demo` grid; `FULL` overrides for --full)."""

    seeds: tuple = (0, 1, 2, 3, 4)
    n: int = 20  # μ- and ε-grids: n points, d = n + 1, half of each class
    width: int = 50
    mus: tuple = (0.05, 0.1, 0.2, 0.4, 0.8)
    mu: float = 0.2  # for the logistic lanes and the n- and ε-grids
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
    ns=(4, 8, 16, 32, 64, 128, 256),
    t_late=1e4,
    digits_n=360,
    mnist_n=1000,
    real_seeds=(0, 1, 2),
)


# ----------------------------------------------------------------------------- the lanes' flows
def _loss(params, lane):
    """L = Σ_i ℓ(f(x_i), y_i), ℓ the exponential or the 2·logistic loss."""
    import jax.numpy as jnp

    from .. import losses, models

    f = models.two_layer(params, lane["X"])
    y = lane["y"]
    ell = jnp.where(lane["logistic"], losses.logistic(f, y, factor=2.0), losses.exponential(f, y))
    return jnp.sum(ell)


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
    """Initial parameters and lane data (`args`) of `specs` (dicts: n, mu, eps, seed, logistic;
    all of one n), stacked along a leading lane axis."""
    import jax

    from .. import data, models

    params, lanes = [], []
    for s in specs:
        X, y = data.separated(1000 * s["seed"] + s["n"], s["n"], s["n"] + 1, s["mu"])
        params.append(models.init_two_layer(jax.random.PRNGKey(s["seed"]), s["n"] + 1, cfg.width, s["eps"]))
        lanes.append(dict(X=X, y=y, logistic=bool(s.get("logistic", False)), delta=cfg.delta))
    stack = lambda *xs: np.stack([np.asarray(x) for x in xs])
    return jax.tree.map(stack, *params), jax.tree.map(stack, *lanes)


def run_lanes(cfg, specs, t_align_max, t_late=None):
    """Run the phases (to t_align; with `t_late`, then to t_esc and on to t_late) of every lane
    spec, one pool per data size n; returns a dict of per-lane numpy arrays in the order of specs.
    The alignment phase of lane k runs to at most `t_align_max[k]` (t_align NaN if not aligned)."""
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
    event, t1 = max of `t_align_max` (a lane that has not aligned by then has t_align NaN), (2) to the
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
    """Lanes of the n = cfg.n grids: μ-scaling (exponential loss), the 2·logistic loss at
    μ = cfg.mu, and ε-scaling (which reuses the μ = cfg.mu, ε = cfg.init_scale lanes)."""
    specs = [dict(experiment="mu", n=cfg.n, mu=mu, eps=cfg.init_scale, seed=s, logistic=False)
             for mu in cfg.mus for s in cfg.seeds]
    specs += [dict(experiment="logistic", n=cfg.n, mu=cfg.mu, eps=cfg.init_scale, seed=s, logistic=True)
              for s in cfg.seeds]
    specs += [
        dict(experiment="eps", n=cfg.n, mu=cfg.mu, eps=eps, seed=s, logistic=False)
        for eps in cfg.eps_grid
        if not (eps == cfg.init_scale and cfg.mu in cfg.mus)
        for s in cfg.seeds
    ]
    return specs


def n_specs(cfg):
    """Lanes of the n-scaling grid (μ = cfg.mu, d = n + 1, sum-reduced exponential loss). The
    1/n-scaled loss needs no lanes of its own: L/n is the time change t → t/n, so its t_align
    is exactly n·t_align."""
    return [dict(experiment="n", n=n, mu=cfg.mu, eps=cfg.init_scale, seed=s, logistic=False)
            for n in cfg.ns for s in cfg.seeds]


def _bound(specs):
    return min2024.t_align_bound([s["n"] for s in specs], [s["mu"] for s in specs])


def _run_grid(cfg, specs, t_late=None):
    """The lanes of `specs`, aligned within twice their bound (so that ratios up to 2 are measured)."""
    out = run_lanes(cfg, specs, 2 * _bound(specs), t_late=t_late)
    out["bound"] = _bound(specs)
    out["specs"] = specs
    return out


def run_synthetic(cfg):
    out = _run_grid(cfg, synthetic_specs(cfg), t_late=cfg.t_late)
    out["escape_slope_pred"] = np.array([min2024.escape_slope(X, y) for X, y in out["data"]])
    out["class_cosine"] = np.array([min2024.class_cosine(X, y) for X, y in out["data"]])
    return out


def run_n_scaling(cfg):
    return _run_grid(cfg, n_specs(cfg))


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
def balance_drift(trace):
    """max over saves and neurons of |b_j(t) − b_j(0)| / ‖W(t)‖_F², b_j = v_j² − ‖w_j‖²."""
    b = trace["balancedness"]
    drift = np.max(np.abs(b - b[:, :1]), axis=-1) / trace["energy"].sum(axis=-1)
    return np.nanmax(drift, axis=-1)  # saves after an event are NaN


def _grid(values, specs, select, axis_key, seeds):
    """Matrix seeds × sorted axis values of `values` over the lanes passing `select`."""
    axis = sorted({s[axis_key] for s in specs if select(s)})
    M = np.full((len(seeds), len(axis)), np.nan)
    for k, s in enumerate(specs):
        if select(s):
            M[seeds.index(s["seed"]), axis.index(s[axis_key])] = values[k]
    return np.array(axis), M


def synthetic_verdicts(cfg, out):
    """The rows of E1.1, E1.3 and E1.4 from the synthetic lanes; returns (rows, fits)."""
    specs, seeds = out["specs"], list(cfg.seeds)
    is_mu = lambda s: s["experiment"] == "mu"  # noqa: E731
    is_eps = lambda s: s["mu"] == cfg.mu and not s["logistic"] and s["eps"] in cfg.eps_grid  # noqa: E731
    mus, T = _grid(out["t_align"], specs, is_mu, "mu", seeds)
    _, T_exp = _grid(out["t_align"], specs, lambda s: is_mu(s) and s["mu"] == cfg.mu, "mu", seeds)
    _, T_log = _grid(out["t_align"], specs, lambda s: s["experiment"] == "logistic", "mu", seeds)
    eps, Ta = _grid(out["t_align"], specs, is_eps, "eps", seeds)
    _, Te = _grid(out["t_esc"], specs, is_eps, "eps", seeds)
    pred = float(np.mean([out["escape_slope_pred"][k] for k, s in enumerate(specs) if is_eps(s)]))
    c = np.array([min2024.equiangular_class_cosine(s["n"] // 2, s["n"] - s["n"] // 2, s["mu"]) for s in specs])
    tr = out["trace"]
    rows = [
        min2024.bound_ratio_verdict("E1.1", out["t_align"], out["bound"], f"the μ-, ε- and logistic lanes (n = {cfg.n})"),
        min2024.mu_exponent_verdict(mus, T, n_boot=cfg.bootstrap),
        min2024.loss_identity_verdict(T_exp.ravel(), T_log.ravel()),
        min2024.eps_independence_verdict(eps, Ta),
        min2024.escape_slope_verdict(eps, Te, pred, n_boot=cfg.bootstrap),
        min2024.order_verdict(out["t_align"], out["t_esc"]),
        min2024.loss_decay_verdict(tr["t"], tr["loss"]),
        min2024.stable_rank_verdict(tr["stable_rank"][:, -1], c, cfg.t_late),
        min2024.balance_verdict(balance_drift(tr)),
    ]
    fits = {
        "mu_exponent": dict(rows[1].details, mu=mus.tolist()),
        "t_align_vs_eps": dict(eps=eps.tolist(), t_align=Ta.tolist()),
        "escape_slope": dict(slope=rows[4].measured, predicted=pred, eps=eps.tolist(), t_esc=Te.tolist()),
        "stable_rank": rows[7].details,
    }
    return rows, fits


def n_verdicts(cfg, out):
    """The rows of E1.2 (sum loss): the ratio to the bound, growth at most like log n, and the
    pilot's flat n·t_align; returns (rows, fits)."""
    ns, T = _grid(out["t_align"], out["specs"], lambda s: True, "n", list(cfg.seeds))
    rows = [min2024.bound_ratio_verdict("E1.2", out["t_align"], out["bound"], f"n ∈ {list(cfg.ns)}"),
            min2024.n_growth_verdict(ns, T, n_boot=cfg.bootstrap), min2024.n_flat_verdict(ns, T, n_boot=cfg.bootstrap)]
    return rows, {"n_scaling": dict(rows[1].details, n=ns.tolist(), beta_log_n=min2024.log_growth_exponent(ns))}


def real_verdicts(cfg, out, name):
    """E1.5 on digits/MNIST: live neurons aligned with x̄_± before the loss drops, stable rank ≤ 2."""
    tr = out["trace"]
    cos_own, live = [], []
    for k in range(len(out["specs"])):
        before = np.isfinite(tr["loss"][k]) & (tr["loss"][k] >= 0.9 * out["L0"][k])
        i = np.max(np.nonzero(before)[0])
        v = out["final_params"]["v"][k]
        cos_own.append(np.where(v > 0, tr["cos"][k, i, :, 0], tr["cos"][k, i, :, 1]))
        live.append(min2024.live_neurons(tr["norms"][k]))
    label = f"{name} 0 vs 1 (n={out['specs'][0]['n']}, μ̂={np.mean(out['mu_hat']):.2f})"
    return [min2024.live_alignment_verdict(label, cos_own, live),
            min2024.low_rank_verdict(label, tr["stable_rank"][:, -1], float(np.nanmax(tr["t"])))], {}


def to_dataset(out):
    """One experiment's lanes as an xarray Dataset: per-lane scalars on dim `lane`, traces on
    (`lane`, `save`[, `neuron`[, `class`]])."""
    import xarray as xr

    specs = out["specs"]
    coords = {key: ("lane", np.array([float(s.get(key, np.nan)) for s in specs]))
              for key in ("n", "mu", "eps", "seed")}
    coords["loss_name"] = ("lane", np.array(["logistic" if s.get("logistic") else "exponential" for s in specs]))
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


def _log_ticks(ax, values):
    """Plain-number labels on log axes (no colliding minor labels): the x ticks at exactly
    `values`, the y ticks at 1, 2 and 5 times the powers of ten."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    for target in (ax.xaxis, ax.yaxis):
        target.set_major_formatter(plain)


def _power_fit(ax, x, T, slope, lo, hi, color, label):
    """The fitted power law through the seed-mean of T (log-log least squares) with its interval."""
    logT = np.log(np.asarray(T, float)).mean(axis=0)
    lx = np.log(x)
    anchor = logT.mean() - slope * lx.mean()
    ax.plot(x, np.exp(anchor + slope * lx), "-", color=color, lw=1, label=f"{label}: slope {slope:.3f} [{lo:.3f}, {hi:.3f}]")


def _plots(cfg, results, fits, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []

    def save(fig, name):
        fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(out_dir / name))

    if "n_scaling" in results and "slope" in fits["n_scaling"]:
        f = fits["n_scaling"]
        ns, T = np.array(f["x"]), np.array(f["T"])
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for k, row in enumerate(T):
            ax.loglog(ns, row, "o", color="C0", ms=4, label="t_align (sum loss), per seed" if k == 0 else None)
            ax.loglog(ns, ns * row, "s", mfc="none", color="C2", ms=4,
                      label=r"$n\,t_{\rm align}$ (= 1/n-scaled loss)" if k == 0 else None)
        ax.loglog(ns, min2024.t_align_bound(ns, cfg.mu), "k--", label=r"bound $4\log n/\sqrt{\mu}$ (row: ratio $\leq 1$)")
        _power_fit(ax, ns, T, f["slope"], *f["ci95"], "C0", "fit")
        first = np.exp(np.log(T[:, 0]).mean())
        ax.loglog(ns, first * np.log(ns) / np.log(ns[0]), "k:",
                  label=rf"growth like $\log n$ (row: slope CI < {f['beta_log_n']:.2f})")
        _log_ticks(ax, ns)
        ax.set(xlabel="n", ylabel="time", title=f"E1.2 n-scaling (μ={cfg.mu}, ε={cfg.init_scale:g})")
        ax.legend(fontsize=7)
        save(fig, "t_align_vs_n.png")

    if "synthetic" in results:
        syn = results["synthetic"]
        f = fits["mu_exponent"]
        mus, T = np.array(f["mu"]), np.array(f["T"])
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for k, row in enumerate(T):
            ax.loglog(mus, row, "o", color="C0", ms=4, label="t_align per seed (exponential loss)" if k == 0 else None)
        if "slope" in f:
            _power_fit(ax, mus, T, f["slope"], *f["ci95"], "C0", "fit")
            mid = np.exp(np.log(T).mean() - f["slope"] * np.log(mus).mean())
            ref = mid * np.exp(f["slope"] * np.log(mus).mean())
            gm = np.exp(np.log(mus).mean())
            ax.fill_between(mus, ref * (mus / gm) ** -0.4, ref * (mus / gm) ** -0.6, color="C0", alpha=0.12,
                            label="tolerance: slope in [−0.6, −0.4]")
        ax.loglog(mus, min2024.t_align_bound(cfg.n, mus), "k--", label=r"bound $4\log n/\sqrt{\mu}$ (reconstructed)")
        _log_ticks(ax, mus)
        ax.set(xlabel="μ", ylabel=r"$t_{\rm align}(\delta)$", title=f"E1.1 alignment time, n={cfg.n}, ε={cfg.init_scale:g}")
        ax.legend(fontsize=7)
        save(fig, "t_align_vs_mu.png")

        f = fits["escape_slope"]
        x = np.log(1 / np.array(f["eps"]))
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for k, (Te, Ta) in enumerate(zip(f["t_esc"], fits["t_align_vs_eps"]["t_align"])):
            ax.plot(x, Te, "o", color="C3", ms=5, label=r"$t_{\rm esc}$" if k == 0 else None)
            ax.plot(x, Ta, "s", color="C0", ms=4, label=r"$t_{\rm align}$" if k == 0 else None)
        mean = np.nanmean(f["t_esc"], axis=0)
        ax.plot(x, mean.mean() + f["predicted"] * (x - x.mean()), "k--",
                label=rf"slope $1/\|x_+\|$ = {f['predicted']:.4f} (fit {f['slope'] or np.nan:.4f})")
        ax.set(xlabel=r"$\ln(1/\varepsilon)$", ylabel="t", title=f"E1.3 escape vs ln 1/ε (n={cfg.n}, μ={cfg.mu})")
        ax.legend(fontsize=8)
        save(fig, "escape_vs_log_eps.png")

        tr, specs = syn["trace"], syn["specs"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        pred = fits["stable_rank"]["predicted"]
        for color, (k, s) in enumerate((k, s) for k, s in enumerate(specs) if s["seed"] == cfg.seeds[0] and s["experiment"] == "mu"):
            t = tr["t"][k]
            ok = np.isfinite(t) & (t > 0)
            ax1.loglog(t[ok], (tr["loss"][k] * t)[ok], color=f"C{color}", label=f"μ={s['mu']}")
            ax2.semilogx(t[ok], tr["stable_rank"][k][ok], color=f"C{color}", label=f"μ={s['mu']}")
            ax2.axhline(pred[k], color=f"C{color}", ls=":", lw=1)
        ax1.axvline(8.0, color="k", lw=0.6, ls="--", label="row: non-increasing for t ≥ 8")
        ax2.plot([], [], "k:", label=r"prediction $2/(1+|c|)$, $c=\cos(x_+,x_-)$")
        ax1.set(xlabel="t", ylabel=r"$L(t)\,t$", title=f"E1.4 loss × t (exponential loss, seed {cfg.seeds[0]})")
        ax2.set(xlabel="t", ylabel=r"$\|W\|_F^2/\|W\|_2^2$", ylim=(0.95, 0.1 + 1.2 * max(pred)),
                title="E1.4 stable rank (from ~9 at t = 0, off scale) and its limit")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
        save(fig, "late_phase.png")

        k = next(i for i, s in enumerate(specs) if s["mu"] == cfg.mu and s["eps"] == cfg.init_scale and not s["logistic"])
        save(_cosine_figure(plt, syn, k, f"synthetic n={cfg.n}, μ={cfg.mu}, ε={cfg.init_scale:g}"), "cosines_synthetic.png")
    for name in ("digits", "mnist"):
        if name in results:
            save(_cosine_figure(plt, results[name], 0, f"{name} 0 vs 1, seed {cfg.real_seeds[0]}"), f"cosines_{name}.png")
            save(_rows_figure(plt, results[name], 0, name), f"rows_{name}.png")
    return paths


def _cosine_figure(plt, out, k, title):
    tr = out["trace"]
    t = tr["t"][k]
    v = out["final_params"]["v"][k]
    order = np.argsort(t)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for j in range(len(v)):
        own = tr["cos"][k, :, j, 0 if v[j] > 0 else 1]
        ax.semilogx(t[order], own[order], color="C0" if v[j] > 0 else "C3", lw=0.6)
    if np.isfinite(out["t_align"][k]):
        ax.axvline(out["t_align"][k], color="k", ls="--", lw=0.8, label=r"$t_{\rm align}$")
    else:
        ax.text(0.02, 0.04, f"no t_align: the data are not μ-separated (μ̂ = {out['mu_hat'][k]:.2f} < 0),\n"
                "so the cone condition of t_align need not hold", transform=ax.transAxes, fontsize=8,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    if "t_esc" in out and np.isfinite(out["t_esc"][k]):
        ax.axvline(out["t_esc"][k], color="k", ls=":", lw=0.8, label=r"$t_{\rm esc}$: $L = L(0)/2$")
    ax.plot([], [], color="C0", label=r"$v_j>0$: $\cos(w_j,\bar x_+)$")
    ax.plot([], [], color="C3", label=r"$v_j<0$: $\cos(w_j,\bar x_-)$")
    ax.set(xlabel="t", ylabel=r"$\cos(w_j, \bar x_{\rm own\ class})$", title=title, ylim=(-1, 1.02))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _rows_figure(plt, out, k, name):
    W = out["final_params"]["W"][k][:, : out["specs"][k]["d"]]
    side = int(round(np.sqrt(W.shape[1])))
    norms = np.linalg.norm(W, axis=1)
    top = np.argsort(norms)[::-1][:16]
    scale = np.max(np.abs(W[top]))
    fig, axes = plt.subplots(2, 8, figsize=(11, 3.6), constrained_layout=True)
    for ax, j in zip(axes.ravel(), top):
        image = ax.imshow(W[j].reshape(side, side), cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_title(f"#{j}, v{'>' if out['final_params']['v'][k][j] > 0 else '<'}0", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.9, label=r"entry of $w_j$")
    fig.suptitle(f"{name}: the 16 largest first-layer rows $w_j$ ({side}×{side} pixels) at "
                 f"t = {np.nanmax(out['trace']['t'][k]):g}", fontsize=10)
    return fig


def run(cfg: AlignConfig, out_dir: Path) -> list:
    """Run every experiment of `cfg`; write results.nc, the verdicts (`verdicts_io.write`:
    verdicts.json/md, summary.json with the fits, config, timings and pool statistics, and
    manifest.json) and figures into `out_dir`. Returns the Verdicts."""
    results, rows, fits, timing = {}, [], {}, {}
    steps = []
    if cfg.synthetic:
        steps.append(("synthetic", lambda: run_synthetic(cfg), lambda o: synthetic_verdicts(cfg, o)))
    if cfg.ns:
        steps.append(("n_scaling", lambda: run_n_scaling(cfg), lambda o: n_verdicts(cfg, o)))
    if cfg.digits_n:
        steps.append(("digits", lambda: run_real(cfg, "digits"), lambda o: real_verdicts(cfg, o, "digits")))
    if cfg.mnist:
        steps.append(("mnist", lambda: run_real(cfg, "mnist"), lambda o: real_verdicts(cfg, o, "MNIST")))
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
    summary = dict(fits=fits, config=asdict(cfg), wall_seconds=timing, pool=pool, figures=figures)
    seeds = sorted(set(cfg.seeds) | (set(cfg.real_seeds) if cfg.digits_n or cfg.mnist else set()))
    verdicts_io.write(out_dir, rows, summary, seeds=seeds, wall_seconds=sum(timing.values()))
    return rows


# ----------------------------------------------------------------------------- command line
def _options(p):
    p.add_argument("--full", action="store_true", help="the large grids (n up to 256, t to 1e4, all 360 digits with 3 seeds)")
    p.add_argument("--seeds", type=int, help="number of seeds per grid point (default 5)")
    p.add_argument("--mnist", type=str, help="directory with MNIST IDX files: adds the MNIST 0 vs 1 run")
    p.add_argument("--ns", type=str, help="n-scaling grid, comma-separated (default 4,8,16,32; --full to 256)")
    p.add_argument("--lanes", type=int, help=f"width of the solve_batch pool (default {AlignConfig.lanes})")


PARTS = ("synthetic", "n-scaling", "digits")


def config_from_options(*, rtol=AlignConfig.rtol, full=False, seeds=None, mnist=None, parts=PARTS, ns=None,
                        lanes=None) -> AlignConfig:
    """The AlignConfig of the command-line options (ValueError on bad values). `parts`: names of
    `PARTS` (synthetic: the μ-, ε- and late-phase grids; n-scaling; digits); MNIST runs when
    `mnist` names its directory."""
    cfg = replace(AlignConfig(**FULL) if full else AlignConfig(), rtol=rtol)
    if seeds is not None:
        if seeds < 2:
            raise ValueError(f"--seeds must be ≥ 2 (bootstrap intervals need several seeds), got {seeds}")
        cfg = replace(cfg, seeds=tuple(range(seeds)))
    if lanes is not None:
        if lanes < 1:
            raise ValueError(f"--lanes must be a positive integer, got {lanes}")
        cfg = replace(cfg, lanes=lanes)
    if mnist:
        cfg = replace(cfg, mnist=mnist)
    if "digits" not in parts:
        cfg = replace(cfg, digits_n=0)
    if "synthetic" not in parts:
        cfg = replace(cfg, synthetic=False)
    if ns is not None:
        try:
            grid = tuple(int(n) for n in ns.split(","))
        except ValueError:
            raise ValueError(f"--ns must be comma-separated integers, e.g. 4,8,16, got {ns!r}") from None
        if len(grid) < 2 or min(grid) < 2:
            raise ValueError(f"--ns needs at least two sizes n ≥ 2 (a slope is fitted), got {ns!r}")
        cfg = replace(cfg, ns=grid)
    if "n-scaling" not in parts:
        cfg = replace(cfg, ns=())
    return cfg


def command(out, **options) -> list:
    """`gflow align`: the config of `options` (`config_from_options`), run into `out`."""
    cfg = config_from_options(**options)
    if cfg.mnist:  # fail before hours of compute if the files are missing
        from .. import data

        data.mnist(cfg.mnist, (0, 1), n=None)
    return run(cfg, Path(out))


def register(subparsers):
    verdicts_io.register_study(subparsers, "align", "early neuron alignment (Min, Mallada & Vidal 2024): grids and verdict",
                               command, "results/alignment", rtol=AlignConfig.rtol, quick=False, parts=PARTS,
                               options=_options)

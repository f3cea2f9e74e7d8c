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
of one data size n are the lanes of `gflow.theory.min2024.run_lanes` (the continuous-batching
pool `gflow.batching.solve_batch`; data, loss and phase are per-point `args`, so each n
compiles once). A point runs in phases that continue from the previous one's final state: to
t_align (alignment event), to t_esc (loss ≤ L(0)/2), then free to `t_late`.
Writes `results.nc` (one netCDF group per experiment), the verdicts and manifest
(`gflow.studies.verdicts.write`) and figures; docs/alignment.md shows the measured verdict.
"""

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import options as solve_options
from ..theory import min2024
from . import figures
from . import verdicts as verdicts_io
from .command import register_study


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

    def __post_init__(self):
        # the solver options are checked where every solve path checks them
        solve_options.check_rtol(self.rtol)
        solve_options.check_max_steps(self.max_steps)


FULL = dict(
    ns=(4, 8, 16, 32, 64, 128, 256),
    t_late=1e4,
    digits_n=360,
    mnist_n=1000,
    real_seeds=(0, 1, 2),
)


def _plots(cfg, results, fits, out_dir):
    plt = figures.pyplot()

    paths = []

    def save(fig, name):
        figures.save(fig, out_dir / name, bbox="tight")
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
        figures.power_fit(ax, ns, T, f["slope"], *f["ci95"], "C0", "fit")
        first = np.exp(np.log(T[:, 0]).mean())
        ax.loglog(ns, first * np.log(ns) / np.log(ns[0]), "k:",
                  label=rf"growth like $\log n$ (row: slope CI < {f['beta_log_n']:.2f})")
        figures.log_ticks(ax, ns)
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
            figures.power_fit(ax, mus, T, f["slope"], *f["ci95"], "C0", "fit")
            mid = np.exp(np.log(T).mean() - f["slope"] * np.log(mus).mean())
            ref = mid * np.exp(f["slope"] * np.log(mus).mean())
            gm = np.exp(np.log(mus).mean())
            ax.fill_between(mus, ref * (mus / gm) ** -0.4, ref * (mus / gm) ** -0.6, color="C0", alpha=0.12,
                            label="tolerance: slope in [−0.6, −0.4]")
        ax.loglog(mus, min2024.t_align_bound(cfg.n, mus), "k--", label=r"bound $4\log n/\sqrt{\mu}$ (reconstructed)")
        figures.log_ticks(ax, mus)
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
        save(figures.cosine_traces(plt, syn, k, f"synthetic n={cfg.n}, μ={cfg.mu}, ε={cfg.init_scale:g}"), "cosines_synthetic.png")
    for name in ("digits", "mnist"):
        if name in results:
            save(figures.cosine_traces(plt, results[name], 0, f"{name} 0 vs 1, seed {cfg.real_seeds[0]}"), f"cosines_{name}.png")
            save(figures.weight_rows(plt, results[name], 0, name), f"rows_{name}.png")
    return paths


def run(cfg: AlignConfig, out_dir: Path) -> list:
    """Run every experiment of `cfg`; write results.nc, the verdicts (`verdicts_io.write`:
    verdicts.json/md, summary.json with the fits, config, timings and pool statistics, and
    manifest.json) and figures into `out_dir`. Returns the Verdicts."""
    results, rows, fits, timing = {}, [], {}, {}
    steps = []
    if cfg.synthetic:
        steps.append(("synthetic", lambda: min2024.run_synthetic(cfg), lambda o: min2024.synthetic_verdicts(cfg, o)))
    if cfg.ns:
        steps.append(("n_scaling", lambda: min2024.run_n_scaling(cfg), lambda o: min2024.n_verdicts(cfg, o)))
    if cfg.digits_n:
        steps.append(("digits", lambda: min2024.run_real(cfg, "digits"), lambda o: min2024.real_verdicts(cfg, o, "digits")))
    if cfg.mnist:
        steps.append(("mnist", lambda: min2024.run_real(cfg, "mnist"), lambda o: min2024.real_verdicts(cfg, o, "MNIST")))
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
    min2024.write_results(out_dir / "results.nc", {k: min2024.to_dataset(v) for k, v in results.items()})
    drawn = _plots(cfg, results, fits, out_dir)
    pool = {k: v["pool"] for k, v in results.items() if "pool" in v}
    summary = dict(fits=fits, config=asdict(cfg), wall_seconds=timing, pool=pool, figures=drawn)
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
    register_study(subparsers, "align", "early neuron alignment (Min, Mallada & Vidal 2024): grids and verdict",
                               command, "results/alignment", rtol=AlignConfig.rtol, quick=False, parts=PARTS,
                               options=_options)

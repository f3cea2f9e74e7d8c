"""`gflow run`: one gradient flow of a two-layer network, from options or a TOML config.

Writes `summary.json` (settings, status, where the solve ended, steps, final loss and alignment
of the neurons at that time) and `flow.png` (loss and per-neuron cosines to x̄_± over time) into
the output directory. `summary.json` is strict JSON: a value that is not finite is `null`. A run
that does not reach t1 (status max_steps, nonfinite, failed or stalled) still writes both files, marks on
the figure where it stopped, and exits with status 1 and a one-line reason.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .. import _toml
from ..flow import SOLVERS
from ..losses import LOSSES
from . import figures


@dataclass(frozen=True)
class RunConfig:
    """The settings of `gflow run`: each field is a command-line option and a TOML key (`HELP`
    says what it means)."""

    dataset: str = "digits"
    n: int = 0
    d: int = 10
    width: int = 50
    init_scale: float = 1e-6
    balanced: bool = True
    loss: str = "exponential"
    reduction: str = "sum"
    t1: float = 20.0
    num_saves: int = 200
    solver: str = "tsit5"
    rtol: float = 1e-6
    max_steps: int = 200_000
    seed: int = 0


HELP = {
    "dataset": "'digits' (scikit-learn's digits 0 vs 1, centred, d = 64) or 'gaussian' (Gaussian "
    "inputs on the unit sphere labelled by a random hyperplane: gflow.data.hyperplane)",
    "n": "number of samples: a random subsample of the 360 digits (0 = all of them), or the "
    "Gaussian sample size (0 = 40)",
    "d": "input dimension of the Gaussian data (ignored for digits)",
    "width": "hidden neurons h of the two-layer ReLU network f(x) = Σ_j v_j relu(w_jᵀx)",
    "init_scale": "ε, the scale of the initial weights",
    "balanced": "balanced initialisation |v_j| = ‖w_j‖ (--no-balanced: v_j ~ ε·N(0, 1/h))",
    "loss": f"per-sample loss: one of {', '.join(sorted(LOSSES))}",
    "reduction": "'sum' or 'mean' of the per-sample losses",
    "t1": "end time of the flow",
    "num_saves": "number of save times, evenly spaced in [0, t1]",
    "solver": f"Runge–Kutta solver: one of {', '.join(sorted(SOLVERS))}",
    "rtol": "relative error tolerance (atol is scale-aware: rtol·1e-2·rms(θ0))",
    "max_steps": "cap on solver steps; a run that reaches it ends with status max_steps (exit 1)",
    "seed": "seed of the data (subsample or Gaussian sample) and of the initial weights",
}


def load_config(path) -> dict:
    """Read a TOML file of RunConfig fields; unknown keys and wrong types are errors."""
    raw = _toml.read(path)
    known = {f.name: f.type for f in fields(RunConfig)}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"{path}: unknown key {key!r}; known keys are {sorted(known)}")
        kind = known[key]
        expected = (int, float) if kind is float else kind
        if not isinstance(value, expected) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"{path}: key {key!r} must be of type {kind.__name__}, got {value!r}")
    return raw


def make_problem(cfg: RunConfig):
    """(X, y) for the configured dataset."""
    from .. import data

    rng = np.random.default_rng(cfg.seed)
    if cfg.dataset == "digits":
        X, y = data.digits((0, 1))
        if cfg.n:
            idx = rng.choice(len(y), size=min(cfg.n, len(y)), replace=False)
            X, y = X[idx], y[idx]
        return X, y
    if cfg.dataset == "gaussian":
        return data.hyperplane(cfg.n or 40, cfg.d, rng)
    raise ValueError(f"unknown dataset {cfg.dataset!r}: use 'digits' or 'gaussian'")


def run(cfg: RunConfig, out: Path, progress: bool = False) -> dict:
    """Run the flow for `cfg`, write summary.json and flow.png into `out`, return the summary.

    The `*_final` values are taken at `t_final`, where the solve ended (t1, or where it stopped);
    `progress` shows a tqdm bar over [0, t1]."""
    import jax
    import jax.numpy as jnp

    from .. import losses, models, observables, simulate

    X, y = make_problem(cfg)
    L = losses.objective(models.two_layer, cfg.loss, X, y, reduction=cfg.reduction)
    params0 = models.init_two_layer(
        jax.random.PRNGKey(cfg.seed), X.shape[1], cfg.width, cfg.init_scale, balanced=cfg.balanced
    )
    x_plus, x_minus = observables.class_means(X, y)
    cos_plus, cos_minus = observables.cosine_to(x_plus), observables.cosine_to(x_minus)
    ts = jnp.linspace(0.0, cfg.t1, cfg.num_saves)
    start = time.perf_counter()
    traj = simulate(
        L,
        params0,
        cfg.t1,
        saveat=ts,
        solver=cfg.solver,
        rtol=cfg.rtol,
        max_steps=cfg.max_steps,
        save_params=False,
        progress=progress,
        observables={
            "cos_plus": cos_plus,
            "cos_minus": cos_minus,
            "balancedness": observables.balancedness,
            "stable_rank": observables.weight_stable_rank,
            "norms": observables.neuron_norms,
        },
    )
    jax.block_until_ready(traj.loss)
    wall = time.perf_counter() - start
    v_sign = np.sign(np.asarray(params0["v"]))
    final_params = traj.final_params
    final = {"loss": L(final_params), "cos_plus": cos_plus(final_params), "cos_minus": cos_minus(final_params)}
    cos_own = np.where(v_sign > 0, final["cos_plus"], final["cos_minus"])
    reached = np.asarray(traj.ts) <= float(traj.t_final)  # saves after a stop are NaN
    balancedness = np.vstack(
        [traj.observables["balancedness"][reached], observables.balancedness(final_params)]
    )
    summary = {
        "config": asdict(cfg),
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "status": str(traj.status),
        "t_final": float(traj.t_final),
        "num_steps": int(traj.num_steps),
        "num_rejected_steps": int(traj.num_rejected_steps),
        "wall_seconds": wall,
        "loss_initial": float(traj.loss[0]),
        "loss_final": float(final["loss"]),
        "stable_rank_final": float(observables.weight_stable_rank(final_params)),
        "median_cos_to_own_class_mean_final": float(np.median(cos_own)),
        "balancedness_drift_over_eps2": float(np.max(np.abs(balancedness - balancedness[0])))
        / cfg.init_scale**2,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(_strict(summary), indent=2, allow_nan=False))
    figures.run_figure(traj, final, v_sign, cfg.t1, out / "flow.png")
    return summary


def _strict(value):
    """`value` with every float that is not finite replaced by None (JSON null), recursively."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def stopped(summary: dict) -> str | None:
    """A one-line reason when the run did not reach t1 (status max_steps, nonfinite, failed or stalled);
    None when it did."""
    status = summary["status"]
    if status in ("success", "event"):
        return None
    t = summary["t_final"]
    where = f"stopped at t = {t:.4g} of t1 = {summary['config']['t1']:g}" if t is not None else "stopped"
    return (f"{status}: {where} after {summary['num_steps']} steps "
            f"({summary['num_rejected_steps']} rejected); {STOP_HINTS[status]}")


STOP_HINTS = {
    "max_steps": "raise --max-steps or loosen --rtol",
    "nonfinite": "the state became non-finite or the step size collapsed to round-off",
    "failed": "the solver failed (see gflow.status)",
    "stalled": "the switching solve stopped making progress; rerun with a looser --rtol (plain solve)",
}


def register(subparsers):
    p = subparsers.add_parser(
        "run",
        help="run one gradient flow of a two-layer ReLU network",
        description="Run one gradient flow dθ/dt = −∇L(θ) of a two-layer ReLU network and write "
        "OUT/summary.json and OUT/flow.png. Exits with status 1 and a one-line reason when the "
        "solve stops before t1 (max_steps, nonfinite, failed, stalled), 2 on a bad option or config.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                   help="TOML file with any of the options below as keys (options given on the "
                   "command line override it)")
    for f in fields(RunConfig):
        # SUPPRESS: an option not given is absent, so a config value is not overridden by a default
        kind = {"action": argparse.BooleanOptionalAction} if f.type is bool else {"type": f.type}
        p.add_argument(f"--{f.name.replace('_', '-')}", **kind, default=argparse.SUPPRESS,
                       help=f"{HELP[f.name]} (default: {f.default})")
    p.add_argument("--out", type=Path, default=Path("results/run"), help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stdout")
    p.set_defaults(func=main)


def main(args) -> int:
    settings = load_config(args.config) if hasattr(args, "config") else {}
    settings.update({f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)})
    summary = run(RunConfig(**settings), args.out, progress=not args.quiet)
    if not args.quiet:
        print(json.dumps(_strict(summary), indent=2))
        print(f"wrote {args.out / 'summary.json'} and {args.out / 'flow.png'}")
    reason = stopped(summary)
    if reason is None:
        return 0
    print(f"gflow run: {reason}", file=sys.stderr)
    return 1

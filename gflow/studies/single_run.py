"""`gflow run`: one gradient flow of a two-layer network, from options or a TOML config.

Writes `summary.json` (settings, status, steps, final loss, alignment of neurons) and
`flow.png` (loss and per-neuron cosines to x̄_± over time) into the output directory.
"""

import json
import time
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "digits"  # "digits" (0 vs 1, centred) or "gaussian" (hyperplane labels)
    n: int = 0  # subsample size for digits (0 = all), sample size for gaussian
    d: int = 10  # input dimension for gaussian
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


def load_config(path) -> dict:
    """Read a TOML file of RunConfig fields; unknown keys and wrong types are errors."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
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


def run(cfg: RunConfig, out: Path) -> dict:
    """Run the flow for `cfg`, write summary.json and flow.png into `out`, return the summary."""
    import jax
    import jax.numpy as jnp

    from .. import losses, models, observables, simulate

    X, y = make_problem(cfg)
    L = losses.objective(models.two_layer, cfg.loss, X, y, reduction=cfg.reduction)
    params0 = models.init_two_layer(
        jax.random.PRNGKey(cfg.seed), X.shape[1], cfg.width, cfg.init_scale, balanced=cfg.balanced
    )
    x_plus, x_minus = observables.class_means(X, y)
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
        observables={
            "cos_plus": observables.cosine_to(x_plus),
            "cos_minus": observables.cosine_to(x_minus),
            "balancedness": observables.balancedness,
            "stable_rank": observables.weight_stable_rank,
            "norms": observables.neuron_norms,
        },
    )
    jax.block_until_ready(traj.loss)
    wall = time.perf_counter() - start
    v_sign = np.sign(np.asarray(params0["v"]))
    cos_own = np.where(v_sign > 0, traj.observables["cos_plus"][-1], traj.observables["cos_minus"][-1])
    drift = np.max(np.abs(traj.observables["balancedness"] - traj.observables["balancedness"][0]))
    summary = {
        "config": asdict(cfg),
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "status": str(traj.status),
        "num_steps": int(traj.num_steps),
        "num_rejected_steps": int(traj.num_rejected_steps),
        "wall_seconds": wall,
        "loss_initial": float(traj.loss[0]),
        "loss_final": float(traj.final_loss),
        "stable_rank_final": float(traj.observables["stable_rank"][-1]),
        "median_cos_to_own_class_mean_final": float(np.median(cos_own)),
        "balancedness_drift_over_eps2": float(drift / cfg.init_scale**2),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(traj, v_sign, out / "flow.png")
    return summary


def _plot(traj, v_sign, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = np.asarray(traj.ts)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.semilogy(ts, np.asarray(traj.loss))
    ax1.set(xlabel="t", ylabel="L(θ(t))", title="loss")
    for name, ls in (("cos_plus", "-"), ("cos_minus", ":")):
        cos = np.asarray(traj.observables[name])
        for j in range(cos.shape[1]):
            ax2.plot(ts, cos[:, j], ls, color="C0" if v_sign[j] > 0 else "C3", lw=0.6)
    ax2.set(xlabel="t", ylabel="cos(w_j, x̄_±)", title="alignment (solid x̄₊, dotted x̄₋; blue v>0)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register(subparsers):
    p = subparsers.add_parser("run", help="run one gradient flow of a two-layer ReLU network")
    p.add_argument("--config", type=Path, help="TOML file with any of the options below")
    for f in fields(RunConfig):
        if f.type is bool:
            p.add_argument(f"--{f.name.replace('_', '-')}", action="store_true", default=None)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=f.type, default=None)
    p.add_argument("--out", type=Path, default=Path("results/run"))
    p.set_defaults(func=main)


def main(args) -> int:
    settings = load_config(args.config) if args.config else {}
    for f in fields(RunConfig):
        value = getattr(args, f.name)
        if value is not None:
            settings[f.name] = value
    summary = run(RunConfig(**settings), args.out)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'flow.png'}")
    return 0

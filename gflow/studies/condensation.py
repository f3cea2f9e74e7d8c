"""`gflow condensation`: experiments D1–D3 of science_B §D (Zhou et al., NeurIPS 2022) as
gradient flows, with the automatic orientation count of `gflow.condensation`.

- D1 (d = 1, the data of the paper's Fig. 5): K_line = p for tanh, x·tanh x, x²·tanh x in ≥ 80%
  of seeds, K ≤ 2p in all, and centroids within |cos| ≥ 0.98 of the leading-order directions of
  `gflow.theory.zhou2022`.
- D2 (d = 5, the data of Fig. 2): p = 1 gives one line with quality ≥ 0.9 (tanh: K = 2);
  x·tanh x gives K ∈ {3, 4}; x²·tanh x gives K ≤ 6, compared with the KKT count of T_3; ReLU is
  reported only.
- D3: after the stopping time the count K(t) does not fall as the loss falls.

The "initial stage" ends at T_stop, the first time R_S ≤ 0.99·R_S(0), or when
max_j ‖w_j‖ = 30·σ0·√(d+1) (science_B §D [P]). Writes `verdicts.json`, `verdicts.md`,
`summary.json` and heat maps `heatmaps_D1.png`, `heatmaps_D2.png`, `counts_D3.png` into --out.
"""

import time
from pathlib import Path

import numpy as np

from . import verdicts as verdicts_io
from .verdicts import verdict

P1 = ("tanh", "sigmoid", "softplus")


def fig5_data():
    """d = 1: 40 points on [−1, 1.5], f*(x) = sin 3x + ½ sin 6x (Zhou et al., Figs. 5–6)."""
    x = np.linspace(-1.0, 1.5, 40)
    return x[:, None], np.sin(3 * x) + np.sin(6 * x) / 2


def fig2_data(seed, n=80, d=5):
    """d = 5: x_k ~ U[−4, 2], f*(x) = Σ_k 3.5·sin(5x_k + 1), n = 80 (Zhou et al., Fig. 2)."""
    X = np.random.default_rng(seed).uniform(-4.0, 2.0, (n, d))
    return X, (3.5 * np.sin(5 * X + 1)).sum(axis=1)


def init_scale(activation):
    """σ0 = 1e−4 for p ≤ 1 (and ReLU), 1e−3 for p = 2, 3 (science_B §D [P])."""
    return 1e-3 if activation in ("xtanh", "x2tanh") else 1e-4


ACTIVATIONS = ("tanh", "sigmoid", "softplus", "xtanh", "x2tanh", "relu")


def _sigma(index, z):
    # The activation is chosen by a traced index, so that one compiled solve serves all six.
    import jax

    from .. import models

    return jax.lax.switch(index, [models.ACTIVATIONS[a] for a in ACTIVATIONS], z)


def _risk(params, args):
    """R_S = (1/2n) Σ_i (f(x_i) − y_i)², f = Σ_j a_j σ(w_j·x̃) (Zhou et al., eq. 2)."""
    from .. import models

    f = _sigma(args["activation"], models.with_bias(args["X"]) @ params["W"].T) @ params["a"]
    return 0.5 * ((f - args["y"]) ** 2).mean()


def _stop(params, args):
    """T_stop: R_S ≤ 0.99·R_S(0), or max_j ‖w_j‖ ≥ 30σ0√(d+1) (science_B §D [P])."""
    import jax.numpy as jnp

    big = jnp.linalg.norm(params["W"], axis=1).max() >= args["w_max"]
    return (_risk(params, args) <= args["risk_stop"]) | big


def initial_stage(X, y, activation, width, seed, rtol=1e-6, t1=1e9, later=()):
    """Gradient flow of R_S from N(0, σ0²) parameters up to T_stop.

    Returns a dict with the weights W and a at T_stop, the residual e = f − y there, T_stop,
    the status, the step count, and, for each fraction in `later` (decreasing, < 0.99), the
    time, weights and risk where the continued flow first reaches R_S = fraction·R_S(0).
    """
    import jax
    import jax.numpy as jnp

    from .. import models, simulate

    sigma0 = init_scale(activation)
    params = models.init_two_layer_bias(jax.random.PRNGKey(seed), X.shape[1], width, sigma0)
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y), "activation": jnp.asarray(ACTIVATIONS.index(activation))}
    risk0 = _risk(params, args)
    args["risk_stop"] = 0.99 * risk0
    args["w_max"] = jnp.asarray(30 * sigma0 * np.sqrt(X.shape[1] + 1))
    traj = simulate(_risk, params, t1, rtol=rtol, event=_stop, args=args, save_params=False)
    params = traj.final_params
    out = {
        "W": np.asarray(params["W"]),
        "a": np.asarray(params["a"]),
        "residual": np.asarray(models.two_layer_bias(params, X, activation)) - y,
        "t_stop": float(traj.t_final),
        "status": str(traj.status),
        "num_steps": int(traj.num_steps),
        "stopped_by_loss": bool(_risk(params, args) <= args["risk_stop"] * (1 + 1e-9)),
        "later_ts": [float(traj.t_final)],
        "later_risk": [float(_risk(params, args) / risk0)],
    }
    out["later_W"] = [out["W"]]
    # The continued flow reuses the same compiled solve, with the loss event moved down.
    args["w_max"] = jnp.asarray(np.inf)
    for fraction in later:
        args["risk_stop"] = fraction * risk0
        traj = simulate(_risk, params, t1, t0=out["later_ts"][-1], rtol=rtol, event=_stop, args=args, save_params=False)
        if str(traj.status) != "event":
            break
        params = traj.final_params
        out["later_ts"].append(float(traj.t_final))
        out["later_W"].append(np.asarray(params["W"]))
        out["later_risk"].append(float(_risk(params, args) / risk0))
    return out


def _centroid_match(result, count, activation, X):
    """min over counted clusters of max cos(centroid, predicted orientation for the cluster's
    majority sign of a_j), predictions from the residual at T_stop."""
    from ..theory import zhou2022

    best = []
    for k, centroid in enumerate(count.centroids):
        sign = np.sign(np.sum(np.sign(result["a"][count.labels == k]))) or 1.0
        predicted = zhou2022.predicted_directions(activation, X, result["residual"], a_sign=sign)
        best.append(float(np.max(predicted @ centroid)))
    return min(best) if best else float("nan")




def run_d1(seeds, width, rtol, activations=("tanh", "xtanh", "x2tanh")):
    """D1 on the data of Fig. 5; returns (verdicts, per-run records, weights for heat maps)."""
    from .. import condensation as cond
    from ..theory import zhou2022

    X, y = fig5_data()
    verdicts, records, maps = [], [], {}
    for act in activations:
        p = zhou2022.multiplicity(act)
        lines, orientations, matches = [], [], []
        for seed in seeds:
            r = initial_stage(X, y, act, width, seed, rtol)
            c = cond.condensation(r["W"])
            lines.append(c.num_lines)
            orientations.append(c.num_orientations)
            matches.append(_centroid_match(r, c, act, X))
            records.append(_record("D1", act, seed, r, c))
            maps.setdefault(act, r["W"])
        share = np.mean(np.asarray(lines) == p)
        verdicts += [
            verdict("D1", f"{act}: K_line = p in ≥ 80% of seeds", f"{share:.0%} of {len(seeds)} (K_line {lines})", f"K_line = {p}", "≥ 80% of seeds", share >= 0.8),
            verdict("D1", f"{act}: K ≤ 2p in every seed", max(orientations), f"≤ {2 * p}", "all seeds", max(orientations) <= 2 * p),
            verdict("D1", f"{act}: centroids on predicted directions", round(min(matches), 4), "cos = 1", "cos ≥ 0.98", min(matches) >= 0.98),
        ]
    return verdicts, records, maps


def run_d2(seeds, width, rtol, activations=("tanh", "sigmoid", "softplus", "xtanh", "x2tanh", "relu")):
    """D2 on the data of Fig. 2 (one dataset per seed); returns (verdicts, records, heat maps)."""
    from .. import condensation as cond
    from ..theory import zhou2022

    verdicts, records, maps = [], [], {}
    for act in activations:
        runs = []
        for seed in seeds:
            X, y = fig2_data(seed)
            r = initial_stage(X, y, act, width, seed, rtol)
            c = cond.condensation(r["W"])
            extra = {}
            if act == "x2tanh":
                extra["kkt_orientations"] = 2 * len(zhou2022.maxima_p3(X, r["residual"]))
            runs.append((c, extra))
            records.append(_record("D2", act, seed, r, c, **extra))
            maps.setdefault(act, r["W"])
        K = [c.num_orientations for c, _ in runs]
        lines = [c.num_lines for c, _ in runs]
        q = min(c.quality for c, _ in runs)
        if act in P1:
            verdicts.append(verdict("D2", f"{act}: one line, q ≥ 0.9", f"K_line {lines}, min q {q:.2f}", "K_line = 1", "q ≥ 0.9", set(lines) == {1} and q >= 0.9))
            if act == "tanh":
                verdicts.append(verdict("D2", "tanh: K = 2", K, 2, "exact", set(K) == {2}))
        elif act == "xtanh":
            verdicts.append(verdict("D2", "xtanh: K ∈ {3, 4}", K, "3 or 4", "exact", set(K) <= {3, 4}))
        elif act == "x2tanh":
            kkt = [e["kkt_orientations"] for _, e in runs]
            verdicts.append(verdict("D2", "x2tanh: K ≤ 2p = 6 (conjecture)", K, "≤ 6", "exact", max(K) <= 6))
            verdicts.append(verdict("D2", "x2tanh: K ≤ KKT count (2 × local maxima of T_3)", K, kkt, "K ≤ KKT", all(k <= t for k, t in zip(K, kkt))))
        else:
            verdicts.append(verdict("D2", f"{act}: report only (paper: 3 orientations)", K, "report", "none", True))
    return verdicts, records, maps


def run_d3(seed, width, rtol, activations=("tanh", "xtanh", "x2tanh"), later=(0.9, 0.7, 0.5, 0.3)):
    """D3: K(t) where the loss has fallen to fractions `later` of R_S(0), on the Fig. 5 data;
    K must not fall below K(T_stop)."""
    from .. import condensation as cond

    X, y = fig5_data()
    verdicts, curves = [], {}
    for act in activations:
        r = initial_stage(X, y, act, width, seed, rtol, later=later)
        K = [cond.condensation(W).num_orientations for W in r["later_W"]]
        curves[act] = {"t_over_t_stop": list(np.asarray(r["later_ts"]) / r["t_stop"]), "K": K, "risk": list(r["later_risk"])}
        verdicts.append(verdict("D3", f"{act}: K(t) ≥ K(T_stop) as the loss falls", K, f"≥ {K[0]}", "qualitative", min(K) >= K[0]))
    return verdicts, curves


def _record(experiment, activation, seed, r, c, **extra):
    return {
        "experiment": experiment,
        "activation": activation,
        "seed": seed,
        "t_stop": r["t_stop"],
        "stopped_by_loss": r["stopped_by_loss"],
        "status": r["status"],
        "num_steps": r["num_steps"],
        "K": c.num_orientations,
        "K_line": c.num_lines,
        "q": c.quality,
        "active": c.num_active,
        "robust_K": _robust_counts(r["W"]),
        **extra,
    }


def _robust_counts(W):
    # K over the robustness grid (rows: cos thresholds, columns: norm cuts).
    from .. import condensation as cond

    return cond.robustness(W)["num_orientations"].tolist()




def _plot_maps(maps, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import condensation as cond

    fig, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2), squeeze=False)
    for ax, (act, W) in zip(axes[0], maps.items()):
        image = cond.plot_heatmap(W, ax, title=f"{act}: K={cond.condensation(W).num_orientations}")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="cos(w_j, w_k)")
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _plot_d3(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for act, c in curves.items():
        ax.plot(c["risk"], c["K"], "o-", label=act)
    ax.set(xlabel="R_S(t) / R_S(0)", ylabel="K(t)", title="D3: orientation count as the loss falls")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out: Path, quick=False, rtol=1e-6) -> list:
    """All of D1–D3; quick mode uses fewer seeds, activations and a narrower net (≤ 1 min)."""
    start = time.perf_counter()
    if quick:
        d1 = run_d1(range(2), 50, rtol)
        d2 = run_d2(range(1), 50, rtol, activations=("tanh",))
        d3 = run_d3(0, 50, rtol, activations=("tanh",), later=(0.9, 0.5))
    else:
        d1 = run_d1(range(10), 100, rtol)
        d2 = run_d2(range(5), 50, rtol)
        d3 = run_d3(0, 100, rtol)
    verdicts = d1[0] + d2[0] + d3[0]
    summary = {"quick": quick, "rtol": rtol, "wall_seconds": time.perf_counter() - start, "runs": d1[1] + d2[1], "d3": d3[1]}
    verdicts_io.write(out, verdicts, summary)
    _plot_maps(d1[2], out / "heatmaps_D1.png", "D1 (d = 1, Fig. 5 data): cosine similarity at T_stop")
    _plot_maps(d2[2], out / "heatmaps_D2.png", "D2 (d = 5, Fig. 2 data): cosine similarity at T_stop")
    _plot_d3(d3[1], out / "counts_D3.png")
    return verdicts


def register(subparsers):
    verdicts_io.register_study(subparsers, "condensation", "Zhou et al. 2022: condensed orientations (D1–D3)", run, "results/condensation")

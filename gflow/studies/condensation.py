"""`gflow condensation`: experiments D1–D4 of science_B §D (Zhou et al., NeurIPS 2022) as
gradient flows, with the automatic orientation count of `gflow.condensation`.

- D1 (d = 1, the data of the paper's Fig. 5, N(0, σ0²) init): K_line = p for tanh, x·tanh x,
  x²·tanh x in ≥ 80% of seeds, K ≤ 2p (the headline) and centroids within cos ≥ 0.98 of the
  leading-order directions of `gflow.theory.zhou2022`.
- D1-equal: D1 from the same directions with every ‖w_j‖ = σ0 = 5e−3 and a_j = ±σ0, which
  removes the lottery of initial norms that makes p ≥ 2 winner-take-all under gradient flow,
  so that the count rows run on flows that condensed.
- D2 (d = 5, the data of Fig. 2): p = 1 gives one line with quality ≥ 0.9 (tanh: K = 2);
  x·tanh x gives K ∈ {3, 4}; x²·tanh x gives K ≤ 6 and K ≤ the KKT count of T_3; ReLU is
  recorded only.
- D3: after the stopping time the count K(t) does not fall as the loss falls.
- D4 (the residual net of Fig. 3): lines per layer 3, 2, 1, 1, 1 (the multiplicities).
- D1-Adam, a labelled cross-check and not a gradient flow: D1 trained by full-batch Adam with the
  paper's settings (`zhou2022.adam_stage`), to show whether the paper's optimiser gives the 2p
  orientations that the gradient flow does not.

Every row is a criterion of `gflow.theory.zhou2022`, which also holds the flows
(`initial_stage`, `residual_stage`); a count bound (K ≤ 2p, K ≤ KKT count, K(t) ≥ K(T_stop)) is
not applicable where nothing condensed (K = 0), never a pass. The "initial
stage" ends at T_stop, the first time R_S ≤ 0.99·R_S(0); the norm cap max_j ‖w_j‖ =
30·σ0·√(d+1) is only the fallback for a flow that never gets there (science_B §D [P]). Writes
the verdicts, summary and manifest (`gflow.studies.verdicts.write`), heat maps
`heatmaps_D1.png`, `heatmaps_D1_equal.png`, `heatmaps_D2.png`, `heatmaps_D4.png`,
`directions_D1.png` and `counts_D3.png` into --out.
"""

import time
from pathlib import Path

import numpy as np

from ..theory import zhou2022
from . import figures
from . import verdicts as verdicts_io


def run_d1(seeds, width, rtol, activations=("tanh", "xtanh", "x2tanh"), *, experiment="D1", sigma0=None,
           equal_norms=False):
    """D1 on the data of Fig. 5 (`zhou2022.initial_stage` with `sigma0`, `equal_norms`); returns (verdicts,
    per-run records, weights for heat maps, (norm ratio, alignment) of all neurons per activation
    for the direction figure). Rows per activation: K_line = p, K ≤ 2p (the headline of D1; not
    applicable where nothing condensed), centroids on the predicted directions."""
    from .. import condensation as cond

    X, y = zhou2022.fig5_data()
    verdicts, records, maps, directions = [], [], {}, {}
    for act in activations:
        p = zhou2022.multiplicity(act)
        counts, matches = [], []
        for seed in seeds:
            r = zhou2022.initial_stage(X, y, act, width, seed, rtol, sigma0=sigma0, equal_norms=equal_norms)
            c = cond.condensation(r["W"])
            cos = zhou2022.alignment(r, act, X)
            counts.append(c)
            matches.append(zhou2022.centroid_match(r, c, act, X))
            records.append(_record(experiment, act, seed, r, c, cos))
            maps.setdefault(act, r["W"])
            norms = np.linalg.norm(r["W"], axis=1)
            ratio, aligned = directions.get(act, ((), ()))
            directions[act] = (np.concatenate([ratio, norms / norms.max()]), np.concatenate([aligned, cos]))
        verdicts += _d1_rows(experiment, act, p, counts, matches, f"{act}, {_seeds(len(seeds))}")
    return verdicts, records, maps, directions


def _seeds(count):
    return f"{count} seed" + ("s" if count != 1 else "")


def _d1_rows(experiment, act, p, counts, matches, label):
    return [
        zhou2022.line_count_verdict(experiment, label, [c.num_lines for c in counts], p),
        zhou2022.two_p_verdict(experiment, label, [c.num_orientations for c in counts], p, headline=experiment == "D1"),
        zhou2022.centroid_verdict(experiment, label, matches),
    ]


def run_d1_adam(seeds, width, activations=("tanh", "xtanh", "x2tanh"), epochs=(200, 1000)):
    """D1 again with full-batch Adam (`zhou2022.adam_stage`, the paper's optimiser and settings) instead of
    gradient flow: a labelled cross-check of whether Adam gives the 2p orientations that the
    gradient flow does not, with D1's rows at the §D loss rule and at each epoch count
    (centroids against the initial-stage directions, from the residual at initialisation).
    Returns (verdicts, records)."""
    from .. import condensation as cond

    X, y = zhou2022.fig5_data()
    verdicts, records = [], []
    for act in activations:
        p = zhou2022.multiplicity(act)
        runs = {seed: zhou2022.adam_stage(X, y, act, width, seed, epochs=epochs) for seed in seeds}
        for k in range(len(epochs) + 1):
            counts, matches, stops, risks = [], [], [], []
            for seed, stages in runs.items():
                r = stages[k]
                c = cond.condensation(r["W"])
                counts.append(c)
                matches.append(zhou2022.centroid_match(r, c, act, X))
                stops.append(r["t_stop"])
                risks.append(r["risk"])
                records.append(_record("D1-Adam", act, seed, r, c, zhou2022.alignment(r, act, X), risk=r["risk"]))
            at = "R_S ≤ 0.99 R_S(0) at epoch" if k == 0 else "epoch"
            span = f"{min(stops)}" if min(stops) == max(stops) else f"{min(stops)}–{max(stops)}"
            label = (f"{act}, Adam lr 5e−4, {_seeds(len(runs))}, {at} {span}, "
                     f"R_S/R_S(0) {min(risks):.3f}–{max(risks):.3f}")
            verdicts += _d1_rows("D1-Adam", act, p, counts, matches, label)
    return verdicts, records


def run_d1_init(seeds, width, rtol, activations=("xtanh", "x2tanh"), inits=((2e-4, 1.0), (1e-3, 1.0), (5e-3, 1.0), (1e-3, 10.0), (1e-3, 0.1))):
    """Is p ≥ 2 winner-take-all an artefact of the initialisation? D1 with σ0 over a 25-fold range
    (5e−3 is the paper's) and with a scaled by 10 and 0.1 against w: records only (active set,
    K, median cos of all neurons to the predicted orientations, median ‖w_j‖/max), no verdict."""
    from .. import condensation as cond

    X, y = zhou2022.fig5_data()
    records = []
    for act in activations:
        for sigma0, a_scale in inits:
            rows = []
            for seed in seeds:
                r = zhou2022.initial_stage(X, y, act, width, seed, rtol, sigma0=sigma0, a_scale=a_scale)
                c = cond.condensation(r["W"])
                norms = np.linalg.norm(r["W"], axis=1)
                rows.append({"seed": seed, "t_stop": r["t_stop"], "stop_rule": r["stop_rule"], "active": c.num_active, "K": c.num_orientations,
                             "median_cos_all": float(np.nanmedian(zhou2022.alignment(r, act, X))), "median_norm_ratio": float(np.median(norms / norms.max()))})
            records.append({"experiment": "D1-init", "activation": act, "sigma0": sigma0, "a_scale": a_scale, "runs": rows})
    return records


def run_d2(seeds, width, rtol, activations=("tanh", "sigmoid", "softplus", "xtanh", "x2tanh", "relu"), n=80, d=5):
    """D2 on the data of Fig. 2 (one dataset per seed; n points in d dimensions, the paper's
    80 and 5 by default); returns (verdicts, records, heat maps). ReLU (no multiplicity) is
    recorded only."""
    from .. import condensation as cond

    verdicts, records, maps = [], [], {}
    for act in activations:
        runs = []
        for seed in seeds:
            X, y = zhou2022.fig2_data(seed, n, d)
            r = zhou2022.initial_stage(X, y, act, width, seed, rtol)
            c = cond.condensation(r["W"])
            extra = {}
            if act == "x2tanh":
                extra["kkt_orientations"] = 2 * len(zhou2022.maxima_p3(X, r["residual"]))
            runs.append((c, extra))
            cos = zhou2022.alignment(r, act, X) if act in zhou2022.MULTIPLICITY else None
            records.append(_record("D2", act, seed, r, c, cos, **extra))
            maps.setdefault(act, r["W"])
        K = [c.num_orientations for c, _ in runs]
        label = f"{act}, d = {d}, {_seeds(len(seeds))}"
        if act in zhou2022.P1:
            verdicts.append(zhou2022.one_line_verdict("D2", label, [c.num_lines for c, _ in runs], [c.quality for c, _ in runs]))
            if act == "tanh":
                verdicts.append(zhou2022.exact_count_verdict("D2", label, K, {2}, "tanh (σ(0) = 0, odd): the line ±ĝ "
                                                             "holds two orientations (science_B D2)"))
        elif act == "xtanh":
            verdicts.append(zhou2022.exact_count_verdict("D2", label, K, {3, 4}, "x·tanh x (p = 2): 3 or 4 orientations "
                                                         "on d = 5 (science_B D2)"))
        elif act == "x2tanh":
            verdicts.append(zhou2022.two_p_verdict("D2", label, K, 3))
            verdicts.append(zhou2022.kkt_verdict("D2", label, K, [e["kkt_orientations"] for _, e in runs]))
    return verdicts, records, maps


def run_d3(seed, width, rtol, activations=("tanh", "xtanh", "x2tanh"), later=(0.9, 0.7, 0.5, 0.3), *, sigma0=None,
           equal_norms=False):
    """D3: K(t) where the loss has fallen to fractions `later` of R_S(0), on the Fig. 5 data;
    K must not fall below K(T_stop) (not applicable where K(T_stop) = 0)."""
    from .. import condensation as cond

    X, y = zhou2022.fig5_data()
    verdicts, curves = [], {}
    init = ", equal norms" if equal_norms else ""
    for act in activations:
        r = zhou2022.initial_stage(X, y, act, width, seed, rtol, later=later, sigma0=sigma0, equal_norms=equal_norms)
        K = [cond.condensation(W).num_orientations for W in r["later_W"]]
        curves[act + init] = {"t_over_t_stop": list(np.asarray(r["later_ts"]) / r["t_stop"]), "K": K, "risk": list(r["later_risk"])}
        stops = ", ".join(f"{q:.2f}" for q in r["later_risk"])
        verdicts.append(zhou2022.persistence_verdict("D3", f"{act}{init}, seed {seed}, R_S/R_S(0) = {stops}", K))
    return verdicts, curves


def run_d4(seeds, rtol, later=(0.9, 0.5)):
    """D4 (Zhou et al., Fig. 3): lines per residual layer at T_stop, against the paper's by-eye
    counts 3, 2, 1, 1, 1 (= the multiplicities of x²tanh, x·tanh, sigmoid, tanh, softplus), and
    K ≤ 2p (not applicable where nothing condensed); the records hold the counts where the
    continued flow reaches the fractions `later` of R_S(0)."""
    from .. import condensation as cond

    runs = [zhou2022.residual_stage(seed, rtol=rtol, later=later) for seed in seeds]
    # counts[run][stop][layer]
    counts = [[[cond.condensation(W) for W in layers] for layers in r["layers"]] for r in runs]
    verdicts = []
    for layer, act in enumerate(zhou2022.RESIDUAL_ACTIVATIONS):
        p = zhou2022.multiplicity(act)
        label = f"residual layer {layer + 1} ({act}), {_seeds(len(seeds))}"
        verdicts += [
            zhou2022.line_count_verdict("D4", label, [c[0][layer].num_lines for c in counts], p),
            zhou2022.two_p_verdict("D4", label, [c[0][layer].num_orientations for c in counts], p),
        ]
    records = [
        {
            "experiment": "D4", "seed": seed, "ts": r["ts"], "risk": r["risk"], "stop_rule": r["stop_rule"], "status": r["status"], "num_steps": r["num_steps"],
            # Per stop (T_stop, then each later fraction reached), per layer.
            "K": [[x.num_orientations for x in stop] for stop in c],
            "K_line": [[x.num_lines for x in stop] for stop in c],
            "active": [[x.num_active for x in stop] for stop in c],
            "K_all": [[cond.condensation(W, norm_cut=0.0).num_orientations for W in layers] for layers in r["layers"]],
        }
        for seed, r, c in zip(seeds, runs, counts)
    ]
    maps = {f"layer {k + 1} ({act})": W for k, (act, W) in enumerate(zip(zhou2022.RESIDUAL_ACTIVATIONS, runs[0]["layers"][0]))}
    return verdicts, records, maps


def _record(experiment, activation, seed, r, c, cos=None, **extra):
    from .. import condensation as cond

    norms = np.linalg.norm(r["W"], axis=1)
    everyone = cond.condensation(r["W"], norm_cut=0.0)
    record = {
        "experiment": experiment,
        "activation": activation,
        "seed": seed,
        "t_stop": r["t_stop"],
        "stop_rule": r["stop_rule"],
        "status": r["status"],
        "num_steps": r["num_steps"],
        "K": c.num_orientations,
        "K_line": c.num_lines,
        "q": c.quality,
        "active": c.num_active,
        "robust_K": _robust_counts(r["W"]),
        # All neurons (norm cut 0): the directions whatever their norms.
        "K_all": everyone.num_orientations,
        "K_line_all": everyone.num_lines,
        "q_all": everyone.quality,
        "norm_ratio_quantiles_50_90_99": np.quantile(norms / norms.max(), [0.5, 0.9, 0.99]).round(5).tolist(),
        **extra,
    }
    if cos is not None:
        record["cos_predicted_quantiles_10_50_90"] = np.nanquantile(cos, [0.1, 0.5, 0.9]).round(4).tolist()
        record["share_cos_predicted_ge_0.99"] = float(np.mean(cos >= 0.99))
    return record


def _robust_counts(W):
    # K over the robustness grid (rows: cos thresholds, columns: norm cuts).
    from .. import condensation as cond

    return cond.robustness(W)["num_orientations"].tolist()


def _plot_maps(maps, path, title):
    plt = figures.pyplot()

    from .. import condensation as cond

    fig, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2), squeeze=False)
    for ax, (act, W) in zip(axes[0], maps.items()):
        image = cond.plot_heatmap(W, ax, title=f"{act}: K={cond.condensation(W).num_orientations}")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=r"$\cos(w_j, w_k)$")
    fig.suptitle(title)
    figures.save(fig, path, bbox="tight")


def _plot_directions(directions, path):
    """All neurons at T_stop (all seeds): norm relative to the largest against the cosine to the
    nearest predicted orientation; the dashed line is the active-set cut 0.2."""
    plt = figures.pyplot()

    fig, axes = plt.subplots(1, len(directions), figsize=(3.3 * len(directions), 3.2), squeeze=False)
    for ax, (act, (ratio, cos)) in zip(axes[0], directions.items()):
        ax.semilogx(ratio, cos, ".", ms=3, alpha=0.5)
        ax.axvline(0.2, color="k", ls="--", lw=0.8, label="active-set cut 0.2")
        ax.set(xlabel=r"$\|w_j\| / \max_k \|w_k\|$", ylim=(-1.05, 1.05), title=act)
    axes[0][0].set_ylabel(r"$\cos(\hat w_j$, predicted orientation$)$")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("D1 at T_stop: direction of every neuron (no norm cut)")
    figures.save(fig, path)


def _plot_d3(curves, path):
    plt = figures.pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for act, c in curves.items():
        ax.plot(c["risk"], c["K"], "o-", label=act)
    ax.set(xlabel=r"$R_S(t) / R_S(0)$", ylabel=r"$K(t)$", title="D3: orientation count as the loss falls")
    ax.invert_xaxis()
    ax.legend()
    figures.save(fig, path)


PARTS = ("D1", "D1-equal", "D2", "D3", "D4", "D1-init", "D1-Adam")


def run(out: Path, quick=False, rtol=1e-6, parts=PARTS) -> list:
    """The experiments of `parts` (names of `PARTS`: D1–D4, D1 with equal initial norms, D1-init and
    the D1-Adam cross-check; default all); writes the verdicts, summary and manifest
    (`verdicts_io.write`) and the figures into `out`, returns the Verdicts. Quick mode: 2 seeds,
    fewer activations and a narrower net, no D4 and no D1-init, D1-Adam for x²·tanh only, D1 with
    equal norms for x·tanh only, and D2's target on 40 points in d = 1 (the shapes of D1), so that
    one compiled solve serves the whole run."""
    start = time.perf_counter()
    out = Path(out)
    seeds = range(2) if quick else range(10)
    empty = ([], [], {}, {})
    steps = {
        "D1": lambda: run_d1(seeds, 50 if quick else 100, rtol),
        "D1-equal": lambda: run_d1(range(2) if quick else range(5), 100 if quick else 400, rtol,
                                   ("xtanh",) if quick else ("xtanh", "x2tanh"), experiment="D1-equal", sigma0=5e-3,
                                   equal_norms=True),
        "D2": lambda: (run_d2(range(1), 50, rtol, activations=("tanh",), n=40, d=1) if quick
                       else run_d2(range(5), 50, rtol)),
        "D3": lambda: run_d3(0, 50, rtol, activations=("tanh",), later=(0.9, 0.5)) if quick else run_d3(0, 100, rtol),
        "D4": lambda: ([], [], {}) if quick else run_d4(range(3), rtol),
        "D1-init": lambda: [] if quick else run_d1_init(range(3), 100, rtol),
        "D1-Adam": lambda: run_d1_adam(seeds, 50, activations=("x2tanh",)) if quick else run_d1_adam(seeds, 100),
    }
    got = {name: steps[name]() if name in parts else None for name in PARTS}
    d1, equal, d2, d3, d4 = (got[k] or empty for k in ("D1", "D1-equal", "D2", "D3", "D4"))
    adam = got["D1-Adam"] or ([], [])
    verdicts = d1[0] + equal[0] + d2[0] + d3[0] + d4[0] + adam[0]
    wall = time.perf_counter() - start
    summary = {"quick": quick, "rtol": rtol, "parts": list(parts), "wall_seconds": wall,
               "runs": d1[1] + equal[1] + (got["D1-init"] or []) + d2[1] + d4[1] + adam[1], "d3": d3[1]}
    verdicts_io.write(out, verdicts, summary, seeds=seeds, wall_seconds=wall)
    figures = [(d1[2], "heatmaps_D1.png", "D1 (d = 1, Fig. 5 data, Gaussian init): cosine similarity at T_stop"),
               (equal[2], "heatmaps_D1_equal.png", "D1 with equal initial norms (σ0 = 5e−3): cosine similarity at T_stop"),
               (d2[2], "heatmaps_D2.png", "D2 (Fig. 2 target): cosine similarity at T_stop"),
               (d4[2], "heatmaps_D4.png", "D4 (Fig. 3 residual net, seed 0): cosine similarity per layer at T_stop")]
    for maps, name, title in figures:
        if maps:
            _plot_maps(maps, out / name, title)
    directions = d1[3] | {f"{k}, equal norms": v for k, v in equal[3].items()}
    if directions:
        _plot_directions(directions, out / "directions_D1.png")
    if d3[1]:
        _plot_d3(d3[1], out / "counts_D3.png")
    return verdicts


def register(subparsers):
    verdicts_io.register_study(subparsers, "condensation", "Zhou et al. 2022: condensed orientations (D1–D4)", run,
                               "results/condensation", parts=PARTS)

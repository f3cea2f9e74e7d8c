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
(`initial_stage`, `residual_stage`) and the experiments (`run_d1` … `run_d4`, `run_d1_adam`,
`run_d1_init`); this module chooses their settings, draws the figures and is the command; a count bound (K ≤ 2p, K ≤ KKT count, K(t) ≥ K(T_stop)) is
not applicable where nothing condensed (K = 0), never a pass. The "initial
stage" ends at T_stop, the first time R_S ≤ 0.99·R_S(0); the norm cap max_j ‖w_j‖ =
30·σ0·√(d+1) is only the fallback for a flow that never gets there (science_B §D [P]). Writes
the verdicts, summary and manifest (`gflow.studies.verdicts.write`), heat maps
`heatmaps_D1.png`, `heatmaps_D1_equal.png`, `heatmaps_D2.png`, `heatmaps_D4.png`,
`directions_D1.png` and `counts_D3.png` into --out.
"""

import time
from pathlib import Path

from ..theory import zhou2022
from . import figures
from . import verdicts as verdicts_io
from .command import register_study


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
        "D1": lambda: zhou2022.run_d1(seeds, 50 if quick else 100, rtol),
        "D1-equal": lambda: zhou2022.run_d1(range(2) if quick else range(5), 100 if quick else 400, rtol,
                                   ("xtanh",) if quick else ("xtanh", "x2tanh"), experiment="D1-equal", sigma0=5e-3,
                                   equal_norms=True),
        "D2": lambda: (zhou2022.run_d2(range(1), 50, rtol, activations=("tanh",), n=40, d=1) if quick
                       else zhou2022.run_d2(range(5), 50, rtol)),
        "D3": lambda: zhou2022.run_d3(0, 50, rtol, activations=("tanh",), later=(0.9, 0.5)) if quick else zhou2022.run_d3(0, 100, rtol),
        "D4": lambda: ([], [], {}) if quick else zhou2022.run_d4(range(3), rtol),
        "D1-init": lambda: [] if quick else zhou2022.run_d1_init(range(3), 100, rtol),
        "D1-Adam": lambda: zhou2022.run_d1_adam(seeds, 50, activations=("x2tanh",)) if quick else zhou2022.run_d1_adam(seeds, 100),
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
    register_study(subparsers, "condensation", "Zhou et al. 2022: condensed orientations (D1–D4)", run,
                               "results/condensation", parts=PARTS)

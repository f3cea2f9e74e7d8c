"""`gflow kumar-haupt`: experiments C1–C4 on Kumar & Haupt's flow near and beyond the origin.

Homogeneous networks with locally Lipschitz gradients (no ReLU kinks): the single-layer squared
ReLU H(x; W) = Σ_j max(0, w_jᵀx)² (order L = 2) and the two-layer Σ_j v_j max(0, w_jᵀx)²
(L = 3), square loss ½Σ(H − y)², init w(0) = δ·w0 with ‖w0‖ = 1. Predictions from
`gflow.theory.ncf`, computed without training (spherical ascent of the NCF); claims and pass
criteria from science_B.md §C:

- C1 directional convergence: at ‖w‖ = ρ, 1 − cos(w, u*) ≤ 1e-3 at δ = 1e-4 and ∝ δ.
- C2 escape time: slope 1/(2N*) in ln(1/δ) for L = 2; ∝ δ^{−1} and → 1/(3N*δ) for L = 3.
- C3 sparsity kept: neurons small at escape stay O(δ) until the flow is at the first saddle,
  whose loss is that of the flow from δ'u* and of the pruned net.
- C4 saddle to saddle: plateau level against the one-neuron saddle; duration linear in ln(1/δ)
  (increment slopes within 10% of the chord, `criteria.increment_nonlinearity`); the neurons
  small at escape aligned, as a block and one by one, with the residual NCF's KKT points, which
  `ncf.kkt_points` finds from random starts (none taken from the flow).

The experiments' flows and measurements are `gflow.theory.ncf`'s `c1_c2_single_layer`,
`c2_two_layer`, `c3_sparsity` and `c4_saddles`; their rows come from pure builders of the
measurements (`c1_c2_verdicts`, `c2_order3_verdicts`, `c3_verdicts`, `c4_verdicts`), each tested
with wrong inputs; a row whose premise is absent (no escape, no small neuron, no plateau) is not
applicable. This module chooses the settings, draws the figures and is the command.
"""

import time
from pathlib import Path

import numpy as np

from ..theory import ncf
from . import figures
from . import verdicts as verdicts_io
from .command import register_study
from .criteria import outcome_label


SETTINGS = {
    # quick mode leaves out the L = 3 sweep; tests check its formula exactly on the KKT ray
    "quick": {"c1": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8], "c2": None, "c3": [3e-3, 1e-3],
              "c4": [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]},
    "full": {"c1": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9],
             "c2": [1e-2, 3e-3, 1e-3, 3e-4, 1e-4], "c3": [1e-3, 1e-4],
             "c4": [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]},
}


PARTS = ("C1", "C2", "C3", "C4")


def run(out: Path, quick=False, parts=PARTS):
    """The experiments of `parts` (names of `PARTS`: C1 holds C1 and C2's L = 2 escape, which
    share their flows; C2 is the L = 3 escape sweep, full mode only; C4 starts from C1's u0 and
    u*, so C1's flows run for it too, its rows only when C1 is asked); returns the verdicts and
    writes them to `out`, with the figures when every part ran."""
    start = time.perf_counter()
    s = SETTINGS["quick" if quick else "full"]
    out.mkdir(parents=True, exist_ok=True)
    v1, r1 = ncf.c1_c2_single_layer(s["c1"]) if {"C1", "C4"} & set(parts) else ([], None)
    v1 = v1 if "C1" in parts else []
    v2, r2 = ncf.c2_two_layer(s["c2"]) if s["c2"] and "C2" in parts else ([], None)
    v3, r3 = ncf.c3_sparsity(s["c3"]) if "C3" in parts else ([], None)
    v4, r4 = ncf.c4_saddles(s["c4"], r1["u0"], r1["u_star"]) if "C4" in parts else ([], None)
    verdicts = v1 + v2 + v3 + v4
    verdicts_io.write(out, verdicts, {"paper": "Kumar & Haupt (arXiv 2402.09226, 2403.08121, "
                                      "2502.15952)", "mode": "quick" if quick else "full",
                                      "settings": s, "parts": list(parts), "rtol": ncf.RTOL,
                                      "wall_seconds": time.perf_counter() - start}, seeds=[0, 1])
    if set(parts) == set(PARTS):
        _plots(out, r1, r2, r3, r4, verdicts)
    return verdicts


def _plots(out, r1, r2, r3, r4, verdicts):
    plt = figures.pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0, 0]
    d = np.array([r["delta"] for r in r1["rows"]])
    ax.loglog(d, [r["one_minus_cos"] for r in r1["rows"]], "o", label="network flow")
    ax.loglog(d, [r["leading_order"] for r in r1["rows"]], "k-", lw=0.8,
              label=r"leading order $\delta\,\varphi$, $\dot\varphi=\nabla N(\varphi)$")
    ax.plot([3e-5, 3e-4], [1e-3, 1e-3], "r-", lw=2, label=r"pilot bound $10^{-3}$ at $\delta=10^{-4}$")
    ax.set(xlabel=r"$\delta$", ylabel=r"$1-\cos(W(t_\rho),u^*)$",
           title=f"C1 at $\\|W\\|=\\rho$: leading order {outcome_label(verdicts, 'C1', '1 − cos against')}, "
                 f"bound {outcome_label(verdicts, 'C1', '1 − cos(W')}")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(np.log(1 / d), [r["t_esc"] for r in r1["rows"]], "o", label="network flow (L = 2)")
    ax.plot(np.log(1 / d), [ncf.escape_time(r1["n_star"], 2, x, ncf.RHO) for x in d], "k-", lw=0.8,
            label=r"$\ln(\rho/\delta)/(2N^*)$")
    ax.set(xlabel=r"$\ln(1/\delta)$", ylabel=r"$t_{esc}$ ($\|W\|=\rho$)",
           title=f"C2 escape, L = 2: slope {outcome_label(verdicts, 'C2', 'slope')}")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    if r2:
        ax.loglog(r2["deltas"], r2["t_rand"], "o", label="random $w_0$")
        ax.loglog(r2["deltas"], r2["t_star"], "s", mfc="none", label="$w_0=u^*$")
        ax.loglog(r2["deltas"], r2["predicted"], "k-", lw=0.8,
                  label=r"$(\delta^{-1}-\rho^{-1})/(3N^*)$")
        ax.legend(fontsize=8)
        ax.set_title(f"C2 escape, L = 3: exponent {outcome_label(verdicts, 'C2', 'L = 3: log')}")
    else:
        ax.text(0.5, 0.5, "C2, L = 3: full mode only", ha="center", transform=ax.transAxes)
        ax.axis("off")
    ax.set(xlabel=r"$\delta$", ylabel=r"$t_{esc}$")
    ax = axes[1, 0]
    for r in r4["rows"]:
        ax.plot(r["ts"], r["loss"], lw=1, label=rf"$\delta=10^{{{np.log10(r['delta']):.0f}}}$")
    ax.plot(*r4["full"], "k", lw=0.6, label="smallest δ, through the 2nd drop")
    ax.axhline(r4["L_sad"], color="k", ls=":", label="one-neuron saddle")
    ax.set(xlabel="t", ylabel=r"$\frac{1}{2}\sum_i (H-y_i)^2$", xscale="log", yscale="log",
           title=f"C4 loss: plateau level {outcome_label(verdicts, 'C4', 'plateau level')}")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    d4 = np.array([r["delta"] for r in r4["rows"]])
    dur = np.array([r["duration"] for r in r4["rows"]])
    x = np.log(1 / d4)
    ax.plot(x, dur, "o-", label="plateau duration (L within ±1%)")
    ax.plot(x[[0, -1]], dur[[0, -1]], "k:", label="chord (linear law)")
    ax.set(xlabel=r"$\ln(1/\delta)$", ylabel="duration",
           title=f"C4 duration linear in $\\ln(1/\\delta)$: "
                 f"{outcome_label(verdicts, 'C4', 'plateau duration')}")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    for e in r4["directions"]:
        ax.axhline(np.degrees(np.arctan2(e[1], e[0])), color="k", ls=":", lw=0.8)
    for r in r4["rows"]:
        B = r["block"]
        if B.size:
            size = np.linalg.norm(B, axis=1)
            ax.scatter(np.full(len(B), r["delta"]), np.degrees(np.arctan2(B[:, 1], B[:, 0])),
                       s=10 + 60 * size / size.max(), c="C0")
    ax.set(xscale="log", xlabel=r"$\delta$", ylabel="angle of $w_j$ (°)",
           title=f"C4 small neurons at the 2nd drop (size ∝ norm)\nper neuron "
                 f"{outcome_label(verdicts, 'C4', 'per neuron')}, block "
                 f"{outcome_label(verdicts, 'C4', 'cos(w_z')}; dotted: KKT maximisers of $N_r$")
    figures.save(fig, out / "kumar_haupt.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in r3["rows"]:
        label = rf"$\delta={r['delta']:g}$"
        a1.plot(r["delta"] * r["ts"], r["loss"], label=label)
        line, = a2.plot(r["delta"] * r["ts"], r["z_ratio"], label=label)
        a2.axvline(r["delta"] * 0.5 * (r["t_in"] + r["t_out"]), color=line.get_color(), ls=":")
    a1.axhline(r3["L_ref"], color="k", ls=":", label=r"flow from $\delta' u^*$")
    a1.set(xlabel=r"$\delta t$", ylabel=r"$\frac{1}{2}\sum_i (H-y_i)^2$", yscale="log",
           title=f"C3 loss (ReLU², d = 5, m = 20): level {outcome_label(verdicts, 'C3', 'first-plateau')}")
    a1.legend(fontsize=8)
    a2.set(xlabel=r"$\delta t$", ylabel=r"$\max_Z \|\theta_j\|/\delta$", yscale="log",
           title=f"C3 neurons small at escape (dotted: mid-plateau): {outcome_label(verdicts, 'C3', 'max_Z')}")
    a2.legend(fontsize=8)
    figures.save(fig, out / "c3_sparsity.png")

    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="polar")
    W = r1["rows"][-1]["W"]
    ax.scatter(np.arctan2(W[:, 1], W[:, 0]), np.linalg.norm(W, axis=1),
               label=rf"$W(t_\rho)$, $\delta={r1['rows'][-1]['delta']:g}$")
    U = np.asarray(r1["u_star"]["W"]) * ncf.RHO
    ax.scatter(np.arctan2(U[:, 1], U[:, 0]), np.linalg.norm(U, axis=1), marker="x",
               label=r"$\rho\, u^*$ (spherical ascent from $w_0$)")
    ax.set_title("C1 neurons at $\\|W\\| = \\rho$ against the KKT point", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    figures.save(fig, out / "c1_neurons.png", layout=False)


def register(subparsers):
    register_study(subparsers, "kumar-haupt", "Kumar & Haupt's NCF and flows beyond "
                               "the origin: experiments C1–C4", run, "results/kumar_haupt",
                               rtol=False, parts=PARTS)

"""`gflow hinge-meanfield`: experiments E1–E4 of science_B §E on Pellegrini & Biroli (NeurIPS 2020,
arXiv 2006.11209): the gradient flow of a finite network against the mean-field closure of
`gflow.theory.hinge_meanfield` (a reconstruction [R]: every prediction row has basis
"reconstructed" or "derivation", none is the paper's own equation).

The network f(x) = (α/M) Σ_i a_i ReLU(w_i·x/√d) is trained on N teacher-labelled Gaussian inputs
(y = sign x₁, ŵ* = e₁) by the gradient flow of M·(1/(α²N)) Σ_μ ℓ_τ(y_μ f(x_μ)) (time rescaled by
M, so that ȧ_i = (1/(αN)) Σ u_μ y_μ σ(w_i·x_μ/√d) as in §E), with the linear hinge
max(0, h − z) smoothed as ℓ_τ(z) = τ·softplus((h − z)/τ).

- E1 (network vs closure): γ_i(t) = ln[(a_i + w∥i)/(a_i + w∥i)(0)] while ≥ 30% of examples are
  unsatisfied: the node mean against the closure's γ(t) within 3 standard errors of the data
  average that drives it (`gamma_tolerance(N)`), the spread over nodes within the finite-N
  noise 2√(d/N) (`spread_tolerance`), w⊥ frozen; τ-independence of the smoothing.
- E2 (closure against its own late-time asymptotics, basis reconstructed): dγ/d ln t = ¼,
  unsatisfied fraction ∝ t^{−1/2} with the predicted prefactor. (dγ/dt(0) = 1/(α√(2πd)) holds
  by construction and is a unit test, not a row.)
- E3: RD and mean |cos(w_i, ŵ*)| of the network at 90% satisfied against the closure; RD·α
  constant on the lazy side (closure and network).
- E4: finite M: the share of examples first satisfied inside x*(t) ± s against 68% within
  3 binomial standard errors (`band_tolerance`); finite N: departure fraction and test error.

Every row is a `gflow.studies.verdicts.check` of a small pure criterion of
`gflow.theory.hinge_meanfield`, which also holds the network's flow (`network_flow`) and the
experiments (`run_e1` … `run_e4`, `run_e3_network`, `run_finite_size`); this module chooses
their settings, draws the figures and is the command. Writes verdicts.json, verdicts.md, summary.json, manifest.json,
`gamma.png`, `closure_laws.png`, `alpha_sweep.png` and `e3_network.png` into --out.
"""

import time
from pathlib import Path

import numpy as np

from ..theory import hinge_meanfield as theory
from . import figures
from . import verdicts as verdicts_io
from .command import register_study
from .criteria import outcome_label

E2_D = 100  # the closure experiments use the paper's d = 100
FINITE_SIZES = ((1000, 100), (4000, 100), (16_000, 100), (16_000, 50), (16_000, 200), (16_000, 400))  # (N, M)
E3_NET_ALPHAS = (1.0,) + tuple(float(np.sqrt(20)) * 10 ** np.arange(0, 2, 0.5))  # κ = α/√20 ≈ 0.22, 1, 3.2, 10, 32


def plot_e3_network(out, rows, outcome="see verdicts"):
    """e3_network.png: RD and mean |cos| at 90% satisfied vs κ, network (train, test) and closure."""
    plt = figures.pyplot()

    kappa = [r["kappa"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for q, marker, name in (("rd90", "o", "RD"), ("cos90", "s", r"mean $|\cos(w,\hat w^*)|$")):
        line = ax.loglog(kappa, [r["closure"][q] for r in rows], marker + "--", mfc="none", label=f"{name}: closure")[0]
        ax.loglog(kappa, [r["train"][q] for r in rows], marker, color=line.get_color(), label=f"{name}: network, train 90%")
        ax.loglog(kappa, [r["test"][q] for r in rows], "x", color=line.get_color(), label=f"{name}: network, test 90%")
    ax.set(xlabel=r"$\kappa = \alpha/(h\sqrt{d})$", title=f"E3 at 90% satisfied: network vs closure ({outcome}, |error| ≤ 10%)")
    ax.legend(fontsize=7)
    figures.save(fig, out / "e3_network.png")


def _plots(out, runs, closure, e2, e3, e3_net, verdicts):
    plt = figures.pyplot()

    net = runs[min(runs)]
    t = net["t"]
    N = net["X"].shape[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.plot(t, net["gamma_nodes"][:, ::5], color="0.75", lw=0.5)
    ax1.plot([], [], color="0.75", lw=0.5, label=r"nodes' $\gamma_i$ (every 5th)")
    for tau, r in sorted(runs.items()):
        ax1.plot(t, np.nanmean(r["gamma_nodes"], 1), lw=1.5, label=rf"network mean $\gamma_i$, $\tau$={tau:g}")
    tol = theory.gamma_tolerance(N)
    ax1.plot(t, closure["gamma"], "k--", label=r"closure $\gamma(t)$")
    ax1.fill_between(t, closure["gamma"] * (1 - tol), closure["gamma"] * (1 + tol), color="k", alpha=0.1,
                     label=f"tolerance ±{tol:.2f} (3 s.e., N = {N})")
    window = (net["train_fraction"] >= 0.3) & (t >= 1.0)
    if window.any():
        ax1.axvspan(t[window][0], t[window][-1], color="C2", alpha=0.08, label="tested: frac ≥ 0.3")
    ax1.set(xscale="log", xlabel="t", ylabel=r"$\gamma$",
            title=f"E1 network vs closure: mean γ {outcome_label(verdicts, 'E1', 'node-mean')}, "
                  f"spread {outcome_label(verdicts, 'E1', 'spread')}, w⊥ frozen {outcome_label(verdicts, 'E1', 'w⊥')}")
    ax1.legend(fontsize=7)
    ax2.semilogx(t[1:], net["train_fraction"][1:], label="network, train")
    ax2.semilogx(t[1:], net["test_fraction"][1:], label="network, test")
    ax2.semilogx(t[1:], closure["fraction"][1:], "k--", label="closure")
    ax2.set(xlabel="t", ylabel=r"unsatisfied fraction ($y f < h$)", title="unsatisfied examples")
    ax2.legend(fontsize=7)
    figures.save(fig, out / "gamma.png")

    _, c = e2
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.semilogx(c["t"][1:], c["gamma"][1:], label="closure (numerical)")
    ax1.semilogx(c["t"][1:], theory.late_gamma(c["t"][1:], E2_D), "--", label=r"$\frac{1}{4}\ln t$ + const (asymptotics)")
    ax1.set(xlabel="t", ylabel=r"$\gamma$", ylim=(0, None), title=f"E2 closure vs its own asymptotics (d = {E2_D}): slope {outcome_label(verdicts, 'E2', 'dγ')}")
    ax1.legend(fontsize=8)
    ax2.loglog(c["t"][1:], c["fraction"][1:], label="closure (numerical)")
    late = c["t"] >= 1e2
    ax2.loglog(c["t"][late], theory.late_fraction(c["t"][late], E2_D), "--", label=r"$\sqrt{2}(d/2\pi)^{1/4}t^{-1/2}$")
    ax2.set(xlabel="t", ylabel="unsatisfied fraction",
            title=f"the slowdown, fraction ∝ $t^{{-1/2}}$: {outcome_label(verdicts, 'E2', 'log-log')}")
    ax2.legend(fontsize=8)
    figures.save(fig, out / "closure_laws.png")

    rows = e3[1]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.loglog([r["alpha"] for r in rows], [r["rd90"] for r in rows], "o-", label="RD at 90% satisfied")
    ax.loglog([r["alpha"] for r in rows], [r["rd90"] * r["alpha"] for r in rows], "^-", label=r"RD$\cdot\alpha$ (constant if lazy)")
    ax.loglog([r["alpha"] for r in rows], [r["cos90"] for r in rows], "s-", label=r"mean $|\cos(w,\hat w^*)|$")
    ax.set(xlabel=r"$\alpha$", title=f"E3 closure (d = {E2_D}): RD·α constant when lazy: {outcome_label(verdicts, 'E3', 'closure')}")
    ax.legend(fontsize=8)
    figures.save(fig, out / "alpha_sweep.png")
    plot_e3_network(out, e3_net, e3_network_outcome(verdicts))


def e3_network_outcome(verdicts):
    """The outcomes of E3's network rows (RD, then mean |cos|) for the title of e3_network.png."""
    return ("RD " + outcome_label(verdicts, "E3", "network (N") + ", cos "
            + outcome_label([v for v in verdicts if "cos" in v.quantity], "E3", "network (N"))


PARTS = ("E1", "E2", "E3", "E3-network", "E4", "finite-size")


def run(out: Path, quick=False, rtol=1e-6, parts=PARTS) -> list:
    """The experiments of `parts` (names of `PARTS`): E1–E4, E3's network side and the
    finite-size study of E1/E4; quick mode: a smaller network, fewer α, E3's network at one α
    and N = 2000, no finite-N or finite-size runs (E4 only checks the finite-M band on E1's
    network, so it runs with E1). Figures when E1, E2, E3 and E3-network ran; e3_network.png
    alone when E3-network ran without them."""
    start = time.perf_counter()
    skip = ([], {}, None)
    if quick:
        steps = {"E1": lambda: theory.run_e1(N=300, d=20, M=30, t1=20.0, taus=(1e-2, 1e-3), rtol=rtol),
                 "E2": lambda: theory.run_e2(d=E2_D, t1=1e5),
                 "E3": lambda: theory.run_e3(d=E2_D, alphas=(30, 300)),
                 "E3-network": lambda: theory.run_e3_network(N=2000, d=20, M=40, alphas=E3_NET_ALPHAS[3:4], n_test=2000,
                                                      check_rtol=False),
                 "E4": lambda: ([], []), "finite-size": lambda: ([], [])}
    else:
        steps = {"E1": lambda: theory.run_e1(N=1000, d=20, M=100, t1=60.0, taus=(1e-2, 3e-3, 1e-3), rtol=rtol),
                 "E2": lambda: theory.run_e2(d=E2_D, t1=1e5),
                 "E3": lambda: theory.run_e3(d=E2_D, alphas=(0.3, 1, 3, 10, 30, 100, 300)),
                 "E3-network": lambda: theory.run_e3_network(N=20_000, d=20, M=400, alphas=E3_NET_ALPHAS),
                 "E4": lambda: theory.run_e4(Ns=(250, 500, 1000), d=20, M=50, t1=60.0, rtol=rtol, tau=1e-3, Ms=(200,)),
                 "finite-size": lambda: theory.run_finite_size(FINITE_SIZES, d=20, t1=60.0)}
    got = {name: steps[name]() if name in parts else skip for name in PARTS}
    e1, e2, e3, e3_net, e4, sizes = (got[name] for name in PARTS)
    verdicts = [v for name in PARTS for v in got[name][0]]
    summary = {
        "quick": quick,
        "rtol": rtol,
        "parts": list(parts),
        "wall_seconds": time.perf_counter() - start,
        "e1_network": {str(tau): {k: r[k] for k in ("status", "num_steps")} for tau, r in e1[1].items()},
        "e3_alpha_sweep": e3[1],
        "e3_network": e3_net[1],
        "e4_finite_N": e4[1],
        "finite_size": sizes[1],
    }
    verdicts_io.write(out, verdicts, summary, seeds=[0])
    if {"E1", "E2", "E3", "E3-network"} <= set(parts):
        _plots(out, e1[1], e1[2], e2, e3, e3_net[1], verdicts)
    elif "E3-network" in parts:
        plot_e3_network(out, e3_net[1], e3_network_outcome(verdicts))
    return verdicts


def register(subparsers):
    register_study(subparsers, "hinge-meanfield", "Pellegrini & Biroli 2020: the mean-field theory of hinge-loss training (E1–E4)", run, "results/hinge_meanfield",
                               parts=PARTS)

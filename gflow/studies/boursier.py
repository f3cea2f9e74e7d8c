"""`gflow boursier`: experiments E2.1–E2.5 on Boursier & Flammarion's two-edged sword.

Two-layer ReLU networks with a hidden bias (inputs (x, 1)), MSE with mean reduction and no ½,
initialised at scale λ (`gflow.models.init_boursier`); predictions from
`gflow.theory.boursier2024`; claims and pass criteria from science_A.md, paper 2:

- E2.1 spurious plateau: balanced small init stalls at the least-squares value L_OLS.
- E2.2 two-edged control: large (λ = 1) or unbalanced init reaches zero loss; dominated stalls.
- E2.3 alignment precision: just before the loss drops, live a > 0 neurons point along D̂_all
  and a < 0 neurons are dead, more precisely as λ ↓.
- E2.4 escape: t_esc (L ≤ L(0)/2) is linear in ln(1/λ) with slope 1/‖D_all‖.
- E2.5 sparsity: on 40 points the kinks of the converged net form few clusters, at every width
  of a scan; not applicable unless every flow has stopped (a net still training has few kinks
  for the wrong reason).
- Held-out (E2.1): three-point sets drawn at random inside Theorem 2's η-box stall at their own
  least-squares value.

The experiments' flows and measurements are `gflow.theory.boursier2024`'s `e21_plateau`,
`held_out`, `e22_control`, `e23_e24_alignment_escape` and `e25_sparsity` (one compiled `flow`
per width); every row is built by `gflow.studies.verdicts.check` from a small pure criterion
(`gflow.studies.criteria`; `converged`, `few_kinks`, `alignment_sharpens` of the theory module).
This module chooses the settings, draws the figures and is the command: it writes
verdicts.json, verdicts.md, summary.json, manifest.json and figures into the output directory.
"""

import time
from pathlib import Path

import numpy as np

from .. import models
from ..theory import boursier2024 as theory
from . import figures
from . import verdicts as verdicts_io
from .command import register_study


# Flows that reach zero loss, and the 40-point fit, cross and slide along ReLU kinks: 10⁵–10⁶
# steps each at rtol 1e-6 (see docs/boursier_kumar.md), so quick mode leaves them out.
SETTINGS = {
    "quick": {"e21": ([100], [1e-3], 300.0), "held_out": (2, 100, 300.0),
              "e22": [("dominated", 1e-3, 100, 300.0, 0)], "e23": (100, [1e-2, 1e-3, 1e-4]),
              "e25": ([20, 40, 80], 2000.0)},
    "full": {"e21": ([100, 1000, 10_000], [1e-2, 1e-3, 1e-4], 2000.0), "held_out": (5, 100, 2000.0),
             "e22": [("balanced", 1.0, 100, 200.0, 0), ("unbalanced", 1e-3, 100, 300.0, 0),
                     ("unbalanced", 1e-3, 100, 300.0, 1), ("dominated", 1e-3, 1000, 2000.0, 0)],
             "e23": (1000, [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]), "e25": ([20, 50, 100, 200], 2000.0)},
}


PARTS = ("E2.1", "held-out", "E2.2", "E2.3", "E2.5")


def run(out: Path, quick=False, parts=PARTS):
    """The experiments of `parts` (names of `PARTS`; E2.3 holds E2.3 and E2.4, which share their
    flows); returns the verdicts and writes them to `out`, with the figures when every part ran."""
    start = time.perf_counter()
    s = SETTINGS["quick" if quick else "full"]
    out.mkdir(parents=True, exist_ok=True)
    steps = {"E2.1": lambda: theory.e21_plateau(*s["e21"]), "held-out": lambda: theory.held_out(*s["held_out"]),
             "E2.2": lambda: theory.e22_control(s["e22"]), "E2.3": lambda: theory.e23_e24_alignment_escape(*s["e23"]),
             "E2.5": lambda: theory.e25_sparsity(*s["e25"])}
    got = {name: steps[name]() if name in parts else ([], None) for name in PARTS}
    verdicts = [v for name in PARTS for v in got[name][0]]
    verdicts_io.write(out, verdicts, {"paper": "Boursier & Flammarion (arXiv 2401.10791)",
                                      "mode": "quick" if quick else "full", "settings": s, "parts": list(parts),
                                      "rtol": theory.RTOL, "wall_seconds": time.perf_counter() - start},
                      seeds=sorted({0, 1, *range(s["held_out"][0])}))
    outcome = {}
    for v in verdicts:
        outcome.setdefault(v.experiment, set()).add(v.outcome)
    if set(parts) == set(PARTS):
        _plots(out, *(got[name][1] for name in PARTS),
               {k: "FAIL" if "fail" in o else "pass" if o == {"pass"} else "pass / n/a" for k, o in outcome.items()})
    return verdicts


def _plots(out, r21, rho, r22, r23, r25, outcome):
    plt = figures.pyplot()

    X, y = theory.spurious_data()
    beta, l_ols = theory.plateau(X, y)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for r in r21 + r22:
        label = f"m={r['m']}, λ={r['lam']:g}" + (f", {r['init']}" if "init" in r else ", balanced")
        axes[0].loglog(r["ts"], r["loss"], label=label, lw=1)
    axes[0].axhline(l_ols, color="k", ls=":", label=r"$L_{OLS}$")
    axes[0].set(xlabel="t", ylabel="L", title=f"E2.1 plateau {outcome.get('E2.1')}, "
                f"E2.2 control {outcome.get('E2.2')}")
    axes[0].legend(fontsize=7)
    ax = fig.add_subplot(1, 3, 2, projection="polar")
    axes[1].remove()
    _polar(ax, r21[-1]["final"], f"E2.1 neurons at T (m={r21[-1]['m']}, λ={r21[-1]['lam']:g})", beta,
           r"$\beta_{OLS}$")
    xs = np.linspace(-1, 0.5, 300)
    Xs = np.asarray(models.with_bias(xs[:, None]))
    for r in [r21[-1]] + [r for r in r22 if r["init"] != "dominated"][:2]:
        label = r.get("init", "balanced") + f", λ={r['lam']:g}"
        axes[2].plot(xs, np.asarray(models.two_layer(r["final"], Xs)), label=label)
    axes[2].plot(xs, Xs @ beta, "k:", label="least-squares line")
    axes[2].plot(theory.SPURIOUS_X, y, "ko", label="data")
    axes[2].set(xlabel="x", ylabel=r"$h_\theta(x)$", title="fitted functions")
    axes[2].legend(fontsize=7)
    figures.save(fig, out / "spurious.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, r in enumerate(rho):
        line, = a1.loglog(r["ts"][1:], np.abs(r["loss"][1:] / r["L_OLS"] - 1), label=f"set {k}")
        Xs = np.column_stack([np.linspace(-1, 1, 200), np.linspace(r["X"][0, 1], r["X"][2, 1], 200)])
        a2.plot(Xs[:, 0], np.asarray(models.two_layer(r["final"], Xs)), color=line.get_color())
        a2.plot(r["X"][:, 0], r["y"], "o", color=line.get_color())
    a1.axhline(1e-3, color="k", ls=":", label="criterion $10^{-3}$")
    a1.set(xlabel="t", ylabel=r"$|L(t)/L_{OLS} - 1|$ (the set's own least squares)",
           title="held-out sets drawn in the η-box (η = 0.15): each stalls at its own $L_{OLS}$")
    a1.legend(fontsize=7)
    a2.set(xlabel=r"$\tilde x_1$", ylabel=r"$h_\theta$ at T",
           title="held-out data (dots) and the network at T (lines)")
    figures.save(fig, out / "held_out.png")

    d_all = theory.extremal_directions(X, y)[0]["w"]
    fig = plt.figure(figsize=(5 * len(r23), 4.8))
    for i, r in enumerate(r23):
        ax = fig.add_subplot(1, len(r23), i + 1, projection="polar")
        _polar(ax, {"W": r["probe"]["W"], "v": r["probe"]["a"]},
               f"E2.3 λ={r['lam']:g}, t={r['t_probe']:.2f}: alignment {outcome.get('E2.3')}", d_all,
               r"$\hat D_{all}$", normalise=True)
    figures.save(fig, out / "alignment.png")

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(17, 4.5))
    lams = np.array([r["lam"] for r in r23])
    t_esc = np.array([r["t_esc"] for r in r23])
    a1.plot(np.log(1 / lams), t_esc, "o", label=r"measured $t_{esc}$")
    slope = 1 / theory.extremal_directions(X, y)[0]["norm_D"]
    x0 = np.log(1 / lams)
    a1.plot(x0, t_esc.mean() + slope * (x0 - x0.mean()), "k-", lw=0.8,
            label=r"slope $1/\|D_{all}\|$")
    a1.set(xlabel=r"$\ln(1/\lambda)$", ylabel=r"$t_{esc}$ ($L \leq L_0/2$)",
           title=f"E2.4 escape: {outcome.get('E2.4')}")
    a1.legend()
    xs = np.linspace(-1, 1, 400)
    Xs = np.asarray(models.with_bias(xs[:, None]))
    for r in r25:
        line, = a2.plot(xs, np.asarray(models.two_layer(r["final"], Xs)),
                        label=f"m={r['m']}: {len(r['centres'])} kink clusters")
        for c in r["centres"]:
            a2.axvline(c, color=line.get_color(), lw=0.6, ls="--")
        a3.loglog(r["ts"][1:], r["loss"][1:], color=line.get_color(), label=f"m={r['m']}")
    a2.plot(r25[0]["x"], r25[0]["y"], "k.", label="data")
    a2.plot(theory.TEACHER_KNOTS_X, theory.TEACHER_KNOTS_Y, "k:", lw=0.8, label="teacher (7 interior knots)")
    a2.set(xlabel="x", ylabel=r"$h_\theta(x)$", title=f"E2.5 converged fits and kinks: {outcome.get('E2.5')}")
    a2.legend(fontsize=7, loc="lower center")
    a3.axvspan(r25[0]["ts"][-1] / 2, r25[0]["ts"][-1], color="0.9", label="convergence window")
    a3.set(xlabel="t", ylabel="L", title="E2.5 loss: must stop falling on [T/2, T]")
    a3.legend(fontsize=7)
    figures.save(fig, out / "escape_sparsity.png")


def _polar(ax, params, title, direction, label, normalise=False):
    """Neurons in polar coordinates: angle of (w, b), radius ‖(w, b)‖ (or 1), colour sign(a);
    the predicted `direction` as a dashed ray."""
    W = np.asarray(params["W"])
    a = np.asarray(params["v"])
    angle = np.arctan2(W[:, 1], W[:, 0])
    radius = np.ones(len(a)) if normalise else np.linalg.norm(W, axis=1)
    ax.scatter(angle, radius, s=5, c=np.where(a > 0, "C0", "C3"), alpha=0.6)
    top = 1.05 * radius.max()
    ax.plot([np.arctan2(direction[1], direction[0])] * 2, [0, top], "k--", lw=1, label=label)
    ax.set_ylim(0, top)
    ax.set_yticks([top / 2, top] if not normalise else [])
    ax.set_yticklabels([f"{top / 2:.2g}", f"{top:.2g}"] if not normalise else [])
    ax.set_rlabel_position(200)
    ax.set_title(title + "\n(blue a > 0, red a < 0)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def register(subparsers):
    register_study(subparsers, "boursier", "Boursier & Flammarion's two-edged sword: "
                               "experiments E2.1–E2.5", run, "results/boursier", rtol=False,
                               parts=PARTS)

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

Every row is built by `gflow.studies.verdicts.check` from a small pure criterion
(`gflow.studies.criteria`; `converged`, `few_kinks`, `alignment_sharpens` of
`gflow.theory.boursier2024`). Writes
verdicts.json, verdicts.md, summary.json, manifest.json and figures into the output directory.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import models
from ..flow import simulate
from ..theory import boursier2024 as theory
from . import figures
from . import verdicts as verdicts_io
from .criteria import late_decrease

RTOL = 1e-6  # ReLU kinks make the cost grow like 1/rtol (ENGINEERING.md); 1e-6 reaches L_OLS to 1e-12


def _below(params, args):
    return theory.mse(params, args) - args["threshold"]


def flow(params0, X, y, t1, *, threshold=-1.0, num_saves=120, max_steps=2_000_000):
    """The gradient flow of `theory.mse` on (X̃, y) to t1, stopped where L falls to `threshold`.

    Data and threshold travel as `args`, so one compiled solve serves every dataset, λ and
    horizon of a given width.
    """
    ts = np.minimum(np.concatenate([[0.0], np.geomspace(1e-2, t1, num_saves - 1)]), t1)
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y), "threshold": jnp.asarray(float(threshold))}
    return simulate(
        theory.mse,
        params0,
        t1,
        saveat=ts,
        rtol=RTOL,
        event=_below,
        args=args,
        save_params=False,
        max_steps=max_steps,
    )


def e21_plateau(widths, scales, t1, seed=0):
    """E2.1: balanced init at small λ stalls at L_OLS with every large neuron a > 0, pattern
    (1,1,1) and along β_OLS; a < 0 neurons dead. Runs with λ > 1e-3 are outside the small-λ
    premise: their rows are not applicable (reported)."""
    X, y = theory.spurious_data()
    beta, l_ols = theory.plateau(X, y)
    runs, verdicts = [], []
    for m in widths:
        for lam in scales:
            p0 = models.init_boursier(jax.random.PRNGKey(seed), 2, m, lam, "balanced")
            start = time.perf_counter()
            traj = flow(p0, X, y, t1)
            wall = time.perf_counter() - start
            small = lam <= 1e-3
            why = f"λ = {lam:g} > 1e-3: outside the small-λ premise (reported in details)"
            verdicts.append(theory.plateau_row("E2.1", f"L(T)/L_OLS − 1, balanced, m={m}, λ={lam:g}, T={t1:g}",
                                        traj, l_ols, premise=small, premise_reason=why, headline=small,
                                        wall_s=wall))
            verdicts.append(theory.plateau_neurons_row(traj.final_params, X, beta, f"m={m}, λ={lam:g}",
                                                premise=small, premise_reason=why))
            runs.append({"m": m, "lam": lam, "ts": np.asarray(traj.ts), "loss": np.asarray(traj.loss),
                         "final": traj.final_params})
    return verdicts, runs


def held_out(num_sets, m, t1, *, eta=0.15, lam=1e-3, seed=0):
    """Held-out check of Theorem 2: `num_sets` three-point datasets drawn at random (seeds
    seed, seed+1, …) inside Assumption 3's box of size η (`theory.spurious_box_data`), data
    the developers did not choose; on each the balanced flow at λ must stall at that set's own
    least-squares value (`theory.plateau`)."""
    verdicts, runs = [], []
    for k in range(num_sets):
        X, y = theory.spurious_box_data(eta, seed + k)
        _, l_ols = theory.plateau(X, y)
        p0 = models.init_boursier(jax.random.PRNGKey(seed + k), 2, m, lam, "balanced")
        traj = flow(p0, X, y, t1)
        verdicts.append(theory.plateau_row(
            "E2.1", f"held-out set {k} (η = {eta:g}, drawn with seed {seed + k}): L(T)/L_OLS − 1, "
            f"m={m}, λ={lam:g}, T={t1:g}", traj, l_ols, headline=True,
            premise=theory.in_spurious_box(X, y, eta), premise_reason="the set is not in the box",
            X=X, y=y))
        runs.append({"X": X, "y": y, "ts": np.asarray(traj.ts), "loss": np.asarray(traj.loss),
                     "L_OLS": l_ols, "final": traj.final_params})
    return verdicts, runs


def e22_control(cases):
    """E2.2: λ = 1 balanced and unbalanced λ = 1e-3 reach L → 0; dominated λ = 1e-3 stalls.
    `cases`: (init, λ, width, horizon, seed) tuples."""
    X, y = theory.spurious_data()
    _, l_ols = theory.plateau(X, y)
    verdicts, runs = [], []
    for init, lam, m, horizon, seed in cases:
        p0 = models.init_boursier(jax.random.PRNGKey(seed), 2, m, lam, init)
        start = time.perf_counter()
        traj = flow(p0, X, y, horizon)
        wall = time.perf_counter() - start
        if init == "dominated":
            verdicts.append(theory.plateau_row("E2.2", f"dominated (|a| > ‖w‖), m={m}, λ={lam:g}: "
                                        "L(T)/L_OLS − 1", traj, l_ols, wall_s=wall))
        else:
            verdicts.append(theory.zero_loss_row(traj, X, f"{init}, m={m}, λ={lam:g}, seed {seed}: "
                                          f"L(T={horizon:g})", wall_s=wall))
        runs.append({"init": init, "lam": lam, "m": m, "seed": seed, "ts": np.asarray(traj.ts),
                     "loss": np.asarray(traj.loss), "final": traj.final_params})
    return verdicts, runs


def e23_e24_alignment_escape(width, scales, seed=0):
    """E2.3 at the time the loss has fallen by 1%: 5th percentile of cos(ŵ, D̂_all) over live
    a > 0 neurons and the dead fraction of a < 0 neurons. E2.4: t_esc (L ≤ L(0)/2) vs ln(1/λ)."""
    X, y = theory.spurious_data()
    extremal = theory.extremal_directions(X, y)
    d_all = extremal[0]["w"] * extremal[0]["norm_D"]
    rows = []
    for lam in scales:
        p0 = models.init_boursier(jax.random.PRNGKey(seed), 2, width, lam, "balanced")
        l0 = float(theory.mse(p0, {"X": X, "y": y}))
        horizon = 10 * np.log(1 / lam) / np.linalg.norm(d_all) + 50
        probe = flow(p0, X, y, horizon, threshold=0.99 * l0)
        escape = flow(p0, X, y, horizon, threshold=0.5 * l0)
        nz = theory.neurons(probe.final_params, X)
        live_pos = (nz["a"] > 0) & ~nz["dead"]
        rows.append({"lam": lam, "t_probe": float(probe.t_event), "t_esc": float(escape.t_event),
                     "reached": str(probe.status) == "event" and str(escape.status) == "event",
                     "live_pos": int(live_pos.sum()),
                     "cos5": float(np.percentile(theory.neuron_cosines(nz["W"][live_pos], d_all), 5))
                     if live_pos.any() else np.nan,
                     "dead_neg": float(np.mean(nz["dead"][nz["a"] < 0])), "probe": nz})
    return theory.e23_e24_verdicts(rows, width, 1 / np.linalg.norm(d_all)), rows


def e25_sparsity(widths, t1, scale=1e-3, seed=0, grad_tol=1e-4):
    """E2.5: 40 points of the piecewise-linear teacher; count kink clusters of the converged net
    at each width (expect fewer than the 7 interior teacher knots, not growing with m). The row
    applies only if every flow has stopped: relative loss decrease over [T/2, T] ≤ `theory.CONVERGED`
    and ‖∇L(θ_T)‖ ≤ `grad_tol`; a net that is still training has few kinks for the wrong reason."""
    x, y = theory.sparsity_data(40, seed)
    X = np.asarray(models.with_bias(x[:, None]))
    runs = []
    for m in widths:
        p0 = models.init_boursier(jax.random.PRNGKey(seed), 2, m, scale, "balanced")
        start = time.perf_counter()
        traj = flow(p0, X, y, t1)
        wall = time.perf_counter() - start
        centres, _ = theory.kink_clusters(traj.final_params)
        grads = jax.grad(theory.mse)(traj.final_params, {"X": X, "y": y})
        runs.append({"m": m, "ts": np.asarray(traj.ts), "loss": np.asarray(traj.loss),
                     "final": traj.final_params, "centres": centres, "x": x, "y": y,
                     "wall_s": wall, "status": str(traj.status),
                     "steps": int(traj.num_accepted_steps), "final_loss": float(traj.final_loss),
                     "late_decrease": late_decrease(traj.ts, traj.loss),
                     "grad_norm": float(np.sqrt(sum(float(np.sum(g**2)) for g in jax.tree.leaves(grads))))})
    verdict = theory.e25_verdict(runs, scale, t1, grad_tol, extremal=len(theory.extremal_directions(X, y)))
    return [verdict], runs


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
    steps = {"E2.1": lambda: e21_plateau(*s["e21"]), "held-out": lambda: held_out(*s["held_out"]),
             "E2.2": lambda: e22_control(s["e22"]), "E2.3": lambda: e23_e24_alignment_escape(*s["e23"]),
             "E2.5": lambda: e25_sparsity(*s["e25"])}
    got = {name: steps[name]() if name in parts else ([], None) for name in PARTS}
    verdicts = [v for name in PARTS for v in got[name][0]]
    verdicts_io.write(out, verdicts, {"paper": "Boursier & Flammarion (arXiv 2401.10791)",
                                      "mode": "quick" if quick else "full", "settings": s, "parts": list(parts),
                                      "rtol": RTOL, "wall_seconds": time.perf_counter() - start},
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
    verdicts_io.register_study(subparsers, "boursier", "Boursier & Flammarion's two-edged sword: "
                               "experiments E2.1–E2.5", run, "results/boursier", rtol=False,
                               parts=PARTS)

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
(`gflow.studies.criteria`, `converged`, `few_kinks`, `alignment_sharpens`). Writes
verdicts.json, verdicts.md, summary.json, manifest.json and figures into the output directory.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import losses, models
from ..flow import simulate
from ..theory import boursier2024 as theory
from . import verdicts as verdicts_io
from .criteria import fitted_slope, interval_within, late_decrease
from .verdicts import check

RTOL = 1e-6  # ReLU kinks make the cost grow like 1/rtol (ENGINEERING.md); 1e-6 reaches L_OLS to 1e-12
CONVERGED = 1e-3  # relative loss decrease over the second half of the horizon of a stalled flow


def mse(params, args):
    """(1/n) Σ_k (h_θ(x̃_k) − y_k)², the paper code's loss (no ½)."""
    f = models.two_layer(params, args["X"])
    return jnp.mean(losses.square(f, args["y"], factor=1.0))


def _below(params, args):
    return mse(params, args) - args["threshold"]


def flow(params0, X, y, t1, *, threshold=-1.0, num_saves=120, max_steps=2_000_000):
    """The gradient flow of `mse` on (X̃, y) to t1, stopped where L falls to `threshold`.

    Data and threshold travel as `args`, so one compiled solve serves every dataset, λ and
    horizon of a given width.
    """
    ts = np.minimum(np.concatenate([[0.0], np.geomspace(1e-2, t1, num_saves - 1)]), t1)
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y), "threshold": jnp.asarray(float(threshold))}
    return simulate(
        mse,
        params0,
        t1,
        saveat=ts,
        rtol=RTOL,
        event=_below,
        args=args,
        save_params=False,
        max_steps=max_steps,
    )


def converged(ts, loss, tol=CONVERGED):
    """The premise of a claim about where the flow ends: the loss has stopped moving, its
    relative decrease over the second half of the horizon (`criteria.late_decrease`) ≤ `tol`."""
    return bool(late_decrease(ts, loss) <= tol)


def neurons(params, X):
    """Per-neuron numpy summaries: w (m, d), a (m,), ‖w‖, activation patterns (m, n), dead."""
    W = np.asarray(params["W"])
    a = np.asarray(params["v"])
    pattern = theory.activation_pattern(W, X)
    return {"W": W, "a": a, "norm": np.linalg.norm(W, axis=1), "pattern": pattern,
            "dead": ~pattern.any(axis=1)}


def _cos(W, direction):
    u = np.asarray(direction) / np.linalg.norm(direction)
    return W @ u / np.maximum(np.linalg.norm(W, axis=1), np.finfo(float).tiny)


def spurious_data():
    X = np.asarray(models.with_bias(theory.SPURIOUS_X[:, None]))
    return X, theory.SPURIOUS_Y


PLATEAU_CLAIM = ("for small λ, gradient flow on an over-parameterised net converges to a spurious "
                 "stationary point with L > 0, the least-squares fit of the three points "
                 "(Boursier & Flammarion 2024, Theorem 2; science_A paper 2 (c))")


def plateau_row(experiment, quantity, traj, l_ols, *, premise=True, premise_reason="",
                headline=False, **details):
    """The row 'L(T) equals the least-squares value L_OLS to 1e-3 relative', applicable only if
    the flow has stopped moving (`converged`) and `premise` holds."""
    ts, loss = np.asarray(traj.ts), np.asarray(traj.loss)
    rel = abs(float(traj.final_loss) / l_ols - 1)
    moving = late_decrease(ts, loss)
    stalled = bool(moving <= CONVERGED)
    return check(experiment, PLATEAU_CLAIM, quantity, rel, "≤ 1e-3", rel <= 1e-3, basis="derivation",
                 premise=premise and stalled, headline=headline,
                 premise_reason=premise_reason if not premise else
                 f"the loss is still falling: {moving:.2e} relative over the second half of the horizon",
                 details={"final_loss": float(traj.final_loss), "L_OLS": l_ols, "late_decrease": moving,
                          "status": str(traj.status), "steps": int(traj.num_accepted_steps),
                          "rejected": int(traj.num_rejected_steps), **details})


def plateau_neurons_row(params, X, beta, label, *, premise=True, premise_reason=""):
    """E2.1's neuron row (pure in the parameters): every large neuron (‖w‖ ≥ 1% of the largest)
    has a > 0, pattern (1,1,1) and cos(w, β_OLS) > 0.999, and every a < 0 neuron is dead."""
    nz = neurons(params, X)
    large = nz["norm"] >= 1e-2 * nz["norm"].max()
    good = (nz["a"] > 0) & nz["pattern"].all(axis=1) & (_cos(nz["W"], beta) > 0.999)
    frac_good = float(np.mean(good[large]))
    dead_neg = float(np.mean(nz["dead"][nz["a"] < 0])) if np.any(nz["a"] < 0) else np.nan
    return check("E2.1", PLATEAU_CLAIM, f"share of large neurons with a > 0, pattern (1,1,1) and "
                 f"cos(w, β_OLS) > 0.999, and of a < 0 neurons dead ({label})", min(frac_good, dead_neg),
                 "both = 1", bool(frac_good == 1.0 and dead_neg == 1.0), basis="paper",
                 premise=premise and bool(np.isfinite(dead_neg)),
                 premise_reason=premise_reason if not premise else "no a < 0 neuron",
                 details={"large_neurons": int(large.sum()), "frac_large_good": frac_good,
                          "frac_a_neg_dead": dead_neg})


def e21_plateau(widths, scales, t1, seed=0):
    """E2.1: balanced init at small λ stalls at L_OLS with every large neuron a > 0, pattern
    (1,1,1) and along β_OLS; a < 0 neurons dead. Runs with λ > 1e-3 are outside the small-λ
    premise: their rows are not applicable (reported)."""
    X, y = spurious_data()
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
            verdicts.append(plateau_row("E2.1", f"L(T)/L_OLS − 1, balanced, m={m}, λ={lam:g}, T={t1:g}",
                                        traj, l_ols, premise=small, premise_reason=why, headline=small,
                                        wall_s=wall))
            verdicts.append(plateau_neurons_row(traj.final_params, X, beta, f"m={m}, λ={lam:g}",
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
        verdicts.append(plateau_row(
            "E2.1", f"held-out set {k} (η = {eta:g}, drawn with seed {seed + k}): L(T)/L_OLS − 1, "
            f"m={m}, λ={lam:g}, T={t1:g}", traj, l_ols, headline=True,
            premise=theory.in_spurious_box(X, y, eta), premise_reason="the set is not in the box",
            X=X, y=y))
        runs.append({"X": X, "y": y, "ts": np.asarray(traj.ts), "loss": np.asarray(traj.loss),
                     "L_OLS": l_ols, "final": traj.final_params})
    return verdicts, runs


def zero_loss_row(traj, X, quantity, **details):
    """E2.2's row for an init outside Theorem 2's premise: L(T) < 1e-5 (pure in the run)."""
    final = float(traj.final_loss)
    nz = neurons(traj.final_params, X)
    large = nz["norm"] >= 1e-2 * nz["norm"].max()
    patterns = sorted({"".join("1" if b else "0" for b in p) for p in nz["pattern"][large]})
    return check(
        "E2.2", "the two-edged sword: without the small balanced init (λ = 1, or |a| < ‖w‖) the "
        "flow is not trapped and reaches zero loss (Boursier & Flammarion 2024, §2; science_A "
        "paper 2 (c))", quantity, final, "< 1e-5", final < 1e-5, basis="paper",
        details={"large_patterns": patterns, "frac_large_a_pos": float(np.mean(nz["a"][large] > 0)),
                 "status": str(traj.status), "steps": int(traj.num_accepted_steps),
                 "rejected": int(traj.num_rejected_steps), **details})


def e22_control(cases):
    """E2.2: λ = 1 balanced and unbalanced λ = 1e-3 reach L → 0; dominated λ = 1e-3 stalls.
    `cases`: (init, λ, width, horizon, seed) tuples."""
    X, y = spurious_data()
    _, l_ols = theory.plateau(X, y)
    verdicts, runs = [], []
    for init, lam, m, horizon, seed in cases:
        p0 = models.init_boursier(jax.random.PRNGKey(seed), 2, m, lam, init)
        start = time.perf_counter()
        traj = flow(p0, X, y, horizon)
        wall = time.perf_counter() - start
        if init == "dominated":
            verdicts.append(plateau_row("E2.2", f"dominated (|a| > ‖w‖), m={m}, λ={lam:g}: "
                                        "L(T)/L_OLS − 1", traj, l_ols, wall_s=wall))
        else:
            verdicts.append(zero_loss_row(traj, X, f"{init}, m={m}, λ={lam:g}, seed {seed}: "
                                          f"L(T={horizon:g})", wall_s=wall))
        runs.append({"init": init, "lam": lam, "m": m, "seed": seed, "ts": np.asarray(traj.ts),
                     "loss": np.asarray(traj.loss), "final": traj.final_params})
    return verdicts, runs


def alignment_sharpens(scales, cos5, *, floor=0.999):
    """E2.3's criterion: 1 − cos (5th percentile) does not grow as λ falls (`scales` in
    decreasing order) and the 5th percentile is ≥ `floor` at the smallest λ."""
    one_minus = 1 - np.asarray(cos5, float)
    if np.any(np.diff(np.asarray(scales, float)) >= 0):
        raise ValueError(f"scales must decrease, got {list(scales)}")
    return bool(np.all(np.diff(one_minus) <= 1e-12) and cos5[-1] >= floor)


def e23_e24_alignment_escape(width, scales, seed=0):
    """E2.3 at the time the loss has fallen by 1%: 5th percentile of cos(ŵ, D̂_all) over live
    a > 0 neurons and the dead fraction of a < 0 neurons. E2.4: t_esc (L ≤ L(0)/2) vs ln(1/λ)."""
    X, y = spurious_data()
    extremal = theory.extremal_directions(X, y)
    d_all = extremal[0]["w"] * extremal[0]["norm_D"]
    rows = []
    for lam in scales:
        p0 = models.init_boursier(jax.random.PRNGKey(seed), 2, width, lam, "balanced")
        l0 = float(mse(p0, {"X": X, "y": y}))
        horizon = 10 * np.log(1 / lam) / np.linalg.norm(d_all) + 50
        probe = flow(p0, X, y, horizon, threshold=0.99 * l0)
        escape = flow(p0, X, y, horizon, threshold=0.5 * l0)
        nz = neurons(probe.final_params, X)
        live_pos = (nz["a"] > 0) & ~nz["dead"]
        rows.append({"lam": lam, "t_probe": float(probe.t_event), "t_esc": float(escape.t_event),
                     "reached": str(probe.status) == "event" and str(escape.status) == "event",
                     "live_pos": int(live_pos.sum()),
                     "cos5": float(np.percentile(_cos(nz["W"][live_pos], d_all), 5))
                     if live_pos.any() else np.nan,
                     "dead_neg": float(np.mean(nz["dead"][nz["a"] < 0])), "probe": nz})
    return e23_e24_verdicts(rows, width, 1 / np.linalg.norm(d_all)), rows


def e23_e24_verdicts(rows, width, predicted):
    """E2.3's and E2.4's rows from the per-λ readings (dicts with lam, reached, live_pos, cos5,
    dead_neg, t_probe, t_esc; λ decreasing) and the predicted slope 1/‖D_all‖ (pure)."""
    scales = [r["lam"] for r in rows]
    cos5 = [r["cos5"] for r in rows]
    dead = [r["dead_neg"] for r in rows]
    reached = all(r["reached"] and r["live_pos"] > 0 for r in rows)
    claim = ("neurons either die or align with an extremal vector (here D̂_all, the only one) "
             "before the loss moves, more precisely as λ → 0 (Boursier & Flammarion 2024, early "
             "alignment; science_A paper 2 (b))")
    why = "a probe was not reached, or no live a > 0 neuron at a probe"
    small = [dv for dv, r in zip(dead, rows) if r["lam"] <= 1e-3]
    verdicts = [
        check("E2.3", claim, f"5th percentile of cos(ŵ, D̂_all) over live a > 0 neurons, m={width}, "
              f"λ = {list(scales)}", cos5[-1], "1 − cos non-increasing as λ ↓, ≥ 0.999 at the "
              "smallest λ", alignment_sharpens(scales, cos5), basis="paper",
              premise=reached and len(rows) >= 2, premise_reason=why + ", or fewer than 2 λ",
              headline=True, details={"cos5": cos5, "t_probe": [r["t_probe"] for r in rows]}),
        check("E2.3", claim, "dead fraction of a < 0 neurons at the probe, λ ≤ 1e-3",
              min(small) if small else None, "≥ 0.95", bool(small and min(small) >= 0.95),
              basis="pilot", premise=reached and bool(small), premise_reason=why + ", or no λ ≤ 1e-3",
              details={"dead_neg": dead}),
    ]
    logs = np.log(1 / np.asarray(scales))
    t_esc = np.asarray([r["t_esc"] for r in rows])
    enough = len(scales) >= 3
    slope, ci = fitted_slope(logs, t_esc) if enough else (np.nan, [np.nan, np.nan])
    verdicts.append(check(
        "E2.4", "aligned norms grow like e^{‖D*‖t}, so t_esc ≈ ln(1/λ)/‖D*‖ (science_A paper 2 "
        "(b))", f"slope of t_esc (L ≤ L(0)/2) against ln(1/λ), m={width}, relative to 1/‖D_all‖ = "
        f"{predicted:.6g}", slope / predicted, "95% CI inside 1 ± 0.05",
        interval_within(np.asarray(ci) / predicted, 1.0, 0.05), basis="derivation",
        uncertainty=f"95% CI [{ci[0] / predicted:.5g}, {ci[1] / predicted:.5g}]",
        premise=reached and enough, premise_reason="an escape was not reached, or fewer than 3 λ",
        details={"t_esc": t_esc, "slope": slope}))
    return verdicts


def kink_clusters(params, *, live_fraction=1e-2, gap=0.05, lo=-1.0, hi=1.0):
    """Kinks x = −b_j/w_j of the large neurons inside [lo, hi], grouped into clusters separated
    by more than `gap`. Returns (cluster centres, kinks)."""
    W = np.asarray(params["W"])
    a = np.asarray(params["v"])
    size = np.abs(a) * np.linalg.norm(W, axis=1)
    large = (size >= live_fraction * size.max()) & (W[:, 0] != 0)
    kinks = np.sort(-W[large, 1] / W[large, 0])
    kinks = kinks[(kinks > lo) & (kinks < hi)]
    if kinks.size == 0:
        return np.array([]), kinks
    groups = np.split(kinks, np.where(np.diff(kinks) > gap)[0] + 1)
    return np.array([g.mean() for g in groups]), kinks


def few_kinks(counts, limit):
    """E2.5's criterion on kink-cluster counts over increasing widths: every count < `limit`
    (the teacher's interior knots) and the counts do not grow with m (max − min ≤ 1)."""
    counts = list(counts)
    return bool(counts and max(counts) < limit and max(counts) - min(counts) <= 1)


def e25_verdict(runs, scale, t1, grad_tol, extremal=None):
    """E2.5's row from the per-width runs (dicts with m, centres, late_decrease, grad_norm,
    final_loss, wall_s, steps): `few_kinks` on the counts, applicable only if every flow has
    stopped (pure)."""
    widths = [r["m"] for r in runs]
    counts = [len(r["centres"]) for r in runs]
    interior = int(np.sum(np.abs(theory.TEACHER_KNOTS_X) < 1))
    stalled = [r["late_decrease"] <= CONVERGED and r["grad_norm"] <= grad_tol for r in runs]
    moving = [f"m={r['m']}: decrease {r['late_decrease']:.1e}, ‖∇L‖ {r['grad_norm']:.1e}"
              for r, ok in zip(runs, stalled) if not ok]
    verdict = check(
        "E2.5", "early alignment leaves few distinct directions, a sparse representation: the "
        "trained net has few kinks, fewer than the teacher's, not more for wider nets "
        "(Boursier & Flammarion 2024; science_A paper 2 (b) and E2.5, qualitative)",
        f"kink clusters in [−1, 1] of the converged net, m = {widths}, λ = {scale:g}, T = {t1:g}", str(counts), f"every count < {interior} teacher knots and "
        "max − min ≤ 1 over m", few_kinks(counts, interior), basis="pilot", headline=True,
        premise=all(stalled) and len(widths) >= 2,
        premise_reason="fewer than 2 widths" if all(stalled) else "not converged: " + "; ".join(moving),
        details={"counts": counts, "extremal_vectors_from_zero": extremal,
                 **{k: [r.get(k) for r in runs] for k in ("final_loss", "late_decrease", "grad_norm",
                                                         "wall_s", "steps")},
                 "centres": [r["centres"] for r in runs]})
    return verdict


def e25_sparsity(widths, t1, scale=1e-3, seed=0, grad_tol=1e-4):
    """E2.5: 40 points of the piecewise-linear teacher; count kink clusters of the converged net
    at each width (expect fewer than the 7 interior teacher knots, not growing with m). The row
    applies only if every flow has stopped: relative loss decrease over [T/2, T] ≤ `CONVERGED`
    and ‖∇L(θ_T)‖ ≤ `grad_tol`; a net that is still training has few kinks for the wrong reason."""
    x, y = theory.sparsity_data(40, seed)
    X = np.asarray(models.with_bias(x[:, None]))
    runs = []
    for m in widths:
        p0 = models.init_boursier(jax.random.PRNGKey(seed), 2, m, scale, "balanced")
        start = time.perf_counter()
        traj = flow(p0, X, y, t1)
        wall = time.perf_counter() - start
        centres, _ = kink_clusters(traj.final_params)
        grads = jax.grad(mse)(traj.final_params, {"X": X, "y": y})
        runs.append({"m": m, "ts": np.asarray(traj.ts), "loss": np.asarray(traj.loss),
                     "final": traj.final_params, "centres": centres, "x": x, "y": y,
                     "wall_s": wall, "status": str(traj.status),
                     "steps": int(traj.num_accepted_steps), "final_loss": float(traj.final_loss),
                     "late_decrease": late_decrease(traj.ts, traj.loss),
                     "grad_norm": float(np.sqrt(sum(float(np.sum(g**2)) for g in jax.tree.leaves(grads))))})
    verdict = e25_verdict(runs, scale, t1, grad_tol, extremal=len(theory.extremal_directions(X, y)))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, y = spurious_data()
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
    fig.tight_layout()
    fig.savefig(out / "spurious.png", dpi=110)
    plt.close(fig)

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
    fig.tight_layout()
    fig.savefig(out / "held_out.png", dpi=110)
    plt.close(fig)

    d_all = theory.extremal_directions(X, y)[0]["w"]
    fig = plt.figure(figsize=(5 * len(r23), 4.8))
    for i, r in enumerate(r23):
        ax = fig.add_subplot(1, len(r23), i + 1, projection="polar")
        _polar(ax, {"W": r["probe"]["W"], "v": r["probe"]["a"]},
               f"E2.3 λ={r['lam']:g}, t={r['t_probe']:.2f}: alignment {outcome.get('E2.3')}", d_all,
               r"$\hat D_{all}$", normalise=True)
    fig.tight_layout()
    fig.savefig(out / "alignment.png", dpi=110)
    plt.close(fig)

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
    fig.tight_layout()
    fig.savefig(out / "escape_sparsity.png", dpi=110)
    plt.close(fig)


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

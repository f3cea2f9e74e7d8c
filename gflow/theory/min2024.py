"""Predictions of Min, Mallada & Vidal, "Early neuron alignment in two-layer ReLU networks with
small initialization" (ICLR 2024), for f(x) = Σ_j v_j σ(⟨w_j, x⟩) trained by gradient flow on the
sum-reduced exponential or 2·logistic loss from balanced initialisation at scale ε.

Notation: x_± = Σ_{i ∈ I_±} x_i, μ = min_{i≠j} cos(y_i x_i, y_j x_j) (`gflow.data.separation`).

The second part holds the criteria of the `gflow align` verdict rows (experiments E1.1–E1.5 of
science_A): each a pure function of measured arrays returning a `Verdict`, so that a test can
feed it a wrong input (a perturbed trajectory, a wrong exponent, an unaligned net) and see it
fail or be not applicable.

The third part holds the flows those rows are read from: the lanes of one data size n (data,
loss and phase per lane) solved by the continuous-batching pool `gflow.batching.solve_batch` in
phases (to the alignment event, to the escape event L ≤ L(0)/2, then free to t_late), and the
builders that turn the lanes into rows (`synthetic_verdicts`, `n_verdicts`, `real_verdicts`).
The last part holds the grids of `gflow align` (`synthetic_specs`, `n_specs`; run by
`run_synthetic`, `run_n_scaling`) and their netCDF results file (`to_dataset`, `write_results`).
"""

import functools
import time

import numpy as np

from ..status import EVENT
from ..studies.verdicts import check

CITE = "Min, Mallada & Vidal 2024"


def t_align_bound(n, mu):
    """t_1 = 4 log n / √μ, the alignment time of Theorem 1. [R]: the paper states t_1 =
    O(log n / √μ); the constant 4 is our reconstruction (science_A, paper 1 (d)), for unit-scale
    data and the sum-reduced loss (a 1/n-scaled loss runs n times slower)."""
    n = np.asarray(n, dtype=float)
    mu = np.asarray(mu, dtype=float)
    if np.any(n < 2) or np.any(~(mu > 0)) or np.any(mu > 1):
        raise ValueError(f"need n ≥ 2 and μ in (0, 1], got n={n}, mu={mu}")
    return 4.0 * np.log(n) / np.sqrt(mu)


def class_sums(X, y):
    """x_+ = Σ_{y_i > 0} x_i and x_− = Σ_{y_i < 0} x_i."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    return X[y > 0].sum(axis=0), X[y < 0].sum(axis=0)


def escape_slope(X, y):
    """d t_esc / d ln(1/ε) = 1/‖x_+‖.

    After alignment a v > 0 neuron sees every positive point: with −ℓ'(0) = 1,
    ẇ = v x_+ and v̇ = ⟨w, x_+⟩, so its norm grows like e^{‖x_+‖ t} from ε, and the loss
    drops once ε² e^{2‖x_+‖ t} = O(1): t_esc = ln(1/ε)/‖x_+‖ + O(1). (The v < 0 group grows at
    rate ‖x_−‖; for the symmetric data of the experiments ‖x_+‖ = ‖x_−‖.)"""
    x_plus, _ = class_sums(X, y)
    return 1.0 / np.linalg.norm(x_plus)


def class_cosine(X, y):
    """c = cos(x_+, x_−) (negative for μ-separated data)."""
    x_plus, x_minus = class_sums(X, y)
    return float(x_plus @ x_minus / (np.linalg.norm(x_plus) * np.linalg.norm(x_minus)))


def equiangular_class_cosine(n_pos, n_neg, mu):
    """c = cos(x_+, x_−) for the unit-norm equiangular data of `gflow.data.separated`:

        c = −n_+ n_− μ / √(n_+ (1 + (n_+ − 1) μ) · n_− (1 + (n_− − 1) μ)).
    """
    return -n_pos * n_neg * mu / np.sqrt(n_pos * (1 + (n_pos - 1) * mu) * n_neg * (1 + (n_neg - 1) * mu))


def stable_rank_limit(c, energy_plus=1.0, energy_minus=1.0):
    """Late-time stable rank ‖W‖_F²/‖W‖_2² when every live row of W is parallel to x̄_+ (v > 0)
    or x̄_− (v < 0), with group energies A_± = Σ_{j ∈ V_±} ‖w_j‖² and c = cos(x_+, x_−) [R, our
    derivation]:

        srank = (A_+ + A_−) / λ_max([[A_+, c√(A_+A_−)], [c√(A_+A_−), A_−]]),

    which is 2/(1 + |c|) when A_+ = A_−."""
    a, b = np.asarray(energy_plus, dtype=float), np.asarray(energy_minus, dtype=float)
    off = np.asarray(c, dtype=float) * np.sqrt(a * b)
    lam_max = 0.5 * (a + b) + np.sqrt(0.25 * (a - b) ** 2 + off**2)
    return (a + b) / lam_max


def log_growth_exponent(ns):
    """The least-squares slope of ln ln n against ln n over the grid `ns`: the log-log exponent
    that t ∝ log n shows over these n (1/ln n locally; 0.44 for n = 4…32). A time growing
    faster than log n has a larger fitted exponent."""
    ln = np.log(np.asarray(ns, dtype=float))
    if ln.size < 2 or np.any(ln <= 0):
        raise ValueError(f"need at least two sizes n ≥ 2, got {ns}")
    return float(np.polyfit(ln, np.log(ln), 1)[0])


# ----------------------------------------------------------------------------- verdict criteria
def fit_slope(x, Y, *, n_boot=2000, seed=0):
    """Least-squares slope of the seed-mean of Y (rows: seeds, columns: points at x) against x,
    with a 95% bootstrap interval from resampling the seeds (rows) with replacement.
    Returns (slope, low, high)."""
    x = np.asarray(x, dtype=float)
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    if not np.all(np.isfinite(Y)):
        return np.nan, np.nan, np.nan
    xc = x - x.mean()

    def slope(rows):
        return float(xc @ (rows.mean(axis=0) - rows.mean()) / (xc @ xc))

    rng = np.random.default_rng(seed)
    boots = [slope(Y[rng.integers(0, len(Y), len(Y))]) for _ in range(n_boot)]
    return slope(Y), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def _ci(lo, hi, seeds):
    return f"95% CI [{lo:.3g}, {hi:.3g}] (bootstrap over {seeds} seeds)"


def bound_ratio_verdict(experiment, t_align, bound, scope):
    """[reconstructed] Theorem 1 bounds the alignment time by t_1 = O(log n/√μ); the constant of
    4 log n/√μ (`t_align_bound`) is our reconstruction, so the row reports the measured
    ratio max t_align/bound. It fails when a lane aligns after the bound, or not at all within
    twice the bound (t_align NaN)."""
    ratio = np.asarray(t_align, float) / np.asarray(bound, float)
    missing = int(np.sum(~np.isfinite(ratio)))
    measured = float(np.nanmax(ratio)) if missing < ratio.size else None
    quantity = f"max t_align/(4 log n/√μ) over {scope}"
    if missing:
        quantity += f"; {missing} of {ratio.size} lanes not aligned within twice the bound"
    return check(experiment, f"\"t_1 = O(log n/√μ)\": every neuron aligned or dead by t_1 ({CITE}, Thm 1)",
                 quantity, measured, "≤ 1 in every lane (the constant 4 is reconstructed)",
                 missing == 0 and ratio.size > 0 and measured <= 1, basis="reconstructed",
                 premise=ratio.size > 0, premise_reason="no lanes ran")


def exponent_verdict(experiment, claim, quantity, x, T, band, *, basis, criterion, n_boot, headline=False):
    """A power law T ∝ x^β: β is the least-squares log-log slope of the seed-mean of T (rows:
    seeds, columns: the points x), with a 95% bootstrap interval over seeds (`fit_slope`). Passes
    when the whole interval lies in `band` = (low, high); fails, unfitted, when some T is not a
    finite positive time (a lane did not align). Not applicable with < 2 points or < 2 seeds."""
    x = np.asarray(x, float)
    T = np.atleast_2d(np.asarray(T, float))
    premise = x.size >= 2 and len(T) >= 2
    finite = bool(np.all(np.isfinite(T) & (T > 0)))
    details = {"x": x.tolist(), "T": T.tolist()}
    if premise and finite:
        slope, lo, hi = fit_slope(np.log(x), np.log(T), n_boot=n_boot)
        measured, uncertainty, passed = slope, _ci(lo, hi, len(T)), band[0] <= lo and hi <= band[1]
        details.update(slope=slope, ci95=[lo, hi])
    else:
        missing = int(np.sum(~(np.isfinite(T) & (T > 0))))
        measured, uncertainty, passed = f"not fitted: {missing} lanes without a time", None, False
    return check(experiment, claim, quantity, measured, criterion, passed, basis=basis, uncertainty=uncertainty,
                 premise=premise, premise_reason="a slope with an interval needs ≥ 2 points and ≥ 2 seeds",
                 headline=headline, details=details)


def mu_exponent_verdict(mus, T, *, n_boot):
    """E1.1 [pilot]: t_align ∝ μ^(−1/2); Theorem 1's t_1 = O(log n/√μ) has this exponent, the
    pilot measured −0.49. The 95% interval of the fitted exponent must lie in [−0.6, −0.4]."""
    return exponent_verdict("E1.1", f"\"t_1 = O(log n/√μ)\" ({CITE}, Thm 1); pilot: t_align ∝ μ^(−1/2)",
                            "log-log slope of t_align against μ (exponential loss)", mus, T, (-0.6, -0.4),
                            basis="pilot", criterion="95% CI inside [−0.6, −0.4]", n_boot=n_boot, headline=True)


def n_growth_verdict(ns, T, *, n_boot):
    """E1.2 [paper]: t_1 = O(log n/√μ) lets t_align grow at most like log n. Over the grid, log n
    itself has the log-log slope β_log = `log_growth_exponent(ns)`; growth faster than
    log n shows a larger exponent. The 95% interval of the fitted exponent of t_align (sum loss)
    must lie below β_log: the data must exclude faster growth."""
    cap = log_growth_exponent(ns)
    return exponent_verdict("E1.2", f"\"t_1 = O(log n/√μ)\" ({CITE}, Thm 1): t_align grows at most like log n",
                            f"log-log slope of t_align against n (sum loss, n ∈ {[int(n) for n in ns]})", ns, T, (-np.inf, cap),
                            basis="paper", criterion=f"95% CI below β_log = {cap:.3f}, the log-log slope of log n "
                            "over the grid", n_boot=n_boot, headline=True)


def n_flat_verdict(ns, T, *, n_boot):
    """E1.2 [pilot]: n·t_align does not depend on n (pilot: 12–20, flat). n·t_align is exactly
    the t_align of the 1/n-scaled loss (L/n is the time change t → t/n). The 95% interval of its
    log-log slope must lie in [−0.25, 0.25]."""
    ns = np.asarray(ns, float)
    return exponent_verdict("E1.2", "pilot: with the loss scaled by 1/n, t_align ≈ 12–20, flat in n (science_A E1.2)",
                            "log-log slope of n·t_align against n (= t_align of the 1/n-scaled loss)", ns,
                            np.asarray(T, float) * ns, (-0.25, 0.25), basis="pilot",
                            criterion="95% CI inside [−0.25, 0.25]", n_boot=n_boot)


def loss_identity_verdict(t_exp, t_log, tol=1e-4):
    """E1.1 [derivation]: with the factor 2, −∂ℓ/∂ŷ at ŷ = 0 is y for both the exponential and
    the 2·logistic loss, and f = O(ε²) until alignment, so both losses give the same t_align up
    to O(ε²): the largest relative difference over paired lanes must be ≤ tol."""
    t_exp, t_log = np.asarray(t_exp, float), np.asarray(t_log, float)
    diff = np.abs(t_log / t_exp - 1)
    measured = float(np.max(diff)) if diff.size else None
    return check("E1.1", f"exp(−yŷ) and 2·log(1+e^{{−yŷ}}) have the same early dynamics ({CITE}, §2)",
                 "max |t_align(2·logistic)/t_align(exp) − 1| over seeds", measured, f"≤ {tol:g}",
                 bool(diff.size and np.all(np.isfinite(diff)) and measured <= tol), basis="derivation",
                 premise=diff.size > 0, premise_reason="no logistic lanes ran")


def eps_independence_verdict(eps, T, tol=0.05):
    """E1.3 [paper]: t_1 of Theorem 1 does not involve ε. Max over seeds of the spread
    max/min − 1 of t_align over the ε ≤ 1e-6 columns of T (seeds × eps) must be < tol (the
    pilot found the times identical across ε)."""
    eps = np.asarray(eps, float)
    small = eps <= 1e-6
    T = np.atleast_2d(np.asarray(T, float))[:, small]
    spread = float(np.max(T.max(axis=1) / T.min(axis=1) - 1)) if small.sum() >= 2 else None
    return check("E1.3", f"t_1 = O(log n/√μ) does not depend on the initial scale ε ({CITE}, Thm 1)",
                 f"max over seeds of the relative spread of t_align over ε ∈ {eps[small].tolist()}", spread,
                 f"< {tol:.0%}", bool(spread is not None and np.isfinite(spread) and spread < tol), basis="paper",
                 premise=small.sum() >= 2, premise_reason="fewer than two ε ≤ 1e-6")


def escape_slope_verdict(eps, Te, predicted, *, n_boot, tol=0.05):
    """E1.3 [derivation]: t_esc = ln(1/ε)/‖x_+‖ + O(1) (`escape_slope`). The 95% interval
    of the fitted slope d t_esc/d ln(1/ε) (seeds × eps) must lie within ±tol of 1/‖x_+‖."""
    Te = np.atleast_2d(np.asarray(Te, float))
    ok = bool(np.all(np.isfinite(Te))) and len(Te) >= 2 and len(eps) >= 2
    measured, uncertainty, passed = None, None, False
    if ok:
        measured, lo, hi = fit_slope(np.log(1 / np.asarray(eps, float)), Te, n_boot=n_boot)
        uncertainty, passed = _ci(lo, hi, len(Te)), (1 - tol) * predicted <= lo and hi <= (1 + tol) * predicted
    return check("E1.3", "escape: after alignment the loss drops at t_esc ≈ ln(1/ε)/‖x_+‖ (our derivation, science_A E1.3)",
                 "slope of t_esc against ln(1/ε)", measured, f"95% CI within ±{tol:.0%} of 1/‖x_+‖ = {predicted:.4f}",
                 passed, basis="derivation", uncertainty=uncertainty, premise=len(eps) >= 2 and len(Te) >= 2,
                 premise_reason="a slope needs ≥ 2 values of ε and ≥ 2 seeds")


def order_verdict(t_align, t_esc):
    """E1.3 [paper]: neurons align before the loss drops: t_align < t_esc in every lane (a lane
    with either time missing fails)."""
    t_align, t_esc = np.asarray(t_align, float), np.asarray(t_esc, float)
    ok = np.isfinite(t_align) & np.isfinite(t_esc) & (t_align < t_esc)
    return check("E1.3", f"alignment happens in the early phase, before the loss decreases ({CITE}, §3)",
                 "lanes with t_align < t_esc (ε ≤ 1e-3)", f"{int(ok.sum())}/{ok.size}", "every lane",
                 bool(ok.size and ok.all()), basis="paper", premise=ok.size > 0, premise_reason="no lanes ran")


def loss_decay_verdict(t, L, t_min=8.0, tol=1e-6):
    """E1.4 [paper]: after alignment the loss decays like O(1/t): on the saves t ≥ t_min (time
    order) of every lane, L·t may not rise by more than the relative `tol` from one save to the
    next. Not applicable when a lane has < 2 such saves."""
    rises, peaks = [], []
    for tk, Lk in zip(np.atleast_2d(t), np.atleast_2d(L)):
        keep = np.isfinite(tk) & np.isfinite(Lk) & (tk >= t_min)
        order = np.argsort(tk[keep])
        Lt = (Lk[keep] * tk[keep])[order]
        if Lt.size < 2:
            rises.append(np.nan)
            continue
        rises.append(float(np.max(np.diff(Lt) / Lt[:-1])))
        peaks.append(float(Lt.max()))
    rises = np.asarray(rises)
    premise = rises.size > 0 and bool(np.all(np.isfinite(rises)))
    return check("E1.4", f"after alignment the loss converges to zero at rate O(1/t) ({CITE}, Thm 1)",
                 f"max relative rise of L·t between saves, t ≥ {t_min:g} (max L·t = {max(peaks, default=np.nan):.3g})",
                 float(np.max(rises)) if premise else None, f"≤ {tol:g} (non-increasing)",
                 premise and float(np.max(rises)) <= tol, basis="paper", premise=premise,
                 premise_reason=f"a lane has fewer than two saves at t ≥ {t_min:g}")


def stable_rank_verdict(srank, c, t_late, tol=0.01):
    """E1.4 [derivation]: srank(W) → 2/(1+|c|), c = cos(x_+, x_−) from the data's closed form,
    independent of the run. Derivation: after alignment the rows are ∥ x̄_± with balanced v_j, so
    the group energies obey A_±' = 2 Σ_{i ∈ I±} −ℓ'(A_± m_i) A_± m_i, m_i = ⟨x̄_±, x_i⟩; for the
    symmetric equiangular data (n_+ = n_−, unit radii) both follow the same autonomous law, so
    A_+/A_− → 1 and `stable_rank_limit(c)` applies. Every lane within relative `tol`."""
    srank = np.asarray(srank, float)
    pred = stable_rank_limit(np.asarray(c, float))
    err = np.abs(srank / pred - 1)
    measured = float(np.max(err)) if err.size else None
    return check("E1.4", f"after alignment W is approximately low rank ({CITE}, §4): its stable rank tends to "
                 "2/(1+|cos(x_+, x_−)|) (our derivation)", f"max relative error of ‖W‖_F²/‖W‖_2² at t = {t_late:g} "
                 "against 2/(1+|c|)", measured, f"≤ {tol:g} in every lane",
                 bool(err.size and np.all(np.isfinite(err)) and measured <= tol), basis="derivation",
                 premise=err.size > 0, premise_reason="no lanes ran",
                 details={"measured": srank.tolist(), "predicted": np.broadcast_to(pred, srank.shape).tolist()})


def balance_verdict(drift, tol):
    """E1.4 [derivation]: v_j² − ‖w_j‖² is conserved by the flow (σ 1-homogeneous): the largest
    drift relative to ‖W‖_F² (`balance_drift`) must be ≤ tol, the solve's rtol: an error the
    integration may make, where a flow that does not conserve it drifts by O(1). The switching
    solve at rtol 1e-7 drifts 1.3e-8–6.8e-8 on the synthetic lanes (the plain solve, which
    takes thousands of small steps at the kinks, 9e-11)."""
    drift = np.asarray(drift, float)
    measured = float(np.max(drift)) if drift.size else None
    return check("E1.4", f"v_j² − ‖w_j‖² is conserved, so sign(v_j) never changes ({CITE}, §2)",
                 "max |Δ(v_j² − ‖w_j‖²)|/‖W‖_F²", measured, f"≤ {tol:g}",
                 bool(drift.size and np.all(np.isfinite(drift)) and measured <= tol), basis="derivation",
                 premise=drift.size > 0, premise_reason="no lanes ran")


def live_neurons(norms, growth=100.0):
    """Neurons whose norm grew by more than `growth` from the first to the last save (norms:
    saves × neurons); the others stayed at the initial scale (dead or not yet escaped)."""
    norms = np.asarray(norms, float)
    return norms[-1] > growth * norms[0]


def live_alignment_verdict(label, cos_own, live, *, threshold=0.9, share=0.5):
    """E1.5 [reconstructed]: on MNIST-like data most live neurons align with the mean of their
    own class before the loss drops. Per seed, the share of live neurons with cos(w_j, x̄_own) >
    `threshold` (x̄_+ for v_j > 0, x̄_− for v_j < 0) must exceed `share` in every seed; random
    directions in d = 64 have |cos| ≈ 0.1, so an unaligned net fails. Not applicable when a seed
    has no live neuron (nothing trained)."""
    fractions = [float(np.mean(np.asarray(c)[np.asarray(m)] > threshold)) if np.any(m) else np.nan
                 for c, m in zip(cos_own, live)]
    premise = len(fractions) > 0 and bool(np.all(np.isfinite(fractions)))
    return check("E1.5", f"{label}: most live neurons align with x̄_± before the loss drops (science_A E1.5 [R])",
                 f"share of live neurons with cos(w_j, x̄_own) > {threshold:g} at the last save with L ≥ 0.9 L(0), "
                 "worst seed", min(fractions) if premise else None, f"> {share:.0%} in every seed",
                 premise and min(fractions) > share, basis="reconstructed", premise=premise,
                 premise_reason="a seed has no live neuron (no norm grew ×100)", headline=True,
                 details={"fractions": fractions})


def low_rank_verdict(label, srank, t1, bound=2.0):
    """E1.5 [paper]: W is approximately low rank after training: its stable rank ‖W‖_F²/‖W‖_2²
    (a random 50×64 W has ~10) must be ≤ `bound` in every seed."""
    srank = np.asarray(srank, float)
    measured = float(np.max(srank)) if srank.size else None
    return check("E1.5", f"{label}: W is approximately low rank, stable rank ≤ ~2 ({CITE}, §4)",
                 f"max over seeds of ‖W‖_F²/‖W‖_2² at t = {t1:g}", measured, f"≤ {bound:g}",
                 bool(srank.size and np.all(np.isfinite(srank)) and measured <= bound), basis="paper",
                 premise=srank.size > 0, premise_reason="no runs")


# ----------------------------------------------------------------------------- the lanes
ALIGN, ESCAPE, FREE = 0, 1, 2  # lane phases: what the event watches
NUM_SAVES = 48


def lane_loss(params, lane):
    """L = Σ_i ℓ(f(x_i), y_i), ℓ the exponential or the 2·logistic loss."""
    import jax.numpy as jnp

    from .. import losses, models

    f = models.two_layer(params, lane["X"])
    y = lane["y"]
    ell = jnp.where(lane["logistic"], losses.logistic(f, y, factor=2.0), losses.exponential(f, y))
    return jnp.sum(ell)


def lane_objective(params, lane):
    """rate · L: the flow dθ/dτ = −rate·∇L(θ) is the gradient flow in the time t = rate·τ."""
    return lane["rate"] * lane_loss(params, lane)


def lane_event(params, lane):
    import jax.numpy as jnp

    from ..observables import aligned

    is_aligned = jnp.all(aligned(params, lane["X"], lane["y"], lane["delta"]))
    escaped = lane_loss(params, lane) <= 0.5 * lane["L0"]
    return jnp.where(lane["phase"] == ALIGN, is_aligned, (lane["phase"] == ESCAPE) & escaped)


@functools.cache
def lane_observables():
    """One dict of functions for every solve, so that the pool compiles once per data shape."""
    from .. import observables as obs

    return {
        "cos": lambda p, lane: obs.class_cosines(lane["X"], lane["y"])(p),
        "aligned": lambda p, lane: obs.alignment_indicator(lane["X"], lane["y"], lane["delta"])(p),
        "balancedness": lambda p, lane: obs.balancedness(p),
        "stable_rank": lambda p, lane: obs.weight_stable_rank(p),
        "norms": lambda p, lane: obs.neuron_norms(p),
        "energy": lambda p, lane: obs.group_energies(p),
    }


def save_grid(t1, first):
    """0 and a geometric grid from `first`·t1 to t1: the directions move on every time scale."""
    return np.concatenate([[0.0], np.geomspace(first * t1, t1, NUM_SAVES - 1)])


def solve_phase(cfg, params, lanes, phase, t1, rate=None):
    """Every lane from `params` at τ = 0 to its event (or τ = t1), by the continuous-batching pool
    (`gflow.batching.solve_batch`, `cfg.lanes` lanes); returns the numpy Trajectory stacked along
    lanes and the pool's `PoolStats`. Each phase restarts the solver, as `gflow.simulate` from
    the phase's initial state would (scale-aware atol from that state)."""
    import jax

    from ..batching import solve_batch

    count = len(lanes["y"])
    args = dict(lanes, phase=np.full(count, phase), rate=np.ones(count) if rate is None else rate)
    ts = save_grid(t1, 1e-4 if phase == ALIGN else 1e-5)
    traj, stats = solve_batch(lane_objective, params, t1, args=args, saveat=ts, rtol=cfg.rtol,
                              observables=lane_observables(), event=lane_event, max_steps=cfg.max_steps,
                              lanes=cfg.lanes)
    return jax.tree.map(np.asarray, traj), stats


def build_lanes(cfg, specs):
    """Initial parameters and lane data (`args`) of `specs` (dicts: n, mu, eps, seed, logistic;
    all of one n), stacked along a leading lane axis."""
    import jax

    from .. import data, models

    params, lanes = [], []
    for s in specs:
        X, y = data.separated(1000 * s["seed"] + s["n"], s["n"], s["n"] + 1, s["mu"])
        params.append(models.init_two_layer(jax.random.PRNGKey(s["seed"]), s["n"] + 1, cfg.width, s["eps"]))
        lanes.append(dict(X=X, y=y, logistic=bool(s.get("logistic", False)), delta=cfg.delta))
    stack = lambda *xs: np.stack([np.asarray(x) for x in xs])
    return jax.tree.map(stack, *params), jax.tree.map(stack, *lanes)


def run_lanes(cfg, specs, t_align_max, t_late=None):
    """Run the phases (to t_align; with `t_late`, then to t_esc and on to t_late) of every lane
    spec, one pool per data size n; returns a dict of per-lane numpy arrays in the order of specs.
    The alignment phase of lane k runs to at most `t_align_max[k]` (t_align NaN if not aligned)."""
    t_align_max = np.broadcast_to(np.asarray(t_align_max, float), (len(specs),))
    order, parts, start = [], [], time.perf_counter()
    for n in sorted({s["n"] for s in specs}):
        idx = [k for k, s in enumerate(specs) if s["n"] == n]
        order += idx
        parts.append(run_group(cfg, [specs[k] for k in idx], t_align_max[idx], t_late))
    inverse = np.argsort(order)

    def merge(*xs):
        return np.concatenate(xs)[inverse]

    def pad(W, d):  # final W of different n, zero-padded to the largest d
        return np.pad(W, ((0, 0), (0, 0), (0, d - W.shape[-1])))

    out = {k: merge(*(p[k] for p in parts)) for k in parts[0] if k not in ("trace", "final_params", "data", "pool")}
    out["trace"] = {k: merge(*(p["trace"][k] for p in parts)) for k in parts[0]["trace"]}
    d = max(p["final_params"]["W"].shape[-1] for p in parts)
    out["final_params"] = dict(W=merge(*(pad(p["final_params"]["W"], d) for p in parts)),
                               v=merge(*(p["final_params"]["v"] for p in parts)))
    data = [xy for p in parts for xy in p["data"]]
    out["data"] = [data[k] for k in inverse]
    steps = [sum(getattr(s, key) for p in parts for s in p["pool"]) for key in ("lane_steps", "iterations")]
    out["pool"] = dict(lanes=cfg.lanes, lane_steps=steps[0], iterations=steps[1],
                       efficiency=steps[0] / max(1, cfg.lanes * steps[1]))
    out["wall_seconds"] = time.perf_counter() - start
    return out


def run_group(cfg, specs, t_align_max, t_late):
    """The phases of lanes of one data size. The flow is autonomous, so each phase runs in its
    own time τ from 0 and continues the previous phase's `final_params`: (1) to the alignment
    event, t1 = max of `t_align_max` (a lane that has not aligned by then has t_align NaN), (2) to the
    escape event L ≤ L(0)/2, (3) free, as dθ/dτ = −c_k ∇L with c_k chosen so that τ = T ends
    every lane at exactly t = t_late (c_k ∈ (0, 1]: a Runge–Kutta step h in τ is the step c_k·h
    in t, and the step-size control is invariant under this rescaling but for the first step)."""
    import jax

    params, lanes = build_lanes(cfg, specs)
    lanes["L0"] = np.asarray(jax.vmap(lane_loss)(params, lanes))
    p1, s1 = solve_phase(cfg, params, lanes, ALIGN, float(np.max(t_align_max)))
    out = dict(
        t_align=np.where(p1.status_code == EVENT, p1.t_event, np.nan),
        status_align=p1.status_code,
        steps_align=p1.num_steps,
        rejected_align=p1.num_rejected_steps,
        loss_at_align=np.asarray(jax.vmap(lane_loss)(p1.final_params, lanes)),
        L0=lanes["L0"],
    )
    phases, times, losses, pool = [p1], [p1.ts], [p1.loss], [s1]
    if t_late is not None:
        start = p1.t_final
        if not t_late > np.max(start):
            raise ValueError(f"t_late = {t_late} must exceed the alignment phase's end {np.max(start):g}")
        p2, s2 = solve_phase(cfg, p1.final_params, lanes, ESCAPE, t_late - np.max(start))
        escaped_first = out["loss_at_align"] <= 0.5 * lanes["L0"]
        out["t_esc"] = np.where((p2.status_code == EVENT) & ~escaped_first, start + p2.t_event, np.nan)
        out["status_esc"] = p2.status_code
        out["steps_esc"] = p2.num_steps
        times.append(start[:, None] + p2.ts)
        start = start + p2.t_final
        horizon = t_late - np.min(start)
        rate = np.maximum((t_late - start) / horizon, 1e-12)  # > 0 also for a lane that ran to t_late
        p3, s3 = solve_phase(cfg, p2.final_params, lanes, FREE, horizon, rate)
        out["status_late"] = p3.status_code
        out["steps_late"] = p3.num_steps
        phases += [p2, p3]
        times.append(start[:, None] + rate[:, None] * p3.ts)
        losses += [p2.loss, p3.loss / rate[:, None]]  # the objective was rate · L
        pool += [s2, s3]
    trace = {"t": np.concatenate(times, axis=1), "loss": np.concatenate(losses, axis=1)}
    for name in phases[0].observables:
        trace[name] = np.concatenate([p.observables[name] for p in phases], axis=1)
    out["trace"] = trace
    out["final_params"] = phases[-1].final_params
    out["data"] = [(X, y) for X, y in zip(lanes["X"], lanes["y"])]
    out["pool"] = pool
    return out


# ----------------------------------------------------------------------------- rows from the lanes
def balance_drift(trace):
    """max over saves and neurons of |b_j(t) − b_j(0)| / ‖W(t)‖_F², b_j = v_j² − ‖w_j‖²."""
    b = trace["balancedness"]
    drift = np.max(np.abs(b - b[:, :1]), axis=-1) / trace["energy"].sum(axis=-1)
    return np.nanmax(drift, axis=-1)  # saves after an event are NaN


def seed_grid(values, specs, select, axis_key, seeds):
    """Matrix seeds × sorted axis values of `values` over the lanes passing `select`."""
    axis = sorted({s[axis_key] for s in specs if select(s)})
    M = np.full((len(seeds), len(axis)), np.nan)
    for k, s in enumerate(specs):
        if select(s):
            M[seeds.index(s["seed"]), axis.index(s[axis_key])] = values[k]
    return np.array(axis), M


def synthetic_verdicts(cfg, out):
    """The rows of E1.1, E1.3 and E1.4 from the synthetic lanes; returns (rows, fits)."""
    specs, seeds = out["specs"], list(cfg.seeds)
    is_mu = lambda s: s["experiment"] == "mu"  # noqa: E731
    is_eps = lambda s: s["mu"] == cfg.mu and not s["logistic"] and s["eps"] in cfg.eps_grid  # noqa: E731
    mus, T = seed_grid(out["t_align"], specs, is_mu, "mu", seeds)
    _, T_exp = seed_grid(out["t_align"], specs, lambda s: is_mu(s) and s["mu"] == cfg.mu, "mu", seeds)
    _, T_log = seed_grid(out["t_align"], specs, lambda s: s["experiment"] == "logistic", "mu", seeds)
    eps, Ta = seed_grid(out["t_align"], specs, is_eps, "eps", seeds)
    _, Te = seed_grid(out["t_esc"], specs, is_eps, "eps", seeds)
    pred = float(np.mean([out["escape_slope_pred"][k] for k, s in enumerate(specs) if is_eps(s)]))
    c = np.array([equiangular_class_cosine(s["n"] // 2, s["n"] - s["n"] // 2, s["mu"]) for s in specs])
    tr = out["trace"]
    rows = [
        bound_ratio_verdict("E1.1", out["t_align"], out["bound"], f"the μ-, ε- and logistic lanes (n = {cfg.n})"),
        mu_exponent_verdict(mus, T, n_boot=cfg.bootstrap),
        loss_identity_verdict(T_exp.ravel(), T_log.ravel()),
        eps_independence_verdict(eps, Ta),
        escape_slope_verdict(eps, Te, pred, n_boot=cfg.bootstrap),
        order_verdict(out["t_align"], out["t_esc"]),
        loss_decay_verdict(tr["t"], tr["loss"]),
        stable_rank_verdict(tr["stable_rank"][:, -1], c, cfg.t_late),
        balance_verdict(balance_drift(tr), cfg.rtol),
    ]
    fits = {
        "mu_exponent": dict(rows[1].details, mu=mus.tolist()),
        "t_align_vs_eps": dict(eps=eps.tolist(), t_align=Ta.tolist()),
        "escape_slope": dict(slope=rows[4].measured, predicted=pred, eps=eps.tolist(), t_esc=Te.tolist()),
        "stable_rank": rows[7].details,
    }
    return rows, fits


def n_verdicts(cfg, out):
    """The rows of E1.2 (sum loss): the ratio to the bound, growth at most like log n, and the
    pilot's flat n·t_align; returns (rows, fits)."""
    ns, T = seed_grid(out["t_align"], out["specs"], lambda s: True, "n", list(cfg.seeds))
    rows = [bound_ratio_verdict("E1.2", out["t_align"], out["bound"], f"n ∈ {list(cfg.ns)}"),
            n_growth_verdict(ns, T, n_boot=cfg.bootstrap), n_flat_verdict(ns, T, n_boot=cfg.bootstrap)]
    return rows, {"n_scaling": dict(rows[1].details, n=ns.tolist(), beta_log_n=log_growth_exponent(ns))}


def real_verdicts(cfg, out, name):
    """E1.5 on digits/MNIST: live neurons aligned with x̄_± before the loss drops, stable rank ≤ 2."""
    tr = out["trace"]
    cos_own, live = [], []
    for k in range(len(out["specs"])):
        before = np.isfinite(tr["loss"][k]) & (tr["loss"][k] >= 0.9 * out["L0"][k])
        i = np.max(np.nonzero(before)[0])
        v = out["final_params"]["v"][k]
        cos_own.append(np.where(v > 0, tr["cos"][k, i, :, 0], tr["cos"][k, i, :, 1]))
        live.append(live_neurons(tr["norms"][k]))
    label = f"{name} 0 vs 1 (n={out['specs'][0]['n']}, μ̂={np.mean(out['mu_hat']):.2f})"
    return [live_alignment_verdict(label, cos_own, live),
            low_rank_verdict(label, tr["stable_rank"][:, -1], float(np.nanmax(tr["t"])))], {}


def run_real(cfg, name):
    """Digits 0 vs 1 (or MNIST), sum-reduced exponential loss, one run per seed in
    `cfg.real_seeds` (the subsample and the init differ by seed), from t = 0 to digits_t1.

    This data is not μ-separated, and the plain solve chatters on ReLU kinks (200,000 Tsit5
    steps reach t < 0.1 at n = 60): these runs use `gflow.objective`'s event-driven Filippov
    integration (`gflow.switching`). No alignment event: neurons that align with x̄_± can still
    activate points of the other class, so the cone condition of t_align need not ever hold."""
    import jax

    from .. import data, models, objective, simulate

    specs, trajs, sets = [], [], []
    start = time.perf_counter()
    for s in cfg.real_seeds:
        if name == "digits":
            X, y = data.digits((0, 1), center=True)
            idx = np.sort(np.random.default_rng(s).choice(len(y), size=min(cfg.digits_n, len(y)), replace=False))
            X, y = X[idx], y[idx]
        else:
            X, y = data.mnist(cfg.mnist, (0, 1), n=cfg.mnist_n, seed=s)
        L = objective(models.two_layer, "exponential", X, y, reduction="sum")
        p0 = models.init_two_layer(jax.random.PRNGKey(s), X.shape[1], cfg.width, cfg.init_scale)
        lane = dict(X=X, y=y, delta=cfg.delta)
        ts = np.concatenate([[0.0], np.geomspace(1e-3, cfg.digits_t1, NUM_SAVES - 1)])
        traj = simulate(L, p0, cfg.digits_t1, saveat=ts, rtol=cfg.rtol, max_steps=cfg.max_steps, save_params=False,
                        observables={k: functools.partial(f, lane=lane) for k, f in lane_observables().items()})
        trajs.append(jax.tree.map(np.asarray, traj))
        specs.append(dict(experiment=name, n=len(y), d=X.shape[1], mu=np.nan, eps=cfg.init_scale, seed=s))
        sets.append((X, y))
    stack = functools.partial(np.stack, axis=0)
    trace = {"t": stack([t.ts for t in trajs]), "loss": stack([t.loss for t in trajs])}
    trace |= {k: stack([t.observables[k] for t in trajs]) for k in trajs[0].observables}
    loss0 = trace["loss"][:, :1]
    return dict(
        specs=specs,
        trace=trace,
        final_params={k: stack([t.final_params[k] for t in trajs]) for k in ("W", "v")},
        L0=loss0[:, 0],
        t_align=np.full(len(specs), np.nan),
        t_esc=np.array([np.interp(0.5, (tr.loss / tr.loss[0])[::-1], tr.ts[::-1]) for tr in trajs]),
        status=np.array([int(t.status_code) for t in trajs]),
        steps=np.array([int(t.num_steps) for t in trajs]),
        mu_hat=np.array([data.separation(X, y) for X, y in sets]),
        wall_seconds=time.perf_counter() - start,
    )


# ----------------------------------------------------------------------------- experiments
# ----------------------------------------------------------------------------- the grids of `gflow align` and their results file
def synthetic_specs(cfg):
    """Lanes of the n = cfg.n grids: μ-scaling (exponential loss), the 2·logistic loss at
    μ = cfg.mu, and ε-scaling (which reuses the μ = cfg.mu, ε = cfg.init_scale lanes)."""
    specs = [dict(experiment="mu", n=cfg.n, mu=mu, eps=cfg.init_scale, seed=s, logistic=False)
             for mu in cfg.mus for s in cfg.seeds]
    specs += [dict(experiment="logistic", n=cfg.n, mu=cfg.mu, eps=cfg.init_scale, seed=s, logistic=True)
              for s in cfg.seeds]
    specs += [
        dict(experiment="eps", n=cfg.n, mu=cfg.mu, eps=eps, seed=s, logistic=False)
        for eps in cfg.eps_grid
        if not (eps == cfg.init_scale and cfg.mu in cfg.mus)
        for s in cfg.seeds
    ]
    return specs


def n_specs(cfg):
    """Lanes of the n-scaling grid (μ = cfg.mu, d = n + 1, sum-reduced exponential loss). The
    1/n-scaled loss needs no lanes of its own: L/n is the time change t → t/n, so its t_align
    is exactly n·t_align."""
    return [dict(experiment="n", n=n, mu=cfg.mu, eps=cfg.init_scale, seed=s, logistic=False)
            for n in cfg.ns for s in cfg.seeds]


def _bound(specs):
    return t_align_bound([s["n"] for s in specs], [s["mu"] for s in specs])


def _run_grid(cfg, specs, t_late=None):
    """The lanes of `specs`, aligned within twice their bound (so that ratios up to 2 are measured)."""
    out = run_lanes(cfg, specs, 2 * _bound(specs), t_late=t_late)
    out["bound"] = _bound(specs)
    out["specs"] = specs
    return out


def run_synthetic(cfg):
    out = _run_grid(cfg, synthetic_specs(cfg), t_late=cfg.t_late)
    out["escape_slope_pred"] = np.array([escape_slope(X, y) for X, y in out["data"]])
    out["class_cosine"] = np.array([class_cosine(X, y) for X, y in out["data"]])
    return out


def run_n_scaling(cfg):
    return _run_grid(cfg, n_specs(cfg))


def to_dataset(out):
    """One experiment's lanes as an xarray Dataset: per-lane scalars on dim `lane`, traces on
    (`lane`, `save`[, `neuron`[, `class`]])."""
    import xarray as xr

    specs = out["specs"]
    coords = {key: ("lane", np.array([float(s.get(key, np.nan)) for s in specs]))
              for key in ("n", "mu", "eps", "seed")}
    coords["loss_name"] = ("lane", np.array(["logistic" if s.get("logistic") else "exponential" for s in specs]))
    coords["experiment"] = ("lane", np.array([s["experiment"] for s in specs]))
    data_vars = {k: ("lane", np.asarray(v)) for k, v in out.items()
                 if isinstance(v, np.ndarray) and v.shape == (len(specs),)}
    dims = {2: ("lane", "save"), 3: ("lane", "save", "neuron"), 4: ("lane", "save", "neuron", "class")}
    for k, v in out["trace"].items():
        if k == "energy":
            data_vars["energy"] = (("lane", "save", "group"), v)
        else:
            data_vars[f"trace_{k}"] = (dims[v.ndim], v)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["wall_seconds"] = float(out["wall_seconds"])
    ds.attrs.update({f"pool_{k}": v for k, v in out.get("pool", {}).items()})
    return ds


def write_results(path, datasets):
    path.unlink(missing_ok=True)
    for group, ds in datasets.items():
        ds.to_netcdf(path, group=group, engine="h5netcdf", mode="a")

"""Predictions of Min, Mallada & Vidal, "Early neuron alignment in two-layer ReLU networks with
small initialization" (ICLR 2024), for f(x) = Σ_j v_j σ(⟨w_j, x⟩) trained by gradient flow on the
sum-reduced exponential or 2·logistic loss from balanced initialisation at scale ε.

Notation: x_± = Σ_{i ∈ I_±} x_i, μ = min_{i≠j} cos(y_i x_i, y_j x_j) (`gflow.data.separation`).

The second part holds the criteria of the `gflow align` verdict rows (experiments E1.1–E1.5 of
science_A): each a pure function of measured arrays returning a `Verdict`, so that a test can
feed it a wrong input (a perturbed trajectory, a wrong exponent, an unaligned net) and see it
fail or be not applicable.
"""

import numpy as np

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


def balance_verdict(drift, tol=1e-9):
    """E1.4 [derivation]: v_j² − ‖w_j‖² is conserved by the flow (σ 1-homogeneous): the largest
    drift relative to ‖W‖_F² (`balance_drift`) must be ≤ tol."""
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

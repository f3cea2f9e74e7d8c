"""gflow.theory.min2024 against closed forms, the generated data and explicit matrices."""

import numpy as np
import pytest

from gflow import data
from gflow.theory import min2024


@pytest.mark.parametrize("n_pos, n, mu", [(10, 20, 0.2), (3, 8, 0.6), (5, 6, 0.05)])
def test_class_cosine_closed_form_matches_generated_data(n_pos, n, mu):
    X, y = data.separated(2, n, n + 1, mu, n_pos=n_pos)
    c = min2024.equiangular_class_cosine(n_pos, n - n_pos, mu)
    assert min2024.class_cosine(X, y) == pytest.approx(c, abs=1e-12)
    assert c < 0


def test_escape_slope_closed_form():
    # ‖x_+‖² = n_+ + n_+(n_+ − 1)μ for unit equiangular points; n_+ = 10, μ = 0.2 gives 28.
    X, y = data.separated(0, 20, 21, 0.2)
    assert min2024.escape_slope(X, y) == pytest.approx(1 / np.sqrt(28), rel=1e-12)


@pytest.mark.parametrize("a_plus, a_minus", [(1.0, 1.0), (3.0, 0.5), (0.2, 7.0)])
def test_stable_rank_limit_matches_svd_of_aligned_rows(a_plus, a_minus):
    X, y = data.separated(1, 12, 13, 0.3, n_pos=5)
    x_plus, x_minus = min2024.class_sums(X, y)
    u, w = x_plus / np.linalg.norm(x_plus), x_minus / np.linalg.norm(x_minus)
    rng = np.random.default_rng(0)
    s_plus, s_minus = rng.random(7), rng.random(4)
    s_plus *= np.sqrt(a_plus / np.sum(s_plus**2))
    s_minus *= np.sqrt(a_minus / np.sum(s_minus**2))
    W = np.concatenate([np.outer(s_plus, u), np.outer(s_minus, w), 1e-9 * rng.standard_normal((3, 13))])
    sv = np.linalg.svd(W, compute_uv=False)
    c = min2024.class_cosine(X, y)
    assert min2024.stable_rank_limit(c, a_plus, a_minus) == pytest.approx(np.sum(sv**2) / sv[0] ** 2, rel=1e-9)


def test_stable_rank_limit_equal_energies_and_pilot_value():
    c = min2024.equiangular_class_cosine(10, 10, 0.2)
    assert c == pytest.approx(-20 / 28, rel=1e-14)
    assert min2024.stable_rank_limit(c) == pytest.approx(2 / (1 + 20 / 28), rel=1e-14)
    assert min2024.stable_rank_limit(c) == pytest.approx(1.1666, abs=1e-4)  # pilot E1.4


def test_t_align_bound():
    assert min2024.t_align_bound(20, 0.2) == pytest.approx(4 * np.log(20) / np.sqrt(0.2), rel=1e-14)
    np.testing.assert_allclose(min2024.t_align_bound([4, 16], 1.0), 4 * np.log([4, 16]), rtol=1e-14)
    for n, mu in ((1, 0.5), (10, 0.0), (10, 1.2)):
        with pytest.raises(ValueError, match="need n ≥ 2"):
            min2024.t_align_bound(n, mu)


# ----------------------------------------------------------------------------- verdict criteria
# Each row of `gflow align` fed a right and a deliberately wrong input (E1.1–E1.5).
SEEDS = np.random.default_rng(7)


def _seeds(curve, spread=0.01, seeds=5):
    """Rows of `curve` × (1 + spread·noise): what 5 seeds of a measurement look like."""
    return curve[None, :] * (1 + spread * SEEDS.standard_normal((seeds, curve.size)))


def test_fit_slope_and_bootstrap():
    x = np.log([0.1, 0.2, 0.4, 0.8])
    rng = np.random.default_rng(0)
    Y = -0.5 * x + 0.01 * rng.standard_normal((5, 4)) + rng.standard_normal((5, 1))
    slope, lo, hi = min2024.fit_slope(x, Y, n_boot=500)
    assert slope == pytest.approx(np.polyfit(x, Y.mean(0), 1)[0], rel=1e-12)
    assert lo <= slope <= hi and hi - lo < 0.1


def test_log_growth_exponent():
    ns = np.array([4, 8, 16, 32])
    assert min2024.log_growth_exponent(ns) == pytest.approx(np.polyfit(np.log(ns), np.log(np.log(ns)), 1)[0])
    assert 0.4 < min2024.log_growth_exponent(ns) < 0.5
    assert min2024.log_growth_exponent([128, 256]) < min2024.log_growth_exponent(ns)  # 1/ln n falls
    with pytest.raises(ValueError, match="two sizes"):
        min2024.log_growth_exponent([4])


def test_bound_ratio_row_fails_above_the_bound_or_unaligned():
    bound = min2024.t_align_bound([4, 8], 0.2)
    assert min2024.bound_ratio_verdict("E1.2", 0.3 * bound, bound, "n").outcome == "pass"
    assert min2024.bound_ratio_verdict("E1.2", 0.3 * bound, bound, "n").basis == "reconstructed"
    assert min2024.bound_ratio_verdict("E1.2", [0.3, 1.1] * bound, bound, "n").outcome == "fail"
    unaligned = min2024.bound_ratio_verdict("E1.2", [0.3 * bound[0], np.nan], bound, "n")
    assert unaligned.outcome == "fail" and "1 of 2 lanes not aligned" in unaligned.quantity
    assert min2024.bound_ratio_verdict("E1.2", [], [], "n").outcome == "not-applicable"


def test_mu_exponent_row_needs_the_whole_interval_in_the_band():
    mus = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
    assert min2024.mu_exponent_verdict(mus, _seeds(0.3 * mus**-0.5), n_boot=500).outcome == "pass"
    assert min2024.mu_exponent_verdict(mus, _seeds(0.3 * mus**-1.0), n_boot=500).outcome == "fail"  # wrong exponent
    # right point estimate, but seeds so scattered that the interval leaves [−0.6, −0.4]
    noisy = 0.3 * mus[None, :] ** np.array([[-0.3], [-0.7], [-0.3], [-0.7], [-0.5]])
    row = min2024.mu_exponent_verdict(mus, noisy, n_boot=500)
    assert row.measured == pytest.approx(-0.5) and row.outcome == "fail"
    T = _seeds(0.3 * mus**-0.5)
    T[2, 0] = np.nan  # a lane that did not align
    assert min2024.mu_exponent_verdict(mus, T, n_boot=500).outcome == "fail"
    single = min2024.mu_exponent_verdict(mus, 0.3 * mus[None, :] ** -0.5, n_boot=500)
    assert single.outcome == "not-applicable" and single.headline


def test_n_growth_row_fails_for_growth_faster_than_log_n():
    ns = np.array([4.0, 8, 16, 32])
    assert min2024.n_growth_verdict(ns, _seeds(13 / ns), n_boot=500).outcome == "pass"  # the pilot: ∝ 1/n
    assert min2024.n_growth_verdict(ns, _seeds(ns**0.5), n_boot=500).outcome == "fail"
    assert min2024.n_growth_verdict(ns, _seeds(np.log(ns) * ns**0.2), n_boot=500).outcome == "fail"
    assert min2024.n_growth_verdict(ns, _seeds(np.log(ns) / ns**0.2), n_boot=500).outcome == "pass"


def test_n_flat_row_tests_n_times_t_align():
    ns = np.array([4.0, 8, 16, 32])
    assert min2024.n_flat_verdict(ns, _seeds(13 / ns), n_boot=500).outcome == "pass"
    assert min2024.n_flat_verdict(ns, _seeds(np.full(4, 3.0)), n_boot=500).outcome == "fail"  # t_align flat


def test_loss_identity_row_catches_a_missing_factor_two():
    t = np.array([0.70, 0.89, 0.73])
    assert min2024.loss_identity_verdict(t, t * (1 + 1e-7)).outcome == "pass"
    assert min2024.loss_identity_verdict(t, 2 * t).outcome == "fail"  # log(1+e^{−z}) without the 2
    assert min2024.loss_identity_verdict([], []).outcome == "not-applicable"


def test_eps_independence_row():
    eps = np.array([1e-3, 1e-6, 1e-9, 1e-12])
    flat = np.array([[0.75, 0.70, 0.70, 0.70], [0.90, 0.89, 0.89, 0.89]])
    assert min2024.eps_independence_verdict(eps, flat).outcome == "pass"
    assert min2024.eps_independence_verdict(eps, 0.05 * np.log(1 / eps)[None, :] * [[1], [1.1]]).outcome == "fail"
    assert min2024.eps_independence_verdict(eps[:2], flat[:, :2]).outcome == "not-applicable"


def test_escape_slope_row():
    eps = np.array([1e-3, 1e-6, 1e-9, 1e-12])
    pred = 1 / np.sqrt(28)
    offsets = np.array([[0.1], [0.3], [0.2]])
    Te = pred * np.log(1 / eps)[None, :] + offsets
    assert min2024.escape_slope_verdict(eps, Te, pred, n_boot=500).outcome == "pass"
    assert min2024.escape_slope_verdict(eps, 2 * Te, pred, n_boot=500).outcome == "fail"  # ln(1/ε²)/‖x₊‖
    Te[1, 2] = np.nan  # a lane that never escaped
    assert min2024.escape_slope_verdict(eps, Te, pred, n_boot=500).outcome == "fail"


def test_order_row():
    assert min2024.order_verdict([0.7, 0.9], [3.0, 4.0]).outcome == "pass"
    assert min2024.order_verdict([0.7, 5.0], [3.0, 4.0]).outcome == "fail"
    assert min2024.order_verdict([0.7, np.nan], [3.0, 4.0]).outcome == "fail"


def test_loss_decay_row():
    t = np.geomspace(1.0, 1e3, 40)[None, :].repeat(2, 0)
    assert min2024.loss_decay_verdict(t, 0.5 / (t * np.log(1 + t))).outcome == "pass"
    assert min2024.loss_decay_verdict(t, 1 / np.sqrt(t)).outcome == "fail"  # L·t grows
    bumped = 0.5 / t
    bumped[1, 30] *= 1.01  # one perturbed save
    assert min2024.loss_decay_verdict(t, bumped).outcome == "fail"
    assert min2024.loss_decay_verdict(t, 0.5 / t, t_min=2e3).outcome == "not-applicable"


def _aligned_rows(X, y, energies=(1.0, 1.0), noise=0.0, seed=0):
    """Rows ∥ x̄_+ (v > 0) and ∥ x̄_− (v < 0) with the given group energies (+ noise)."""
    rng = np.random.default_rng(seed)
    x_plus, x_minus = min2024.class_sums(X, y)
    units = [x_plus / np.linalg.norm(x_plus), x_minus / np.linalg.norm(x_minus)]
    W, v = [], []
    for sign, unit, energy in zip((1, -1), units, energies):
        s = rng.random(6)
        s *= np.sqrt(energy / np.sum(s**2))
        W.append(np.outer(s, unit) + noise * rng.standard_normal((6, X.shape[1])))
        v.append(sign * np.ones(6))
    return np.concatenate(W), np.concatenate(v)


def _srank(W):
    sv = np.linalg.svd(W, compute_uv=False)
    return np.sum(sv**2) / sv[0] ** 2


def test_stable_rank_row_against_svd_and_wrong_nets():
    mus = [0.05, 0.2, 0.8]
    sets = [data.separated(s, 20, 21, mu) for s, mu in enumerate(mus)]
    c = [min2024.equiangular_class_cosine(10, 10, mu) for mu in mus]
    aligned = [_srank(_aligned_rows(X, y)[0]) for X, y in sets]  # the limit, by SVD
    assert min2024.stable_rank_verdict(aligned, c, 1e3).outcome == "pass"
    rank_one = [_srank(_aligned_rows(X, y, energies=(1.0, 1e-8))[0]) for X, y in sets]
    assert min2024.stable_rank_verdict(rank_one, c, 1e3).outcome == "fail"
    random = [_srank(np.random.default_rng(1).standard_normal((12, 21))) for _ in sets]
    assert min2024.stable_rank_verdict(random, c, 1e3).outcome == "fail"
    unequal = [_srank(_aligned_rows(X, y, energies=(1.0, 2.0))[0]) for X, y in sets]
    assert min2024.stable_rank_verdict(unequal, c, 1e3).outcome == "fail"  # groups not yet equal


def test_balance_row_on_conserved_and_perturbed_traces():
    from gflow.theory.min2024 import balance_drift

    rng = np.random.default_rng(0)
    b0 = rng.standard_normal((2, 1, 5)) * 1e-12
    energy = np.geomspace(1e-12, 10, 6)[None, :, None].repeat(2, 0) * [[[1.0, 1.0]]]
    trace = {"balancedness": np.repeat(b0, 6, axis=1), "energy": energy}
    assert min2024.balance_verdict(balance_drift(trace), 1e-7).outcome == "pass"
    trace["balancedness"] = trace["balancedness"] + np.linspace(0, 1e-3, 6)[None, :, None]
    assert min2024.balance_verdict(balance_drift(trace), 1e-7).outcome == "fail"
    # a relative drift of 3× the solve's rtol fails, half of it passes (measured: 6.8e-8 at 1e-7)
    for size, outcome in ((3e-7, "fail"), (5e-8, "pass")):
        grows = size * energy.sum(-1)[:, :, None] * (np.arange(6) > 0)[None, :, None]
        trace["balancedness"] = np.repeat(b0, 6, axis=1) + grows
        assert min2024.balance_verdict(balance_drift(trace), 1e-7).outcome == outcome


def test_live_alignment_row_fails_for_unaligned_or_wrong_class_nets():
    X, y = data.separated(3, 20, 21, 0.3)
    W, v = _aligned_rows(X, y, noise=0.02)
    x_plus, x_minus = min2024.class_sums(X, y)

    def cos_own(W, v):
        cos = W @ np.stack([x_plus, x_minus], 1) / np.linalg.norm(W, axis=1)[:, None]
        return np.where(v > 0, cos[:, 0] / np.linalg.norm(x_plus), cos[:, 1] / np.linalg.norm(x_minus))

    grown = min2024.live_neurons(np.stack([np.full(12, 1e-6), np.full(12, 1.0)]))
    row = min2024.live_alignment_verdict("toy", [cos_own(W, v)], [grown])
    assert row.outcome == "pass" and row.headline
    unaligned = np.random.default_rng(2).standard_normal(W.shape)
    assert min2024.live_alignment_verdict("toy", [cos_own(unaligned, v)], [grown]).outcome == "fail"
    assert min2024.live_alignment_verdict("toy", [cos_own(W, -v)], [grown]).outcome == "fail"  # wrong class
    untrained = min2024.live_neurons(np.stack([np.full(12, 1e-6), np.full(12, 2e-6)]))
    assert not untrained.any()
    assert min2024.live_alignment_verdict("toy", [cos_own(W, v)], [untrained]).outcome == "not-applicable"


def test_low_rank_row():
    X, y = data.separated(3, 20, 21, 0.3)
    assert min2024.low_rank_verdict("toy", [_srank(_aligned_rows(X, y)[0])], 30.0).outcome == "pass"
    untrained = np.random.default_rng(0).standard_normal((50, 64))
    assert _srank(untrained) > 5
    assert min2024.low_rank_verdict("toy", [_srank(untrained)], 30.0).outcome == "fail"

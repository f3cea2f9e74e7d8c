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

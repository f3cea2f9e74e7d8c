"""Predictions of Min, Mallada & Vidal, "Early neuron alignment in two-layer ReLU networks with
small initialization" (ICLR 2024), for f(x) = Σ_j v_j σ(⟨w_j, x⟩) trained by gradient flow on the
sum-reduced exponential or 2·logistic loss from balanced initialisation at scale ε.

Notation: x_± = Σ_{i ∈ I_±} x_i, μ = min_{i≠j} cos(y_i x_i, y_j x_j) (`gflow.data.separation`).
"""

import numpy as np


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

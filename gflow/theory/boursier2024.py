"""Boursier & Flammarion, "Early alignment in two-layer networks training is a two-edged sword"
(arXiv 2401.10791, JMLR 2025); definitions as in `../shared/science/science_A.md`, paper 2.

Network h_θ(x) = Σ_j a_j σ(⟨w_j, x̃⟩), σ = ReLU, x̃ = (x, 1) (a hidden bias), loss
(1/n)Σ_k ℓ(h_θ(x_k), y_k). From a small initialisation (scale λ) the neurons keep norms of
order λ for a time of order ln(1/λ) while their directions follow

    dŵ/dt ≈ sign(a)·(I − ŵŵᵀ) D(ŵ),   D(w) = −(1/n) Σ_k ∂_1ℓ(0, y_k) 1[⟨w, x̃_k⟩ > 0] x̃_k,

and end up dead or at an extremal vector: a critical point of G(w) = ⟨w, D(w)⟩ on the sphere
with D(w) = s‖D(w)‖w, s = sign(a) [R: the form of the theorem is reconstructed]. D(w) is the
gradient of the per-neuron neural correlation function Σ_k r_k ReLU(⟨w, x̃_k⟩), r = −ℓ'(0, y)/n
(`gflow.theory.ncf.correlation_labels`), and is constant on each activation cell, so extremal
vectors are found independently of training by enumerating the cells: cell P holds an extremal
vector of sign s iff s·D_P/‖D_P‖ lies in P.
"""

from functools import partial

import numpy as np

from .. import losses
from .ncf import correlation_labels


def activation_pattern(w, X):
    """1[⟨w, x̃_k⟩ > 0] for each row of X (inputs already carrying the bias column), shape (n,)
    for one w of shape (d,), (m, n) for a stack of w's."""
    return np.asarray(w) @ np.asarray(X).T > 0


def D(w, X, y, loss="square", factor=1.0):
    """D(w) = −(1/n) Σ_k ∂_1ℓ(0, y_k) 1[⟨w, x̃_k⟩ > 0] x̃_k (science_A, paper 2 (b)).

    Default loss: the code's MSE (h − y)² with mean reduction (`factor` 1, no ½), for which
    D(w) = (2/n) Σ_k y_k 1[·] x̃_k. Works on one w (d,) or a stack (m, d).
    """
    r = _labels(loss, y, factor)
    return activation_pattern(w, X) * r @ np.asarray(X)


def G(w, X, y, loss="square", factor=1.0):
    """G(w) = ⟨w, D(w)⟩, whose critical points on the unit sphere are the extremal vectors."""
    return np.sum(np.asarray(w) * D(w, X, y, loss, factor), axis=-1)


def _labels(loss, y, factor):
    if loss == "square":
        loss = partial(losses.square, factor=factor)
    return np.asarray(correlation_labels(loss, y, reduction="mean"))


def activation_cells(X, *, num_samples=200_000, seed=0):
    """The distinct activation patterns of directions w on the unit sphere, shape (C, n).

    For d = 2 (1-D data with bias) the cells are the arcs between the 2n angles where
    ⟨w, x̃_k⟩ = 0, enumerated exactly by the arcs' midpoints; for d > 2 by sampling
    `num_samples` Gaussian directions (cells of tiny solid angle can be missed).
    """
    X = np.asarray(X, dtype=float)
    d = X.shape[1]
    if d == 2:
        normal = np.arctan2(X[:, 1], X[:, 0])
        cuts = np.sort(np.mod(np.concatenate([normal + np.pi / 2, normal - np.pi / 2]), 2 * np.pi))
        mids = 0.5 * (cuts + np.roll(cuts, -1) + 2 * np.pi * (np.arange(cuts.size) == cuts.size - 1))
        W = np.stack([np.cos(mids), np.sin(mids)], axis=1)
    else:
        W = np.random.default_rng(seed).standard_normal((num_samples, d))
    return np.unique(activation_pattern(W, X), axis=0)


def extremal_directions(X, y, loss="square", factor=1.0, **cell_options):
    """The extremal vectors: unit w with D(w) = s‖D(w)‖w, found cell by cell (module docstring).

    Returns a list of dicts {"w": unit vector, "sign": s (+1 attracts a > 0 neurons, −1 attracts
    a < 0 neurons), "pattern": activation pattern, "norm_D": ‖D(w)‖}, by decreasing ‖D‖.
    """
    X = np.asarray(X, dtype=float)
    r = _labels(loss, y, factor)
    found = []
    for pattern in activation_cells(X, **cell_options):
        d_p = (pattern * r) @ X
        norm = np.linalg.norm(d_p)
        if not pattern.any() or norm == 0:
            continue
        for s in (1, -1):
            w = s * d_p / norm
            if np.array_equal(activation_pattern(w, X), pattern):
                found.append({"w": w, "sign": s, "pattern": pattern, "norm_D": float(norm)})
    return sorted(found, key=lambda e: -e["norm_D"])


def plateau(X, y, pattern=None):
    """The least-squares plateau: min over β of (1/n)[Σ_{k∈P} (⟨β, x̃_k⟩ − y_k)² + Σ_{k∉P} y_k²].

    When every live neuron shares one activation cell P the network is linear, ⟨β, x̃⟩, on the
    points of P and zero elsewhere, so the flow can stall at this value (the spurious stationary
    point of Theorem 2 for P = all points). Returns (β, L) for the MSE without ½; β is only a
    stationary point of the network if its own pattern contains P.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    P = np.ones(len(y), bool) if pattern is None else np.asarray(pattern, bool)
    beta, *_ = np.linalg.lstsq(X[P], y[P], rcond=None)
    residual = np.where(P, X @ beta - y, -y)
    return beta, float(np.mean(residual**2))


#: Fig. 2 data of the paper's code: three points x with a hidden bias, labels y (science_A).
SPURIOUS_X = np.array([-0.75, -0.5, 0.125])
SPURIOUS_Y = np.array([1.1, 0.1, 0.8])

#: Knots of the piecewise-linear teacher of the 40-point sparsity example (science_A, E2.5).
TEACHER_KNOTS_X = np.array([-1.0, -0.7, -0.55, -0.4, 0.0, 0.5, 0.6, 0.7, 1.0])
TEACHER_KNOTS_Y = np.array([0.0, 0.7, 0.5, 1.0, 0.0, 1.0, 0.6, 0.7, 0.0])


def sparsity_data(n=40, seed=0):
    """x ~ U[−1, 1] (n points), y the linear interpolation through the teacher's knots."""
    x = np.sort(np.random.default_rng(seed).uniform(-1.0, 1.0, n))
    return x, np.interp(x, TEACHER_KNOTS_X, TEACHER_KNOTS_Y)


#: Theorem 2's bound on the box size η of Assumption 3 (science_A, paper 2 (c)).
ETA_MAX = 1 / 6


def spurious_box_data(eta=0.15, seed=0):
    """A three-point dataset drawn uniformly inside Assumption 3's box (Theorem 2, η < 1/6):
    x̃_1 ∈ (−1, −1+η] × [1, 1+η], y_1 ∈ [1, 1+η]; x̃_2 ∈ [−η, η] × [1−η, 1+η], y_2 ∈ (0, η];
    x̃_3 ∈ [1−η, 1) × [1, 1+η], y_3 ∈ [1, 1+η]. The second coordinate of x̃ plays the bias
    input (it is not exactly 1 inside the box). Returns (X̃ (3, 2), y (3,)); data that nobody
    chose, for the held-out check that the flow stalls at this set's own least-squares value."""
    if not 0 < eta < ETA_MAX:
        raise ValueError(f"eta must lie in (0, 1/6) for Theorem 2, got {eta}")
    u = np.random.default_rng(seed).uniform(size=(3, 3))
    X = np.array([[-1 + eta * (1 - u[0, 0]), 1 + eta * u[0, 1]],
                  [eta * (2 * u[1, 0] - 1), 1 + eta * (2 * u[1, 1] - 1)],
                  [1 - eta * (1 - u[2, 0]), 1 + eta * u[2, 1]]])
    y = np.array([1 + eta * u[0, 2], eta * (1 - u[1, 2]), 1 + eta * u[2, 2]])
    return X, y


def in_spurious_box(X, y, eta):
    """True if (X̃, y) satisfies Assumption 3 with box size η (closed box; the open ends have
    measure zero for `spurious_box_data`)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    lo = np.array([[-1, 1, 1], [-eta, 1 - eta, 0], [1 - eta, 1, 1]])
    hi = np.array([[-1 + eta, 1 + eta, 1 + eta], [eta, 1 + eta, eta], [1, 1 + eta, 1 + eta]])
    Z = np.column_stack([X, y])
    return bool(np.all((lo <= Z) & (Z <= hi)))

"""Zhou, Zhou, Luo, Zhang, Xu, "Towards understanding the condensation of neural networks at
initial training" (NeurIPS 2022, arXiv 2105.11686): leading-order condensed directions.

Network f(x) = Σ_j a_j σ(w_j·x̃), x̃ = (x, 1), loss R_S = (1/2n) Σ_i e_i², e_i = f(x_i) − y_i.
σ has multiplicity p: σ^{(k)}(0) = 0 for k = 1…p−1, σ^{(p)}(0) ≠ 0. For small parameters
σ'(z) ≈ σ^{(p)}(0) z^{p−1}/(p−1)!, so the input weights move as

    ẇ_j = −(a_j/n) Σ_i e_i σ'(w_j·x̃_i) x̃_i ∝ a_j ∇_w T_p(w),   T_p(u) = −Σ_i e_i (u·x̃_i)^p,

and their directions climb T_p on the sphere S^d if a_j σ^{(p)}(0) > 0 (descend it otherwise).
At leading order e_i ≈ −y_i (f ≈ 0); with σ(0) ≠ 0 the residual at the stopping time is the
right e. This is the reconstruction of science_B §D [R], consistent with the paper's §5:

- p = 1: T_1 is linear, all directions go to ±ĝ with g = −Σ_i e_i x̃_i (proved in the paper);
- p = 2: T_2(u) = uᵀCu, C = −Σ_i e_i x̃_i x̃_iᵀ: a_j > 0 → ± top eigenvector, a_j < 0 → ± bottom;
- p = 3: a_j > 0 → local maxima of T_3 on S^d, a_j < 0 → their negatives (T_3 is odd).
"""

import numpy as np

from ..condensation import _unit
from ..models import with_bias

#: Multiplicity p of the activations of `gflow.models.ACTIVATIONS` (ReLU has none).
MULTIPLICITY = {"tanh": 1, "sigmoid": 1, "softplus": 1, "xtanh": 2, "x2tanh": 3}


def multiplicity(activation):
    """p for an activation name; ValueError for one without a multiplicity (e.g. ReLU)."""
    try:
        return MULTIPLICITY[activation]
    except KeyError:
        raise ValueError(
            f"activation {activation!r} has no multiplicity p: use one of {sorted(MULTIPLICITY)}"
        ) from None


def _features_and_weights(X, residual):
    Xt = np.asarray(with_bias(np.asarray(X, dtype=float)))
    weights = -np.asarray(residual, dtype=float)
    if weights.shape != (Xt.shape[0],):
        raise ValueError(f"residual has shape {weights.shape}, need ({Xt.shape[0]},) for X")
    return Xt, weights


def direction_p1(X, residual):
    """ĝ, g = −Σ_i e_i x̃_i: the one line of a p = 1 activation (Zhou et al., Thm. for p = 1).
    Pass `residual = −y` for the small-initialisation limit."""
    Xt, c = _features_and_weights(X, residual)
    return _unit(c @ Xt)


def directions_p2(X, residual):
    """(top, bottom) unit eigenvectors of C = −Σ_i e_i x̃_i x̃_iᵀ: the lines of p = 2 for
    a_j > 0 and a_j < 0 respectively."""
    Xt, c = _features_and_weights(X, residual)
    _, vecs = np.linalg.eigh((Xt * c[:, None]).T @ Xt)
    return vecs[:, -1], vecs[:, 0]


def cubic_form(X, residual):
    """T_3(u) = −Σ_i e_i (u·x̃_i)³ as a function returning (T, ∇T) and, with `hessian=True`,
    also ∇²T, in R^{d+1}; u of shape (…, d+1)."""
    Xt, c = _features_and_weights(X, residual)

    def T(u, hessian=False):
        z = u @ Xt.T
        out = ((c * z**3).sum(-1), 3 * (c * z**2) @ Xt)
        if hessian:
            out += (6 * np.einsum("i,...i,ij,ik->...jk", c, z, Xt, Xt),)
        return out

    return T


def maxima_p3(X, residual, num_starts=200, steps=2000, seed=0):
    """Local maxima of T_3 on the sphere S^d with T_3 > 0: the orientations that p = 3 neurons
    with a_j > 0 condense on (their negatives for a_j < 0; where T_3 ≤ 0 neither w_j nor a_j
    grows). Found by Riemannian gradient ascent from `num_starts` random starts, deduplicated,
    polished by Riemannian Newton steps, and kept only where the Riemannian Hessian
    P∇²T P − (u·∇T)P is negative definite on the tangent space (strict local maxima: the KKT
    count). Returns (k, d+1) unit vectors, largest T_3 first."""
    T = cubic_form(X, residual)
    rng = np.random.default_rng(seed)
    u = _unit(rng.standard_normal((num_starts, np.asarray(X).shape[-1] + 1)))
    scale = np.abs(T(u)[1]).max()
    for _ in range(steps):
        grad = T(u)[1]
        tangent = grad - (grad * u).sum(-1, keepdims=True) * u
        if np.abs(tangent).max() < 1e-6 * scale:
            break
        u = _unit(u + 0.2 * tangent / scale)
    maxima, seen = [], np.zeros((0, u.shape[1]))
    for k in np.argsort(-T(u)[0]):
        if np.any(seen @ u[k] > 0.999):
            continue
        seen = np.vstack([seen, u[k]])
        v, ok = _polish_maximum(T, u[k], scale)
        if ok and not any(v @ m > 0.999999 for m in maxima):
            maxima.append(v)
    return np.array(maxima).reshape(-1, u.shape[1])


def _polish_maximum(T, u, scale, iterations=30):
    # Riemannian Newton on the sphere; a strict local maximum with T > 0 passes the checks.
    eye = np.eye(u.shape[0])
    for _ in range(iterations):
        value, grad, hess = T(u, hessian=True)
        P = eye - np.outer(u, u)
        riemann = P @ hess @ P - (u @ grad) * P
        tangent = P @ grad
        u = _unit(u - P @ np.linalg.lstsq(riemann, tangent, rcond=None)[0])
    value, grad, hess = T(u, hessian=True)
    P = eye - np.outer(u, u)
    eig = np.linalg.eigvalsh(P @ hess @ P - (u @ grad) * P)
    # The largest eigenvalue, 0, belongs to the normal direction u itself.
    stationary = np.linalg.norm(P @ grad) <= 1e-9 * scale
    return u, bool(stationary and eig[-2] < 0 and value > 0)


def predicted_directions(activation, X, residual, a_sign=None):
    """Unit vectors (rows) of the predicted condensed orientations for an activation of
    multiplicity 1, 2 or 3; with `a_sign` (+1 or −1) only those for output weights of that sign
    (orientations, so antipodes count separately: p = 1 gives ±ĝ). Shape (k, d+1); k = 0 for
    p = 3 where T_3 has no local maximum with T_3 > 0."""
    p = multiplicity(activation)
    if p == 1:
        g = direction_p1(X, residual)
        return np.stack([g, -g])
    if p == 2:
        top, bottom = directions_p2(X, residual)
        pairs = {1: [top, -top], -1: [bottom, -bottom]}
    else:
        m = maxima_p3(X, residual)
        pairs = {1: list(m), -1: list(-m)}
    keep = (1, -1) if a_sign is None else (int(np.sign(a_sign)),)
    return np.array([v for s in keep for v in pairs[s]]).reshape(-1, np.shape(X)[-1] + 1)

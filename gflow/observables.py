"""Cheap quantities of the parameters, saved along a trajectory instead of the weights.

Each is a pure function of the parameter pytree (two-layer nets: {"W": (h, d), "v": (h,)}), so
it can be passed to `gflow.simulate(..., observables={...})`.
"""

import jax
import jax.numpy as jnp

from .condensation import condensation  # noqa: F401  (post-hoc count, Zhou et al. 2022)


def neuron_norms(params):
    """‖w_j‖ for each hidden neuron, shape (h,)."""
    return jnp.linalg.norm(params["W"], axis=1)


def balancedness(params):
    """v_j² − ‖w_j‖², shape (h,): conserved by the gradient flow of a two-layer net with a
    1-homogeneous activation (Du et al. 2018; Min et al. 2024, §2)."""
    return params["v"] ** 2 - jnp.sum(params["W"] ** 2, axis=1)


def stable_rank(W):
    """‖W‖_F² / ‖W‖_2², a continuous proxy for rank (1 ≤ srank ≤ rank W)."""
    s = jnp.linalg.svd(W, compute_uv=False)
    return jnp.sum(s**2) / s[0] ** 2


def weight_stable_rank(params):
    """Stable rank of the first layer W."""
    return stable_rank(params["W"])


def param_norm(params):
    """‖θ‖, the Euclidean norm of all parameters together."""
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(params)))


def class_means(X, y):
    """x_+ = Σ_{y_i>0} x_i and x_− = Σ_{y_i<0} x_i (Min et al. 2024, §2)."""
    import numpy as np

    X = np.asarray(X)
    y = np.asarray(y)
    return X[y > 0].sum(axis=0), X[y < 0].sum(axis=0)


def cosine_to(direction):
    """Observable: cos(w_j, direction) for every neuron j, shape (h,)."""
    unit = jnp.asarray(direction) / jnp.linalg.norm(jnp.asarray(direction))

    def cos(params):
        W = params["W"]
        return (W @ unit) / jnp.maximum(jnp.linalg.norm(W, axis=1), jnp.finfo(W.dtype).tiny)

    return cos


def _class_sums(X, y):
    X = jnp.asarray(X)
    y = jnp.asarray(y)
    return (y > 0) @ X, (y < 0) @ X


def cones(W, X, y):
    """Membership of each row w_j of W in the cones of Min, Mallada & Vidal (2024, §3):

        S_+    = {w : ⟨w, x_i⟩ > 0 ∀ i ∈ I_+,  ⟨w, x_i⟩ ≤ 0 ∀ i ∈ I_−},
        S_−    = {w : ⟨w, x_i⟩ > 0 ∀ i ∈ I_−,  ⟨w, x_i⟩ ≤ 0 ∀ i ∈ I_+},
        S_dead = {w : ⟨w, x_i⟩ ≤ 0 ∀ i}.

    Returns three bool arrays of shape (h,): (in S_+, in S_−, in S_dead). Rows of X with
    label y_i = 0 are ignored (the padding of `gflow.studies.alignment`; a zero row is never
    active).
    """
    active = jnp.asarray(W) @ jnp.asarray(X).T > 0  # (h, n); σ'(0) = 0, so 0 is inactive
    y = jnp.asarray(y)
    pos, neg = y > 0, y < 0  # a label 0 (padding) constrains neither cone
    in_plus = jnp.all(jnp.where(pos, active, True) & jnp.where(neg, ~active, True), axis=1)
    in_minus = jnp.all(jnp.where(neg, active, True) & jnp.where(pos, ~active, True), axis=1)
    return in_plus, in_minus, ~jnp.any(active, axis=1)


def aligned(params, X, y, delta):
    """Per neuron, bool (h,): the "good alignment" of Min, Mallada & Vidal (2024, Thm 1) with
    tolerance δ: w_j ∈ S_dead, or v_j > 0, w_j ∈ S_+ and cos(w_j, x_+) ≥ 1 − δ, or v_j < 0,
    w_j ∈ S_− and cos(w_j, x_−) ≥ 1 − δ, where x_± = Σ_{i ∈ I_±} x_i."""
    W, v = params["W"], params["v"]
    in_plus, in_minus, dead = cones(W, X, y)
    x_plus, x_minus = _class_sums(X, y)
    good_plus = (v > 0) & in_plus & (cosine_to(x_plus)(params) >= 1 - delta)
    good_minus = (v < 0) & in_minus & (cosine_to(x_minus)(params) >= 1 - delta)
    return dead | good_plus | good_minus


def class_cosines(X, y):
    """Observable: cos(w_j, x̄_+) and cos(w_j, x̄_−) for every neuron, shape (h, 2)."""
    cos_plus, cos_minus = (cosine_to(x) for x in _class_sums(X, y))

    def cos(params):
        return jnp.stack([cos_plus(params), cos_minus(params)], axis=-1)

    return cos


def cone_membership(X, y):
    """Observable: 1.0/0.0 indicators of w_j ∈ S_+, S_−, S_dead (see `cones`), shape (h, 3)."""

    def member(params):
        return jnp.stack(cones(params["W"], X, y), axis=-1).astype(params["W"].dtype)

    return member


def alignment_indicator(X, y, delta=1e-2):
    """Observable: 1.0 where neuron j is dead or aligned with tolerance δ (see `aligned`), shape
    (h,); its minimum over j is 1 from the alignment time t_align(δ) on."""

    def indicator(params):
        return aligned(params, X, y, delta).astype(params["W"].dtype)

    return indicator


def group_energies(params):
    """(A_+, A_−) = (Σ_{v_j>0} ‖w_j‖², Σ_{v_j<0} ‖w_j‖²), shape (2,): the group energies of the
    late-phase stable-rank limit (`gflow.theory.min2024.stable_rank_limit`)."""
    sq = jnp.sum(params["W"] ** 2, axis=1)
    v = params["v"]
    return jnp.stack([jnp.sum(jnp.where(v > 0, sq, 0.0)), jnp.sum(jnp.where(v < 0, sq, 0.0))])

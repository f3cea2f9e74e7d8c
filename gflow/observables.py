"""Cheap quantities of the parameters, saved along a trajectory instead of the weights.

Each is a pure function of the parameter pytree (two-layer nets: {"W": (h, d), "v": (h,)}), so
it can be passed to `gflow.simulate(..., observables={...})`.
"""

import jax
import jax.numpy as jnp


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

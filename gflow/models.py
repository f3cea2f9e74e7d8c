"""Networks as functions of a parameter pytree.

The two-layer network of Min–Mallada–Vidal (ICLR 2024, eq. 1) and the papers that follow it:

    f(x) = Σ_{j=1}^{h} v_j σ(w_jᵀ x),      params = {"W": (h, d), "v": (h,)}.

With σ positively homogeneous of degree p (ReLU: p = 1, ReLU^p), f is (p+1)-homogeneous in the
parameters and the balancedness v_j² − ‖w_j‖² is conserved by the gradient flow (for p = 1).
"""

import jax
import jax.numpy as jnp


def _leaky_relu(z, slope=0.01):
    return jnp.where(z > 0, z, slope * z)


def _relu_power(p):
    def act(z):
        return jax.nn.relu(z) ** p

    return act


ACTIVATIONS = {
    "relu": jax.nn.relu,  # σ'(0) = 0, as the papers' Clarke-subgradient convention
    "leaky_relu": _leaky_relu,
    "relu2": _relu_power(2),  # ReLU², 2-homogeneous with Lipschitz gradient
    "relu3": _relu_power(3),
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "linear": lambda z: z,
    "xtanh": lambda z: z * jnp.tanh(z),  # multiplicity p = 2 (Zhou et al. 2022)
    "x2tanh": lambda z: z**2 * jnp.tanh(z),  # multiplicity p = 3
}

#: Activations whose derivative jumps (gradient flow crosses switching surfaces).
PIECEWISE_LINEAR = frozenset({"relu", "leaky_relu"})


def get_activation(name_or_fn):
    """The activation function for a name in `ACTIVATIONS`, or the callable itself."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return ACTIVATIONS[name_or_fn]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name_or_fn!r}: use one of {sorted(ACTIVATIONS)} or a function"
        ) from None


def init_two_layer(key, d, width, init_scale, balanced=True, activation="relu"):
    """Initial parameters {"W": (width, d), "v": (width,)} at scale ε = `init_scale`.

    w_j = ε·w_j0 with w_j0 ~ N(0, I/d). Balanced (Min et al. 2024, §2): v_j = ε·s_j‖w_j0‖ with
    random signs s_j, so v_j² − ‖w_j‖² = 0. Otherwise v_j = ε·g_j, g_j ~ N(0, 1/width).
    `activation` is only validated here (the parameters do not depend on it).
    """
    get_activation(activation)
    for name, value in (("d", d), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}: it multiplies the weights")
    kw, kv = jax.random.split(key)
    W0 = jax.random.normal(kw, (width, d)) / jnp.sqrt(d)
    if balanced:
        signs = jnp.where(jax.random.bernoulli(kv, 0.5, (width,)), 1.0, -1.0)
        v0 = signs * jnp.linalg.norm(W0, axis=1)
    else:
        v0 = jax.random.normal(kv, (width,)) / jnp.sqrt(width)
    return {"W": init_scale * W0, "v": init_scale * v0}


def two_layer(params, X, activation="relu"):
    """f(X) = σ(X Wᵀ) v, shape (n,), for X of shape (n, d)."""
    sigma = get_activation(activation)
    return sigma(X @ params["W"].T) @ params["v"]

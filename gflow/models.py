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


INITS = ("balanced", "unbalanced", "dominated")


def init_boursier(key, d, width, init_scale, init="balanced"):
    """Boursier & Flammarion (2024, code) initialisation {"W": (width, d), "v": (width,)} at scale λ.

    w_j ~ N(0, λ²/m I) with m = `width` (d counts the bias coordinate of inputs from
    `with_bias`). Second layer:
    "balanced" a_j = ±‖w_j‖ (random sign), "unbalanced" a_j ~ N(0, λ²/m), "dominated"
    a_j = ±u_j with u_j ~ U[‖w_j‖, 2‖w_j‖], so |a_j| > ‖w_j‖ (the failure theorem's assumption,
    which keeps sign(a_j) fixed along the flow; the code's exact draw is not known, this one is
    our choice).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    for name, value in (("d", d), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}: it multiplies the weights")
    kw, ks, ka = jax.random.split(key, 3)
    std = init_scale / jnp.sqrt(width)
    W = std * jax.random.normal(kw, (width, d))
    norms = jnp.linalg.norm(W, axis=1)
    signs = jnp.where(jax.random.bernoulli(ks, 0.5, (width,)), 1.0, -1.0)
    if init == "balanced":
        v = signs * norms
    elif init == "unbalanced":
        v = std * jax.random.normal(ka, (width,))
    else:
        v = signs * norms * jax.random.uniform(ka, (width,), minval=1.0, maxval=2.0)
    return {"W": W, "v": v}


def single_layer(params, X, activation="relu2"):
    """H(X; W) = Σ_j σ(w_jᵀx), shape (n,), params {"W": (m, d)}: Kumar & Haupt's (2402.09226,
    Fig. 1) "single-layer squared ReLU" for σ = ReLU², homogeneous of order L = 2 in W."""
    sigma = get_activation(activation)
    return jnp.sum(sigma(X @ params["W"].T), axis=1)


def relu_power(p):
    """σ(z) = max(0, z)^p: p-homogeneous, with a locally Lipschitz gradient for p ≥ 2, so a
    two-layer net with it is homogeneous of order L = p + 1 (Kumar & Haupt 2403.08121)."""
    if not p >= 1:
        raise ValueError(f"the power p must be ≥ 1, got {p}")
    return _relu_power(p)


def poly_leaky_relu(p, slope=0.1):
    """Polynomial leaky ReLU σ(z) = max(z, 0)^p − slope·max(−z, 0)^p: p-homogeneous, with a
    locally Lipschitz gradient for p ≥ 2 (Kumar & Haupt 2403.08121)."""
    if not p >= 1:
        raise ValueError(f"the power p must be ≥ 1, got {p}")

    def act(z):
        return jax.nn.relu(z) ** p - slope * jax.nn.relu(-z) ** p

    return act


def init_deep(key, d, widths, init_scale):
    """Bias-free deep MLP parameters {"Ws": [W_1 (h_1, d), …, W_K (h_K, h_{K−1})], "v": (h_K,)},
    entries N(0, 1/fan_in), the whole vector rescaled to norm `init_scale` (w(0) = δ·w0 with
    ‖w0‖ = 1, as Kumar & Haupt)."""
    if not widths or any(not isinstance(h, int) or h < 1 for h in widths):
        raise ValueError(f"widths must be a non-empty list of positive integers, got {widths!r}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    dims = [d, *widths]
    keys = jax.random.split(key, len(widths) + 1)
    Ws = [jax.random.normal(k, (o, i)) / jnp.sqrt(i) for k, i, o in zip(keys, dims[:-1], dims[1:])]
    v = jax.random.normal(keys[-1], (dims[-1],)) / jnp.sqrt(dims[-1])
    params = {"Ws": Ws, "v": v}
    norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(params)))
    return jax.tree.map(lambda x: init_scale * x / norm, params)


def deep(params, X, activation="relu2"):
    """H(x) = vᵀσ(W_K σ(… σ(W_1 x))), shape (n,): a bias-free MLP. With σ p-homogeneous and K
    hidden layers it is homogeneous of order `deep_order(p, K)` in the parameters."""
    sigma = get_activation(activation)
    h = X
    for W in params["Ws"]:
        h = sigma(h @ W.T)
    return h @ params["v"]


def deep_order(p, depth):
    """Homogeneity order L = 1 + p + p² + … + p^K of `deep` with K = `depth` hidden layers and a
    p-homogeneous σ (scaling all weights by c scales layer k by c^{p(1 + e_{k−1})})."""
    return 1 + sum(p**k for k in range(1, depth + 1))


def with_bias(X):
    """x̃ = (x, 1): the input with a constant feature, so that the bias b_j of neuron j is the
    last entry of w_j = (w̄_j, b_j) ∈ R^{d+1} and orientations live on S^d (Zhou et al. 2022, §3)."""
    X = jnp.asarray(X)
    return jnp.concatenate([X, jnp.ones(X.shape[:-1] + (1,), X.dtype)], axis=-1)


def init_two_layer_bias(key, d, width, init_scale):
    """{"W": (width, d+1), "a": (width,)} with every entry ~ N(0, σ0²), σ0 = `init_scale`
    (Zhou et al. 2022, Fig. 2: all parameters ~ N(0, 0.005²))."""
    for name, value in (("d", d), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    kw, ka = jax.random.split(key)
    return {
        "W": init_scale * jax.random.normal(kw, (width, d + 1)),
        "a": init_scale * jax.random.normal(ka, (width,)),
    }


def two_layer_bias(params, X, activation="tanh"):
    """f(x) = Σ_j a_j σ(w_j·x̃), x̃ = (x, 1), the bias folded into w_j (Zhou et al. 2022, eq. 1)."""
    sigma = get_activation(activation)
    return sigma(with_bias(X) @ params["W"].T) @ params["a"]


def init_residual(key, d, width, depth, init_scale):
    """Parameters of `residual`: linear embedding W_0 (width, d+1), `depth` residual layers
    W_l (width, width+1) and the output a (width,), every entry ~ N(0, σ0²) (Zhou et al. 2022,
    Fig. 3: width 18, σ0 = 0.01)."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    params = init_two_layer_bias(key, d, width, init_scale)
    keys = jax.random.split(jax.random.fold_in(key, 1), depth)
    params["layers"] = [init_scale * jax.random.normal(k, (width, width + 1)) for k in keys]
    return params


def residual(params, X, activations=("x2tanh", "xtanh", "sigmoid", "tanh", "softplus")):
    """The residual net of Zhou et al. 2022, Fig. 3: a linear embedding h_0 = W_0 x̃, then
    h_{l} = σ_l(W_l h̃_{l−1}) + h_{l−1} for l = 1…depth with h̃ = (h, 1) (bias folded in), and
    f = aᵀ h_depth. The default σ_1…σ_5 are the paper's (multiplicities 3, 2, 1, 1, 1).

    Layer l's input weights are `params["layers"][l−1]`, so `gflow.observables.condensation`
    applies to their rows as to a two-layer net.
    """
    layers = params["layers"]
    if len(activations) != len(layers):
        raise ValueError(
            f"got {len(activations)} activations for {len(layers)} residual layers: pass one "
            "per layer"
        )
    h = with_bias(X) @ params["W"].T
    for W, act in zip(layers, activations):
        h = get_activation(act)(with_bias(h) @ W.T) + h
    return h @ params["a"]


def init_mean_field(key, d, width):
    """{"W": (M, d), "a": (M,)} with every entry ~ N(0, 1) (Pellegrini & Biroli 2020, Fig. 1)."""
    for name, value in (("d", d), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    kw, ka = jax.random.split(key)
    return {"W": jax.random.normal(kw, (width, d)), "a": jax.random.normal(ka, (width,))}


def mean_field(params, X, alpha=1.0):
    """f(x) = (α/M) Σ_i a_i ReLU(w_i·x/√d), the mean-field network of Pellegrini & Biroli (2020)
    in the normalisation reconstructed in science_B §E [R]; α sets rich (small) vs lazy (large)."""
    d = params["W"].shape[1]
    return alpha * jnp.mean(jax.nn.relu(X @ params["W"].T / jnp.sqrt(d)) * params["a"], axis=-1)

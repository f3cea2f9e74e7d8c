"""Switching surfaces: where the gradient of a piecewise-smooth objective jumps, and the objective
with the piece of every kink frozen (`Switching`); closed forms for two-layer nets."""

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import models


class Switching(eqx.Module):
    """The switching structure of a piecewise-smooth objective, for `gflow.simulate(switching=)`.

    **Attributes:**

    - `surfaces`: s(θ) (or s(θ, args)), an array of K switching functions; ∇L is smooth where no
      s_k changes sign.
    - `objective`: L(θ, p) (or L(θ, p, args)), the objective with the piece of every kink frozen
      by p, a float array shaped like s(θ): p_k = 1 selects the branch valid for s_k > 0 and
      p_k = 0 the one for s_k < 0, extended smoothly across s_k = 0. It must be affine in p_k on
      the surface s_k = 0 and equal L(θ) at p = [s(θ) > 0], which holds for networks whose
      activation is piecewise linear.
    - `max_sliding`: how many surfaces may slide at once (a static buffer size; the sliding
      geometry costs O(max_sliding · D) per step while anything slides). When it is full,
      further sliding surfaces are crossed instead (counted in stats["sliding_overflow"]), the
      flow chatters on them and the progress guard may end the solve as "stalled". 54 surfaces
      slid at once on issue 17's two problems (n = 40 and 300), 153 on the stress corpus's
      width-200 case.
    - `max_crossings`: how many crossings one step may step over (a static buffer size; costs
      one jump ∂F/∂p_k each per step with crossings). A step with more is split before the
      next one. None (default): `crossing_buffer(K, D)` for the K switching functions on a
      state of length D, which grows with K (many surfaces cross many times per step).
    - `jump`: optional, J(θ, p, k) (or J(θ, p, k, args)) = ∂F/∂p_k with F = −∇_θ L(θ, p), a
      pytree like θ, for one flat index k of s: the jump of the field across surface k. None
      computes it as a Jacobian-vector product in p, which costs about one gradient per crossing
      (a dense pass for a one-hot tangent); a closed form is much cheaper where the surfaces are
      local (a ReLU pre-activation touches one neuron).
    - `surface`: optional, s_k(θ) (or s_k(θ, args)) for one flat index k: a single switching
      function, for the crossings' coupling n_k·ΔF_m and the sliding normals ∇s_k. None
      evaluates all of s(θ) (K of them) and picks entry k.
    - `linear`: whether every s_k is affine in θ (first-layer pre-activations). False (deeper
      layers, `gflow.kinks.find`): while sliding, the normals and (NNᵀ)⁺ are recomputed
      wherever the field is evaluated, so the projected field is tangent to the curved surfaces
      at every Runge–Kutta stage (with the step start's normals the state left a curved sliding
      surface at first order: 5e-6 weight error at rtol 1e-8 on a 3-layer net).
    """

    # the functions are fields, not static: an `eqx.Module` method (`gflow.kinks`, the
    # objectives of `gflow.losses`) carries its data as leaves, so equal ones compile once
    surfaces: Callable
    objective: Callable
    max_sliding: int = eqx.field(static=True, default=256)
    max_crossings: int | None = eqx.field(static=True, default=None)
    jump: Callable | None = None
    surface: Callable | None = None
    linear: bool = eqx.field(static=True, default=True)


# `crossing_buffer`: B(K, D) = min(K, clip(⌈K / _SURFACES_PER_SLOT⌉, _MIN_CROSSINGS, cap(D))),
# cap(D) = clip(⌊_JUMP_BLOCK / D⌋, _MIN_CROSSINGS, _MAX_CROSSINGS)
_MIN_CROSSINGS = 32
_MAX_CROSSINGS = 128
_SURFACES_PER_SLOT = 160
_JUMP_BLOCK = 1_600_000  # entries of the B × D block of jumps (13 MB in float64)


def crossing_buffer(K: int, D: int) -> int:
    """The default `Switching.max_crossings` B for K switching functions on a state of length D:

        B(K, D) = min(K, clip(⌈K / 160⌉, 32, cap(D))),  cap(D) = clip(⌊1.6·10⁶ / D⌋, 32, 128),

    32 up to K = 5,120 surfaces, then one slot per 160 surfaces, at most 128 (from K = 20,480
    on) and at most 1.6·10⁶ / D. The crossings in a step of a given length grow like K, and a
    step is sized to fill ¾ of B. Measured on the stress corpus (docs/benchmarks.md): where
    surfaces only cross, more slots take fewer steps (K = 100,000: 1,926 steps with 32 slots,
    516 with 128, the plain solve 821; K = 20,000: 461 with 32, 149 with 125, plain 1,404;
    K = 15,000: 308 with 32, 128 with 94, plain 93). Where many slide it gains little
    (width100, K = 10,000: 1,379 steps with 32, 1,364 with 63; n1000, K = 20,000, rtol 1e-4,
    up to 64 sliding: 4,063 with 32, 4,110 with 125). A slot costs one jump ∂F/∂p_k (a D-vector)
    and a row of the B × B coupling per step with crossings, so small problems keep 32; a step
    with few crossings computes its kinks in fewer slots (`crossings.slot_tiers`: 32, 64, B).
    The cap keeps the B × D block of jumps in cache: on issue 7's d = 256 problem (D = 25,700,
    K = 20,000, no sliding) a step's kinks cost ~3 ms with 64 slots and ~11 ms with 125, so
    64 slots took 448 steps in 3.5 s at rtol 1e-8 (125: 407 in 4.7 s; 32: 609 in 4.5 s) and
    270 in 3.0 s at 1e-6 (125: 178 in 2.9 s; 32: 459 in 3.5 s); cap(25,700) = 62."""
    cap = min(_MAX_CROSSINGS, max(_MIN_CROSSINGS, _JUMP_BLOCK // max(D, 1)))
    wanted = -(-K // _SURFACES_PER_SLOT)
    return min(K, max(_MIN_CROSSINGS, min(cap, wanted)))


def activation_slopes(activation) -> tuple[float, float]:
    """(σ'(z > 0), σ'(z < 0)) of a piecewise-linear activation with its kink at 0."""
    sigma = models.get_activation(activation)
    up = float(jax.grad(sigma)(1.0))
    down = float(jax.grad(sigma)(-1.0))
    return up, down


def _two_layer_activation(apply_fn):
    """The activation name if `apply_fn` is `models.two_layer` (or a partial of it fixing only
    the activation) with a piecewise-linear activation, else None."""
    if apply_fn is models.two_layer:
        return "relu"
    if isinstance(apply_fn, functools.partial) and apply_fn.func is models.two_layer:
        if apply_fn.args or set(apply_fn.keywords) - {"activation"}:
            return None
        activation = apply_fn.keywords.get("activation", "relu")
        if isinstance(activation, str) and activation in models.PIECEWISE_LINEAR:
            return activation
    return None


def for_objective(apply_fn, loss, X, y, reduce) -> Switching | None:
    """The `Switching` of L(θ) = reduce_i ℓ(f(θ, x_i), y_i) when f is `models.two_layer` with a
    piecewise-linear activation: surfaces s = X Wᵀ (shape (n, h)) and the frozen-pattern net
    f_p = (X Wᵀ ⊙ σ'(p)) v with σ'(p) = σ'₋ + p (σ'₊ − σ'₋), with closed-form jumps
    (`TwoLayerKinks`). None for any other model, and where the loss has kinks of its own (the
    hinge's margins, which the closed form does not hold): `simulate` then reads every surface
    from the program (`gflow.kinks.find`)."""
    from ..kinks import find

    activation = _two_layer_activation(apply_fn)
    if activation is None:
        return None
    if find(lambda f: reduce(loss(f, y)), jnp.zeros(y.shape, X.dtype)) is not None:
        return None
    up, down = activation_slopes(activation)
    kinks = TwoLayerKinks(X, y, loss, reduce, up, down)
    return Switching(surfaces=kinks.surfaces, objective=kinks.objective, jump=kinks.jump, surface=kinks.surface)


class TwoLayerKinks(eqx.Module):
    """The switching structure of a two-layer net with a piecewise-linear activation in closed
    form (`for_objective`). The data are leaves and the rest static, so equal objectives built
    twice hash equal and compile once.

    The jump across s_ij = x_iᵀw_j: with a = σ'(p), Δa = σ'₊ − σ'₋, g_i = ∂R/∂f_i and
    h_i = ∂²R/∂f_i² for R(f) = reduce_i ℓ(f_i, y_i) (ℓ elementwise), and c = Δa s_ij v_j
    = ∂f_i/∂p_ij,

        ∂F_{w_j'}/∂p_ij = −(δ_jj' g_i Δa v_j + h_i c a_ij' v_j') x_i,
        ∂F_{v_j'}/∂p_ij = −(δ_jj' g_i Δa s_ij + h_i c a_ij' s_ij'),

    O(h d) per crossing instead of a dense pass over the data."""

    X: jax.Array
    y: jax.Array
    loss: Callable = eqx.field(static=True)
    reduce: Callable = eqx.field(static=True)
    up: float = eqx.field(static=True)
    down: float = eqx.field(static=True)

    def surfaces(self, params):
        return self.X @ params["W"].T

    def _net(self, params, pattern):
        slope = self.down + pattern * (self.up - self.down)
        return (self.surfaces(params) * slope) @ params["v"], slope

    def _risk(self, f):
        return self.reduce(self.loss(f, self.y))

    def objective(self, params, pattern):
        return self._risk(self._net(params, pattern)[0])

    def jump(self, params, pattern, k):
        W, v, X = params["W"], params["v"], self.X
        i, j = jnp.divmod(k, W.shape[0])
        f, slope = self._net(params, pattern)
        g, h = jax.jvp(jax.grad(self._risk), (f,), (jnp.ones_like(f),))  # h: the diagonal for elementwise ℓ
        s_i = X[i] @ W.T
        c = (self.up - self.down) * s_i[j] * v[j]
        own = jnp.zeros_like(v).at[j].set(g[i] * (self.up - self.down))
        return {"W": -jnp.outer(own * v + h[i] * c * slope[i] * v, X[i]), "v": -(own * s_i + h[i] * c * slope[i] * s_i)}

    def surface(self, params, k):
        i, j = jnp.divmod(k, params["W"].shape[0])
        return self.X[i] @ params["W"][j]

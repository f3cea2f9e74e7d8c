"""Gradient flows across switching surfaces: event-driven Filippov integration.

A network with a piecewise-linear activation (ReLU, leaky ReLU) has a loss L(θ) that is
continuous but whose gradient jumps where a *switching function* s_k(θ) changes sign; for a
two-layer net these are the pre-activations s_ij = w_jᵀx_i. The gradient flow is then a
piecewise-smooth (Filippov) system. An adaptive solver that ignores this sees an error it cannot
reduce at each crossing, and where the trajectory *slides* along a surface (both one-sided fields
point into it) it chatters across it with steps of size ~rtol for as long as the sliding lasts.

This module integrates such flows piece by piece. A `Switching` describes the surfaces and the
*frozen-pattern* objective L(θ, p): the loss with the linear piece of every kink fixed by a
pattern p ∈ [0, 1]^K (p_k = 1 the side s_k > 0, p_k = 0 the side s_k < 0; fractional values are
the convex combinations Filippov's construction needs). With p fixed the field is smooth, so:

1. **Crossings.** Each Runge–Kutta step uses the frozen pattern of its start. At the end of a
   step the sign of every s_k is checked against p. For every mismatch the crossing time τ_k is
   located on the step's dense output (s along it is fitted through degree + 1 Chebyshev nodes,
   the degree of the solver's dense output, exact for affine s, and each surface's root is found
   at once). Transversal crossings are *stepped over*: with ΔF_k = Δp_k ∂F/∂p_k the jump of
   the field at s_k = 0 (exact there, since f does not depend on p_k on its own surface) and
   u_k = t_b − τ_k, the frozen step is corrected by

       δ = Σ_k [∫_{τ_k}^{t_b} ΔF_k dt + ½ u_k² J ΔF_k] + O(h³),

   ΔF_k interpolated linearly in t between the step's ends (jvps in p, one jvp in θ for J).
   The jump of one crossing moves later crossings of surfaces it acts on (the same neuron):
   s_k(τ) + Σ_m (τ − τ_m)⁺ ∇s_k·ΔF_m = 0 is solved for the `max_crossings` earliest by two
   fixed-point sweeps. The kinks' error estimate |δ − Σ_k u_k ΔF_k(t_a)| + Σ_k |ΔF_k|·(change
   of τ_k in the second sweep), ∝ u², is controlled beside the Runge–Kutta estimate, each with
   its own order: the step is kept if both pass, the next one is the smaller proposal. Only the
   `max_crossings` + 1 earliest crossings (ranked by linear interpolation between the nodes)
   are located exactly. A step that passes on the smooth piece's error but not on the kinks'
   (or holds more crossings than that) is *shortened* rather than rejected: it ends at the
   kinks' proposal (or before the (B+1)-th crossing) on its own dense output, which the passed
   error estimate vouches for, and its kinks are located and tested again there. When that end
   would come before the first crossing, after a crossing whose new side's field points back to
   the surface (a sliding onset), and for a crossing before a sliding exit or a user event, the
   crossing is instead handled exactly: the step ends at the first crossing (on the dense
   output, which with no crossing before it is the frozen piece's flow), the side is decided
   there, and the step size chosen from the smooth piece is kept (the controller is not
   punished for the kink). Crossings arrive at a slowly varying rate, so the next step is also
   sized to hold about ¾ of `max_crossings` of them: a step split for a full buffer would locate
   its kinks twice.

   The jumps ΔF_k and the normals ∇s_k of the crossed surfaces cost one dense pass each by
   autodiff; `Switching.jump` and `Switching.surface` give them in closed form where the
   surfaces are local (`for_objective` does so for two-layer nets: O(h d) per crossing). On
   issue 7's n=200, d=256, width-100 problem (9,362 crossings) this took the solve at rtol 1e-6
   from 26 s to 4 s with the same result.
2. **Sliding.** At a crossing of surface k, with one-sided normal velocities
   a = ∇s_k·F(p_k=0) and b = ∇s_k·F(p_k=1): a, b > 0 crosses up, a, b < 0 crosses down, and
   a > 0 > b starts sliding. On the sliding set S the Filippov field is
   F = F(p) + Σ_{k∈S} α_k Δ_k with Δ_k the jump across surface k and α chosen so that F is
   tangent to every surface in S. For a gradient flow of a *continuous* L the jump of ∇L across
   a surface is normal to it (the tangential derivatives agree), Δ_k = β_k ∇s_k, so the sliding
   field is the orthogonal projection of any one-sided field onto the tangent space:

       F_S = Π F,   Π u = u − Nᵀ (N Nᵀ)⁺ N u,   N = [∇s_k]_{k∈S},

   and the convex weights are α = −λ/β with λ = (NNᵀ)⁺N F(p_S=0), β = (NNᵀ)⁺N(F(p_S=1) − F(p_S=0)).
   Sliding on k ends (Filippov exit) where α_k reaches 0 (the trajectory leaves to s_k < 0) or
   1 (to s_k > 0); that time is located like a crossing.

   Onsets and exits change the sliding set as a whole: a surface joining may force others out,
   and several may leave at one point. Each such decision solves for the whole set at once:
   on the surfaces S at zero F(q) = F(p_S = q) is affine in q (the jumps are normal), and the
   Filippov field of a gradient flow is its minimal-norm value over q ∈ [0, 1]^S, the classical
   "slow solution" of the gradient inclusion (a box-constrained least-squares problem of |S|
   unknowns, `_box_least_squares`). Surfaces with 0 < q_k < 1 slide; the others leave to the
   side of their bound. Deciding one surface at a time (admitting an onset only if the joint
   weights stayed in [0, 1]) left the flow of issue 17's problem flipping one surface back and
   forth at t = 0.187, forever.
3. **Progress guard.** A solve whose accepted steps advance, on a moving average over
   `_STALL_WINDOW` steps, less than `_STALL_PROGRESS` of what the smooth piece's controller
   proposes ends with status "stalled" at `t_final` instead of grinding until `max_steps`. For switching functions linear in θ
   (first-layer pre-activations) Runge–Kutta steps of the projected field keep s_S constant to
   round-off; the state is projected onto the surfaces at the start of every step as well.

`integrate` is pure JAX (one `lax.while_loop`), returns status codes, and is `jax.vmap`-able.
"""

import functools
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import models
from . import status as _status
from .flow import (
    _blowup_threshold,
    _dtmin,
    grad_evals_per_step,
    progress_meter,
    scale_aware_atol,
)
from .flow import record as _record
from .trajectory import Trajectory


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
      next one.
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
    max_crossings: int = eqx.field(static=True, default=32)
    jump: Callable | None = None
    surface: Callable | None = None
    linear: bool = eqx.field(static=True, default=True)


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
    (`TwoLayerKinks`). None for any other model."""
    activation = _two_layer_activation(apply_fn)
    if activation is None:
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


class _Geometry(eqx.Module):
    """Normals N (M, D) of the sliding surfaces (zero rows for empty slots) and (NNᵀ)⁺.

    The sliding slots are kept compact (occupied ones first): while at most m of the tier sizes
    `_tiers(M)` slide, N's other rows are zero and (NNᵀ)⁺ is block diagonal, so Π and the
    coordinates use the leading m-row block only (4 m D flops per vector instead of 4 M D)."""

    normals: jax.Array
    gram_pinv: jax.Array
    sliding: jax.Array  # whether any surface slides (else N = 0 and Π is the identity)
    tier: jax.Array  # index into _tiers(M) of the smallest block holding every sliding surface
    indices: jax.Array  # the sliding surfaces (slots, −1 empty)

    def project(self, u):
        block = lambda m: lambda: u - self.normals[:m].T @ (self.gram_pinv[:m, :m] @ (self.normals[:m] @ u))
        branches = [lambda: u] + [block(m) for m in _tiers(self.normals.shape[0])]
        return jax.lax.switch(jnp.where(self.sliding, self.tier + 1, 0), branches)

    def coordinates(self, u):
        M = self.normals.shape[0]
        block = lambda m: lambda: jnp.zeros(M, u.dtype).at[:m].set(self.gram_pinv[:m, :m] @ (self.normals[:m] @ u))
        return jax.lax.switch(self.tier, [block(m) for m in _tiers(M)])


def _tiers(M):
    """The block sizes of the sliding geometry for a buffer of M slots (`_Geometry`)."""
    return tuple(m for m in _FEW_SLIDING if m < M) + (M,)


class _Kinks(eqx.Module):
    """The crossings of one step and its kink correction (`kinks` in `integrate`)."""

    tau: jax.Array  # crossing times with the jumps' coupling (inf: no crossing)
    tau_frozen: jax.Array  # crossing times on the frozen dense output
    delta: jax.Array  # the kink correction of the step's end state
    error: jax.Array  # its error estimate, ∝ u²
    moved: jax.Array  # crossings pushed out of the step by another's jump
    t_split: jax.Array  # where a step with more than B crossings is split (inf: none)


class _State(eqx.Module):
    t: jax.Array
    y: jax.Array
    t_next: jax.Array
    controller_state: tuple
    solver_state: object
    made_jump: jax.Array
    geometry: _Geometry  # of the sliding set at the step's start (stale while nothing slides)
    pattern: jax.Array  # bool (K,): the side of every non-sliding surface
    sliding: jax.Array  # int (M,): indices of sliding surfaces, −1 for empty slots
    pending_kind: jax.Array  # the event a re-taken step ends on: 0 none, _CROSS, _EXIT, _USER
    pending_k: jax.Array  # its surface (crossing) or sliding slot (exit)
    pending_t: jax.Array
    pending_dt: jax.Array  # the step size proposed before the cut
    save_index: jax.Array
    saved: dict
    counts: dict
    progress: jax.Array  # moving average of each step's advance over the smooth piece's step
    code: jax.Array
    done: jax.Array


_CROSS, _EXIT, _USER = 1, 2, 3

# the kink correction's error estimate scales like u² (u: time from a crossing to the step's end)
_KINK_ORDER = 2

# the progress guard: a solve whose steps advance, on a moving average over about _STALL_WINDOW
# steps, less than _STALL_PROGRESS of the step the smooth piece proposes ends with status
# "stalled" (never before _STALL_WINDOW steps); steps shortened for kinks or cut at crossings
# advance a fair share, a loop of decisions at one point (or of rejections) none
_STALL_WINDOW = 128
_STALL_PROGRESS = 1e-3

# the share of the crossing buffer (`max_crossings`) a step is sized to fill
_BUFFER_FILL = 0.75

# the degree of each solver's dense output in t (diffrax: Tsit5's and Dopri5's are quartic,
# Dopri8's of degree 6, Bosh3's cubic Hermite, Heun's Hermite cubic with a vanishing cubic term
# since y₁ = y₀ + h(k₀ + k₁)/2; checked in tests/test_switching.py); 7 for any other solver
_DENSE_DEGREE = {diffrax.Tsit5: 4, diffrax.Dopri5: 4, diffrax.Dopri8: 6, diffrax.Bosh3: 3, diffrax.Heun: 2}


def _chebyshev_fit(degree):
    """The degree + 1 Chebyshev–Lobatto points of [−1, 1] and the map from values there to
    monomial coefficients: the polynomial through them reproduces any dense output of that degree."""
    nodes = -np.cos(np.pi * np.arange(degree + 1) / degree)
    return nodes, np.linalg.inv(np.vander(nodes, increasing=True))

_COUNTS = (
    "num_steps",
    "num_accepted_steps",
    "num_rejected_steps",
    "num_crossings",
    "num_crossings_stepped_over",
    "num_sliding_starts",
    "num_sliding_exits",
    "max_sliding",
    "sliding_overflow",
    "extra_grad_evals",
    "num_steps_shortened",
)


def _root(fn, a, b, tol, max_iter=200):
    """The first point b' of [a, b] with fn(b') ≤ 0 up to |b' − a'| ≤ tol, where fn(b) < 0:
    the Illinois variant of regula falsi (superlinear on smooth fn, bisection-safe otherwise).
    Returns a itself when fn(a) ≤ 0 already. Also returns the number of evaluations."""
    fa, fb = fn(a), fn(b)

    def cond(c):
        a, fa, b, fb, side, it = c
        return (b - a > tol) & (it < max_iter) & (fa > 0)

    def body(c):
        a, fa, b, fb, side, it = c
        m = jnp.clip((a * fb - b * fa) / (fb - fa), a + 0.05 * (b - a), b - 0.05 * (b - a)).astype(a.dtype)
        fm = fn(m)
        left = fm > 0
        # Illinois: halve the value kept twice in a row so that the bracket shrinks on both sides
        fb = jnp.where(left & (side == 1), 0.5 * fb, fb)
        fa = jnp.where(~left & (side == -1), 0.5 * fa, fa)
        a, fa = jnp.where(left, m, a), jnp.where(left, fm, fa)
        b, fb = jnp.where(left, b, m), jnp.where(left, fb, fm)
        return a, fa, b, fb, jnp.where(left, 1, -1), it + 1

    a, fa, b, fb, _, it = jax.lax.while_loop(cond, body, (a, fa, b, fb, jnp.asarray(0), jnp.asarray(0)))
    return jnp.where(fa > 0, b, a), it + 2


def _earliest(values, count, few):
    """The `count` smallest entries of `values` in ascending order and their indices, an index
    len(values) marking a slot left empty (value inf). On a CPU `lax.top_k` sorts all K entries;
    when at most `few` (static) entries are finite they are gathered first and only they sorted."""
    K = values.shape[0]
    finite = jnp.isfinite(values)

    def gathered():
        # the first `few` finite entries (K: none): jnp.nonzero's cumsum and K-wide scatter cost
        # ~3× an associative scan and a binary search per slot on a CPU
        seen = jax.lax.associative_scan(jnp.add, finite.astype(jnp.int32))
        slots = jnp.arange(1, few + 1, dtype=jnp.int32)
        index = jnp.searchsorted(seen, slots, side="left", method="scan_unrolled")
        neg, pick = jax.lax.top_k(-values.at[index].get(mode="fill", fill_value=jnp.inf), count)
        return -neg, index[pick].astype(jnp.int32)

    def all_sorted():
        neg, index = jax.lax.top_k(-values, count)
        return -neg, index

    value, index = jax.lax.cond(jnp.sum(finite) <= few, gathered, all_sorted)
    return value, jnp.where(jnp.isfinite(value), index, K)


_FEW_SLIDING = (16, 64)  # smaller sliding sets use a leading block of the geometry (`_tiers`)
_BOX_SWEEPS = 16  # coordinate-descent sweeps after the active-set method (`_box_least_squares`)


def _box_least_squares(H, b, valid):
    """argmin ½ qᵀHq + bᵀq over q ∈ [0, 1]^m, H = GGᵀ ⪰ 0, for the `valid` entries (the others
    are 0): the primal-dual active-set method (Hintermüller, Ito & Kunisch 2002). Each iteration
    predicts the bounds from one projected-gradient step, q − (Hq + b)/diag(H), fixes those
    entries and solves the free block exactly; it ends when the prediction repeats (finite
    termination for well-conditioned H). A tiny ridge keeps nearly parallel normals solvable."""
    m = H.shape[0]
    diag = jnp.diag(H)
    ridge = 1e-13 * jnp.maximum(jnp.max(diag), jnp.finfo(H.dtype).tiny)
    scale = jnp.where(diag > 0, diag, 1.0)

    def solve(low, high):
        free = valid & ~low & ~high
        fixed = jnp.where(high & valid, 1.0, 0.0).astype(H.dtype)
        block = jnp.where(free[:, None] & free[None, :], H, 0.0) + jnp.diag(jnp.where(free, ridge, 1.0))
        rhs = jnp.where(free, -(b + H @ fixed), fixed)
        return jnp.linalg.solve(block, rhs)

    def sets(q):
        z = q - (H @ q + b) / scale
        return valid & (z < 0), valid & (z > 1)

    def cond(c):
        _, low, high, last_low, last_high, it = c
        return (it < 2 * m + 2) & ((it == 0) | jnp.any(low != last_low) | jnp.any(high != last_high))

    def body(c):
        q, low, high, _, _, it = c
        q = solve(low, high)
        new_low, new_high = sets(q)
        return q, new_low, new_high, low, high, it + 1

    q0 = jnp.where(valid, 0.5, 0.0).astype(H.dtype)
    low0, high0 = sets(q0)
    q, *_ = jax.lax.while_loop(cond, body, (q0, low0, high0, low0, high0, jnp.asarray(0)))
    q = jnp.where(valid, jnp.clip(q, 0.0, 1.0), 0.0)

    # the active-set method can cycle where H is ill-conditioned: cyclic coordinate descent
    # (monotone, convergent for H ⪰ 0) polishes its answer, exact where it had converged
    def coordinate(i, q):
        i = i % m
        qi = jnp.clip(q[i] - (H[i] @ q + b[i]) / scale[i], 0.0, 1.0)
        return q.at[i].set(jnp.where(valid[i] & (diag[i] > 0), qi, q[i]))

    return jax.lax.fori_loop(0, _BOX_SWEEPS * m, coordinate, q)


@eqx.filter_jit
def integrate(
    objective,
    switching,
    params0,
    args,
    t0,
    t1,
    ts,
    rtol,
    atol,
    *,
    solver,
    observables,
    event,
    event_is_bool,
    max_steps,
    save_params,
    progress=False,
):
    """Solve dθ/dt = −∇L(θ) across the switching surfaces of `switching` (see module docstring).

    Arguments as `gflow.flow._solve`; returns a `gflow.Trajectory` whose `stats` hold
    num_crossings (all crossings), num_crossings_stepped_over (those of them crossed inside a
    step with the kink correction), num_sliding_starts (sliding intervals begun), num_sliding_exits,
    max_sliding (most surfaces sliding at once), sliding_overflow, extra_grad_evals (∇L
    evaluations for event decisions and exit checks, included in `num_grad_evals`) and
    num_steps_shortened (steps ended early on their dense output for the kinks' error).
    """
    dtype = t0.dtype
    y0, unravel = ravel_pytree(params0)
    if atol is None:
        atol = scale_aware_atol(params0, rtol)
    time_tol = 64 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(t0), jnp.abs(t1))

    def call(fn, y, *extra):
        return fn(unravel(y), *extra, *(() if args is None else (args,)))

    def surfaces(y):
        return jnp.ravel(call(switching.surfaces, y))

    s_shape = jax.eval_shape(lambda y: call(switching.surfaces, y), y0).shape
    K = int(np.prod(s_shape))
    M = min(switching.max_sliding, K)
    B = min(switching.max_crossings, K)

    def frozen_field(y, p):
        # −∇_θ L(θ, p): the smooth field of the piece selected by the (relaxed) pattern p
        return -jax.grad(lambda z: call(switching.objective, z, p.reshape(s_shape)))(y)

    def surface_normals(y, ks):
        # ∇s_k (len(ks), D)
        if switching.surface is None:
            _, vjp = jax.vjp(surfaces, y)
            return jax.vmap(lambda k: vjp(jax.nn.one_hot(k, K, dtype=dtype))[0])(ks)
        return jax.vmap(lambda k: jax.grad(lambda z: call(switching.surface, z, k))(y))(ks)

    def jump_fields(y, p, geo, ks, field_in_p):
        # ∂F/∂p_k (len(ks), D) of the piece's (projected) field; field_in_p: its linearisation in p
        if switching.jump is None:
            return jax.vmap(field_in_p)(jax.nn.one_hot(ks, K, dtype=dtype))
        one = lambda k: ravel_pytree(call(switching.jump, y, p.reshape(s_shape), k))[0]
        return jax.vmap(lambda k: geo.project(one(k)))(ks)

    def couplings(y, ks, fields):
        # n_k·u_m = ∇s_k(y)·u_m for k in ks (rows) and the vectors u_m of `fields` (columns)
        if switching.surface is None:
            return jax.vmap(lambda u: jax.jvp(surfaces, (y,), (u,))[1][ks])(fields).T

        def row(k):
            along = lambda u: jax.jvp(lambda z: call(switching.surface, z, k), (y,), (u,))[1]
            return jax.vmap(along)(fields)

        return jax.vmap(row)(ks)

    def geometry(y, sliding, last):
        count = jnp.sum(sliding >= 0)
        tier = jnp.searchsorted(jnp.asarray(_tiers(M)), count, side="left")

        def sliding_geometry():
            valid = sliding >= 0
            normals = surface_normals(y, jnp.where(valid, sliding, 0)) * valid[:, None]
            block = lambda m: lambda: jnp.zeros((M, M), dtype).at[:m, :m].set(
                jnp.linalg.pinv(normals[:m] @ normals[:m].T, hermitian=True))
            return normals, jax.lax.switch(tier, [block(m) for m in _tiers(M)])

        # M vjps and a pseudo-inverse cost ~10 gradients: skipped while nothing slides, when
        # `last` (a geometry of the same shape, unused then: Π is the identity) is passed on
        # rather than an M × D block of zeros written each step
        any_sliding = jnp.any(sliding >= 0)
        normals, gram_pinv = jax.lax.cond(any_sliding, sliding_geometry, lambda: (last.normals, last.gram_pinv))
        return _Geometry(normals, gram_pinv, any_sliding, tier, sliding)

    def relaxed(pattern, sliding, value):
        # the pattern as floats with every sliding surface's p set to `value`
        p = pattern.astype(dtype)
        return p.at[jnp.where(sliding >= 0, sliding, K)].set(value, mode="drop")

    def at(y, geo):
        # the geometry where a field is evaluated: the step start's for affine surfaces, the
        # local one for curved surfaces (`Switching.linear`)
        return geo if switching.linear else geometry(y, geo.indices, geo)

    def piece_field(t, y, piece):
        p, geo = piece
        return at(y, geo).project(frozen_field(y, p))

    term = diffrax.ODETerm(piece_field)
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    error_order = solver.error_order(term)
    dtmin = _dtmin(t0, t1)
    threshold = _blowup_threshold(dtype)

    def alphas(y, pattern, sliding, geo):
        # Filippov weights α_k of the sliding surfaces (1 for empty slots: never an exit)
        geo = at(y, geo)
        f0 = frozen_field(y, relaxed(pattern, sliding, 0.0))
        f1 = frozen_field(y, relaxed(pattern, sliding, 1.0))
        lam = geo.coordinates(f0)
        beta = geo.coordinates(f1 - f0)
        alpha = -lam / jnp.where(beta == 0, 1.0, beta)
        return jnp.where(sliding >= 0, alpha, 0.5)

    def filippov_set(y, base, cand):
        """The sliding set among the surfaces in `cand` (slots, −1 empty; all at s = 0 in y)
        and the sides of the others: F(q) = F(p_cand = q) is affine in q there (the jump across
        a surface is normal to it), and the Filippov field is its minimal-norm value over
        q ∈ [0, 1]^cand. A surface with 0 < q_k < 1 slides (∇s_k·F = 0 by the optimality
        conditions); one at q_k = 0 or 1 leaves to that side (its normal velocity points there)."""
        p0 = relaxed(base, cand, 0.0)
        f0, field_in_p = jax.linearize(lambda q: frozen_field(y, q), p0)

        def weights(m):
            # the problem on the leading m slots (the candidates lie there: slots are compact
            # but for the one an exit just emptied)
            def solve():
                valid = cand[:m] >= 0
                ks = jnp.where(valid, cand[:m], 0)
                if switching.jump is None:
                    jumps = jax.vmap(field_in_p)(jax.nn.one_hot(ks, K, dtype=dtype))
                else:
                    one = lambda k: ravel_pytree(call(switching.jump, y, p0.reshape(s_shape), k))[0]
                    jumps = jax.vmap(one)(ks)
                jumps = jumps * valid[:, None]
                q = _box_least_squares(jumps @ jumps.T, jumps @ f0, valid)
                return jnp.zeros(M, dtype).at[:m].set(q)

            return solve

        last = jnp.max(jnp.where(cand >= 0, jnp.arange(M), -1)) + 1
        tier = jnp.searchsorted(jnp.asarray(_tiers(M)), last, side="left")
        q = jax.lax.switch(tier, [weights(m) for m in _tiers(M)])
        valid = cand >= 0
        free = valid & (q > 0) & (q < 1)
        sides = base.at[jnp.where(valid & ~free, cand, K)].set(q >= 0.5, mode="drop")
        return sides, jnp.where(free, cand, -1)

    def exit_margin(alpha):
        return jnp.minimum(alpha, 1.0 - alpha)

    def signed(pattern, s):
        return jnp.where(pattern, s, -s)

    def user_value(y):
        value = call(event, y)
        if event_is_bool:
            return jnp.where(value, -1.0, 1.0).astype(dtype)
        return jnp.asarray(value, dtype)

    def record(y):
        return _record(objective, observables, save_params, unravel(y), args)

    T = ts.shape[0]
    rec_shape = jax.eval_shape(record, y0)
    saved0 = jax.tree.map(
        lambda s: jnp.full((T,) + s.shape, jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else 0, s.dtype),
        rec_shape,
    )

    pattern0 = surfaces(y0) > 0
    sliding0 = -jnp.ones(M, dtype=jnp.int32)
    geo0 = _Geometry(
        jnp.zeros((M, y0.shape[0]), dtype), jnp.zeros((M, M), dtype), jnp.asarray(False), jnp.asarray(0),
        -jnp.ones(M, dtype=jnp.int32),
    )
    piece0 = (relaxed(pattern0, sliding0, 0.5), geo0)
    t_next0, cstate0 = controller.init(term, t0, t1, y0, None, piece0, solver.func, error_order)
    zero = jnp.asarray(0, jnp.int32)
    state0 = _State(
        t=t0,
        y=y0,
        t_next=jnp.minimum(t_next0, t1),
        controller_state=cstate0,
        solver_state=solver.init(term, t0, t1, y0, piece0),
        made_jump=jnp.asarray(False),
        geometry=geo0,
        pattern=pattern0,
        sliding=sliding0,
        pending_kind=zero,
        pending_k=zero,
        pending_t=jnp.asarray(jnp.inf, dtype),
        pending_dt=jnp.zeros((), dtype),
        save_index=zero,
        saved=saved0,
        counts={k: zero for k in _COUNTS},
        progress=jnp.ones((), dtype),
        code=jnp.asarray(_status.SUCCESS, jnp.int32),
        done=jnp.asarray(False),
    )

    fsal = isinstance(state0.solver_state, tuple)

    def restarted(solver_state, f_start):
        # a first-same-as-last method (diffrax keeps (first_step, f0)) starts its next step
        # from the field value already evaluated after the kinks instead of re-evaluating it
        return (jnp.asarray(False), f_start) if fsal else solver_state

    node_points, node_fit = _chebyshev_fit(_DENSE_DEGREE.get(type(solver), 7))

    def kinks(ta, tb, ya, yb, s_a, s_b, interp, pattern, crossing, piece):
        """Crossing times τ_k of the surfaces in `crossing` and the kink correction of the
        frozen-pattern step, with the error estimate of its first-order part."""
        h = tb - ta
        p, geo = piece
        few = min(K, 8 * (B + 1))  # crossings ranked without sorting all K surfaces (`_earliest`)
        # s(y(t)) on the step's dense output as a polynomial in x ∈ [−1, 1] (exact for affine s)
        nodes = jnp.asarray(node_points, dtype)
        inner = jax.vmap(lambda x: surfaces(interp.evaluate(ta + 0.5 * (x + 1) * h)))(nodes[1:-1])
        values = jnp.concatenate([s_a[None], inner, s_b[None]])
        coeffs = jnp.asarray(node_fit, dtype) @ values
        sign = jnp.where(pattern, 1.0, -1.0).astype(dtype)
        # the crossing is the last one to the new side: bracket it after the last node still on
        # the old side (a surface left at s ≈ 0 by the previous step may start on either side)
        old_side = sign * values > 0
        last = len(node_points) - 1 - jnp.argmax(old_side[::-1], axis=0)

        start_old = jnp.any(old_side, axis=0)
        # the crossing in that bracket by linear interpolation between its nodes: it ranks the
        # crossings, and only the B + 1 earliest are located exactly (a vmapped root finder costs
        # its iterations on every lane, ~45 gradients on digits for all K = 7,200 surfaces); a
        # step with more than B crossings is split before it is kept, so none is left out
        right = jnp.minimum(last + 1, len(node_points) - 1)
        v_lo = jnp.take_along_axis(values, last[None], axis=0)[0]
        v_hi = jnp.take_along_axis(values, right[None], axis=0)[0]
        weight = jnp.clip(v_lo / jnp.where(v_lo == v_hi, 1.0, v_lo - v_hi), 0.0, 1.0)
        x_lin = jnp.where(start_old, nodes[last] + weight * (nodes[right] - nodes[last]), -1.0)
        x_first, candidates = _earliest(jnp.where(crossing, x_lin, jnp.inf), min(B + 1, K), few)
        inside = jnp.minimum(candidates, K - 1)  # for gathers; candidates == K marks an empty slot

        def lane(c, sg, j, active):
            value = lambda x: jnp.where(active, sg * jnp.polyval(c[::-1], x), -1.0)
            right = nodes[jnp.minimum(j + 1, len(node_points) - 1)]
            return _root(value, nodes[j], right, 2 * time_tol / h)[0]

        exact = jnp.isfinite(x_first) & start_old[inside]
        x_exact = jax.vmap(lane)(coeffs.T[inside], sign[inside], last[inside], exact)
        x_root = x_lin.at[candidates].set(jnp.where(exact, x_exact, x_lin[inside]), mode="drop")
        dp = jnp.where(crossing, -sign, 0.0)
        # the piece's field is Π F(y, p) with Π linear and fixed within the step: linearise F
        # alone (a linearised projection would carry its M × D normals as residuals)
        _, frozen_in_p = jax.linearize(lambda q: frozen_field(ya, q), p)
        at_a = lambda q: geo.project(frozen_in_p(q))

        # the jump of one crossing moves the later crossings of surfaces it pushes on (same
        # neuron): s_k(τ) + Σ_m (τ − τ_m)⁺ n_k·ΔF_m = 0, solved for the B earliest crossings by
        # two fixed-point sweeps; the second sweep's change is the error estimate of the times
        tau0 = jnp.where(crossing, ta + 0.5 * (x_root + 1) * h, jnp.inf)
        # ranked among the B + 1 located ones: a step holding more crossings is split anyway
        tau_located = jnp.where(candidates < K, tau0[inside], jnp.inf)
        rank = jnp.argsort(tau_located)
        earliest = tau_located[rank]
        valid, order = jnp.isfinite(earliest[:B]), candidates[rank][:B]  # K where a slot is empty
        at = jnp.minimum(order, K - 1)  # for gathers; masked by `valid`
        jumps = jump_fields(ya, p, geo, at, at_a) * (dp[at] * valid)[:, None]
        coupling = couplings(ya, at, jumps)
        coupling = coupling * (1 - jnp.eye(B, dtype=dtype))  # n_k·ΔF_m for m ≠ k
        slope = jax.vmap(lambda c, x: jnp.polyval(jnp.polyder(c[::-1]), x))(coeffs.T[at], x_root[at]) * 2 / h
        slope = jnp.where(valid, slope, 1.0)

        start = jnp.where(valid, earliest[:B], ta)

        def sweep(t):
            lag = jnp.maximum(t[:, None] - t[None, :], 0.0) * valid[None, :]
            return start - jnp.sum(lag * coupling, axis=1) / slope

        first_sweep = sweep(start)
        second_sweep = sweep(first_sweep)
        # bounded by jump, not summed with signs: a signed Σ_m ΔF_m·(change of τ_m), which needs
        # no B × D block of jumps, let digits' rtol-1e-8 error grow 3× (1.1e-7 against 3.2e-8)
        tau_err = jnp.where(valid, jnp.abs(second_sweep - first_sweep), 0.0)
        tau = tau0.at[order].set(jnp.where(valid, second_sweep, jnp.inf), mode="drop")
        # a crossing pushed out of the step by another's jump needs a decision: cut there
        moved = crossing & ((tau < ta) | (tau > tb))
        tau = jnp.where(crossing, jnp.clip(tau, ta, tb), jnp.inf)
        theta = jnp.where(crossing, (tau - ta) / h, 0.0)
        u = jnp.where(crossing, (1 - theta) * h, 0.0)
        # more than B crossings: the step is split between the B-th and the next one
        t_split = jnp.asarray(jnp.inf, dtype)
        if K > B:
            t_split = jnp.where(jnp.sum(crossing) > B, 0.5 * (earliest[B - 1] + earliest[B]), jnp.inf)
        # δ' = J δ + Σ_k H(t − τ_k) ΔF_k with ΔF_k = Δp_k ∂F/∂p_k, linear in t between ya and yb:
        # δ(tb) = Σ_k [∫_{τ_k}^{tb} ΔF_k dt + ½ u_k² J ΔF_k] + O(h³)
        c_a = dp * h * (1 - theta) ** 2 / 2
        c_b = dp * h * (1 - theta**2) / 2
        q_a, v, first = jax.vmap(at_a)(jnp.stack([c_a, dp * u**2 / 2, dp * u]))
        q_b = geo.project(jax.jvp(frozen_field, (yb, p), (v, c_b))[1])
        delta = q_a + q_b
        error = jnp.abs(delta - first) + tau_err @ jnp.abs(jumps)
        return _Kinks(tau, tau0, delta, error, moved, t_split)

    def no_kinks(*_):
        zeros = jnp.zeros_like(y0)
        never = jnp.full(K, jnp.inf, dtype)
        return _Kinks(never, never, zeros, zeros, jnp.zeros(K, bool), jnp.asarray(jnp.inf, dtype))

    def step(state: _State) -> _State:
        counts = dict(state.counts)
        ta = state.t
        tb = jnp.minimum(state.t_next, t1)
        pattern, sliding = state.pattern, state.sliding
        any_sliding = jnp.any(sliding >= 0)
        geo = geometry(state.y, sliding, state.geometry)

        def onto_surfaces():
            # keep the state on its sliding surfaces (Newton projection; exact for linear s)
            s_slide = jnp.where(sliding >= 0, surfaces(state.y)[jnp.maximum(sliding, 0)], 0.0)
            return state.y - geo.normals.T @ (geo.gram_pinv @ s_slide)

        ya = jax.lax.cond(any_sliding, onto_surfaces, lambda: state.y)
        piece = (relaxed(pattern, sliding, 0.5), geo)
        yb, y_err, dense, solver_state, _ = solver.step(
            term, ta, tb, ya, piece, state.solver_state, state.made_jump
        )
        interp = solver.interpolation_cls(t0=ta, t1=tb, **dense)
        counts["num_steps"] += 1
        pending_here = (state.pending_kind > 0) & (tb == state.pending_t)

        # --- transversal crossings are stepped over: the frozen step is corrected for the
        # jump of the field after each crossing, and that correction's error is controlled
        nonsliding = jnp.ones(K, bool).at[jnp.where(sliding >= 0, sliding, K)].set(False, mode="drop")
        on_pending = pending_here & (state.pending_kind == _CROSS) & (jnp.arange(K) == state.pending_k)
        s_a = surfaces(ya)

        def over(tb, yb):
            """The step [ta, tb] with its kinks: crossings, their correction and its error test."""
            s_b = surfaces(yb)
            crossing = nonsliding & ~on_pending & (signed(pattern, s_b) < 0)
            any_crossing = jnp.any(crossing)
            found = jax.lax.cond(
                any_crossing, kinks, no_kinks, ta, tb, ya, yb, s_a, s_b, interp, pattern, crossing, piece
            )
            yc = yb + found.delta
            keep_kinks, kinks_a, kinks_b, _, _, _ = controller.adapt_step_size(
                ta, tb, ya, yc, piece, found.error, _KINK_ORDER, state.controller_state
            )
            return tb, yb, s_b, crossing, any_crossing, found, yc, keep_kinks, kinks_b - kinks_a

        tb, yb, s_b, crossing, any_crossing, found, yc, keep_kinks, dt_kinks = over(tb, yb)
        # the smooth piece's error and the kinks' are controlled each with its own order: the
        # step size proposed for an error ∝ h^q scales like err^(−1/q)
        keep_smooth, smooth_a, smooth_b, _, cstate, _ = controller.adapt_step_size(
            ta, tb, ya, yc, piece, y_err, error_order, state.controller_state
        )
        dt_smooth = smooth_b - smooth_a
        # a step good for the smooth piece but not for its kinks (or with more crossings than
        # the buffer holds) is *shortened*, not rejected: it ends at the kinks' proposal (or at
        # the split) on the dense output, whose error the passed estimate bounds, and its kinks
        # are re-located and re-tested there; a step whose shortened end would come before the
        # first crossing falls back to the exact path below instead
        t_short = jnp.minimum(ta + dt_kinks, found.t_split)
        shorten = (
            any_crossing & keep_smooth & (~keep_kinks | jnp.isfinite(found.t_split))
            & (t_short > jnp.min(found.tau_frozen)) & (t_short < tb)
        )
        tb, yb, s_b, crossing, any_crossing, found, yc, keep_kinks, dt_kinks = jax.lax.cond(
            shorten,
            lambda: over(t_short, interp.evaluate(t_short)),
            lambda: (tb, yb, s_b, crossing, any_crossing, found, yc, keep_kinks, dt_kinks),
        )
        counts["num_steps_shortened"] += shorten.astype(jnp.int32)
        tau_k, tau_frozen, moved, t_split = found.tau, found.tau_frozen, found.moved, found.t_split
        # ∇L evaluations of the jvps: a linearisation at t_a with 3 tangents (and B for the jumps
        # unless `switching.jump` gives them, at the cost of about one), one jvp at t_b, once more
        # for a shortened step
        kink_evals = 6 + (B if switching.jump is None else 1)
        counts["extra_grad_evals"] += kink_evals * (any_crossing.astype(jnp.int32) + shorten.astype(jnp.int32))
        keep = keep_smooth & keep_kinks
        # a step good for the smooth piece but not for the kinks, even shortened, is cut at its
        # first crossing (the exact path) and the smooth piece's step size kept, unless a step
        # shorter than the smooth one but past that crossing is predicted to pass on the kinks'
        # error
        fall_back = any_crossing & keep_smooth & ~keep_kinks & (ta + dt_kinks <= jnp.min(tau_frozen))
        keep = keep | fall_back
        dt_next = jnp.where(fall_back, dt_smooth, jnp.minimum(dt_smooth, dt_kinks))
        # too many crossings for the buffer: retry with the step split before the (B+1)-th
        split = jnp.isfinite(t_split)
        keep = keep & ~split
        dt_next = jnp.where(split, jnp.minimum(dt_next, t_split - ta), dt_next)
        # crossings arrive at a rate that changes slowly: the next step is sized to hold about
        # _BUFFER_FILL · B of them, so that it is rarely shortened (its kinks located twice)
        n_crossing = jnp.sum(crossing)
        dt_next = jnp.where(n_crossing > 0, jnp.minimum(dt_next, (tb - ta) * _BUFFER_FILL * B / n_crossing), dt_next)

        def new_side(tb, yc, crossing, moved):
            # the stepped-over state must lie on the new side of each crossed surface, with the
            # new side's field pointing away from it (a, b of one sign); else sliding may begin
            flipped = pattern ^ crossing
            f_new = piece_field(tb, yc, (relaxed(flipped, sliding, 0.5), geo))
            s_c, velocity = jax.jvp(surfaces, (yc,), (f_new,))
            away = (signed(flipped, s_c) > 0) & (signed(flipped, velocity) > 0)
            return f_new, crossing & (moved | ~away)

        f_new, stuck = jax.lax.cond(
            keep & any_crossing,
            lambda: new_side(tb, yc, crossing, moved),
            lambda: (jnp.zeros_like(y0), jnp.zeros(K, bool)),
        )
        counts["extra_grad_evals"] += (keep & any_crossing).astype(jnp.int32)
        # a crossing that needs a decision among many that do not: the step is shortened to end
        # between it and the last crossing before it (those are stepped over) rather than cut at
        # the step's first crossing, which with a full buffer of crossings advanced a few per cent
        # of the step each time; the next step starts at that crossing
        tau_stuck = jnp.min(jnp.where(stuck, tau_k, jnp.inf))
        tau_before = jnp.max(jnp.where(crossing & (tau_k < tau_stuck), tau_k, -jnp.inf))
        resplit = keep & ~fall_back & jnp.isfinite(tau_stuck) & jnp.isfinite(tau_before)

        def shortened_before_stuck():
            t_pre = 0.5 * (tau_before + tau_stuck)
            tb2, yb2, s_b2, crossing2, any2, found2, yc2, keep2, dt2 = over(t_pre, interp.evaluate(t_pre))
            f2, stuck2 = new_side(tb2, yc2, crossing2, found2.moved)
            good = keep2 & ~jnp.any(stuck2)
            pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(good, a, b), new, old)
            return good, pick(
                (tb2, yb2, s_b2, crossing2, any2, found2, yc2, f2, stuck2),
                (tb, yb, s_b, crossing, any_crossing, found, yc, f_new, stuck),
            )

        resplit, (tb, yb, s_b, crossing, any_crossing, found, yc, f_new, stuck) = jax.lax.cond(
            resplit,
            shortened_before_stuck,
            lambda: (jnp.asarray(False), (tb, yb, s_b, crossing, any_crossing, found, yc, f_new, stuck)),
        )
        counts["num_steps_shortened"] += resplit.astype(jnp.int32)
        counts["extra_grad_evals"] += (kink_evals + 1) * resplit.astype(jnp.int32)
        tau_k, tau_frozen, moved, t_split = found.tau, found.tau_frozen, found.moved, found.t_split
        flipped = pattern ^ crossing
        # a step cut at its first crossing checks its end without the kinks, as before a cut
        y_end = jnp.where(fall_back, yb, yc)
        p_end = jnp.where(fall_back, pattern, flipped)
        alpha_b = jax.lax.cond(
            keep & any_sliding,
            lambda: alphas(y_end, p_end, sliding, geo),
            lambda: jnp.full(M, 0.5, dtype),
        )
        counts["extra_grad_evals"] += 2 * (keep & any_sliding).astype(jnp.int32)

        # --- events that need a decision: sliding exits and the user's, located on the dense
        # output; a crossing whose new side pushes back; and crossings before such events
        search = keep & ~pending_here
        viol_exit = search & (sliding >= 0) & (exit_margin(alpha_b) < 0)

        def exit_fn(t):
            m = exit_margin(alphas(interp.evaluate(t), pattern, sliding, geo))
            return jnp.min(jnp.where(viol_exit, m, jnp.inf))

        def locate(active, fn):
            t_root, evals = jax.lax.cond(
                active, lambda: _root(fn, ta, tb, time_tol), lambda: (tb, jnp.asarray(0))
            )
            return jnp.where(active, t_root, jnp.inf), evals

        tau_exit, evals = locate(jnp.any(viol_exit), exit_fn)
        counts["extra_grad_evals"] += 2 * evals
        tau_user = jnp.asarray(jnp.inf, dtype)
        if event is not None:
            ua, ub = user_value(ya), user_value(y_end)
            fires = search & ((ub <= 0) if event_is_bool else ((ua > 0) != (ub > 0)))
            sign = 1.0 if event_is_bool else jnp.where(ua > 0, 1.0, -1.0)
            tau_user, _ = locate(fires, lambda t: sign * user_value(interp.evaluate(t)))
        # the dense output is exact up to the first crossing only: cut there before other events
        other = jnp.isfinite(tau_exit) | jnp.isfinite(tau_user)
        # where a crossing needs a decision the step is cut at its first crossing, where the
        # frozen dense output is still the flow
        cut = keep & (jnp.any(stuck) | (any_crossing & other) | fall_back)
        tau_cross = jnp.where(cut, jnp.min(tau_frozen), jnp.inf)
        tau = jnp.minimum(jnp.minimum(tau_cross, tau_exit), tau_user)
        found_kind = jnp.where(
            jnp.isinf(tau),
            0,
            jnp.where(tau_cross <= tau, _CROSS, jnp.where(tau_exit <= tau, _EXIT, _USER)),
        )
        k_found = jnp.where(
            found_kind == _CROSS,
            jnp.argmin(tau_frozen),
            jnp.argmin(jnp.where(viol_exit, exit_margin(alpha_b), jnp.inf)),
        )
        # an event at the step's start is handled at once. A crossing that needs a decision is
        # reached on the step's dense output: with no crossing before it, the frozen dense output
        # is the flow there, as accurate as the step whose error estimate passed. A sliding exit
        # or a user event is reached by re-taking the step to it.
        immediate = (found_kind > 0) & (tau <= ta + time_tol)
        retake = (found_kind > 0) & ~immediate
        cut_here = retake & (found_kind == _CROSS)
        retake = retake & ~cut_here
        advance = keep & ~retake & ~immediate
        tb = jnp.where(cut_here, tau, tb)
        yc = jnp.where(cut_here, interp.evaluate(tb), yc)
        crossing = crossing & ~cut_here
        any_crossing = any_crossing & ~cut_here
        flipped = pattern ^ crossing

        # --- handle the event: which side of the surface, or onto it
        at_pending = advance & pending_here & ~cut_here
        handle = at_pending | immediate | cut_here
        kind = jnp.where(at_pending, state.pending_kind, jnp.where(immediate | cut_here, found_kind, 0))
        k = jnp.where(at_pending, state.pending_k, k_found)
        y_ev = jnp.where(advance, yc, ya)
        base = jnp.where(advance, flipped, pattern)
        is_cross, is_exit, is_user = kind == _CROSS, kind == _EXIT, kind == _USER

        def one_sided():
            # normal velocities a (p_k = 0) and b (p_k = 1) of surface k on the sliding set
            n_k = surface_normals(y_ev, k[None])[0]
            p = relaxed(base, sliding, 0.5)
            fa = geo.project(frozen_field(y_ev, p.at[k].set(0.0)))
            fb = geo.project(frozen_field(y_ev, p.at[k].set(1.0)))
            return n_k @ fa, n_k @ fb

        one = jnp.ones((), dtype)
        a, b = jax.lax.cond(is_cross, one_sided, lambda: (one, one))
        counts["extra_grad_evals"] += 2 * is_cross.astype(jnp.int32)
        attractive = (a > 0) & (b < 0)
        has_room = jnp.any(sliding < 0)
        candidate = sliding.at[jnp.argmax(sliding < 0)].set(k.astype(jnp.int32))
        # an onset or an exit changes the whole sliding set at once: the Filippov field of a
        # gradient flow is the minimal-norm element of the one-sided fields' convex hull
        # (`filippov_set`), which decides every surface of the set together. An exiting surface
        # leaves to the side its weight reached; the others are decided again without it.
        onset = is_cross & attractive & has_room
        leaving = sliding.at[k].set(-1)
        exit_base = base.at[sliding[k]].set(alpha_b[k] >= 0.5)
        cand = jnp.where(onset, candidate, jnp.where(is_exit, leaving, sliding))
        cand_base = jnp.where(is_exit, exit_base, base)
        decide = onset | (is_exit & jnp.any(leaving >= 0))
        decided_pattern, decided_sliding = jax.lax.cond(
            decide, lambda: filippov_set(y_ev, cand_base, cand), lambda: (cand_base, cand)
        )
        counts["extra_grad_evals"] += (1 + (M if switching.jump is None else 1)) * decide.astype(jnp.int32)
        slide = onset & jnp.any(decided_sliding == k)
        up = jnp.where((a > 0) & (b > 0), True, jnp.where((a < 0) & (b < 0), False, ~base[k]))
        # a crossing at the step's start that keeps its side is a grazing contact: the state lies
        # on the other side while the field points back; it takes the side where it lies
        graze = immediate & is_cross & ~onset & (up == base[k])
        up = jnp.where(graze, s_a[k] > 0, up)
        new_pattern = jnp.where(is_cross & ~onset, base.at[k].set(up), base)
        new_pattern = jnp.where(onset | is_exit, decided_pattern, new_pattern)
        new_sliding = jnp.where(onset | is_exit, decided_sliding, sliding)
        left = jnp.sum((sliding >= 0) & ~jnp.isin(sliding, new_sliding))
        new_sliding = new_sliding[jnp.argsort(new_sliding < 0, stable=True)]  # compact (`_Geometry`)
        stepped_over = jnp.sum(advance & crossing)
        counts["num_crossings"] += (is_cross & ~slide & ~graze).astype(jnp.int32) + stepped_over
        counts["num_crossings_stepped_over"] += stepped_over
        counts["num_sliding_starts"] += slide.astype(jnp.int32)
        counts["num_sliding_exits"] += left.astype(jnp.int32)
        counts["sliding_overflow"] += (is_cross & attractive & ~has_room).astype(jnp.int32)
        counts["max_sliding"] = jnp.maximum(counts["max_sliding"], jnp.sum(new_sliding >= 0))

        # --- the step's outcome; a step cut at an exit or a user event counts as rejected and
        # is re-taken
        counts["num_accepted_steps"] += advance.astype(jnp.int32)
        counts["num_rejected_steps"] += (~advance).astype(jnp.int32)
        t_new = jnp.where(advance, tb, ta)
        y_new = jnp.where(advance, yc, ya)

        def dense_output(t):
            # the frozen dense output plus the first-order kink correction Σ_k Δp_k (t − τ_k)⁺ ∂F/∂p_k
            c = jnp.where(crossing, jnp.where(pattern, -1.0, 1.0) * jnp.maximum(t - tau_k, 0.0), 0.0)
            _, correction = jax.jvp(lambda q: piece_field(t, ya, (q, geo)), (piece[0],), (c,))
            return jnp.where(t >= tb, yc, interp.evaluate(t) + correction)

        def save_cond(c):
            i, _ = c
            return advance & (i < T) & (ts[jnp.minimum(i, T - 1)] <= tb)

        def save_body(c):
            i, saved = c
            rec = record(dense_output(ts[i]))
            return i + 1, jax.tree.map(lambda buf, r: buf.at[i].set(r), saved, rec)

        save_index, saved = jax.lax.while_loop(save_cond, save_body, (state.save_index, state.saved))

        # the kink is no error of the smooth piece: the step proposed before the cut is kept
        dt_next = jnp.where(at_pending, jnp.maximum(dt_next, state.pending_dt), dt_next)
        blew_up = advance & (~jnp.all(jnp.isfinite(yc)) | (jnp.max(jnp.abs(yc)) > threshold))
        collapsed = ~handle & ~retake & (dt_next < dtmin)
        reached_end = advance & (tb >= t1) & ~is_user
        out_of_steps = counts["num_steps"] >= max_steps
        advanced = jnp.where(advance, jnp.clip((tb - ta) / jnp.maximum(dt_smooth, dtmin), 0.0, 1.0), 0.0)
        progress = state.progress + (advanced - state.progress) / _STALL_WINDOW
        stalled = (progress < _STALL_PROGRESS) & (counts["num_steps"] > _STALL_WINDOW) & ~reached_end
        code = jnp.where(reached_end, _status.SUCCESS, _status.MAX_STEPS)
        code = jnp.where(stalled, _status.STALLED, code)
        code = jnp.where(is_user, _status.EVENT, code)
        code = jnp.where(blew_up | collapsed, _status.NONFINITE, code)
        # a rejected step keeps the first-same-as-last evaluation of the step's start; a step
        # over kinks starts the next one from the field of the new pattern
        solver_state = jax.tree.map(
            lambda new, old: jnp.where(advance, new, old),
            jax.lax.cond(any_crossing, lambda: restarted(solver_state, f_new), lambda: solver_state),
            state.solver_state,
        )
        return _State(
            t=t_new,
            y=y_new,
            t_next=jnp.where(retake, tau, jnp.minimum(t_new + dt_next, t1)),
            controller_state=cstate,
            solver_state=solver_state,
            made_jump=(handle & ~is_user) | (~advance & state.made_jump),
            geometry=geo,
            pattern=new_pattern,
            sliding=new_sliding,
            pending_kind=jnp.where(retake, found_kind, 0).astype(jnp.int32),
            pending_k=jnp.where(retake, k_found, 0).astype(jnp.int32),
            pending_t=jnp.where(retake, tau, jnp.inf),
            pending_dt=jnp.where(retake, dt_next, 0.0),
            save_index=save_index,
            saved=saved,
            counts={k: v.astype(jnp.int32) for k, v in counts.items()},
            progress=progress,
            code=code.astype(jnp.int32),
            done=reached_end | is_user | blew_up | collapsed | out_of_steps | stalled,
        )

    meter = progress_meter(progress)

    def step_with_progress(carry):
        state, meter_state = carry
        state = step(state)
        return state, meter.step(meter_state, (state.t - t0) / (t1 - t0))

    final, meter_state = jax.lax.while_loop(
        lambda c: ~c[0].done, step_with_progress, (state0, meter.init())
    )
    meter.close(meter_state)
    reached = jnp.arange(T) < final.save_index
    counts = final.counts
    per_step, at_start = grad_evals_per_step(solver)
    fired = final.code == _status.EVENT
    return Trajectory(
        ts=jnp.where(reached, ts, jnp.nan),
        params=final.saved["params"],
        loss=final.saved["loss"],
        observables=final.saved["observables"],
        status_code=final.code,
        t_final=final.t,
        t_event=jnp.where(fired, final.t, jnp.nan),
        final_params=unravel(final.y),
        num_steps=counts["num_steps"],
        num_accepted_steps=counts["num_accepted_steps"],
        num_rejected_steps=counts["num_rejected_steps"],
        num_grad_evals=counts["num_steps"] * per_step + at_start + counts["extra_grad_evals"],
        stats={k: counts[k] for k in _COUNTS[3:]} | {"sliding_final": jnp.sum(final.sliding >= 0)},
    )

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
   error estimate vouches for, and its kinks are located and tested again there. A crossing
   that needs a decision — its new side's field points back to the surface (a sliding onset),
   or a sliding weight leaves [0, 1] with it (the weights jump where another surface is
   crossed) — ends the step *at* it, the crossings before it stepped over: the largest number
   of them that needs no decision is found by bisection (`events.before_decision`). When the
   shortened end would come before the first crossing, where the first crossing itself needs a
   decision, and for a crossing before a user event, the crossing is handled exactly: the step
   ends at the first crossing (on the dense output, which with no crossing before it is the
   frozen piece's flow), the side is decided there, and the step size chosen from the smooth
   piece is kept (the controller is not punished for the kink). Crossings arrive at a slowly
   varying rate, so the next step is also sized to hold about ¾ of `max_crossings` of them: a
   step split for a full buffer would locate its kinks twice. The kinks of a step with few
   crossings are computed in fewer slots (32, 64 or all B: `crossings.slot_tiers`), since every
   slot costs a jump whether it is used or not.

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
   1 (to s_k > 0); that time is located like a crossing, and the surface that leaves is the one
   whose weight is at its bound there.

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

**Layout.** One module per part: `surfaces` (`Switching`, the closed forms of two-layer nets),
`context` (the problem context: objective, switching structure, solver, tolerances),
`crossings` (locating crossings, the kink correction and its error), `sliding` (the Filippov
geometry, onsets and exits, the minimal-norm set decision), `events` (events located on the
dense output), `step_size` (step-size decisions, the progress guard), `saving` (the records at
the save times), `stepper` (`init` / `step` / `done` / `result`, and `integrate`).

`integrate` is pure JAX (`init`, one `lax.while_loop` of `step`, `result`), returns status codes,
and is `jax.vmap`-able; so are the stepper's functions. Under `jax.vmap` every `lax.cond` of a
step becomes a select that runs both branches, so the pool steps its lanes with `jax.lax.map`.
"""

from .context import Problem, problem
from .crossings import _DENSE_DEGREE, _chebyshev_fit, _earliest, _root
from .sliding import _box_least_squares
from .stepper import State, done, init, integrate, result, step
from .surfaces import Switching, TwoLayerKinks, activation_slopes, crossing_buffer, for_objective

__all__ = [
    "Problem",
    "State",
    "Switching",
    "TwoLayerKinks",
    "activation_slopes",
    "crossing_buffer",
    "done",
    "for_objective",
    "init",
    "integrate",
    "problem",
    "result",
    "step",
]

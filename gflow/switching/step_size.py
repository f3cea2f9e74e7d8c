"""Step-size decisions of the switching solve, and its progress guard.

The smooth piece's Runge–Kutta error and the kinks' error are controlled each with its own order
(a step size proposed for an error ∝ h^q scales like err^(−1/q)); the next step is the smaller
proposal. A step good for the smooth piece but not for its kinks (or holding more crossings than
the buffer) is shortened on its own dense output rather than rejected; one whose shortened end
would come before its first crossing is cut at that crossing and keeps the smooth piece's step
size (the controller is not punished for the kink). Crossings arrive at a slowly varying rate, so
the next step is also sized to hold about `_BUFFER_FILL` of `max_crossings` of them.

**Progress guard.** A solve whose accepted steps advance, on a moving average over
`_STALL_WINDOW` steps, less than `_STALL_PROGRESS` of what the smooth piece's controller proposes
ends with status "stalled" instead of grinding until `max_steps`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from . import crossings as _crossings

# the progress guard: a solve whose steps advance, on a moving average over about _STALL_WINDOW
# steps, less than _STALL_PROGRESS of the step the smooth piece proposes ends with status
# "stalled" (never before _STALL_WINDOW steps); steps shortened for kinks or cut at crossings
# advance a fair share, a loop of decisions at one point (or of rejections) none
_STALL_WINDOW = 128
_STALL_PROGRESS = 1e-3

# the share of the crossing buffer (`max_crossings`) a step is sized to fill
_BUFFER_FILL = 0.75


class Sizes(eqx.Module):
    """The step-size decisions after a step's error tests."""

    keep: jax.Array  # the step (or its shortened or cut version) is kept
    fall_back: jax.Array  # cut at its first crossing (the exact path) with the smooth step size
    dt_next: jax.Array  # the next step size
    dt_smooth: jax.Array  # the smooth piece's proposal
    controller_state: object
    kink_evals: int = eqx.field(static=True)  # ∇L evaluations of one kink correction


def kink_evals(ctx) -> int:
    """∇L evaluations of the jvps of one kink correction: a linearisation at t_a with 3 tangents
    (and B for the jumps unless `switching.jump` gives them, at the cost of about one), one jvp
    at t_b."""
    return 6 + (ctx.B if ctx.switching.jump is None else 1)


def decide(ctx, att, ov, counts):
    """The step's error tests, shortening it where its kinks fail, and the next step size:
    (the step with its kinks, `Sizes`, counts)."""
    ta = att.ta
    keep_smooth, smooth_a, smooth_b, _, cstate, _ = att.controller.adapt_step_size(
        ta, ov.tb, att.ya, ov.yc, att.piece, att.y_err, ctx.solver.error_order(ctx.term), att.controller_state
    )
    dt_smooth = smooth_b - smooth_a
    # a step good for the smooth piece but not for its kinks (or with more crossings than
    # the buffer holds) is *shortened*, not rejected: it ends at the kinks' proposal (or at
    # the split) on the dense output, whose error the passed estimate bounds, and its kinks
    # are re-located and re-tested there; a step whose shortened end would come before the
    # first crossing falls back to the exact path below instead
    t_short = jnp.minimum(ta + ov.dt_kinks, ov.found.t_split)
    shorten = (
        ov.any_crossing & keep_smooth & (~ov.keep_kinks | jnp.isfinite(ov.found.t_split))
        & (t_short > jnp.min(ov.found.tau_frozen)) & (t_short < ov.tb)
    )
    ov = jax.lax.cond(shorten, lambda: _crossings.over(ctx, att, t_short, att.interp.evaluate(t_short), tiered=False),
                      lambda: ov)
    counts["num_steps_shortened"] += shorten.astype(jnp.int32)
    evals = kink_evals(ctx)
    counts["extra_grad_evals"] += evals * (ov.any_crossing.astype(jnp.int32) + shorten.astype(jnp.int32))
    keep = keep_smooth & ov.keep_kinks
    # a step good for the smooth piece but not for the kinks, even shortened, is cut at its
    # first crossing (the exact path) and the smooth piece's step size kept, unless a step
    # shorter than the smooth one but past that crossing is predicted to pass on the kinks'
    # error
    fall_back = ov.any_crossing & keep_smooth & ~ov.keep_kinks & (ta + ov.dt_kinks <= jnp.min(ov.found.tau_frozen))
    keep = keep | fall_back
    dt_next = jnp.where(fall_back, dt_smooth, jnp.minimum(dt_smooth, ov.dt_kinks))
    # too many crossings for the buffer: retry with the step split before the (B+1)-th
    split = jnp.isfinite(ov.found.t_split)
    keep = keep & ~split
    dt_next = jnp.where(split, jnp.minimum(dt_next, ov.found.t_split - ta), dt_next)
    # crossings arrive at a rate that changes slowly: the next step is sized to hold about
    # _BUFFER_FILL · B of them, so that it is rarely shortened (its kinks located twice)
    n_crossing = jnp.sum(ov.crossing)
    dt_next = jnp.where(
        n_crossing > 0, jnp.minimum(dt_next, (ov.tb - ta) * _BUFFER_FILL * ctx.B / n_crossing), dt_next
    )
    return ov, Sizes(keep, fall_back, dt_next, dt_smooth, cstate, evals), counts


def progress(last, advance, ta, tb, dt_smooth, dtmin):
    """The moving average of each step's advance over the smooth piece's proposal (0 for a
    step not taken)."""
    advanced = jnp.where(advance, jnp.clip((tb - ta) / jnp.maximum(dt_smooth, dtmin), 0.0, 1.0), 0.0)
    return last + (advanced - last) / _STALL_WINDOW


def stalled(progress, num_steps):
    """The progress guard: too little advance over the last `_STALL_WINDOW` steps."""
    return (progress < _STALL_PROGRESS) & (num_steps > _STALL_WINDOW)

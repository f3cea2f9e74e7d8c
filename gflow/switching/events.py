"""Events that need a decision, located on a step's dense output: sliding exits (a Filippov
weight α_k reaching 0 or 1), the user's event, and crossings that cannot be stepped over (a
crossing whose new side's field points back to the surface, and any crossing before another
event, since the frozen dense output is the flow only up to the first crossing).

An event at the step's start is handled at once. A crossing that needs a decision is reached on
the step's dense output; a sliding exit or a user event by re-taking the step to it.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from . import sliding as _sliding
from .crossings import _root
from .sliding import _CROSS, _EXIT, _USER


class Found(eqx.Module):
    """The event a step ends on, and what becomes of the step."""

    tau: jax.Array  # its time (inf: none)
    kind: jax.Array  # 0 none, _CROSS, _EXIT, _USER
    k: jax.Array  # its surface (crossing) or sliding slot (exit)
    immediate: jax.Array  # at the step's start: handled at once
    retake: jax.Array  # the step is re-taken to end at it
    cut_here: jax.Array  # the step ends at a crossing on its dense output
    advance: jax.Array  # the step is kept
    alpha_b: jax.Array  # the Filippov weights at the step's end


def _locate(active, fn, ta, tb, time_tol):
    t_root, evals = jax.lax.cond(active, lambda: _root(fn, ta, tb, time_tol), lambda: (tb, jnp.asarray(0)))
    return jnp.where(active, t_root, jnp.inf), evals


def locate(ctx, att, ov, sizes, stuck, counts):
    """The first event of the step that needs a decision; returns (`Found`, the step with its
    end moved to a crossing cut on the dense output, counts)."""
    ta, pattern, sliding, geo = att.ta, att.pattern, att.sliding, att.piece[1]
    keep, fall_back = sizes.keep, sizes.fall_back
    flipped = pattern ^ ov.crossing
    # a step cut at its first crossing checks its end without the kinks, as before a cut
    y_end = jnp.where(fall_back, ov.yb, ov.yc)
    p_end = jnp.where(fall_back, pattern, flipped)
    any_sliding = jnp.any(sliding >= 0)
    alpha_b = jax.lax.cond(
        keep & any_sliding,
        lambda: _sliding.alphas(ctx, y_end, p_end, sliding, geo),
        lambda: jnp.full(ctx.M, 0.5, ctx.dtype),
    )
    counts["extra_grad_evals"] += 2 * (keep & any_sliding).astype(jnp.int32)

    search = keep & ~att.pending_here
    viol_exit = search & (sliding >= 0) & (_sliding.exit_margin(alpha_b) < 0)

    def exit_fn(t):
        m = _sliding.exit_margin(_sliding.alphas(ctx, att.interp.evaluate(t), pattern, sliding, geo))
        return jnp.min(jnp.where(viol_exit, m, jnp.inf))

    tau_exit, evals = _locate(jnp.any(viol_exit), exit_fn, ta, ov.tb, att.time_tol)
    counts["extra_grad_evals"] += 2 * evals
    # the surface that exits is the one whose weight reaches its bound at τ_exit, not the one
    # furthest past it at the step's end: on issue 17's n1000 case a weight at 1.5e-14 (falling
    # at 57 per unit time) set τ_exit at the step's start while another surface, past its bound
    # only at the end, was made to exit; it slid again at once, and the two events alternated
    # at t = 0.1227 until the progress guard ended the solve
    # (with no exit the weights are not used: kind is never _EXIT then)
    alpha_exit = jax.lax.cond(
        jnp.isfinite(tau_exit),
        lambda: _sliding.alphas(ctx, att.interp.evaluate(tau_exit), pattern, sliding, geo),
        lambda: alpha_b,
    )
    exit_k = jnp.argmin(jnp.where(viol_exit, _sliding.exit_margin(alpha_exit), jnp.inf))
    counts["extra_grad_evals"] += 2 * jnp.isfinite(tau_exit).astype(jnp.int32)
    tau_user = jnp.asarray(jnp.inf, ctx.dtype)
    if ctx.event is not None:
        ua, ub = ctx.user_value(att.ya), ctx.user_value(y_end)
        fires = search & ((ub <= 0) if ctx.event_is_bool else ((ua > 0) != (ub > 0)))
        sign = 1.0 if ctx.event_is_bool else jnp.where(ua > 0, 1.0, -1.0)
        tau_user, _ = _locate(fires, lambda t: sign * ctx.user_value(att.interp.evaluate(t)), ta, ov.tb,
                              att.time_tol)
    # the dense output is exact up to the first crossing only: cut there before other events
    other = jnp.isfinite(tau_exit) | jnp.isfinite(tau_user)
    # where a crossing needs a decision the step is cut at its first crossing, where the
    # frozen dense output is still the flow
    cut = keep & (jnp.any(stuck) | (ov.any_crossing & other) | fall_back)
    tau_cross = jnp.where(cut, jnp.min(ov.found.tau_frozen), jnp.inf)
    tau = jnp.minimum(jnp.minimum(tau_cross, tau_exit), tau_user)
    kind = jnp.where(
        jnp.isinf(tau),
        0,
        jnp.where(tau_cross <= tau, _CROSS, jnp.where(tau_exit <= tau, _EXIT, _USER)),
    )
    k = jnp.where(kind == _CROSS, jnp.argmin(ov.found.tau_frozen), exit_k)
    # an event at the step's start is handled at once. A crossing that needs a decision is
    # reached on the step's dense output: with no crossing before it, the frozen dense output
    # is the flow there, as accurate as the step whose error estimate passed. A sliding exit
    # or a user event is reached by re-taking the step to it.
    immediate = (kind > 0) & (tau <= ta + att.time_tol)
    retake = (kind > 0) & ~immediate
    cut_here = retake & (kind == _CROSS)
    retake = retake & ~cut_here
    advance = keep & ~retake & ~immediate
    tb = jnp.where(cut_here, tau, ov.tb)
    ov = dataclasses.replace(
        ov,
        tb=tb,
        yc=jnp.where(cut_here, att.interp.evaluate(tb), ov.yc),
        crossing=ov.crossing & ~cut_here,
        any_crossing=ov.any_crossing & ~cut_here,
    )
    return Found(tau, kind, k, immediate, retake, cut_here, advance, alpha_b), ov, counts

"""Events that need a decision, located on a step's dense output: sliding exits (a Filippov
weight α_k reaching 0 or 1), the user's event, and crossings that cannot be stepped over (a
crossing whose new side's field points back to the surface, or after which a sliding weight is
past its bound).

An event at the step's start is handled at once. A step whose crossings include one that needs
a decision ends at it, those before it stepped over (`before_decision`); where it is the first,
the step ends there on its dense output, the flow up to the first crossing. A sliding exit or a
user event is reached by re-taking the step to it.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from . import crossings as _crossings
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


def end_weights(ctx, att, ov, sizes):
    """The Filippov weights at the step's end (0.5 in empty slots; all 0.5 where nothing slides
    or the step is not kept) and how many ∇L they cost. A step cut at its first crossing
    (`fall_back`) checks its frozen end, as before a cut."""
    y_end = jnp.where(sizes.fall_back, ov.yb, ov.yc)
    p_end = jnp.where(sizes.fall_back, att.pattern, att.pattern ^ ov.crossing)
    active = sizes.keep & jnp.any(att.sliding >= 0)
    return _weights(ctx, att, y_end, p_end, active), 2 * active.astype(jnp.int32)


def _weights(ctx, att, y, pattern, active):
    """The Filippov weights of the step's sliding set at y where `active`, else 0.5."""
    return jax.lax.cond(
        active,
        lambda: _sliding.alphas(ctx, y, pattern, att.sliding, att.piece[1]),
        lambda: jnp.full(ctx.M, 0.5, ctx.dtype),
    )


def _exits(att, alpha, search):
    """The sliding slots whose weight at the step's end is past a bound."""
    return search & (att.sliding >= 0) & (_sliding.exit_margin(alpha) < 0)


def before_decision(ctx, att, ov, f_new, stuck, alpha_b, sizes, counts):
    """A step whose crossings include one that needs a decision ends *at* that crossing, the
    crossings before it stepped over, rather than at the step's first crossing. A crossing needs
    a decision where it may begin sliding (`stuck`), or where a sliding weight leaves [0, 1]
    with it: the weights jump where another surface is crossed, and an exit the crossing causes
    shows only at the step's end, past all of its crossings.

    With the step's crossings in time order τ_(1) ≤ … ≤ τ_(n), candidate m ends the step at
    τ_(m+1), the first m crossings stepped over and the (m+1)-th left to decide there (m = n:
    halfway between τ_(n) and t_b). The largest m whose shortened step needs no other decision
    (its kinks' error passes, none of its m crossings is stuck, no weight past a bound just
    before τ_(m+1)) is found by bisection, m = n (or the last before the first stuck crossing)
    tried first; each try costs the kinks of the shortened step, one field and the weights at
    its end. Cutting at the first crossing instead advanced one crossing a step: on the stress
    corpus's big-n500-h200 case 960 of 1,599 steps, ~22 per sliding exit, with a median 95
    crossings in the step.

    Returns the step with its kinks, f_new, stuck and the weights at its end (unchanged where
    not shortened), the crossing to decide at its end (K: none) and counts."""
    K, B = ctx.K, ctx.B
    search = sizes.keep & ~att.pending_here
    need = (
        sizes.keep & ~sizes.fall_back & ~att.pending_here & ov.any_crossing
        & (jnp.any(stuck) | jnp.any(_exits(att, alpha_b, search)))
    )
    tau = jnp.where(ov.crossing, ov.found.tau, jnp.inf)
    n = jnp.sum(ov.crossing)
    tau_stuck = jnp.min(jnp.where(stuck, tau, jnp.inf))
    n_max = jnp.where(jnp.any(stuck), jnp.sum(tau < tau_stuck), n)
    any_sliding = jnp.any(att.sliding >= 0)
    evals = sizes.kink_evals + 1 + 2 * any_sliding.astype(jnp.int32)
    none = jnp.asarray(K, jnp.int32)

    def bisect():
        # the crossings in time order (a step holding more than B of them is split, never kept)
        ordered, index = _crossings._earliest(tau, min(B, K), min(K, 8 * (B + 1)))

        def shortened(m):
            last = m >= n
            after = index[jnp.minimum(m, B - 1)]
            # a crossing pushed out of the step by another's jump (`moved`) has its time clipped
            # to the step's end: it is not at τ_(m+1), so the step ends halfway there, undecided
            # (deciding it at τ_(m+1) moved the state onto its far side: 5e-6 on digits at 1e-8)
            halfway = last | ov.found.moved[jnp.minimum(after, K - 1)]
            next_k = jnp.where(halfway, none, after).astype(jnp.int32)
            t_next = jnp.where(last, ov.tb, ordered[jnp.minimum(m, B - 1)])
            t_m = jnp.where(halfway, 0.5 * (ordered[m - 1] + t_next), t_next)
            # the (m+1)-th crossing lies at the shortened end: not crossed in it, decided there
            att_m = dataclasses.replace(att, on_pending=att.on_pending | (jnp.arange(K) == next_k))
            ov_m = _crossings.over(ctx, att_m, t_m, att.interp.evaluate(t_m), tiered=False)
            f_m, stuck_m = _crossings.new_side(ctx, att_m, ov_m)
            alpha_m = _weights(ctx, att, ov_m.yc, att.pattern ^ ov_m.crossing, any_sliding)
            good = ov_m.keep_kinks & ov_m.any_crossing & ~jnp.any(stuck_m) & ~jnp.any(_exits(att, alpha_m, search))
            return good, (ov_m, f_m, stuck_m, alpha_m, next_k)

        def cond(c):
            lo, hi, tries, _ = c
            return hi - lo > 1

        def body(c):
            lo, hi, tries, best = c
            # m = n_max first: a single try where the step holds one decision
            m = jnp.where(tries == 0, hi - 1, (lo + hi) // 2)
            good, found = shortened(m)
            best = jax.tree.map(lambda new, old: jnp.where(good, new, old), found, best)
            return jnp.where(good, m, lo), jnp.where(good, hi, m), tries + 1, best

        start = (ov, f_new, stuck, alpha_b, none)
        lo, _, tries, best = jax.lax.while_loop(cond, body, (jnp.asarray(0, n.dtype), n_max + 1, jnp.asarray(0), start))
        return lo > 0, tries, best

    resplit, tries, (ov, f_new, stuck, alpha_b, decide_k) = jax.lax.cond(
        need & (n_max > 0), bisect, lambda: (jnp.asarray(False), jnp.asarray(0), (ov, f_new, stuck, alpha_b, none))
    )
    counts["num_steps_shortened"] += resplit.astype(jnp.int32)
    counts["extra_grad_evals"] += evals * tries
    return ov, f_new, stuck, alpha_b, decide_k, counts


def locate(ctx, att, ov, sizes, stuck, alpha_b, decide_k, counts):
    """The first event of the step that needs a decision; returns (`Found`, the step with its
    end moved to a crossing cut on the dense output, counts). `alpha_b`: the weights at the
    step's end (`end_weights`); `decide_k`: a crossing at the step's end to decide there
    (`before_decision`; K: none)."""
    ta, pattern, sliding, geo = att.ta, att.pattern, att.sliding, att.piece[1]
    keep, fall_back = sizes.keep, sizes.fall_back
    y_end = jnp.where(fall_back, ov.yb, ov.yc)
    search = keep & ~att.pending_here
    viol_exit = _exits(att, alpha_b, search)

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
    # a crossing left at the shortened step's end (`before_decision`) is decided there, unless
    # the user's event comes first
    at_decision = keep & (decide_k < ctx.K) & ~jnp.isfinite(tau_user)
    kind = jnp.where(at_decision, _CROSS, kind)
    k = jnp.where(at_decision, decide_k, k)
    tau = jnp.where(at_decision, ov.tb, tau)
    immediate = (kind > 0) & (tau <= ta + att.time_tol) & ~at_decision
    retake = (kind > 0) & ~immediate
    cut_here = retake & (kind == _CROSS)
    retake = retake & ~cut_here
    advance = keep & ~retake & ~immediate
    cut_first = cut_here & ~at_decision  # at the first crossing, on the frozen dense output
    tb = jnp.where(cut_first, tau, ov.tb)
    ov = dataclasses.replace(
        ov,
        tb=tb,
        yc=jnp.where(cut_first, att.interp.evaluate(tb), ov.yc),
        crossing=ov.crossing & ~cut_first,
        any_crossing=ov.any_crossing & ~cut_first,
    )
    return Found(tau, kind, k, immediate, retake, cut_here, advance, alpha_b), ov, counts

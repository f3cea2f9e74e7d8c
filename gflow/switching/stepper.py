"""The switching solve as a stepper, in the spirit of optax's init/update pairs:

    state = init(ctx, params0, t0, t1, ts)      # one lane's start
    state = step(ctx, state)                    # one attempted step, its saves included
    done(state)                                 # reached t1, an event, a failure or max_steps
    traj = result(ctx, state)                   # the lane's `gflow.Trajectory`

`ctx` is the lane-independent `Problem` (`context.problem`); everything that depends on a lane
(the point, the time interval, the save times, the scale-aware atol) is in the state. All four
are pure and branch on no traced value, so they `jax.vmap` over lanes: a pool can step many
lanes at once and refill a lane that is done with the next point. `integrate` is
`init` + `lax.while_loop(not done, step)` + `result`.
"""

import dataclasses

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .. import status as _status
from .._common import _blowup_threshold, _dtmin, progress_meter, scale_aware_atol
from ..trajectory import STATS, Trajectory, assemble
from . import crossings as _crossings
from . import events as _events
from . import saving as _saving
from . import sliding as _sliding
from . import step_size as _step_size
from .context import problem

# the stepper's counters: the step counts, then the switching counts of `gflow.trajectory.STATS`
_COUNTS = ("num_steps", "num_accepted_steps", "num_rejected_steps", *STATS[:8])


class State(eqx.Module):
    """One lane of the switching solve."""

    t: jax.Array
    y: jax.Array  # the flat state ravel(θ)
    t_next: jax.Array
    controller_state: tuple
    solver_state: object
    made_jump: jax.Array
    geometry: _sliding._Geometry  # of the sliding set at the step's start (stale while nothing slides)
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
    t0: jax.Array
    t1: jax.Array
    ts: jax.Array  # the save times
    atol: jax.Array


def _controller(ctx, state) -> diffrax.PIDController:
    return diffrax.PIDController(rtol=ctx.rtol, atol=state.atol)


def _time_tol(state):
    # times closer than this are one (and no step is shorter: `gflow._common._dtmin`)
    return 64 * jnp.finfo(state.t0.dtype).eps * jnp.maximum(jnp.abs(state.t0), jnp.abs(state.t1))


def init(ctx, params0, t0, t1, ts) -> State:
    """The state of a lane starting at θ(t0) = params0, saving at `ts` (1-D, in [t0, t1])."""
    y0, _ = ravel_pytree(params0)
    t0, t1, ts = (jnp.asarray(x, ctx.dtype) for x in (t0, t1, ts))
    atol = scale_aware_atol(params0, ctx.rtol) if ctx.atol is None else jnp.asarray(ctx.atol, ctx.dtype)
    pattern0 = ctx.surfaces(y0) > 0
    sliding0 = -jnp.ones(ctx.M, dtype=jnp.int32)
    geo0 = _sliding.empty_geometry(ctx)
    piece0 = (ctx.relaxed(pattern0, sliding0, 0.5), geo0)
    term, solver = ctx.term, ctx.solver
    controller = diffrax.PIDController(rtol=ctx.rtol, atol=atol)
    t_next0, cstate0 = controller.init(term, t0, t1, y0, None, piece0, solver.func, solver.error_order(term))
    zero = jnp.asarray(0, jnp.int32)
    return State(
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
        pending_t=jnp.asarray(jnp.inf, ctx.dtype),
        pending_dt=jnp.zeros((), ctx.dtype),
        save_index=zero,
        saved=_saving.buffers(ctx, y0, ts.shape[0]),
        counts={k: zero for k in _COUNTS},
        progress=jnp.ones((), ctx.dtype),
        code=jnp.asarray(_status.SUCCESS, jnp.int32),
        done=jnp.asarray(False),
        t0=t0,
        t1=t1,
        ts=ts,
        atol=atol,
    )


def _attempt(ctx, state) -> _crossings.Attempt:
    """One Runge–Kutta step of the frozen piece from the state, its start projected onto the
    sliding surfaces."""
    ta = state.t
    tb = jnp.minimum(state.t_next, state.t1)
    pattern, sliding = state.pattern, state.sliding
    geo = _sliding.geometry(ctx, state.y, sliding, state.geometry)
    ya = jax.lax.cond(
        jnp.any(sliding >= 0), lambda: _sliding.onto_surfaces(ctx, state.y, sliding, geo), lambda: state.y
    )
    piece = (ctx.relaxed(pattern, sliding, 0.5), geo)
    yb, y_err, dense, solver_state, _ = ctx.solver.step(
        ctx.term, ta, tb, ya, piece, state.solver_state, state.made_jump
    )
    pending_here = (state.pending_kind > 0) & (tb == state.pending_t)
    nonsliding = jnp.ones(ctx.K, bool).at[jnp.where(sliding >= 0, sliding, ctx.K)].set(False, mode="drop")
    on_pending = pending_here & (state.pending_kind == _sliding._CROSS) & (jnp.arange(ctx.K) == state.pending_k)
    attempt = _crossings.Attempt(
        ta=ta,
        ya=ya,
        s_a=ctx.surfaces(ya),
        y_err=y_err,
        interp=ctx.solver.interpolation_cls(t0=ta, t1=tb, **dense),
        piece=piece,
        pattern=pattern,
        sliding=sliding,
        nonsliding=nonsliding,
        on_pending=on_pending,
        pending_here=pending_here,
        solver_state=solver_state,
        controller=_controller(ctx, state),
        controller_state=state.controller_state,
        time_tol=_time_tol(state),
    )
    return attempt, _crossings.over(ctx, attempt, tb, yb)


def step(ctx, state: State) -> State:
    """One attempted step: Runge–Kutta on the frozen piece, the crossings in it stepped over or
    cut at, the event it ends on decided, its saves recorded, the next step size."""
    counts = dict(state.counts)
    counts["num_steps"] += 1
    att, ov = _attempt(ctx, state)
    ov, sizes, counts = _step_size.decide(ctx, att, ov, counts)
    f_new, stuck = jax.lax.cond(
        sizes.keep & ov.any_crossing,
        lambda: _crossings.new_side(ctx, att, ov),
        lambda: (jnp.zeros(ctx.size, ctx.dtype), jnp.zeros(ctx.K, bool)),
    )
    counts["extra_grad_evals"] += (sizes.keep & ov.any_crossing).astype(jnp.int32)
    alpha_b, evals = _events.end_weights(ctx, att, ov, sizes)
    counts["extra_grad_evals"] += evals
    ov, f_new, stuck, alpha_b, decide_k, counts = _events.before_decision(
        ctx, att, ov, f_new, stuck, alpha_b, sizes, counts
    )
    found, ov, counts = _events.locate(ctx, att, ov, sizes, stuck, alpha_b, decide_k, counts)
    pattern, sliding, handle, is_user, at_pending, crossed, counts = _sliding.decide(ctx, state, att, ov, found, counts)
    advance = found.advance
    counts["num_accepted_steps"] += advance.astype(jnp.int32)
    counts["num_rejected_steps"] += (~advance).astype(jnp.int32)
    save_index, saved = _saving.save(ctx, state, att, ov, advance)
    # the kink is no error of the smooth piece: the step proposed before the cut is kept
    dt_next = jnp.where(at_pending, jnp.maximum(sizes.dt_next, state.pending_dt), sizes.dt_next)
    # a rejected step keeps the first-same-as-last evaluation of the step's start; a step
    # over kinks starts the next one from the field of the new pattern
    fsal = isinstance(state.solver_state, tuple)  # diffrax keeps (first_step, f0)
    restarted = lambda: (jnp.asarray(False), f_new) if fsal else att.solver_state
    solver_state = jax.tree.map(
        lambda new, old: jnp.where(advance, new, old),
        jax.lax.cond(ov.any_crossing, restarted, lambda: att.solver_state),
        state.solver_state,
    )
    t_new = jnp.where(advance, ov.tb, state.t)
    code, done, progress = _outcome(ctx, state, ov, found, handle, is_user, dt_next, sizes.dt_smooth, counts)
    return dataclasses.replace(
        state,
        t=t_new,
        y=_crossings.onto_side(ctx, jnp.where(advance, ov.yc, att.ya), pattern, crossed),
        t_next=jnp.where(found.retake, found.tau, jnp.minimum(t_new + dt_next, state.t1)),
        controller_state=sizes.controller_state,
        solver_state=solver_state,
        made_jump=(handle & ~is_user) | (~advance & state.made_jump),
        geometry=att.piece[1],
        pattern=pattern,
        sliding=sliding,
        pending_kind=jnp.where(found.retake, found.kind, 0).astype(jnp.int32),
        pending_k=jnp.where(found.retake, found.k, 0).astype(jnp.int32),
        pending_t=jnp.where(found.retake, found.tau, jnp.inf),
        pending_dt=jnp.where(found.retake, dt_next, 0.0),
        save_index=save_index,
        saved=saved,
        counts={k: v.astype(jnp.int32) for k, v in counts.items()},
        progress=progress,
        code=code.astype(jnp.int32),
        done=done,
    )


def _outcome(ctx, state, ov, found, handle, is_user, dt_next, dt_smooth, counts):
    """The status after a step, whether the lane is done, and the progress guard's average."""
    advance, tb, yc = found.advance, ov.tb, ov.yc
    dtmin = _dtmin(state.t0, state.t1)
    blew_up = advance & (~jnp.all(jnp.isfinite(yc)) | (jnp.max(jnp.abs(yc)) > _blowup_threshold(ctx.dtype)))
    collapsed = ~handle & ~found.retake & (dt_next < dtmin)
    reached_end = advance & (tb >= state.t1) & ~is_user
    out_of_steps = counts["num_steps"] >= ctx.max_steps
    progress = _step_size.progress(state.progress, advance, state.t, tb, dt_smooth, dtmin)
    stalled = _step_size.stalled(progress, counts["num_steps"]) & ~reached_end
    code = _status.decide(reached=reached_end, stalled=stalled, fired=is_user, nonfinite=blew_up | collapsed)
    return code, reached_end | is_user | blew_up | collapsed | out_of_steps | stalled, progress


def done(state: State) -> jax.Array:
    """Whether the lane has ended (its status is final)."""
    return state.done


def result(ctx, state: State) -> Trajectory:
    """The lane's `gflow.Trajectory` (`gflow.trajectory.assemble`); `stats` as documented in
    `integrate`."""
    counts = state.counts
    return assemble(
        ts=state.ts,
        reached=jnp.arange(state.ts.shape[0]) < state.save_index,
        saved=state.saved,
        status_code=state.code,
        t_final=state.t,
        final_params=ctx.unravel(state.y),
        num_steps=counts["num_steps"],
        num_accepted_steps=counts["num_accepted_steps"],
        num_rejected_steps=counts["num_rejected_steps"],
        solver=ctx.solver,
        stats={k: counts[k] for k in _COUNTS[3:]} | {"sliding_final": jnp.sum(state.sliding >= 0)},
    )


def integrate(objective, switching, params0, args, t0, t1, ts, rtol, atol, *, max_steps, **settings):
    """Solve dθ/dt = −∇L(θ) across the switching surfaces of `switching` (see `_integrate`);
    `max_steps` is passed traced, so that another cap does not compile the solve again."""
    return _integrate(objective, switching, params0, args, t0, t1, ts, rtol, atol,
                      max_steps=jnp.asarray(max_steps, jnp.int32), **settings)


@eqx.filter_jit
def _integrate(
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
    """Solve dθ/dt = −∇L(θ) across the switching surfaces of `switching` (see `gflow.switching`).

    Arguments as `gflow.flow._solve`; returns a `gflow.Trajectory` whose `stats` hold
    num_crossings (all crossings), num_crossings_stepped_over (those of them crossed inside a
    step with the kink correction), num_sliding_starts (sliding intervals begun), num_sliding_exits,
    max_sliding (most surfaces sliding at once), sliding_overflow, extra_grad_evals (∇L
    evaluations for event decisions and exit checks, included in `num_grad_evals`),
    num_steps_shortened (steps ended early on their dense output for the kinks' error) and
    sliding_final (surfaces sliding at the end).
    """
    ctx = problem(
        objective, switching, params0, args, rtol, atol, solver=solver, observables=observables, event=event,
        event_is_bool=event_is_bool, max_steps=max_steps, save_params=save_params,
    )
    state0 = init(ctx, params0, t0, t1, ts)
    meter = progress_meter(progress)

    def step_with_progress(carry):
        state, meter_state = carry
        state = step(ctx, state)
        return state, meter.step(meter_state, (state.t - t0) / (t1 - t0))

    final, meter_state = jax.lax.while_loop(lambda c: ~done(c[0]), step_with_progress, (state0, meter.init()))
    meter.close(meter_state)
    return result(ctx, final)

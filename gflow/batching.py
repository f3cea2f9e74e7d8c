"""Continuous batching: many gradient flows dθ/dt = −∇L(θ) solved by a pool of lanes.

A `jax.vmap` of adaptive solves runs every lane until the slowest one is done (lockstep). Here a
pool of B lanes steps together in one `lax.while_loop`, each lane with its own time t, step size
dt, state θ, solver and PID-controller state; when a lane ends (t1 reached, event, max_steps,
blow-up) its result is written out and the next pending point is loaded into it, as LLM servers
batch requests. Every lane does useful work on every iteration except in the final drain, and no
cost estimate is needed.

The per-lane algorithm is the one `diffrax.diffeqsolve` runs inside `gflow.simulate`: the same
solver `.step`, the same `PIDController` (scale-aware atol, dtmin), the same clipping to t1, the
same saves on the solver's dense interpolation and the same event location
(`gflow.flow._BracketBisection`), so a point solved here agrees with `gflow.simulate` to
round-off. Decisions that only some lanes need (saving, locating an event, loading new points)
are scalar `lax.cond`/`lax.while_loop`s on "any lane needs it", so they cost nothing on
iterations where no lane needs them.

The lanes advance by ONE Runge–Kutta step of the solver on their stacked state, with the vector
of the lanes' step sizes as the control (`_LanesTerm`); only the step-size decisions are
per-lane (vmapped). When all points share the same `args` (one dataset, many init scales or
seeds), the lanes' products with the data become one large matrix product.

Kinked objectives (ReLU nets, hinge, abs: see `gflow.switching`) are solved by the same rule as
`gflow.simulate`: where it would run the switching solve, the pool runs the switching stepper
(`gflow.switching.stepper`: init / step / done / result) with the same refill
(`_stepper_pool`), so that every point takes the very steps `simulate` takes on it. Its lanes
step one after another (`jax.lax.map`), not vmapped (see `_stepper_pool`).
"""

from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from . import flow as _flow
from . import options as _options
from . import status as _status
from ._diffrax import WrapTerm, prevbefore
from .trajectory import Trajectory, assemble


class PoolStats(NamedTuple):
    """How well the lanes were used while solving one batch of points.

    - `iterations`: loop iterations of the pool (each is one attempted step of every lane).
    - `lanes`: pool width B.
    - `lane_steps`: attempted steps that belonged to a point (useful work).
    - `efficiency`: lockstep efficiency, `lane_steps / (lanes · iterations)` (1 = no lane idle;
      a plain `jax.vmap` has mean steps / max steps here).
    """

    iterations: int
    lanes: int
    lane_steps: int

    @property
    def efficiency(self) -> float:
        return self.lane_steps / max(1, self.lanes * self.iterations)


class _Lane(eqx.Module):
    idx: jax.Array  # index of the point in this lane; -1 when idle
    args: Any
    t: jax.Array
    tnext: jax.Array
    y: Any
    solver_state: Any
    controller_state: Any
    made_jump: jax.Array
    atol: jax.Array
    num_steps: jax.Array
    num_accepted: jax.Array
    num_rejected: jax.Array
    save_index: jax.Array
    saved: Any
    event_value: jax.Array


class _Out(eqx.Module):
    saved: Any
    status_code: jax.Array
    t_final: jax.Array
    t_event: jax.Array
    final_params: Any
    num_steps: jax.Array
    num_accepted: jax.Array
    num_rejected: jax.Array


def solve_batch(
    objective,
    params0,
    t1,
    *,
    args=None,
    shared_args=False,
    num_points=None,
    t0=0.0,
    saveat=None,
    solver="tsit5",
    rtol=1e-6,
    atol=None,
    observables=None,
    event=None,
    max_steps=100_000,
    save_params=False,
    switching=None,
    lanes=16,
) -> tuple[Trajectory, PoolStats]:
    """Solve the gradient flow for N points with a continuously refilled pool of `lanes` lanes.

    Same conventions as `gflow.simulate` (objective/observables/event called as `f(params)` or
    `f(params, args)`, scale-aware atol per point, status codes), except:

    - `params0`: the initial parameters of all points stacked along a leading axis N.
    - `args`: per-point data stacked along a leading axis N, or (with `shared_args=True`) one
      pytree shared by every point, which turns the lanes' products with it into one matmul.
    - `num_points`: solve only the first `num_points` ≤ N points (the rest is padding, so that
      batches of different sizes reuse one compiled program); the other rows come back NaN.
    - `lanes`: pool width B; results do not depend on it.
    - `save_params`: False by default (`gflow.simulate`: True): a batch stores N × T copies of
      θ, which for a sweep is most of its memory; pass True to keep them.
    - `switching`: as in `gflow.simulate`, by the same rule: where `simulate` would run the
      switching solve on a point, the pool runs the switching stepper
      (`gflow.switching.stepper`) on it, lane by lane, and takes the very same steps; else the
      plain Runge–Kutta + PID step. With `switching=None`, points whose switching solve ends
      "stalled" or "nonfinite" are solved again by the plain pool
      (`stats["switching_fallback"]` = 1, `stats["switching_reason"]` 5), as `simulate` does.
      `stats` has the keys `gflow.trajectory.STATS` on every row.

    Options are checked by `gflow.options` (as for `gflow.simulate`, on the first point).

    **Returns:** `(trajectory, stats)`: a `Trajectory` whose leaves have a leading axis N, and a
    `PoolStats` with the pool's lockstep efficiency.
    """
    _options.check_params(params0)
    leaves = jax.tree.leaves(params0)
    n = leaves[0].shape[0] if leaves[0].ndim else 0
    if n == 0 or any(x.ndim == 0 or x.shape[0] != n for x in leaves):
        raise ValueError("params0 must be stacked along a leading axis of the same size N ≥ 1")
    if args is not None and not shared_args:
        if any(jnp.ndim(x) == 0 or jnp.shape(x)[0] != n for x in jax.tree.leaves(args)):
            raise ValueError(
                f"args must be stacked along a leading axis of size N = {n} (one per point); "
                "pass shared_args=True if every point uses the same args"
            )
    num_points = n if num_points is None else num_points
    if not 0 <= num_points <= n:
        raise ValueError(f"num_points must lie in [0, {n}], got {num_points}")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, got {lanes!r}")
    one_params = jax.tree.map(lambda x: x[0], params0)
    one_args = args if (args is None or shared_args) else jax.tree.map(lambda x: x[0], args)
    options = _options.options_of(locals())
    prepared = _options.prepare(options, objective, one_params, one_args, t0, t1)
    shared = shared_args or args is None
    if prepared.switching is None:
        traj, counts = _pool(objective, params0, args, jnp.asarray(num_points, jnp.int32), *prepared.arrays(),
                             prepared.settings, lanes=min(lanes, n), shared_args=shared)
        reason = jnp.full_like(traj.status_code, prepared.reason)
        traj = eqx.tree_at(lambda t: t.stats, traj, {**traj.stats, "switching_reason": reason})
        return traj, PoolStats(int(counts[0]), min(lanes, n), int(counts[1]))
    from .switching.context import problem

    keywords = {k: v for k, v in prepared.settings.keywords().items() if k != "progress"}
    ctx = problem(objective, prepared.switching, one_params, one_args, prepared.rtol, prepared.atol, **keywords)
    t0_, t1_, ts = prepared.arrays()[:3]
    traj, counts = _stepper_pool(ctx, params0, args, jnp.asarray(num_points, jnp.int32), t0_, t1_, ts,
                                 lanes=min(lanes, n), shared_args=shared)
    ran = (jnp.arange(n) < num_points).astype(jnp.int32)
    traj = eqx.tree_at(lambda t: t.stats, traj, {**traj.stats, "switching": ran})
    stats = PoolStats(int(counts[0]), min(lanes, n), int(counts[1]))
    again = np.flatnonzero(_status.falls_back(traj.status_code))
    if prepared.automatic and again.size:
        traj = _plain_again(traj, again, objective, params0, args, prepared, shared)
    return traj, stats


def _plain_again(traj, rows, objective, params0, args, prepared, shared):
    """`traj` with `rows` solved again by the plain pool (their switching solve stalled or
    collapsed: `gflow.status.SWITCHING_FALLBACK`)."""
    take = lambda tree: jax.tree.map(lambda x: x[rows], tree)
    again, _ = _pool(objective, take(params0), args if shared else take(args),
                     jnp.asarray(rows.size, jnp.int32), *prepared.arrays(), prepared.settings,
                     lanes=min(rows.size, 16), shared_args=shared)
    stats = {**again.stats, "switching_fallback": jnp.ones_like(again.status_code),
             "switching_reason": jnp.full_like(again.status_code, _options.SWITCHING_FELL_BACK)}
    again = eqx.tree_at(lambda t: t.stats, again, stats)
    return jax.tree.map(lambda whole, part: whole.at[rows].set(part), traj, again)


@eqx.filter_jit
def _pool(objective, params0, args, num_points, t0, t1, ts, rtol, atol, settings, *, lanes, shared_args):
    solver, observables, event = settings.solver, settings.observables, settings.event
    event_is_bool, max_steps, save_params = settings.event_is_bool, settings.max_steps, settings.save_params
    dtype = t0.dtype
    n = jax.tree.leaves(params0)[0].shape[0]
    num_saves = ts.shape[0]
    call = _flow._call_args
    has_args = args is not None
    # diffeqsolve wraps the term for the direction of time, and so (WrapTerm not being an
    # ODETerm) its PID controller starts from dt0 = 0.01; wrap it the same way to take the
    # very same steps as `gflow.simulate`.
    terms = WrapTerm(
        diffrax.ODETerm(_flow.vector_field(objective, args if has_args else None)),
        jnp.asarray(1, jnp.int32),
    )
    error_order = solver.error_order(terms)
    dtmin = _flow._dtmin(t0, t1)
    threshold = _flow._blowup_threshold(dtype)
    t1_clip_floor = t1
    for _ in range(100):  # as diffeqsolve: keep the last step ≥ ~100 ULP for dense output
        t1_clip_floor = prevbefore(t1_clip_floor)
    tol = float(100 * np.finfo(dtype).eps)
    root_finder = _flow._BracketBisection(rtol=tol, atol=tol)
    axis = None if shared_args else 0

    def controller(lane_atol):
        return diffrax.PIDController(rtol=rtol, atol=lane_atol, dtmin=dtmin, force_dtmin=False)

    def record(y, a):
        return _flow.record(objective, observables, save_params, y, a if has_args else None)

    def event_value(y, a):
        if event is None:
            return jnp.zeros((), dtype)
        value = event(*call(y, a if has_args else None))
        return jnp.where(value, 1.0, -1.0).astype(dtype) if event_is_bool else value.astype(dtype)

    one_y = jax.tree.map(lambda x: x[0], params0)
    one_a = args if shared_args else jax.tree.map(lambda x: x[0], args)
    record_struct = jax.eval_shape(record, one_y, one_a)

    def nans(struct, lead):
        return jax.tree.map(lambda s: jnp.full(lead + s.shape, jnp.nan, s.dtype), struct)

    def load(idx, a):
        """A fresh lane for point `idx` (diffeqsolve's initialisation)."""
        y0 = jax.tree.map(lambda x: x[jnp.clip(idx, 0, n - 1)], params0)
        lane_atol = scale_aware_atol_or(atol, y0)
        ctrl = controller(lane_atol)
        tnext, cstate = ctrl.init(terms, t0, t1, y0, None, a, solver.func, error_order)
        tnext = jnp.minimum(tnext, t1)
        sstate = solver.init(terms, t0, tnext, y0, a)
        return _Lane(
            idx=idx,
            args=None if shared_args else a,  # shared data is not copied into every lane
            t=t0,
            tnext=tnext,
            y=y0,
            solver_state=sstate,
            controller_state=cstate,
            made_jump=jnp.asarray(False),
            atol=lane_atol,
            num_steps=jnp.asarray(0, jnp.int32),
            num_accepted=jnp.asarray(0, jnp.int32),
            num_rejected=jnp.asarray(0, jnp.int32),
            save_index=jnp.asarray(0, jnp.int32),
            saved=nans(record_struct, (num_saves,)),
            event_value=event_value(y0, a),
        )

    def scale_aware_atol_or(fixed, y0):
        return _flow.scale_aware_atol(y0, rtol) if fixed is None else fixed

    def lane_args(idx):
        if shared_args:
            return args
        return jax.tree.map(lambda x: x[jnp.clip(idx, 0, n - 1)], args)

    # All lanes advance in ONE solver step on the stacked state, each with its own step size
    # (a per-lane control). Vmapping `solver.step` instead would put the lane axis before the
    # Runge-Kutta stage axis, and every stage would then copy-transpose all lanes' stage
    # derivatives for the tableau's dot product: on a CPU that copy cost as much as the
    # gradients on small problems.
    pool_terms = WrapTerm(
        _LanesTerm(jax.vmap(_flow.vector_field(objective, args if has_args else None),
                            in_axes=(0, 0, axis))),
        jnp.asarray(1, jnp.int32),
    )

    def adapt(lane, y1, y_error, a):
        """The step-size decision of one lane, as diffeqsolve's body_fun."""
        y_error = jax.tree.map(lambda x: jnp.where(jnp.isnan(x), jnp.inf, x), y_error)
        keep, tprev, tnext, made_jump, cstate, cresult = controller(lane.atol).adapt_step_size(
            lane.t, lane.tnext, lane.y, y1, a, y_error, error_order, lane.controller_state
        )
        tprev = jnp.minimum(tprev, t1)
        tnext = jnp.where(
            tnext > t1_clip_floor, jnp.where(keep, t1, tprev + 0.5 * (t1 - tprev)), tnext
        )
        return keep, tprev, tnext, made_jump, cstate, cresult == diffrax.RESULTS.successful

    vadapt = jax.vmap(adapt, in_axes=(0, 0, 0, axis))

    def step(lane, a):
        """One attempted step of every lane."""
        y1, y_error, dense_info, sstate, _ = solver.step(
            pool_terms, lane.t, lane.tnext, lane.y, a, lane.solver_state, lane.made_jump
        )
        keep, tprev, tnext, made_jump, cstate, ok = vadapt(lane, y1, y_error, a)
        keep_tree = lambda new, old: jax.tree.map(
            lambda u, v: jnp.where(_bcast(keep, v), u, v), new, old
        )
        new = eqx.tree_at(
            lambda s: (
                s.t, s.tnext, s.y, s.solver_state, s.controller_state, s.made_jump,
                s.num_steps, s.num_accepted, s.num_rejected,
            ),
            lane,
            (
                tprev,
                tnext,
                keep_tree(y1, lane.y),
                keep_tree(sstate, lane.solver_state),
                cstate,
                jnp.where(keep, made_jump, lane.made_jump),
                lane.num_steps + 1,
                lane.num_accepted + keep,
                lane.num_rejected + (~keep),
            ),
        )
        interp = (lane.t, lane.tnext, dense_info)
        return new, interp, keep, ok

    def evaluate(interp, t):
        lo, hi, dense_info = interp
        return solver.interpolation_cls(t0=lo, t1=hi, **dense_info).evaluate(t)

    def pending_save(lane, keep, t_end):
        k = jnp.minimum(lane.save_index, num_saves - 1)
        return keep & (lane.save_index < num_saves) & (ts[k] <= t_end)

    def save_one(lane, keep, interp, a):
        k = jnp.minimum(lane.save_index, num_saves - 1)
        do = pending_save(lane, keep, interp[1])
        values = record(evaluate(interp, ts[k]), a)
        saved = jax.tree.map(
            lambda buf, v: jnp.where(do, buf.at[k].set(v), buf), lane.saved, values
        )
        return eqx.tree_at(lambda s: (s.saved, s.save_index), lane, (saved, lane.save_index + do))

    def locate(interp, fired, a):
        """Event time by bisection on the dense output, as diffeqsolve's root find."""
        lo, hi, _ = interp

        def fn(t, _):
            value = event_value(evaluate(interp, t), a)
            return jnp.where(fired, value, hi - t), None

        sol = optx.root_find(
            fn, root_finder, y0=hi, options={"lower": lo, "upper": hi}, has_aux=True, throw=False
        )
        return sol.value

    def lanes_of(interp):
        """vmap axes of the lanes in a step's dense output: the stage derivatives `k` are
        stacked stage-first, so their lane axis is 1."""
        return (0, 0, {key: 1 if key == "k" else 0 for key in interp[2]})

    vpending = jax.vmap(pending_save)

    def vsave(lane, keep, interp, a):
        return jax.vmap(save_one, in_axes=(0, 0, lanes_of(interp), axis))(lane, keep, interp, a)

    def vlocate(interp, fired, a):
        return jax.vmap(locate, in_axes=(lanes_of(interp), 0, axis))(interp, fired, a)

    def vevaluate(interp, t):
        return jax.vmap(evaluate, in_axes=(lanes_of(interp), 0))(interp, t)

    vload = jax.vmap(load, in_axes=(0, axis))
    vblown = jax.vmap(lambda y: _flow.blown_up(y, threshold))
    vevent = jax.vmap(event_value, in_axes=(0, axis))

    def gather_args(idx):
        return args if shared_args else jax.vmap(lane_args)(idx)

    first = jnp.arange(lanes, dtype=jnp.int32)
    first = jnp.where(first < num_points, first, -1)
    pool0 = vload(first, gather_args(first))
    out0 = _Out(
        saved=nans(record_struct, (n, num_saves)),
        status_code=jnp.full((n,), -1, jnp.int32),
        t_final=jnp.full((n,), jnp.nan, dtype),
        t_event=jnp.full((n,), jnp.nan, dtype),
        final_params=jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params0),
        num_steps=jnp.zeros((n,), jnp.int32),
        num_accepted=jnp.zeros((n,), jnp.int32),
        num_rejected=jnp.zeros((n,), jnp.int32),
    )
    init = (pool0, out0, jnp.minimum(num_points, lanes), jnp.asarray(0), jnp.asarray(0))

    def cond(carry):
        pool = carry[0]
        return jnp.any(pool.idx >= 0)

    def body(carry):
        pool, out, next_idx, iterations, lane_steps = carry
        active = pool.idx >= 0
        pool_args = args if shared_args else pool.args
        pool, interp, keep, ok = step(pool, pool_args)
        keep = keep & active

        pool = jax.lax.while_loop(
            lambda p: jnp.any(vpending(p, keep, interp[1])),
            lambda p: vsave(p, keep, interp, pool_args),
            pool,
        )

        blown = keep & vblown(pool.y)
        if event is None:
            fired = jnp.zeros_like(keep)
        else:
            value = vevent(pool.y, pool_args)
            fired = keep & ~blown & (jnp.sign(value) != jnp.sign(pool.event_value))
            pool = eqx.tree_at(lambda s: s.event_value, pool, value)
        t_event = jax.lax.cond(
            jnp.any(fired),
            lambda: vlocate(interp, fired, pool_args),
            lambda: jnp.full((lanes,), jnp.nan, dtype),
        )
        collapsed = active & ~ok
        reached = active & (pool.t >= t1)
        out_of_steps = active & (pool.num_steps >= max_steps)
        done = blown | fired | collapsed | reached | out_of_steps
        code = _status.decide(reached=reached, fired=fired, nonfinite=blown | collapsed)

        def finish(pool, out, next_idx):
            t_final = jnp.where(fired, t_event, pool.t)
            y_final = jax.tree.map(
                lambda e, y: jnp.where(_bcast(fired, y), e, y),
                jax.lax.cond(
                    jnp.any(fired), lambda: vevaluate(interp, t_event), lambda: pool.y
                ),
                pool.y,
            )
            at_t = ts[None, :] <= t_final[:, None]
            saved = jax.tree.map(
                lambda s: jnp.where(_bcast(at_t, s), s, jnp.nan), pool.saved
            )
            row = jnp.where(done, pool.idx, n)  # n is out of bounds: dropped
            put = lambda buf, v: buf.at[row].set(v, mode="drop")
            out = _Out(
                saved=jax.tree.map(put, out.saved, saved),
                status_code=put(out.status_code, code),
                t_final=put(out.t_final, t_final),
                t_event=put(out.t_event, jnp.where(fired, t_event, jnp.nan)),
                final_params=jax.tree.map(put, out.final_params, y_final),
                num_steps=put(out.num_steps, pool.num_steps),
                num_accepted=put(out.num_accepted, pool.num_accepted),
                num_rejected=put(out.num_rejected, pool.num_rejected),
            )
            new_idx, next_idx = _refill(pool.idx, done, next_idx, num_points)
            fresh = vload(new_idx, gather_args(new_idx))
            pool = jax.tree.map(lambda f, p: jnp.where(_bcast(done, p), f, p), fresh, pool)
            return pool, out, next_idx

        pool, out, next_idx = jax.lax.cond(
            jnp.any(done), finish, lambda p, o, i: (p, o, i), pool, out, next_idx
        )
        return pool, out, next_idx, iterations + 1, lane_steps + jnp.sum(active)

    _, out, _, iterations, lane_steps = jax.lax.while_loop(cond, body, init)

    traj = assemble(
        ts=ts,
        reached=ts[None, :] <= out.t_final[:, None],
        saved=out.saved,
        status_code=out.status_code,
        t_final=out.t_final,
        t_event=out.t_event,
        final_params=out.final_params,
        num_steps=out.num_steps,
        num_accepted_steps=out.num_accepted,
        num_rejected_steps=out.num_rejected,
        solver=solver,
        solved=jnp.arange(n) < num_points,
    )
    return traj, (iterations, lane_steps)


class _Slot(eqx.Module):
    """One lane of a stepper pool: the point it solves (−1: empty), its data, the stepper state."""

    idx: jax.Array
    args: Any
    state: Any


def _refill(idx, done, next_idx, num_points):
    """The point each lane solves next: lanes that are done take the next unsolved points in
    order (−1 once none is left); returns (new indices, next unsolved point)."""
    rank = jnp.cumsum(done) - 1
    new_idx = jnp.where(done, next_idx + rank, idx)
    new_idx = jnp.where(done & (new_idx >= num_points), -1, new_idx).astype(jnp.int32)
    return new_idx, next_idx + jnp.sum(done, dtype=jnp.int32)


@eqx.filter_jit
def _stepper_pool(ctx, params0, args, num_points, t0, t1, ts, *, lanes, shared_args):
    """Continuous batching of the switching stepper (`gflow.switching.stepper`: init / step /
    done / result): every iteration steps all lanes once; a lane that is done writes its
    `Trajectory` row and is refilled with the next point. Each lane takes the very steps
    `gflow.simulate` takes on its point alone.

    The lanes step one after another (`jax.lax.map`), not vmapped: under `jax.vmap` a
    `lax.cond` on a per-lane predicate becomes a select that runs both branches, so every lane
    would pay every branch of the step (crossing location, sliding geometry, the Filippov set's
    active-set solve) on every step, even with one lane (a vmap of size 1 batches its
    predicates too)."""
    from .switching import stepper

    n = jax.tree.leaves(params0)[0].shape[0]

    def lane_ctx(a):
        return ctx if shared_args else eqx.tree_at(lambda c: c.args, ctx, a, is_leaf=lambda x: x is None)

    def load(idx):
        i = jnp.clip(idx, 0, n - 1)
        a = None if shared_args else jax.tree.map(lambda x: x[i], args)
        y0 = jax.tree.map(lambda x: x[i], params0)
        return _Slot(idx, a, stepper.init(lane_ctx(a), y0, t0, t1, ts))

    vload = jax.vmap(load)
    vstep = lambda pool: jax.lax.map(
        lambda s: eqx.tree_at(lambda z: z.state, s, stepper.step(lane_ctx(s.args), s.state)), pool)
    vresult = jax.vmap(lambda s: stepper.result(lane_ctx(s.args), s.state))

    first = jnp.arange(lanes, dtype=jnp.int32)
    pool0 = vload(jnp.where(first < num_points, first, -1))
    rows = jax.eval_shape(vresult, pool0)
    empty = lambda s: jnp.full((n,) + s.shape[1:], jnp.nan if jnp.issubdtype(s.dtype, jnp.floating) else 0, s.dtype)
    out0 = eqx.tree_at(lambda t: t.status_code, jax.tree.map(empty, rows), jnp.full((n,), -1, jnp.int32))

    def body(carry):
        pool, out, next_idx, iterations, lane_steps = carry
        active = pool.idx >= 0
        pool = vstep(pool)
        done = active & jax.vmap(stepper.done)(pool.state)

        def finish(pool, out, next_idx):
            row = jnp.where(done, pool.idx, n)  # n is out of bounds: dropped
            out = jax.tree.map(lambda buf, v: buf.at[row].set(v, mode="drop"), out, vresult(pool))
            new_idx, next_idx = _refill(pool.idx, done, next_idx, num_points)
            pool = jax.tree.map(lambda f, p: jnp.where(_bcast(done, p), f, p), vload(new_idx), pool)
            return pool, out, next_idx

        pool, out, next_idx = jax.lax.cond(jnp.any(done), finish, lambda *c: c, pool, out, next_idx)
        return pool, out, next_idx, iterations + 1, lane_steps + jnp.sum(active)

    init = (pool0, out0, jnp.minimum(num_points, lanes), jnp.asarray(0), jnp.asarray(0))
    _, out, _, iterations, lane_steps = jax.lax.while_loop(lambda c: jnp.any(c[0].idx >= 0), body, init)
    return out, (iterations, lane_steps)


class _LanesTerm(diffrax.AbstractTerm):
    """The vector fields of B lanes as one term on their stacked state: the control is the
    vector of the lanes' step sizes dt (shape (B,)), and `prod` scales each lane's slice by its
    own dt, so one Runge-Kutta step advances every lane with its own step size (stage times
    t0 + c·dt are per-lane too; the gradient flow does not depend on t)."""

    field: Any  # (t (B,), y stacked, args) -> stacked F

    def vf(self, t, y, args):
        return self.field(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return jax.tree.map(lambda v: _bcast(control, v) * v, vf)


def _bcast(mask, x):
    """`mask` of shape (B,) or (B, T) broadcast against `x` of shape (B, …)."""
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(x) - mask.ndim))

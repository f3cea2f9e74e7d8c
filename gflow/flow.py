"""The gradient-flow ODE dθ/dt = −∇L(θ) and its adaptive solution with diffrax.

`simulate` is the one entry point: it takes any scalar objective over any parameter pytree and
returns a `gflow.Trajectory`. It is pure JAX under the hood, so it can be `jax.vmap`-ed over
initial parameters (and over `args`, e.g. datasets of equal shape); failures come back as status
codes, never as exceptions inside the solve.

**Scale-aware error control.** diffrax accepts a step when
``rms(err_i / (atol + rtol·|θ_i|)) ≤ 1``. A fixed `atol` makes a state of size 1e-8 "converged"
before the solver takes a single accurate step. With ``atol=None`` gflow sets

    atol = rtol · ATOL_FRACTION · rms(θ0),      ATOL_FRACTION = 1e-2,

so every component is controlled relative to the initial scale of the state: a run from init
scale 1e-10 gets the same relative accuracy as one from 1 (the problem θ ↦ θ/ε is solved with the
same tolerances). Once the weights grow, the relative term rtol·|θ_i| dominates.

**Precision.** float64 is the default; float32 (parameters given in float32) is the user's
choice. rtol must be at least MIN_RTOL_EPS·eps of the dtype (1.2e-4 in float32, 2.2e-13 in
float64): below that the step size collapses on round-off (measured in float32 on a ReLU net:
rtol 1e-5 ends at dt_min, t ≈ 5 of 20). The scale-aware atol is likewise kept ≥ 16·eps·rms(θ0).
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from . import status as _status
from ._common import (  # noqa: F401 - re-exported: gflow.flow.record etc. as before
    ATOL_FRACTION,
    _blowup_threshold,
    _call_args,
    _dtmin,
    blown_up,
    grad_evals_per_step,
    progress_meter,
    record,
    scale_aware_atol,
)
from .trajectory import Trajectory

MIN_RTOL_EPS = 1e3
# `switching=None` integrates a piecewise-linear net's kinks (the switching solve) only below
# this rtol. Measured on the kinks benchmark (docs/switching.md), wall time plain / switching:
# rtol 1e-4: 0.22×, 0.15×, 0.015× (the plain solve steps through kinks at that tolerance);
# 1e-6: 7.2×, 1.1×, 0.22×; 1e-8: ≥ 120×, 5.8×, 22×. On issue 17's n = 300 sliding problem at
# rtol 1e-4 the plain solve took 265 steps, the switching solve 1,535.
SWITCHING_MAX_RTOL = 1e-5

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "ralston": diffrax.Ralston,
}


def vector_field(objective, args=None):
    """The gradient-flow vector field F(t, θ) = −∇L(θ), in diffrax's `(t, y, args)` form.

    With `args=None` the objective is called as `objective(θ)`, otherwise `objective(θ, args)`.
    """

    def field(t, params, args):
        g = jax.grad(objective)(*_call_args(params, args))
        return jax.tree.map(jnp.negative, g)

    return field


def get_solver(solver) -> diffrax.AbstractSolver:
    """A diffrax solver from a name in `SOLVERS` or a diffrax solver instance."""
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if isinstance(solver, str) and solver.lower() in SOLVERS:
        return SOLVERS[solver.lower()]()
    raise ValueError(
        f"unknown solver {solver!r}: pass one of {sorted(SOLVERS)} or a diffrax solver "
        "instance such as diffrax.Tsit5()"
    )


class _BracketState(eqx.Module):
    lower: jax.Array
    upper: jax.Array
    lower_sign: jax.Array


class _BracketBisection(optx.AbstractRootFinder):
    """Bisection on the sign of f over diffrax's event bracket [t_prev, t_next].

    diffrax hands the root finder a pytree with one value per event condition (zero for those
    that did not fire); their sum is the value of the event that fired. The bracket is halved
    until its width is below atol + rtol·|t|, whatever the scale of f: a boolean event mapped to
    ±1 is located as precisely as a smooth one. Unlike `optx.Bisection` it does not need a
    strict sign change at the ends (diffrax maps a step-end event to a root exactly at t_next).
    """

    rtol: float
    atol: float
    norm: Callable = jnp.abs

    @staticmethod
    def _value(fn, t, args):
        out, _ = fn(t, args)
        return sum(jax.tree.leaves(out))

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        lower = jnp.asarray(options["lower"])
        upper = jnp.asarray(options["upper"])
        return _BracketState(lower, upper, jnp.sign(self._value(fn, lower, args)))

    def step(self, fn, y, args, options, state, tags):
        mid = state.lower + 0.5 * (state.upper - state.lower)
        value, aux = fn(mid, args)
        same = jnp.sign(sum(jax.tree.leaves(value))) == state.lower_sign
        same = same & (state.lower_sign != 0)
        lower = jnp.where(same, mid, state.lower)
        upper = jnp.where(same, state.upper, mid)
        return upper, _BracketState(lower, upper, state.lower_sign), aux

    def terminate(self, fn, y, args, options, state, tags):
        width = jnp.abs(state.upper - state.lower)
        return width < self.atol + self.rtol * jnp.abs(state.upper), optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


def _check_params(params0):
    leaves = jax.tree.leaves(params0)
    if not leaves:
        raise ValueError("params0 is an empty pytree: pass at least one float array")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"params0 holds an array of dtype {dtype}: gradient flow needs float arrays, "
                "cast it with jnp.asarray(x, dtype=float)"
            )
        if _concrete(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError("params0 contains NaN or inf: pass finite initial parameters")


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_scalar_fn(name, fn, params0, args, *, allow_bool):
    if not callable(fn):
        raise ValueError(f"{name} must be a function of the parameters, got {type(fn).__name__}")
    try:
        out = jax.eval_shape(fn, *_call_args(params0, args))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"{name} could not be evaluated on params0: {e}") from e
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(f"{name} must return a scalar, got {getattr(out, 'shape', out)}")
    if jnp.issubdtype(out.dtype, jnp.bool_) and not allow_bool:
        raise ValueError(f"{name} must return a float, got bool")
    return out


def _check_times(t0, t1, saveat):
    if _concrete(t0) and _concrete(t1):
        if not (np.isfinite(t0) and np.isfinite(t1)):
            raise ValueError(f"t0={t0} and t1={t1} must be finite")
        if not float(t1) > float(t0):
            raise ValueError(f"t1={t1} must be greater than t0={t0}: the flow runs forward")
    if saveat is None:
        return None
    ts = jnp.asarray(saveat)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"saveat must be a non-empty 1-D array of times, got shape {ts.shape}")
    if _concrete(ts) and _concrete(t0) and _concrete(t1):
        tsn = np.asarray(ts)
        if not np.all(np.isfinite(tsn)):
            raise ValueError("saveat contains NaN or inf")
        if np.any(np.diff(tsn) < 0):
            raise ValueError("saveat must be non-decreasing")
        if tsn[0] < float(t0) or tsn[-1] > float(t1):
            raise ValueError(f"saveat must lie in [t0, t1] = [{t0}, {t1}], got [{tsn[0]}, {tsn[-1]}]")
    return ts


def simulate(
    objective: Callable[..., Any],
    params0,
    t1,
    *,
    t0=0.0,
    saveat=None,
    solver="tsit5",
    rtol=1e-6,
    atol=None,
    observables: dict[str, Callable] | None = None,
    event: Callable | None = None,
    max_steps: int = 100_000,
    progress=False,
    save_params: bool = True,
    args=None,
    switching=None,
) -> Trajectory:
    """Integrate the gradient flow dθ/dt = −∇L(θ) from θ(t0) = params0 to t1.

    **Arguments:**

    - `objective`: L, a function of the parameters returning a scalar (`objective(params)`, or
      `objective(params, args)` when `args` is given).
    - `params0`: any pytree of float arrays.
    - `t1`, `t0`: the time interval, t1 > t0.
    - `saveat`: 1-D array of times in [t0, t1] where loss, observables and (optionally) params
      are recorded; default `[t0, t1]`.
    - `solver`: "tsit5" (default), "dopri5", "dopri8", "bosh3", "heun", "ralston", or any
      diffrax solver instance.
    - `rtol`, `atol`: error tolerances. `atol=None` is scale-aware: see this module's docstring.
    - `observables`: dict name → function of the parameters (and `args`), evaluated at `saveat`
      (boolean values are stored as 0.0 / 1.0).
    - `event`: function of the parameters (and `args`) returning a float (the flow stops where
      it changes sign) or a bool (the flow stops where it first becomes true). Either way the
      time is located by bisection on the solver's dense output to ~1e-12 relative, and is
      reported as `t_event`. Conditions are watched from t0 on: a condition that already holds
      at t0 fires at the first step for a bool event; a float event needs a sign change.
    - `max_steps`: cap on solver steps; reaching it gives status "max_steps".
    - `progress`: True shows a tqdm progress bar over [t0, t1]; a diffrax progress meter
      (`diffrax.AbstractProgressMeter`) is used as given.
    - `save_params`: store θ at `saveat` (set False to keep memory O(observables)).
    - `args`: optional pytree passed to objective, observables and event; `jax.vmap` over it
      runs one dataset per lane.
    - `switching`: how to treat kinks of ∇L (see `gflow.switching`). None (default) finds them
      automatically: the objective's own `switching` attribute if it declares one (a closed
      form: `gflow.objective` of `gflow.models.two_layer` with relu or leaky relu), else the
      kinks read from its program by `gflow.kinks.find` (relu/leaky relu at every layer, hinge,
      abs, max/min, `where` on a sign); an objective without kinks gets the plain solve.
      Kinked flows are integrated piece by piece (crossings located, sliding by Filippov's
      rule) and stay cheap at tight tolerances. False forces the plain solve; a
      `gflow.switching.Switching` is used as given. Crossing and sliding counts go to `stats`.
      With None, the switching solve is used only for rtol < `SWITCHING_MAX_RTOL` (1e-5): at
      looser tolerances the plain solve is cheaper (measured; see `SWITCHING_MAX_RTOL`).
      `stats["switching"]` is 1 where the switching solve ran, 0 for the plain solve. When the
      switching solve chosen by None ends "stalled" (its progress guard), the plain solve is
      run instead and `stats["switching_stalled"]` is 1 (outside jit/vmap only).

    **Returns:** a `gflow.Trajectory`. The solve itself never raises: a blow-up gives status
    "nonfinite", too few steps "max_steps", a switching solve that stops making progress
    "stalled" (see `gflow.switching`). Bad input raises `ValueError` before solving.
    """
    _check_params(params0)
    _check_scalar_fn("objective", objective, params0, args, allow_bool=False)
    observables = dict(observables or {})
    for name, fn in observables.items():
        if not callable(fn):
            raise ValueError(f"observable {name!r} must be a function of the parameters")
    event_is_bool = None
    if event is not None:
        out = _check_scalar_fn("event", event, params0, args, allow_bool=True)
        event_is_bool = bool(jnp.issubdtype(out.dtype, jnp.bool_))
    ts = _check_times(t0, t1, saveat)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if tol is not None and _concrete(tol) and not float(tol) > 0:
            raise ValueError(f"{name} must be positive, got {tol}")
    solver = get_solver(solver)
    automatic = switching is None
    if switching is None and _concrete(rtol) and float(rtol) >= SWITCHING_MAX_RTOL:
        switching = False  # loose tolerance: the plain solve steps through the kinks cheaper
    switching = _resolve_switching(switching, objective, params0, args)

    dtype = jnp.result_type(*jax.tree.leaves(params0))
    min_rtol = MIN_RTOL_EPS * float(jnp.finfo(dtype).eps)
    if _concrete(rtol) and float(rtol) < min_rtol:
        raise ValueError(
            f"rtol={float(rtol):g} is below what {jnp.dtype(dtype).name} resolves (the step size "
            f"would collapse on round-off): use rtol >= {min_rtol:.2g}, or float64 parameters"
        )
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    ts = jnp.stack([t0, t1]) if ts is None else ts.astype(dtype)
    tolerances = (jnp.asarray(rtol, dtype), None if atol is None else jnp.asarray(atol, dtype))
    options = dict(
        solver=solver,
        observables=observables,
        event=event,
        event_is_bool=event_is_bool,
        max_steps=max_steps,
        save_params=save_params,
        progress=progress,
    )
    if switching is not None:
        from .switching import integrate

        traj = integrate(objective, switching, params0, args, t0, t1, ts, *tolerances, **options)
    else:
        traj = _solve(objective, params0, args, t0, t1, ts, *tolerances, **options)
    stalled = jnp.zeros_like(traj.status_code)
    if automatic and switching is not None and _concrete(traj.status_code) and traj.status == "stalled":
        # the switching solve chosen by default stopped making progress (its guard): the plain
        # solve is run instead, and stats["switching_stalled"] says so. Under jit/vmap the
        # status cannot be read, and a "stalled" lane is returned as it is.
        switching, stalled = None, stalled + 1
        traj = _solve(objective, params0, args, t0, t1, ts, *tolerances, **options)
    ran = jnp.zeros_like(traj.status_code) + (switching is not None)
    return eqx.tree_at(lambda t: t.stats, traj, {**traj.stats, "switching": ran, "switching_stalled": stalled})


def _resolve_switching(switching, objective, params0, args):
    # the Switching to integrate with, or None for the plain solve
    from .switching import Switching

    if switching is None:
        switching = getattr(objective, "switching", None)
    if switching is None:  # no closed form declared: the kinks of the objective's program
        from .kinks import find

        switching = find(objective, params0, args)
    if switching is None or switching is False:
        return None
    if not isinstance(switching, Switching):
        raise ValueError(
            f"switching must be None, False or a gflow.switching.Switching, got {switching!r}"
        )
    try:
        s = jax.eval_shape(switching.surfaces, *_call_args(params0, args))
        pattern = jnp.zeros(s.shape, jnp.result_type(*jax.tree.leaves(params0)))
        out = jax.eval_shape(switching.objective, params0, pattern, *_call_args(params0, args)[1:])
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"switching could not be evaluated on params0: {e}") from e
    if out.shape != ():
        raise ValueError(f"switching.objective must return a scalar, got shape {out.shape}")
    return switching


@eqx.filter_jit
def _solve(
    objective,
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
    progress,
    save_params,
):
    dtype = t0.dtype
    if atol is None:
        atol = scale_aware_atol(params0, rtol)

    saveat = diffrax.SaveAt(
        subs=[
            diffrax.SubSaveAt(
                ts=ts, fn=lambda t, y, args: record(objective, observables, save_params, y, args)
            ),
            diffrax.SubSaveAt(t1=True),
        ]
    )

    threshold = _blowup_threshold(dtype)
    # Every condition returns a float of the default dtype: diffrax pads the conditions that did
    # not fire with a Python 0.0 (the default dtype) and turns a boolean one into a time (the
    # solve's dtype), which clash in a float32 solve under jax_enable_x64.
    event_dtype = jnp.result_type(float)

    def blowup(t, y, args, **kwargs):
        return jnp.where(blown_up(y, threshold), 1.0, -1.0).astype(event_dtype)

    conds = [blowup]
    if event is not None:

        def user(t, y, args, **kwargs):
            value = event(*_call_args(y, args))
            if event_is_bool:
                return jnp.where(value, 1.0, -1.0).astype(event_dtype)
            return jnp.asarray(value, event_dtype)

        conds.append(user)
    tol = float(100 * np.finfo(dtype).eps)
    diffrax_event = diffrax.Event(cond_fn=conds, root_finder=_BracketBisection(rtol=tol, atol=tol))

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field(objective, args)),
        solver,
        t0,
        t1,
        dt0=None,
        y0=params0,
        args=args,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(
            rtol=rtol, atol=atol, dtmin=_dtmin(t0, t1), force_dtmin=False
        ),
        event=diffrax_event,
        max_steps=max_steps,
        throw=False,
        progress_meter=progress_meter(progress),
    )

    blew_up = sol.event_mask[0]
    fired = sol.event_mask[1] if event is not None else jnp.asarray(False)
    result = sol.result
    code = jnp.where(
        result == diffrax.RESULTS.successful,
        _status.SUCCESS,
        jnp.where(result == diffrax.RESULTS.max_steps_reached, _status.MAX_STEPS, _status.FAILED),
    )
    code = jnp.where(fired, _status.EVENT, code)
    collapsed = result == diffrax.RESULTS.dt_min_reached
    code = jnp.where(blew_up | collapsed, _status.NONFINITE, code)

    saved_ts, saved = sol.ts[0], sol.ys[0]
    t_final = sol.ts[1][0]
    reached = saved_ts <= t_final

    def mask(x):
        keep = reached.reshape(reached.shape + (1,) * (x.ndim - 1))
        return jnp.where(keep, x, jnp.nan)

    saved = jax.tree.map(mask, saved)
    per_step, at_start = grad_evals_per_step(solver)
    stats = sol.stats
    return Trajectory(
        ts=jnp.where(reached, saved_ts, jnp.nan),
        params=saved["params"],
        loss=saved["loss"],
        observables=saved["observables"],
        status_code=code.astype(jnp.int32),
        t_final=t_final,
        t_event=jnp.where(fired, t_final, jnp.nan),
        final_params=jax.tree.map(lambda x: x[0], sol.ys[1]),
        num_steps=stats["num_steps"],
        num_accepted_steps=stats["num_accepted_steps"],
        num_rejected_steps=stats["num_rejected_steps"],
        num_grad_evals=stats["num_steps"] * per_step + at_start,
    )

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
float64; checked with every other option in `gflow.options`). The scale-aware atol is likewise
kept ≥ 16·eps·rms(θ0).
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from . import options as _options
from . import status as _status
from ._common import (  # noqa: F401 - re-exported: gflow.flow.record etc. as before
    ATOL_FRACTION,
    _blowup_threshold,
    _dtmin,
    blown_up,
    progress_meter,
    record,
    scale_aware_atol,
)
from .trajectory import Trajectory, assemble, full_stats, grad_evals_per_step  # noqa: F401

# One definition each, in `gflow.options`; the names stay importable from here.
MIN_RTOL_EPS = _options.MIN_RTOL_EPS
SWITCHING_MAX_RTOL = _options.SWITCHING_MAX_RTOL
SOLVERS = _options.SOLVERS
get_solver = _options.get_solver
_call_args = _options.call_args
_resolve_switching = _options.resolve_switching


def vector_field(objective, args=None):
    """The gradient-flow vector field F(t, θ) = −∇L(θ), in diffrax's `(t, y, args)` form.

    With `args=None` the objective is called as `objective(θ)`, otherwise `objective(θ, args)`.
    """

    def field(t, params, args):
        g = jax.grad(objective)(*_call_args(params, args))
        return jax.tree.map(jnp.negative, g)

    return field



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
      With None, the switching solve is used only for rtol < `SWITCHING_MAX_RTOL` (1e-4) and at
      most `SWITCHING_MAX_SURFACES` switching functions (20,000): at looser tolerances and on
      more surfaces the plain solve is cheaper (measured; see both in `gflow.options`).
      `stats["switching"]` is 1 where the switching solve ran, 0 for the plain solve, and
      `stats["switching_reason"]` says why (`gflow.options.SWITCHING_REASONS`: 0 switching,
      1 no kinks, 2 rtol ≥ SWITCHING_MAX_RTOL, 3 K > SWITCHING_MAX_SURFACES,
      4 switching=False, 5 fell back). When the switching solve chosen by None ends "stalled"
      (its progress guard) or "nonfinite" (steps collapsed), the plain solve is run instead and
      `stats["switching_fallback"]` is 1, `stats["switching_reason"]` 5 (outside jit/vmap
      only; `gflow.status.SWITCHING_FALLBACK`).

    **Returns:** a `gflow.Trajectory`. The solve itself never raises: a blow-up gives status
    "nonfinite", too few steps "max_steps", a switching solve that stops making progress
    "stalled" (see `gflow.switching`). Bad input raises `ValueError` before solving (every option
    is checked in `gflow.options`, as for the pool and sweeps).
    """
    options = _options.options_of(locals())
    prepared = _options.prepare(options, objective, params0, args, t0, t1)
    if prepared.switching is not None:
        from .switching import integrate

        traj = integrate(
            objective, prepared.switching, params0, args, *prepared.arrays(),
            **prepared.settings.keywords(),
        )
    else:
        traj = _solve(objective, params0, args, *prepared.arrays(), prepared.settings)
    ran, fallback, reason = prepared.switching is not None, 0, prepared.reason
    if prepared.automatic and ran and _options.concrete(traj.status_code) and _status.falls_back(traj.status_code):
        # the switching solve chosen by default stalled or collapsed: the plain solve is run
        # instead, and stats["switching_fallback"] says so. Under jit/vmap the status cannot
        # be read, and the lane is returned as it is.
        ran, fallback, reason = False, 1, _options.SWITCHING_FELL_BACK
        traj = _solve(objective, params0, args, *prepared.arrays(), prepared.settings)
    zero = jnp.zeros_like(traj.status_code)
    stats = {**traj.stats, "switching": zero + ran, "switching_fallback": zero + fallback, "switching_reason": zero + reason}
    return eqx.tree_at(lambda t: t.stats, traj, full_stats(stats, traj.status_code))


@eqx.filter_jit
def _solve(objective, params0, args, t0, t1, ts, rtol, atol, settings: _options.Settings):
    """The plain solve: diffrax's `diffeqsolve` with a PID controller, the blow-up guard and
    the user's event, both located by bisection on the dense output."""
    solver, observables, event = settings.solver, settings.observables, settings.event
    dtype = t0.dtype
    if atol is None:
        atol = scale_aware_atol(params0, rtol)

    saveat = diffrax.SaveAt(
        subs=[
            diffrax.SubSaveAt(
                ts=ts, fn=lambda t, y, args: record(objective, observables, settings.save_params, y, args)
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
            if settings.event_is_bool:
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
        max_steps=settings.max_steps,
        throw=False,
        progress_meter=progress_meter(settings.progress),
    )

    fired = sol.event_mask[1] if event is not None else jnp.asarray(False)
    t_final = sol.ts[1][0]
    saved_ts = sol.ts[0]
    stats = sol.stats
    return assemble(
        ts=saved_ts,
        reached=saved_ts <= t_final,
        saved=sol.ys[0],
        status_code=_status.decide(result=sol.result, fired=fired, nonfinite=sol.event_mask[0]),
        t_final=t_final,
        t_event=jnp.where(fired, t_final, jnp.nan),
        final_params=jax.tree.map(lambda x: x[0], sol.ys[1]),
        num_steps=stats["num_steps"],
        num_accepted_steps=stats["num_accepted_steps"],
        num_rejected_steps=stats["num_rejected_steps"],
        solver=solver,
    )

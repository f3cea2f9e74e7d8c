"""The options of a gradient-flow solve, checked in one place.

`Options` holds what every solve path (`gflow.simulate`, the pool of `gflow.batching`, a sweep's
`[solve]` table) lets the user choose: the solver, the tolerances, the step cap, what is saved
(times, observables, parameters), the event, the treatment of kinks and the progress meter.
Building an `Options` checks every option that can be checked alone; `prepare` checks the rest
against the problem (objective, θ0, args, [t0, t1]) and returns a `Prepared` solve: the arrays
the solve runs on (t0, t1, save times, rtol, atol in θ0's dtype), the `Settings` that select the
compiled program, and the `gflow.switching.Switching` to integrate with (or None).

Every bad value raises a one-line `ValueError` that names the option and says how to fix it.

**Minimum rtol.** rtol must be at least MIN_RTOL_EPS·eps of θ0's dtype (1.2e-4 in float32,
2.2e-13 in float64): below that the step size collapses on round-off (measured in float32 on a
ReLU net: rtol 1e-5 ends at dt_min, t ≈ 5 of 20).

**Switching.** `switching=None` integrates the kinks of a piecewise-linear objective piece by
piece only for rtol < SWITCHING_MAX_RTOL and at most SWITCHING_MAX_SURFACES switching functions;
at looser tolerances the plain solve steps through them more cheaply, and on very many surfaces
the crossings outnumber the plain solve's steps (see both constants). `Prepared.reason` (and a
trajectory's `stats["switching_reason"]`) says which solve was chosen and why: one of the
`SWITCHING_REASONS` codes.
"""

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

MIN_RTOL_EPS = 1e3
# `switching=None` integrates a piecewise-linear net's kinks (the switching solve) only below
# this rtol and for K ≤ SWITCHING_MAX_SURFACES. Measured on the stress corpus (docs/benchmarks.md
# "Stress corpus", `benchmarks/stress.py`'s `rule_table`; this rule passes issue 17's rule on all
# 39 measured cases): at rtol 1e-5 the plain solve grinds on n20 (max_steps at t = 0.77 of 10;
# the switching solve: 369 steps) and takes 57× the switching solve's steps on issue-seed8; at
# rtol 1e-4 it steps through the kinks cheaper (kinks benchmark, docs/switching.md: wall plain /
# switching 0.22×, 0.15×, 0.015×; issue17b: 265 steps against 1,535; n1000: 2,594 against 4,063
# with 32 crossing slots, and a stall with the default 125).
SWITCHING_MAX_RTOL = 1e-4
# `switching=None` runs the plain solve on more switching functions K than this (a two-layer
# net: K = n·width): on K = 100,000 the crossings and sliding events outnumber the plain solve's
# steps where surfaces slide (big-n500-h200, rtol 1e-5: 1,614 switching steps with 128 crossing
# slots, 231 plain), though not where they only cross (big-sep-n1000-h100, rtol 1e-6: 516
# against 821). At K = 20,000, rtol 1e-6, sep-n200-h100 took 149 switching steps against 1,404
# plain (width200, K = 20,000 with up to 153 sliding, was not re-measured).
SWITCHING_MAX_SURFACES = 20_000

# `Prepared.reason`, `stats["switching_reason"]`: which solve ran and why
SWITCHING_RAN = 0  # the switching solve (chosen by `switching=None`, or given)
SWITCHING_NO_KINKS = 1  # switching=None found no kinks: the plain solve
SWITCHING_LOOSE_RTOL = 2  # switching=None, rtol ≥ SWITCHING_MAX_RTOL: the plain solve (kinks not looked for)
SWITCHING_MANY_SURFACES = 3  # switching=None, K > SWITCHING_MAX_SURFACES: the plain solve
SWITCHING_OFF = 4  # switching=False: the plain solve
SWITCHING_FELL_BACK = 5  # the switching solve chosen by switching=None stalled or collapsed: re-solved plain
SWITCHING_REASONS = {
    SWITCHING_RAN: "switching",
    SWITCHING_NO_KINKS: "no kinks",
    SWITCHING_LOOSE_RTOL: "rtol >= SWITCHING_MAX_RTOL",
    SWITCHING_MANY_SURFACES: "K > SWITCHING_MAX_SURFACES",
    SWITCHING_OFF: "switching=False",
    SWITCHING_FELL_BACK: "switching stalled or nonfinite, re-solved plain",
}

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "ralston": diffrax.Ralston,
}


def call_args(params, args):
    """The positional arguments of a user function: `(params,)`, or `(params, args)`."""
    return (params,) if args is None else (params, args)


def concrete(x) -> bool:
    """False for a value traced by jit/vmap (its value cannot be checked)."""
    return not isinstance(x, jax.core.Tracer)


# ----------------------------------------------------------------------------- one option each
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


def _number(name, value, fix):
    ok = isinstance(value, (numbers.Real, np.ndarray, jax.Array)) and not isinstance(value, bool)
    if not ok or jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a number, got {value!r}: {fix}")
    return float(value) if concrete(value) else None


def check_rtol(rtol):
    """0 < rtol < 1 (the dtype's minimum is checked by `prepare`)."""
    value = _number("rtol", rtol, "pass e.g. rtol=1e-6")
    if value is not None and not 0 < value < 1:
        raise ValueError(f"rtol must be positive and below 1, got {rtol}: pass e.g. rtol=1e-6")


def check_atol(atol):
    """None (scale-aware) or a positive number."""
    if atol is None:
        return
    value = _number("atol", atol, "pass a positive number, or atol=None for the scale-aware rule")
    if value is not None and not (value > 0 and np.isfinite(value)):
        raise ValueError(
            f"atol must be positive, got {atol}: pass a positive number, or atol=None for the "
            "scale-aware rule"
        )


def check_max_steps(max_steps):
    if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}: e.g. max_steps=100_000")


def check_save_params(save_params):
    if not isinstance(save_params, (bool, np.bool_)):
        raise ValueError(f"save_params must be True or False, got {save_params!r}")


def check_observables(observables) -> dict:
    """The observables as a dict name → function (None: no observables)."""
    if observables is None:
        return {}
    if not isinstance(observables, Mapping):
        raise ValueError(
            f"observables must be a dict name → function, got {type(observables).__name__}"
        )
    for name, fn in observables.items():
        if not isinstance(name, str):
            raise ValueError(f"observables: names must be strings, got {name!r}")
        if not callable(fn):
            raise ValueError(f"observable {name!r} must be a function of the parameters")
    return dict(observables)


def check_progress(progress):
    if not isinstance(progress, (bool, np.bool_, diffrax.AbstractProgressMeter)):
        raise ValueError(
            f"progress must be True, False or a diffrax.AbstractProgressMeter, got {progress!r}"
        )


def check_switching(switching):
    """None (find the kinks), False (plain solve) or a `gflow.switching.Switching`."""
    if switching is None or switching is False:
        return
    from .switching import Switching

    if isinstance(switching, Switching):
        return
    raise ValueError(
        f"switching must be None, False or a gflow.switching.Switching, got {switching!r}"
    )


# ----------------------------------------------------------------------------- the options
@dataclasses.dataclass(frozen=True)
class Options:
    """What a gradient-flow solve lets the user choose (see `gflow.simulate` for each one).

    - `solver`: a name in `SOLVERS` or a diffrax solver instance.
    - `rtol`, `atol`: tolerances; `atol=None` is scale-aware (`gflow.flow.scale_aware_atol`).
    - `max_steps`: cap on attempted steps (status "max_steps" when reached).
    - `saveat`: 1-D save times in [t0, t1]; None saves at [t0, t1].
    - `observables`: dict name → f(θ) (or f(θ, args)) recorded at the save times.
    - `event`: f(θ) → float (stops at a sign change) or bool (stops where it becomes true).
    - `save_params`: store θ at the save times.
    - `switching`: None (kinks found automatically, used below `SWITCHING_MAX_RTOL` on at most
      `SWITCHING_MAX_SURFACES` surfaces), False (plain solve) or a `gflow.switching.Switching`.
    - `progress`: True for a tqdm bar, or a `diffrax.AbstractProgressMeter`.

    Every option is checked when the `Options` is built; `prepare` checks the rest against
    the problem.
    """

    solver: Any = "tsit5"
    rtol: Any = 1e-6
    atol: Any = None
    max_steps: int = 100_000
    saveat: Any = None
    observables: Mapping[str, Callable] | None = None
    event: Callable | None = None
    save_params: bool = True
    switching: Any = None
    progress: Any = False

    def __post_init__(self):
        get_solver(self.solver)
        check_rtol(self.rtol)
        check_atol(self.atol)
        check_max_steps(self.max_steps)
        check_observables(self.observables)
        if self.event is not None and not callable(self.event):
            raise ValueError(f"event must be a function of the parameters, got {self.event!r}")
        check_save_params(self.save_params)
        check_switching(self.switching)
        check_progress(self.progress)


DEFAULTS = Options()


def options_of(keywords: Mapping[str, Any], **overrides) -> Options:
    """The `Options` among a solve function's keywords (e.g. its `locals()`), with overrides:
    the functions that expose the options as keywords list them once, in their signature."""
    names = {f.name for f in dataclasses.fields(Options)}
    return Options(**{k: v for k, v in keywords.items() if k in names} | overrides)


class Settings(eqx.Module):
    """The resolved options that select a compiled solve (all static: no arrays)."""

    solver: diffrax.AbstractSolver
    observables: dict
    event: Callable | None
    event_is_bool: bool | None
    max_steps: int
    save_params: bool
    progress: Any

    def keywords(self) -> dict:
        """The keyword arguments of the solve cores (`gflow.switching.integrate`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class Prepared(eqx.Module):
    """One checked solve: arrays in θ0's dtype, the `Settings`, and the switching structure.

    `automatic` is True where `switching` was chosen by `switching=None` (not by the user);
    `reason` is the `SWITCHING_REASONS` code of the choice (never `SWITCHING_FELL_BACK`, which
    only the solve can tell).
    """

    t0: jax.Array
    t1: jax.Array
    ts: jax.Array
    rtol: jax.Array
    atol: jax.Array | None
    settings: Settings
    switching: Any
    automatic: bool = eqx.field(static=True)
    reason: int = eqx.field(static=True, default=SWITCHING_RAN)

    def arrays(self) -> tuple:
        """(t0, t1, ts, rtol, atol): the positional arguments of every solve core."""
        return self.t0, self.t1, self.ts, self.rtol, self.atol


# ----------------------------------------------------------------------------- against a problem
def check_params(params0):
    """θ0 is a non-empty pytree of finite float arrays."""
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
        if concrete(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError("params0 contains NaN or inf: pass finite initial parameters")


def check_scalar_fn(name, fn, params0, args, *, allow_bool):
    """`fn(θ0[, args])` evaluates to a scalar (a float, or a bool if `allow_bool`); its shape."""
    if not callable(fn):
        raise ValueError(f"{name} must be a function of the parameters, got {type(fn).__name__}")
    try:
        out = jax.eval_shape(fn, *call_args(params0, args))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"{name} could not be evaluated on params0: {e}") from e
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(f"{name} must return a scalar, got {getattr(out, 'shape', out)}")
    if jnp.issubdtype(out.dtype, jnp.bool_) and not allow_bool:
        raise ValueError(f"{name} must return a float, got bool")
    return out


def check_times(t0, t1, saveat):
    """t0 < t1 finite; `saveat` (if given) a non-empty, non-decreasing 1-D array in [t0, t1]."""
    if concrete(t0) and concrete(t1):
        if not (np.isfinite(t0) and np.isfinite(t1)):
            raise ValueError(f"t0={t0} and t1={t1} must be finite")
        if not float(t1) > float(t0):
            raise ValueError(f"t1={t1} must be greater than t0={t0}: the flow runs forward")
    if saveat is None:
        return None
    ts = jnp.asarray(saveat)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"saveat must be a non-empty 1-D array of times, got shape {ts.shape}")
    if concrete(ts) and concrete(t0) and concrete(t1):
        tsn = np.asarray(ts)
        if not np.all(np.isfinite(tsn)):
            raise ValueError("saveat contains NaN or inf")
        if np.any(np.diff(tsn) < 0):
            raise ValueError("saveat must be non-decreasing")
        if tsn[0] < float(t0) or tsn[-1] > float(t1):
            raise ValueError(f"saveat must lie in [t0, t1] = [{t0}, {t1}], got [{tsn[0]}, {tsn[-1]}]")
    return ts


def check_min_rtol(rtol, dtype):
    """rtol ≥ MIN_RTOL_EPS·eps of the solve's dtype (see the module docstring)."""
    min_rtol = MIN_RTOL_EPS * float(jnp.finfo(dtype).eps)
    if concrete(rtol) and float(rtol) < min_rtol:
        raise ValueError(
            f"rtol={float(rtol):g} is below what {jnp.dtype(dtype).name} resolves (the step size "
            f"would collapse on round-off): use rtol >= {min_rtol:.2g}, or float64 parameters"
        )


def resolve_switching(switching, objective, params0, args):
    """The `Switching` to integrate with, or None for the plain solve: `switching` as given,
    or for None the objective's own `switching` attribute, else `gflow.kinks.find`."""
    if switching is None:
        switching = getattr(objective, "switching", None)
    if switching is None:  # no closed form declared: the kinks of the objective's program
        from .kinks import find

        switching = find(objective, params0, args)
    if switching is None or switching is False:
        return None
    check_switching(switching)
    try:
        s = jax.eval_shape(switching.surfaces, *call_args(params0, args))
        pattern = jnp.zeros(s.shape, jnp.result_type(*jax.tree.leaves(params0)))
        out = jax.eval_shape(switching.objective, params0, pattern, *call_args(params0, args)[1:])
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"switching could not be evaluated on params0: {e}") from e
    if out.shape != ():
        raise ValueError(f"switching.objective must return a scalar, got shape {out.shape}")
    return switching


def surface_count(switching, params0, args) -> int:
    """K, the number of switching functions of `switching` at θ0 (by shape only)."""
    return int(np.prod(jax.eval_shape(switching.surfaces, *call_args(params0, args)).shape))


def choose_switching(options: Options, objective, params0, args):
    """(the `Switching` to integrate with or None, the `SWITCHING_REASONS` code): `switching`
    as given, or for None the switching solve where rtol < SWITCHING_MAX_RTOL (a traced rtol
    counts as below), the objective has kinks and K ≤ SWITCHING_MAX_SURFACES."""
    switching = options.switching
    if switching is False:
        return None, SWITCHING_OFF
    if switching is not None:
        return resolve_switching(switching, objective, params0, args), SWITCHING_RAN
    if concrete(options.rtol) and float(options.rtol) >= SWITCHING_MAX_RTOL:
        return None, SWITCHING_LOOSE_RTOL  # the plain solve steps through the kinks cheaper
    switching = resolve_switching(None, objective, params0, args)
    if switching is None:
        return None, SWITCHING_NO_KINKS
    if surface_count(switching, params0, args) > SWITCHING_MAX_SURFACES:
        return None, SWITCHING_MANY_SURFACES  # the crossings outnumber the plain solve's steps
    return switching, SWITCHING_RAN


def prepare(options: Options, objective, params0, args, t0, t1) -> Prepared:
    """Check `options` against one problem (objective, θ0, args, [t0, t1]) and resolve them."""
    check_params(params0)
    check_scalar_fn("objective", objective, params0, args, allow_bool=False)
    event_is_bool = None
    if options.event is not None:
        out = check_scalar_fn("event", options.event, params0, args, allow_bool=True)
        event_is_bool = bool(jnp.issubdtype(out.dtype, jnp.bool_))
    ts = check_times(t0, t1, options.saveat)
    dtype = jnp.result_type(*jax.tree.leaves(params0))
    check_min_rtol(options.rtol, dtype)
    switching, reason = choose_switching(options, objective, params0, args)
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    settings = Settings(
        solver=get_solver(options.solver),
        observables=check_observables(options.observables),
        event=options.event,
        event_is_bool=event_is_bool,
        max_steps=options.max_steps,
        save_params=bool(options.save_params),
        progress=options.progress,
    )
    return Prepared(
        t0=t0,
        t1=t1,
        ts=jnp.stack([t0, t1]) if ts is None else ts.astype(dtype),
        rtol=jnp.asarray(options.rtol, dtype),
        atol=None if options.atol is None else jnp.asarray(options.atol, dtype),
        settings=settings,
        switching=switching,
        automatic=options.switching is None,
        reason=reason,
    )

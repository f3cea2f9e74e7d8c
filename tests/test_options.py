"""gflow.options: every option is checked in one place, with a ValueError that names the
option and the fix, and the same check answers on every solve path (simulate, the pool, a
sweep's [solve] table)."""

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import batching, options, sweep


def _quadratic(p):
    return 0.5 * jnp.sum(p["w"] ** 2)


P0 = {"w": jnp.asarray([1.0, -2.0])}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("solver", "rk45", r"unknown solver 'rk45': pass one of"),
        ("solver", 3, r"unknown solver 3: pass one of"),
        ("rtol", -1.0, r"rtol must be positive and below 1, got -1.0: pass e.g. rtol=1e-6"),
        ("rtol", 0.0, r"rtol must be positive and below 1"),
        ("rtol", 2.0, r"rtol must be positive and below 1"),
        ("rtol", "1e-6", r"rtol must be a number, got '1e-6': pass e.g. rtol=1e-6"),
        ("rtol", True, r"rtol must be a number"),
        ("atol", 0.0, r"atol must be positive, got 0.0: pass a positive number, or atol=None"),
        ("atol", np.inf, r"atol must be positive"),
        ("max_steps", 0, r"max_steps must be a positive integer, got 0: e.g. max_steps=100_000"),
        ("max_steps", 10.5, r"max_steps must be a positive integer"),
        ("max_steps", True, r"max_steps must be a positive integer"),
        ("observables", [len], r"observables must be a dict name → function, got list"),
        ("observables", {"x": 3}, r"observable 'x' must be a function of the parameters"),
        ("observables", {1: len}, r"observables: names must be strings"),
        ("event", 0.5, r"event must be a function of the parameters"),
        ("save_params", "yes", r"save_params must be True or False"),
        ("switching", "on", r"switching must be None, False or a gflow.switching.Switching"),
        ("progress", "bar", r"progress must be True, False or a diffrax.AbstractProgressMeter"),
    ],
)
def test_each_option_is_checked_when_built(field, value, message):
    with pytest.raises(ValueError, match=message):
        options.Options(**{field: value})


def test_good_options_pass_and_defaults_are_simulates():
    opts = options.Options(solver=diffrax.Dopri5(), rtol=1e-8, atol=1e-12, progress=diffrax.NoProgressMeter())
    assert opts.rtol == 1e-8
    # One definition: simulate's keyword defaults are the Options' defaults.
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(gflow.simulate).parameters.items()}
    for f in dataclasses.fields(options.Options):
        assert defaults[f.name] == getattr(options.DEFAULTS, f.name), f.name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(params0={}), "params0 is an empty pytree"),
        (dict(params0={"w": jnp.asarray([1, 2])}), r"dtype int.*cast it with jnp.asarray"),
        (dict(params0={"w": jnp.asarray([1.0, jnp.nan])}), "params0 contains NaN or inf"),
        (dict(objective=lambda p: p["w"]), r"objective must return a scalar, got \(2,\)"),
        (dict(objective=lambda p: p["w"][0] > 0), "objective must return a float, got bool"),
        (dict(objective=lambda p: p["missing"]), "objective could not be evaluated on params0"),
        (dict(event=lambda p: p["w"]), r"event must return a scalar"),
        (dict(t1=0.0), "t1=0.0 must be greater than t0=0.0"),
        (dict(t1=np.inf), "must be finite"),
        (dict(saveat=[0.0, 2.0]), r"saveat must lie in \[t0, t1\]"),
        (dict(saveat=[0.5, 0.2]), "saveat must be non-decreasing"),
        (dict(saveat=[[0.5]]), "saveat must be a non-empty 1-D array"),
        (dict(saveat=[0.5, np.nan]), "saveat contains NaN or inf"),
        (dict(params0={"w": jnp.ones(2, jnp.float32)}, rtol=1e-6), r"below what float32 resolves.*rtol >= 0.00012"),
        (dict(rtol=1e-14), r"below what float64 resolves.*rtol >= 2.2e-13"),
        (dict(switching=gflow.switching.Switching(surfaces=lambda p: p["nope"], objective=lambda p, q: 0.0)),
         "switching could not be evaluated on params0"),
    ],
)
def test_each_problem_check_in_prepare(kwargs, message):
    call = dict(objective=_quadratic, params0=P0, t1=1.0, args=None) | kwargs
    opts = {k: call.pop(k) for k in list(call) if k in {f.name for f in dataclasses.fields(options.Options)}}
    with pytest.raises(ValueError, match=message):
        options.prepare(options.Options(**opts), call["objective"], call["params0"], None, 0.0, call["t1"])


def test_prepare_resolves_arrays_and_switching():
    p = options.prepare(options.Options(saveat=[0.0, 0.5]), _quadratic, P0, None, 0.0, 1.0)
    assert p.switching is None and p.automatic and p.atol is None
    assert p.ts.dtype == jnp.float64 and p.rtol == 1e-6
    assert p.settings.keywords().keys() == {
        "solver", "observables", "event", "event_is_bool", "max_steps", "save_params", "progress"
    }
    assert p.reason == options.SWITCHING_NO_KINKS
    # a loose rtol chooses the plain solve for a kinked objective too
    relu = lambda q: jnp.sum(jnp.maximum(q["w"], 0.0))  # noqa: E731
    loose = options.prepare(options.Options(rtol=1e-4), relu, P0, None, 0.0, 1.0)
    assert loose.switching is None and loose.reason == options.SWITCHING_LOOSE_RTOL
    for rtol in (1e-7, 9.9e-5):  # rtol < SWITCHING_MAX_RTOL = 1e-4
        tight = options.prepare(options.Options(rtol=rtol), relu, P0, None, 0.0, 1.0)
        assert tight.switching is not None and tight.reason == options.SWITCHING_RAN
    off = options.prepare(options.Options(rtol=1e-7, switching=False), relu, P0, None, 0.0, 1.0)
    assert off.switching is None and off.reason == options.SWITCHING_OFF and not off.automatic


@pytest.mark.parametrize("n, width, reason", [(200, 100, options.SWITCHING_RAN), (201, 100, options.SWITCHING_MANY_SURFACES),
                                              (2_000, 10, options.SWITCHING_RAN), (2_000, 11, options.SWITCHING_MANY_SURFACES)])
def test_default_caps_the_surfaces(n, width, reason):
    # switching=None runs the plain solve on K = n·width > SWITCHING_MAX_SURFACES = 20,000
    # switching functions; a given Switching is honoured at any K
    from gflow import data, losses, models

    X, y = data.hyperplane(n, 3, np.random.default_rng(0))
    L = losses.objective(models.two_layer, "exponential", X, y)
    params0 = models.init_two_layer(jax.random.PRNGKey(0), 3, width, 1e-2)
    assert options.surface_count(L.switching, params0, None) == n * width
    p = options.prepare(options.Options(rtol=1e-6), L, params0, None, 0.0, 1.0)
    assert p.reason == reason and (p.switching is None) == (reason != options.SWITCHING_RAN)
    given = options.prepare(options.Options(rtol=1e-6, switching=L.switching), L, params0, None, 0.0, 1.0)
    assert given.switching is L.switching and given.reason == options.SWITCHING_RAN


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rtol=2.0), "rtol must be positive and below 1"),
        (dict(max_steps=0), "max_steps must be a positive integer"),
        (dict(solver="rk45"), "unknown solver"),
        (dict(save_params="no"), "save_params must be True or False"),
        # the pool had no float32 minimum-rtol check before the options were shared
        (dict(params0={"w": jnp.ones((2, 2), jnp.float32)}, rtol=1e-6), "below what float32 resolves"),
    ],
)
def test_simulate_and_the_pool_answer_with_the_same_check(kwargs, message):
    call = dict(params0={"w": jnp.ones((2, 2))}) | kwargs
    stacked = call.pop("params0")
    with pytest.raises(ValueError, match=message):
        gflow.simulate(_quadratic, {"w": stacked["w"][0]}, 1.0, **call)
    with pytest.raises(ValueError, match=message):
        batching.solve_batch(_quadratic, stacked, 1.0, **call)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("rtol", 2.0, "solve: rtol must be positive and below 1"),
        ("max_steps", 0, "solve: max_steps must be a positive integer"),
        ("solver", "rk45", "solve: unknown solver"),
        ("solver", 5, "solve: solver must be a name"),
    ],
)
def test_sweep_solve_table_uses_the_options_checks(key, value, message):
    with pytest.raises(ValueError, match=message):
        sweep.Spec(problem="two_layer_separated", axes={"seed": [0]}, **{key: value})


def test_sweep_defaults_are_the_options_defaults():
    spec = sweep.Spec(problem="two_layer_separated", axes={"seed": [0]})
    for key in ("solver", "rtol", "max_steps"):
        assert getattr(spec, key) == getattr(options.DEFAULTS, key)


@pytest.mark.parametrize("kwargs, message", [(dict(rtol=0.0), "rtol must be positive"),
                                             (dict(max_steps=-1), "max_steps must be a positive integer")])
def test_study_config_uses_the_options_checks(kwargs, message):
    from gflow.studies.alignment import AlignConfig

    with pytest.raises(ValueError, match=message):
        AlignConfig(**kwargs)

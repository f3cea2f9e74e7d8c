"""The private diffrax (and equinox-internal) names gflow relies on, listed in gflow/_diffrax.py.

Each test fails with a message naming the name and what changed, so that a diffrax release
that moves or changes one is caught here, not as a wrong step count in the pool."""

import importlib

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest

PIN = "gflow/_diffrax.py, and pyproject.toml's diffrax pin"


def _import(module, name):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{module}.{name} is gone in diffrax {diffrax.__version__} ({e}): update {PIN}")


def test_gflow_private_names_import():
    import gflow._diffrax as private

    assert private.WrapTerm is _import("diffrax._term", "WrapTerm")
    assert private.prevbefore is _import("equinox.internal", "prevbefore")


def _decay(t, y, args):
    return -y


def test_wrapterm_wraps_a_term_for_the_direction_of_time():
    WrapTerm = _import("diffrax._term", "WrapTerm")
    term = diffrax.ODETerm(_decay)
    try:
        wrapped = WrapTerm(term, jnp.asarray(1, jnp.int32))
    except TypeError as e:
        pytest.fail(f"diffrax._term.WrapTerm(term, direction) changed its signature ({e}): update {PIN}")
    y = jnp.asarray([1.0, -2.0])
    np.testing.assert_array_equal(wrapped.vf(0.0, y, None), term.vf(0.0, y, None),
                                  err_msg=f"WrapTerm.vf no longer equals the term's vf: update {PIN}")
    np.testing.assert_array_equal(wrapped.contr(0.0, 0.5), 0.5)
    assert not isinstance(wrapped, diffrax.ODETerm), f"WrapTerm is now an ODETerm: update {PIN}"


def test_diffeqsolve_first_step_is_the_wrapped_terms():
    """The pool copies diffeqsolve's first step by wrapping its term as diffeqsolve does: the PID
    controller then starts from dt = 0.01 (not its error-estimate heuristic, used for a bare
    ODETerm). If diffrax stops wrapping, or changes that rule, the pool's steps drift from
    `gflow.simulate`'s."""
    WrapTerm = _import("diffrax._term", "WrapTerm")
    ctrl = diffrax.PIDController(rtol=1e-6, atol=1e-9)
    solver = diffrax.Tsit5()
    y0 = jnp.asarray([1.0, 2.0])
    wrapped = WrapTerm(diffrax.ODETerm(_decay), jnp.asarray(1, jnp.int32))
    tnext, _ = ctrl.init(wrapped, 0.0, 1.0, y0, None, None, solver.func, solver.error_order(wrapped))
    assert float(tnext) == pytest.approx(0.01), f"PIDController's first step on a WrapTerm changed: update {PIN}"
    sol = diffrax.diffeqsolve(diffrax.ODETerm(_decay), solver, 0.0, 1.0, None, y0,
                              stepsize_controller=ctrl, saveat=diffrax.SaveAt(steps=True))
    assert float(sol.ts[0]) == pytest.approx(float(tnext)), (
        f"diffeqsolve's first step ({float(sol.ts[0])}) is no longer the wrapped term's "
        f"({float(tnext)}): update {PIN}"
    )


def test_prevbefore_is_the_float_below():
    prevbefore = _import("equinox.internal", "prevbefore")
    for x in (1.0, 40.0, 1e-3):
        got = prevbefore(jnp.asarray(x))
        assert float(got) == np.nextafter(x, -np.inf), f"equinox.internal.prevbefore changed: update {PIN}"

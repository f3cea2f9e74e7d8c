"""One result: `trajectory.assemble` builds every Trajectory, every path fills the stats keys
`STATS`, and `status.decide` maps how a solve ended to one code on every path."""

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import batching, status, trajectory
from test_switching import SLIDE, U0, W0, _slide_objective  # the 2-D flow that slides once

SLIDE0 = {"u": jnp.asarray(U0), "w": jnp.asarray(W0)}


def _decay(p):
    return 0.5 * jnp.sum(p**2)


def _assert_stats(traj, shape=()):
    assert sorted(traj.stats) == sorted(trajectory.STATS)  # a pytree dict comes back key-sorted
    for k, v in traj.stats.items():
        assert v.shape == shape and v.dtype == jnp.int32, k


def test_plain_path_fills_stats_with_zeros():
    traj = gflow.simulate(_decay, jnp.ones(3), 1.0, rtol=1e-8)
    _assert_stats(traj)
    # zero counts; the plain solve ran because the objective has no kinks
    assert int(traj.stats["switching_reason"]) == gflow.options.SWITCHING_NO_KINKS == 1
    assert all(int(v) == 0 for k, v in traj.stats.items() if k != "switching_reason")
    np.testing.assert_allclose(traj.final_params, np.exp(-1.0), rtol=1e-7)


def test_switching_path_fills_stats():
    traj = gflow.simulate(_slide_objective, SLIDE0, 2.0, switching=SLIDE, rtol=1e-8)
    _assert_stats(traj)
    assert traj.status == "success"
    assert int(traj.stats["switching"]) == 1
    # it reaches w = 0 and slides (no crossing), then leaves (tests/test_switching.py)
    assert int(traj.stats["num_crossings"]) == 0 and int(traj.stats["num_sliding_starts"]) == 1
    assert int(traj.stats["num_sliding_exits"]) == 1 and int(traj.stats["switching_fallback"]) == 0
    assert int(traj.stats["switching_reason"]) == gflow.options.SWITCHING_RAN


def test_pool_path_fills_stats_per_point():
    P = jnp.stack([jnp.ones(3), 2 * jnp.ones(3)])
    traj, _ = batching.solve_batch(_decay, P, 1.0, rtol=1e-8, lanes=1)
    _assert_stats(traj, (2,))
    np.testing.assert_array_equal(traj.stats["switching_reason"], [gflow.options.SWITCHING_NO_KINKS] * 2)
    assert all(int(np.sum(v)) == 0 for k, v in traj.stats.items() if k != "switching_reason")


def test_assemble_masks_after_t_final_and_counts_grad_evals():
    ts = jnp.asarray([0.0, 0.5, 1.0])
    saved = {"loss": jnp.asarray([3.0, 2.0, 1.0]), "observables": {"a": jnp.ones((3, 2))}, "params": None}
    code = status.decide(reached=jnp.asarray(False), fired=jnp.asarray(True))
    traj = trajectory.assemble(
        ts=ts, reached=ts <= 0.6, saved=saved, status_code=code, t_final=jnp.asarray(0.6),
        final_params=jnp.zeros(2), num_steps=jnp.asarray(10), num_accepted_steps=jnp.asarray(8),
        num_rejected_steps=jnp.asarray(2), solver=diffrax.Dopri5(), stats={"extra_grad_evals": 4},
    )
    assert traj.status == "event" and float(traj.t_event) == 0.6
    np.testing.assert_array_equal(traj.ts, [0.0, 0.5, np.nan])
    np.testing.assert_array_equal(traj.loss, [3.0, 2.0, np.nan])
    assert np.isnan(traj.observables["a"][2]).all() and not np.isnan(traj.observables["a"][:2]).any()
    # Dopri5: 7 stages, first-same-as-last → 6 per step, 1 at t0; plus the extra evaluations.
    assert int(traj.num_grad_evals) == 6 * 10 + 1 + 4
    assert trajectory.grad_evals_per_step(diffrax.Heun()) == (2, 0)


def test_stats_outside_STATS_are_an_error():
    with pytest.raises(ValueError, match=r"\['colour'\] are not in gflow.trajectory.STATS"):
        trajectory.full_stats({"colour": 1}, jnp.asarray(0))


R = diffrax.RESULTS


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(result=R.successful), status.SUCCESS),
        (dict(result=R.max_steps_reached), status.MAX_STEPS),
        (dict(result=R.dt_min_reached), status.NONFINITE),
        (dict(result=R.event_occurred), status.FAILED),
        (dict(result=R.successful, fired=True), status.EVENT),
        (dict(result=R.dt_min_reached, fired=True), status.NONFINITE),
        (dict(result=R.successful, fired=True, nonfinite=True), status.NONFINITE),
        (dict(reached=True), status.SUCCESS),
        (dict(reached=False), status.MAX_STEPS),
        (dict(reached=False, stalled=True), status.STALLED),
        (dict(reached=False, stalled=True, fired=True), status.EVENT),
        (dict(reached=True, stalled=True, fired=True, nonfinite=True), status.NONFINITE),
    ],
)
def test_decide(kwargs, expected):
    assert int(status.decide(**kwargs)) == expected


def test_decide_needs_one_base():
    with pytest.raises(ValueError, match="exactly one of"):
        status.decide(fired=True)


def test_decide_on_lanes():
    codes = status.decide(reached=jnp.asarray([True, False, False]), fired=jnp.asarray([False, True, False]))
    np.testing.assert_array_equal(codes, [status.SUCCESS, status.EVENT, status.MAX_STEPS])

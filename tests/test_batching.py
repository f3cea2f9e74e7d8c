"""The continuous-batching pool against `gflow.simulate` (a second, independent driver of the
same diffrax solver: its own `diffeqsolve` loop, saves and event root find) and against closed
forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import batching, status

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((10, 5)))
Y = jnp.sign(X[:, 0])
SCALES = jnp.array([1e-6, 1e-3, 1e-1, 0.5, 1.0])
TS = jnp.linspace(0.0, 8.0, 5)
T1 = 8.0


def objective(params, args):
    """Smooth two-layer net (tanh), logistic loss: steps are reproducible to round-off."""
    f = jnp.tanh(args["X"] @ params["W"].T) @ params["v"]
    return jnp.mean(jnp.log1p(jnp.exp(-args["y"] * f)))


def half_loss(params, args):
    """Event: L(θ) crosses 0.55·log 2 (reached by the larger init scales only)."""
    return objective(params, args) - 0.55 * jnp.log(2.0)


OBSERVABLES = {"norm": lambda p, a: gflow.observables.param_norm(p), "v": lambda p, a: p["v"]}


def stacked_params(scales):
    keys = jax.random.split(jax.random.PRNGKey(1), len(scales))
    P = jax.vmap(lambda k: gflow.models.init_two_layer(k, 5, 4, 1.0))(keys)
    return jax.tree.map(lambda x: x * scales.reshape((-1,) + (1,) * (x.ndim - 1)), P)


PARAMS = stacked_params(SCALES)
ARGS = {"X": X, "y": Y}
KW = dict(saveat=TS, observables=OBSERVABLES, event=half_loss, rtol=1e-7)


@pytest.fixture(scope="module")
def pooled():
    """Five points through a pool of two lanes (three refills), data shared by all lanes."""
    return batching.solve_batch(objective, PARAMS, T1, args=ARGS, shared_args=True, lanes=2, **KW)


@pytest.fixture(scope="module")
def references():
    return [
        gflow.simulate(objective, jax.tree.map(lambda x: x[i], PARAMS), T1, args=ARGS, **KW)
        for i in range(len(SCALES))
    ]


def test_pool_agrees_with_simulate(pooled, references):
    traj, _ = pooled
    names = list(traj.status)
    assert "event" in names and "success" in names  # both endings occur in one pool
    for i, ref in enumerate(references):
        assert int(traj.status_code[i]) == int(ref.status_code)
        # Same solver, same controller, same steps: identical step counts, values to round-off.
        assert int(traj.num_steps[i]) == int(ref.num_steps)
        assert int(traj.num_rejected_steps[i]) == int(ref.num_rejected_steps)
        assert int(traj.num_grad_evals[i]) == int(ref.num_grad_evals)
        np.testing.assert_allclose(traj.loss[i], ref.loss, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(traj.observables["v"][i], ref.observables["v"], rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(traj.t_final[i], ref.t_final, rtol=1e-11)
        np.testing.assert_allclose(traj.t_event[i], ref.t_event, rtol=1e-11)
        np.testing.assert_allclose(traj.final_params["W"][i], ref.final_params["W"], rtol=1e-9, atol=1e-14)
        np.testing.assert_array_equal(np.isnan(traj.ts[i]), np.isnan(ref.ts))


def test_event_is_located_on_the_level_set(pooled):
    traj, _ = pooled
    fired = np.asarray(traj.status_code) == status.EVENT
    for i in np.flatnonzero(fired):
        theta = jax.tree.map(lambda x: x[i], traj.final_params)
        assert abs(float(half_loss(theta, ARGS))) < 1e-9


def test_pool_stats_count_every_step(pooled):
    traj, stats = pooled
    # Each useful lane-iteration is one attempted step of one point: an independent count.
    assert stats.lane_steps == int(np.sum(traj.num_steps))
    assert stats.lanes == 2
    assert stats.iterations >= int(np.max(traj.num_steps))
    # Continuous batching: iterations ≈ total steps / lanes, far fewer than lockstep's
    # ceil(N/lanes) · max steps.
    lockstep = -(-len(SCALES) // 2) * int(np.max(traj.num_steps))
    assert stats.iterations < lockstep
    assert 0.5 < stats.efficiency <= 1.0


def test_per_point_args_padding_and_failure():
    """Per-point data (one dataset per lane), padded rows left unsolved, and a blow-up point:
    dθ/dt = r·θ for L = −r‖θ‖²/2 has θ(t) = θ0·e^{rt}."""

    def linear(params, args):
        return -0.5 * args["r"] * jnp.sum(params["w"] ** 2)

    rates = jnp.array([-1.0, 0.5, 2.0, 400.0, 0.0, 0.0])  # last two rows: padding
    params0 = {"w": jnp.outer(jnp.ones(6), jnp.array([1.0, -2.0, 0.5]))}
    traj, stats = batching.solve_batch(
        linear, params0, 2.0, args={"r": rates}, num_points=4, lanes=3, rtol=1e-8,
        saveat=jnp.linspace(0.0, 2.0, 3),
    )
    assert list(traj.status[:4]) == ["success", "success", "success", "nonfinite"]
    assert list(traj.status_code[4:]) == [-1, -1]
    assert np.all(np.isnan(traj.loss[4:]))
    t = np.linspace(0.0, 2.0, 3)
    for i, r in enumerate([-1.0, 0.5, 2.0]):
        exact = -0.5 * r * 5.25 * np.exp(2 * r * t)
        np.testing.assert_allclose(traj.loss[i], exact, rtol=1e-6)
    assert stats.lane_steps == int(np.sum(traj.num_steps[:4]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(params0={"W": jnp.asarray(1.0)}), "leading axis"),
        (dict(params0={"W": jnp.ones((3, 2)), "v": jnp.ones((2,))}), "leading axis"),
        (dict(args={"X": jnp.ones((4, 2))}), "leading axis of size N = 3"),
        (dict(num_points=4), "num_points"),
        (dict(lanes=0), "lanes"),
        (dict(max_steps=0), "max_steps"),
        (dict(rtol=-1.0), "rtol"),
    ],
)
def test_bad_input(kwargs, match):
    call = dict(params0={"W": jnp.ones((3, 2))}, args={"X": jnp.ones((3, 2))})
    call.update(kwargs)
    fn = lambda p, a: jnp.sum(p["W"] ** 2) * jnp.sum(a["X"])  # noqa: E731
    with pytest.raises(ValueError, match=match):
        batching.solve_batch(fn, call.pop("params0"), 1.0, **call)


@pytest.fixture(scope="module")
def relu_points():
    """Issue 18's table: not-well-separated data, a two-layer ReLU net of width 20, ε = 1e-2,
    exponential loss; three seeds. `gflow.simulate` runs the switching solve on it."""
    X, y = gflow.data.hyperplane(40, 10, seed=0)
    L = gflow.objective(gflow.models.two_layer, gflow.losses.exponential, X, y)
    params = [gflow.models.init_two_layer(jax.random.PRNGKey(s), 10, 20, 1e-2) for s in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *params)
    ts = jnp.linspace(0.0, 5.0, 6)
    singles = [gflow.simulate(L, p, 5.0, saveat=ts, rtol=1e-8, save_params=False) for p in params]
    return L, stacked, ts, singles


@pytest.mark.parametrize("lanes", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_pool_runs_the_switching_stepper_as_simulate(relu_points, lanes):
    """Point by point, the pool takes the very steps of `gflow.simulate`'s switching solve and
    ends at the same parameters (issue 18), with 1 lane and with several lanes (2 lanes for 3
    points: one lane is refilled)."""
    L, stacked, ts, singles = relu_points
    traj, stats = batching.solve_batch(L, stacked, 5.0, saveat=ts, rtol=1e-8, lanes=lanes)
    assert stats.lanes == lanes
    _same_as_simulate(traj, singles)
    if lanes == 1:
        return
    # switching=False in the pool is the plain solve: many more steps on this kinked flow
    one = jax.tree.map(lambda x: x[:1], stacked)
    traj, _ = batching.solve_batch(L, one, 5.0, saveat=ts, rtol=1e-8, switching=False, max_steps=3000)
    assert int(traj.stats["switching"][0]) == 0
    assert int(traj.num_steps[0]) > 3 * int(singles[0].num_steps)


def _same_as_simulate(traj, singles):
    for i, one in enumerate(singles):
        assert int(one.stats["switching"]) == 1 and int(traj.stats["switching"][i]) == 1
        assert one.status == "success" and traj.status[i] == "success"
        assert int(traj.num_accepted_steps[i]) == int(one.num_accepted_steps)
        assert int(traj.num_rejected_steps[i]) == int(one.num_rejected_steps)
        assert int(traj.stats["num_crossings"][i]) == int(one.stats["num_crossings"])
        for a, b in zip(jax.tree.leaves(traj.final_params), jax.tree.leaves(one.final_params)):
            np.testing.assert_allclose(a[i], b, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(traj.loss[i], one.loss, rtol=1e-10)


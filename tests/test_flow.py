"""gflow.simulate against independent references: finite differences, closed forms, scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import gflow
from gflow import baselines, losses, models, observables


def _smooth_objective(params):
    h = jnp.tanh(params["layer"]["W"] @ params["x"])
    return jnp.sum(jnp.log1p(jnp.exp(-h * params["v"]))) + 0.3 * jnp.sum(params["v"] ** 4)


def test_vector_field_is_minus_gradient_by_finite_differences():
    rng = np.random.default_rng(0)
    params = {
        "layer": {"W": jnp.asarray(rng.standard_normal((4, 3)))},
        "x": jnp.asarray(rng.standard_normal(3)),
        "v": jnp.asarray(rng.standard_normal(4)),
    }
    field = gflow.vector_field(_smooth_objective)(0.0, params, None)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    f = lambda z: float(_smooth_objective(unravel(z)))  # noqa: E731
    h = 1e-6
    fd = np.array([(f(flat + h * e) - f(flat - h * e)) / (2 * h) for e in np.eye(flat.size)])
    got = np.asarray(jax.flatten_util.ravel_pytree(field)[0])
    np.testing.assert_allclose(got, -fd, rtol=1e-7, atol=1e-8)


def test_linear_least_squares_matches_matrix_exponential():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((8, 5))
    b = rng.standard_normal(8)
    params0 = {"a": jnp.asarray(rng.standard_normal(3)), "b": jnp.asarray(rng.standard_normal((1, 2)))}
    flat0, unravel = jax.flatten_util.ravel_pytree(params0)
    L = lambda p: 0.5 * jnp.sum((A @ jax.flatten_util.ravel_pytree(p)[0] - b) ** 2)  # noqa: E731
    ts = np.linspace(0.0, 3.0, 7)
    traj = gflow.simulate(L, params0, 3.0, saveat=ts, rtol=1e-11)
    assert traj.status == "success"
    theta_star = np.linalg.solve(A.T @ A, A.T @ b)
    for k, t in enumerate(ts):
        exact = theta_star + scipy.linalg.expm(-A.T @ A * t) @ (np.asarray(flat0) - theta_star)
        got = np.asarray(jax.flatten_util.ravel_pytree(jax.tree.map(lambda x: x[k], traj.params))[0])
        assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 1e-8
    np.testing.assert_allclose(traj.loss, [L(unravel(jnp.asarray(
        theta_star + scipy.linalg.expm(-A.T @ A * t) @ (np.asarray(flat0) - theta_star)))) for t in ts], rtol=1e-8)


def equiangular(n, d, mu, seed):
    """μ-separated data: z_i = √μ e_0 + √(1−μ) e_i, x_i = y_i Q z_i (every pair at exactly μ)."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    Z = np.zeros((n, d))
    Z[:, 0] = np.sqrt(mu)
    Z[np.arange(n), 1 + np.arange(n)] = np.sqrt(1 - mu)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (y[:, None] * Z) @ Q.T, y


X_SEP, Y_SEP = equiangular(10, 12, 0.5, seed=3)
L_SEP = losses.objective(models.two_layer, "exponential", X_SEP, Y_SEP, reduction="sum")
GRAD_SEP = baselines.two_layer_numpy_grad(X_SEP, Y_SEP, loss="exponential", reduction="sum")
T_SEP = 12.0


@pytest.mark.parametrize("init_scale", [1e-2, 1e-6, 1e-10])
def test_two_layer_relu_matches_scipy_dop853_and_conserves_balancedness(init_scale):
    params0 = models.init_two_layer(jax.random.PRNGKey(0), 12, 8, init_scale)
    traj = gflow.simulate(
        L_SEP,
        params0,
        T_SEP,
        saveat=jnp.linspace(0.0, T_SEP, 25),
        rtol=1e-9,
        observables={"balancedness": observables.balancedness, "norms": observables.neuron_norms},
        max_steps=200_000,
    )
    assert traj.status == "success"
    # The run goes through alignment and into the fitting phase: the loss has dropped a lot.
    assert float(traj.loss[-1]) < 0.05 * float(traj.loss[0])
    # Balancedness v_j² − ‖w_j‖² is conserved; relative to the scale of the neurons it measures.
    bal = np.asarray(traj.observables["balancedness"])
    scale = np.max(np.asarray(traj.observables["norms"]) ** 2, axis=0)
    assert np.max(np.abs(bal - bal[0]) / scale) < 1e-7

    _, ref, info = baselines.scipy_flow(
        lambda p: dict(zip(("W", "v"), GRAD_SEP(p["W"], p["v"]))),
        jax.tree.map(np.asarray, params0),
        T_SEP,
        method="DOP853",
        rtol=1e-11,
    )
    assert info["status"] == 0
    got = np.concatenate([np.ravel(traj.final_params["W"]), traj.final_params["v"]])
    want = np.concatenate([np.ravel(ref[-1]["W"]), ref[-1]["v"]])
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6


def _relative_error(params, reference):
    diff = jax.flatten_util.ravel_pytree(jax.tree.map(jnp.subtract, params, reference))[0]
    return float(jnp.linalg.norm(diff) / jnp.linalg.norm(jax.flatten_util.ravel_pytree(reference)[0]))


def test_scale_aware_tolerance_gives_scale_free_accuracy():
    """Same rtol, init scales 1e-3 and 1e-9: the same relative error. A fixed atol does not."""
    errs = {}
    for eps in (1e-3, 1e-9):
        p0 = models.init_two_layer(jax.random.PRNGKey(5), 12, 8, eps)
        tight = gflow.simulate(L_SEP, p0, 2.0, rtol=1e-11).final_params
        errs[eps] = _relative_error(gflow.simulate(L_SEP, p0, 2.0, rtol=1e-6).final_params, tight)
        if eps == 1e-9:
            fixed = gflow.simulate(L_SEP, p0, 2.0, rtol=1e-6, atol=1e-8).final_params
            errs["fixed"] = _relative_error(fixed, tight)
    assert max(errs[1e-3], errs[1e-9]) < 1e-4
    assert errs[1e-9] < 10 * errs[1e-3]  # tiny weights are not "converged" for free
    assert errs["fixed"] > 100 * errs[1e-9]


def test_gradient_descent_converges_to_flow_at_first_order():
    params0 = models.init_two_layer(jax.random.PRNGKey(2), 12, 8, 0.3)
    T = 2.0
    ref = gflow.simulate(L_SEP, params0, T, rtol=1e-11).final_params
    lrs = np.array([0.02, 0.01, 0.005, 0.0025])
    errs = []
    for lr in lrs:
        gd = baselines.gradient_descent(L_SEP, params0, float(lr), T)
        assert gd.status == "success" and int(gd.num_grad_evals) == round(T / lr)
        d = jax.flatten_util.ravel_pytree(jax.tree.map(jnp.subtract, gd.final_params, ref))[0]
        errs.append(float(jnp.linalg.norm(d)))
    slope = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
    assert 0.8 <= slope <= 1.2


def _decay(p):
    return 0.5 * jnp.sum(p**2)


@pytest.mark.parametrize("kind", ["float", "bool"])
def test_event_time_is_located_on_the_dense_output(kind):
    # θ' = −θ: L(t) = L0 e^{−2t}, so L = c at t = ½ ln(L0/c).
    p0 = jnp.array([1.0, 2.0])
    c = 0.1
    event = (lambda p: _decay(p) - c) if kind == "float" else (lambda p: _decay(p) < c)
    traj = gflow.simulate(_decay, p0, 10.0, event=event, saveat=jnp.array([0.0, 0.5, 5.0]), rtol=1e-10)
    exact = 0.5 * np.log(2.5 / c)
    assert traj.status == "event"
    assert abs(float(traj.t_event) - exact) < 1e-9
    assert abs(float(_decay(traj.final_params)) - c) < 1e-10
    assert np.isnan(float(traj.loss[-1]))  # saves after the event are marked missing
    np.testing.assert_allclose(traj.loss[:2], 2.5 * np.exp(-2 * np.array([0.0, 0.5])), rtol=1e-6)


@pytest.mark.parametrize("kind", ["float", "bool"])
def test_float32_solve_with_event_runs_in_float32(kind):
    # float32 is the user's choice under jax_enable_x64: the event time of the closed form
    # ½ ln(L0/c) to a few rtol, results in float32.
    p0 = jnp.array([1.0, 2.0], jnp.float32)
    c = 0.1
    event = (lambda p: _decay(p) - c) if kind == "float" else (lambda p: _decay(p) < c)
    traj = gflow.simulate(_decay, p0, 10.0, event=event, rtol=2e-4)
    assert traj.status == "event"
    assert traj.final_params.dtype == jnp.float32
    exact = 0.5 * np.log(2.5 / c)
    assert abs(float(traj.t_event) - exact) < 5 * 2e-4 * exact  # a few rtol


@pytest.mark.slow  # compiles the switching solve a second time, in float32
def test_float32_switching_solve_agrees_with_float64():
    # The ReLU net's switching solve in float32 against the float64 one at rtol 1e-10 (named
    # explicitly: at float32's rtol, `switching=None` would choose the plain solve).
    def run(dtype, rtol):
        objective = gflow.objective(models.two_layer, "exponential", X_SEP.astype(dtype), Y_SEP.astype(dtype))
        p0 = jax.tree.map(lambda v: v.astype(dtype), models.init_two_layer(jax.random.PRNGKey(1), 12, 8, 1e-2))
        return gflow.simulate(objective, p0, T_SEP, rtol=rtol, switching=objective.switching)

    single, double = run(np.float32, 2e-4), run(np.float64, 1e-10)
    assert single.status == "success" and single.final_params["W"].dtype == jnp.float32
    assert int(single.stats["num_crossings"]) > 0
    assert _relative_error(jax.tree.map(lambda v: v.astype(jnp.float64), single.final_params), double.final_params) < 1e-3


def test_max_steps_gives_a_status_not_an_exception():
    traj = gflow.simulate(L_SEP, models.init_two_layer(jax.random.PRNGKey(0), 12, 8, 1e-3), 10.0, max_steps=3)
    assert traj.status == "max_steps"
    assert int(traj.num_steps) == 3


def test_blowup_gives_nonfinite_status():
    traj = gflow.simulate(lambda p: -jnp.sum(p**4), jnp.ones(3), 2.0)  # θ' = 4θ³ blows up at t = 1/8
    assert traj.status == "nonfinite"
    assert abs(float(traj.t_final) - 0.125) < 1e-3


def test_vmapped_batch_keeps_good_lanes():
    # Lane a: L = ½θ² − a·θ⁴/4·8; a = 1 blows up, a = 0 decays as e^{−t}.
    def L(p, a):
        return 0.5 * (1 - a) * jnp.sum(p**2) - 2.0 * a * jnp.sum(p**4)

    p0 = jnp.ones((3, 2))
    a = jnp.array([0.0, 1.0, 0.0])
    run = jax.vmap(lambda p, ai: gflow.simulate(L, p, 1.0, args=ai, saveat=jnp.array([0.0, 1.0])))
    traj = run(p0, a)
    assert list(traj.status) == ["success", "nonfinite", "success"]
    np.testing.assert_allclose(traj.final_params[0], np.exp(-1.0), rtol=1e-5)
    np.testing.assert_allclose(traj.final_params[2], np.exp(-1.0), rtol=1e-5)


def test_observables_without_weights_and_grad_eval_count():
    p0 = models.init_two_layer(jax.random.PRNGKey(1), 12, 8, 1e-3)
    traj = gflow.simulate(
        L_SEP, p0, 5.0, saveat=jnp.linspace(0, 5, 11), save_params=False,
        observables={"srank": observables.weight_stable_rank, "grown": lambda p: observables.param_norm(p) > 0.1},
        solver="dopri5", switching=False,
    )
    assert traj.params is None
    assert traj.observables["srank"].shape == (11,)
    full = gflow.simulate(L_SEP, p0, 5.0, saveat=jnp.linspace(0, 5, 11), solver="dopri5", switching=False)
    np.testing.assert_allclose(
        traj.observables["srank"], jax.vmap(observables.weight_stable_rank)(full.params), rtol=1e-12
    )
    grown = np.asarray(jax.vmap(observables.param_norm)(full.params)) > 0.1
    assert 0 < grown.sum() < grown.size  # the boolean observable flips during the run
    np.testing.assert_array_equal(traj.observables["grown"], grown.astype(float))
    # Plain Dopri5: 7 stages, first-same-as-last → 6 evaluations per step plus one at t0.
    assert int(traj.num_grad_evals) == 6 * int(traj.num_steps) + 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"t1": 0.0}, "greater than t0"),
        ({"solver": "rk45"}, "unknown solver"),
        ({"rtol": -1.0}, "rtol must be positive"),
        ({"rtol": 1e-14}, "below what float64 resolves"),
        ({"params0": {"W": jnp.ones((2, 12), jnp.float32), "v": jnp.ones(2, jnp.float32)}, "rtol": 1e-6}, "float32"),
        ({"saveat": [0.0, 20.0]}, "saveat must lie"),
        ({"max_steps": 0}, "max_steps"),
        ({"params0": {"W": jnp.ones((2, 12)), "v": jnp.array([1.0, jnp.nan])}}, "NaN"),
        ({"params0": {"W": jnp.ones((2, 12), int), "v": jnp.ones(2)}}, "dtype"),
        ({"params0": {"W": jnp.ones((2, 5)), "v": jnp.ones(2)}}, "could not be evaluated"),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, message):
    call = {"params0": {"W": jnp.ones((2, 12)), "v": jnp.ones(2)}, "t1": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        gflow.simulate(L_SEP, call.pop("params0"), call.pop("t1"), **call)


@pytest.mark.parametrize(
    "objective",
    [_decay, pytest.param(L_SEP, marks=pytest.mark.slow)],  # the switching solve's bar: another compile
    ids=["smooth", "relu-switching"],
)
def test_progress_bar_runs(capsys, objective):
    p0 = jnp.ones(2) if objective is _decay else models.init_two_layer(jax.random.PRNGKey(0), 12, 8, 1e-3)
    traj = gflow.simulate(objective, p0, 1.0, progress=True)
    assert traj.status == "success"
    assert "100.00%" in capsys.readouterr().err

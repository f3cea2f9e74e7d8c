"""Tests of gflow.kinks: switching surfaces read from any objective's program."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import kinks

X0 = jnp.array([0.3, -0.7, 1.2])
SIGNS = jnp.array([1.0, -1.0, 1.0])

# objective, its switching functions in closed form
CASES = {
    "relu": (lambda x: jnp.sum(jax.nn.relu(x) * (x + 2)), lambda x: x),
    "leaky_relu": (lambda x: jnp.sum(jax.nn.leaky_relu(x, 0.1) * (x[0] + 2)), lambda x: x),
    "models_leaky_relu": (lambda x: jnp.sum(gflow.models._leaky_relu(x) ** 2), lambda x: x),
    "abs": (lambda x: jnp.sum(jnp.abs(x - 0.1)), lambda x: x - 0.1),
    "max_of_branches": (lambda x: jnp.sum(jnp.maximum(x, x**2)), lambda x: x - x**2),
    "min_constant": (lambda x: jnp.sum(jnp.minimum(x, 0.5)), lambda x: x - 0.5),
    "where_on_sign": (lambda x: jnp.sum(jnp.where(x > 1.0, x, 2 * x - 1.0)), lambda x: x - 1.0),
    "where_lt": (lambda x: jnp.sum(jnp.where(x < 0.2, 0.2, x) * x[2]), lambda x: 0.2 - x),
    "hinge": (lambda x: jnp.sum(jnp.maximum(0.0, 1 - SIGNS * x)), lambda x: SIGNS * x - 1),
    "indicator_times": (lambda x: jnp.sum(x * (x > 0)), lambda x: x),
    # jnp.clip lowers to min(0.5, max(−0.5, x))
    "clip": (lambda x: jnp.sum(jnp.clip(x, -0.5, 0.5) ** 2), lambda x: jnp.concatenate([-0.5 - x, 0.5 - jnp.maximum(x, -0.5)])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kinks_found_and_frozen(name):
    """The surfaces are the kinks' arguments; the frozen objective equals L and ∇L on the
    current pattern; each p_k enters affinely where the kink's value does (checked by the
    midpoint rule on each p_k alone)."""
    f, s_true = CASES[name]
    sw = kinks.find(f, X0)
    assert sw is not None
    s = sw.surfaces(X0)
    np.testing.assert_allclose(s, s_true(X0), rtol=1e-14, atol=1e-15)
    p = (s > 0).astype(float)
    L, g = jax.value_and_grad(f)(X0)
    Lp, gp = jax.value_and_grad(lambda x: sw.objective(x, p))(X0)
    np.testing.assert_allclose(Lp, L, rtol=1e-14)
    np.testing.assert_allclose(gp, g, rtol=1e-14, atol=1e-15)
    if name != "models_leaky_relu" and name != "clip":  # those square the frozen value
        for k in range(s.shape[0]):
            at = lambda v: sw.objective(X0, p.at[k].set(v))
            np.testing.assert_allclose(at(0.5), 0.5 * (at(0.0) + at(1.0)), rtol=1e-13, atol=1e-15)


def test_no_kinks_and_data_only_kinks():
    """Smooth programs (tanh, softplus, logsumexp: its max is stop-gradiented, its |Σ exp| never
    at zero) and kinks of the data alone give no Switching."""
    data = jnp.array([1.0, -1.0, 2.0])
    assert kinks.find(lambda x: jnp.sum(jnp.tanh(x)), X0) is None
    assert kinks.find(lambda x: jnp.sum(jax.nn.softplus(x)) + jax.nn.logsumexp(x), X0) is None
    assert kinks.find(lambda x: jnp.sum(x * jax.nn.relu(data)), X0) is None
    assert kinks.find(lambda x: jnp.sum(jax.lax.stop_gradient(jnp.abs(x)) * x), X0) is None


def test_not_understood_falls_back_with_a_warning():
    with pytest.warns(UserWarning, match="cannot be frozen"):
        assert kinks.find(lambda x: jnp.sum(jnp.sort(x)[:2]), X0) is None


def _three_layer(params, X):
    """A user's 3-layer ReLU net in plain JAX (no gflow model)."""
    h1 = jax.nn.relu(X @ params["W1"].T)
    h2 = jax.nn.relu(h1 @ params["W2"].T)
    return h2 @ params["v"]


def test_deep_net_surfaces_are_every_layers_preactivations():
    """A 3-layer net: K = n (h1 + h2) surfaces, the pre-activations of both hidden layers (the
    second nonlinear in θ); an equinox MLP's likewise, with args passed through."""
    k1, k2, k3, kx = jax.random.split(jax.random.PRNGKey(0), 4)
    X = jax.random.normal(kx, (5, 3))
    params = {"W1": jax.random.normal(k1, (4, 3)), "W2": jax.random.normal(k2, (6, 4)), "v": jax.random.normal(k3, (6,))}
    L = lambda p, X: jnp.mean(jnp.square(_three_layer(p, X) - 1.0))
    sw = kinks.find(L, params, X)
    s = sw.surfaces(params, X)
    z1 = X @ params["W1"].T
    z2 = jax.nn.relu(z1) @ params["W2"].T
    np.testing.assert_allclose(s, jnp.concatenate([z1.ravel(), z2.ravel()]), rtol=1e-14)
    p = (s > 0).astype(float)
    np.testing.assert_allclose(
        jax.grad(lambda q: sw.objective(q, p, X))(params)["W1"], jax.grad(L)(params, X)["W1"], rtol=1e-13
    )

    mlp = eqx.nn.MLP(3, "scalar", 4, 2, activation=jax.nn.relu, key=k1)
    arrays, static = eqx.partition(mlp, eqx.is_array)
    Lm = lambda a, X: jnp.mean(jnp.square(jax.vmap(eqx.combine(a, static))(X) - 1.0))
    swm = kinks.find(Lm, arrays, X)
    assert swm.surfaces(arrays, X).shape == (5 * 8,)
    pm = (swm.surfaces(arrays, X) > 0).astype(float)
    np.testing.assert_allclose(swm.objective(arrays, pm, X), Lm(arrays, X), rtol=1e-14)


def test_find_traces_once_per_objective_and_shapes():
    f = CASES["relu"][0]
    assert kinks.find(f, X0).surfaces.__self__.jaxpr is kinks.find(f, X0 + 1.0).surfaces.__self__.jaxpr


def _small_net():
    k1, k2, k3, kx = jax.random.split(jax.random.PRNGKey(3), 4)
    X = jax.random.normal(kx, (6, 3))
    y = jnp.sign(X[:, 0] + 0.3)
    params = {"W1": 0.5 * jax.random.normal(k1, (4, 3)), "W2": 0.5 * jax.random.normal(k2, (4, 4)),
              "v": 0.5 * jax.random.normal(k3, (4,))}
    return X, y, params


@pytest.mark.slow
def test_simulate_finds_the_kinks_itself():
    """switching=None: a user's kinked objective runs the switching solve (stats["switching"]),
    a smooth one (tanh) and rtol ≥ SWITCHING_MAX_RTOL the plain one, False the plain one."""
    X, y, params = _small_net()
    deep = lambda p: jnp.mean(jnp.square(_three_layer(p, X) - y))
    smooth = lambda p: jnp.mean(jnp.square(jnp.tanh(X @ p["W1"].T) @ p["v"] - y))
    ran = lambda L, **kw: int(gflow.simulate(L, params, 0.5, **kw).stats["switching"])
    assert ran(deep, rtol=1e-8) == 1
    assert ran(deep, rtol=1e-8, switching=False) == 0
    assert ran(deep, rtol=1e-4) == 0
    assert ran(smooth, rtol=1e-8) == 0


@pytest.mark.slow
def test_equal_objectives_compile_once(caplog):
    """gflow.objective returns a value-hashable eqx.Module: rebuilding an equal objective (the
    closed-form two-layer one, and a hinge-loss one whose kinks `find` reads) with new data of
    the same shapes compiles nothing new."""
    import logging

    X, y = gflow.data.hyperplane(8, 3, seed=0)
    params0 = gflow.models.init_two_layer(jax.random.PRNGKey(0), 3, 4, 0.5)
    for loss in ("exponential", "hinge"):
        first = gflow.objective(gflow.models.two_layer, loss, X, y)
        gflow.simulate(first, params0, 0.2, rtol=1e-8)
        again = gflow.objective(gflow.models.two_layer, loss, X * 1.5, y)
        with jax.log_compiles(), caplog.at_level(logging.WARNING):
            caplog.clear()
            traj = gflow.simulate(again, params0, 0.2, rtol=1e-8)
        assert int(traj.stats["switching"]) == 1
        assert not [r for r in caplog.records if "Compiling" in r.getMessage()], loss


def _benchmarks(*names):
    """The modules `names` of benchmarks/ (not a package), imported without leaving it on sys.path."""
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, bench)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(bench)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["deep", "leaky", "mlp", "hinge"])
def test_models_against_the_event_driven_reference(kind):
    """Models gflow does not know (a user's 3-layer ReLU net sliding on a second-layer surface
    and leaving it, a leaky-ReLU net, an equinox MLP with biases), kinks found by `find`, at
    rtol 1e-8: ≥ 20× fewer steps than the plain solve and within 1e-6 (relative, weights) of the
    independent event-driven Filippov reference (numpy + scipy DOP853 at rtol 1e-12, agreeing
    with itself at 1e-10; benchmarks/kinks_any.py gives the horizons; the MLP's reference takes
    minutes: its normals are complex-step derivatives over 129 parameters), and the hinge
    two-layer net, whose margins and ReLU surfaces slide up to four at once."""
    kinks_any, reference = _benchmarks("kinks_any", "filippov_deep_reference")
    seed, t1 = kinks_any.HORIZONS[kind]
    L, params0, net, order = kinks_any.problem(kind, seed)
    ref, info = reference.integrate(net, order(params0), t1)
    sw = gflow.simulate(L, params0, t1, rtol=1e-8)
    plain = gflow.simulate(L, params0, t1, rtol=1e-8, switching=False, max_steps=400_000)
    error = np.max(np.abs(order(sw.final_params) - ref)) / np.max(np.abs(ref))
    assert int(sw.stats["switching"]) == 1 and str(sw.status) == "success"
    assert error < 1e-6, error
    assert int(plain.num_steps) >= 20 * int(sw.num_steps), (int(plain.num_steps), int(sw.num_steps))


def test_a_loss_with_kinks_keeps_its_surfaces_on_the_two_layer_net():
    """`gflow.objective(two_layer, "hinge")` gets no closed-form `Switching` (which holds the
    ReLU surfaces only: the margins were stepped over as in a plain solve, and the switching
    solve of kinks_any's hinge net hit 20,000 steps at t = 1.71); `find` reads both kinds: the
    n·h pre-activations x_iᵀw_j and the n margins (`max(0, 1 − y f)` gives s = 0 − (1 − y f))."""
    X, y = gflow.data.hyperplane(6, 3, seed=0)
    params0 = gflow.models.init_two_layer(jax.random.PRNGKey(0), 3, 4, 0.5)
    assert gflow.objective(gflow.models.two_layer, "exponential", X, y).switching is not None
    L = gflow.objective(gflow.models.two_layer, "hinge", X, y)
    assert L.switching is None
    s = np.sort(np.ravel(kinks.find(L, params0).surfaces(params0)))
    f = np.asarray(gflow.models.two_layer(params0, X))
    expected = np.concatenate([np.ravel(np.asarray(X @ params0["W"].T)), np.asarray(y) * f - 1])
    np.testing.assert_allclose(s, np.sort(expected), rtol=1e-12, atol=1e-15)


def test_reference_continues_sliding_by_the_minimal_norm_field():
    """The event-driven reference's decision where the flow reaches a surface k while sliding on
    another, j (the 3-layer seed-1 net at t = 1.4708: j = 280 slides, k = 224 is reached), is the
    Filippov field of a gradient flow: the minimal-norm element of the one-sided fields' convex
    hull, F(q) affine in q ∈ [0, 1]², found here by scipy's bounded least squares. Before, the
    reference decided with j's old one-sided fields, kept sliding on j at α_j = −0.32 and ended
    1e-2 away from gflow by t = 2.327 (docs/kinks.md)."""
    from scipy.optimize import lsq_linear

    kinks_any, reference = _benchmarks("kinks_any", "filippov_deep_reference")
    _, params0, net, order = kinks_any.problem("deep", 1)
    events = []
    solve_ivp = reference.solve_ivp

    def logged(*a, **k):
        sol = solve_ivp(*a, **k)
        events.extend((t, y) for te, ye in zip(sol.t_events, sol.y_events) for t, y in zip(te, ye))
        return sol

    reference.solve_ivp = logged
    try:
        reference.integrate(net, order(params0), 1.4708)
    finally:
        reference.solve_ivp = solve_ivp
    t, theta = events[-1]
    assert t == pytest.approx(1.470792, abs=1e-6)
    pattern = np.ones(2 * 8 * 20)
    for _ in range(3):  # the sides of the layers, from the input up (entries j, k are set below)
        pattern = (net.surfaces(theta, net.split(pattern)[0]) > 0).astype(float)
    j, k = 280, 224

    def field(qj, qk):
        p = pattern.copy()
        p[j], p[k] = qj, qk
        return net.field(theta, p)

    f00 = field(0.0, 0.0)
    J = np.stack([field(1.0, 0.0) - f00, field(0.0, 1.0) - f00], axis=1)
    np.testing.assert_allclose(field(1.0, 1.0), f00 + J.sum(axis=1), atol=1e-14)  # affine in q
    q = lsq_linear(J, -f00, bounds=(0.0, 1.0), tol=1e-14).x  # min ‖F(q)‖ over the box
    assert q[0] < 1e-12 and 0.1 < q[1] < 0.9  # j is left to its side 0, k slides (measured q_k = 0.4988)
    sliding, sides = reference.continuation(net, theta, pattern, [j, k], t)
    assert sliding == [k] and sides[j] == 0.0


@pytest.mark.slow
def test_automatic_two_layer_surfaces_match_the_closed_form():
    """benchmarks/kinks.py's quick problem (n = 40, d = 10, width 20, t ≤ 5, rtol 1e-8): the
    surfaces `find` reads from the two-layer program give the closed form's solve (same
    surfaces in the same order; jumps by jvp instead of in closed form)."""
    X, y = gflow.data.hyperplane(40, 10)
    L = gflow.objective(gflow.models.two_layer, "exponential", X, y)
    params0 = gflow.models.init_two_layer(jax.random.PRNGKey(0), 10, 20, 1e-2)
    found = kinks.find(L, params0)
    np.testing.assert_array_equal(found.surfaces(params0), L.switching.surfaces(params0).ravel())
    closed = gflow.simulate(L, params0, 5.0, rtol=1e-8)
    auto = gflow.simulate(L, params0, 5.0, rtol=1e-8, switching=found)
    assert int(auto.num_steps) == int(closed.num_steps)
    assert int(auto.stats["num_crossings"]) == int(closed.stats["num_crossings"])
    flat = lambda p: np.concatenate([np.ravel(p["W"]), np.ravel(p["v"])])
    np.testing.assert_allclose(flat(auto.final_params), flat(closed.final_params), atol=1e-10)



@pytest.mark.parametrize("case", ["hinge", "circle"])
def test_sliding_matches_the_closed_form(case):
    """Filippov sliding on a hinge margin (affine surface) and on the unit circle (curved,
    `Switching.linear` False), kinks found from the program, against the closed forms of
    `benchmarks/sliding_closed_form.py`: one sliding interval, still sliding at t1, weights
    within 1e-8 (relative) at rtol 1e-10 (measured 4.3e-12 and 1.9e-12), in few steps (51, 46;
    the plain solve does not reach t1 in 200,000)."""
    (sliding_closed_form,) = _benchmarks("sliding_closed_form")
    L, p0, t1, exact, t_s = sliding_closed_form.CASES[case]()
    assert 0.2 < t_s < t1 - 1.0  # the onset lies inside the interval, with time to slide after it
    traj = gflow.simulate(L, p0, t1, rtol=1e-10)
    assert int(traj.stats["switching"]) == 1 and traj.status == "success"
    assert int(traj.stats["num_sliding_starts"]) == 1 and int(traj.stats["sliding_final"]) == 1
    assert sliding_closed_form.error(traj, exact) < 1e-8
    assert int(traj.num_steps) < 200

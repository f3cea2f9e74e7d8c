"""Tests of gflow.switching: Filippov integration across ReLU switching surfaces.

References: a 2-D flow whose Filippov solution (reach the surface, slide, exit) is known in
closed form; scipy DOP853 at rtol 1e-12 on a net that only crosses surfaces; the same solve with
a second integrator (Dopri8) where the plain reference would grind.
"""

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import baselines, data, losses, models
from gflow.switching import Switching

# ---- a 2-D Filippov flow with a closed-form solution -------------------------------------
#
# L(u, w) = −u + 2·relu(w) − (c − u)·w, switching function s = w. Below the surface (w < 0):
# u' = 1 − w, w' = c − u, so p = u − c solves p'' = p. On w = 0 the one-sided normal velocities
# are a = c − u (from below) and b = c − u − 2 (from above): the flow slides while c − 2 < u < c,
# with u' = 1 (the Filippov field is tangent), and leaves downwards when u reaches c.
C = 1.0
U0, W0 = 0.0, -0.2
T_END = 2.0


def _slide_objective(params):
    u, w = params["u"], params["w"]
    return -u + 2 * jax.nn.relu(w) - (C - u) * w


SLIDE = Switching(
    surfaces=lambda params: params["w"][None],
    objective=lambda params, p: -params["u"] + 2 * p[0] * params["w"] - (C - params["u"]) * params["w"],
)


def _slide_closed_form(t_end):
    # phase 1: p = A eᵗ + B e⁻ᵗ with p(0) = U0 − C, p'(0) = 1 − W0; w = 1 − p'
    p0, dp0 = U0 - C, 1 - W0
    A, B = (p0 + dp0) / 2, (p0 - dp0) / 2
    z = (1 - np.sqrt(1 + 4 * A * B)) / (2 * A)  # w = 0 ⇔ A z² − z − B = 0, z = eᵗ, first root
    t_hit = np.log(z)
    u_hit = C + A * z + B / z
    t_exit = t_hit + (C - u_hit)  # u' = 1 on the surface until u = C
    tau = t_end - t_exit  # phase 3 from (C, 0): p = sinh τ, w = 1 − cosh τ
    return t_hit, u_hit, t_exit, (C + np.sinh(tau), 1 - np.cosh(tau))


def test_closed_form_is_a_sliding_solution():
    t_hit, u_hit, t_exit, _ = _slide_closed_form(T_END)
    assert 0 < t_hit < t_exit < T_END
    assert C - 2 < u_hit < C  # attractive from both sides on arrival


@pytest.fixture(scope="module")
def slide_runs():
    params0 = {"u": jnp.asarray(U0), "w": jnp.asarray(W0)}
    ts = jnp.linspace(0.0, T_END, 9)
    out = {}
    for rtol in (1e-6, 1e-10):
        out[rtol] = gflow.simulate(_slide_objective, params0, T_END, rtol=rtol, saveat=ts, switching=SLIDE)
    # a user event during the sliding phase: u = 0.5
    out["event"] = gflow.simulate(
        _slide_objective, params0, T_END, rtol=1e-10, switching=SLIDE, event=lambda p: p["u"] - 0.5
    )
    out["plain"] = gflow.simulate(
        _slide_objective, params0, T_END, rtol=1e-10, switching=False, max_steps=20_000
    )
    return out


def test_sliding_closed_form_to_1e8(slide_runs):
    traj = slide_runs[1e-10]
    u_ref, w_ref = _slide_closed_form(T_END)[3]
    assert traj.status == "success"
    assert abs(float(traj.final_params["u"]) - u_ref) < 1e-8
    assert abs(float(traj.final_params["w"]) - w_ref) < 1e-8
    stats = {k: int(v) for k, v in traj.stats.items()}
    assert stats["num_sliding_starts"] == 1 and stats["num_sliding_exits"] == 1
    assert stats["num_crossings"] == 0 and stats["sliding_final"] == 0


def test_sliding_saved_states_follow_the_surface(slide_runs):
    traj = slide_runs[1e-10]
    t_hit, u_hit, t_exit, _ = _slide_closed_form(T_END)
    ts = np.asarray(traj.ts)
    on = (ts > t_hit) & (ts < t_exit)
    assert on.any()
    np.testing.assert_allclose(np.asarray(traj.params["w"])[on], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.params["u"])[on], u_hit + ts[on] - t_hit, atol=1e-9)
    np.testing.assert_allclose(traj.loss, jax.vmap(_slide_objective)(traj.params), rtol=1e-14)


def test_user_event_while_sliding(slide_runs):
    t_hit, u_hit, _, _ = _slide_closed_form(T_END)
    traj = slide_runs["event"]
    assert traj.status == "event"
    assert abs(float(traj.t_event) - (t_hit + 0.5 - u_hit)) < 1e-10
    assert abs(float(traj.final_params["u"]) - 0.5) < 1e-10
    assert np.isnan(np.asarray(traj.loss)[-1])  # t1 was not reached


def test_sliding_cheaper_and_more_accurate_than_plain(slide_runs):
    u_ref, w_ref = _slide_closed_form(T_END)[3]
    plain, sw = slide_runs["plain"], slide_runs[1e-10]
    err = lambda tr: max(abs(float(tr.final_params["u"]) - u_ref), abs(float(tr.final_params["w"]) - w_ref))
    assert int(sw.num_steps) * 20 < int(plain.num_steps)
    assert err(sw) < err(plain)
    assert err(slide_runs[1e-6]) < 1e-5  # global error ~10·rtol, as for smooth flows


# ---- two-layer ReLU nets ------------------------------------------------------------------


def _problem(seed, n=6, d=3, width=4, init_scale=0.3):
    X, y = data.hyperplane(n, d, seed)
    params0 = models.init_two_layer(jax.random.PRNGKey(seed), d, width, init_scale)
    return X, y, params0


def _flat(params):
    return np.concatenate([np.ravel(params["W"]), np.ravel(params["v"])])


def test_objective_carries_switching_for_piecewise_linear_nets_only():
    import functools

    X, y, params0 = _problem(0)
    relu = losses.objective(models.two_layer, "exponential", X, y)
    leaky = losses.objective(functools.partial(models.two_layer, activation="leaky_relu"), "logistic", X, y)
    smooth = losses.objective(functools.partial(models.two_layer, activation="tanh"), "logistic", X, y)
    opaque = losses.objective(lambda p, X: models.two_layer(p, X), "logistic", X, y)
    assert relu.switching is not None and leaky.switching is not None
    assert smooth.switching is None and opaque.switching is None
    # the frozen-pattern objective at the current pattern is the objective, and so is its gradient
    for L in (relu, leaky):
        s = L.switching.surfaces(params0)
        np.testing.assert_allclose(s, X @ params0["W"].T, rtol=1e-15)
        pattern = (s > 0).astype(float)
        frozen = jax.jit(jax.value_and_grad(lambda p: L.switching.objective(p, pattern)))
        (value, grad), (value_ref, grad_ref) = frozen(params0), jax.jit(jax.value_and_grad(L))(params0)
        np.testing.assert_allclose(value, value_ref, rtol=1e-14)
        np.testing.assert_allclose(_flat(grad), _flat(grad_ref), rtol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("loss,reduction", [("exponential", "sum"), ("logistic", "mean"), ("square", "mean")])
def test_closed_form_jumps_match_autodiff(activation, loss, reduction):
    # ∂F/∂p_k in closed form (`Switching.jump`) against the Jacobian-vector product of
    # F = −∇_θ L(θ, p) in p, at a random state and a fractional pattern; s_k alone against s
    import functools

    X, y, params0 = _problem(0)
    L = losses.objective(functools.partial(models.two_layer, activation=activation), loss, X, y, reduction)
    sw = L.switching
    key = jax.random.PRNGKey(7)
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(key, x.shape), params0)
    s = sw.surfaces(params)
    pattern = jax.random.uniform(jax.random.PRNGKey(8), s.shape)
    field = lambda q: jax.tree.map(jnp.negative, jax.grad(sw.objective)(params, q))
    for k in (0, 5, s.size // 2, s.size - 1):
        tangent = jnp.zeros(s.size).at[k].set(1.0).reshape(s.shape)
        _, ref = jax.jvp(field, (pattern,), (tangent,))
        np.testing.assert_allclose(_flat(sw.jump(params, pattern, k)), _flat(ref), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(sw.surface(params, k), s.ravel()[k], rtol=1e-14)


@pytest.mark.slow  # compiles a second switching solve (generic jumps) of the same problem
def test_closed_form_jumps_give_the_generic_solve(crossing_problem):
    # the solve with the two-layer net's closed-form jumps and single surfaces against the same
    # solve computing both by autodiff over all surfaces (Switching without `jump`/`surface`)
    L, params0, ref = crossing_problem
    generic = Switching(L.switching.surfaces, L.switching.objective)
    fast = gflow.simulate(L, params0, 10.0, rtol=1e-8)
    slow = gflow.simulate(L, params0, 10.0, rtol=1e-8, switching=generic)
    assert int(fast.stats["num_crossings"]) == int(slow.stats["num_crossings"]) > 5
    np.testing.assert_allclose(_flat(fast.final_params), _flat(slow.final_params), atol=1e-12)
    assert int(fast.num_grad_evals) < int(slow.num_grad_evals)


@pytest.mark.parametrize("name", ["tsit5", "dopri5", "dopri8", "bosh3", "heun"])
def test_crossing_nodes_reproduce_the_dense_output(name):
    # crossings are located on s(y(t)) fitted through degree + 1 Chebyshev nodes
    # (`_DENSE_DEGREE`): that fit must reproduce each solver's dense output between the nodes
    import diffrax

    from gflow.flow import get_solver
    from gflow.switching import _DENSE_DEGREE, _chebyshev_fit

    solver = get_solver(name)
    term = diffrax.ODETerm(lambda t, y, args: jnp.stack([y[1], -jnp.sin(3 * y[0]) + jnp.cos(5 * t)]))
    y0 = jnp.asarray([0.3, -0.2])
    state = solver.init(term, 0.0, 1.7, y0, None)
    _, _, dense, _, _ = solver.step(term, 0.0, 1.7, y0, None, state, False)
    interp = solver.interpolation_cls(t0=0.0, t1=1.7, **dense)
    nodes, fit = _chebyshev_fit(_DENSE_DEGREE[type(solver)])
    at = lambda x: interp.evaluate(0.85 * (x + 1))
    coeffs = fit @ np.stack([at(x) for x in nodes])
    for x in np.linspace(-1, 1, 23):
        np.testing.assert_allclose(np.polynomial.polynomial.polyval(x, coeffs), at(x), atol=1e-13)
    # one node fewer would not: the dense output has exactly that degree
    nodes, fit = _chebyshev_fit(_DENSE_DEGREE[type(solver)] - 1)
    coeffs = fit @ np.stack([at(x) for x in nodes])
    assert max(np.max(np.abs(np.polynomial.polynomial.polyval(x, coeffs) - at(x))) for x in np.linspace(-1, 1, 23)) > 1e-3


@pytest.mark.parametrize("finite", [0, 1, 7, 40, 300])
def test_earliest_crossings_match_a_full_sort(finite):
    # `_earliest` ranks the crossed surfaces: gathered (scan + binary search) while at most
    # `few` are finite, a full top_k beyond; both must equal numpy's sort, empty slots marked K
    from gflow.switching import _earliest

    K, count, few = 2_000, 9, 72
    rng = np.random.default_rng(finite)
    values = np.full(K, np.inf)
    values[rng.choice(K, finite, replace=False)] = rng.uniform(0.0, 1.0, finite)
    value, index = jax.jit(_earliest, static_argnums=(1, 2))(jnp.asarray(values), count, few)
    order = np.argsort(values, kind="stable")[:count]
    shown = min(finite, count)
    np.testing.assert_array_equal(np.asarray(value[:shown]), values[order[:shown]])
    np.testing.assert_array_equal(np.asarray(index[:shown]), order[:shown])
    assert np.all(np.isinf(np.asarray(value[shown:]))) and np.all(np.asarray(index[shown:]) == K)


def test_smooth_objective_uses_the_plain_solve():
    import functools

    from gflow.flow import _resolve_switching

    X, y, params0 = _problem(0)
    L = losses.objective(functools.partial(models.two_layer, activation="tanh"), "logistic", X, y)
    assert _resolve_switching(None, L, params0, None) is None
    relu = losses.objective(models.two_layer, "exponential", X, y)
    assert _resolve_switching(False, relu, params0, None) is None
    assert _resolve_switching(None, relu, params0, None) is relu.switching


def test_bad_switching_argument_raises():
    X, y, params0 = _problem(0)
    L = losses.objective(models.two_layer, "exponential", X, y)
    with pytest.raises(ValueError, match="switching must be"):
        gflow.simulate(L, params0, 1.0, switching="on")
    bad = Switching(surfaces=lambda p: p["W"] @ p["W"], objective=lambda p, q: 0.0)
    with pytest.raises(ValueError, match="switching could not be evaluated"):
        gflow.simulate(L, params0, 1.0, switching=bad)


@pytest.fixture(scope="module")
def crossing_problem():
    # seed 3: twenty crossings on [0, 10] and no sliding, so scipy's reference does not grind
    X, y, params0 = _problem(3)
    L = losses.objective(models.two_layer, "exponential", X, y)
    grad = baselines.two_layer_numpy_grad(X, y, "exponential", "mean")
    _, ref, _ = baselines.scipy_flow(
        lambda p: dict(zip(("W", "v"), grad(p["W"], p["v"]))),
        jax.tree.map(np.asarray, params0),
        10.0,
        rtol=1e-10,
    )
    return L, params0, _flat(ref[-1])


def test_crossings_agree_with_scipy_dop853(crossing_problem):
    L, params0, ref = crossing_problem
    traj = gflow.simulate(L, params0, 10.0, rtol=1e-8)
    assert traj.status == "success"
    assert int(traj.stats["num_crossings"]) > 5 and int(traj.stats["num_sliding_starts"]) == 0
    # steps shortened on their dense output for the kinks' error keep the 1e-8 agreement
    assert int(traj.stats["num_steps_shortened"]) > 0
    assert np.max(np.abs(_flat(traj.final_params) - ref)) < 1e-8


@pytest.mark.slow  # a vmapped switching solve pays every branch of its step on every lane
def test_vmapped_switching_solve_equals_single_solves(crossing_problem):
    # a batch of initial scales runs in one vmapped solve, lane by lane equal to single solves
    L, params0, _ = crossing_problem
    traj = gflow.simulate(L, params0, 10.0, rtol=1e-8)
    scales = jnp.asarray([1.0, 0.5])
    batch = jax.vmap(lambda c: gflow.simulate(L, jax.tree.map(lambda x: c * x, params0), 10.0, rtol=1e-8))(
        scales
    )
    half = gflow.simulate(L, jax.tree.map(lambda x: 0.5 * x, params0), 10.0, rtol=1e-8)
    for lane, single in ((0, traj), (1, half)):
        lane_params = jax.tree.map(lambda x: x[lane], batch.final_params)
        np.testing.assert_allclose(_flat(lane_params), _flat(single.final_params), atol=1e-12)
    assert list(batch.status) == ["success", "success"]


def test_crossing_buffer_grows_with_the_surfaces():
    # B(K, D) = min(K, clip(⌈K/160⌉, 32, clip(⌊1.6e6/D⌋, 32, 128))); an explicit max_crossings
    # is honoured as given
    from gflow.switching import crossing_buffer, problem

    assert [crossing_buffer(k, 100) for k in (1, 20, 32, 800, 5_000, 5_120)] == [1, 20, 32, 32, 32, 32]
    assert [crossing_buffer(k, 100) for k in (5_121, 15_000, 20_000, 20_480, 100_000)] == [33, 94, 125, 128, 128]
    # the B × D block of jumps stays under 1.6e6 entries: issue 7's d = 256 net (D = 25,700) gets 62
    assert [crossing_buffer(20_000, D) for D in (12_500, 12_800, 25_700, 10**6)] == [125, 125, 62, 32]
    X, y = data.hyperplane(200, 3, np.random.default_rng(0))
    L = losses.objective(models.two_layer, "exponential", X, y)
    params0 = models.init_two_layer(jax.random.PRNGKey(0), 3, 60, 1e-2)  # K = 12,000
    ctx = lambda s: problem(L, s, params0, None, 1e-6, None, solver=diffrax.Tsit5(), observables={}, event=None,
                            event_is_bool=None, max_steps=10, save_params=False)
    assert L.switching.max_crossings is None and ctx(L.switching).B == 75  # ⌈12,000/160⌉
    assert ctx(dataclasses.replace(L.switching, max_crossings=7)).B == 7
    assert ctx(dataclasses.replace(L.switching, max_crossings=10**6)).B == 12_000


@pytest.mark.slow
def test_crossings_beyond_the_buffer_are_not_missed(crossing_problem):
    # with room for one crossing per step, steps with more are split (shortened before the
    # second crossing, or rejected) instead of stepping over only some: the same crossings,
    # the same scipy reference
    L, params0, ref = crossing_problem
    full = gflow.simulate(L, params0, 10.0, rtol=1e-8)
    one = Switching(L.switching.surfaces, L.switching.objective, max_crossings=1)
    traj = gflow.simulate(L, params0, 10.0, rtol=1e-8, switching=one)
    assert traj.status == "success"
    assert int(traj.stats["num_crossings"]) == int(full.stats["num_crossings"])
    assert int(traj.num_rejected_steps) > int(full.num_rejected_steps)
    assert np.max(np.abs(_flat(traj.final_params) - ref)) < 1e-8


@pytest.mark.slow
def test_crossings_more_accurate_than_plain(crossing_problem):
    L, params0, ref = crossing_problem
    traj = gflow.simulate(L, params0, 10.0, rtol=1e-8)
    plain = gflow.simulate(L, params0, 10.0, rtol=1e-8, switching=False)
    err = np.max(np.abs(_flat(traj.final_params) - ref))
    assert err < np.max(np.abs(_flat(plain.final_params) - ref)) / 10
    assert int(traj.num_steps) < int(plain.num_steps)


@pytest.mark.slow
def test_two_layer_sliding_second_integrator():
    # seed 1: a neuron slides on a data point's surface and leaves it again; a plain reference
    # would chatter, so Tsit5 is checked against Dopri8 at tight tolerance
    X, y, params0 = _problem(1)
    L = losses.objective(models.two_layer, "exponential", X, y)
    tsit = gflow.simulate(L, params0, 10.0, rtol=1e-10)
    dopri = gflow.simulate(L, params0, 10.0, rtol=1e-10, solver="dopri8")
    assert int(tsit.stats["num_sliding_starts"]) >= 1 and int(tsit.stats["num_sliding_exits"]) >= 1
    np.testing.assert_allclose(_flat(tsit.final_params), _flat(dopri.final_params), atol=1e-9)


@pytest.mark.slow
def test_issue_problem_twenty_times_fewer_steps_at_rtol_1e8():
    # the issue's problem: n=40, d=10, width 20, ε=1e-2, t ∈ [0, 5], exponential loss
    X, y = data.hyperplane(40, 10)
    L = losses.objective(models.two_layer, "exponential", X, y)
    params0 = models.init_two_layer(jax.random.PRNGKey(0), 10, 20, 1e-2)
    ref = _flat(gflow.simulate(L, params0, 5.0, rtol=1e-12, solver="dopri8").final_params)
    sw = gflow.simulate(L, params0, 5.0, rtol=1e-8)
    plain = gflow.simulate(L, params0, 5.0, rtol=1e-8, switching=False, max_steps=400_000)
    assert int(sw.num_steps) * 20 <= int(plain.num_steps)
    assert np.max(np.abs(_flat(sw.final_params) - ref)) < np.max(np.abs(_flat(plain.final_params) - ref))


@pytest.mark.slow
def test_sliding_set_is_entered_only_where_it_can_be_kept():
    # width 100 on 200 Gaussian points at rtol 1e-4 stalled at t = 4.05 (sliding starts and exits
    # alternating until max_steps): a surface was admitted by its one-sided test and expelled at
    # once by the joint Filippov weights. The reference is the same flow at rtol 1e-8.
    X, y = data.hyperplane(200, 20)
    L = losses.objective(models.two_layer, "exponential", X, y)
    params0 = models.init_two_layer(jax.random.PRNGKey(0), 20, 100, 1e-2)
    loose = gflow.simulate(L, params0, 5.0, rtol=1e-4, max_steps=20_000, switching=L.switching)
    tight = gflow.simulate(L, params0, 5.0, rtol=1e-8, max_steps=20_000)
    assert loose.status == "success" and tight.status == "success"
    assert int(loose.stats["num_sliding_exits"]) <= int(loose.stats["num_sliding_starts"]) < 200
    ref = _flat(tight.final_params)
    assert np.max(np.abs(_flat(loose.final_params) - ref)) < 1e-4 * np.max(np.abs(ref))


def test_switching_is_chosen_by_rtol():
    # switching=None: the switching solve below SWITCHING_MAX_RTOL, the plain solve above it
    # (stats["switching"] says which ran); an explicit Switching is always honoured.
    L, params0 = _sliding_problem(n=12, d=4, width=3, init_scale=1e-2)
    tight = gflow.simulate(L, params0, 1.0, rtol=1e-6)
    loose = gflow.simulate(L, params0, 1.0, rtol=1e-4)
    forced = gflow.simulate(L, params0, 1.0, rtol=1e-4, switching=L.switching)
    assert int(tight.stats["switching"]) == 1 and "num_crossings" in tight.stats
    # every path has the same stats keys (gflow.trajectory.STATS): no crossings on the plain one
    assert int(loose.stats["switching"]) == 0 and int(loose.stats["num_crossings"]) == 0
    assert int(forced.stats["switching"]) == 1
    reasons = [int(t.stats["switching_reason"]) for t in (tight, loose, forced)]
    assert reasons == [gflow.options.SWITCHING_RAN, gflow.options.SWITCHING_LOOSE_RTOL, gflow.options.SWITCHING_RAN]


def _sliding_problem(n, d, width, init_scale, reduction="sum", seed=0):
    X, y = data.hyperplane(n, d, np.random.default_rng(seed))
    L = losses.objective(models.two_layer, "exponential", X, y, reduction=reduction)
    return L, models.init_two_layer(jax.random.PRNGKey(seed), d, width, init_scale, balanced=True)


def test_box_least_squares_against_scipy():
    # the minimal-norm Filippov field's weights: argmin ‖g0 + Gᵀq‖ over q ∈ [0, 1]^m, against
    # scipy's bounded least squares, with empty (invalid) slots and nearly parallel rows
    from scipy.optimize import lsq_linear

    from gflow.switching import _box_least_squares

    rng = np.random.default_rng(3)
    for trial in range(20):
        m, D = 6, 9
        G = rng.normal(size=(m, D))
        if trial % 4 == 0:
            G[1] = G[0] + 1e-7 * rng.normal(size=D)
        g0 = rng.normal(size=D) * 3
        valid = rng.random(m) < 0.8
        Gv = G * valid[:, None]
        q = np.asarray(_box_least_squares(jnp.asarray(Gv @ Gv.T), jnp.asarray(Gv @ g0), jnp.asarray(valid)))
        ref = lsq_linear(G[valid].T, -g0, bounds=(0.0, 1.0), method="bvls", tol=1e-14).x
        assert np.all(q[~valid] == 0)
        # the optimum's value is unique (its argmin need not be, with parallel rows)
        value = lambda w: np.linalg.norm(g0 + G[valid].T @ w)
        assert value(q[valid]) <= value(ref) * (1 + 1e-9) + 1e-12
        assert np.all((q >= 0) & (q <= 1))


def test_many_surfaces_slide_at_once_issue_17():
    # issue 17's reproducer: hyperplane data, width 20, ε = 1e-3, sum reduction, rtol 1e-6. The
    # sliding set grew to 14 surfaces and the solve flipped one surface back and forth at
    # t = 0.187 until max_steps (246 accepted, 19,754 rejected). With the whole set decided by
    # the minimal-norm Filippov field it reaches t1; the balancedness v_j² − ‖w_j‖² is conserved
    # by the gradient flow of a two-layer ReLU net, sliding or not, and checks the sliding field.
    from gflow import observables

    L, params0 = _sliding_problem(n=40, d=10, width=20, init_scale=1e-3)
    traj = gflow.simulate(L, params0, 5.0, rtol=1e-6, max_steps=20_000, save_params=False,
                          saveat=jnp.linspace(0.0, 5.0, 6), observables={"bal": observables.balancedness})
    assert traj.status == "success", (traj.status, float(traj.t_final))
    assert int(traj.stats["max_sliding"]) > 20  # many surfaces slide at once
    assert int(traj.num_steps) < 2_000
    drift = np.max(np.abs(np.asarray(traj.observables["bal"]) - np.asarray(traj.observables["bal"][0])))
    assert drift < 1e-6 * float(jnp.max(traj.final_params["v"] ** 2))  # measured 2e-8


def test_progress_guard_ends_a_stalled_solve():
    # a sliding buffer too small for the problem (4 slots where 50 surfaces slide) makes the
    # flow chatter on the overflowing surfaces: the guard ends it as "stalled", well before
    # max_steps, at the time it reached
    import dataclasses

    L, params0 = _sliding_problem(n=40, d=10, width=20, init_scale=1e-3)
    small = dataclasses.replace(L.switching, max_sliding=4)
    traj = gflow.simulate(L, params0, 5.0, rtol=1e-6, max_steps=20_000, switching=small)
    assert traj.status == "stalled"
    assert int(traj.num_steps) < 2_000 and 0 < float(traj.t_final) < 5.0
    assert int(traj.stats["sliding_overflow"]) > 0


def test_a_collapsed_switching_solve_falls_back_to_the_plain_solve():
    # L = −Σ relu(θ)³ has kinks at θ_k = 0 and a flow that blows up at t* = 1/(3 θ0) = 1/3:
    # the default switching solve ends "nonfinite", the plain solve is run instead
    # (`status.SWITCHING_FALLBACK`) and ends "nonfinite" there too, near t*, for simulate and
    # for the pool alike
    L = lambda p: -jnp.sum(jax.nn.relu(p["w"]) ** 3)  # noqa: E731
    p0 = {"w": jnp.array([1.0, -0.5])}
    forced = gflow.simulate(L, p0, 1.0, rtol=1e-8, switching=gflow.kinks.find(L, p0))
    assert forced.status == "nonfinite" and int(forced.stats["switching"]) == 1
    traj = gflow.simulate(L, p0, 1.0, rtol=1e-8)
    assert traj.status == "nonfinite"
    assert int(traj.stats["switching"]) == 0 and int(traj.stats["switching_fallback"]) == 1
    assert int(traj.stats["switching_reason"]) == gflow.options.SWITCHING_FELL_BACK
    assert int(forced.stats["switching_reason"]) == gflow.options.SWITCHING_RAN  # given: no fallback
    assert abs(float(traj.t_final) - 1 / 3) < 1e-3
    stacked = jax.tree.map(lambda x: x[None], p0)
    pooled, _ = gflow.batching.solve_batch(L, stacked, 1.0, rtol=1e-8)
    assert gflow.status.name(pooled.status_code[0]) == "nonfinite"
    assert int(pooled.stats["switching_fallback"][0]) == 1
    assert int(pooled.stats["switching_reason"][0]) == gflow.options.SWITCHING_FELL_BACK
    assert int(pooled.num_steps[0]) == int(traj.num_steps)


def test_neurons_that_die_on_their_kinks():
    # L = Σ c_k relu(θ_k) + ½|φ|²: θ_k falls at rate c_k to its kink and stays there (the
    # field of the far side has no normal component), φ decays as e^{−t}. Located at the
    # crossing, θ_k lies at 0 up to round-off, on either side; before `crossings.onto_side`
    # and the unmoved-surface rule, 10 of these 30 flows stalled chattering across the kink
    c = jnp.array([1.0, 0.7, 1.3])
    L = lambda p: jnp.sum(jax.nn.relu(p[:3]) * c) + 0.5 * jnp.sum(p[3:] ** 2)  # noqa: E731
    rng = np.random.default_rng(0)
    for _ in range(30):
        p0 = np.concatenate([rng.uniform(0.1, 1.0, 3), rng.normal(size=2)])
        traj = gflow.simulate(L, jnp.asarray(p0), 3.0, rtol=1e-8, max_steps=3000, switching=gflow.kinks.find(L, jnp.asarray(p0)))
        assert traj.status == "success", (p0, traj.status, float(traj.t_final))
        exact = np.concatenate([np.maximum(p0[:3] - np.asarray(c) * 3.0, 0.0), p0[3:] * np.exp(-3.0)])
        np.testing.assert_allclose(np.asarray(traj.final_params), exact, rtol=0, atol=1e-8)
        assert int(traj.stats["num_crossings"]) == 3 and int(traj.num_steps) < 60


@pytest.mark.slow  # two solves of the digits problem (~2 min)
def test_digits_self_convergence_at_rtol_1e_8():
    # digits 0/1 (n = 360, d = 64, width 20, ε = 1e-2, t ≤ 5): 3,613 crossings, nothing slides.
    # A crossing pushed out of its step by another's jump has its time clipped to the step's end;
    # deciding it there (1fee2b3) moved the state onto its far side: rtol 1e-8 ended 5.3e-6 from
    # the rtol-1e-10 solve, against 2.35e-8 before and after
    X, y = data.digits((0, 1))
    L = losses.objective(models.two_layer, "exponential", X, y, reduction="mean")
    params0 = models.init_two_layer(jax.random.PRNGKey(0), X.shape[1], 20, 1e-2)
    solve = lambda rtol: gflow.simulate(L, params0, 5.0, rtol=rtol, switching=L.switching, max_steps=100_000)
    loose, tight = solve(1e-8), solve(1e-10)
    assert loose.status == tight.status == "success"
    assert int(loose.stats["num_crossings"]) == int(tight.stats["num_crossings"]) > 3_000
    ref = _flat(tight.final_params)
    assert np.max(np.abs(_flat(loose.final_params) - ref)) / np.max(np.abs(ref)) < 1e-7

"""Tests of the switching solve's parts (gflow/switching/): crossings, sliding geometry, step
sizes and the progress guard, saving, events, and the init/step/done/result stepper under vmap.

References: a flow with constant one-sided fields, whose crossing time and piecewise-linear
solution are known in closed form (every Runge–Kutta method and its dense output are exact on
it, so the only errors left are the parts' own); numpy least squares for the projection; the
moving average's closed form for the guard; `integrate` on each point alone for the stepper.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import data, losses, models
from gflow.switching import Switching, context, crossings, sliding, step_size, stepper

# ---- constant one-sided fields: L(θ) = −g·θ + β relu(θ₀) ------------------------------------
# Above the surface θ₀ = 0 the field is g − β e₀, below it g. From θ(0) = (1, 0) with g₀ = −1 the
# flow reaches θ₀ = 0 at t* = 1/(1 + β) and crosses it (both sides push down); then θ₀ = −(t − t*).
G = np.array([-1.0, 0.5])
BETA = 0.5
T_STAR = 1 / (1 + BETA)

LINEAR = Switching(
    surfaces=lambda th: th[:1],
    objective=lambda th, p: -jnp.dot(jnp.asarray(G), th) + BETA * p[0] * th[0],
)


def _linear_loss(th):
    return -jnp.dot(jnp.asarray(G), th) + BETA * jax.nn.relu(th[0])


def _linear_exact(t):
    t = np.asarray(t, float)
    above = 1 - (1 + BETA) * t
    return np.stack([np.where(t < T_STAR, above, -(t - T_STAR)), G[1] * t], axis=-1)


def _ctx(switching=LINEAR, params0=None, rtol=1e-8, event=None, event_is_bool=None, observables=None):
    params0 = jnp.array([1.0, 0.0]) if params0 is None else params0
    return context.problem(
        _linear_loss, switching, params0, None,
        jnp.asarray(rtol), None, solver=gflow.flow.get_solver("tsit5"), observables=observables or {},
        event=event, event_is_bool=event_is_bool, max_steps=1000, save_params=True,
    )


def _one_step(tb, ts=(0.0, 2.0)):
    ctx = _ctx()
    state = stepper.init(ctx, jnp.array([1.0, 0.0]), 0.0, 2.0, jnp.asarray(ts))
    state = dataclasses.replace(state, t_next=jnp.asarray(tb))
    return ctx, state, *stepper._attempt(ctx, state)


def test_crossing_time_and_kink_correction_against_the_closed_form():
    # one step over the crossing: located at t* and corrected to the exact end state (the
    # correction Σ_k ∫ ΔF_k + ½u²JΔF_k is exact for constant fields), with no error left
    _, _, att, ov = _one_step(1.0)
    assert bool(ov.crossing[0]) and bool(ov.any_crossing)
    np.testing.assert_allclose(float(ov.found.tau[0]), T_STAR, rtol=0, atol=1e-13)
    np.testing.assert_allclose(float(ov.found.tau_frozen[0]), T_STAR, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(ov.yc), _linear_exact(1.0), rtol=0, atol=1e-13)
    # the frozen step alone misses the kink by ΔF·u = β(1 − t*)
    np.testing.assert_allclose(np.asarray(ov.yb)[0] - _linear_exact(1.0)[0], -BETA * (1 - T_STAR), atol=1e-13)
    assert float(jnp.max(ov.found.error)) < 1e-13
    assert bool(ov.keep_kinks)


def test_no_crossing_no_correction():
    _, _, att, ov = _one_step(0.5)
    assert not bool(ov.any_crossing)
    assert np.all(np.isinf(np.asarray(ov.found.tau)))
    np.testing.assert_array_equal(np.asarray(ov.yc), np.asarray(ov.yb))
    np.testing.assert_allclose(np.asarray(ov.yc), _linear_exact(0.5), atol=1e-13)


# 100 parallel surfaces θ₀ = c_k crossed downwards one after another (L = −g·θ + β Σ_k relu(θ₀ − c_k),
# β = 0.01), in a buffer of 96 slots: tiers of 32, 64 and 96
_C = np.linspace(0.05, 0.95, 100)
MANY = Switching(
    surfaces=lambda th: th[0] - jnp.asarray(_C),
    objective=lambda th, p: -jnp.dot(jnp.asarray(G), th) + 0.01 * jnp.sum(p * (th[0] - jnp.asarray(_C))),
    max_crossings=96,
)


@functools.cache
def _many_step():
    loss = lambda th: -jnp.dot(jnp.asarray(G), th) + 0.01 * jnp.sum(jax.nn.relu(th[0] - jnp.asarray(_C)))
    ctx = context.problem(loss, MANY, jnp.array([1.0, 0.0]), None, jnp.asarray(1e-8), None,
                          solver=gflow.flow.get_solver("tsit5"), observables={}, event=None, event_is_bool=None,
                          max_steps=1000, save_params=False)
    state = stepper.init(ctx, jnp.array([1.0, 0.0]), 0.0, 2.0, jnp.asarray([0.0, 2.0]))

    @jax.jit
    def both(tb):  # the attempt's kinks in their tier, and in all 96 slots
        att, tiered = stepper._attempt(ctx, dataclasses.replace(state, t_next=tb))
        return tiered, crossings.over(ctx, att, tiered.tb, tiered.yb, tiered=False)

    return both


@pytest.mark.parametrize("tb, count", [(0.1, 17), (0.25, 50), (0.42, 87), (0.6, 100)])
def test_slot_tiers_give_the_crossings_of_the_full_buffer(tb, count):
    # the kinks of a step with c crossings are computed in the smallest of `slot_tiers(B)`
    # holding them: the crossing times, correction, error and split equal those in all B slots
    assert crossings.slot_tiers(96) == (32, 64, 96) and crossings.slot_tiers(95) == (32, 95) and crossings.slot_tiers(125) == (32, 64, 125)
    assert crossings.slot_tiers(47) == (47,) and crossings.slot_tiers(48) == (32, 48)
    tiered, full = _many_step()(jnp.asarray(tb))
    assert int(jnp.sum(tiered.crossing)) == count
    # more crossings than slots: the step is split between the 96th and the 97th
    assert np.isfinite(float(tiered.found.t_split)) == (count > 96)
    for a, b in zip(jax.tree.leaves(tiered.found), jax.tree.leaves(full.found)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(np.asarray(tiered.yc), np.asarray(full.yc), rtol=1e-14)


def test_root_finder_against_a_closed_form():
    # the first point where fn ≤ 0: fn(t) = cos t crosses at π/2; fn ≤ 0 at a returns a
    root, evals = crossings._root(jnp.cos, jnp.asarray(0.0), jnp.asarray(3.0), 1e-13)
    np.testing.assert_allclose(float(root), np.pi / 2, atol=1e-12)
    assert int(evals) < 30  # superlinear, not 40+ bisections
    root, _ = crossings._root(jnp.cos, jnp.asarray(2.0), jnp.asarray(3.0), 1e-13)
    assert float(root) == 2.0


def test_saving_follows_the_dense_output_across_the_kink():
    # saves inside the step that crosses are the frozen dense output plus the kink's first-order
    # correction: exact here, on both sides of t*
    ctx, state, att, ov = _one_step(1.0)
    from gflow.switching import saving

    for t in (0.1, 0.4, T_STAR, 0.8, 1.0):
        np.testing.assert_allclose(np.asarray(saving.dense_output(ctx, att, ov, jnp.asarray(t))), _linear_exact(t),
                                   atol=1e-13, err_msg=str(t))


def test_integrate_saves_and_event_on_the_closed_form():
    ts = jnp.linspace(0.0, 2.0, 9)
    traj = gflow.simulate(_linear_loss, jnp.array([1.0, 0.0]), 2.0, saveat=ts, rtol=1e-8, switching=LINEAR)
    assert traj.status == "success" and int(traj.stats["num_crossings"]) == 1
    np.testing.assert_allclose(np.asarray(traj.params), _linear_exact(np.asarray(ts)), atol=1e-13)
    # a float event θ₁ − 0.3 changes sign at t = 0.6, a bool event θ₀ < −0.25 holds from t* + 0.25
    for event, t_event in ((lambda th: th[1] - 0.3, 0.6), (lambda th: th[0] < -0.25, T_STAR + 0.25)):
        traj = gflow.simulate(_linear_loss, jnp.array([1.0, 0.0]), 2.0, rtol=1e-8, switching=LINEAR, event=event)
        assert traj.status == "event"
        np.testing.assert_allclose(float(traj.t_event), t_event, atol=1e-12)


# ---- sliding geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [3, 20, 100])  # the 16-, 64- and 256-row blocks of `_tiers(256)`
def test_projection_against_numpy_least_squares(count):
    D, K = 300, 256
    A = np.random.default_rng(0).normal(size=(K, D))
    surfaces = Switching(surfaces=lambda th: jnp.asarray(A) @ th, objective=lambda th, p: jnp.sum(th**2) + p @ (A @ th))
    ctx = _ctx(surfaces, params0=jnp.zeros(D))
    assert sliding._tiers(ctx.M) == (16, 64, 256)
    assert sliding._tiers(80) == (16, 80) and sliding._tiers(40) == (40,)  # blocks ≤ M/4 only
    chosen = np.random.default_rng(1).choice(K, count, replace=False)
    slots = -np.ones(ctx.M, np.int32)
    slots[:count] = chosen
    geo = sliding.geometry(ctx, jnp.zeros(D), jnp.asarray(slots), sliding.empty_geometry(ctx))
    u = np.random.default_rng(2).normal(size=D)
    N = A[chosen]
    x, *_ = np.linalg.lstsq(N.T, u, rcond=None)  # N ᵀx ≈ u: x = (NNᵀ)⁻¹N u
    np.testing.assert_allclose(np.asarray(geo.project(jnp.asarray(u))), u - N.T @ x, atol=1e-12)
    np.testing.assert_allclose(np.asarray(geo.coordinates(jnp.asarray(u)))[:count], x, atol=1e-12)
    np.testing.assert_allclose(N @ np.asarray(geo.project(jnp.asarray(u))), 0.0, atol=1e-12)  # tangent
    empty = sliding.geometry(ctx, jnp.zeros(D), -jnp.ones(ctx.M, jnp.int32), geo)
    np.testing.assert_array_equal(np.asarray(empty.project(jnp.asarray(u))), u)  # Π = I when nothing slides


def test_filippov_set_is_the_minimal_norm_field():
    # F(q) = f0 − Σ_k q_k β_k a_k on three surfaces through 0 (L = c·θ + Σ_k β_k relu(a_k·θ)): the
    # decided set must give the minimal-norm field over the box, checked against scipy
    from scipy.optimize import lsq_linear

    rng = np.random.default_rng(3)
    D = 6
    A, c, beta = rng.normal(size=(3, D)), rng.normal(size=D), np.array([2.0, 0.5, 3.0])
    sw = Switching(surfaces=lambda th: jnp.asarray(A) @ th,
                   objective=lambda th, p: jnp.asarray(c) @ th + jnp.sum(jnp.asarray(beta) * p * (jnp.asarray(A) @ th)))
    ctx = _ctx(sw, params0=jnp.zeros(D))
    base = jnp.zeros(3, bool)
    sides, slide = sliding.filippov_set(ctx, jnp.zeros(D), base, jnp.array([0, 1, 2], jnp.int32))
    G_ = -(beta[:, None] * A)  # ∂F/∂q_k
    q = lsq_linear(G_.T, c, bounds=(0, 1)).x  # min |−c + Gᵀq|
    free = (q > 1e-9) & (q < 1 - 1e-9)
    np.testing.assert_array_equal(np.asarray(slide) >= 0, free)
    np.testing.assert_array_equal(np.asarray(sides)[~free], q[~free] >= 0.5)


def test_the_surface_that_exits_is_the_one_whose_weight_reaches_its_bound_first():
    # L = relu(x) + relu(y) + u, u = −x(0.2 − 0.5z) − y(0.6 − 1.2z) − z, from θ = 0: both surfaces
    # slide at once with z = t and weights α_A = 0.2 − 0.5t (0 at t = 0.4) and α_B = 0.6 − 1.2t
    # (0 at t = 0.5, but further below 0 at the end of a long step). x leaves at z = 0.4, y at
    # z = 0.5. Choosing the exiting surface by its weight at the step's end made y exit at
    # t = 0.4 and slide again at once (3 exits, 3 onsets): the n1000 stall of issue 17
    from scipy.integrate import solve_ivp

    def u(th):
        return -th[0] * (0.2 - 0.5 * th[2]) - th[1] * (0.6 - 1.2 * th[2]) - th[2]

    loss = lambda th: jax.nn.relu(th[0]) + jax.nn.relu(th[1]) + u(th)
    sw = Switching(surfaces=lambda th: th[:2], objective=lambda th, p: p[0] * th[0] + p[1] * th[1] + u(th))
    traj = gflow.simulate(loss, jnp.zeros(3), 1.0, rtol=1e-10, switching=sw)
    assert traj.status == "success"
    assert (int(traj.stats["num_sliding_starts"]), int(traj.stats["num_sliding_exits"])) == (2, 2)

    # the reference: z = t up to 0.4; then x free (y = 0) up to z = 0.5; then both free
    def x_free(t, w):  # (x, z) with y = 0
        return [0.2 - 0.5 * w[1], 1 - 0.5 * w[0]]

    at_half = lambda t, w: w[1] - 0.5
    at_half.terminal = True
    first = solve_ivp(x_free, (0.4, 1.0), [0.0, 0.4], events=at_half, rtol=1e-12, atol=1e-14)
    x, z = first.y_events[0][0]
    rest = solve_ivp(lambda t, w: [0.2 - 0.5 * w[2], 0.6 - 1.2 * w[2], 1 - 0.5 * w[0] - 1.2 * w[1]],
                     (first.t_events[0][0], 1.0), [x, 0.0, z], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(traj.final_params), rest.y[:, -1], atol=1e-9)


def test_an_exit_a_crossing_causes_is_decided_at_that_crossing_the_earlier_ones_stepped_over():
    # L = relu(x) + Σ_j c_j relu(y_j + x) − b x − Σ_j y_j: x slides on x = 0 from t = 0.2 with
    # weight α = b − Σ_{crossed} c_j; y_j crosses at t_j (6 of them before 1.35, c_j = 0.02)
    # and the crossing of y_7 at t = 1.35 (c_7 = 0.6) takes α below 0, so x leaves to x < 0.
    # The exit shows at a step's end only past all of its crossings: cut at the first crossing,
    # the crossings before it were decided one step each (2 of 12 stepped over, 16 steps)
    m, b = 12, 0.5
    c = np.full(m, 0.02)
    c[7] = 0.6
    t_cross = np.linspace(0.3, 2.5, m)
    t_cross[7] = 1.35
    x0, y0, t1 = 0.1, -t_cross, 3.0
    C = jnp.asarray(c)
    loss = lambda th: jax.nn.relu(th[0]) + jnp.sum(C * jax.nn.relu(th[1:] + th[0])) - b * th[0] - jnp.sum(th[1:])
    sw = Switching(surfaces=lambda th: jnp.concatenate([th[:1], th[1:] + th[0]]),
                   objective=lambda th, p: p[0] * th[0] + jnp.sum(C * p[1:] * (th[1:] + th[0])) - b * th[0] - jnp.sum(th[1:]))
    traj = gflow.simulate(loss, jnp.asarray(np.concatenate([[x0], y0])), t1, rtol=1e-8, switching=sw)
    assert traj.status == "success"
    stats = {k: int(v) for k, v in traj.stats.items()}
    assert (stats["num_sliding_starts"], stats["num_sliding_exits"], stats["num_crossings"]) == (1, 1, 12)
    assert stats["num_crossings_stepped_over"] >= 6

    # the reference: the field is piecewise constant, so the flow is piecewise linear, followed
    # event by event (x reaching 0 and sliding, each y_j + x reaching 0, α leaving [0, 1])
    x, y, t, p, sliding = x0, y0.copy(), 0.0, np.zeros(m, bool), False
    while t < t1:
        sigma = np.sum(c * p)
        sliding = sliding and b - sigma >= 0
        xd = 0.0 if sliding else b - float(x > 0) - sigma
        sd = (1 - c * p) + xd
        with np.errstate(divide="ignore"):
            tj = np.where(~p & (sd > 0), -(y + x) / sd, np.inf)
        tx = -x / xd if (not sliding and x > 0 and xd < 0) else np.inf
        dt = min(np.min(tj), tx, t1 - t)
        x, y, t = x + xd * dt, y + (1 - c * p) * dt, t + dt
        if t < t1 and tx <= np.min(tj):
            x, sliding = 0.0, True
        elif t < t1:
            p[np.argmin(tj)] = True
    np.testing.assert_allclose(np.asarray(traj.final_params), np.concatenate([[x], y]), atol=1e-11)


# ---- step sizes and the progress guard --------------------------------------------------------


def test_progress_guard_moving_average():
    # full advances keep the average at 1; rejections decay it like (1 − 1/W)^n, and the guard
    # fires once it is below _STALL_PROGRESS, never within the first _STALL_WINDOW steps
    W, P = step_size._STALL_WINDOW, step_size._STALL_PROGRESS
    ta, dtmin = jnp.asarray(0.0), jnp.asarray(1e-14)
    full = step_size.progress(jnp.asarray(1.0), jnp.asarray(True), ta, jnp.asarray(0.1), jnp.asarray(0.1), dtmin)
    assert float(full) == 1.0
    half = step_size.progress(jnp.asarray(1.0), jnp.asarray(True), ta, jnp.asarray(0.05), jnp.asarray(0.1), dtmin)
    np.testing.assert_allclose(float(half), 1 - 0.5 / W)
    p, n = jnp.asarray(1.0), 0
    while not bool(step_size.stalled(p, n)):
        p = step_size.progress(p, jnp.asarray(False), ta, ta, jnp.asarray(0.1), dtmin)
        n += 1
    assert n == int(np.ceil(np.log(P) / np.log(1 - 1 / W)))
    assert not bool(step_size.stalled(jnp.asarray(0.0), W))


# ---- the stepper under vmap -------------------------------------------------------------------


def _sliding_problem(seed):
    X, y = data.hyperplane(12, 4, np.random.default_rng(0))
    L = losses.objective(models.two_layer, "exponential", X, y, reduction="sum")
    return L, models.init_two_layer(jax.random.PRNGKey(seed), 4, 3, 1e-2, balanced=True)


def _vmapped_against_alone(L, switching, points, t1, rtol):
    ts = jnp.linspace(0.0, t1, 5)
    options = dict(solver=gflow.flow.get_solver("tsit5"), observables={}, event=None, event_is_bool=None,
                   max_steps=2000, save_params=True)
    ctx = context.problem(L, switching, points[0], None, rtol, None, **options)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *points)

    @jax.jit
    def run(params):
        states = jax.vmap(lambda p: stepper.init(ctx, p, 0.0, t1, ts))(params)

        def body(states):
            new = jax.vmap(lambda s: stepper.step(ctx, s))(states)
            frozen = jax.vmap(stepper.done)(states)
            return jax.tree.map(lambda a, b: jnp.where(frozen.reshape(frozen.shape + (1,) * (a.ndim - 1)), b, a),
                                new, states)

        states = jax.lax.while_loop(lambda s: jnp.any(~jax.vmap(stepper.done)(s)), body, states)
        return jax.vmap(lambda s: stepper.result(ctx, s))(states)

    lanes = run(stacked)
    for i, p in enumerate(points):
        alone = gflow.switching.integrate(L, switching, p, None, jnp.asarray(0.0), jnp.asarray(t1), ts, rtol, None,
                                          **options)
        assert alone.status == "success"
        assert int(lanes.status_code[i]) == int(alone.status_code)
        assert int(lanes.num_accepted_steps[i]) == int(alone.num_accepted_steps)
        assert int(lanes.num_rejected_steps[i]) == int(alone.num_rejected_steps)
        assert int(lanes.stats["num_crossings"][i]) == int(alone.stats["num_crossings"])
        for a, b in zip(jax.tree.leaves(lanes.final_params), jax.tree.leaves(alone.final_params)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(np.asarray(lanes.loss[i]), np.asarray(alone.loss), rtol=1e-12)
    assert len({int(n) for n in lanes.num_steps}) > 1  # the lanes really differ
    return lanes


@pytest.mark.slow
def test_vmapped_stepper_matches_integrate_per_lane():
    # init/step over 3 initial points at once (a lane that is done is frozen), against
    # `integrate` on each point alone: the same steps, crossings and final parameters. Slow:
    # compiling the vmapped step took 124 s at load 20 on the shared 2-core machine
    points = [jnp.array([1.0, 0.0]), jnp.array([0.3, 1.0]), jnp.array([2.5, -1.0])]
    lanes = _vmapped_against_alone(_linear_loss, LINEAR, points, 3.0, jnp.asarray(1e-8))
    np.testing.assert_allclose(np.asarray(lanes.final_params)[0], _linear_exact(3.0), atol=1e-12)


@pytest.mark.slow
def test_vmapped_stepper_matches_integrate_per_lane_while_sliding():
    # the same on a two-layer ReLU net that crosses and slides (three initialisations)
    L, _ = _sliding_problem(0)
    points = [_sliding_problem(seed)[1] for seed in (0, 1, 2)]
    lanes = _vmapped_against_alone(L, L.switching, points, 1.0, jnp.asarray(1e-6))
    assert int(jnp.max(lanes.stats["num_sliding_starts"])) > 0


def test_switching_package_does_not_import_the_plain_solve():
    # gflow.flow imports the switching solve; the switching package must not import gflow.flow
    # back (what both need is in gflow/_common.py)
    import ast
    from pathlib import Path

    package = Path(gflow.switching.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert not (node.level == 2 and "flow" in names), (path.name, ast.unparse(node))
                assert node.module != "gflow.flow", path.name

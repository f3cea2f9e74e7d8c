"""gflow.theory.ncf (Kumar & Haupt) and the homogeneous models it uses, checked against finite
differences, Euler's theorem, a grid scan of the sphere and the exact radial flow."""

from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import losses, models
from gflow.studies import kumar_haupt
from gflow.studies import verdicts as verdicts_io
from gflow.studies.criteria import increment_nonlinearity
from gflow.studies.verdicts import Verdict as V
from gflow.theory import ncf

X, Y = ncf.toy_data()
N_SINGLE = ncf.ncf(models.single_layer, X, ncf.correlation_labels("square", Y))


@pytest.fixture(scope="module")
def u_star():
    u0 = ncf.unit_init(jax.random.PRNGKey(0), {"W": (10, 2)})
    return u0, ncf.spherical_flow(N_SINGLE, u0)


def test_correlation_labels_closed_forms():
    y = jnp.array([1.0, -1.0, 0.5])
    np.testing.assert_allclose(ncf.correlation_labels("square", y), y)
    np.testing.assert_allclose(ncf.correlation_labels(partial(losses.square, factor=1.0), y), 2 * y)
    np.testing.assert_allclose(ncf.correlation_labels("logistic", y), y / 2)
    np.testing.assert_allclose(ncf.correlation_labels("square", y, reduction="mean"), y / 3)
    f = jnp.array([0.3, 0.2, 0.1])
    np.testing.assert_allclose(ncf.correlation_labels("square", y, f=f), y - f)


@pytest.mark.parametrize(
    "apply_fn, params, order",
    [
        (models.single_layer, {"W": jnp.array([[0.3, -0.2], [0.5, 0.7]])}, 2),
        (ncf.two_layer_relu2, {"W": jnp.array([[0.3, -0.2], [0.5, 0.7]]),
                                       "v": jnp.array([0.4, -0.6])}, 3),
        (partial(models.deep, activation=models.poly_leaky_relu(2)),
         models.init_deep(jax.random.PRNGKey(1), 2, [3, 2], 1.0), models.deep_order(2, 2)),
    ],
)
def test_homogeneity_and_euler(apply_fn, params, order):
    N = ncf.ncf(apply_fn, X, Y)
    c = 1.7
    np.testing.assert_allclose(N(jax.tree.map(lambda x: c * x, params)), c**order * N(params),
                               rtol=1e-12)
    # Euler: ⟨u, ∇N(u)⟩ = L·N(u); gradient against central differences
    g = jax.grad(N)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    gflat, _ = jax.flatten_util.ravel_pytree(g)
    np.testing.assert_allclose(flat @ gflat, order * N(params), rtol=1e-10)
    h = 1e-6
    fd = [(N(unravel(flat + h * e)) - N(unravel(flat - h * e))) / (2 * h) for e in np.eye(flat.size)]
    np.testing.assert_allclose(gflat, fd, rtol=1e-6, atol=1e-8)


def test_kkt_point_two_methods_and_grid_scan(u_star):
    u0, (u, residual, _) = u_star
    assert residual <= 1.001e-8  # the event stops the flow where the residual crosses 1e-8
    # KKT with the multiplier of Euler's theorem: ∇N(u*) = 2 N(u*) u*
    g, _ = jax.flatten_util.ravel_pytree(jax.grad(N_SINGLE)(u))
    flat, _ = jax.flatten_util.ravel_pytree(u)
    np.testing.assert_allclose(g, 2 * N_SINGLE(u) * flat, atol=1e-6 * np.linalg.norm(g))
    # projected gradient iteration reaches the same point
    v, res_v, _ = ncf.spherical_ascent(N_SINGLE, u0, step=5e-2)
    assert res_v <= 1.001e-8
    assert 1 - ncf.cosine(u, v) < 1e-6
    # separable net: each large neuron sits at the maximiser of the one-neuron NCF on the circle
    angles = np.linspace(-np.pi, np.pi, 200_001)
    grid = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    n_theta = (np.maximum(grid @ X.T, 0) ** 2) @ Y
    best = angles[np.argmax(n_theta)]
    W = np.asarray(u["W"])
    big = np.linalg.norm(W, axis=1) >= 0.1 * np.linalg.norm(W, axis=1).max()
    np.testing.assert_allclose(np.arctan2(W[big, 1], W[big, 0]), best, atol=1e-4)
    # and N* = max of n on the circle (all of u*'s mass on that maximiser)
    np.testing.assert_allclose(N_SINGLE(u), n_theta.max(), rtol=1e-6)


def test_escape_time_exact_on_the_ray():
    """φ̇ = ∇N(φ) from δu* stays on the ray, with ṙ = L N* r^{L−1}: the formula is exact there
    (L = 3 here; the L = 2 slope is checked by the smoke test's C2 verdict)."""
    N = ncf.ncf(ncf.two_layer_relu2, X, Y)
    u0 = ncf.unit_init(jax.random.PRNGKey(2), {"W": (3, 2), "v": (3,)})
    u, _, _ = ncf.spherical_ascent(N, u0, step=5e-2)
    n_star, delta, rho = float(N(u)), 1e-3, 0.05
    predicted = ncf.escape_time(n_star, 3, delta, rho)
    traj = gflow.simulate(lambda w: -N(w), jax.tree.map(lambda x: delta * x, u), 10 * predicted,
                          rtol=1e-10, event=lambda w: ncf.param_norm(w) - rho)
    np.testing.assert_allclose(float(traj.t_event), predicted, rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="N\\* must be positive"):
        ncf.escape_time(-1.0, 2, 1e-3, 0.1)
    with pytest.raises(ValueError, match="0 < delta < rho"):
        ncf.escape_time(1.0, 2, 0.5, 0.1)
    with pytest.raises(ValueError, match="order"):
        ncf.escape_time(1.0, 1, 1e-3, 0.1)
    with pytest.raises(ValueError, match="shape"):
        ncf.ncf(models.single_layer, X, Y[:3])
    with pytest.raises(ValueError, match="zero"):
        ncf.spherical_ascent(N_SINGLE, {"W": jnp.zeros((2, 2))})


def test_kkt_points_from_random_starts_match_a_grid_scan():
    # A residual NCF with two local maxima on the circle (r = y − 5 max(0, x1)², what the first
    # neuron leaves): the random-restart finder (no start from any trajectory) must return exactly
    # the grid scan's local maxima with N > 0, each a KKT point to 1e-8 and a local maximum.
    r = Y - 5 * np.maximum(X[:, 0], 0) ** 2
    Nr = ncf.ncf(models.single_layer, X, r)
    found = ncf.kkt_points(Nr, {"W": jnp.zeros((1, 2))}, jax.random.PRNGKey(3), num_starts=16)
    angles = np.linspace(-np.pi, np.pi, 400_001)[:-1]
    n = (np.maximum(np.stack([np.cos(angles), np.sin(angles)], 1) @ X.T, 0) ** 2) @ r
    peaks = angles[(n > np.roll(n, 1)) & (n > np.roll(n, -1)) & (n > 0)]
    got = np.sort([np.arctan2(f["u"]["W"][0, 1], f["u"]["W"][0, 0]) for f in found])
    np.testing.assert_allclose(got, np.sort(peaks), atol=2e-5)
    for f in found:
        assert f["residual"] <= 1e-8 and f["N"] > 0
        np.testing.assert_allclose(float(ncf.kkt_residual(Nr, f["u"])), f["residual"], atol=1e-12)
    assert sum(f["hits"] for f in found) <= 16
    with pytest.raises(ValueError, match="no start converged"):
        ncf.kkt_points(Nr, {"W": jnp.zeros((1, 2))}, jax.random.PRNGKey(3), num_starts=4, max_iter=1)


def test_neuron_alignment_closed_form():
    e = np.array([[0.0, 1.0]])
    W = np.array([[0.0, 2.0], [np.sin(0.1), np.cos(0.1)], [1e-3, 0.0]])  # the last is < 1% of the max
    block, per = ncf.neuron_alignment(W, e)
    np.testing.assert_allclose(per, [1.0, np.cos(0.1)], rtol=1e-14)
    np.testing.assert_allclose(block, np.sqrt(4 + np.cos(0.1) ** 2) / np.linalg.norm(W), rtol=1e-14)
    # a neuron pointing away contributes nothing to the nearest KKT block (c_j = max(0, ·))
    block, per = ncf.neuron_alignment(np.array([[0.0, 1.0], [0.0, -1.0]]), e)
    np.testing.assert_allclose([block, per.min()], [np.sqrt(0.5), -1.0], atol=1e-14)


def _c1_rows(omc, t_esc, lead=None, deltas=(1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)):
    lead = omc if lead is None else lead
    return [{"delta": d, "status": "event", "t_esc": t, "one_minus_cos": o, "leading_order": l,
             "max_angle_err_deg": 0.1} for d, o, t, l in zip(deltas, omc, t_esc, lead)]


def test_c1_c2_rows_fail_on_wrong_inputs():
    d = np.array([1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
    n_star = 50.0
    t_esc = np.log(0.05 / d) / (2 * n_star) + 0.01
    good = ncf.c1_c2_verdicts(_c1_rows(8 * d, t_esc), n_star)
    assert [v.outcome for v in good] == ["pass"] * 5
    # wrong exponent (1 − cos ∝ δ^1.5): the slope's CI leaves 1 ± 0.2; a prediction 10% off; a
    # direction off by more than 1e-3 at δ = 1e-4; escape at twice the predicted rate
    wrong = ncf.c1_c2_verdicts(_c1_rows(2e3 * d**1.5, t_esc / 2, lead=2.2e3 * d**1.5), n_star)
    assert [v.outcome for v in wrong] == ["fail", "fail", "fail", "pass", "fail"]
    rows = _c1_rows(8 * d, t_esc)
    rows[2]["status"] = "max_steps"  # a flow that never reached ρ: nothing can pass
    assert {v.outcome for v in ncf.c1_c2_verdicts(rows, n_star)} == {"not-applicable"}


def test_c1_c2_headline_rows_on_the_quick_flows():
    """The default suite's check of C1's and C2's headline rows on real flows (four δ of the
    quick mode): the flow's 1 − cos follows the leading-order NCF flow (the headline row passes)
    and the escape slope matches 1/(2N*) with N* from a 200,001-point scan of the circle, a
    reference independent of `spherical_flow` (separable net: u*'s mass sits on the one-neuron
    maximiser)."""
    verdicts, run = ncf.c1_c2_single_layer([1e-3, 1e-4, 1e-5, 1e-6])
    angles = np.linspace(-np.pi, np.pi, 200_001)
    n_scan = ((np.maximum(np.stack([np.cos(angles), np.sin(angles)], axis=1) @ X.T, 0) ** 2) @ Y).max()
    np.testing.assert_allclose(run["n_star"], n_scan, rtol=1e-6)
    headline = [v for v in verdicts if v.headline]
    assert [v.outcome for v in headline] == ["pass"], headline
    d = np.array([r["delta"] for r in run["rows"]])
    slope = np.polyfit(np.log(1 / d), [r["t_esc"] for r in run["rows"]], 1)[0]
    assert abs(slope * 2 * n_scan - 1) < 0.03
    escape_row = [v for v in verdicts if v.experiment == "C2"][0]
    assert escape_row.outcome == "pass" and abs(escape_row.measured - slope * 2 * n_scan) < 1e-5


def test_c2_order3_and_c3_rows_fail_on_wrong_inputs():
    d = np.array([1e-2, 3e-3, 1e-3])
    predicted = (1 / d - 1 / 0.05) / (3 * 20.0)
    ok = ncf.c2_order3_verdicts(d, 2 / d, predicted, predicted)
    assert [v.outcome for v in ok] == ["pass", "pass"]
    bad = ncf.c2_order3_verdicts(d, 2 / d**1.5, 1.1 * predicted, predicted)  # δ^−1.5
    assert [v.outcome for v in bad] == ["fail", "fail"]

    def rows(z, levels, pruned, num_z=3):
        return [{"delta": dl, "num_z": num_z, "z_max_to_mid": zz, "z_at_escape": 0.5, "t_esc": 1.0,
                 "t_in": 2.0, "t_out": 3.0, "plateau_level": lv, "pruned_level": pr}
                for dl, zz, lv, pr in zip([1e-3, 1e-4], z, levels, pruned)]

    assert [v.outcome for v in ncf.c3_verdicts(rows([0.8, 0.82], [55.0, 55.0], [55.0, 55.0]), 55.0, 20)] == ["pass"] * 3
    # small neurons that grow with 1/δ, and a plateau 1% off both references
    bad = ncf.c3_verdicts(rows([0.8, 8.0], [55.6, 55.6], [55.0, 55.0]), 55.0, 20)
    assert [v.outcome for v in bad] == ["fail", "fail", "fail"]
    assert {v.outcome for v in ncf.c3_verdicts(rows([0.8, 0.8], [55.0] * 2, [55.0] * 2, num_z=0), 55.0, 20)} == {"not-applicable"}


def _c4_rows(durations, cos_neurons, levels=(48.5,) * 5, num_small=3):
    return [{"delta": dl, "reached": True, "plateau_level": lv, "duration": du, "num_small": num_small,
             "cos_block": float(np.min(c)), "cos_neurons": np.asarray(c)}
            for dl, lv, du, c in zip([1e-4, 1e-6, 1e-8, 1e-10, 1e-12], levels, durations, cos_neurons)]


def test_c4_rows_fail_on_nonlinear_durations_and_unaligned_neurons():
    linear = 0.026 + 0.041 * np.arange(5)
    aligned = [[0.999, 0.995]] * 5
    assert [v.outcome for v in ncf.c4_verdicts(_c4_rows(linear, aligned), 48.44, 210.0)] == ["pass"] * 4
    # the issue's durations: increments 0.041, 0.047, 0.078, 0.094 are not linear in ln(1/δ)
    issue = [0.026, 0.067, 0.114, 0.192, 0.285]
    assert increment_nonlinearity(np.log(1 / np.array([1e-4, 1e-6, 1e-8, 1e-10, 1e-12])), issue) > 0.3
    # and a neuron of the block half-way between two directions (cos 0.65)
    rows = _c4_rows(issue, [[0.999, 0.995]] * 4 + [[0.9999, 0.65]], levels=(48.5, 48.5, 48.5, 48.5, 49.5))
    assert [v.outcome for v in ncf.c4_verdicts(rows, 48.44, 210.0)] == ["fail"] * 4
    # no neuron small at escape: the alignment rows are not applicable
    rows = _c4_rows(linear, aligned, num_small=0)
    assert [v.outcome for v in ncf.c4_verdicts(rows, 48.44, 210.0)][2:] == ["not-applicable"] * 2


@pytest.mark.slow
def test_quick_mode(tmp_path):
    verdicts = kumar_haupt.run(tmp_path, quick=True)
    assert verdicts_io.read(tmp_path) == [V.from_json(v.to_json()) for v in verdicts]
    for name in ("kumar_haupt.png", "c3_sparsity.png", "c1_neurons.png", "verdicts.md", "manifest.json"):
        assert (tmp_path / name).exists()
    by = {(v.experiment, v.quantity[:12]): v for v in verdicts}
    assert by[("C2", "slope of t_e")].outcome == "pass"
    assert by[("C1", "1 − cos agai")].outcome == "pass"  # the leading-order prediction
    assert all(v.outcome == "pass" for v in verdicts if v.experiment == "C3")
    c4 = [v for v in verdicts if v.experiment == "C4"]
    assert [v.outcome for v in c4] == ["pass", "fail", "pass", "fail"]


def test_leading_order_closed_form():
    """For the single-layer squared ReLU, ∇N(w) = 2A_P w on the activation cell P of w, with
    A_P = Σ_{i∈P} y_i x_i x_iᵀ, so φ(t) = exp(2A_P t)φ(0) while φ stays in P."""
    from scipy.linalg import expm
    from scipy.optimize import brentq

    w0 = np.array([np.cos(0.05), np.sin(0.05)])  # in the cell of the KKT angle 1.79°
    P = X @ w0 > 0
    A = (X[P] * Y[P, None]).T @ X[P]
    radius = 1e4
    phi = np.asarray(ncf.leading_order(N_SINGLE, {"W": jnp.asarray(w0[None])}, radius)["W"][0])
    t = brentq(lambda s: np.linalg.norm(expm(2 * A * s) @ w0) - radius, 0.0, 1.0, xtol=1e-14)
    exact = expm(2 * A * t) @ w0
    assert np.array_equal(X @ exact > 0, P)  # the closed form holds: φ stayed in its cell
    np.testing.assert_allclose(phi, exact, rtol=1e-7)
    with pytest.raises(ValueError, match="did not reach"):
        ncf.leading_order(N_SINGLE, {"W": jnp.asarray(w0[None])}, radius, t1=1e-3)


def test_c3_saddle_is_the_best_one_neuron_fit():
    """References of C3: the flow of a one-neuron ReLU² net ends at the best one-neuron fit,
    min over ŵ of ½(‖y‖² − (yᵀφ)²/‖φ‖²), φ = max(0, Xŵ)² (variable projection: the best
    v‖w‖² is closed-form), and zero neurons stay exactly zero (the pruned net)."""
    from scipy.optimize import minimize

    Xc, yc = ncf.c3_data()

    def profile(w):
        phi = np.maximum(Xc @ (w / np.linalg.norm(w)), 0) ** 2
        return 0.5 * (yc @ yc - (yc @ phi) ** 2 / (phi @ phi))

    e1 = np.eye(5)[0] * 0.5
    p0 = {"W": jnp.asarray(np.stack([e1, 0 * e1, 0 * e1])), "v": jnp.array([0.5, 0.0, 0.0])}
    traj = ncf.through(ncf.two_layer_relu2, p0, Xc, yc, 10.0)
    w_end = np.asarray(traj.final_params["W"])[0]
    np.testing.assert_allclose(float(traj.final_loss), profile(w_end), rtol=1e-10)
    # the flow's limit is a local minimum of the profile: minimising from it gains nothing
    best = minimize(profile, w_end, method="BFGS", options={"gtol": 1e-9})
    np.testing.assert_allclose(float(traj.final_loss), best.fun, rtol=1e-8)
    assert np.all(np.asarray(traj.final_params["W"])[1:] == 0)
    assert np.all(np.asarray(traj.final_params["v"])[1:] == 0)

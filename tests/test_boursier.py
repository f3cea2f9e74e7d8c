"""gflow.theory.boursier2024 and the `boursier` study, checked against closed forms (normal
equations, the paper code's numbers), the flow's own vector field and a stationarity check."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow import models
from gflow.studies import boursier
from gflow.studies import verdicts as verdicts_io
from gflow.studies.verdicts import Verdict as V
from gflow.theory import boursier2024 as theory
from gflow.theory import ncf

X, Y = theory.spurious_data()


def test_D_closed_form_and_vector_field():
    # D_all = (2/3) Σ y_k (x_k, 1) for the MSE without ½ (science_A, paper 2)
    d_all = 2 / 3 * (Y @ X)
    np.testing.assert_allclose(d_all, [-0.516667, 1.333333], atol=1e-6)
    w = np.array([-0.3, 1.0])
    np.testing.assert_allclose(theory.D(w, X, Y), d_all, rtol=1e-14)
    # a tiny neuron (a, w) moves along a·D(w): −∇_w L / a → D(w) as the scale → 0
    params = {"W": jnp.asarray(1e-8 * w[None]), "v": jnp.array([1e-8])}
    grad_w = jax.grad(theory.mse)(params, {"X": X, "y": Y})["W"][0]
    np.testing.assert_allclose(-grad_w / 1e-8, d_all, rtol=1e-7)
    # D is the gradient of the per-neuron ReLU NCF (autodiff, independent of the numpy code)
    r = ncf.correlation_labels(lambda f, y: (f - y) ** 2, Y, reduction="mean")
    N = ncf.ncf(lambda u, Xs: jax.nn.relu(Xs @ u), X, r)
    for v in ([0.9, 0.1], [-0.8, -0.3], [0.2, -1.0]):
        np.testing.assert_allclose(jax.grad(N)(jnp.asarray(v)), theory.D(np.asarray(v), X, Y),
                                   atol=1e-14)
        np.testing.assert_allclose(theory.G(np.asarray(v), X, Y), N(jnp.asarray(v)), atol=1e-14)


def test_extremal_directions_spurious_example():
    found = theory.extremal_directions(X, Y)
    assert len(found) == 1  # all labels positive: no a < 0 attractor, one a > 0 attractor
    e = found[0]
    assert e["sign"] == 1 and e["pattern"].all()
    np.testing.assert_allclose(e["norm_D"], 1.430, atol=5e-4)
    np.testing.assert_allclose(np.degrees(np.arctan2(e["w"][1], e["w"][0])), 111.2, atol=0.05)
    # sampled cells (the d > 2 path, run here on d = 2) find the same cells as the exact arcs
    exact = {tuple(p) for p in theory.activation_cells(X)}
    W = np.random.default_rng(0).standard_normal((20_000, 2))
    sampled = {tuple(p) for p in np.unique(theory.activation_pattern(W, X), axis=0)}
    assert exact == sampled


def test_plateau_is_a_stationary_point_at_L_OLS():
    beta, l_ols = theory.plateau(X, Y)
    np.testing.assert_allclose(l_ols, 0.175043, atol=5e-7)
    normal = np.linalg.solve(X.T @ X, X.T @ Y)  # normal equations
    np.testing.assert_allclose(beta, normal, rtol=1e-12)
    # a balanced neuron with a·w = β activates every point: the network is ⟨β, x̃⟩ and ∇L = 0
    scale = np.sqrt(np.linalg.norm(beta))
    params = {"W": jnp.asarray(beta[None] / scale), "v": jnp.array([scale])}
    args = {"X": X, "y": Y}
    np.testing.assert_allclose(theory.mse(params, args), l_ols, rtol=1e-12)
    grads = jax.grad(theory.mse)(params, args)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-12
    # a pattern that drops x_2: least squares on the other two points, y_2² counted in full
    _, l_13 = theory.plateau(X, Y, pattern=[True, False, True])
    np.testing.assert_allclose(l_13, Y[1] ** 2 / 3, atol=1e-12)


def test_init_boursier():
    key = jax.random.PRNGKey(3)
    bal = models.init_boursier(key, 2, 500, 1e-3, "balanced")
    np.testing.assert_allclose(np.abs(bal["v"]), np.linalg.norm(bal["W"], axis=1), rtol=1e-14)
    np.testing.assert_allclose(np.std(bal["W"]), 1e-3 / np.sqrt(500), rtol=0.1)
    dom = models.init_boursier(key, 2, 500, 1e-3, "dominated")
    assert np.all(np.abs(dom["v"]) > np.linalg.norm(dom["W"], axis=1))
    unb = models.init_boursier(key, 2, 500, 1e-3, "unbalanced")
    np.testing.assert_allclose(np.std(unb["v"]), 1e-3 / np.sqrt(500), rtol=0.15)
    with pytest.raises(ValueError, match="init must be one of"):
        models.init_boursier(key, 2, 10, 1e-3, "lazy")
    with pytest.raises(ValueError, match="init_scale"):
        models.init_boursier(key, 2, 10, 0.0)


def test_kink_clusters():
    # kinks at x = −b/w: 0.2, 0.21, −0.5 (two clusters in [−1, 1]); 3.0 lies outside
    W = jnp.array([[1.0, -0.2], [-2.0, 0.42], [1.0, 0.5], [1.0, -3.0], [1.0, -0.3]])
    v = jnp.array([1.0, 1.0, -1.0, 1.0, 1e-6])
    centres, kinks = theory.kink_clusters({"W": W, "v": v})
    np.testing.assert_allclose(kinks, [-0.5, 0.2, 0.21])
    np.testing.assert_allclose(centres, [-0.5, 0.205])


def _traj(ts, loss, params=None):
    """A stand-in for a `gflow.Trajectory` (the fields the rows read)."""
    return SimpleNamespace(ts=np.asarray(ts), loss=np.asarray(loss), final_loss=float(loss[-1]),
                           status="success", num_accepted_steps=0, num_rejected_steps=0,
                           final_params=params)


def test_plateau_row_needs_a_stalled_flow_at_the_right_level():
    _, l_ols = theory.plateau(X, Y)
    ts = np.linspace(0, 300, 61)
    stalled = _traj(ts, l_ols * (1 + 1e-9 + 0 * ts))
    assert theory.plateau_row("E2.1", "q", stalled, l_ols).outcome == "pass"
    # stalled, but 1% above L_OLS: a wrong level fails
    assert theory.plateau_row("E2.1", "q", _traj(ts, 1.01 * l_ols + 0 * ts), l_ols).outcome == "fail"
    # still falling like 1/t and passing through L_OLS at T: not applicable, never pass
    falling = _traj(ts[1:], l_ols * ts[-1] / ts[1:])
    row = theory.plateau_row("E2.1", "q", falling, l_ols)
    assert row.outcome == "not-applicable" and "still falling" in row.reason
    assert theory.plateau_row("E2.1", "q", stalled, l_ols, premise=False, premise_reason="big λ").outcome == "not-applicable"


def test_plateau_neurons_and_zero_loss_rows_fail_on_wrong_networks():
    beta, _ = theory.plateau(X, Y)
    b = beta / np.linalg.norm(beta)
    dead = np.array([0.0, -1.0])  # ⟨w, x̃⟩ < 0 on every point (x̃₂ = 1)
    good = {"W": jnp.asarray(np.stack([b, 0.5 * b, 1e-3 * dead])), "v": jnp.array([1.0, 0.5, -1e-3])}
    assert theory.plateau_neurons_row(good, X, beta, "ok").outcome == "pass"
    # a large neuron with a < 0, or an a < 0 neuron alive on the data: fail
    wrong = {"W": good["W"], "v": jnp.array([1.0, -0.5, -1e-3])}
    assert theory.plateau_neurons_row(wrong, X, beta, "a<0").outcome == "fail"
    alive = {"W": jnp.asarray(np.stack([b, 0.5 * b, 1e-3 * b])), "v": good["v"]}
    assert theory.plateau_neurons_row(alive, X, beta, "alive").outcome == "fail"
    # E2.2: an untrained net does not reach zero loss
    untrained = _traj([0.0, 1.0], [0.3, 0.2], good)
    assert theory.zero_loss_row(untrained, X, "q").outcome == "fail"
    assert theory.zero_loss_row(_traj([0.0, 1.0], [0.3, 1e-9], good), X, "q").outcome == "pass"


def _e23_rows(cos5, t_esc):
    return [{"lam": lam, "reached": True, "live_pos": 5, "cos5": c, "dead_neg": 1.0, "t_probe": 1.0,
             "t_esc": t} for lam, c, t in zip([1e-2, 1e-3, 1e-4], cos5, t_esc)]


def test_alignment_and_escape_rows_fail_on_wrong_inputs():
    slope = 1 / 1.4302
    logs = np.log([1e2, 1e3, 1e4])
    good = theory.e23_e24_verdicts(_e23_rows([0.99, 0.9999, 0.99999], 3 + slope * logs), 100, slope)
    assert [v.outcome for v in good] == ["pass", "pass", "pass"]
    # alignment that worsens as λ falls, and an escape with the wrong exponent (slope ×1.2)
    bad = theory.e23_e24_verdicts(_e23_rows([0.9999, 0.999, 0.9999], 3 + 1.2 * slope * logs), 100, slope)
    assert [v.outcome for v in bad] == ["fail", "pass", "fail"]
    # a curved t_esc(ln 1/λ) whose point slope is right but whose CI is wide fails too
    curved = theory.e23_e24_verdicts(_e23_rows([0.99, 0.9999, 0.99999], 3 + slope * logs + [0, 0.3, 0]), 100, slope)
    assert curved[2].outcome == "fail"
    # a < 0 neurons still alive at the probe (half of them): the dead-fraction row fails
    alive = _e23_rows([0.99, 0.9999, 0.99999], 3 + slope * logs)
    for r in alive:
        r["dead_neg"] = 0.5
    assert theory.e23_e24_verdicts(alive, 100, slope)[1].outcome == "fail"
    # no live a > 0 neuron at a probe: not applicable
    rows = _e23_rows([0.99, 0.9999, 0.99999], 3 + slope * logs)
    rows[1]["live_pos"] = 0
    assert theory.e23_e24_verdicts(rows, 100, slope)[0].outcome == "not-applicable"


def _e25_runs(counts, decrease=1e-5, grad=1e-6):
    return [{"m": m, "centres": np.linspace(-0.5, 0.5, c), "late_decrease": decrease, "grad_norm": grad,
             "final_loss": 0.04} for m, c in zip([20, 40, 80], counts)]


def test_sparsity_row_needs_converged_nets_and_few_kinks():
    assert theory.e25_verdict(_e25_runs([2, 2, 3]), 1e-3, 2000, 1e-4).outcome == "pass"
    assert theory.e25_verdict(_e25_runs([2, 4, 6]), 1e-3, 2000, 1e-4).outcome == "fail"  # grows with m
    assert theory.e25_verdict(_e25_runs([7, 7, 7]), 1e-3, 2000, 1e-4).outcome == "fail"  # not sparse
    # an under-trained net (loss still halving over [T/2, T]) or a large gradient: not applicable
    for runs in (_e25_runs([2, 2, 2], decrease=0.5), _e25_runs([2, 2, 2], grad=1e-2)):
        row = theory.e25_verdict(runs, 1e-3, 2000, 1e-4)
        assert row.outcome == "not-applicable" and "not converged" in row.reason


def test_box_data_lies_in_theorem_2s_box_and_its_plateau_is_least_squares():
    for seed in range(20):
        Xb, yb = theory.spurious_box_data(0.15, seed)
        assert theory.in_spurious_box(Xb, yb, 0.15)
    assert not theory.in_spurious_box(X, Y, 0.15)  # the paper's Fig. 2 data lie outside the box
    with pytest.raises(ValueError, match="1/6"):
        theory.spurious_box_data(0.2)


def test_held_out_set_stalls_at_its_own_least_squares_value():
    # Data nobody chose (seed 7 in the η-box): the flow from a small balanced init stalls at the
    # set's least-squares value, computed here by numpy's normal equations, not theory.plateau.
    Xb, yb = theory.spurious_box_data(0.15, 7)
    beta = np.linalg.solve(Xb.T @ Xb, Xb.T @ yb)
    l_ols = float(np.mean((Xb @ beta - yb) ** 2))
    p0 = models.init_boursier(jax.random.PRNGKey(7), 2, 20, 1e-3, "balanced")
    traj = theory.flow(p0, Xb, yb, 200.0)
    row = theory.plateau_row("E2.1", "held-out", traj, l_ols)
    assert row.outcome == "pass" and row.measured < 1e-6


@pytest.mark.slow
def test_quick_mode(tmp_path):
    verdicts = boursier.run(tmp_path, quick=True)
    saved = verdicts_io.read(tmp_path)
    assert saved == [V.from_json(v.to_json()) for v in verdicts]
    for name in ("spurious.png", "held_out.png", "alignment.png", "escape_sparsity.png", "manifest.json"):
        assert (tmp_path / name).exists()
    assert all(v.outcome == "pass" for v in verdicts if v.headline)
    e24 = [v for v in verdicts if v.experiment == "E2.4"][0]
    np.testing.assert_allclose(e24.measured, 1.0, rtol=0.05)

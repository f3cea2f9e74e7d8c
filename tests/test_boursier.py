"""gflow.theory.boursier2024 and the `boursier` study, checked against closed forms (normal
equations, the paper code's numbers), the flow's own vector field and a stationarity check."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow import models
from gflow.studies import boursier
from gflow.theory import boursier2024 as theory
from gflow.theory import ncf

X, Y = boursier.spurious_data()


def test_D_closed_form_and_vector_field():
    # D_all = (2/3) Σ y_k (x_k, 1) for the MSE without ½ (science_A, paper 2)
    d_all = 2 / 3 * (Y @ X)
    np.testing.assert_allclose(d_all, [-0.516667, 1.333333], atol=1e-6)
    w = np.array([-0.3, 1.0])
    np.testing.assert_allclose(theory.D(w, X, Y), d_all, rtol=1e-14)
    # a tiny neuron (a, w) moves along a·D(w): −∇_w L / a → D(w) as the scale → 0
    params = {"W": jnp.asarray(1e-8 * w[None]), "v": jnp.array([1e-8])}
    grad_w = jax.grad(boursier.mse)(params, {"X": X, "y": Y})["W"][0]
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
    np.testing.assert_allclose(boursier.mse(params, args), l_ols, rtol=1e-12)
    grads = jax.grad(boursier.mse)(params, args)
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
    centres, kinks = boursier.kink_clusters({"W": W, "v": v})
    np.testing.assert_allclose(kinks, [-0.5, 0.2, 0.21])
    np.testing.assert_allclose(centres, [-0.5, 0.205])


def test_quick_mode_smoke(tmp_path):
    verdicts = boursier.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "verdicts.json").read_text())
    assert len(saved) == len(verdicts) >= 5
    for name in ("spurious.png", "alignment.png", "escape_sparsity.png", "verdicts.md"):
        assert (tmp_path / name).exists()
    by = {v["experiment"]: v for v in verdicts}
    assert by["E2.1"]["measured"] < 1e-3  # the flow stalls at L_OLS
    np.testing.assert_allclose(by["E2.4"]["measured"], by["E2.4"]["predicted"], rtol=0.05)
    assert all(v["pass"] for v in verdicts)

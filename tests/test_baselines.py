"""The baselines against closed forms: scipy's flow of a quadratic, and the numpy ReLU gradient."""

import functools

import jax
import numpy as np
import pytest

import gflow
from gflow import baselines, losses


def test_scipy_flow_matches_the_closed_form_without_touching_jax():
    """L = ½ Σ a_i θ_i² over a pytree flows as θ(t) = θ0 exp(−a t); the right-hand side runs with
    host-to-device transfers disallowed, so no JAX array is made per call (pure numpy)."""
    rates = {"B": np.array([[0.5, 1.0], [2.0, 3.0]]), "a": np.array([0.1, 1.5, 4.0])}
    params0 = {"B": np.array([[1.0, -2.0], [0.5, 1e-3]]), "a": np.array([3.0, -1.0, 2.0])}
    ts = np.linspace(0.0, 2.0, 5)
    grad = lambda p: jax.tree.map(np.multiply, rates, p)  # noqa: E731
    with jax.transfer_guard("disallow"):
        out_ts, params, info = baselines.scipy_flow(grad, params0, 2.0, saveat=ts, rtol=1e-11, atol=1e-14)
    assert info["status"] == 0 and np.allclose(out_ts, ts)
    for t, p in zip(ts, params):
        for key in rates:
            assert isinstance(p[key], np.ndarray) and p[key].shape == params0[key].shape
            np.testing.assert_allclose(p[key], params0[key] * np.exp(-rates[key] * t), rtol=1e-9, atol=1e-13)


# the numpy gradient's logistic loss carries Min et al.'s factor 2, its square loss ½
LOSSES = {
    "exponential": losses.exponential,
    "logistic": functools.partial(losses.logistic, factor=2.0),
    "square": losses.square,
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_numpy_grad_equals_autodiff_of_the_same_loss(loss):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((7, 4)), np.sign(rng.standard_normal(7))
    W, v = rng.standard_normal((5, 4)), rng.standard_normal(5)
    L = gflow.objective(gflow.models.two_layer, LOSSES[loss], X, y, "mean")
    want = jax.grad(L)({"W": W, "v": v})
    dW, dv = baselines.two_layer_numpy_grad(X, y, loss, "mean")(W, v)
    np.testing.assert_allclose(dW, want["W"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dv, want["v"], rtol=1e-12, atol=1e-14)

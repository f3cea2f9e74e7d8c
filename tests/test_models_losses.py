"""Models, losses and objectives against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import losses, models, observables


def test_balanced_init_and_scale():
    p = models.init_two_layer(jax.random.PRNGKey(0), 7, 300, 1e-4)
    assert p["W"].shape == (300, 7) and p["v"].shape == (300,)
    np.testing.assert_allclose(jnp.abs(p["v"]), jnp.linalg.norm(p["W"], axis=1), rtol=1e-12)
    assert set(np.unique(np.sign(p["v"]))) == {-1.0, 1.0}
    # w_j0 ~ N(0, I/d): E‖w_j0‖² = 1, so the mean squared row norm is ε² within sampling error.
    assert abs(float(jnp.mean(jnp.sum(p["W"] ** 2, axis=1))) / 1e-8 - 1) < 0.1
    q = models.init_two_layer(jax.random.PRNGKey(0), 7, 300, 1e-4, balanced=False)
    assert float(jnp.max(jnp.abs(observables.balancedness(q)))) > 1e-10


@pytest.mark.parametrize("bad, message", [({"init_scale": 0.0}, "init_scale"), ({"d": 0}, "d must"),
                                          ({"activation": "swish"}, "unknown activation")])
def test_init_rejects_bad_input(bad, message):
    kwargs = {"d": 3, "width": 4, "init_scale": 1e-3} | bad
    with pytest.raises(ValueError, match=message):
        models.init_two_layer(jax.random.PRNGKey(0), **kwargs)


def test_two_layer_matches_loop_and_relu_derivative_at_zero():
    rng = np.random.default_rng(0)
    W, v, X = rng.standard_normal((5, 3)), rng.standard_normal(5), rng.standard_normal((6, 3))
    f = models.two_layer({"W": jnp.asarray(W), "v": jnp.asarray(v)}, jnp.asarray(X))
    want = [sum(v[j] * max(W[j] @ x, 0.0) for j in range(5)) for x in X]
    np.testing.assert_allclose(f, want, rtol=1e-12)
    assert float(jax.grad(models.ACTIVATIONS["relu"])(0.0)) == 0.0  # σ'(0) = 0 convention


def test_losses_match_formulas():
    f = jnp.array([-1.5, 0.0, 2.0])
    y = jnp.array([1.0, -1.0, -1.0])
    np.testing.assert_allclose(losses.exponential(f, y), np.exp(-np.array(y) * np.array(f)))
    np.testing.assert_allclose(losses.logistic(f, y, factor=2.0), 2 * np.log1p(np.exp(-np.array(y * f))))
    np.testing.assert_allclose(losses.square(f, y), 0.5 * np.array((f - y) ** 2))
    np.testing.assert_allclose(losses.hinge(f, y), np.maximum(0, 1 - np.array(y * f)))
    # factor 2 logistic and exponential have the same slope −y at f = 0 (Min et al. 2024).
    for loss in (losses.exponential, lambda f, y: losses.logistic(f, y, factor=2.0)):
        np.testing.assert_allclose(jax.grad(lambda z: loss(z, -1.0))(0.0), 1.0)


def test_objective_reductions_and_validation():
    X = jnp.ones((4, 2))
    y = jnp.array([1.0, -1.0, 1.0, 1.0])
    apply = lambda p, X: X @ p  # noqa: E731
    p = jnp.array([0.5, -0.25])
    s = gflow.objective(apply, "exponential", X, y, reduction="sum")(p)
    m = gflow.objective(apply, "exponential", X, y, reduction="mean")(p)
    np.testing.assert_allclose(s, 4 * m)
    np.testing.assert_allclose(s, np.sum(np.exp(-np.array(y) * 0.25)))
    with pytest.raises(ValueError, match="same n"):
        gflow.objective(apply, "square", X, y[:3])
    with pytest.raises(ValueError, match="NaN"):
        gflow.objective(apply, "square", X.at[0, 0].set(jnp.nan), y)
    with pytest.raises(ValueError, match="unknown loss"):
        gflow.objective(apply, "cross_entropy", X, y)
    with pytest.raises(ValueError, match="reduction"):
        gflow.objective(apply, "square", X, y, reduction="median")


def test_stable_rank():
    assert float(observables.stable_rank(jnp.outer(jnp.arange(1.0, 4.0), jnp.ones(5)))) == pytest.approx(1.0)
    np.testing.assert_allclose(observables.stable_rank(jnp.diag(jnp.array([2.0, 1.0, 1.0]))), 1.5)


def test_float64_default_and_opt_out(tmp_path):
    import subprocess
    import sys

    assert jnp.zeros(1).dtype == jnp.float64
    code = "import gflow, jax.numpy as jnp; print(jnp.zeros(1).dtype)"
    env = {"GFLOW_X64": "0", "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "float32"

"""Tests of benchmarks/filippov_reference.py, the independent sliding-aware reference of issue 17.

Checked without gflow's solver: the hand-written gradient against finite differences of L, the
closed-form jumps against differences of the frozen field, the integrator against a 2-D Filippov
flow with a closed-form solution (reach the surface, slide, exit), the conservation of
balancedness v_j² − ‖w_j‖² along a two-layer ReLU flow that slides on many surfaces, and
agreement between two tolerances and two integrators (DOP853, Radau).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from gflow import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import filippov_reference as fr  # noqa: E402
from test_switching import C, T_END, U0, W0, _slide_closed_form  # noqa: E402  (the 2-D flow)


def _net(loss="exponential", reduction="sum", activation="relu", n=20, d=5, width=10, seed=1):
    X, y = data.hyperplane(n, d, seed)
    net = fr.TwoLayerNet(X, y, loss, reduction, activation).bind(width)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((width, d)) / np.sqrt(d)
    v = np.sign(rng.standard_normal(width)) * np.linalg.norm(W, axis=1)  # balanced
    return net, X, y, W, v


LOSS_SETTINGS = [(loss, red, act) for loss in ("exponential", "logistic", "square")
                 for red in ("sum", "mean") for act in ("relu", "leaky_relu")]


@pytest.mark.parametrize("loss,reduction,activation", LOSS_SETTINGS)
def test_gradient_matches_finite_differences(loss, reduction, activation):
    net, _, _, W, v = _net(loss, reduction, activation)
    theta = net.pack(0.7 * W, 0.7 * v)
    g = net.gradient(theta)
    e = 1e-6
    eye = np.eye(net.dim)
    fd = np.array([(net.loss(theta + e * eye[i]) - net.loss(theta - e * eye[i])) / (2 * e) for i in range(net.dim)])
    assert np.all(np.abs(net.surfaces(theta)) > 1e-4)  # no kink within the difference
    np.testing.assert_allclose(g, fd, rtol=0, atol=1e-7 * np.max(np.abs(g)))


@pytest.mark.parametrize("loss,reduction,activation", LOSS_SETTINGS[::3])
def test_losses_match_gflow(loss, reduction, activation):
    # the same L as gflow.losses.objective (values only: the gradients are checked above)
    import functools

    import jax.numpy as jnp

    from gflow import losses, models

    net, X, y, W, v = _net(loss, reduction, activation)
    apply = functools.partial(models.two_layer, activation=activation)
    L = losses.objective(apply, loss, X, y, reduction=reduction)
    assert abs(float(L({"W": jnp.asarray(W), "v": jnp.asarray(v)})) - net.loss(net.pack(W, v))) < 1e-13 * abs(net.loss(net.pack(W, v)))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_closed_form_jumps_are_the_field_differences(activation):
    # on surface k (θ projected onto s_k = 0), J_k = F(p_k = 1) − F(p_k = 0), normal to it
    net, _, _, W, v = _net("logistic", "mean", activation)
    theta = net.pack(W, v)
    for k in (0, 7, net.num_surfaces - 1):
        n_k = net.normals([k])[0]
        on = theta - n_k * (n_k @ theta) / (n_k @ n_k)
        p = (net.surfaces(on) > 0).astype(float)
        p0, p1 = p.copy(), p.copy()
        p0[k], p1[k] = 0.0, 1.0
        diff = net.field(on, p1) - net.field(on, p0)
        J = net.jumps(on, [k])[0]
        np.testing.assert_allclose(J, diff, rtol=0, atol=1e-13 * np.max(np.abs(diff)))
        beta = (J @ n_k) / (n_k @ n_k)
        np.testing.assert_allclose(J, beta * n_k, rtol=0, atol=1e-13 * np.max(np.abs(J)))


class _SlideFlow:
    """The 2-D flow of tests/test_switching.py, L(u, w) = −u + 2 relu(w) − (C − u) w, in the
    reference's problem interface: F(θ, p) = (1 − w, C − u − 2p), s = w."""

    dim, num_surfaces = 2, 1

    def field(self, theta, pattern):
        u, w = theta
        return np.array([1.0 - w, C - u - 2.0 * pattern[0]])

    def surfaces(self, theta):
        return theta[1:2].copy()

    def surface_scale(self, theta):
        return np.ones(1)

    def normals(self, ks):
        return np.array([[0.0, 1.0]] * len(ks))

    def jumps(self, theta, ks):
        return np.array([[0.0, -2.0]] * len(ks))


@pytest.mark.parametrize("method", ["DOP853", "Radau"])
def test_closed_form_sliding_flow(method):
    out = fr.integrate(_SlideFlow(), np.array([U0, W0]), T_END, rtol=1e-12, method=method, record_events=True)
    t_hit, u_hit, t_exit, (u_ref, w_ref) = _slide_closed_form(T_END)
    assert out.status == "success"
    np.testing.assert_allclose(out.theta, [u_ref, w_ref], rtol=0, atol=1e-9)
    kinds = [(kind, round(t, 8)) for t, kind, _ in out.events]
    assert kinds == [("slide", round(t_hit, 8)), ("exit", round(t_exit, 8))]
    assert out.crossings == 0 and out.sliding_final == 0


@pytest.fixture(scope="module")
def sliding_net():
    # n = 20, d = 5, width 10, balanced ε = 1e-2, exponential loss, sum: slides on up to ~20
    # surfaces at once before t = 3 (the stress corpus's tiny case)
    X, y = data.hyperplane(20, 5, 1)
    rng = np.random.default_rng(0)
    W = 1e-2 * rng.standard_normal((10, 5)) / np.sqrt(5)
    v = np.sign(rng.standard_normal(10)) * np.linalg.norm(W, axis=1)
    runs = {rtol: fr.reference(X, y, W, v, 3.0, rtol=rtol) for rtol in (1e-9, 1e-11)}
    return X, y, W, v, runs


def test_balancedness_is_conserved_while_sliding(sliding_net):
    _, _, W0_, v0, runs = sliding_net
    W, v, out = runs[1e-11]
    assert out.status == "success" and out.sliding_starts > 5 and out.max_sliding >= 5
    before = v0**2 - np.sum(W0_**2, axis=1)
    after = v**2 - np.sum(W**2, axis=1)
    assert np.max(np.abs(after - before)) < 1e-10 * np.max(v**2)


def test_two_tolerances_agree(sliding_net):
    _, _, _, _, runs = sliding_net
    (Wa, va, a), (Wb, vb, b) = runs[1e-9], runs[1e-11]
    scale = max(np.max(np.abs(Wb)), np.max(np.abs(vb)))
    err = max(np.max(np.abs(Wa - Wb)), np.max(np.abs(va - vb))) / scale
    assert err < 1e-8
    for key in ("crossings", "sliding_starts", "sliding_exits", "max_sliding", "sliding_final"):
        assert getattr(a, key) == getattr(b, key), key


def test_second_integrator_agrees(sliding_net):
    X, y, W, v, runs = sliding_net
    Wr, vr, radau = fr.reference(X, y, W, v, 3.0, rtol=1e-10, method="Radau")
    Wb, vb, dop = runs[1e-11]
    scale = max(np.max(np.abs(Wb)), np.max(np.abs(vb)))
    assert radau.status == "success"
    assert max(np.max(np.abs(Wr - Wb)), np.max(np.abs(vr - vb))) / scale < 1e-8
    assert (radau.crossings, radau.sliding_starts, radau.sliding_exits) == (dop.crossings, dop.sliding_starts, dop.sliding_exits)

"""The automatic orientation count, the leading-order directions of Zhou et al. (2022) and the
D1–D3 study (smoke test of its quick mode)."""

import numpy as np
import pytest

from gflow import condensation as cond
from gflow import models, observables
from gflow.studies import condensation as study
from gflow.theory import zhou2022


def _cluster(rng, direction, count, spread, scale=1.0):
    u = direction / np.linalg.norm(direction)
    return scale * (u + spread * rng.standard_normal((count, u.size)))


def test_count_on_planted_orientations():
    rng = np.random.default_rng(0)
    u1, u2 = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 1.0]) / np.sqrt(2)
    W = np.vstack([
        _cluster(rng, u1, 10, 0.01),
        _cluster(rng, -u1, 6, 0.01),  # the antipode: a distinct orientation on the same line
        _cluster(rng, u2, 8, 0.01),
        _cluster(rng, np.array([1.0, -1.0, 0.3]), 1, 0.0),  # a lone neuron: not counted
        _cluster(rng, np.array([0.0, 0.0, 1.0]), 5, 0.01, scale=0.01),  # inactive (small)
    ])
    c = observables.condensation(W)
    assert (c.num_orientations, c.num_lines, c.num_active) == (3, 2, 25)
    assert c.quality == pytest.approx(24 / 25)
    np.testing.assert_array_equal(c.sizes, [10, 8, 6])
    planted = np.stack([u1, u2, -u1])
    assert np.all(np.sum(c.centroids * planted, axis=1) > 0.999)
    assert np.all(c.labels[-5:] == -1) and c.labels[24] == -1
    grid = cond.robustness(W)
    assert grid["num_orientations"].shape == (4, 3)
    assert np.all(grid["num_lines"] == 2)


def test_heatmap_order_keeps_clusters_contiguous():
    rng = np.random.default_rng(1)
    W = np.vstack([_cluster(rng, np.array([1.0, 0.2]), 7, 0.02), _cluster(rng, np.array([-1.0, -0.2]), 5, 0.02)])
    W = W[rng.permutation(len(W))]
    side = (W @ np.array([1.0, 0.2]) > 0)[cond.heatmap_order(W)]
    assert np.count_nonzero(np.diff(side.astype(int))) == 1
    D = cond.cosine_similarity(W)
    np.testing.assert_allclose(np.diag(D), 1.0)


@pytest.mark.parametrize("W", [np.zeros((3, 2)), np.ones(4), np.array([[1.0, np.nan]])])
def test_bad_weights_raise(W):
    with pytest.raises(ValueError):
        cond.condensation(W)


def test_leading_order_directions_against_brute_force():
    # d = 1: orientations on the circle, so a dense angle grid is an independent reference.
    X, y = zhou2022.fig5_data()
    theta = np.linspace(-np.pi, np.pi, 200_001)[:-1]
    U = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    Z = U @ np.asarray(models.with_bias(X)).T
    for p in (1, 2, 3):
        T = (Z**p) @ y
        is_max = (T > np.roll(T, 1)) & (T > np.roll(T, -1)) & (T > 0)
        brute = U[is_max]
        if p == 1:
            predicted = zhou2022.direction_p1(X, -y)[None]
        elif p == 2:
            predicted = np.stack(zhou2022.directions_p2(X, -y)[:1])
            predicted = np.vstack([predicted, -predicted])  # T_2 is even: both ends are maxima
        else:
            predicted = zhou2022.maxima_p3(X, -y)
        assert len(predicted) == len(brute), p
        assert np.all(np.max(np.abs(predicted @ brute.T), axis=1) > 1 - 1e-8), p


def test_multiplicity_rejects_relu():
    with pytest.raises(ValueError, match="multiplicity"):
        zhou2022.multiplicity("relu")


def test_quick_mode_smoke(tmp_path):
    from gflow.studies import verdicts as verdicts_io

    rows = study.run(tmp_path, quick=True)
    assert verdicts_io.read(tmp_path) == rows
    for name in ("verdicts.md", "manifest.json", "heatmaps_D1.png", "heatmaps_D1_equal.png", "heatmaps_D2.png",
                 "counts_D3.png", "directions_D1.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert {v.experiment for v in rows} == {"D1", "D1-equal", "D2", "D3", "D1-Adam"}
    # No count bound passes where nothing condensed: every K ≤ 2p row with a K = 0 run is n/a.
    for v in rows:
        if v.criterion.startswith("K ≤") and "0" in v.measured.strip("[]").split(", "):
            assert v.outcome == "not-applicable", v
    # The headline rows of D1 (K ≤ 2p): tanh condenses (p = 1, proved) and passes; under the
    # gradient flow x·tanh and x²·tanh do not condense (winner-take-all), so they are n/a, and
    # with equal initial norms x·tanh condenses on the a > 0 line, K = 2 ≤ 4.
    heads = {v.quantity.split(",")[0]: v for v in rows if v.headline}
    assert [heads[a].outcome for a in ("tanh", "xtanh", "x2tanh")] == ["pass", "not-applicable", "not-applicable"]
    assert verdicts_io.exit_status(rows) == 1
    equal = [v for v in rows if v.experiment == "D1-equal"]
    assert [v.outcome for v in equal] == ["fail", "pass", "pass"]  # 1 line, not p = 2; K = 2; on the eigenvector
    # T_stop is the loss rule of §D, the later stops where R_S/R_S(0) reaches 0.9 and 0.5:
    # recompute R_S with the numpy forward pass at the returned weights.
    X, y = zhou2022.fig5_data()
    r = zhou2022.initial_stage(X, y, "tanh", 50, 0, later=(0.9, 0.5))
    assert r["stop_rule"] == "loss"
    np.testing.assert_allclose(r["later_risk"], [0.99, 0.9, 0.5], rtol=1e-8)
    import jax

    params0 = models.init_two_layer_bias(jax.random.PRNGKey(0), 1, 50, zhou2022.init_scale("tanh"))
    Xt = np.hstack([X, np.ones_like(X)])
    risk0 = 0.5 * np.mean((np.tanh(Xt @ np.asarray(params0["W"]).T) @ np.asarray(params0["a"]) - y) ** 2)
    assert 0.5 * np.mean(r["residual"] ** 2) == pytest.approx(0.99 * risk0, rel=1e-8)
    # p = 1 is proved (Zhou et al., Thm. for p = 1): every neuron points along ±ĝ, whatever its
    # norm; `alignment` measures it against the residual at T_stop.
    g = zhou2022.direction_p1(X, r["residual"])
    cos = np.abs(r["W"] @ g) / np.linalg.norm(r["W"], axis=1)
    np.testing.assert_allclose(zhou2022.alignment(r, "tanh", X), cos, rtol=1e-12)
    assert np.median(cos) > 0.999


def test_adam_stage_first_step_against_finite_differences():
    # Adam's first step is −lr·m̂/(√v̂ + ε) with m̂ = g, v̂ = g² (bias-corrected), ε = 1e−8:
    # ≈ −lr·sign(g). g comes from central finite differences of a numpy R_S.
    import jax

    X, y = zhou2022.fig5_data()
    width, lr, sigma0 = 4, 5e-4, 5e-3
    params0 = models.init_two_layer_bias(jax.random.PRNGKey(3), 1, width, sigma0)
    theta0 = np.concatenate([np.asarray(params0["W"]).ravel(), np.asarray(params0["a"])])
    Xt = np.hstack([X, np.ones_like(X)])

    def risk(theta):
        W, a = theta[: 2 * width].reshape(width, 2), theta[2 * width :]
        return 0.5 * np.mean((np.tanh(Xt @ W.T) @ a - y) ** 2)

    eye = np.eye(theta0.size) * 1e-7
    g = np.array([(risk(theta0 + e) - risk(theta0 - e)) / 2e-7 for e in eye])
    loss_stop, after_one = zhou2022.adam_stage(X, y, "tanh", width, 3, lr=lr, epochs=(1,), sigma0=sigma0)
    assert (loss_stop["t_stop"], after_one["t_stop"]) == (1, 1)
    theta1 = np.concatenate([after_one["W"].ravel(), after_one["a"]])
    np.testing.assert_allclose(theta1 - theta0, -lr * g / (np.abs(g) + 1e-8), rtol=1e-6)
    assert after_one["risk"] == pytest.approx(risk(theta1) / risk(theta0), rel=1e-10)
    np.testing.assert_allclose(after_one["residual"], np.tanh(Xt @ np.asarray(params0["W"]).T) @ np.asarray(params0["a"]) - y, rtol=1e-12)


def test_bias_and_residual_nets_against_numpy():
    import jax

    rng = np.random.default_rng(2)
    X = rng.standard_normal((6, 3))
    params = models.init_residual(jax.random.PRNGKey(0), 3, 4, 2, 0.5)
    acts = ("xtanh", "sigmoid")
    Xt = np.hstack([X, np.ones((6, 1))])
    h = Xt @ np.asarray(params["W"]).T
    z = np.hstack([h, np.ones((6, 1))]) @ np.asarray(params["layers"][0]).T
    h = z * np.tanh(z) + h
    z = np.hstack([h, np.ones((6, 1))]) @ np.asarray(params["layers"][1]).T
    h = 1 / (1 + np.exp(-z)) + h
    np.testing.assert_allclose(models.residual(params, X, acts), h @ np.asarray(params["a"]), rtol=1e-12)
    two = np.tanh(Xt @ np.asarray(params["W"]).T) @ np.asarray(params["a"])
    np.testing.assert_allclose(models.two_layer_bias(params, X, "tanh"), two, rtol=1e-12)
    with pytest.raises(ValueError, match="activations"):
        models.residual(params, X, ("tanh",))


# ----------------------------------------------------------------------------- verdict criteria
# Each row of `gflow condensation` fed a right and a deliberately wrong input (D1–D4).
def test_two_p_row_is_not_applicable_when_nothing_condensed():
    assert zhou2022.two_p_verdict("D1", "x", [4, 3], 2).outcome == "pass"
    assert zhou2022.two_p_verdict("D1", "x", [5, 3], 2).outcome == "fail"  # more than 2p
    for K in ([0, 0], [3, 0]):
        row = zhou2022.two_p_verdict("D1", "x", K, 2, headline=True)
        assert row.outcome == "not-applicable" and "nothing condensed" in row.reason
    assert zhou2022.two_p_verdict("D1", "x", [0, 0], 2, headline=True).basis == "paper"


def test_kkt_row():
    assert zhou2022.kkt_verdict("D2", "x", [2, 4], [4, 4]).outcome == "pass"
    assert zhou2022.kkt_verdict("D2", "x", [6, 4], [4, 4]).outcome == "fail"
    assert zhou2022.kkt_verdict("D2", "x", [0, 1], [4, 6]).outcome == "not-applicable"


def test_line_count_row_counts_uncondensed_runs_against_the_claim():
    assert zhou2022.line_count_verdict("D1", "x", [2] * 9 + [1], 2).outcome == "pass"
    assert zhou2022.line_count_verdict("D1", "x", [2] * 7 + [1] * 3, 2).outcome == "fail"
    assert zhou2022.line_count_verdict("D1", "x", [0] * 10, 2).outcome == "fail"  # nothing condensed
    assert zhou2022.line_count_verdict("D1", "x", [], 2).outcome == "not-applicable"


def test_centroid_row():
    assert zhou2022.centroid_verdict("D1", "x", [0.999, 0.9999]).outcome == "pass"
    assert zhou2022.centroid_verdict("D1", "x", [0.999, 0.95]).outcome == "fail"  # off the prediction
    assert zhou2022.centroid_verdict("D1", "x", [0.999, np.nan]).outcome == "not-applicable"  # no cluster


def test_persistence_row():
    assert zhou2022.persistence_verdict("D3", "x", [2, 2, 3]).outcome == "pass"
    assert zhou2022.persistence_verdict("D3", "x", [2, 0, 0]).outcome == "fail"
    assert zhou2022.persistence_verdict("D3", "x", [0, 0, 0]).outcome == "not-applicable"


def test_one_line_and_exact_count_rows():
    assert zhou2022.one_line_verdict("D2", "x", [1, 1], [1.0, 0.95]).outcome == "pass"
    assert zhou2022.one_line_verdict("D2", "x", [1, 0], [1.0, 0.0]).outcome == "fail"  # one run never condensed
    assert zhou2022.one_line_verdict("D2", "x", [1, 2], [1.0, 1.0]).outcome == "fail"
    assert zhou2022.one_line_verdict("D2", "x", [1, 1], [1.0, 0.5]).outcome == "fail"  # half the neurons off-line
    assert zhou2022.exact_count_verdict("D2", "x", [3, 4], {3, 4}, "c").outcome == "pass"
    assert zhou2022.exact_count_verdict("D2", "x", [0, 4], {3, 4}, "c").outcome == "fail"


def test_count_rows_on_planted_weights():
    """The count and a row together: planted ±u condensation passes K ≤ 2p; a net whose active
    set is one neuron (winner-take-all) gives K = 0 and is not applicable, never a pass."""
    rng = np.random.default_rng(4)
    u = np.array([0.6, 0.8])
    condensed = np.vstack([_cluster(rng, u, 8, 0.005), _cluster(rng, -u, 6, 0.005)])
    winner = np.vstack([_cluster(rng, u, 1, 0.0), 1e-3 * rng.standard_normal((13, 2))])
    K = [cond.condensation(W).num_orientations for W in (condensed, winner)]
    assert K == [2, 0]
    assert zhou2022.two_p_verdict("D1", "x", K[:1], 1).outcome == "pass"
    assert zhou2022.two_p_verdict("D1", "x", K, 1).outcome == "not-applicable"


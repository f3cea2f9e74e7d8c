"""Alignment observables, the alignment event and the `gflow align` study (Min, Mallada & Vidal
2024), checked on hand-built cones, a loop reference, the theory module's closed forms and the
logistic/exponential equivalence of the early phase."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import gflow
from gflow import data, events, losses, models
from gflow import observables as obs
from gflow.studies import alignment
from gflow.studies import verdicts as verdicts_io
from gflow.theory import min2024

# Two positives near +e1, two negatives near −e1; every point has third coordinate 1.
X_HAND = np.array([[1.0, 0.2, 1.0], [1.0, -0.2, 1.0], [-1.0, 0.3, 1.0], [-1.0, -0.3, 1.0]])
Y_HAND = np.array([1.0, 1.0, -1.0, -1.0])


def reference_aligned(W, v, X, y, delta):
    """The definitions of Min et al. (2024, §3) written out as loops."""
    x_plus, x_minus = X[y > 0].sum(0), X[y < 0].sum(0)
    out = []
    for w, vj in zip(W, v):
        pre = [w @ x for x in X]
        dead = all(p <= 0 for p in pre)
        s_plus = all((p > 0) if yi > 0 else (p <= 0) for p, yi in zip(pre, y))
        s_minus = all((p > 0) if yi < 0 else (p <= 0) for p, yi in zip(pre, y))
        cos_p = w @ x_plus / (np.linalg.norm(w) * np.linalg.norm(x_plus)) if np.any(w) else 0.0
        cos_m = w @ x_minus / (np.linalg.norm(w) * np.linalg.norm(x_minus)) if np.any(w) else 0.0
        out.append(dead or (vj > 0 and s_plus and cos_p >= 1 - delta) or (vj < 0 and s_minus and cos_m >= 1 - delta))
    return np.array(out)


def test_cones_on_hand_built_rows():
    W = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 0, -1.0], [0, 0, 1.0], [0, 1.0, 0], [0.2, 1.0, -1.0], [0, 0, 0]])
    in_plus, in_minus, dead = (np.asarray(a) for a in obs.cones(W, X_HAND, Y_HAND))
    np.testing.assert_array_equal(in_plus, [1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(in_minus, [0, 1, 0, 0, 0, 0, 0])
    # row 5 has ⟨w, x_2⟩ = 0 exactly: inactive (σ'(0) = 0), so it is dead with the others ≤ 0
    np.testing.assert_array_equal(dead, [0, 0, 1, 0, 0, 1, 1])
    member = np.asarray(obs.cone_membership(X_HAND, Y_HAND)({"W": W, "v": np.ones(7)}))
    np.testing.assert_array_equal(member, np.stack([in_plus, in_minus, dead], -1).astype(float))


def test_aligned_on_hand_built_rows():
    x_plus = X_HAND[:2].sum(0)
    W = np.array([x_plus, x_plus, [1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    v = np.array([1.0, -1.0, 1.0, -1.0, 1.0])
    params = {"W": W, "v": v}
    # x̄_+ with v>0: aligned; with v<0: wrong cone; e1 is in S_+ but cos(e1, x_+) = 1/√2; dead; mixed
    np.testing.assert_array_equal(obs.aligned(params, X_HAND, Y_HAND, 1e-2), [1, 0, 0, 1, 0])
    np.testing.assert_array_equal(obs.aligned(params, X_HAND, Y_HAND, 0.3), [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(obs.alignment_indicator(X_HAND, Y_HAND, 0.3)(params), [1.0, 0, 1, 1, 0])


def test_aligned_and_cosines_match_loop_reference():
    X, y = data.separated(4, 7, 9, 0.3, radii=(0.5, 2.0))
    rng = np.random.default_rng(0)
    x_plus = X[y > 0].sum(0)
    # rows near x̄_+ and x̄_− (some aligned at δ = 0.05, some not), plus random rows
    W = np.concatenate([x_plus + 0.3 * rng.standard_normal((20, 9)), -x_plus + 0.3 * rng.standard_normal((20, 9)),
                        rng.standard_normal((20, 9))])
    v = np.where(rng.random(60) < 0.5, 1.0, -1.0)
    got = np.asarray(obs.aligned({"W": W, "v": v}, X, y, 0.05))
    np.testing.assert_array_equal(got, reference_aligned(W, v, X, y, 0.05))
    assert 0 < got.sum() < 60
    cos = np.asarray(obs.class_cosines(X, y)({"W": W, "v": v}))
    unit = x_plus / np.linalg.norm(x_plus)
    np.testing.assert_allclose(cos[:, 0], W @ unit / np.linalg.norm(W, axis=1), rtol=1e-12)


def test_alignment_event_rejects_bad_delta():
    for delta in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="delta must lie in"):
            events.alignment_event(X_HAND, Y_HAND, delta)


TINY = alignment.AlignConfig(
    seeds=(0, 1), n=6, width=8, mus=(0.2, 0.8), mu=0.2, eps_grid=(1e-3, 1e-6), ns=(4, 6), t_late=200.0,
    digits_n=0, bootstrap=200,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("align")
    rows = alignment.run(TINY, out)
    groups = {g: xr.open_dataset(out / "results.nc", group=g, engine="h5netcdf").load() for g in ("synthetic", "n_scaling")}
    return out, rows, groups


def test_alignment_event_locates_first_aligned_time_and_matches_pool_lane(tiny_run):
    """simulate + alignment_event on the n=4 data agrees with the study's lane: the same flow,
    solved by the `solve_batch` pool's switching stepper next to the other n=4 lanes (longer t1;
    the kinks found from the lane objective) and here by simulate's switching solve on the
    closed-form kinks of `gflow.objective`."""
    _, _, groups = tiny_run
    ds = groups["n_scaling"]
    lane = int(np.nonzero((ds.n.values == 4) & (ds.seed.values == 0))[0][0])
    X, y = data.separated(1000 * 0 + 4, 4, 5, TINY.mu)
    L = losses.objective(models.two_layer, "exponential", X, y, "sum")
    p0 = models.init_two_layer(jax.random.PRNGKey(0), 5, TINY.width, TINY.init_scale)
    ts = jnp.linspace(0.0, 20.0, 401)
    traj = gflow.simulate(L, p0, 20.0, saveat=ts, rtol=TINY.rtol, event=events.alignment_event(X, y, TINY.delta))
    assert traj.status == "event" and int(traj.stats["switching"]) == 1
    t_event = float(traj.t_event)
    assert t_event == pytest.approx(float(ds.t_align[lane]), rel=1e-9)  # measured 8e-14
    # a second integrator, the plain solve, locates the same time to its accuracy, and its
    # state there is aligned (the switching solve's state at a bool event lies within the
    # event's time tolerance before it)
    plain = gflow.simulate(L, p0, 20.0, saveat=ts, rtol=TINY.rtol, event=events.alignment_event(X, y, TINY.delta),
                           switching=False)
    assert float(plain.t_event) == pytest.approx(t_event, rel=1e-5)  # measured 3.9e-6
    assert np.all(np.asarray(obs.aligned(plain.final_params, X, y, TINY.delta)))
    before = [k for k in range(len(ts)) if float(ts[k]) < t_event]
    for k in before:
        p = jax.tree.map(lambda a: a[k], traj.params)
        assert not np.all(np.asarray(obs.aligned(p, X, y, TINY.delta)))
    assert float(ts[before[-1] + 1]) - t_event < float(ts[1])


def test_study_lanes_against_theory(tiny_run):
    _, _, groups = tiny_run
    ds = groups["synthetic"]
    assert np.all(ds.t_align.values < ds.bound.values)
    # early dynamics of exp and 2·logistic agree (−ℓ'(0) = y for both) up to O(ε²)
    exp_lanes = (ds.experiment.values == "mu") & (ds.mu.values == TINY.mu)
    log_lanes = ds.experiment.values == "logistic"
    np.testing.assert_array_equal(ds.seed.values[log_lanes], ds.seed.values[exp_lanes])
    np.testing.assert_allclose(ds.t_align.values[log_lanes], ds.t_align.values[exp_lanes], rtol=1e-5)
    # late phase: stable rank → (A₊+A₋)/λ_max with the run's own group energies and data cosine
    A = ds.energy.values[:, -1]
    pred = min2024.stable_rank_limit(ds.class_cosine.values, A[:, 0], A[:, 1])
    np.testing.assert_allclose(ds.trace_stable_rank.values[:, -1], pred, rtol=0.02)
    # escape: t_esc(1e-6) − t_esc(1e-3) = ln(1e3)/‖x₊‖ (same seed, same data)
    eps_lanes = (ds.mu.values == TINY.mu) & (ds.loss_name.values == "exponential")
    for seed in TINY.seeds:
        sel = eps_lanes & (ds.seed.values == seed)
        t_esc = dict(zip(ds.eps.values[sel], ds.t_esc.values[sel]))
        slope = (t_esc[1e-6] - t_esc[1e-3]) / np.log(1e3)
        assert slope == pytest.approx(ds.escape_slope_pred.values[sel][0], rel=0.05)
    assert np.all(ds.t_align.values[eps_lanes] < ds.t_esc.values[eps_lanes])
    drift = min2024.balance_drift({"balancedness": ds.trace_balancedness.values, "energy": ds.energy.values})
    assert np.all(drift < 1e-6)


def test_study_rows_recomputed_independently(tiny_run):
    """The headline rows of the tiny run against numpy recomputations from results.nc: the
    exponents by np.polyfit of the seed-mean, the ratio from 4 log n/√μ written out."""
    _, rows, groups = tiny_run
    syn, grid = groups["synthetic"], groups["n_scaling"]
    mu_lanes = syn.experiment.values == "mu"
    T = np.array([[syn.t_align.values[mu_lanes & (syn.seed.values == s) & (syn.mu.values == m)][0] for m in TINY.mus]
                  for s in TINY.seeds])
    mu_row = next(r for r in rows if r.quantity.startswith("log-log slope of t_align against μ"))
    assert mu_row.headline
    assert mu_row.measured == pytest.approx(np.polyfit(np.log(TINY.mus), np.log(T).mean(0), 1)[0], rel=1e-10)
    Tn = np.array([[grid.t_align.values[(grid.seed.values == s) & (grid.n.values == n)][0] for n in TINY.ns]
                   for s in TINY.seeds])
    growth = next(r for r in rows if r.quantity.startswith("log-log slope of t_align against n"))
    assert growth.headline
    assert growth.measured == pytest.approx(np.polyfit(np.log(TINY.ns), np.log(Tn).mean(0), 1)[0], rel=1e-10)
    ratio = next(r for r in rows if r.experiment == "E1.2" and r.basis == "reconstructed")
    bound = 4 * np.log(np.array(TINY.ns))[None, :] / np.sqrt(TINY.mu)
    assert ratio.measured == pytest.approx(np.max(Tn / bound), rel=1e-12)
    assert ratio.outcome == ("pass" if ratio.measured <= 1 else "fail")


def test_study_outputs(tiny_run):
    out, rows, _ = tiny_run
    assert verdicts_io.read(out) == [verdicts_io.Verdict.from_json(r.to_json()) for r in rows]
    table = (out / "verdicts.md").read_text()
    assert all(r.criterion in table for r in rows)
    assert {r.experiment for r in rows} == {"E1.1", "E1.2", "E1.3", "E1.4"}
    assert sum(r.headline for r in rows) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["fits"]) >= {"mu_exponent", "n_scaling", "escape_slope", "stable_rank"}
    assert json.loads((out / "manifest.json").read_text())["seeds"] == list(TINY.seeds)
    for name in ("t_align_vs_mu.png", "t_align_vs_n.png", "escape_vs_log_eps.png", "late_phase.png",
                 "cosines_synthetic.png"):
        assert (out / name).stat().st_size > 1000


def test_cli_rejects_bad_options(capsys, tmp_path):
    from gflow.cli import main

    assert main(["align", "--seeds", "1"]) == 2
    assert "--seeds must be ≥ 2" in capsys.readouterr().err
    assert main(["align", "--lanes", "0"]) == 2
    assert "--lanes must be a positive integer" in capsys.readouterr().err
    assert main(["align", "--rtol", "0.5"]) == 2
    assert "--rtol must lie in (0, 1e-3)" in capsys.readouterr().err
    assert main(["align", "--parts", "digits,mnist", "--out", str(tmp_path)]) == 2
    assert "--parts takes comma-separated names of synthetic, n-scaling, digits" in capsys.readouterr().err
    assert main(["align", "--ns", "4"]) == 2
    assert "--ns needs at least two sizes" in capsys.readouterr().err
    assert main(["align", "--ns", "4,x"]) == 2
    assert "--ns must be comma-separated integers" in capsys.readouterr().err
    assert main(["align", "--mnist", "/nonexistent"]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err


def test_group_energies():
    W = np.array([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    np.testing.assert_allclose(obs.group_energies({"W": W, "v": np.array([1.0, -2.0, 0.5])}), [29.0, 1.0])


@pytest.mark.slow
def test_digits_live_neurons_align_before_the_loss_drops():
    """E1.5 on a digits subsample (Filippov integration): live neurons align with x̄_± before
    the loss drops, and the stable rank stays ≤ 2."""
    cfg = alignment.AlignConfig(digits_n=40, digits_t1=10.0)
    out = min2024.run_real(cfg, "digits")
    assert np.all(out["status"] == gflow.status.SUCCESS)
    assert out["mu_hat"][0] < 0  # not separated: the cone condition is not expected to hold
    rows, _ = min2024.real_verdicts(cfg, out, "digits")
    assert [r.outcome for r in rows] == ["pass", "pass"], rows


@pytest.mark.slow
def test_demo_grid_reproduces_the_pilot_claims(tmp_path):
    """The `make demo` synthetic grid: every verdict row of the μ-, ε- and late-phase claims."""
    cfg = alignment.AlignConfig(ns=(), digits_n=0)
    rows = alignment.run(cfg, tmp_path)
    assert verdicts_io.exit_status(rows) == 0, verdicts_io.markdown_table(rows)

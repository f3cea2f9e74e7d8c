"""Sweeps: grid expansion, TOML parsing and validation, closed-form results with failing points,
identical results between chunk sizes and executors, resume after a killed process."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import status, sweep

CACHE = os.environ.get("GFLOW_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".jax_cache"))
# Subprocesses and Dask workers reuse the compilations of this process.
CHILD_ENV = {
    **os.environ,
    "JAX_COMPILATION_CACHE_DIR": CACHE,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
}
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Dask workers cannot import tests/


def linear_objective(params, args):
    """L = −r‖w‖²/2: the flow dw/dt = r·w has the closed form w(t) = w0·e^{rt}."""
    return -0.5 * args["r"] * jnp.sum(params["w"] ** 2)


def norm(params, args):
    return jnp.linalg.norm(params["w"])


def linear_problem(point):
    if "die_once" in point and _in_dask_worker() and not os.path.exists(point["die_once"]):
        if point["rate"] == 0.5 and point["seed"] == 0:  # kill the worker mid-chunk, once
            Path(point["die_once"]).touch()
            os._exit(1)
    w0 = np.random.default_rng(point["seed"]).standard_normal(3)
    return sweep.Problem(linear_objective, {"w": w0}, {"r": np.asarray(float(point["rate"]))}, {"norm": norm})


def _in_dask_worker():
    try:
        from distributed import get_worker

        get_worker()
        return True
    except ValueError:
        return False


RATES = [-1.0, 0.5, 300.0]
SEEDS = [0, 1]


def linear_spec(**fixed):
    # rate 300 needs far more than 40 steps to reach t1: a deliberately failing point.
    return sweep.Spec(
        problem=linear_problem,
        axes={"rate": RATES, "seed": SEEDS},
        fixed=fixed,
        t1=2.0,
        num_saves=3,
        rtol=1e-8,
        max_steps=40,
        lanes=2,
    )


@pytest.fixture(scope="module")
def local2(tmp_path_factory):
    return sweep.run(linear_spec(), out=tmp_path_factory.mktemp("l2"), chunk_size=2, progress=False)


def test_grid_points():
    spec = linear_spec(extra="x")
    assert spec.shape == (3, 2)
    points = spec.points()
    assert len(points) == 6
    assert points[0] == {"extra": "x", "rate": -1.0, "seed": 0}
    assert points[1] == {"extra": "x", "rate": -1.0, "seed": 1}  # C order: last axis fastest
    assert points[-1]["rate"] == 300.0


def test_linear_sweep_closed_form_and_failing_point(local2):
    ds = local2
    assert ds["loss"].dims == ("rate", "seed", "time")
    codes = ds["status"].values
    assert np.all(codes[:2] == status.SUCCESS)
    assert np.all(codes[2] == status.MAX_STEPS)  # recorded, and the rest completed
    assert np.all(ds["num_steps"].values[2] == 40)
    t = ds["time"].values
    for i, r in enumerate(RATES[:2]):
        for j, s in enumerate(SEEDS):
            w0 = np.random.default_rng(s).standard_normal(3)
            exact = -0.5 * r * (w0 @ w0) * np.exp(2 * r * t)
            np.testing.assert_allclose(ds["loss"].values[i, j], exact, rtol=1e-6)
            np.testing.assert_allclose(ds["obs_norm"].values[i, j], np.linalg.norm(w0) * np.exp(r * t), rtol=1e-6)
    # The failed points stopped before t1: later saves are NaN, t_final < t1.
    assert np.all(ds["t_final"].values[2] < 2.0) and np.all(np.isnan(ds["loss"].values[2, :, -1]))
    eff = ds["chunk_efficiency"].values
    assert np.all((eff > 0) & (eff <= 1))
    assert set(np.unique(ds["chunk_of_point"].values)) == set(range(ds.sizes["chunk"]))


def _results(ds):
    return ds.drop_vars([v for v in ds.data_vars if v.startswith("chunk")])


def test_chunk_sizes_and_workers_give_identical_results(local2, tmp_path):
    other = sweep.run(linear_spec(), out=tmp_path, chunk_size=4, progress=False, workers=1)
    _results(other).identical(_results(local2)) or pytest.fail("chunk sizes 2 and 4 differ")
    assert sweep.load(tmp_path).identical(other)
    # local2 ran its 3 chunks on one thread per core; this runs them one after another.
    serial = sweep.run(linear_spec(), out=tmp_path / "serial", chunk_size=2, progress=False, workers=1)
    _results(serial).identical(_results(local2)) or pytest.fail("workers 1 and 2 differ")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        sweep.run(linear_spec(), out=tmp_path, chunk_size=2, progress=False, workers=0)


def test_auto_lanes_on_cpu_are_single_point_chunks_with_identical_results(local2, tmp_path):
    # on a CPU the cores are the parallelism: lanes="auto" is one lane and one point per chunk
    auto = dataclasses.replace(linear_spec(), lanes="auto")
    assert sweep.lanes(auto) == 1 and sweep.plan(auto) == [[i] for i in range(6)]
    ds = sweep.run(auto, out=tmp_path, progress=False)
    assert ds.sizes["chunk"] == 6 and set(ds["chunk_lanes"].values) == {1}
    # the same numbers (the attributes differ: they hold the spec, lanes included)
    assert _results(ds).equals(_results(local2)), "lanes auto and 2 differ"


def test_zarr_output_reads_back_as_netcdf(local2, tmp_path):
    out = tmp_path / "sweep.zarr"  # the suffix selects zarr
    ds = sweep.run(linear_spec(), out=out, chunk_size=2, progress=False)
    assert (out / sweep.RESULTS_ZARR).is_dir() and not (out / sweep.RESULTS).exists()
    _results(ds).identical(_results(local2)) or pytest.fail("zarr sweep differs from netCDF sweep")
    loaded = sweep.load(out)
    assert loaded.identical(ds) and loaded.attrs["spec"] == local2.attrs["spec"]
    assert loaded["status"].attrs["flag_meanings"] == local2["status"].attrs["flag_meanings"]
    # A rerun resumes from the chunks and replaces the store whole; no temporary stores remain.
    again = sweep.run(linear_spec(), out=out, chunk_size=2, progress=False, format="zarr")
    assert again.identical(ds)
    assert sorted(p.name for p in out.iterdir()) == ["chunks", sweep.RESULTS_ZARR, sweep.SPEC]
    with pytest.raises(ValueError, match="format must be one of"):
        sweep.run(linear_spec(), out=out, chunk_size=2, progress=False, format="hdf5")


def test_dask_matches_local_and_survives_a_dying_worker(local2, tmp_path, monkeypatch):
    for key in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.setenv(key, CHILD_ENV[key])
    marker = tmp_path / "died"
    spec = linear_spec(die_once=str(marker))
    ds = sweep.run(spec, out=tmp_path / "out", executor="dask", chunk_size=2, progress=False)
    assert marker.exists()  # a worker really died, and its chunk was retried
    for name in ("loss", "obs_norm", "status", "num_steps", "t_final"):
        np.testing.assert_array_equal(ds[name].values, local2[name].values)


TOML = """
problem = "two_layer_separated"
[axes]
init_scale = [1e-4, 1e-2]
mu = [0.3, 0.6]
seed = [0, 1, 2, 3]
[fixed]
n = 4
width = 3
[solve]
t1 = 6.0
num_saves = 3
lanes = 2
"""


def test_load_spec(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    spec = sweep.load_spec(path)
    assert spec.axes == {"init_scale": [1e-4, 1e-2], "mu": [0.3, 0.6], "seed": [0, 1, 2, 3]}
    assert spec.fixed == {"n": 4, "width": 3} and spec.t1 == 6.0 and spec.lanes == 2
    assert spec.rtol == 1e-6  # default
    assert len(spec.points()) == 16


@pytest.mark.parametrize(
    "edit, match",
    [
        (("[solve]", "[solve]\ntolerance = 1e-3"), "solve.tolerance"),
        (("[axes]", "colour = 3\n[axes]"), "unknown key 'colour'"),
        (("width = 3", "width = 3\nheight = 2"), "unknown key 'height'"),
        (("lanes = 2", "lanes = 2.5"), "'lanes' must be of type int"),
        (("lanes = 2", "lanes = \"fast\""), "'lanes' must be a positive integer or 'auto'"),
        (("width = 3", "width = \"3\""), "'width' must be of type int"),
        (("seed = [0, 1, 2, 3]", "seed = []"), "'seed' is empty"),
        (("mu = [0.3, 0.6]", "mu = [0.3, 1.5]"), r"'mu' must lie in \(0, 1\]"),
        (("mu = [0.3, 0.6]", "mu = [0.0]"), r"'mu' must lie in \(0, 1\]"),
        (("init_scale = [1e-4, 1e-2]", "init_scale = [1e-4, -1.0]"), "'init_scale' must be > 0"),
        (("init_scale = [1e-4, 1e-2]", "init_scale = [0.0]"), "'init_scale' must be > 0"),
        (("init_scale = [1e-4, 1e-2]", "init_scale = 1e-4"), "'init_scale' must be a list"),
        (("t1 = 6.0", "t1 = -1.0"), "'t1' must be > 0"),
        (("lanes = 2", "solver = \"rk45\""), "unknown solver"),
        (('"two_layer_separated"', '"no_such_module:fn"'), "cannot import"),
        (("[fixed]", "[fixed]\nmu = 0.5"), "'mu' is also an axis"),
        (("seed = [0, 1, 2, 3]", "seed = [0, 0]"), "repeated"),
    ],
)
def test_bad_configs_are_rejected_with_the_key(tmp_path, edit, match):
    path = tmp_path / "bad.toml"
    path.write_text(TOML.replace(*edit))
    with pytest.raises(ValueError, match=match):
        sweep.load_spec(path)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_cli_bad_config_exit_code(tmp_path, capsys):
    from gflow import cli

    path = tmp_path / "bad.toml"
    path.write_text(TOML.replace("mu = [0.3, 0.6]", "mu = [2.0]"))
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "'mu' must lie in (0, 1]" in capsys.readouterr().err


RESUME_TOML = """
problem = "test_sweep:linear_problem"
[axes]
rate = [-1.0, 0.5, 300.0]
seed = [0, 1, 2, 3, 4, 5, 6, 7]
[solve]
t1 = 2.0
num_saves = 3
rtol = 1e-8
max_steps = 40
lanes = 2
"""


def test_resume_after_killed_subprocess(tmp_path, local2):
    """SIGKILL a `gflow sweep` after its first chunk; rerunning finishes the rest, ignores a
    half-written temporary file, and gives the dataset of an uninterrupted run."""
    config = tmp_path / "sweep.toml"
    config.write_text(RESUME_TOML)
    spec = dataclasses.replace(linear_spec(), axes={"rate": RATES, "seed": list(range(8))})
    reference = sweep.run(spec, out=tmp_path / "ref", chunk_size=2, progress=False)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gflow.cli", "sweep", str(config), "--out", str(out), "--chunk-size", "2"]
    env = {**CHILD_ENV, "PYTHONPATH": str(Path(__file__).parent)}  # to import this module
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = out / sweep.CHUNKS
    deadline = time.monotonic() + 240
    while not list(chunks.glob("*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in chunks.glob("*.npz")}
    assert 1 <= len(before) < 12, f"kill landed after {len(before)} of 12 chunks"
    assert not (out / sweep.RESULTS).exists()
    (chunks / ".chunk-00000010-00002.npz.999.tmp").write_bytes(b"half a file")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "24 points (16 success, 8 max_steps)" in done.stdout
    resumed = sweep.load(out)
    for name in ("loss", "obs_norm", "status", "num_steps", "t_final"):
        np.testing.assert_array_equal(resumed[name].values, reference[name].values)
    # Chunks written before the kill were kept, not recomputed.
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_resume_refuses_a_different_sweep_saying_what_changed(tmp_path, local2, capsys):
    from gflow import cli

    config = tmp_path / "sweep.toml"
    config.write_text(RESUME_TOML)
    out = tmp_path / "out"
    run = ["sweep", str(config), "--out", str(out), "--chunk-size", "2", "--quiet"]
    assert cli.main(run) == 0
    chunks = sorted((out / sweep.CHUNKS).glob("*.npz"))
    config.write_text(RESUME_TOML.replace("rtol = 1e-8", "rtol = 1e-7").replace("seed = [0, 1, 2, 3, 4, 5, 6, 7]", "seed = [0, 1]"))
    assert cli.main([*run[:-3], "--chunk-size", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for change in ("axes.seed: [0, 1, 2, 3, 4, 5, 6, 7] → [0, 1]", "solve.rtol: 1e-08 → 1e-07", "chunk_size: 2 → 4"):
        assert change in err
    assert "max_steps" not in err and "--restart" in err and "resume=False" in err
    assert sorted((out / sweep.CHUNKS).glob("*.npz")) == chunks  # nothing was touched
    assert cli.main([*run, "--restart"]) == 0  # the flag the message names starts over


def test_damaged_chunks_are_named_and_recomputed_before_any_work(tmp_path, local2, monkeypatch, caplog):
    """A truncated, an empty and a misplaced chunk file: each is named with what is wrong before
    any chunk is solved; exactly their points are solved again, and the dataset is unchanged."""
    spec = linear_spec()
    sweep.run(spec, out=tmp_path, chunk_size=1, progress=False, workers=1)
    files = sorted((tmp_path / sweep.CHUNKS).glob("*.npz"))
    assert len(files) == 6
    truncated, empty, misplaced = files[0], files[2], files[4]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty.write_bytes(b"")
    misplaced.write_bytes(files[5].read_bytes())
    kept = {p: p.stat().st_mtime_ns for p in files if p not in (truncated, empty, misplaced)}
    events = []
    solve_chunk = sweep.solve_chunk

    def solve_and_record(spec, indices, pad_to):
        events.append(("solve", tuple(indices)))
        return solve_chunk(spec, indices, pad_to)

    monkeypatch.setattr(sweep, "solve_chunk", solve_and_record)
    caplog.set_level("WARNING", logger="gflow.sweep")
    caplog.handler.addFilter(lambda record: events.append(("warn", record.getMessage())) or True)
    ds = sweep.run(spec, out=tmp_path, chunk_size=1, progress=False, workers=1)
    warnings = [e[1] for e in events if e[0] == "warn"]
    assert [e[0] for e in events] == ["warn"] * 3 + ["solve"] * 3
    assert sorted(e[1] for e in events if e[0] == "solve") == [(0,), (2,), (4,)]
    assert f"damaged chunk {truncated}: not a readable .npz archive" in warnings[0] and "truncated" in warnings[0]
    assert f"damaged chunk {empty}: empty file (0 bytes)" in warnings[1]
    assert f"damaged chunk {misplaced}: holds grid points [5], expected [4]" in warnings[2]
    assert all("solved again" in w for w in warnings)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    _results(ds).identical(_results(local2)) or pytest.fail("recomputed chunks changed the results")


def test_balance_plans_by_pilot_steps_and_gives_identical_results(local2, tmp_path):
    spec = linear_spec()
    costs = sweep.pilot_costs(spec)
    # The pilot is the same solve at 100x the rtol: gflow.simulate, point by point, agrees.
    for i, point in enumerate(spec.points()):
        p = linear_problem(point)
        traj = gflow.simulate(linear_objective, p.params0, spec.t1, args=p.args, rtol=100 * spec.rtol,
                              max_steps=spec.max_steps, save_params=False)
        assert costs[i] == int(traj.num_steps)
    grid_order = sweep.plan(spec, 2)
    balanced = sweep.plan(spec, 2, costs)
    assert sorted(i for chunk in balanced for i in chunk) == list(range(6))
    assert sorted(map(len, balanced)) == sorted(map(len, grid_order))
    for chunk in balanced:  # the pool loads the longest points first
        assert list(costs[chunk]) == sorted(costs[chunk], reverse=True)
    # Grid order puts both rate-300 points (40 steps each) in one chunk; LPT separates them.
    assert max(costs[c].sum() for c in balanced) < max(costs[c].sum() for c in grid_order)
    ds = sweep.run(spec, out=tmp_path, chunk_size=2, progress=False, balance=True)
    _results(ds).identical(_results(local2)) or pytest.fail("balance changed the results")
    # Resuming reuses the recorded plan (no pilot, no chunk recomputed) and refuses a switch.
    chunks = sorted((tmp_path / sweep.CHUNKS).glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in chunks]
    sweep.run(spec, out=tmp_path, chunk_size=2, progress=False, balance=True)
    assert [p.stat().st_mtime_ns for p in chunks] == stamps
    with pytest.raises(ValueError, match="different sweep .balance: true → false"):
        sweep.run(spec, out=tmp_path, chunk_size=2, progress=False)


def test_load_missing(tmp_path):
    with pytest.raises(ValueError, match="no sweep results"):
        sweep.load(tmp_path)


def test_problem_must_return_problem(tmp_path):
    spec = sweep.Spec(problem=lambda p: (jax.numpy.zeros(2),), axes={"seed": [0]})
    with pytest.raises(ValueError, match="gflow.sweep.Problem"):
        sweep.run(spec, out=tmp_path, progress=False)

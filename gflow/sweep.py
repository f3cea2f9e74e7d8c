"""Sweeps: the gradient flow over a grid of settings, batched, resumable, local or on Dask.

A sweep is a `Spec`: named axes (e.g. `init_scale`, `mu`, `n`, `width`, `seed`) whose product is
the grid, fixed settings, the solve settings, and a *problem*: the user's function that turns
one grid point (a dict of settings) into a `Problem` (objective, θ0, per-point data `args`,
observables, event). `run(spec, out=DIR)` solves every point with the continuous-batching pool
of `gflow.batching`, writes each chunk of points atomically to `DIR/chunks/`, and assembles
`DIR/results.nc` (netCDF) or `DIR/results.zarr` (zarr): an `xarray.Dataset` with one dimension
per axis (plus `time` for saved quantities), read back with `load(DIR)`.

Points are grouped by problem structure (same functions, same shapes of θ0 and args); within a
group the points whose `args` are identical share them, so the lanes' products with the data
become one matmul. Rerunning an interrupted sweep skips the chunks already written.
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _toml
from . import options as _options
from . import status as _status

RESULTS = "results.nc"
RESULTS_ZARR = "results.zarr"
FORMATS = {"netcdf": RESULTS, "zarr": RESULTS_ZARR}
CHUNKS = "chunks"
SPEC = "spec.json"

log = logging.getLogger(__name__)


class Problem(NamedTuple):
    """What one grid point solves: dθ/dt = −∇L(θ) from θ0 (as `gflow.simulate`).

    `objective(params, args)`, `observables` (name → `f(params, args)`) and `event(params,
    args)` must be the *same* function objects for points that should be batched together
    (define them once, at module level or in a cached factory); `params0` and `args` carry
    everything that varies between points. Points with equal functions and equal shapes of
    `params0` and `args` share a pool of lanes.
    """

    objective: Callable
    params0: Any
    args: Any = None
    observables: Mapping[str, Callable] = {}
    event: Callable | None = None


# Checks for settings whose meaning gflow knows (names from the papers); other names pass
# through to the problem function, which owns them.
_FLOAT, _INT, _STR, _BOOL = (int, float), int, str, bool
KNOWN = {
    "init_scale": (_FLOAT, lambda v: v > 0, "must be > 0 (ε scales the initial weights)"),
    "mu": (_FLOAT, lambda v: 0 < v <= 1, "must lie in (0, 1] (μ is a cosine between points)"),
    "n": (_INT, lambda v: v >= 2, "must be an integer ≥ 2"),
    "d": (_INT, lambda v: v >= 1, "must be a positive integer"),
    "width": (_INT, lambda v: v >= 1, "must be a positive integer"),
    "seed": (_INT, lambda v: v >= 0, "must be a non-negative integer"),
}

def _checked_value(types, check, reason):
    """A check of one value: its type, finite if a float, then `check` (else `reason`)."""
    return lambda key, value: _check_value("solve", key, value, types, check, reason)


def _solve_option(check):
    """A check from `gflow.options` (one definition for every solve path), under `solve:`."""

    def checked(key, value):
        try:
            check(value)
        except ValueError as e:
            raise ValueError(f"solve: {e}") from None

    return checked


def _solver_name(value):
    if not isinstance(value, str):
        raise ValueError(f"solver must be a name (a string), got {value!r}")
    _options.get_solver(value)


SOLVE = {  # [solve] table: name → (check(key, value), default); solver options: gflow.options
    "t1": (_checked_value(_FLOAT, lambda v: v > 0, "must be > 0"), 40.0),
    "num_saves": (_checked_value(_INT, lambda v: v >= 2, "must be an integer ≥ 2"), 50),
    "solver": (_solve_option(_solver_name), _options.DEFAULTS.solver),
    "rtol": (_solve_option(_options.check_rtol), _options.DEFAULTS.rtol),
    "max_steps": (_solve_option(_options.check_max_steps), _options.DEFAULTS.max_steps),
    "lanes": (
        _checked_value(
            (int, str), lambda v: v == "auto" or (isinstance(v, int) and v >= 1),
            "must be a positive integer or 'auto'",
        ),
        "auto",
    ),
    # "auto": gflow.simulate's rule (the switching solve on kinked objectives below
    # options.SWITCHING_MAX_RTOL, on at most options.SWITCHING_MAX_SURFACES); false: the plain solve
    "switching": (
        _checked_value((str, bool), lambda v: v == "auto" or v is False, "must be \"auto\" or false"),
        "auto",
    ),
}

# lanes="auto" is ACCELERATOR_LANES on a GPU/TPU and 1 on a CPU: there a lane costs as much as
# one solve's step once the vector field is compute-bound (docs/sweeps.md: flat lane-steps per
# second for 1–8 lanes at n = 200, d = 50, width 100), so the cores are the parallelism: one
# lane per chunk and one single-point chunk per worker thread at a time.
ACCELERATOR_LANES = 16


def lanes(spec: "Spec") -> int:
    """The pool width of `spec`'s chunks: `spec.lanes`, or for "auto" 1 on a CPU backend and
    `ACCELERATOR_LANES` on a GPU/TPU."""
    if spec.lanes != "auto":
        return spec.lanes
    import jax

    return 1 if jax.default_backend() == "cpu" else ACCELERATOR_LANES


def _check_value(where, key, value, types, check, reason):
    allowed = types if isinstance(types, tuple) else (types,)
    ok_type = isinstance(value, types) and not (isinstance(value, bool) and bool not in allowed)
    if not ok_type:
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ValueError(f"{where}: {key!r} must be of type {names}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {key!r} must be finite, got {value!r}")
    if not check(value):
        raise ValueError(f"{where}: {key!r} {reason}, got {value!r}")


def _check_setting(where, key, value):
    if key in KNOWN:
        _check_value(where, key, value, *KNOWN[key])
    elif not isinstance(value, (int, float, str, bool)):
        raise ValueError(f"{where}: {key!r} must be a number, string or bool, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A sweep: the grid `axes` (name → list of values; the grid is their product, in order),
    `fixed` settings shared by every point, the solve settings (`t1`, `num_saves` save times
    evenly spaced in [0, t1], `solver`, `rtol`, `max_steps`, `lanes` = pool width or "auto",
    see `lanes`; `switching` = "auto" for `gflow.simulate`'s rule or False for the plain solve),
    and
    `problem`: a function `point_dict → Problem`, or a name: one of `PROBLEMS` or
    "package.module:function". A problem function may declare `parameters` (a set of the names
    it accepts); other names are then rejected.
    """

    problem: Any
    axes: Mapping[str, list]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    t1: float = SOLVE["t1"][1]
    num_saves: int = SOLVE["num_saves"][1]
    solver: str = SOLVE["solver"][1]
    rtol: float = SOLVE["rtol"][1]
    max_steps: int = SOLVE["max_steps"][1]
    lanes: int | str = SOLVE["lanes"][1]
    switching: str | bool = SOLVE["switching"][1]

    def __post_init__(self):
        validate(self)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    def points(self) -> list[dict]:
        """Every grid point as a dict of settings (fixed ∪ one value per axis), in C order."""
        names = list(self.axes)
        return [
            {**self.fixed, **dict(zip(names, values, strict=True))}
            for values in itertools.product(*self.axes.values())
        ]

    def problem_fn(self) -> Callable:
        return resolve_problem(self.problem)

    def to_dict(self) -> dict:
        """A JSON-able description: the problem by name, so the same config reruns anywhere."""
        problem = self.problem if isinstance(self.problem, str) else _qualified(self.problem)
        solve = {k: getattr(self, k) for k in SOLVE}
        return {"problem": problem, "axes": dict(self.axes), "fixed": dict(self.fixed), "solve": solve}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _qualified(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def validate(spec: Spec) -> None:
    """Raise ValueError naming the key and the reason for any bad setting, before any work."""
    resolve_problem(spec.problem)
    if not isinstance(spec.axes, Mapping) or not spec.axes:
        raise ValueError("axes: need at least one axis, e.g. axes={'init_scale': [1e-6, 1e-4]}")
    if not isinstance(spec.fixed, Mapping):
        raise ValueError(f"fixed must be a mapping of settings, got {type(spec.fixed).__name__}")
    for name, values in spec.axes.items():
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"axes: {name!r} must be a list of values, got {values!r}")
        if len(values) == 0:
            raise ValueError(f"axes: {name!r} is empty: give it at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"axes: {name!r} has repeated values {values!r}")
        for value in values:
            _check_setting("axes", name, value)
    for name, value in spec.fixed.items():
        if name in spec.axes:
            raise ValueError(f"fixed: {name!r} is also an axis: keep it in one place")
        _check_setting("fixed", name, value)
    accepted = getattr(resolve_problem(spec.problem), "parameters", None)
    if accepted is not None:
        for name in [*spec.axes, *spec.fixed]:
            if name not in accepted:
                raise ValueError(f"unknown key {name!r} for this problem; known keys: {sorted(accepted)}")
    for name, (check, _) in SOLVE.items():
        check(name, getattr(spec, name))


def resolve_problem(problem) -> Callable:
    """The problem function for a callable, a name in `PROBLEMS`, or "module:function"."""
    if callable(problem):
        return problem
    if isinstance(problem, str):
        if problem in PROBLEMS:
            return PROBLEMS[problem]
        module, _, attr = problem.partition(":")
        if module and attr:
            try:
                fn = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ValueError(f"problem: cannot import {problem!r}: {e}") from None
            if callable(fn):
                return fn
    raise ValueError(
        f"problem: {problem!r} is not a function, one of {sorted(PROBLEMS)} or 'module:function'"
    )


def load_spec(path) -> Spec:
    """A `Spec` from a TOML file with top-level `problem` and tables `[axes]`, `[fixed]`,
    `[solve]` (see docs/sweeps.md). Unknown keys, wrong types, empty axes and impossible values
    are errors naming the key."""
    path = Path(path)
    raw = _toml.read(path)
    allowed = {"problem", "axes", "fixed", "solve"}
    for key in raw:
        if key not in allowed:
            raise ValueError(f"{path}: unknown key {key!r}; allowed top-level keys: {sorted(allowed)}")
    if "problem" not in raw or "axes" not in raw:
        raise ValueError(f"{path}: needs `problem = \"...\"` and an [axes] table")
    for table in ("axes", "fixed", "solve"):
        if table in raw and not isinstance(raw[table], dict):
            raise ValueError(f"{path}: {table!r} must be a table ([{table}])")
    solve = raw.get("solve", {})
    for key in solve:
        if key not in SOLVE:
            raise ValueError(f"{path}: unknown key 'solve.{key}'; known: {sorted(SOLVE)}")
    try:
        return Spec(problem=raw["problem"], axes=raw["axes"], fixed=raw.get("fixed", {}), **solve)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# ----- the built-in problem ---------------------------------------------------------------


@functools.cache
def _two_layer_objective(loss, activation, reduction):
    from . import losses, models

    ell = losses.get_loss(loss)
    reduce = {"mean": "mean", "sum": "sum"}[reduction]

    def objective(params, args):
        values = ell(models.two_layer(params, args["X"], activation), args["y"])
        return getattr(values, reduce)()

    return objective


def _param_norm(params, args):
    from .observables import param_norm

    return param_norm(params)


def two_layer_separated(point: dict) -> Problem:
    """Two-layer network f(x) = Σ_j v_j σ(w_jᵀx) (Min, Mallada & Vidal 2024, eq. 1) on
    μ-separated equiangular data (`gflow.data.separated`), balanced init at scale ε.

    Settings: `n`, `d` (default n + 1), `width`, `mu`, `init_scale`, `seed` (data and init),
    `equiangular` (default: d ≥ n + 1; else the orthant construction of `data.separated`),
    `loss` ("exponential"), `activation` ("relu"), `reduction` ("sum"). Observable: ‖θ‖.
    """
    import jax

    from . import data, models

    extra = set(point) - two_layer_separated.parameters
    if extra:
        raise ValueError(f"unknown key(s) {sorted(extra)} for two_layer_separated")
    n, mu, seed = point.get("n", 20), point.get("mu", 0.2), point.get("seed", 0)
    d = point.get("d", n + 1)
    X, y = data.separated(seed, n, d, mu, equiangular=point.get("equiangular", d >= n + 1))
    params0 = models.init_two_layer(
        jax.random.PRNGKey(seed), d, point.get("width", 50), point.get("init_scale", 1e-6)
    )
    objective = _two_layer_objective(
        point.get("loss", "exponential"), point.get("activation", "relu"), point.get("reduction", "sum")
    )
    return Problem(
        objective=objective,
        params0=params0,
        args={"X": np.asarray(X), "y": np.asarray(y)},
        observables={"param_norm": _param_norm},
    )


two_layer_separated.parameters = frozenset(
    {"n", "d", "width", "mu", "init_scale", "seed", "equiangular", "loss", "activation", "reduction"}
)

PROBLEMS = {"two_layer_separated": two_layer_separated}


# ----- planning: groups of batchable points, chunks ---------------------------------------


def _structure(problem: Problem):
    """Points with equal structure can share a pool: same functions, same shapes and dtypes."""
    import jax

    def shapes(tree):
        leaves, treedef = jax.tree.flatten(tree)
        return treedef, tuple((np.shape(x), np.asarray(x).dtype.str) for x in leaves)

    return (
        problem.objective,
        tuple(sorted(problem.observables.items())),
        problem.event,
        shapes(problem.params0),
        shapes(problem.args),
    )


def groups(spec: Spec) -> list[list[int]]:
    """Flat grid indices grouped by structure (points that can share a pool), in grid order."""
    build = spec.problem_fn()
    found: dict[Any, list[int]] = {}
    for i, point in enumerate(spec.points()):
        found.setdefault(_structure(_checked(build, point)), []).append(i)
    return list(found.values())


def plan(spec: Spec, chunk_size: int | None = None, costs=None) -> list[list[int]]:
    """The chunks of a sweep: lists of flat grid indices, each within one structure group.

    Without `costs`, consecutive runs of the grid order. With `costs` (an estimate per flat
    index, e.g. `pilot_costs`), each group keeps the same number and sizes of chunks but its
    points are dealt longest-first to the chunk with the least estimated cost so far (LPT
    scheduling): chunks solved side by side by the workers finish together, and inside a chunk
    the pool loads its longest points first, so the lanes that idle while the last points drain
    wait on short ones. Deterministic for a given spec, chunk size and costs."""
    chunk_size = _chunk_size(spec, chunk_size)
    chunks = []
    for members in groups(spec):
        sizes = [min(chunk_size, len(members) - k) for k in range(0, len(members), chunk_size)]
        if costs is None:
            chunks += [members[k : k + chunk_size] for k in range(0, len(members), chunk_size)]
            continue
        bins: list[list[int]] = [[] for _ in sizes]
        load = [0.0] * len(sizes)
        for i in sorted(members, key=lambda i: (-costs[i], i)):
            b = min((b for b in range(len(sizes)) if len(bins[b]) < sizes[b]), key=lambda b: (load[b], b))
            bins[b].append(i)
            load[b] += costs[i]
        chunks += bins
    return chunks


def pilot_costs(spec: Spec, looser: float = 100.0) -> np.ndarray:
    """A cost estimate per flat grid index: the steps each point takes in a pilot solve of the
    whole sweep with a `looser`-times larger rtol (one pool per structure group, no saves).

    Adaptive step counts grow as the tolerance tightens, and on the benchmark's ReLU nets the
    pilot at 100× the rtol costs ~7 % of the real solve while ranking the points' costs in
    nearly the right order (docs/sweeps.md). Only the order is used."""
    pilot = dataclasses.replace(spec, rtol=min(0.1, spec.rtol * looser), num_saves=2)
    costs = np.zeros(math.prod(spec.shape))
    for members in groups(spec):
        costs[members] = solve_chunk(pilot, members, len(members))["num_steps"]
    return costs


def _chunk_size(spec, chunk_size):
    if chunk_size is None:
        # a pool refills its lanes from its chunk, so it needs a few points per lane; a single
        # lane has nothing to refill, and single points keep the workers evenly loaded
        width = lanes(spec)
        return 1 if width == 1 else 4 * width
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return chunk_size


def _checked(build, point) -> Problem:
    problem = build(point)
    if not isinstance(problem, Problem):
        raise ValueError(
            f"the problem function returned {type(problem).__name__} for {point}: return "
            "gflow.sweep.Problem(objective, params0, args, observables, event)"
        )
    return problem


# ----- solving one chunk -------------------------------------------------------------------


def solve_chunk(spec: Spec, indices: list[int], pad_to: int) -> dict[str, np.ndarray]:
    """Solve the grid points `indices` (one structure group) and return plain numpy arrays.

    Every executor runs this same function on the same padded shapes, which is why their
    results are identical.
    """
    import jax
    import jax.numpy as jnp

    from . import batching

    build = spec.problem_fn()
    points = spec.points()
    problems = [_checked(build, points[i]) for i in indices]
    first = problems[0]
    # Pad to the chunk size with copies of the first point (never solved): one compiled
    # program serves every chunk of the group.
    padded = problems + [first] * (max(pad_to, len(problems)) - len(problems))
    params0 = jax.tree.map(lambda *xs: jnp.stack(xs), *[p.params0 for p in padded])
    shared = all(_same(first.args, p.args) for p in problems)
    args = first.args if shared else jax.tree.map(lambda *xs: jnp.stack(xs), *[p.args for p in padded])
    saveat = np.linspace(0.0, spec.t1, spec.num_saves)
    start = time.perf_counter()
    traj, stats = batching.solve_batch(
        first.objective,
        params0,
        spec.t1,
        args=args,
        shared_args=shared,
        num_points=len(indices),
        saveat=saveat,
        solver=spec.solver,
        rtol=spec.rtol,
        observables=dict(first.observables),
        event=first.event,
        max_steps=spec.max_steps,
        switching=None if spec.switching == "auto" else False,
        lanes=lanes(spec),
    )
    jax.block_until_ready(traj)
    wall = time.perf_counter() - start
    k = len(indices)
    out = {
        "index": np.asarray(indices, np.int64),
        "loss": np.asarray(traj.loss)[:k],
        "status": np.asarray(traj.status_code)[:k],
        "t_final": np.asarray(traj.t_final)[:k],
        "t_event": np.asarray(traj.t_event)[:k],
        "num_steps": np.asarray(traj.num_steps)[:k],
        "num_accepted_steps": np.asarray(traj.num_accepted_steps)[:k],
        "num_rejected_steps": np.asarray(traj.num_rejected_steps)[:k],
        "num_grad_evals": np.asarray(traj.num_grad_evals)[:k],
        "chunk_stats": np.asarray([stats.efficiency, stats.iterations, stats.lanes, wall]),
    }
    for name, values in traj.observables.items():
        out[f"obs.{name}"] = np.asarray(values)[:k]
    return out


def _same(a, b) -> bool:
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb, strict=True)
    )


# ----- files: atomic writes, chunk store, resume -------------------------------------------


def _atomic_write(path: Path, write: Callable[[Any], None], durable: bool = False) -> None:
    """Write through a temporary file in the same directory, then rename: a reader sees the old
    file or the whole new one, never half of one (rename is atomic on POSIX). That survives a
    killed process; `durable` also fsyncs, to survive a crash of the machine (costly on a busy
    disk, so only for the final dataset)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _atomic_write_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Write a directory (a zarr store) under a temporary name, then swap it in by renames: a
    reader finds the old store, the whole new one, or (between the two renames) none, never a
    partial one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    try:
        write(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for stale in (tmp, old):
            shutil.rmtree(stale, ignore_errors=True)


def _write_dataset(ds, out: Path, format: str) -> Path:
    path = out / FORMATS[format]
    if format == "zarr":
        _atomic_write_dir(path, lambda tmp: ds.to_zarr(tmp, mode="w", consolidated=False))
    else:
        _atomic_write(path, lambda f: f.write(ds.to_netcdf(engine="h5netcdf")), durable=True)
    return path


def _chunk_path(out: Path, indices: list[int]) -> Path:
    return out / CHUNKS / f"chunk-{indices[0]:08d}-{len(indices):05d}.npz"


def _write_chunk(out: Path, indices, arrays) -> None:
    _atomic_write(_chunk_path(out, indices), lambda f: np.savez(f, **arrays))


class _DamagedChunk(ValueError):
    """A chunk file that cannot be read back as the chunk it should hold."""


def _read_chunk(path: Path, indices: list[int], num_saves: int) -> dict[str, np.ndarray]:
    """The arrays of the chunk file at `path`, checked to be those of grid points `indices`
    (`num_saves` save times); `_DamagedChunk` says what is wrong otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        if path.stat().st_size == 0:
            raise _DamagedChunk("empty file (0 bytes)") from None
        raise _DamagedChunk(
            f"not a readable .npz archive ({type(e).__name__}: {e}; {path.stat().st_size} bytes): "
            "truncated or overwritten"
        ) from None
    missing = {"index", "loss", "status", "chunk_stats"} - set(arrays)
    if missing:
        raise _DamagedChunk(f"has no array {', '.join(sorted(missing))}")
    if not np.array_equal(arrays["index"], indices):
        raise _DamagedChunk(f"holds grid points {arrays['index'].tolist()}, expected {list(indices)}")
    k = len(indices)
    for key, value in arrays.items():
        if key == "chunk_stats":
            ok, expected = value.shape == (4,), "(4,)"
        elif key == "loss":
            ok, expected = value.shape == (k, num_saves), f"({k}, {num_saves})"
        else:
            ok, expected = value.ndim >= 1 and value.shape[0] == k, f"({k}, …)"
        if not ok:
            raise _DamagedChunk(f"array {key!r} has shape {value.shape}, expected {expected}")
    return arrays


def _stored_chunks(spec: Spec, out: Path, chunks: list[list[int]]) -> dict[tuple, dict]:
    """The chunks of `chunks` already in `out/chunks`, read and checked before any work. A
    damaged chunk file (empty, truncated, holding other points) is named in a warning (logger
    "gflow.sweep") and deleted, so that its points are solved again."""
    stored = {}
    for indices in chunks:
        path = _chunk_path(out, indices)
        if not path.exists():
            continue
        try:
            stored[tuple(indices)] = _read_chunk(path, indices, spec.num_saves)
        except _DamagedChunk as e:
            log.warning("gflow sweep: damaged chunk %s: %s; deleted, its %d point(s) will be solved again",
                        path, e, len(indices))
            path.unlink()
    return stored


def _planned(spec: Spec, out: Path, resume: bool, chunk_size: int, balance: bool) -> list[list[int]]:
    """The chunks, from `out/spec.json` when resuming (a pilot need not be rerun, nor give the
    same plan), else from `plan`; refuses a directory that holds a different sweep, saying
    what differs."""
    record = _record(spec, chunk_size, balance)
    spec_file = out / SPEC
    if resume and spec_file.exists():
        restart = (f"start over in it with `gflow sweep CONFIG --out {out} --restart` (Python: "
                   "gflow.sweep.run(..., resume=False)), which deletes its chunks")
        try:
            old = json.loads(spec_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{spec_file} is damaged ({e}): {restart}") from None
        changes = _differences({k: old.get(k) for k in record}, record)
        if changes:
            raise ValueError(
                f"{out} holds a different sweep ({'; '.join(changes)}): resume it with the same "
                f"settings, pick another output directory, or {restart}"
            )
        if "chunks" in old:
            return old["chunks"]
    return plan(spec, chunk_size, pilot_costs(spec) if balance else None)


def _record(spec: Spec, chunk_size: int, balance: bool) -> dict:
    """What `spec.json` records of a sweep to recognise it on resume, as it reads back."""
    return json.loads(json.dumps({"spec": spec.to_dict(), "chunk_size": chunk_size, "balance": balance}))


def _differences(old, new, prefix="") -> list[str]:
    """`key: old → new` for every entry that differs between two JSON-like dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{prefix}: {json.dumps(old)} → {json.dumps(new)}"]
    return [
        change
        for key in sorted(set(old) | set(new))
        for change in _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
    ]


def _prepare_out(spec: Spec, out: Path, resume: bool, chunk_size: int, balance: bool, chunks) -> None:
    """Create `out` and record the sweep and its plan; without `resume`, drop old chunks."""
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    record = {"digest": spec.digest(), **_record(spec, chunk_size, balance), "chunks": chunks}
    if not resume:
        for stale in (out / CHUNKS).glob("*.npz"):
            stale.unlink()
    _atomic_write(out / SPEC, lambda f: f.write(json.dumps(record, indent=2).encode()))


# ----- executors ---------------------------------------------------------------------------


def _local(spec, todo, pad_to, workers):
    """Chunks on `workers` threads of this process: XLA runs outside the GIL, so each thread
    keeps a core busy with its own chunk (the arithmetic of a chunk does not depend on it)."""
    if workers == 1:
        for indices in todo:
            yield indices, solve_chunk(spec, indices, pad_to)
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(workers, thread_name_prefix="gflow-sweep")
    try:
        futures = {pool.submit(solve_chunk, spec, indices, pad_to): indices for indices in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:  # on an interruption, start no further chunks
        pool.shutdown(wait=False, cancel_futures=True)


def _dask(spec, todo, pad_to, address, retries):
    from distributed import Client, LocalCluster, as_completed

    with contextlib.ExitStack() as stack:
        if address is None:
            cluster = stack.enter_context(
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            address = cluster
        client = stack.enter_context(Client(address))
        futures = {
            client.submit(solve_chunk, spec, indices, pad_to, retries=retries, pure=False): indices
            for indices in todo
        }
        for future in as_completed(futures):
            yield futures[future], future.result()


def run(
    spec: Spec,
    *,
    out,
    executor: str = "local",
    chunk_size: int | None = None,
    progress: bool = True,
    resume: bool = True,
    address: str | None = None,
    retries: int = 2,
    format: str | None = None,
    workers: int | None = None,
    balance: bool = False,
):
    """Solve every point of `spec` and write `out/results.nc` (or `out/results.zarr`); return
    the `xarray.Dataset`.

    **Arguments:**

    - `spec`: a `Spec` (or a path to a TOML config, read with `load_spec`).
    - `out`: output directory. Chunks go to `out/chunks/` (atomic writes); the dataset to
      `out/results.nc` or `out/results.zarr`; the spec to `out/spec.json`.
    - `executor`: "local" (this process) or "dask" (chunks submitted to a
      `distributed.Client` at `address`, or a 2-worker `LocalCluster` when `address` is None;
      a chunk whose worker dies is retried up to `retries` times).
    - `chunk_size`: grid points per chunk (default 4 × the pool width, or 1 for a single
      lane); an interruption loses at most the chunks in flight. Results agree between chunk
      sizes to ~1e-10 relative with the same steps, bitwise at equal chunk size (a chunk of
      points sharing one data set multiplies by it in one product, a chunk mixing data sets in a
      batched product, which rounds differently; docs/sweeps.md, "Safety").
    - `progress`: tqdm bar over points with failures and ETA, and a one-line summary.
    - `resume`: skip chunks already in `out/chunks` (the directory must hold the same spec and
      chunk size, else a `ValueError` lists what differs); every stored chunk is read and
      checked first, and a damaged one is named in a warning (logger "gflow.sweep"), deleted
      and solved again. False starts over, deleting the stored chunks.
    - `format`: "netcdf" (h5netcdf) or "zarr"; by default "zarr" when `out` ends in ".zarr".
    - `workers`: chunks solved at once by the local executor, on threads (default: the number
      of CPU cores). Give a chunk size of at most points / workers to keep them all busy.
    - `balance`: order the points by cost before cutting chunks (`plan` with `pilot_costs`):
      a pilot solve at a 100× looser rtol, then longest-first into the least loaded chunk.
      Results do not depend on it; it pays when costs differ a lot between points.

    **Returns:** the dataset (see `assemble`). A point whose solve fails is a result with its
    status (`gflow.status`), not an exception; bad specs raise `ValueError` before any work.
    """
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    if not isinstance(spec, Spec):
        raise ValueError(f"spec must be a gflow.sweep.Spec or a TOML path, got {type(spec).__name__}")
    if executor not in ("local", "dask"):
        raise ValueError(f"executor must be 'local' or 'dask', got {executor!r}")
    out = Path(out)
    if format is None:
        format = "zarr" if out.suffix == ".zarr" else "netcdf"
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    size = _chunk_size(spec, chunk_size)
    out.mkdir(parents=True, exist_ok=True)
    chunks = _planned(spec, out, resume, size, bool(balance))
    _prepare_out(spec, out, resume, size, bool(balance), chunks)
    stored = _stored_chunks(spec, out, chunks)
    todo = [ix for ix in chunks if tuple(ix) not in stored]
    total = math.prod(spec.shape)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    bar = tqdm(total=total, initial=total - sum(map(len, todo)), unit="pt", disable=not progress)
    failures = 0
    with bar:
        if executor == "local":
            results = _local(spec, todo, size, workers)
        else:
            results = _dask(spec, todo, size, address, retries)
        for indices, arrays in results:
            _write_chunk(out, indices, arrays)
            stored[tuple(indices)] = arrays
            failures += int(np.sum(~np.isin(arrays["status"], (_status.SUCCESS, _status.EVENT))))
            bar.update(len(indices))
            bar.set_postfix(failed=failures)
    ds = assemble(spec, [stored[tuple(ix)] for ix in chunks])
    path = _write_dataset(ds, out, format)
    if progress:
        counts = {name: int((ds["status"] == code).sum()) for code, name in enumerate(_status.NAMES)}
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        print(f"gflow sweep: {total} points ({summary}) in {time.perf_counter() - start:.1f} s "
              f"→ {path}")
    return ds


def assemble(spec: Spec, chunks: list[dict]):
    """The sweep's `xarray.Dataset` from its chunks.

    Dimensions: one per axis (coordinates = the axis values), `time` (the save times) and, for
    an observable with values of shape (k, …), `<name>_dim0`, …; a `chunk` dimension for the
    per-chunk statistics. Variables: `loss`, `obs_<name>`, `status` (codes of `gflow.status`),
    `t_final`, `t_event`, `num_steps`, `num_accepted_steps`, `num_rejected_steps`,
    `num_grad_evals`, `chunk_of_point`, `chunk_efficiency` (lockstep efficiency of the pool),
    `chunk_wall_time`, `chunk_iterations`. Attributes: the spec (JSON), package versions.
    """
    import xarray as xr

    names, shape = list(spec.axes), spec.shape
    total = math.prod(shape)
    merged: dict[str, np.ndarray] = {}
    chunk_of = np.full(total, -1, np.int64)
    for c, arrays in enumerate(chunks):
        index = arrays["index"]
        chunk_of[index] = c
        for key, value in arrays.items():
            if key in ("index", "chunk_stats"):
                continue
            if key not in merged:
                fill = np.nan if np.issubdtype(value.dtype, np.floating) else -1
                merged[key] = np.full((total,) + value.shape[1:], fill, value.dtype)
            merged[key][index] = value
    ts = np.linspace(0.0, spec.t1, spec.num_saves)
    coords = {name: np.asarray(values) for name, values in spec.axes.items()}
    coords["time"] = ts
    data = {}
    for key, value in merged.items():
        dims = list(names)
        if value.ndim > 1:
            dims.append("time")
        var = key.replace("obs.", "obs_")
        dims += [f"{key[4:]}_dim{k}" for k in range(value.ndim - 2)]
        data[var] = (dims, value.reshape(shape + value.shape[1:]))
    data["chunk_of_point"] = (names, chunk_of.reshape(shape))
    stats = np.array([a["chunk_stats"] for a in chunks]).reshape(-1, 4)
    data["chunk_efficiency"] = ("chunk", stats[:, 0])
    data["chunk_iterations"] = ("chunk", stats[:, 1].astype(np.int64))
    data["chunk_lanes"] = ("chunk", stats[:, 2].astype(np.int64))
    data["chunk_wall_time"] = ("chunk", stats[:, 3])
    ds = xr.Dataset(data, coords=coords)
    ds["status"].attrs = {
        "flag_values": list(range(len(_status.NAMES))),
        "flag_meanings": " ".join(_status.NAMES),
    }
    ds.attrs = {"spec": json.dumps(spec.to_dict()), "versions": json.dumps(_versions())}
    return ds


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("gflow", "jax", "jaxlib", "diffrax", "equinox", "numpy", "xarray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def load(out):
    """The dataset of a finished sweep in directory `out`: `results.nc` or `results.zarr`, the
    newer if both exist (numeric arrays and JSON attributes; nothing is unpickled)."""
    import xarray as xr

    found = [Path(out) / name for name in FORMATS.values() if (Path(out) / name).exists()]
    if not found:
        raise ValueError(
            f"no sweep results ({' or '.join(FORMATS.values())}) in {out}: run the sweep first "
            f"(gflow sweep ... --out {out})"
        )
    path = max(found, key=lambda p: p.stat().st_mtime_ns)
    if path.name == RESULTS_ZARR:
        with xr.open_zarr(path, consolidated=False) as ds:
            return ds.load()
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()

"""Hardware benchmark: throughput of the gradient-flow vector field against the matmul peak.

Issue 7, comparison 4. For the two-layer ReLU network with the exponential loss (sum) at sizes
(n, d, h), it measures gradient evaluations per second of F(θ) = −∇L(θ) and the achieved GFLOP/s,
counting one gradient as 4·n·d·h + 7·n·h floating-point operations (forward X Wᵀ: 2ndh; backward
X-side products ∂L/∂W = ((g vᵀ) ⊙ 1[XWᵀ>0])ᵀ X: 2ndh; the O(nh) elementwise work ≈ 7nh). The
machine's matmul peak is measured in the same run as 2N³ / time of an N×N matmul, in float64 and
float32 (matmul precision "highest", set by importing gflow, so float32 on a GPU is not TF32).

The evaluations run inside one jitted `lax.fori_loop` (θ ← θ − 1e-12·∇L(θ), so no evaluation can
be skipped), as they do inside a solve, so Python dispatch is not counted.

Run standalone (also on a GPU machine): `python benchmarks/hardware.py [--quick] [--out DIR]`;
it prints the table and writes DIR/hardware.json, which `benchmarks/report.py --merge-gpu` adds
as a column.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import losses, models

FULL_SIZES = ((200, 50, 100), (1000, 256, 256), (2000, 784, 500), (10_000, 784, 1000))
QUICK_SIZES = ((200, 50, 100),)
DTYPES = ("float64", "float32")


def grad_flops(n, d, h):
    """FLOPs of one gradient of the two-layer network: 4·n·d·h + 7·n·h."""
    return 4 * n * d * h + 7 * n * h


def _best_time(fn, *args, min_total=0.3, repeats=3):
    """Best wall time of `fn(*args)` over `repeats` calls (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    times = []
    while len(times) < repeats or sum(times) < min_total:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype, size):
    """Measured GFLOP/s of an N×N by N×N matmul (2N³ FLOPs) in `dtype`."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (size, size), dtype)
    b = jax.random.normal(key_b, (size, size), dtype)
    # many repeats: the best of them is the peak this shared machine can give
    return 2 * size**3 / _best_time(jax.jit(jnp.matmul), a, b, min_total=1.0, repeats=10) / 1e9


def field_throughput(n, d, h, dtype, target_s=0.2):
    """(gradient evaluations per second, GFLOP/s) of the vector field at size (n, d, h)."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((n, d)) / np.sqrt(d), dtype)
    y = jnp.asarray(np.where(rng.random(n) < 0.5, 1.0, -1.0), dtype)
    params = jax.tree.map(lambda x: x.astype(dtype), models.init_two_layer(jax.random.PRNGKey(0), d, h, 1.0))
    field = gflow.vector_field(losses.objective(models.two_layer, losses.exponential, X, y, "sum"))

    @jax.jit
    def evaluate(params, count):
        def body(_, p):
            return jax.tree.map(lambda x, g: x + 1e-12 * g, p, field(0.0, p, None))

        return jax.lax.fori_loop(0, count, body, params)

    # Calibrate the count so that one call takes about target_s.
    count = 1
    while (t := _best_time(evaluate, params, count, min_total=0, repeats=1)) < target_s / 4 and count < 2**20:
        count *= 4
    count = max(1, int(count * target_s / t))
    per_eval = _best_time(evaluate, params, count) / count
    return 1 / per_eval, grad_flops(n, d, h) / per_eval / 1e9


def run(quick=False, log=print):
    """Measure peak and field throughput for every size and dtype; returns a JSON-ready dict."""
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    size = 8192 if on_gpu else (512 if quick else 1024)
    peaks = {dt: matmul_peak(jnp.dtype(dt), size) for dt in DTYPES}
    log(f"hardware: {device.device_kind} ({device.platform}); matmul peak N={size}: "
        + ", ".join(f"{dt} {p:.1f} GFLOP/s" for dt, p in peaks.items()))  # fmt: skip
    log(f"  {'n':>6} {'d':>5} {'h':>5} {'dtype':>8} {'grads/s':>10} {'GFLOP/s':>9} {'of peak':>8}")
    rows = []
    for n, d, h in QUICK_SIZES if quick else FULL_SIZES:
        for dt in DTYPES:
            evals, gflops = field_throughput(n, d, h, jnp.dtype(dt))
            row = {"n": n, "d": d, "h": h, "dtype": dt, "grad_evals_per_s": evals, "gflops": gflops,
                   "fraction_of_peak": gflops / peaks[dt]}  # fmt: skip
            rows.append(row)
            log(f"  {n:>6} {d:>5} {h:>5} {dt:>8} {evals:>10.1f} {gflops:>9.2f} {row['fraction_of_peak']:>8.1%}")
    return {
        "device": f"{device.device_kind} ({device.platform})",
        "host": platform.node(),
        "matmul_size": size,
        "peak_gflops": peaks,
        "rows": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest size only")
    parser.add_argument("--out", default="results/bench", help="output folder for hardware.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(args.quick)
    (out / "hardware.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'hardware.json'}")


if __name__ == "__main__":
    main()

"""Kinks found from the program (issue 19): the switching solve of four models gflow does not
know, against the plain solve and an independent event-driven Filippov reference.

Models (n = 20 Gaussian points in d = 5, labels sign(x₁ + x₂/2 + 0.1), widths 8):
- "deep": a user's 3-layer ReLU net in plain JAX, square loss;
- "mlp": an equinox `eqx.nn.MLP` (depth 2, biases) with relu, square loss;
- "hinge": `gflow.objective(two_layer, "hinge", ...)`: relu surfaces and the hinge margins;
- "leaky": a user's two-layer net with `jax.nn.leaky_relu(·, 0.1)`, square loss.
All at rtol 1e-8; the horizon of each is where the reference (`filippov_deep_reference`: numpy,
scipy DOP853 at rtol 1e-12, any number of surfaces sliding) stays valid. For each it reports
steps, gradient evaluations, wall time (compiled) and compile time (first call minus second)
of the plain and the switching solve, crossings and sliding intervals, and the relative weight
error max|θ − θ_ref| / max|θ_ref| of both.

    python benchmarks/kinks_any.py [--only deep,hinge]

Writes results/kinks_any/kinks_any.json and prints a markdown table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gflow

sys.path.insert(0, str(Path(__file__).resolve().parent))
import filippov_deep_reference as reference  # noqa: E402

N, D, WIDTH, SCALE = 20, 5, 8, 0.5
# model → (seed, horizon): horizons within the reference's reach (it raises where its continuation is ambiguous)
HORIZONS = {"deep": (1, 2.327), "mlp": (0, 0.845), "hinge": (0, 2.5), "leaky": (0, 0.966)}


def flat(leaves):
    return np.concatenate([np.ravel(np.asarray(x)) for x in leaves])


def problem(kind, seed):
    """(objective, params0, reference net, params → flat vector in the reference's order)."""
    kx, k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 4)
    X = np.asarray(jax.random.normal(kx, (N, D)))
    y = np.sign(X[:, 0] + 0.5 * X[:, 1] + 0.1)
    h = WIDTH
    if kind == "deep":
        params = {
            "W1": SCALE * jax.random.normal(k1, (h, D)) / np.sqrt(D),
            "W2": SCALE * jax.random.normal(k2, (h, h)) / np.sqrt(h),
            "v": SCALE * jax.random.normal(k3, (h,)) / np.sqrt(h),
        }

        def L(p):
            return jnp.mean(jnp.square(jax.nn.relu(jax.nn.relu(X @ p["W1"].T) @ p["W2"].T) @ p["v"] - y))

        net = reference.Net(X, y, [(h, D), (h, h), (h,)])
        return L, params, net, lambda p: flat([p["W1"], p["W2"], p["v"]])
    if kind == "mlp":
        mlp = eqx.nn.MLP(D, "scalar", h, 2, activation=jax.nn.relu, key=k1)
        mlp = jax.tree.map(lambda x: SCALE * x if eqx.is_array(x) else x, mlp)
        arrays, static = eqx.partition(mlp, eqx.is_array)

        def L(a):
            return jnp.mean(jnp.square(jax.vmap(eqx.combine(a, static))(X) - y))

        net = reference.Net(X, y, [(h, D), (h,), (h, h), (h,), (1, h), ()], bias=True)
        return L, arrays, net, lambda a: flat([x for layer in a.layers for x in (layer.weight, layer.bias)])
    params = gflow.models.init_two_layer(k1, D, h, SCALE)
    order = lambda p: flat([p["W"], p["v"]])
    if kind == "hinge":
        L = gflow.objective(gflow.models.two_layer, "hinge", X, y)
        return L, params, reference.Net(X, y, [(h, D), (h,)], loss="hinge"), order
    if kind == "leaky":

        def L(p):
            return jnp.mean(jnp.square(jax.nn.leaky_relu(X @ p["W"].T, 0.1) @ p["v"] - y))

        return L, params, reference.Net(X, y, [(h, D), (h,)], alpha=0.1), order
    raise ValueError(kind)


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def run(kind, rtol=1e-8):
    seed, t1 = HORIZONS[kind]
    L, params0, net, order = problem(kind, seed)
    start = time.perf_counter()
    ref, info = reference.integrate(net, order(params0), t1)
    ref_wall = time.perf_counter() - start
    scale = np.max(np.abs(ref))
    out = {"model": kind, "seed": seed, "t1": t1, "reference": info | {"wall": ref_wall}, "rows": []}
    for switching in (False, None):
        solve = lambda: gflow.simulate(L, params0, t1, rtol=rtol, switching=switching, max_steps=400_000)
        _, first = timed(solve)
        traj, wall = timed(solve)
        out["rows"].append({
            "method": "plain" if switching is False else "switching",
            "status": str(traj.status),
            "steps": int(traj.num_steps),
            "grad_evals": int(traj.num_grad_evals),
            "wall": wall,
            "compile": first - wall,
            "error": float(np.max(np.abs(order(traj.final_params) - ref)) / scale),
            "stats": {k: int(v) for k, v in traj.stats.items()},
        })
    return out


def table(results):
    lines = [
        "| model | t1 | ref crossings / slides | method | steps | ∇L evals | wall s | compile s | weight error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        info = r["reference"]
        for row in r["rows"]:
            lines.append(
                f"| {r['model']} | {r['t1']} | {info['crossings']} / {info['slides']} | {row['method']} | "
                f"{row['steps']:,} | {row['grad_evals']:,} | {row['wall']:.2f} | {row['compile']:.1f} | {row['error']:.1e} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(HORIZONS))
    parser.add_argument("--out", default="results/kinks_any")
    args = parser.parse_args(argv)
    results = [run(kind) for kind in args.only.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kinks_any.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return results


if __name__ == "__main__":
    main()

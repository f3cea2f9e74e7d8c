"""Wall time of issue 7's d=256 work-precision problem (separated n=200, d=256, width 100,
ε = 1e-4, T = 40): this checkout against another revision's gflow imported beside it in one
process (`ab_compare.import_old`), each solve compiled first, then 3 alternating runs; medians.

    python benchmarks/ab_wall.py [REV]        # default ee63910^, before the one-solve-core work
"""
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab_compare  # noqa: E402
import work_precision as wp  # noqa: E402

import gflow  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
old = ab_compare.import_old(str(ROOT), sys.argv[1] if len(sys.argv) > 1 else "ee63910^")
problem = [p for p in wp.FULL if p.name == "separated n200 d256"][0]
X, y = wp.make_data(problem)
p0 = gflow.models.init_two_layer(jax.random.PRNGKey(problem.seed), X.shape[1], problem.width, problem.init_scale)
# (label, rtol, keywords of simulate given the objective and whether it is the old revision's);
# the last rows pin this checkout's crossing buffer to the old default B = 32 (for these
# K = 20,000 surfaces on a state of D = 25,700 the default is now 62:
# `gflow.switching.crossing_buffer`)
b32 = lambda L, is_old: {} if is_old else {"switching": dataclasses.replace(L.switching, max_crossings=32)}
rows = [("default (switching=None)", 1e-4, lambda L, o: {}), ("default (switching=None)", 1e-6, lambda L, o: {}),
        ("default (switching=None)", 1e-8, lambda L, o: {}), ("plain", 1e-5, lambda L, o: {"switching": False}),
        ("switching, B = 32", 1e-6, b32), ("switching, B = 32", 1e-8, b32)]
sides = {"old": old, "new": gflow}
objectives = {tag: lib.objective(lib.models.two_layer, "exponential", X, y, "sum") for tag, lib in sides.items()}


def solve(tag, rtol, keywords):
    L = objectives[tag]
    return jax.block_until_ready(sides[tag].simulate(L, p0, problem.t1, rtol=rtol, max_steps=200_000,
                                                     **keywords(L, tag == "old")))


for name, rtol, keywords in rows:
    steps = {}
    for tag in sides:  # compiles
        traj = solve(tag, rtol, keywords)
        steps[tag] = (int(traj.num_steps), str(traj.status))
    times = {tag: [] for tag in sides}
    for _ in range(3):  # alternating, so that both sides see the same load
        for tag in sides:
            start = time.perf_counter()
            solve(tag, rtol, keywords)
            times[tag].append(time.perf_counter() - start)
    mo, mn = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"{name}, rtol {rtol:g}: steps old {steps['old']} new {steps['new']}; wall median old {mo:.2f} s, "
          f"new {mn:.2f} s, new/old {mn / mo:.3f}", flush=True)

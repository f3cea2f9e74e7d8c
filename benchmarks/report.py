"""Every benchmark of issue 7 in one process, and one report: `make bench`.

Runs, in this order and in one process (the machine is noisy, so every comparison is a ratio
measured within this run):

1. work-precision (`work_precision.py`), 2. kinks (`kinks.py`, when present), 3. sweeps
(`sweep_throughput.py`, when present), 4. hardware (`hardware.py`), 5. memory (`memory.py`).

Writes into `--out` (default results/bench): `REPORT.md` (tables), `bench.json` (every figure),
`work_precision.png` (work-precision plots), and the JSON of each part. Kinks and sweeps are run
through their own `main()` with `sys.argv = [..., "--out", FILE]` and read back from the JSON they write; a part
that is absent or fails is reported as "not available" with the reason.

Options: `--quick` (every part in its quick mode), `--skip kinks,sweeps` (leave parts out),
`--merge-gpu FILE` (add the hardware.json written by `hardware.py --out DIR` on a GPU machine as
a column), `--reuse-work-precision FILE [FILE ...]` (take comparison 1 from earlier
`work_precision.py` runs, e.g. one process per problem, instead of measuring it again; the
report says so).
"""

import argparse
import contextlib
import importlib
import io
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts

import hardware  # noqa: E402
import memory  # noqa: E402
import work_precision  # noqa: E402

PARTS = ("work_precision", "kinks", "sweeps", "hardware", "memory")
EXTERNAL = {"kinks": "kinks", "sweeps": "sweep_throughput"}  # part → module written elsewhere


class _Tee(io.TextIOBase):
    """Echo writes to stdout and keep them, so a part's printed table lands in the report."""

    def __init__(self):
        self.buffer = io.StringIO()

    def write(self, s):
        sys.__stdout__.write(s)
        sys.__stdout__.flush()
        return self.buffer.write(s)


def run_external(part, quick, out):
    """Run `EXTERNAL[part]`'s main, writing JSON to out/<part>.json; returns (result, printed)."""
    try:
        module = importlib.import_module(EXTERNAL[part])
    except ModuleNotFoundError as e:
        return {"available": False, "reason": f"benchmarks/{EXTERNAL[part]}.py not found ({e})"}, ""
    path = out / f"{part}.json"
    tee = _Tee()
    argv = sys.argv
    sys.argv = [module.__file__] + (["--quick"] if quick else []) + ["--out", str(path)]
    try:
        with contextlib.redirect_stdout(tee):
            module.main()  # parses sys.argv, whether or not main takes argv
    except (Exception, SystemExit) as e:  # noqa: BLE001 - someone else's benchmark: report, go on
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}, tee.buffer.getvalue()
    finally:
        sys.argv = argv
    if path.is_dir():  # a part that treats --out as a folder
        found = sorted(path.glob("*.json"))
        if not found:
            return {"available": False, "reason": f"no JSON written under {path}"}, tee.buffer.getvalue()
        path = found[0]
    return {"available": True, "file": str(path), "result": json.loads(path.read_text())}, tee.buffer.getvalue()


def run_all(quick=False, out=Path("results/bench"), skip=(), reuse_work_precision=None, merge_gpu=None):
    """Run every part not in `skip`; returns the JSON-ready dict of all figures."""
    out.mkdir(parents=True, exist_ok=True)
    bench = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": quick, "parts": {}}
    printed = {}
    for part in PARTS:
        start = time.perf_counter()
        if part in skip:
            result, text = {"available": False, "reason": "skipped (--skip)"}, ""
        elif part == "work_precision" and reuse_work_precision:
            runs = [json.loads(Path(f).read_text()) for f in reuse_work_precision]
            wp = {"target": runs[0]["target"], "rows": [r for run in runs for r in run["rows"]],
                  "problems": [i for run in runs for i in run["problems"]]}  # fmt: skip
            for info in wp["problems"]:  # recomputed: the runs may predate a figure (the default's)
                info["speedups"] = work_precision.speedups([r for r in wp["rows"] if r["problem"] == info["problem"]["name"]])
            result, text = {"available": True, "reused": ", ".join(map(str, reuse_work_precision)), "result": wp}, ""
        elif part in EXTERNAL:
            result, text = run_external(part, quick, out)
        else:
            module = {"work_precision": work_precision, "hardware": hardware, "memory": memory}[part]
            tee = _Tee()
            kwargs = {"cache": out} if part == "work_precision" else {}
            r = module.run(quick, log=lambda s: print(s, file=tee), **kwargs)
            (out / f"{part}.json").write_text(json.dumps(r, indent=1))
            result, text = {"available": True, "result": r}, tee.buffer.getvalue()
        result["seconds"] = time.perf_counter() - start
        bench["parts"][part] = result
        printed[part] = text
    if merge_gpu:
        bench["parts"]["hardware"]["gpu"] = json.loads(Path(merge_gpu).read_text())
    wp = bench["parts"]["work_precision"]
    if wp["available"]:
        work_precision.plot(wp["result"]["rows"], wp["result"]["problems"], out / "work_precision.png")
    (out / "bench.json").write_text(json.dumps(bench, indent=1, default=float))
    (out / "REPORT.md").write_text(render(bench, printed))
    return bench


def _num(x):
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _flat_dict(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_dict(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def _records_table(records):
    """A markdown table of a list (or dict name → record) of JSON records, nested keys flattened."""
    if isinstance(records, dict):
        records = [{"name": k, **v} for k, v in records.items() if isinstance(v, dict)]
    flat = [_flat_dict(r) for r in records if isinstance(r, dict)]
    cols = list(dict.fromkeys(k for r in flat for k in r))
    return _table(cols, [[r.get(c) for c in cols] for r in flat])


def _render_work_precision(part):
    res = part["result"]
    target = res["target"]
    lines = []
    if part.get("reused"):
        lines.append(f"Taken from earlier standalone runs of `work_precision.py` ({part['reused']}), one "
                     "process per file: compare ratios within a problem.\n")
    lines.append(
        "Relative errors of the final loss L(T) and of the final weights θ(T) against a tight "
        "reference; wall times exclude JIT compilation (every jitted function is warmed up first). "
        "*gflow* is `gflow.simulate` as a user gets it (the objective's switching surfaces on), "
        "*gflow (frontier)* is the cheapest of its switching-solve options at the target (the row is named), "
        "*gflow default* the one run of `gflow.simulate` with no options, "
        "*gflow plain* the same with `switching=False`. Grad evals: ∇L evaluations (scipy: nfev). "
        "Plots: `work_precision.png`.\n"
    )
    for info in res["problems"]:
        p, ref = info["problem"], info["reference"]
        name = p["name"]
        lines.append(f"### {name}\n")
        unc, xcheck = ref["uncertainty"], ref.get("xcheck")
        lines.append(
            f"n={info['n']}, d={info['d']}, width={p['width']}, ε={p['init_scale']:g}, T={p['t1']:g}, "
            f"μ̂={_num(info['mu_hat'])}. Reference: gflow switching solve, {ref['solver']} rtol {ref['rtol']:g}, "
            f"{ref['steps']:,} steps, {ref['crossings']:,} crossings, L(T)={ref['final_loss']:.15g}; against "
            f"the same at 10× rtol it differs by {unc['loss']:.1e} (loss), {unc['weights']:.1e} (weights)."
            + (f" Cross-check: scipy DOP853 (numpy ∇L) at rtol {xcheck['rtol']:g} ({xcheck['nfev']:,} evaluations, "
               f"{xcheck['wall_s']:.0f} s) agrees with it to {xcheck['loss']:.1e} (loss), {xcheck['weights']:.1e} "
               "(weights)." if xcheck else " Not cross-checked against scipy.")
            + f" Whole problem: {info['seconds']:.0f} s.\n"
        )  # fmt: skip
        rows = [r for r in res["rows"] if r["problem"] == name]
        lines.append(_table(
            ["method", "rtol / lr", "wall s", "grad evals", "steps", "crossings", "loss error", "weight error", "ok"],
            [[r["method"], r["setting"], r["wall_s"], r["grad_evals"], r["steps"], r["crossings"], r["loss_error"],
              r["weight_error"], r["ok"]] for r in rows],
        ))  # fmt: skip
        lines.append(f"\n**At equal accuracy {target:g}** (cost interpolated log-log between settings; "
                     "*extrapolated* marks figures beyond the most accurate run: GD along its first-order "
                     "line, cost × error = const; *measured*: the cheapest run already at or below the "
                     "target, an upper bound):\n")  # fmt: skip
        table = []
        for key, label in (("loss_error/wall_s", "loss, wall s"), ("weight_error/wall_s", "weights, wall s"),
                           ("loss_error/grad_evals", "loss, grad evals"), ("weight_error/grad_evals", "weights, grad evals")):  # fmt: skip
            s = info["speedups"][key]
            table.append([label, _best(s["best"]["gflow"]), _default(s.get("default"))]
                         + [_best(s["best"][f]) for f in ("gflow plain", "optax GD", "scipy")]
                         + [_ratio(s["vs_gd"], 100), _ratio(s["vs_scipy"], 10), _ratio(s.get("default_vs_gd"), 100),
                            _ratio(s.get("default_vs_scipy"), 10), _ratio(s["plain_vs_scipy"], 10)])  # fmt: skip
        lines.append(_table(["error, cost", "gflow (frontier)", "gflow default", "gflow plain", "optax GD", "scipy",
                             "GD / gflow (≥ 100×)", "scipy / gflow (≥ 10×)", "GD / default", "scipy / default",
                             "scipy / gflow plain"], table))  # fmt: skip
        per = info["speedups"]["loss_error/wall_s"]["methods"]
        lines.append("\nWall time at loss error "
                     f"{target:g} per method: " + "; ".join(
                         f"{m} {_num(v['cost'])} s ({v['how']})" for m, v in sorted(per.items())) + "\n")  # fmt: skip
    return "\n".join(lines)


def _best(best):
    return "–" if best is None else f"{_num(best[0])} ({best[1]}, {best[2]})"


def _default(d):
    """The default run's cost and error: `gflow.simulate` with no options, one setting."""
    if d is None:
        return "not run"
    return f"{_num(d['cost'])} at error {d['error']:.1e} ({d['method']} {d['rtol']:g})"


def _ratio(x, target):
    if x is None:
        return "–"
    return f"{x:.3g}× ({'meets' if x >= target else 'misses'} target)"


def _render_hardware(part):
    res = part["result"]
    gpu = part.get("gpu")
    lines = [f"Device: {res['device']}; measured matmul peak (N={res['matmul_size']}): "
             + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in res["peak_gflops"].items())]  # fmt: skip
    if gpu:
        lines[0] += (f". GPU column: {gpu['device']}, matmul peak (N={gpu['matmul_size']}): "
                     + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gpu["peak_gflops"].items()))  # fmt: skip
    else:
        lines[0] += (". GPU column: not measured (no GPU in this run; `python benchmarks/hardware.py --out DIR` "
                     "on a GPU machine, then `report.py --merge-gpu DIR/hardware.json`)")  # fmt: skip
    lines.append("\nOne gradient of the two-layer net counted as 4·n·d·h + 7·n·h FLOPs.\n")
    gpu_rows = {(r["n"], r["d"], r["h"], r["dtype"]): r for r in (gpu or {}).get("rows", [])}
    header = ["n", "d", "h", "dtype", "grads/s", "GFLOP/s", "of peak"]
    if gpu:
        header += ["GPU grads/s", "GPU GFLOP/s", "GPU of peak"]
    rows = []
    for r in res["rows"]:
        row = [r["n"], r["d"], r["h"], r["dtype"], r["grad_evals_per_s"], r["gflops"], f"{r['fraction_of_peak']:.1%}"]
        if gpu:
            g = gpu_rows.get((r["n"], r["d"], r["h"], r["dtype"]))
            row += [g["grad_evals_per_s"], g["gflops"], f"{g['fraction_of_peak']:.1%}"] if g else ["–"] * 3
        rows.append(row)
    lines.append(_table(header, rows))
    return "\n".join(lines)


def _render_memory(part):
    res = part["result"]
    lines = [f"n={res['n']}, d={res['d']}, h={res['h']}: state {res['state_bytes']:,} bytes, T={res['t1']:g}. "
             "Peak = XLA's buffer assignment of the compiled solve (arguments + outputs + temporaries).\n"]  # fmt: skip
    lines.append(_table(["recording", "saves", "max_steps", "peak MB"],
                        [[r["recording"], r["saves"], r["max_steps"], r["peak_bytes"] / 1e6] for r in res["rows"]]))  # fmt: skip
    if res.get("long_solve"):
        s = res["long_solve"]
        lines.append(f"\nRan the observables-only solve with {s['saves']:,} saves: {s['num_steps']:,} steps to "
                     f"T={s['t1']:g}, status {s['status']}, {s['wall_s']:.1f} s.")  # fmt: skip
    return "\n".join(lines)


def _render_external(part, text):
    res = part["result"]
    lines = [f"From `{part['file']}`.\n"]
    records = res if isinstance(res, list) else res.get("rows") or res.get("grids") or res.get("results")
    if records:
        lines.append(_records_table(records))
    # nested lists are not in the table: the JSON itself, abridged
    lines.append("\n```json\n" + json.dumps(res, indent=1)[:6000] + "\n```")
    if text.strip():
        lines.append("\nPrinted:\n\n```\n" + text.strip()[-4000:] + "\n```")
    return "\n".join(lines)


TITLES = {
    "work_precision": "1. Work-precision: one trajectory",
    "kinks": "2. Kinks: data that is not well separated",
    "sweeps": "3. Sweeps",
    "hardware": "4. Hardware: vector-field throughput",
    "memory": "5. Scale: memory of a long solve",
}


def render(bench, printed):
    """REPORT.md from the bench dict."""
    lines = [f"# gflow benchmark report\n\nStarted {bench['started']}"
             + (" (--quick mode)" if bench["quick"] else "") + ". All parts ran in one process.\n"]  # fmt: skip
    render_own = {"work_precision": _render_work_precision, "hardware": _render_hardware, "memory": _render_memory}
    for part in PARTS:
        p = bench["parts"][part]
        lines.append(f"## {TITLES[part]}\n")
        if not p["available"]:
            lines.append(f"Not available: {p['reason']}\n")
            continue
        body = render_own[part](p) if part in render_own else _render_external(p, printed.get(part, ""))
        lines.append(body + f"\n\n({p['seconds']:.0f} s)\n")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every part in its quick mode")
    parser.add_argument("--out", default="results/bench", help="output folder")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out, of {','.join(PARTS)}")
    parser.add_argument("--merge-gpu", help="hardware.json from `hardware.py --out DIR` on a GPU machine")
    parser.add_argument("--reuse-work-precision", nargs="+", help="work_precision.json of earlier runs")
    args = parser.parse_args(argv)
    skip = tuple(s for s in args.skip.split(",") if s)
    unknown = set(skip) - set(PARTS)
    if unknown:
        raise ValueError(f"--skip: unknown parts {sorted(unknown)}; choose from {PARTS}")
    out = Path(args.out)
    run_all(args.quick, out, skip, args.reuse_work_precision, args.merge_gpu)
    print(f"wrote {out / 'REPORT.md'} and {out / 'bench.json'}")


if __name__ == "__main__":
    main()

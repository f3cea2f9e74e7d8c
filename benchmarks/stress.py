"""Stress corpus for the switching solve (issue 17): switching vs plain on ReLU flows that slide.

Every case is a two-layer net `gflow.losses.objective(gflow.models.two_layer, loss, X, y,
reduction)` (ReLU, or leaky ReLU with gflow's slope 0.01) on data that is not well separated
(`gflow.data.hyperplane`) or μ-separated (`gflow.data.separated`), balanced init at scale ε
(`gflow.models.init_two_layer(PRNGKey(seed), d, width, ε)`). For each case `gflow.simulate` runs
with the switching solve (`switching=L.switching`, forced), with `switching=False` (plain) and
with the default `switching=None` (the switching solve only at rtol < `SWITCHING_MAX_RTOL` and
K = n·h ≤ `SWITCHING_MAX_SURFACES` (`gflow.options`), the plain solve after a "stalled" or
"nonfinite" one; `stats["switching"]`, `stats["switching_fallback"]`, `stats["switching_reason"]`
say which ran and why), all capped at the case's `max_steps`; each solve is compiled first by a call with t1/1000 (t1 and rtol are traced), and
the second call is timed. Recorded: status, t reached, accepted / rejected steps, ∇L evaluations
(`num_grad_evals`), wall time, sliding statistics, and the final weights' relative error
max|θ − θ_ref| / max|θ_ref| against

- "filippov": `filippov_reference.py` (independent event-driven Filippov integrator, DOP853 at
  rtol `REF_RTOL`), where affordable (n·h ≤ 20,000 surfaces: 2 s to 17 min here), cached under
  `--refs`;
- "switching": otherwise, gflow's own switching solve at rtol 1e-10 (not independent; marked).

The rule of issue 17 (`check`), judged for the forced and for the default solve: it reaches t1;
where the plain solve reaches t1 (does not grind) it takes at most 1.5× its steps, where it
grinds fewer; and its error is at most the plain solve's at the same rtol (errors below
`ERROR_FLOOR`, the reference's own accuracy, count as equal).

    python benchmarks/stress.py --quick                      # the small default subset
    python benchmarks/stress.py                              # all cases (long; run with nice)
    python benchmarks/stress.py --cases issue17a,issue17b --out results/stress/issue.json
    python benchmarks/stress.py --cases big-n500-h200 --no-reference --reuse-default  # no errors; default copied
    python benchmarks/stress.py --merge results/stress/part*.json   # rows of split runs → --out

Writes a JSON file (rows + summary), a CSV beside it, and prints a markdown table and summary.
"""

import argparse
import csv
import functools
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import numpy as np

import gflow
from gflow import data, losses, models

sys.path.insert(0, str(Path(__file__).resolve().parent))
import filippov_reference  # noqa: E402

REF_RTOL = 1e-11
ERROR_FLOOR = 1e-10
STEP_RATIO = 1.5
SOLVES = (("plain", False), ("switching", True), ("default", None))  # row key, `switching` argument


@dataclass(frozen=True)
class Case:
    name: str
    data: str  # "hyperplane" or "separated"
    n: int
    d: int
    width: int
    eps: float
    loss: str
    reduction: str
    activation: str
    rtol: float
    t1: float
    seed: int = 0
    mu: float = 0.0  # separated data only
    max_steps: int = 20_000
    quick: bool = False

    @property
    def reference_kind(self):
        return "filippov" if self.n * self.width <= 20_000 else "switching"


def _cases():
    C = Case
    out = [
        # the two reproducers of issue 17
        C("issue17a", "hyperplane", 40, 10, 20, 1e-3, "exponential", "sum", "relu", 1e-6, 5.0),
        C("issue17b", "hyperplane", 300, 50, 50, 1e-2, "exponential", "mean", "relu", 1e-4, 10.0, max_steps=3_000),
        # tiny cases on one objective (one compilation): the default test subset
        C("tiny-eps1e-2", "hyperplane", 20, 5, 10, 1e-2, "exponential", "sum", "relu", 1e-6, 3.0, 1, max_steps=3_000, quick=True),
        C("tiny-eps1e-1", "hyperplane", 20, 5, 10, 1e-1, "exponential", "sum", "relu", 1e-8, 3.0, 1, max_steps=3_000, quick=True),
        C("tiny-sq-mean-leaky", "hyperplane", 20, 5, 10, 1e-1, "square", "mean", "leaky_relu", 1e-8, 20.0, 2, max_steps=3_000),
    ]
    # rtol sweep on the kinks benchmark's problem (mean reduction, ε = 1e-2)
    for rtol in (1e-4, 1e-6, 1e-8, 1e-9):
        out.append(C(f"kinks-rtol{rtol:.0e}", "hyperplane", 40, 10, 20, 1e-2, "exponential", "mean", "relu", rtol, 5.0))
    # losses × reductions × activations on n = 40, d = 10, width 20
    for loss in ("exponential", "logistic", "square"):
        for reduction in ("sum", "mean"):
            for act in ("relu", "leaky_relu"):
                t1 = 3.0 if reduction == "sum" else 20.0
                seed = 1 + (loss == "logistic") + 2 * (act == "leaky_relu")
                name = f"{loss[:3]}-{reduction}-{act.replace('_relu', '')}"
                out.append(C(name, "hyperplane", 40, 10, 20, 1e-2, loss, reduction, act, 1e-6, t1, seed))
    # init scales
    for eps in (1e-6, 1e-4, 1e-1):
        out.append(C(f"eps{eps:.0e}", "hyperplane", 40, 10, 20, eps, "exponential", "sum", "relu", 1e-7, 4.0, 3))
    # widths 10 … 200 on n = 100, d = 20
    for width in (10, 50, 100, 200):
        out.append(C(f"width{width}", "hyperplane", 100, 20, width, 1e-2, "exponential", "mean", "relu", 1e-6, 10.0, 4, max_steps=10_000))
    # sample sizes 20 … 1000 (sum: time scaled by 40/n)
    for n, rtol in ((20, 1e-5), (60, 1e-8), (200, 1e-6), (1000, 1e-4)):
        out.append(C(f"n{n}", "hyperplane", n, 20, 20, 1e-2, "logistic", "sum", "relu", rtol, 200.0 / n, 5, max_steps=10_000))
    # μ-separated data
    for n, d, width, mu, loss, red, act, rtol in (
        (20, 30, 10, 0.1, "exponential", "sum", "relu", 1e-6),
        (20, 30, 20, 0.3, "logistic", "mean", "leaky_relu", 1e-8),
        (40, 50, 20, 0.05, "square", "sum", "relu", 1e-6),
        (100, 20, 50, 0.1, "exponential", "mean", "relu", 1e-9),
        (100, 20, 50, 0.02, "logistic", "sum", "leaky_relu", 1e-5),
        (200, 50, 20, 0.1, "square", "mean", "relu", 1e-7),
        (200, 256, 100, 0.3, "exponential", "mean", "relu", 1e-6),
        (300, 30, 50, 0.01, "exponential", "sum", "relu", 1e-4),
    ):
        t1 = (100.0 / n if red == "sum" else 20.0)
        out.append(C(f"sep-n{n}-h{width}-mu{mu}-{loss[:3]}-{red}", "separated", n, d, width, 1e-3, loss, red, act, rtol, t1, 6, mu, max_steps=10_000))
    # more seeds of the problem at other settings
    for seed, rtol, eps, red in ((7, 1e-8, 1e-3, "sum"), (8, 1e-5, 1e-5, "mean"), (9, 1e-9, 1e-2, "sum")):
        out.append(C(f"issue-seed{seed}", "hyperplane", 40, 10, 20, eps, "exponential", red, "relu", rtol, 5.0 if red == "sum" else 20.0, seed))
    # large
    out += [
        C("big-n1000-h100", "hyperplane", 1000, 100, 100, 1e-2, "exponential", "mean", "relu", 1e-4, 5.0, 10, max_steps=2_000),
        C("big-n500-h200", "hyperplane", 500, 50, 200, 1e-2, "logistic", "mean", "leaky_relu", 1e-5, 5.0, 11, max_steps=2_000),
        C("big-sep-n1000-h100", "separated", 1000, 50, 100, 1e-4, "exponential", "mean", "relu", 1e-6, 10.0, 12, 0.05, max_steps=2_000),
    ]
    return out


CASES = {c.name: c for c in _cases()}


def dataset(case):
    if case.data == "hyperplane":
        return data.hyperplane(case.n, case.d, case.seed)
    return data.separated(case.seed, case.n, case.d, case.mu, equiangular=case.d >= case.n + 1)


def flat(params):
    return np.concatenate([np.ravel(np.asarray(params["W"])), np.ravel(np.asarray(params["v"]))])


@functools.lru_cache(maxsize=None)
def _objective(data_kind, n, d, seed, mu, loss, reduction, activation):
    case = Case("", data_kind, n, d, 1, 1.0, loss, reduction, activation, 0.0, 0.0, seed, mu)
    X, y = dataset(case)
    apply = models.two_layer if activation == "relu" else functools.partial(models.two_layer, activation="leaky_relu")
    return losses.objective(apply, loss, X, y, reduction=reduction), X, y


def problem(case):
    """(L, params0, X, y) of a case. The objective is cached, so that cases on the same data and
    loss share gflow's compiled solves (a rebuilt objective recompiles)."""
    L, X, y = _objective(case.data, case.n, case.d, case.seed, case.mu, case.loss, case.reduction, case.activation)
    params0 = models.init_two_layer(jax.random.PRNGKey(case.seed), case.d, case.width, case.eps, balanced=True)
    return L, params0, X, y


def reference(case, folder=None, log=print):
    """θ_ref(t1) of a case and how it was obtained: (θ, info). Cached as npz in `folder`."""
    kind = case.reference_kind
    ident = {k: v for k, v in asdict(case).items() if k not in ("name", "rtol", "max_steps", "quick")}
    key = hashlib.sha1(repr((ident, kind, REF_RTOL)).encode()).hexdigest()[:16]
    path = Path(folder) / f"ref-{key}.npz" if folder else None
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=False)
        return z["theta"], json.loads(str(z["info"]))
    L, params0, X, y = problem(case)
    if kind == "filippov":
        W, v, out = filippov_reference.reference(
            X, y, params0["W"], params0["v"], case.t1, loss=case.loss, reduction=case.reduction,
            activation=case.activation, rtol=REF_RTOL, max_wall=1800,
        )
        theta = np.concatenate([W.ravel(), v])
        info = {"kind": kind, "rtol": REF_RTOL, "status": out.status, "t": out.t, "wall": out.wall, "nfev": out.nfev,
                "segments": out.segments, "crossings": out.crossings, "sliding_starts": out.sliding_starts,
                "sliding_exits": out.sliding_exits, "max_sliding": out.max_sliding, "sliding_final": out.sliding_final}
    else:
        start = time.perf_counter()
        traj = gflow.simulate(L, params0, case.t1, rtol=1e-10, max_steps=5_000)
        theta = flat(traj.final_params)
        info = {"kind": kind, "rtol": 1e-10, "status": str(traj.status), "t": float(traj.t_final),
                "wall": time.perf_counter() - start}
    ok = info["status"] == "success" and abs(info["t"] - case.t1) <= 1e-9 * case.t1
    info["ok"] = bool(ok)
    log(f"  reference {case.name}: {kind}, {info['status']} at t={info['t']:.4g}, {info['wall']:.1f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, theta=theta, info=json.dumps(info))
    return theta, info


def solve(case, switching, t1=None):
    """The case's solve: `switching` True forces the switching solve (`L.switching`), False the
    plain solve, None is gflow's default (`default_is`)."""
    L, params0, _, _ = problem(case)
    return gflow.simulate(
        L, params0, case.t1 if t1 is None else t1, rtol=case.rtol, max_steps=case.max_steps,
        switching=None if switching is None else (L.switching if switching else False),
    )


def _row_of(traj, wall, ref, case):
    row = {
        "status": str(traj.status),
        "t": float(traj.t_final),
        "accepted": int(traj.num_accepted_steps),
        "rejected": int(traj.num_rejected_steps),
        "steps": int(traj.num_steps),
        "grad_evals": int(traj.num_grad_evals),
        "wall": wall,
        "error": None,
    }
    row["stats"] = {k: int(np.asarray(v)) for k, v in traj.stats.items()}
    if ref is not None and row["status"] == "success":
        row["error"] = float(np.max(np.abs(flat(traj.final_params) - ref)) / np.max(np.abs(ref)))
    return row


def default_is(case, forced_status):
    """Which solve `switching=None` runs on a case and why: (which, `gflow.options.SWITCHING_REASONS`
    code), by `SWITCHING_MAX_RTOL`, `SWITCHING_MAX_SURFACES` (K = n·h) and the fall-back after a
    stall or a collapse (`gflow.status.SWITCHING_FALLBACK`): "plain", "switching", or
    "switching, then plain" (given the forced switching solve's status)."""
    o = gflow.options
    if case.rtol >= o.SWITCHING_MAX_RTOL:
        return "plain", o.SWITCHING_LOOSE_RTOL
    if case.n * case.width > o.SWITCHING_MAX_SURFACES:
        return "plain", o.SWITCHING_MANY_SURFACES
    if forced_status in [gflow.status.NAMES[c] for c in gflow.status.SWITCHING_FALLBACK]:
        return "switching, then plain", o.SWITCHING_FELL_BACK
    return "switching", o.SWITCHING_RAN


def run_case(case, refs=None, log=print, with_reference=True, reuse_default=False):
    """One row: the plain, forced switching and default solves (each compiled, then timed) and
    their errors against the reference. `with_reference=False` skips the reference (no errors);
    `reuse_default=True` does not run the default solve where it is one of the other two
    (`default_is`: the same compiled solve on the same input, so the same steps), but copies that
    row with "reused" naming it (wall: the sum where it stalls and falls back)."""
    log(f"{case.name}: {case.data} n={case.n} d={case.d} h={case.width} ε={case.eps:g} {case.loss} "
        f"{case.reduction} {case.activation} rtol={case.rtol:g} t1={case.t1:g}")
    if with_reference:
        theta_ref, ref_info = reference(case, refs, log)
    else:
        theta_ref, ref_info = None, {"kind": "skipped", "ok": False}
    ref = theta_ref if ref_info["ok"] else None
    row = {"case": asdict(case), "reference": ref_info}
    for key, switching in SOLVES:
        if key == "default" and reuse_default:
            which, reason = default_is(case, row["switching"]["status"])
            source = row["plain" if which == "plain" else "switching"]
            stats = {**source["stats"], "switching": int(which == "switching"), "switching_fallback": int("then" in which),
                     "switching_reason": reason}
            row[key] = {**source, "stats": stats, "reused": which}
            if "then" in which:
                row[key] = {**row["plain"], "stats": {**row["plain"]["stats"], **stats},
                            "reused": which, "wall": row["plain"]["wall"] + row["switching"]["wall"]}
            log(f"  {key}: {which} (reused)")
            continue
        jax.block_until_ready(solve(case, switching, case.t1 * 1e-3).final_params)  # compile
        start = time.perf_counter()
        traj = solve(case, switching)
        jax.block_until_ready(traj.final_params)
        row[key] = _row_of(traj, time.perf_counter() - start, ref, case)
        r = row[key]
        log(f"  {key}: {r['status']} t={r['t']:.4g} {r['accepted']}+{r['rejected']} steps, "
            f"{r['grad_evals']} ∇L, {r['wall']:.2f} s, error {r['error']}")
    row["check"] = check(row)
    row["check_default"] = check(row, "default")
    return row


def check(row, key="switching"):
    """Issue 17's rule on one row for the solve `key` ("switching": forced; "default":
    `switching=None`) against the plain solve: a list of failures (empty if it holds)."""
    sw, pl = row[key], row["plain"]
    fails = []
    if sw["status"] != "success":
        fails.append(f"switching {sw['status']} at t={sw['t']:.4g} of {row['case']['t1']:g} "
                     f"({sw['accepted']}+{sw['rejected']} steps, sliding {sw['stats'].get('sliding_final')})")
    grinds = pl["status"] != "success"
    if not grinds and sw["steps"] > STEP_RATIO * pl["steps"]:
        fails.append(f"steps {sw['steps']} > {STEP_RATIO}× plain's {pl['steps']}")
    if grinds and sw["steps"] >= pl["steps"]:
        fails.append(f"plain grinds ({pl['status']}) but switching takes as many steps ({sw['steps']})")
    if sw["error"] is not None and pl["error"] is not None and sw["error"] > max(pl["error"], ERROR_FLOOR):
        fails.append(f"error {sw['error']:.2e} > plain's {pl['error']:.2e}")
    return fails


def proposed_default(row, max_rtol, max_surfaces):
    """A candidate rule for `switching=None`, judged on a measured row without solving again: the
    switching solve (then the plain one if it stalls) where rtol < max_rtol and the surfaces
    K = n·h ≤ max_surfaces, else the plain solve. Returns (which, failures of issue 17's rule);
    the chosen solve is the same computation as the row's forced switching or plain solve."""
    c = row["case"]
    if c["rtol"] >= max_rtol or c["n"] * c["width"] > max_surfaces:
        which = "plain"
    else:
        which = "switching, then plain" if row["switching"]["status"] == "stalled" else "switching"
    chosen = row["switching"] if which == "switching" else row["plain"]
    return which, check({**row, "candidate": chosen}, "candidate")


def rule_table(rows, rules=((1e-5, float("inf")), (1e-5, 20_000), (1e-4, float("inf")), (1e-4, 20_000), (1e-6, float("inf")))):
    """How many rows each candidate default rule (max_rtol, max_surfaces) passes, and which fail."""
    lines = ["| default rule | passes | fails |", "|---|---|---|"]
    for max_rtol, max_surfaces in rules:
        fails = [r["case"]["name"] for r in rows if proposed_default(r, max_rtol, max_surfaces)[1]]
        name = f"rtol < {max_rtol:g}" + ("" if max_surfaces == float("inf") else f" and K ≤ {max_surfaces:,}")
        lines.append(f"| {name} | {len(rows) - len(fails)} of {len(rows)} | {', '.join(fails) or '–'} |")
    return "\n".join(lines)


def summary(rows):
    both = [r for r in rows if r["plain"]["status"] == "success"]
    out = {"cases": len(rows)}
    for solve_key in ("switching", "default"):
        rows_k = [r for r in rows if solve_key in r]
        ratio = lambda r, key: r[solve_key][key] / max(r["plain"][key], 1e-300)
        checks = {r["case"]["name"]: r["check" if solve_key == "switching" else "check_default"] for r in rows_k}
        part = {"passing": sum(not c for c in checks.values()), "failing": {k: c for k, c in checks.items() if c}}
        for key in ("steps", "wall", "grad_evals"):
            w = max((r for r in both if solve_key in r), key=lambda r: ratio(r, key), default=None)
            part[f"worst_{key}_ratio"] = None if w is None else {"case": w["case"]["name"], "ratio": ratio(w, key)}
        part["not_reaching_t1"] = {
            r["case"]["name"]: {k: r[solve_key][k] for k in ("status", "t", "accepted", "rejected")}
            for r in rows_k if r[solve_key]["status"] != "success"
        }
        out[solve_key] = part
    out["default_ran_switching"] = [r["case"]["name"] for r in rows if r.get("default", {}).get("stats", {}).get("switching")]
    out["default_stalled_fell_back"] = [
        r["case"]["name"] for r in rows if r.get("default", {}).get("stats", {}).get("switching_fallback")]
    out["plain_grinds"] = {
        r["case"]["name"]: {"plain": {k: r["plain"][k] for k in ("status", "t", "steps")},
                            "switching_steps": r["switching"]["steps"], "switching_status": r["switching"]["status"]}
        for r in rows if r["plain"]["status"] != "success"
    }
    return out


def _short(r):
    steps = f"{r['accepted']}+{r['rejected']}"
    err = "" if r["error"] is None else f", {r['error']:.1e}"
    if r["status"] == "success":
        return steps + err
    return f"{r['status']} at {r['t']:.3g}, {steps}"


def table(rows):
    """Markdown table: per case the surfaces K = n·h and rtol; the plain and the forced switching
    solve (accepted+rejected steps and error, or the status and t where it stopped); their step
    and wall ratios; which solve the default ran and its ratios; the rule for each."""
    lines = [
        "| case | K | rtol | plain | switching (forced) | steps, wall sw/pl | rule | default ran | steps, wall def/pl | rule (default) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdict = lambda fails: "ok" if not fails else "FAIL: " + "; ".join(fails)
    for row in rows:
        c = row["case"]
        sw, pl, df = row["switching"], row["plain"], row.get("default")
        ratios = lambda r: f"{r['steps'] / pl['steps']:.2f}, {r['wall'] / max(pl['wall'], 1e-9):.1f}"
        if df is None:
            dcols = "– | – | –"
        else:
            ran = "switching" if df["stats"].get("switching") else "plain"
            if df["stats"].get("switching_fallback"):
                ran = "plain after fallback"
            dcols = f"{ran} | {ratios(df)} | {verdict(row.get('check_default', []))}"
        ref = row["reference"]
        mark = "" if ref["ok"] and ref["kind"] == "filippov" else (" (ref: switching)" if ref["ok"] else " (no ref)")
        lines.append(
            f"| {c['name']}{mark} | {c['n'] * c['width']:,} | {c['rtol']:.0e} | {_short(pl)} | {_short(sw)} | "
            f"{ratios(sw)} | {verdict(row['check'])} | {dcols} |"
        )
    return "\n".join(lines)


def write(rows, out):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary(rows)}, indent=1))
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        keys = ("status", "t", "accepted", "rejected", "grad_evals", "wall", "error")
        solves = [k for k, _ in SOLVES]
        w.writerow(["case", "reference"] + [f"{s}_{k}" for s in solves for k in keys]
                   + ["default_ran_switching", "default_stalled", "rule", "rule_default"])
        for r in rows:
            df = r.get("default", {"stats": {}})
            w.writerow([r["case"]["name"], r["reference"]["kind"] if r["reference"]["ok"] else "none"]
                       + [r.get(s, {}).get(k) for s in solves for k in keys]
                       + [df["stats"].get("switching"), df["stats"].get("switching_fallback"),
                          "; ".join(r["check"]) or "ok", "; ".join(r.get("check_default", [])) or "ok"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small default subset")
    parser.add_argument("--cases", default="", help="comma-separated case names (see CASES)")
    parser.add_argument("--out", type=Path, default=Path("results/stress/stress.json"))
    parser.add_argument("--refs", type=Path, default=Path("results/stress/refs"), help="reference cache folder")
    parser.add_argument("--no-reference", action="store_true", help="skip the references (no errors)")
    parser.add_argument("--reuse-default", action="store_true",
                        help="copy the default solve's row from the solve it runs (`default_is`) instead of running it")
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="no solves: merge the rows of these JSON files (runs split over processes) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        rows = {}
        for path in args.merge:
            for row in json.loads(Path(path).read_text())["rows"]:
                rows[row["case"]["name"]] = row  # a later file's row of a case wins
        rows = [rows[name] for name in CASES if name in rows]
        write(rows, args.out)
        print(table(rows))
        print(rule_table(rows))
        print(json.dumps(summary(rows), indent=1))
        return rows
    if args.cases:
        unknown = set(args.cases.split(",")) - set(CASES)
        if unknown:
            parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
        cases = [CASES[name] for name in args.cases.split(",")]
    else:
        cases = [c for c in CASES.values() if c.quick or not args.quick]
    rows = []
    for case in cases:
        rows.append(run_case(case, args.refs, log=lambda m: print(m, flush=True),
                             with_reference=not args.no_reference, reuse_default=args.reuse_default))
        write(rows, args.out)  # partial results survive an interrupted run
    print(table(rows))
    print(json.dumps(summary(rows), indent=1))
    return rows


if __name__ == "__main__":
    main()

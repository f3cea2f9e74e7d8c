"""Verdict records shared by the paper studies: one row per claim, with the measured value, the
prediction, the tolerance and pass/fail, written as JSON and as a markdown table."""

import json
import os
from pathlib import Path


def verdict(experiment, claim, measured, predicted, tolerance, passed):
    """One claim's verdict."""
    return {
        "experiment": experiment,
        "claim": claim,
        "measured": measured,
        "predicted": predicted,
        "tolerance": tolerance,
        "pass": bool(passed),
    }


def markdown_table(verdicts):
    """The verdicts as a markdown table."""
    rows = ["| exp | claim | measured | predicted | tolerance | pass |", "|---|---|---|---|---|---|"]
    rows += [
        f"| {v['experiment']} | {v['claim']} | {v['measured']} | {v['predicted']} | {v['tolerance']} "
        f"| {'yes' if v['pass'] else 'NO'} |"
        for v in verdicts
    ]
    return "\n".join(rows) + "\n"


def jsonable(x):
    """JSON fallback for arrays and other values."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def write(out: Path, verdicts, summary):
    """verdicts.json, verdicts.md and summary.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdicts.json").write_text(json.dumps(verdicts, indent=2, default=jsonable))
    (out / "verdicts.md").write_text(markdown_table(verdicts))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=jsonable))


def exit_status(verdicts):
    """The rule for every study command: 1 if any verdict row fails, 0 otherwise."""
    return 0 if all(v["pass"] for v in verdicts) else 1


def register_study(subparsers, name, help, run, default_out, *, rtol=True):
    """A `gflow NAME [--quick] [--rtol R] [--out DIR]` subcommand that calls
    `run(out, quick=, rtol=) -> verdicts`, prints the verdict table and exits with
    `exit_status(verdicts)`. With `rtol=False` there is no --rtol and `run(out, quick=)`."""
    p = subparsers.add_parser(name, help=help)
    p.add_argument("--quick", action="store_true", help="small version in about a minute")
    if rtol:
        p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--out", type=Path, default=Path(default_out))

    def main(args) -> int:
        import jax

        # Compiled solves persist across runs (the tests' cache when run from the repository root).
        jax.config.update("jax_compilation_cache_dir", os.environ.get("GFLOW_JAX_CACHE", ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        kwargs = {"rtol": args.rtol} if rtol else {}
        verdicts = run(args.out, quick=args.quick, **kwargs)
        print(markdown_table(verdicts))
        print(f"wrote {args.out}/verdicts.json, verdicts.md, summary.json and figures")
        return exit_status(verdicts)

    p.set_defaults(func=main)

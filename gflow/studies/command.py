"""The one idiom of every study command: `register_study` makes `gflow NAME` (options --out,
--rtol, --quick, --parts and the study's own; the run, the printed table and the exit rule of
`gflow.studies.verdicts`), `parse_parts` reads --parts."""

import os
from pathlib import Path

from .verdicts import exit_status, markdown_table


def parse_parts(value, names) -> tuple:
    """The parts of a study named in `value` (comma-separated, in the order given; None: all of
    `names`). ValueError on a name not in `names` or an empty list."""
    if value is None:
        return tuple(names)
    got = tuple(name.strip() for name in value.split(","))
    bad = [name for name in got if name not in names]
    if bad or not got:
        raise ValueError(f"--parts takes comma-separated names of {', '.join(names)}, got {value!r}")
    return got


def register_study(subparsers, name, help, run, default_out, *, rtol=True, quick=True, parts=None, options=None):
    """The `gflow NAME` subcommand of a study, the one idiom of every study command.

    Options: --out DIR (default `default_out`); --rtol R, the solver's relative tolerance
    (default `rtol`, 1e-6 when True; no option when False or None); --quick when `quick`;
    --parts A,B,… when `parts` (the tuple of the study's part names; `run` gets `parts=` the
    chosen names, `parse_parts`, all of them by default); and whatever `options(parser)` adds.
    The command calls `run(out, **kwargs)`, kwargs being every other parsed option by its dest
    name (quick=, rtol=, parts=, the study's own), which returns the Verdicts (and writes them
    with `write`); it prints `markdown_table` and returns `exit_status`. A bad option value
    raises ValueError (`gflow.cli` prints it and exits 2)."""
    p = subparsers.add_parser(name, help=help)
    if quick:
        p.add_argument("--quick", action="store_true", help="small version in about a minute")
    if rtol is not None and rtol is not False:
        default = 1e-6 if rtol is True else float(rtol)
        p.add_argument("--rtol", type=float, default=default, help=f"solver rtol (default {default:g})")
    if parts:
        p.add_argument("--parts", type=str, help=f"comma-separated subset of {','.join(parts)} (default: all)")
    p.add_argument("--out", type=Path, default=Path(default_out), help=f"output directory (default {default_out})")
    if options is not None:
        options(p)

    def main(args) -> int:
        import jax

        kwargs = {k: v for k, v in vars(args).items() if k not in ("func", "command", "out")}
        if "rtol" in kwargs and not 0 < kwargs["rtol"] < 1e-3:
            raise ValueError(f"--rtol must lie in (0, 1e-3), got {kwargs['rtol']}")
        if parts:
            kwargs["parts"] = parse_parts(kwargs["parts"], parts)
        # Compiled solves persist across runs (the tests' cache when run from the repository root).
        jax.config.update("jax_compilation_cache_dir", os.environ.get("GFLOW_JAX_CACHE", ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        verdicts = run(args.out, **kwargs)
        print(markdown_table(verdicts))
        print(f"wrote {args.out}/verdicts.json, verdicts.md, summary.json, manifest.json and figures")
        return exit_status(verdicts)

    p.set_defaults(func=main)

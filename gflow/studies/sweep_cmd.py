"""`gflow sweep CONFIG.toml --out DIR`: run a grid of gradient flows (see `gflow.sweep`).

Shows a progress bar (points done, failures, ETA) and a one-line summary; the dataset goes to
`DIR/results.nc` (or `DIR/results.zarr` with `--format zarr`). Rerunning the same command
resumes an interrupted sweep (damaged chunk files are named and solved again); a changed config
or chunk size is refused, naming what changed, unless `--restart` starts over. The exit code is non-zero only when the sweep could not run (bad
config: 2); a failed trajectory is a result.
"""

from pathlib import Path


def register(subparsers):
    p = subparsers.add_parser("sweep", help="run a grid of gradient flows from a TOML config")
    p.add_argument("config", type=Path, help="TOML file: problem, [axes], [fixed], [solve]")
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--address", default=None, help="Dask scheduler address (default: LocalCluster)")
    p.add_argument("--workers", type=int, default=None,
                   help="chunks solved at once on threads by the local executor (default: cores)")
    p.add_argument("--chunk-size", type=int, default=None, help="points per chunk (default 4 × lanes, or 1 with one lane)")
    p.add_argument("--format", choices=("netcdf", "zarr"), default=None,
                   help="dataset format (default: zarr if DIR ends in .zarr, else netCDF)")
    p.add_argument("--balance", action="store_true",
                   help="plan chunks by a pilot solve's step counts (longest first, balanced chunks)")
    p.add_argument("--restart", action="store_true",
                   help="start over: delete the chunks of an earlier run in --out (a resume with a "
                   "changed config or chunk size is refused without it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=main)


def main(args) -> int:
    from .. import sweep

    sweep.run(
        sweep.load_spec(args.config),
        out=args.out,
        executor=args.executor,
        address=args.address,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
        resume=not args.restart,
        format=args.format,
        workers=args.workers,
        balance=args.balance,
    )
    return 0

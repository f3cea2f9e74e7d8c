"""The `gflow` command line. Each subcommand lives in a module of `gflow.studies` that defines
`register(subparsers)`; add a module to `_STUDIES` to add a command."""

import argparse
import importlib
import sys

_STUDIES = ("gflow.studies.single_run", "gflow.studies.sweep_cmd", "gflow.studies.alignment",
            "gflow.studies.boursier", "gflow.studies.kumar_haupt",
            "gflow.studies.condensation", "gflow.studies.hinge_meanfield")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gflow",
        description="Simulate neural-network training as the gradient-flow ODE dθ/dt = −∇L(θ).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _STUDIES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"gflow {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

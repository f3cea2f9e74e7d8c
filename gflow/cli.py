"""The `gflow` command line. Each subcommand lives in a module of `gflow.studies` that defines
`register(subparsers)`; the commands are discovered from that package (`study_modules`), so a new
study module is a new command with no change here."""

import argparse
import importlib
import pkgutil
import sys


def study_modules() -> list:
    """The modules of `gflow.studies` that define `register(subparsers)`, in name order."""
    from . import studies

    modules = [importlib.import_module(f"{studies.__name__}.{info.name}")
               for info in sorted(pkgutil.iter_modules(studies.__path__), key=lambda info: info.name)]
    return [module for module in modules if hasattr(module, "register")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gflow",
        description="Simulate neural-network training as the gradient-flow ODE dθ/dt = −∇L(θ).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in study_modules():
        module.register(subparsers)
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

"""The same as `gflow hinge-meanfield [--quick] [--out DIR]`; see gflow/studies/hinge_meanfield.py."""

import argparse
import sys

from gflow.studies import hinge_meanfield

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="experiments/hinge_meanfield.py")
    hinge_meanfield.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["hinge-meanfield", *sys.argv[1:]])
    sys.exit(args.func(args))

"""The same as `gflow condensation [--quick] [--out DIR]`; see gflow/studies/condensation.py."""

import argparse
import sys

from gflow.studies import condensation

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="experiments/condensation.py")
    condensation.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["condensation", *sys.argv[1:]])
    sys.exit(args.func(args))

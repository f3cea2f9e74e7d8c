"""Boursier & Flammarion (arXiv 2401.10791) experiments E2.1–E2.5: verdicts and figures.

    python experiments/boursier.py [--quick] [--out results/boursier]

The same as `gflow boursier`; the experiments live in `gflow.studies.boursier`.
"""

import sys

from gflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["boursier", *sys.argv[1:]]))

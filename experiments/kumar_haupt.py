"""Kumar & Haupt (arXiv 2402.09226, 2403.08121, 2502.15952) experiments C1–C4: verdicts and figures.

    python experiments/kumar_haupt.py [--quick] [--out results/kumar_haupt]

The same as `gflow kumar-haupt`; the experiments live in `gflow.studies.kumar_haupt`.
"""

import sys

from gflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["kumar-haupt", *sys.argv[1:]]))

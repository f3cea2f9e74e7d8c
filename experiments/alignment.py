"""Early neuron alignment (Min, Mallada & Vidal, ICLR 2024): the headline experiment.

A thin wrapper over `gflow align` (gflow/studies/alignment.py), e.g.

    python experiments/alignment.py                 # default grid (the `make demo` one)
    python experiments/alignment.py --full          # 5 seeds, n up to 256, t to 1e4, all digits
    python experiments/alignment.py --mnist DIR     # adds MNIST 0 vs 1 from local IDX files
    python experiments/alignment.py --full --parts n-scaling --ns 4,8,16,32,64   # one part

Writes results.nc, verdicts.json, verdicts.md, summary.json, manifest.json and figures into
--out (results/alignment).
"""

import sys

from gflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["align", *sys.argv[1:]]))

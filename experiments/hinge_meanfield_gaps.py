"""The full mode's two slow additions of `gflow hinge-meanfield`, by themselves: E3's network side
(N = 20,000, M = 400, d = 20, five α) and the finite-size study of E1/E4 (six (N, M)).
Writes verdicts.json, verdicts.md, summary.json and e3_network.png into --out; exits 1 if a
verdict fails. See gflow/studies/hinge_meanfield.py."""

import argparse
import sys
import time
from pathlib import Path

from gflow.studies import hinge_meanfield as hm
from gflow.studies import verdicts as verdicts_io

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="experiments/hinge_meanfield_gaps.py")
    parser.add_argument("--out", type=Path, default=Path("results/hinge_meanfield_gaps"))
    parser.add_argument("--part", choices=("e3-network", "finite-size", "both"), default="both")
    args = parser.parse_args()
    start = time.perf_counter()
    e3_net = hm.run_e3_network(N=20_000, d=20, M=400, alphas=hm.E3_NET_ALPHAS) if args.part != "finite-size" else ([], [])
    sizes = hm.run_finite_size(hm.FINITE_SIZES, d=20, t1=60.0) if args.part != "e3-network" else ([], [])
    verdicts = e3_net[0] + sizes[0]
    summary = {"wall_seconds": time.perf_counter() - start, "e3_network": e3_net[1], "finite_size": sizes[1]}
    verdicts_io.write(args.out, verdicts, summary)
    if e3_net[1]:
        hm.plot_e3_network(args.out, e3_net[1])
    sys.exit(verdicts_io.exit_status(verdicts))

"""Command-line studies: each module registers one `gflow` subcommand and writes its figures and
verdicts under `results/`. The `experiments/` scripts call the same functions."""

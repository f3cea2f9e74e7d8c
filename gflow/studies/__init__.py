"""Command-line studies: each module that defines `register(subparsers)` is one `gflow`
subcommand (found by `gflow.cli.study_modules`; a study registers with
`command.register_study`) and writes its figures and verdicts under `results/`. The
`experiments/` scripts call the same functions."""

"""Verdict records shared by the paper studies: one row per claim, with the measured value, the
prediction, the tolerance and pass/fail, written as JSON and as a markdown table."""

import json
from pathlib import Path


def verdict(experiment, claim, measured, predicted, tolerance, passed):
    """One claim's verdict."""
    return {
        "experiment": experiment,
        "claim": claim,
        "measured": measured,
        "predicted": predicted,
        "tolerance": tolerance,
        "pass": bool(passed),
    }


def markdown_table(verdicts):
    """The verdicts as a markdown table."""
    rows = ["| exp | claim | measured | predicted | tolerance | pass |", "|---|---|---|---|---|---|"]
    rows += [
        f"| {v['experiment']} | {v['claim']} | {v['measured']} | {v['predicted']} | {v['tolerance']} "
        f"| {'yes' if v['pass'] else 'NO'} |"
        for v in verdicts
    ]
    return "\n".join(rows) + "\n"


def jsonable(x):
    """JSON fallback for arrays and other values."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def write(out: Path, verdicts, summary):
    """verdicts.json, verdicts.md and summary.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdicts.json").write_text(json.dumps(verdicts, indent=2, default=jsonable))
    (out / "verdicts.md").write_text(markdown_table(verdicts))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=jsonable))

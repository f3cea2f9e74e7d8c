"""The verdict of a paper study: one `Verdict` row per claim, written beside a run manifest.

Every study command writes into its output directory

- ``verdicts.json``: the rows (`Verdict.to_json` each), ``verdicts.md``: the same as a table,
- ``summary.json``: the study's numbers behind the rows (fits, per-run records),
- ``manifest.json``: what produced them (gflow revision and dirty flag, command line, seeds,
  package versions, wall time, UTC date; `manifest`),

and exits by one rule (`exit_status`): 1 if any row is ``fail`` or a *headline* row is
``not-applicable``, else 0 (the command itself is `gflow.studies.command.register_study`).
A not-applicable row says that the claim's premise was absent (no neuron condensed, so there is
nothing to count); it never passes. It fails the exit only on a
headline row, the claim the study exists to test; other not-applicable rows are listed under the
table (`markdown_table`) so that they cannot pass silently.

Each row names the basis of its criterion: ``paper`` (the paper's statement), ``derivation``
(our derivation from the paper's model), ``pilot`` (a threshold set from pilot numerics) or
``reconstructed`` (a bound or constant that the paper states only up to O(·), reconstructed by
us; such a row reports the measured ratio to it and is not a theorem check).
"""

import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BASES = ("paper", "derivation", "pilot", "reconstructed")
OUTCOMES = ("pass", "fail", "not-applicable")


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict.

    Attributes:
        experiment: the experiment's label in the study (e.g. "E1.1", "D2").
        claim: what the paper says, in its words where possible, with the citation.
        quantity: what was measured (e.g. "log-log slope of t_align against μ").
        measured: the measured value (a float, a short string for lists or counts, or None
            when nothing could be measured).
        uncertainty: its uncertainty, e.g. "95% CI [a, b] over 5 seeds", or None.
        criterion: the test applied to `measured`, e.g. "95% CI inside [−0.6, −0.4]".
        basis: where the criterion comes from: one of `BASES`.
        outcome: "pass", "fail" or "not-applicable" (`OUTCOMES`).
        reason: why the row is not applicable (required then), or a note.
        headline: the claim the study exists to test: not-applicable fails the exit.
        details: further numbers behind the row (JSON-serialisable).
    """

    experiment: str
    claim: str
    quantity: str
    measured: float | str | None
    uncertainty: str | None
    criterion: str
    basis: str
    outcome: str
    reason: str = ""
    headline: bool = False
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}, got {self.basis!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.outcome == "not-applicable" and not self.reason:
            raise ValueError(f"a not-applicable verdict needs its reason ({self.experiment}: {self.claim})")

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_json(self) -> dict:
        """The row as a JSON-ready dict (numpy values converted)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=jsonable))

    @classmethod
    def from_json(cls, d: dict) -> "Verdict":
        """The inverse of `to_json`."""
        return cls(**d)


def check(experiment, claim, quantity, measured, criterion, passed, *, basis, uncertainty=None,
          premise=True, premise_reason="", headline=False, details=None) -> Verdict:
    """The verdict of `claim`: "pass" if `passed`, "fail" if not, and "not-applicable" with
    `premise_reason` when `premise` is False, whatever `passed` says.

    `passed` and `premise` must be booleans (Python or numpy): a NaN or an array is a bug in the
    criterion, not an outcome. A measured numpy scalar is stored as a Python float."""
    for name, flag in (("passed", passed), ("premise", premise)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{experiment}: {name} must be a boolean, got {flag!r} ({type(flag).__name__})")
    if not premise and not premise_reason:
        raise ValueError(f"{experiment}: a claim without its premise needs premise_reason")
    if isinstance(measured, (np.floating, np.integer)):
        measured = float(measured)
    if not premise:
        outcome, reason = "not-applicable", premise_reason
    else:
        outcome, reason = ("pass" if passed else "fail"), ""
    return Verdict(experiment, claim, quantity, measured, uncertainty, criterion, basis, outcome, reason,
                   bool(headline), dict(details or {}))


def _rows(verdicts) -> list:
    """`verdicts` as a list, TypeError on anything that is not a `Verdict` (build rows with `check`)."""
    rows = list(verdicts)
    for v in rows:
        if not isinstance(v, Verdict):
            raise TypeError(f"a study's rows are Verdicts (built by check), got {type(v).__name__}: {v!r}")
    return rows


def _cell(x):
    if isinstance(x, float):
        return f"{x:.4g}"
    return "" if x is None else str(x).replace("|", "\\|")


def markdown_table(verdicts) -> str:
    """The rows as a markdown table, then one line per not-applicable row with its reason."""
    rows = _rows(verdicts)
    lines = ["| exp | claim | quantity | measured | uncertainty | criterion | basis | outcome |",
             "|---|---|---|---|---|---|---|---|"]
    for v in rows:
        outcome = {"pass": "pass", "fail": "**FAIL**", "not-applicable": "n/a"}[v.outcome]
        lines.append("| " + " | ".join(_cell(x) for x in (
            v.experiment + (" (headline)" if v.headline else ""), v.claim, v.quantity, v.measured,
            v.uncertainty, v.criterion, v.basis)) + f" | {outcome} |")
    na = [v for v in rows if v.outcome == "not-applicable"]
    if na:
        lines.append("")
        lines += [f"- not applicable: {v.experiment}, {v.quantity}: {v.reason}" for v in na]
    counts = {o: sum(v.outcome == o for v in rows) for o in OUTCOMES}
    lines += ["", f"{counts['pass']} pass, {counts['fail']} fail, {counts['not-applicable']} not applicable; "
                  f"exit status {exit_status(rows)}"]
    return "\n".join(lines) + "\n"


def jsonable(x):
    """JSON fallback for numpy arrays and scalars, paths and other values."""
    if isinstance(x, np.generic):
        return x.item()
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _git(*args):
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True).stdout


def manifest(*, seeds=(), wall_seconds=None, argv=None) -> dict:
    """What produced a verdict: the gflow git revision (`git rev-parse HEAD` of the source tree,
    "unknown" outside a git checkout) and whether tracked files differ from it ("dirty"; None
    when unknown), the command line (`sys.argv`), the seeds, the versions of gflow, jax, jaxlib,
    diffrax and numpy, the wall time in seconds and the UTC date."""
    from importlib import metadata

    try:
        revision = _git("rev-parse", "HEAD").strip()
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        revision, dirty = "unknown", None
    versions = {}
    for package in ("gflow", "jax", "jaxlib", "diffrax", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "revision": revision,
        "dirty": dirty,
        "argv": list(sys.argv if argv is None else argv),
        "seeds": [int(s) for s in seeds],
        "versions": versions,
        "wall_seconds": None if wall_seconds is None else float(wall_seconds),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(out: Path, verdicts, summary, *, seeds=(), wall_seconds=None):
    """verdicts.json, verdicts.md, summary.json and manifest.json (`manifest`) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [v.to_json() for v in _rows(verdicts)]
    (out / "verdicts.json").write_text(json.dumps(rows, indent=2, default=jsonable))
    (out / "verdicts.md").write_text(markdown_table(verdicts))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=jsonable))
    if wall_seconds is None and isinstance(summary, dict):
        wall_seconds = summary.get("wall_seconds")
    (out / "manifest.json").write_text(json.dumps(manifest(seeds=seeds, wall_seconds=wall_seconds), indent=2))


def read(out: Path) -> list:
    """The Verdicts of `out/verdicts.json`."""
    return [Verdict.from_json(d) for d in json.loads((Path(out) / "verdicts.json").read_text())]


def exit_status(verdicts) -> int:
    """The exit rule of every study command: 1 if any row fails or a headline row is not
    applicable (its premise absent: the study did not test its claim), 0 otherwise."""
    rows = _rows(verdicts)
    bad = any(v.outcome == "fail" or (v.headline and v.outcome == "not-applicable") for v in rows)
    return 1 if bad else 0



"""Every ```python block of README.md and docs/*.md runs as written, each on its own, in a fresh
namespace with an empty temporary directory as the working directory; every ```toml block is a
valid config (`gflow sweep` when it names a `problem`, else `gflow run --config`).

A block that is deliberately not runnable is preceded, on the line just above its fence, by
`<!-- not-run: the reason -->`; it is then reported as skipped with that reason.
"""

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPENING = re.compile(r"^[ \t]*```python[ \t]*$", re.M)


def fenced(language):
    """A fenced code block in `language`: its indentation and its code."""
    return re.compile(rf"^(?P<indent>[ \t]*)```{language}[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


BLOCK, TOML = fenced("python"), fenced("toml")
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>\S.*?)\s*-->")


def python_blocks(path):
    """(line number of the fence, code, reason not to run it or None) for each block in `path`."""
    text = path.read_text()
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].rstrip("\n").rpartition("\n")[2]
        marked = NOT_RUN.search(above)
        yield line, textwrap.dedent(match["code"]), marked and marked["reason"]


def _params():
    for path in DOCS:
        for line, code, reason in python_blocks(path):
            marks = [pytest.mark.skip(reason=f"marked not-run: {reason}")] if reason else []
            yield pytest.param(code, id=f"{path.relative_to(ROOT)}:{line}", marks=marks)


@pytest.mark.parametrize("code", list(_params()))
def test_python_block_runs_as_written(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc block>", "exec"), {"__name__": "__main__"})


def test_every_python_block_is_found():
    """Each ```python fence opens a block the test runs (none lost to a missing closing fence),
    and the examples named in issue 20 are among them."""
    found = {}
    for path in DOCS:
        blocks = list(python_blocks(path))
        assert len(blocks) == len(OPENING.findall(path.read_text())), f"{path}: a python block is not closed"
        found[path.relative_to(ROOT).as_posix()] = blocks
    readme = "".join(code for _, code, _ in found["README.md"])
    assert "def loss(params):" in readme and "gflow.simulate(loss, params0" in readme
    assert any("sweep.Spec(" in code for _, code, _ in found["docs/sweeps.md"])


def test_toml_blocks_are_valid_configs(tmp_path):
    from gflow import _toml, sweep
    from gflow.studies import single_run

    blocks = [textwrap.dedent(m["code"]) for path in DOCS for m in TOML.finditer(path.read_text())]
    assert blocks, "docs/sweeps.md shows a sweep config"
    for k, text in enumerate(blocks):
        path = tmp_path / f"block{k}.toml"
        path.write_text(text)
        if "problem" in _toml.read(path):
            sweep.load_spec(path)
        else:
            single_run.load_config(path)

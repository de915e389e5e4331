"""README's examples run as written: every `$ command` line in a bash block of README.md is
executed (from a scratch directory holding a copy of the README and of docs/examples/, the
files its examples name), and the lines shown after
it must appear in what it prints, in the README's order, `...` standing for any text
(whitespace and line breaks are not compared). An example that rots fails here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

README = REPO / "README.md"


def examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every `$ ` line in the README's bash blocks."""
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        current: list[str] | None = None  # a block's lines before its first `$ ` are not output
        for line in block.splitlines():
            if line.startswith("$ "):
                current = []
                out.append((line[2:], current))
            elif current is not None and line.strip() and not line.startswith("#"):
                current.append(line)
    return out


def find(expected: str, output: str, start: int) -> int:
    """Where `expected` (`...` standing for any text) ends in `output` from `start` on; -1
    when it is not there."""
    pattern = ".*?".join(re.escape(part.strip()) for part in expected.split("..."))
    match = re.compile(pattern).search(output, start)
    return match.end() if match else -1


EXAMPLES = examples(README.read_text())


def test_the_readme_has_examples_to_run():
    assert len(EXAMPLES) >= 5 and all(expected for _, expected in EXAMPLES)


@pytest.mark.parametrize("command, expected", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_readme_example_prints_what_the_readme_shows(command, expected, tmp_path):
    shutil.copy(README, tmp_path / "README.md")
    shutil.copytree(REPO / "docs" / "examples", tmp_path / "docs" / "examples")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "WANDB_MODE": "disabled",
    }
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    # whitespace collapsed: rich and loggers wrap long lines where the README does not
    output, at = " ".join((done.stdout + done.stderr).split()), 0
    for line in expected:  # in the README's order
        at = find(" ".join(line.split()), output, at)
        assert at >= 0, f"{line!r} not in the output of {command!r} (after the lines before it):\n{output[-3000:]}"

"""README's examples run as written: every `$ command` line in a bash block of README.md is
executed (from a scratch directory holding a copy of the README), and the lines shown after
it must appear in what it prints, in order within a line, `...` standing for any text. An
example that rots fails here."""

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


def shown_in(expected: str, output: str) -> bool:
    pattern = ".*?".join(re.escape(part.strip()) for part in expected.split("..."))
    return re.search(pattern, output) is not None


EXAMPLES = examples(README.read_text())


def test_the_readme_has_examples_to_run():
    assert len(EXAMPLES) >= 5 and all(expected for _, expected in EXAMPLES)


@pytest.mark.parametrize("command, expected", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_readme_example_prints_what_the_readme_shows(command, expected, tmp_path):
    shutil.copy(README, tmp_path / "README.md")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "WANDB_MODE": "disabled"}
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = " ".join((done.stdout + done.stderr).split())  # rich and loggers wrap long lines
    for line in expected:
        assert shown_in(" ".join(line.split()), output), f"{line!r} not in the output of {command!r}:\n{output[-3000:]}"

"""A function in harness/ is at most 60 lines, so that it can be read at once; ruff's size and
complexity rules (pyproject.toml) count statements and branches, not lines."""

from __future__ import annotations

import ast
import textwrap

from .conftest import REPO

MAX_LINES = 60


def _long_functions(source: str, path: str) -> list[str]:
    """Each function and method of `source` longer than MAX_LINES, from its `def` to its last
    line (decorators left out, docstring counted), as path:line name (n lines)."""
    return [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


def test_no_function_in_harness_is_over_60_lines():
    long = [
        line
        for path in sorted((REPO / "harness").rglob("*.py"))
        for line in _long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert not long, "over 60 lines, split by what each part does:\n" + "\n".join(long)


def test_the_count_runs_from_def_to_last_line():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES - 1))  # with its def, MAX_LINES lines
    assert _long_functions(f"@decorated\ndef fits():\n{body}", "f.py") == []
    method = textwrap.indent(f"def over(self):\n{body}    y = 0\n", "    ")
    assert _long_functions(f"class C:\n{method}", "f.py") == [f"f.py:2 over ({MAX_LINES + 1} lines)"]

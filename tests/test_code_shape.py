"""The package's shape rules that a reader relies on (CONTRIBUTING.md, "Habits"): no function over 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "constrained_diffusion"
LONGEST = 60


def _lengths(root: Path) -> list[tuple[int, str]]:
    """``(lines, "file:qualified name")`` of every function and method under ``root`` (docstrings included)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        found.append((child.end_lineno - child.lineno + 1, f"{path.relative_to(root).as_posix()}:{name}"))
                    stack.append((child, name + "."))
                else:
                    stack.append((child, prefix))
    return found


def test_no_function_is_over_60_lines():
    long = sorted((n, where) for n, where in _lengths(PACKAGE) if n > LONGEST)
    assert long == [], f"split these into named steps: {long}"


def test_the_counter_counts_methods_and_nested_functions(tmp_path):
    (tmp_path / "m.py").write_text("class A:\n    def f(self):\n        def g():\n            pass\n        return g\n")
    assert sorted(_lengths(tmp_path)) == [(2, "m.py:A.f.g"), (4, "m.py:A.f")]

"""Docstring examples are in an ``Examples:`` section, which mkdocstrings renders as code.

Under Google style, ``Example:`` (singular) becomes an admonition whose ``>>>`` lines render as
nested blockquotes with the code run together; ``Examples:`` renders them as code blocks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SINGULAR = re.compile(r"^\s*Example:\s*$", re.MULTILINE)


def _docstrings(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", "<module>"), doc


def test_no_docstring_has_a_singular_example_section():
    files = sorted([*(ROOT / "constrained_diffusion").rglob("*.py"), *ROOT.glob("plugins/*/src/**/*.py")])
    assert len(files) > 50
    bad = [f"{path.relative_to(ROOT)}: {name}" for path in files for name, doc in _docstrings(path) if SINGULAR.search(doc)]
    assert not bad, "use an 'Examples:' section (mkdocstrings renders 'Example:' >>> lines as blockquotes):\n" + "\n".join(bad)

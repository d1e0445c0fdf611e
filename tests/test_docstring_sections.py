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


def _files() -> list[Path]:
    return sorted([*(ROOT / "constrained_diffusion").rglob("*.py"), *ROOT.glob("plugins/*/src/**/*.py")])


def test_every_docstring_example_is_in_an_examples_section():
    bad = []
    for path in _files():
        for name, doc in _docstrings(path):
            lines = doc.splitlines()
            first = next((i for i, line in enumerate(lines) if line.lstrip().startswith(">>>")), None)
            if first is not None and not any(re.match(r"^\s*Examples?:\s*$", line) for line in lines[:first]):
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, "put '>>>' examples under an 'Examples:' header (else they render as nested blockquotes):\n" + "\n".join(bad)


def test_no_docstring_has_a_singular_example_section():
    files = _files()
    assert len(files) > 50
    bad = [f"{path.relative_to(ROOT)}: {name}" for path in files for name, doc in _docstrings(path) if SINGULAR.search(doc)]
    assert not bad, "use an 'Examples:' section (mkdocstrings renders 'Example:' >>> lines as blockquotes):\n" + "\n".join(bad)

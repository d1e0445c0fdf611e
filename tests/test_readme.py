"""Every python snippet of README.md runs as written, in order, in one namespace (as a reader pastes them)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ```python blocks of a markdown text, in order (indentation of list items removed)."""
    blocks = []
    for match in re.finditer(r"^( *)```python\n(.*?)^\1```", text, re.DOTALL | re.MULTILINE):
        indent = len(match.group(1))
        blocks.append("\n".join(line[indent:] for line in match.group(2).splitlines()))
    return blocks


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    assert torch.isfinite(namespace["result"].images).all()
    assert namespace["result"].nfe > 0


def test_readme_points_at_nothing_outside_the_repository():
    text = README.read_text()
    root = README.parent
    assert "../" not in text and "shared/DESIGN" not in text
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if "://" not in target:
            assert (root / target).exists(), f"README links to {target}, which is not in the repository"

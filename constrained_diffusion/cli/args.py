"""Argument types shared by the sub-commands (each rejects bad values with a one-line error)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def positive_int(text: str) -> int:
    """An integer ``>= 1``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer ``>= 0``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-markdown table (also readable in a terminal)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def replace_block(path: Path, name: str, content: str) -> None:
    """Replace the text between ``<!-- NAME:START -->`` and ``<!-- NAME:END -->`` in ``path``."""
    start, end = f"<!-- {name}:START -->", f"<!-- {name}:END -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"--write-docs: {path} has no {start} ... {end} block")
    block = f"{start}\n{content}\n{end}"
    path.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S))


def summary(doc: str | None) -> str | None:
    """First line of a module docstring, without reST literal markers, for ``--help``."""
    return doc.splitlines()[0].replace("``", "") if doc else None

"""Tables and generated documentation blocks: how every measurement is printed and written into the docs.

`format_table` lays rows out as a GitHub-markdown table (also readable in a terminal); a page
of the docs keeps generated text between ``<!-- NAME:START -->`` and ``<!-- NAME:END -->``,
which `replace_block` rewrites (the commands' ``--write-docs PAGE``).

Examples:
    >>> print(format_table(["method", "PSNR"], [["dps", "21.3"], ["inexact-newton", "24.0"]]))
    | method         | PSNR |
    |----------------|------|
    | dps            | 21.3 |
    | inexact-newton | 24.0 |
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["check_block", "format_table", "replace_block", "write_block"]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-markdown table (also readable in a terminal): ``header`` and ``rows`` of cells, columns padded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def check_block(path: Path, name: str) -> str:
    """The text of ``path``, which must hold the block ``<!-- NAME:START -->`` ... ``<!-- NAME:END -->``.

    A command that writes its table into the docs calls it before its run, so a wrong page or
    block name stops it at once, not after the run.

    Raises:
        ValueError: ``path`` cannot be read, or has no such block (naming ``--write-docs`` and ``--block``).
    """
    start, end = f"<!-- {name}:START -->", f"<!-- {name}:END -->"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"--write-docs: cannot read {path} ({exc.strerror or exc})") from None
    if start not in text or end not in text:
        raise ValueError(f"--write-docs: {path} has no {start} ... {end} block (--block {name})")
    return text


def replace_block(path: Path, name: str, content: str) -> None:
    """Replace the text between ``<!-- NAME:START -->`` and ``<!-- NAME:END -->`` in ``path``.

    Raises:
        ValueError: ``path`` has no such block (`check_block`).
    """
    start, end = f"<!-- {name}:START -->", f"<!-- {name}:END -->"
    text = check_block(path, name)
    block = f"{start}\n{content}\n{end}"
    from constrained_diffusion.utils.safe_io import write_text

    write_text(path, re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S))  # atomically


def write_block(path: Path, name: str, content: str) -> None:
    """`replace_block`, then print ``updated PATH``."""
    replace_block(path, name, content)
    print(f"updated {path}")

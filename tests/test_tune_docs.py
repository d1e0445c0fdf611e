"""The docs page "Tuning and fair comparisons" lists the search spaces `tune --help` prints, and every figure it shows exists."""

from __future__ import annotations

import re
from pathlib import Path

from constrained_diffusion.cli.tune import spaces_epilog

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tuning.md"


def test_the_docs_list_the_search_spaces_the_methods_declare():
    block = re.search(r"<!-- TUNING-SPACES:START -->\n```\n(.*?)\n```\n<!-- TUNING-SPACES:END -->", PAGE.read_text(), re.S)
    assert block is not None
    assert block.group(1) == spaces_epilog(), "regenerate the TUNING-SPACES block of docs/tuning.md from `tune --help`"


def test_every_figure_the_page_shows_is_committed_and_small():
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", PAGE.read_text()):
        path = PAGE.parent / target
        assert path.is_file(), target
        assert path.stat().st_size < 300_000, f"{target} is over 300 kB"

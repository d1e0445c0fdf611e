"""Griffe extension used by the documentation build only.

The package's docstrings are Google style but refer to objects with reStructuredText roles
(``:class:`Solver```, ``:meth:`~pkg.Cls.meth```). Markdown has no such roles, so they would
render literally. This extension rewrites each role to an inline code span before the
docstring is parsed: ``:class:`~a.b.C``` -> ```C```, ``:meth:`C.m``` -> ```C.m```. It also
drops the second colon of reST's literal-block marker (``grid::`` -> ``grid:``); the indented
block that follows is already a Markdown code block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_LITERAL_MARKER = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|obj|exc|const):`(~?)([^`]+)`")


def _replace(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Turn reST cross-reference roles in docstrings into Markdown code spans."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(_replace, obj.docstring.value)
            obj.docstring.value = _LITERAL_MARKER.sub(r"\1:", text)

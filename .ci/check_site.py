"""Check a built documentation site (``mkdocs build -d SITE``) the way a reader would see it.

Parses every HTML page with ``html.parser`` (no browser) and fails, listing every problem, on:

* raw TeX in a heading or in the table of contents: ``\\(``, ``\\[`` or ``$`` outside a
  MathJax ``arithmatex`` span (the TOC is never typeset, so math there shows as source);
* a broken local link: an ``href`` or ``src`` to a file that is not in the site;
* the garbled docstring example: blockquotes nested three deep, or ``>>>`` outside
  ``<pre>``/``<code>`` (mkdocstrings renders an ``Example:`` section's ``>>>`` lines as
  triple-nested blockquotes with the code run together into one paragraph);
* a resource from outside the site (a stylesheet, script, font or preconnect to ``http(s)://``),
  and pages with formulas but no MathJax shipped.

Usage: ``python .ci/check_site.py SITE`` (exit status 1 and one line per problem).
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
RAW_TEX = ("\\(", "\\[", "$")
MATHJAX = "javascripts/mathjax/es5/tex-mml-chtml.js"


class Page(HTMLParser):
    """One page's headings, TOC labels, links, stray ``>>>`` and external resources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.headings: list[str] = []
        self.toc: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self.prompts: list[str] = []
        self.math = False
        self._heading: list[str] | None = None
        self._toc: list[str] | None = None
        self._math_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag in ("br", "img", "link", "meta", "input", "hr", "source"):  # void elements: not pushed
            self._resource(tag, a)
            return
        self.stack.append((tag, a))
        self._resource(tag, a)
        if tag == "blockquote" and sum(t == "blockquote" for t, _ in self.stack) == 3:
            self.prompts.append("<blockquote> nested three deep")
        if "arithmatex" in classes:
            self.math = True
            self._math_depth += 1
        if tag in HEADINGS:
            self._heading = []
        if tag == "a" and "md-nav__link" in classes and any("md-nav--secondary" in t[1].get("class", "") for t in self.stack):
            self._toc = []

    def _resource(self, tag: str, a: dict[str, str]) -> None:
        for key in ("href", "src"):
            if key in a:
                url = a[key]
                scheme = urlsplit(url).scheme
                if scheme in ("http", "https") or url.startswith("//"):
                    loads = tag == "link" and any(r in a.get("rel", "") for r in ("stylesheet", "preconnect", "preload", "icon"))
                    if tag in ("script", "img", "source", "iframe") or loads:
                        self.external.append(f"<{tag} {key}={url}>")
                elif not scheme and not url.startswith("#"):
                    self.links.append(url)

    def handle_endtag(self, tag: str) -> None:
        if all(t != tag for t, _ in self.stack):  # a stray end tag
            return
        while self.stack:
            t, a = self.stack.pop()
            if "arithmatex" in a.get("class", "").split():
                self._math_depth -= 1
            if t in HEADINGS and self._heading is not None:
                self.headings.append("".join(self._heading).replace("¶", "").strip())
                self._heading = None
            if t == "a" and self._toc is not None:
                self.toc.append("".join(self._toc).strip())
                self._toc = None
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._heading is not None and self._math_depth == 0:
            self._heading.append(data)
        if self._toc is not None:
            self._toc.append(data)
        in_code = any(t in ("pre", "code", "script", "style", "textarea") for t, _ in self.stack)
        if ">>>" in data and not in_code:
            self.prompts.append(data.strip()[:60])


def check_page(site: Path, path: Path) -> list[str]:
    """The problems of one page (``path`` inside ``site``)."""
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    where = path.relative_to(site).as_posix()
    problems = []
    for text in page.headings:
        if any(t in text for t in RAW_TEX):
            problems.append(f"{where}: raw TeX in heading {text!r}")
    for text in page.toc:
        if any(t in text for t in RAW_TEX):
            problems.append(f"{where}: raw TeX in the table of contents {text!r}")
    for text in page.prompts:
        problems.append(f"{where}: '>>>' outside a code block (a garbled docstring example?): {text!r}")
    for resource in page.external:
        problems.append(f"{where}: loads {resource} from outside the site")
    for url in page.links:
        target = unquote(urlsplit(url).path)
        if not target:
            continue
        file = (site / target.lstrip("/")) if target.startswith("/") else (path.parent / target)
        if target.endswith("/") or file.is_dir():
            file = file / "index.html"
        if not file.resolve().is_file():
            problems.append(f"{where}: broken link {url!r}")
    if page.math and not (site / MATHJAX).is_file():
        problems.append(f"{where}: has formulas but the site has no {MATHJAX}")
    return problems


def check_site(site: Path) -> list[str]:
    """The problems of every page of the built ``site``."""
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no HTML pages (build the site first: mkdocs build -d {site})"]
    return [p for path in pages for p in check_page(site, path)]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python .ci/check_site.py SITE", file=sys.stderr)
        return 2
    site = Path(argv[0])
    problems = check_site(site)
    for line in problems:
        print(line)
    print(f"checked {len(list(site.rglob('*.html')))} pages of {site}: {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The documentation site as a reader sees it: the checker CI runs on the built site, the gallery cards, TOC labels, MathJax.

CI builds the site (``mkdocs build --strict``) and runs ``.ci/check_site.py`` on it; these tests
check that checker on small pages, and the sources it depends on, without building anything.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_site = _load("check_site", ROOT / ".ci" / "check_site.py")
gallery = _load("examples_gallery_site", ROOT / "examples" / "_gallery.py")

GOOD = """<html><head><link rel="stylesheet" href="../assets/site.css"><script src="../javascripts/mathjax/es5/tex-mml-chtml.js"></script></head>
<body><h2 id="a">Inexact Newton: <span class="arithmatex">\\(d = Je\\)</span><a class="headerlink" href="#a">¶</a></h2>
<nav class="md-nav md-nav--secondary"><ul><li><a href="#a" class="md-nav__link"><span>Inexact Newton: d = Je</span></a></li></ul></nav>
<p>See <a href="../other/">other</a> and <a href="https://example.org/x">a site</a>; <code>&gt;&gt;&gt; x</code></p>
<pre><code>&gt;&gt;&gt; 1 + 1
2</code></pre><blockquote><p>a quote</p></blockquote></body></html>"""


def _site(tmp_path: Path, html: str, mathjax: bool = True) -> Path:
    site = tmp_path / "site"
    (site / "page").mkdir(parents=True)
    (site / "other").mkdir()
    (site / "other" / "index.html").write_text("<html><body><h1>Other</h1></body></html>")
    (site / "assets").mkdir()
    (site / "assets" / "site.css").write_text("")
    (site / "page" / "index.html").write_text(html)
    if mathjax:
        (site / "javascripts" / "mathjax" / "es5").mkdir(parents=True)
        (site / "javascripts" / "mathjax" / "es5" / "tex-mml-chtml.js").write_text("")
    return site


def test_a_clean_page_passes(tmp_path):
    assert check_site.check_site(_site(tmp_path, GOOD)) == []


LINK = '<a href="https://example.org/x">'


@pytest.mark.parametrize("old,new,needle", [
    ("<span>Inexact Newton: d = Je</span>", "<span>Inexact Newton: \\(d = Je\\)</span>", "raw TeX in the table of contents"),
    (LINK, '<a href="../missing/">', "broken link '../missing/'"),
    (LINK, '<img src="figures/missing.png">', "broken link 'figures/missing.png'"),
    (LINK, '<script src="https://cdn.example.org/mathjax.js"></script>', "from outside the site"),
    (LINK, '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">', "from outside the site"),
])
def test_each_problem_is_reported(tmp_path, old, new, needle):
    problems = check_site.check_site(_site(tmp_path, GOOD.replace(old, new)))
    assert len(problems) == 1 and needle in problems[0], problems


def test_raw_tex_in_a_heading_and_the_garbled_docstring_example_are_reported(tmp_path):
    raw = GOOD.replace('<span class="arithmatex">\\(d = Je\\)</span>', "\\(d = Je\\)")
    assert any("raw TeX in heading" in p for p in check_site.check_site(_site(tmp_path / "a", raw)))
    garbled = GOOD.replace("<blockquote><p>a quote</p></blockquote>",
                           '<details class="example"><blockquote><blockquote><blockquote><p>import torch\nx = 1</p>'
                           "</blockquote></blockquote></blockquote></details>")
    assert any("nested three deep" in p for p in check_site.check_site(_site(tmp_path / "b", garbled)))
    prompt = GOOD.replace("<p>a quote</p>", "<p>&gt;&gt;&gt; x = 1</p>")
    assert any("'>>>' outside a code block" in p for p in check_site.check_site(_site(tmp_path / "c", prompt)))
    assert any("has formulas but the site has no" in p for p in check_site.check_site(_site(tmp_path / "d", GOOD, mathjax=False)))


def test_ci_runs_the_checker_on_the_built_site():
    ci = (ROOT / ".ci" / "run").read_text()
    build = re.search(r'mkdocs build --strict -d "\$(\w+)"', ci)
    assert build, "CI must build the site into a folder it then checks"
    assert f'python .ci/check_site.py "${build.group(1)}"' in ci


def test_headings_with_math_get_plain_toc_labels():
    text = "## Why $Je$ and $J^\\top e$ agree\n```\n## $x$ in code\n```\n## Done { data-toc-label=\"x\" }\n### Plain\n"
    out = gallery.toc_labels(text)
    assert '## Why $Je$ and $J^\\top e$ agree { data-toc-label="Why Je and Jᵀ e agree" }' in out
    assert "## $x$ in code\n" in out and out.count("data-toc-label") == 2 and "### Plain\n" in out
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if re.match(r"^#{1,6} .*\$", line):
                assert "data-toc-label" in line, f"{page.relative_to(ROOT)}: give {line!r} a plain toc label"


def test_the_gallery_is_cards_with_a_thumbnail_per_example():
    index = (ROOT / "docs" / "gallery" / "index.md").read_text(encoding="utf-8")
    assert '<div class="grid cards" markdown>' in index
    for script in gallery.examples():
        figures = sorted((ROOT / "docs" / "gallery" / "figures").glob(f"{script.stem}*.png"))
        assert "**[" in index and f"]({script.stem}.md)**" in index, f"no card for {script.stem}"
        if figures:
            assert f"](figures/{figures[0].name})]({script.stem}.md)" in index, f"the {script.stem} card has no thumbnail"
    config = (ROOT / "mkdocs.yml").read_text()
    for needed in ("- attr_list", "- md_in_html", "font: false"):
        assert needed in config


def test_mathjax_comes_from_its_python_package_or_the_build_fails(tmp_path, monkeypatch):
    if gallery.mathjax_source() is not None:
        gallery._ensure_mathjax(tmp_path / "mathjax")
        assert (tmp_path / "mathjax" / "es5" / "tex-mml-chtml.js").is_file()
        assert any((tmp_path / "mathjax" / "es5" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    pytest.importorskip("mkdocs")
    from mkdocs.exceptions import PluginError

    monkeypatch.setattr(gallery, "mathjax_source", lambda: None)
    with pytest.raises(PluginError, match="django-static-mathjax"):
        gallery._ensure_mathjax(tmp_path / "empty")

"""The docs' gallery: a mkdocs hook that renders every example as a page, and ships MathJax.

Registered in ``mkdocs.yml`` under ``hooks:``. At build time it

* turns each ``examples/NAME.py`` (percent-cell format; names starting with ``_`` are helpers)
  into the generated page ``gallery/NAME.md``: ``# %% [markdown]`` cells become text, code
  cells become Python code blocks, and the committed figures ``docs/gallery/figures/NAME*.png``
  (made by ``python examples/NAME.py --out docs/gallery/figures``) are shown after the code.
  Nothing is executed: the build stays fast and never needs the examples' dependencies;
* gives every heading with math (``## A step on $\\hat x_0$``) a plain table-of-contents label
  (``data-toc-label``, attr_list) unless it has one, so the page's contents never show raw TeX;
* puts MathJax 3 into the site (``docs/javascripts/mathjax/``, git-ignored) from the Python
  package ``django-static-mathjax`` (the docs extra installs it; it vendors MathJax's files and
  needs no Django), so formulas render without any CDN or npm. Without it the build fails,
  saying what to install: a site whose formulas show as TeX is never shipped silently.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MATHJAX_VERSION = "3.2.2"
MATHJAX_FILES = ("es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/")
"""The combined TeX/MathML -> CommonHTML component and the web fonts it loads relative to itself."""

log = logging.getLogger("mkdocs.hooks.gallery")


def examples() -> list[Path]:
    """The example scripts, sorted by name (helpers ``_*.py`` excluded)."""
    return sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def cells(source: str) -> list[tuple[str, str]]:
    """Split a percent-format script into ``(kind, text)`` cells, kind ``"markdown"`` or ``"code"``.

    Markdown cells lose their leading ``# `` (or ``#``); code cells are kept as written, with
    leading and trailing blank lines removed. Text before the first ``# %%`` is a code cell.
    """
    out: list[tuple[str, list[str]]] = [("code", [])]
    for line in source.splitlines():
        marker = re.match(r"^# %%(.*)$", line)
        if marker:
            out.append(("markdown" if "[markdown]" in marker.group(1) else "code", []))
        elif out[-1][0] == "markdown":
            out[-1][1].append(re.sub(r"^# ?", "", line) if line.startswith("#") else line)
        else:
            out[-1][1].append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in out if "\n".join(lines).strip()]


def page(script: Path, figures: list[str]) -> str:
    """The Markdown page of ``script``; ``figures``: its figure paths relative to the page."""
    rel = script.relative_to(ROOT).as_posix()
    parts = []
    for i, (kind, text) in enumerate(cells(script.read_text(encoding="utf-8"))):
        if kind == "markdown":
            parts.append(text)
            if i <= 1 and text.lstrip().startswith("# "):
                parts.append(f"Source: `{rel}` in the repository. Run it with `python {rel}`, or open it as a notebook "
                             f"(`jupytext --to notebook {rel}`, or directly in Jupyter with jupytext installed).")
        else:
            parts.append(f"```python\n{text}\n```")
    if figures:
        parts.append(f"## Output\n\nMade by `python {rel} --out docs/gallery/figures` (the defaults above).\n\n"
                     + "\n\n".join(f"![{Path(f).stem}]({f})" for f in figures))
    return "\n\n".join(parts) + "\n"


def on_files(files, config):  # noqa: ANN001, ANN201 - mkdocs' hook signature
    """Add a generated page ``gallery/NAME.md`` per example."""
    from mkdocs.structure.files import File

    docs = Path(config["docs_dir"])
    for script in examples():
        figures = sorted(p.relative_to(docs / "gallery").as_posix()
                         for p in (docs / "gallery" / "figures").glob(f"{script.stem}*.png"))
        files.append(File.generated(config, f"gallery/{script.stem}.md", content=page(script, figures)))
    return files


MATH = re.compile(r"\$([^$]+)\$")
TEX_TEXT = [(r"\hat x_0", "x̂0"), (r"\hat x", "x̂"), (r"^\top", "ᵀ"), (r"^{-1}", "⁻¹"), (r"^{+}", "⁺"), (r"^+", "⁺"), (r"\|", "‖"),
            (r"\nabla", "∇"), (r"\lambda", "λ"), (r"\gamma", "γ"), (r"\sigma", "σ"), (r"\alpha", "α"), (r"\infty", "∞"),
            (r"\approx", "≈"), (r"\leftarrow", "←"), (r"\to", "→"), (r"\,", " "), (r"\text", "")]
"""TeX in headings -> plain text for the table of contents (what is left: braces and backslashes dropped)."""


def plain_label(heading: str) -> str:
    """A heading's text with its ``$...$`` math made plain (``$J^\\top e$`` -> ``Jᵀ e``), for ``data-toc-label``.

    Examples:
        >>> plain_label(r"Gradient descent: $d = J^\\top e$ (the DPS family)")
        'Gradient descent: d = Jᵀ e (the DPS family)'
        >>> plain_label(r"A free step on $\\hat x_0$")
        'A free step on x̂0'
    """
    def convert(match: re.Match[str]) -> str:
        tex = match.group(1)
        for macro, text in TEX_TEXT:
            tex = tex.replace(macro, text)
        return re.sub(r"\\([A-Za-z]+)", r"\1", tex).replace("{", "").replace("}", "").strip()

    return MATH.sub(convert, heading).replace('"', "'")


def toc_labels(markdown: str) -> str:
    """Append ``{ data-toc-label="..." }`` to every ATX heading with ``$...$`` math and no attribute list.

    Fenced code is left alone.
    """
    out, fence = [], None
    for line in markdown.splitlines(keepends=True):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
        elif fence is None:
            heading = re.match(r"^(#{1,6} )(.*?\$.*?)\s*$", line)
            if heading and not heading.group(2).rstrip().endswith("}"):
                line = f'{heading.group(1)}{heading.group(2)} {{ data-toc-label="{plain_label(heading.group(2))}" }}\n'
        out.append(line)
    return "".join(out)


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201, ARG001 - mkdocs' hook signature
    """Plain table-of-contents labels for headings with math (`toc_labels`)."""
    return toc_labels(markdown)


def on_config(config):  # noqa: ANN001, ANN201 - mkdocs' hook signature
    """Before the docs are collected: make sure ``docs/javascripts/mathjax/`` holds MathJax."""
    _ensure_mathjax(Path(config["docs_dir"]) / "javascripts" / "mathjax")
    return config


def mathjax_source() -> Path | None:
    """MathJax's folder (``es5/...``) inside the installed ``django-static-mathjax`` package, or ``None``."""
    spec = importlib.util.find_spec("mathjax")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        source = Path(folder) / "static" / "mathjax"
        if (source / MATHJAX_FILES[0]).is_file():
            return source
    return None


def _ensure_mathjax(target: Path) -> None:
    """Copy MathJax's combined component and its fonts into ``target`` unless they are there already.

    Raises:
        mkdocs.exceptions.PluginError: MathJax is not installed (the build stops, naming the package).
    """
    if all((target / f).exists() for f in MATHJAX_FILES):
        return
    source = mathjax_source()
    if source is None:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"gallery hook: MathJax {MATHJAX_VERSION} is not installed, so the site's formulas would show as TeX; "
                          f"install the docs' dependencies: pip install -e '.[docs]' (the package django-static-mathjax=={MATHJAX_VERSION}.1)")
    for f in MATHJAX_FILES:
        src, dst = source / f, target / f
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    log.info(f"gallery hook: shipped MathJax from {source} into {target}")

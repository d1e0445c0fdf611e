"""The docs' gallery: a mkdocs hook that renders every example as a page, and ships MathJax.

Registered in ``mkdocs.yml`` under ``hooks:``. At build time it

* turns each ``examples/NAME.py`` (percent-cell format; names starting with ``_`` are helpers)
  into the generated page ``gallery/NAME.md``: ``# %% [markdown]`` cells become text, code
  cells become Python code blocks, and the committed figures ``docs/gallery/figures/NAME*.png``
  (made by ``python examples/NAME.py --out docs/gallery/figures``) are shown after the code.
  Nothing is executed: the build stays fast and never needs the examples' dependencies;
* puts MathJax 3 into the built site (``javascripts/mathjax/``) from the npm registry's
  ``mathjax`` package when ``docs/javascripts/mathjax/`` does not hold it yet (``npm pack``,
  once; the folder is git-ignored), so formulas render without any CDN. Without ``npm`` or a
  network the build still succeeds and says so; the pages then show the TeX source.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
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


def on_config(config):  # noqa: ANN001, ANN201 - mkdocs' hook signature
    """Before the docs are collected: make sure ``docs/javascripts/mathjax/`` holds MathJax."""
    _ensure_mathjax(Path(config["docs_dir"]) / "javascripts" / "mathjax")
    return config


def _ensure_mathjax(target: Path) -> None:
    """Unpack MathJax from the npm registry into ``target`` unless it is there already."""
    if (target / MATHJAX_FILES[0]).is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        log.info("gallery hook: npm not found, MathJax not shipped (formulas show as TeX); see examples/_gallery.py")
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent", "--pack-destination", tmp],
                           check=True, capture_output=True, timeout=180)
        except (subprocess.SubprocessError, OSError) as exc:
            log.info(f"gallery hook: could not fetch mathjax@{MATHJAX_VERSION} from npm ({exc}); formulas show as TeX")
            return
        (tarball,) = Path(tmp).glob("mathjax-*.tgz")
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and any(m.name.startswith("package/" + f) for f in MATHJAX_FILES)]
            for m in members:
                m.name = m.name.removeprefix("package/")
            tar.extractall(target, members=members)  # noqa: S202 - members filtered to the package's files above
    log.info(f"gallery hook: shipped mathjax@{MATHJAX_VERSION} into {target}")

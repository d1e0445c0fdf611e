"""Every script in examples/ runs with its defaults and writes its figure (a broken example fails the suite).

Each runs as ``python examples/NAME.py --out TMP`` in a subprocess, exactly as a reader runs it.
The gallery hook (``examples/_gallery.py``) is checked on every script: cells split, a page
per example, each figure the page shows is committed and small.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
NEEDS = {"deepinv_operators": "deepinv", "clip_style": "cd_clip_style", "stable_diffusion": "diffusers", "flow_bfloat16": "diffusers"}
"""Examples whose optional dependency may be absent in an environment (the deepinv plugin runs in its own)."""


def _gallery():
    spec = importlib.util.spec_from_file_location("examples_gallery", ROOT / "examples" / "_gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_examples():
    names = {p.stem for p in EXAMPLES}
    assert {"quickstart", "custom_constraint", "custom_solver", "stable_diffusion", "flow_bfloat16", "clip_style", "evaluate_folder",
            "jacobian_analysis", "deepinv_operators"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_with_its_defaults(script: Path, tmp_path: Path):
    needs = NEEDS.get(script.stem)
    if needs is not None and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{script.name} needs {needs}, not installed here")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    pngs = list(tmp_path.glob("*.png"))
    assert pngs, f"{script.name} wrote no figure into --out:\n{proc.stdout[-2000:]}"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {tmp_path}" in proc.stdout


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_a_percent_notebook_with_a_title_and_text(script: Path):
    cells = _gallery().cells(script.read_text(encoding="utf-8"))
    kinds = [kind for kind, _ in cells]
    assert kinds[0] == "markdown" and cells[0][1].startswith("# "), f"{script.name} must open with a '# Title' markdown cell"
    assert kinds.count("code") >= 2 and kinds.count("markdown") >= 2
    assert "```bash" in cells[0][1], f"{script.name}: the first cell gives the commands (defaults and full size)"


def test_cells_split_markdown_and_code():
    source = "# %% [markdown]\n# # Title\n#\n# text $x$\n\n# %%\nimport torch\n\n# %% [markdown]\n# more\n# %%\nx = 1\n"
    assert _gallery().cells(source) == [("markdown", "# Title\n\ntext $x$"), ("code", "import torch"), ("markdown", "more"),
                                        ("code", "x = 1")]


def test_gallery_pages_show_the_committed_small_figures():
    gallery = _gallery()
    figures = ROOT / "docs" / "gallery" / "figures"
    for png in figures.glob("*.png"):
        assert png.stat().st_size < 150_000, f"{png.name} is {png.stat().st_size} bytes: keep gallery figures < 150 kB"
    for script in EXAMPLES:
        shown = sorted(f"figures/{p.name}" for p in figures.glob(f"{script.stem}*.png"))
        text = gallery.page(script, shown)
        assert text.count("```python") >= 2
        for f in shown:
            assert f"]({f})" in text
    index = (ROOT / "docs" / "gallery" / "index.md").read_text(encoding="utf-8")
    for script in EXAMPLES:
        assert f"{script.stem}.md" in index, f"docs/gallery/index.md does not link {script.stem}"

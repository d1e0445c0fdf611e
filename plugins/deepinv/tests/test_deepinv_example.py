"""The example script examples/deepinv_operators.py runs, saves its figure and writes its docs block."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepinv", reason="deepinv not installed (pip install -e plugins/deepinv; see its README)")
pytest.importorskip("cd_deepinv", reason="plugin not installed: pip install -e plugins/deepinv")
pytest.importorskip("matplotlib", reason="the example draws its figure with matplotlib")

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "examples" / "deepinv_operators.py"


def test_example_deblurs_and_super_resolves_and_writes_its_block(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# page\n\n<!-- DEEPINV-EXAMPLE:START -->\nold\n<!-- DEEPINV-EXAMPLE:END -->\n")
    out = tmp_path / "figures"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--digits", "2", "--steps", "6", "--inner-steps", "2",
                           "--out", str(out), "--write-docs", str(page)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figure = out / "deepinv_operators.png"
    assert figure.is_file() and figure.stat().st_size > 1000
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    block = page.read_text()
    assert "old" not in block
    assert f"Produced by `python examples/deepinv_operators.py --digits 2 --steps 6 --inner-steps 2 --write-docs {page}" in block
    rows = [line for line in block.splitlines() if line.startswith("| deblur") or line.startswith("| ×4")]
    assert len(rows) == 2, block
    for row in rows:  # cells "median [min, max]": the constrained residual's max is below the unconstrained one's min
        cells = [c.strip() for c in row.strip("|").split("|")]
        free_min = float(cells[1].split("[")[1].split(",")[0])
        fit_max = float(cells[2].split(",")[1].rstrip("]"))
        assert fit_max < free_min, row

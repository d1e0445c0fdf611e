"""scripts/sampling_fingerprint.py, the before/after check of a refactoring: a checkout matches itself, a changed bit is caught."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sampling_fingerprint.py"


def _script():
    spec = importlib.util.spec_from_file_location("sampling_fingerprint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_checkout_matches_itself_and_one_changed_bit_is_reported(tmp_path, capsys):
    script = _script()
    assert script.main([str(tmp_path / "a.pt"), "--problems", "gauss64"]) == 0
    runs = torch.load(tmp_path / "a.pt", weights_only=True)
    import constrained_diffusion as cd

    solvers = cd.solvers.registry.names()
    assert {f"gauss64/solver:{s}" for s in solvers} | {f"gauss64/recipe:{r}" for r in cd.recipes.names()} <= set(runs)
    assert script.main(["--compare", str(tmp_path / "a.pt"), str(tmp_path / "a.pt")]) == 0
    assert f"{len(runs)} runs compared, 0 differ" in capsys.readouterr().out

    key = "gauss64/solver:inexact-newton"
    runs[key]["sample"] = torch.nextafter(runs[key]["sample"], torch.full_like(runs[key]["sample"], 2.0))  # one ulp up
    del runs["encoded/torch.float64"]
    torch.save(runs, tmp_path / "b.pt")
    assert script.main(["--compare", str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 1
    out = capsys.readouterr().out
    assert f"{key}" in out and "<-- DIFFERS" in out and "1 differ" in out and "1 runs in one file only" in out

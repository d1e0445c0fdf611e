"""The house in layers: the import contracts of pyproject.toml hold (docs/architecture.md).

The contracts themselves are the single statement of the layers; these tests read them from
``pyproject.toml`` and check them on the package's import graph (grimp, what import-linter
builds on), so ``python -m pytest`` catches a broken layer as ``lint-imports`` in CI does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _contracts() -> dict[str, dict]:
    data = tomllib.loads(PYPROJECT.read_text())
    return {c["id"]: c for c in data["tool"]["importlinter"]["contracts"]}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("constrained_diffusion", include_external_packages=False)


def _arrows(graph, sources: list[str], targets: list[str]) -> list[str]:
    """Every direct import from a module under ``sources`` to one under ``targets``, as ``a -> b (line n)``."""
    def under(module: str, packages: list[str]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in packages)

    found = []
    for importer in sorted(graph.modules):
        if not under(importer, sources):
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if under(imported, targets):
                lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
                found.append(f"{importer} -> {imported} (line {', '.join(map(str, lines))})")
    return found


@pytest.mark.parametrize("contract", ["ground", "experiments"])
def test_no_arrow_runs_up(graph, contract):
    """No module of the ground imports an experiment or the CLI; no experiment imports the CLI."""
    c = _contracts()[contract]
    assert c["type"] == "forbidden"
    assert _arrows(graph, c["source_modules"], c["forbidden_modules"]) == []


def test_the_ground_lists_every_library_package(graph):
    """Every package beside the experiments and the CLI is on the ground's list, so no new one escapes the rule."""
    c = _contracts()["ground"]
    children = {m.split(".")[1] for m in graph.modules if m.count(".") >= 1}
    upper = {m.split(".")[1] for m in c["forbidden_modules"]}
    listed = {m.split(".")[1] for m in c["source_modules"]}
    unlisted = children - upper - listed - {"__main__", "_validation", "errors"}
    assert unlisted == set(), f"add {sorted(unlisted)} to the ground (or an upper layer) in pyproject.toml"


def test_import_linter_contracts_hold():
    """The whole ``[tool.importlinter]`` configuration, layers contract included, as ``lint-imports`` runs it."""
    configuration = pytest.importorskip("importlinter.configuration")
    from importlinter.application.use_cases import lint_imports

    configuration.configure()
    assert lint_imports(config_filename=str(PYPROJECT), cache_dir=None, no_logo=True), "lint-imports: a contract is broken (see above)"


def test_a_broken_layer_is_caught():
    """The check can fail: an arrow from the ground to an experiment, added to a fresh graph, is reported."""
    broken = grimp.build_graph("constrained_diffusion", include_external_packages=False)
    broken.add_import(importer="constrained_diffusion.solvers.base", imported="constrained_diffusion.tuning.space", line_number=1,
                      line_contents="from constrained_diffusion.tuning.space import SearchSpace")
    c = _contracts()["ground"]
    assert _arrows(broken, c["source_modules"], c["forbidden_modules"]) == [
        "constrained_diffusion.solvers.base -> constrained_diffusion.tuning.space (line 1)"]


def test_the_architecture_page_shows_the_contract():
    """docs/architecture.md lists the contract's floors, top to bottom, in its table and its diagram."""
    page = (PYPROJECT.parent / "docs" / "architecture.md").read_text()
    layers = [layer.replace("(", "").replace(")", "") for layer in _contracts()["layers"]["layers"]]
    table = page.split("<!-- layers:START -->")[1].split("<!-- layers:END -->")[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    shown = [line.split(" | ")[1].strip().strip("`").replace("\\|", "|") for line in table.splitlines()
             if line.startswith("| ") and line[2].isdigit()]
    assert shown == layers
    assert [int(r[1]) for r in rows] == list(range(len(layers), 0, -1))
    diagram = page.split("```text")[1].split("```")[0]
    assert [layer for layer in layers if layer in diagram] == layers
    assert [diagram.index(layer) for layer in layers] == sorted(diagram.index(layer) for layer in layers)


def _cycles(graph) -> list[list[str]]:
    """The import cycles of the package: its strongly connected components of more than one module (Tarjan, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_two_files_import_each_other_in_a_loop(graph):
    """Imports inside functions count too (grimp reads every import statement): the package has no import cycle at all."""
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_loop():
    class Graph:
        modules = {"a", "b", "c", "d"}
        arrows = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, module):
            return self.arrows[module]

    assert _cycles(Graph()) == [["a", "b", "c"]]

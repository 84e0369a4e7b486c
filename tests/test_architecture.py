"""The layering docs/architecture.md describes, checked on the source: entry points -> families ->
engine -> ops -> backends, no family importing another, no module reaching into another
package's private modules, and no import cycle between featvis_fast's packages."""
import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "featvis_fast"
FAMILIES = {"backprop", "perturbation", "reconstruction", "dissection", "similarity"}
ENTRY_POINTS = {"cli", "demo", "demo_panels", "viewer"}
# evaluation sits between the entry points and the families: it runs the families' methods again
EVALUATION = {"metrics"}
# top-level private modules every layer may use: backend choice, validation, shared codes, references
SHARED_PRIVATE = {"_backend", "_validate", "_abi", "_extensions", "_deprecation", "_reference",
                  "_rectifier_reference", "_perturbation_reference", "_dissection_reference", "_ascent_reference"}


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield path, parts[:-1] if parts[-1] == "__init__" else parts, parts[-1] == "__init__"


def _imports(path: Path, name: tuple, is_package: bool):
    """featvis_fast-relative module paths (tuples) that `path` imports."""
    package = name if is_package else name[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = base + tuple(node.module.split(".")) if node.module else base
            if node.module:
                yield target
            else:
                yield from (target + (alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featvis_fast"):
            yield tuple(node.module.split(".")[1:])
        elif isinstance(node, ast.Import):
            yield from (tuple(a.name.split(".")[1:]) for a in node.names if a.name.startswith("featvis_fast."))


GRAPH = {name: set(_imports(path, name, pkg)) for path, name, pkg in _modules()}


def _top(name: tuple) -> str:
    return name[0] if name else "featvis_fast"


def test_the_import_scan_sees_the_known_edges():
    assert ("engine",) in GRAPH[("backprop", "methods")] or any(
        t[:1] == ("engine",) for t in GRAPH[("backprop", "methods")])
    assert any(t[:1] == ("ops",) for t in GRAPH[("similarity",)])
    assert ("backprop",) in GRAPH[("metrics", "_explain")]


def test_no_family_imports_another_family():
    for name, targets in GRAPH.items():
        if _top(name) in FAMILIES:
            others = {_top(t) for t in targets} & FAMILIES - {_top(name)}
            assert not others, f"{'.'.join(name)} imports the families {others}"


@pytest.mark.parametrize("layer,forbidden", [
    ("engine", FAMILIES | ENTRY_POINTS | EVALUATION),
    ("ops", FAMILIES | ENTRY_POINTS | EVALUATION | {"engine", "models"}),
])
def test_lower_layers_do_not_know_the_upper_ones(layer, forbidden):
    for name, targets in GRAPH.items():
        if _top(name) == layer:
            bad = {_top(t) for t in targets} & forbidden
            assert not bad, f"{'.'.join(name)} imports {bad}"


def test_families_do_not_import_entry_points_or_the_evaluation():
    for name, targets in GRAPH.items():
        if _top(name) in FAMILIES | EVALUATION | {"engine", "ops", "models", "render", "images", "jobs"}:
            bad = {_top(t) for t in targets} & ENTRY_POINTS
            assert not bad, f"{'.'.join(name)} imports the entry points {bad}"
        if _top(name) in FAMILIES:
            bad = {_top(t) for t in targets} & EVALUATION
            assert not bad, f"{'.'.join(name)} imports the evaluation layer {bad}"


def test_nobody_reaches_into_another_packages_private_modules():
    for name, targets in GRAPH.items():
        for target in targets:
            private = [i for i, part in enumerate(target) if part.startswith("_") and part != "__init__"]
            if not private or (len(target) == 1 and target[0] in SHARED_PRIVATE):
                continue
            owner = target[:private[0]]
            assert name[:len(owner)] == owner, f"{'.'.join(name)} imports the private {'.'.join(target)}"


def test_packages_import_each_other_without_cycles():
    edges = defaultdict(set)
    for name, targets in GRAPH.items():
        for target in targets:
            if _top(name) != _top(target) and _top(name) != "featvis_fast":
                edges[_top(name)].add(_top(target))
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in edges.get(node, ()):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in list(edges):
        if node not in state:
            visit(node, [node])

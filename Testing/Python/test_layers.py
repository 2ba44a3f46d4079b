"""The library's floors (docs/architecture.md, "Floors of SpineAlignmentLib"): no import runs upwards, no new circle.

The import graph is read with :mod:`ast` from the source files, so every import
counts, including the ones inside functions and under ``TYPE_CHECKING`` that a
run-time check would never see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = "SpineAlignmentLib"

#: Floors of the library, lowest first: a module may import its own floor and the floors below it.
#: A module belongs to the longest prefix listed (``SpineAlignmentLib.io.dataset`` before ``SpineAlignmentLib.io``).
#: Keep in step with the table in docs/architecture.md.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("SpineAlignmentLib", "SpineAlignmentLib.errors", "SpineAlignmentLib.safefiles",
              "SpineAlignmentLib.environment", "SpineAlignmentLib.progress")),
    ("protocols", ("SpineAlignmentLib.protocols",)),
    ("geometry", ("SpineAlignmentLib.geometry",)),
    ("imaging", ("SpineAlignmentLib.imaging",)),
    ("result", ("SpineAlignmentLib.result",)),
    ("models", ("SpineAlignmentLib.models",)),
    ("inference", ("SpineAlignmentLib.inference",)),
    ("pipeline", ("SpineAlignmentLib.pipeline", "SpineAlignmentLib.pairs")),
    ("evaluation", ("SpineAlignmentLib.evaluation",)),
    ("formats", ("SpineAlignmentLib.io", "SpineAlignmentLib.slicerio")),
    ("runners", ("SpineAlignmentLib.batch", "SpineAlignmentLib.pairbatch")),
    ("datasets", ("SpineAlignmentLib.io.dataset", "SpineAlignmentLib.slicerio.training_export")),
    ("training", ("SpineAlignmentLib.training",)),
    ("front ends", ("SpineAlignmentLib.commands", "SpineAlignmentLib.cli", "SpineAlignmentLib.slicerio.logic")),
]

#: Imports allowed to run upwards, (importer, imported), each with its reason. At most one, ever.
BACK_IMPORTS: dict[tuple[str, str], str] = {}

#: Import circles that other work removes (the lead shrinks this; never add to it). Empty: none is known.
KNOWN_CIRCLES: list[frozenset[str]] = [
]


def library_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of the library."""
    mods = {}
    for path in sorted((root / LIB).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def import_graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """importer -> {imported library module: first line}, from every import statement anywhere in the file.

    ``from package import name`` counts as an import of ``package.name`` when that is a module,
    else of ``package``.
    """
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in mods else module
                           for alias in node.names]
            for target in targets:
                while target and target not in mods:  # import a.b.c of a module a.b.c that is a name in a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def floor_of(module: str) -> int:
    best, floor = -1, None
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), index
    if floor is None:
        raise AssertionError(f"{module} is on no floor; add it to FLOORS and to docs/architecture.md")
    return floor


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """``importer:line (floor) -> imported (floor)`` for every import that runs upwards."""
    out = []
    for importer, edges in sorted(graph.items()):
        for imported, line in sorted(edges.items()):
            a, b = floor_of(importer), floor_of(imported)
            if b > a and (importer, imported) not in BACK_IMPORTS:
                out.append(f"{importer}:{line} ({FLOORS[a][0]}) -> {imported} ({FLOORS[b][0]})")
    return out


def circles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """Strongly connected groups of two or more modules (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(frozenset(group))
    return found


@pytest.fixture(scope="module")
def graph():
    return import_graph(library_modules())


def test_graph_sees_imports_inside_functions(graph):
    # radiograph.read_radiograph picks its reader inside the function; a graph without it would miss hidden arrows.
    assert "SpineAlignmentLib.imaging.dicom" in graph["SpineAlignmentLib.imaging.radiograph"]
    assert "SpineAlignmentLib.geometry.label_checks" in graph["SpineAlignmentLib.io.dataset"]
    assert "SpineAlignmentLib.evaluation.compare" in graph["SpineAlignmentLib.evaluation"]  # from . import compare


def test_every_module_is_on_a_floor(graph):
    for module in graph:
        floor_of(module)


def test_no_import_runs_upwards(graph):
    assert len(BACK_IMPORTS) <= 1, "at most one documented back-import; move the shared code down instead"
    upward = upward_imports(graph)
    assert not upward, "imports from a lower floor to a higher one (move the shared code down):\n" + "\n".join(upward)


def test_no_new_import_circle(graph):
    found = circles(graph)
    new = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    assert not new, f"new import circles (a shared type or function belongs one floor below both): {new}"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"circles removed: take them out of KNOWN_CIRCLES: {gone}"


def test_library_never_imports_the_gui():
    # The Slicer module sits on top; the library (its logic included) runs headless with slicer-core.
    gui = {"qt", "ctk", "slicer.ScriptedLoadableModule", "SpineAlignment"}
    found = []
    for name, path in library_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{name}:{node.lineno} {n}" for n in names
                      if any(n == g or n.startswith(g + ".") for g in gui)]
    assert not found, found


def test_checks_fail_on_a_made_up_back_import_and_circle(tmp_path):
    # The same functions on a tiny library: geometry importing the pipeline is both upwards and a circle.
    lib = tmp_path / LIB
    (lib / "geometry").mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "geometry" / "__init__.py").write_text("")
    (lib / "geometry" / "frame.py").write_text("def f():\n    from ..pipeline import measure\n")
    (lib / "pipeline.py").write_text("from .geometry.frame import f\n")
    g = import_graph(library_modules(tmp_path))
    assert upward_imports(g) == [
        "SpineAlignmentLib.geometry.frame:2 (geometry) -> SpineAlignmentLib.pipeline (pipeline)"]
    assert circles(g) == [frozenset({"SpineAlignmentLib.geometry.frame", "SpineAlignmentLib.pipeline"})]

"""The Slicer extension's CMake rules install every library file, and the module's .ui matches its code."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_CMAKE = REPO / "SpineAlignment" / "CMakeLists.txt"
MODULE_PY = REPO / "SpineAlignment" / "SpineAlignment.py"
UI = REPO / "Resources" / "UI" / "SpineAlignment.ui"


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _commands(text: str, name: str) -> list[list[str]]:
    """Arguments of every ``name(...)`` call (CMake has no nested parentheses in these files)."""
    out = []
    for m in re.finditer(rf"\b{name}\s*\(([^)]*)\)", _strip_comments(text), flags=re.IGNORECASE):
        out.append(m.group(1).split())
    return out


def install_patterns() -> list[tuple[str, list[str]]]:
    """(variable, patterns relative to the repository root) of every GLOB_RECURSE that is installed."""
    text = MODULE_CMAKE.read_text()
    root_var = "${SPINEALIGNMENT_SOURCE_ROOT}/"
    globs = []
    for args in _commands(text, "file"):
        if args[0] != "GLOB_RECURSE":
            continue
        var = args[1]
        patterns = [a[len(root_var):] for a in args[2:] if a.startswith(root_var)]
        globs.append((var, patterns))
    installed_vars = set()
    for args in _commands(text, "foreach"):
        if "IN" in args and "LISTS" in args:
            installed_vars.update(args[args.index("LISTS") + 1:])
    assert re.search(r"install\s*\(\s*FILES\s+\$\{SPINEALIGNMENT_SOURCE_ROOT\}/\$\{_file\}", text), \
        "the foreach loop must install each globbed file"
    return [(v, p) for v, p in globs if v in installed_vars]


def _matches(rel: str, pattern: str) -> bool:
    # CMake GLOB_RECURSE: "dir/*.py" matches at any depth below dir
    base, _, leaf = pattern.rpartition("/")
    return rel.startswith(base + "/") and fnmatch.fnmatch(rel.rsplit("/", 1)[-1], leaf)


def _excluded(rel: str) -> bool:
    text = MODULE_CMAKE.read_text()
    regexes = []
    for args in _commands(text, "list"):
        if args[:1] == ["FILTER"] and "REGEX" in args:
            regexes.append(args[args.index("REGEX") + 1].strip('"').replace("\\\\", "\\"))
    return any(re.search(r, rel) for r in regexes)


def repo_files(folder: str) -> list[str]:
    """Tracked and untracked-but-not-ignored files under a folder (what a release would contain)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", folder],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        files = [line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*") if p.is_file()]
    return [f for f in files if "__pycache__" not in f and not f.endswith(".pyc") and (REPO / f).exists()]


def test_every_library_file_is_installed():
    patterns = [p for _, ps in install_patterns() for p in ps]
    assert "SpineAlignmentLib/*.py" in patterns and "SpineAlignmentLib/*.json" in patterns
    files = repo_files("SpineAlignmentLib")
    assert "SpineAlignmentLib/protocols/coronal-spine.json" in files
    missing = [f for f in files if _excluded(f) or not any(_matches(f, p) for p in patterns)]
    assert not missing, f"not installed by SpineAlignment/CMakeLists.txt: {missing}"


def test_resources_are_installed():
    patterns = [p for _, ps in install_patterns() for p in ps]
    files = repo_files("Resources")
    assert {"Resources/UI/SpineAlignment.ui", "Resources/Icons/SpineAlignment.png"} <= set(files)
    missing = [f for f in files if _excluded(f) or not any(_matches(f, p) for p in patterns)]
    assert not missing, f"resources not installed: {missing}"


def test_glob_matcher_itself():
    assert _matches("SpineAlignmentLib/geometry/sagittal.py", "SpineAlignmentLib/*.py")
    assert not _matches("SpineAlignmentLib/notes.md", "SpineAlignmentLib/*.py")
    assert not _matches("Other/x.py", "SpineAlignmentLib/*.py")


def test_module_script_and_extension_metadata():
    text = MODULE_CMAKE.read_text()
    assert "slicerMacroBuildScriptedModule" in text and "${MODULE_NAME}.py" in text
    top = (REPO / "CMakeLists.txt").read_text()
    for needed in ("project(SpineAlignment)", 'EXTENSION_CATEGORY "Quantification"', "EXTENSION_HOMEPAGE",
                   "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", 'EXTENSION_DEPENDS "PyTorch"',
                   "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(SpineAlignment)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in top, needed


def test_ui_has_every_widget_the_module_uses_and_parameter_bindings_exist():
    tree = ET.parse(UI)
    widgets = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text()))
    assert used, "the module uses no widgets?"
    assert not used - set(widgets), f"widgets used in SpineAlignment.py but missing in the .ui: {used - set(widgets)}"
    # every SlicerParameterName in the .ui is a field of the parameter node wrapper
    bound = {}
    for w in tree.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[w.get("name")] = prop.find("string").text
    module = ast.parse(MODULE_PY.read_text())
    wrapper = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "SpineAlignmentParameterNode")
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    assert set(bound.values()) == fields
    assert widgets["inputVolumeSelector"] == "qMRMLNodeComboBox" and widgets["parameterTableView"] == "qMRMLTableView"


def test_module_file_follows_the_template_order():
    module = ast.parse(MODULE_PY.read_text())
    classes = [n.name for n in module.body if isinstance(n, ast.ClassDef)]
    assert classes == ["SpineAlignment", "SpineAlignmentParameterNode", "SpineAlignmentWidget",
                       "SpineAlignmentLogic", "SpineAlignmentTest"]
    logic = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "SpineAlignmentLogic")
    methods = {n.name for n in logic.body if isinstance(n, ast.FunctionDef)}
    assert {"analyze", "measureFromMarkups", "startBatch", "missingDependencies", "ensureTorch"} <= methods
    # no dependency installation at import time: pip_install only inside functions
    top_level_calls = [n for n in module.body if isinstance(n, ast.Expr) and "pip_install" in ast.unparse(n)]
    assert not top_level_calls


def test_icon_is_128_square_png():
    pil = pytest.importorskip("PIL.Image")
    with pil.open(REPO / "Resources" / "Icons" / "SpineAlignment.png") as im:
        assert im.format == "PNG" and im.size == (128, 128)

"""Versions that are true and checked; packages asked for only by the task that imports them; LICENSE; sample data."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from SpineAlignmentLib import environment
from SpineAlignmentLib.environment import (
    MIN_PYTHON,
    MIN_SLICER,
    environment_problems,
    missing_requirements,
    requirements_for,
    version_tuple,
)

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
MODULE_PY = REPO / "SpineAlignment" / "SpineAlignment.py"


@pytest.mark.parametrize("python, slicer, expected", [
    ((3, 9, 10), (5, 8), "needs 3D Slicer 5.10 or later (Python 3.10+); this is Slicer 5.8 with Python 3.9"),
    ((3, 9), None, "needs Python 3.10 or later (its DICOM reader, pydicom 3, does too); this is Python 3.9. Use a newer"),
    ((3, 12, 1), (5, 10), None),
    ((3, 12), (6, 0), None),
    ((3, 10), None, None),
])
def test_environment_problems(python, slicer, expected):
    problems = environment_problems(python, slicer)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0]
        assert "Install" in problems[0] or "Use a newer Python" in problems[0]


def test_version_tuple():
    assert version_tuple("5.10.1") == (5, 10, 1)
    assert version_tuple("3.0rc1") == (3, 0)
    assert version_tuple("1.6.1+cu121") == (1, 6, 1)
    assert version_tuple("dev") == ()


def test_missing_requirements_by_task_with_fake_lookups():
    import importlib.metadata

    installed = {"numpy": "2.1.0", "pydicom": "2.4.4", "pillow": "11.0", "monai": "1.6.1", "jsonschema": None}

    def find_spec(name):
        return object() if name in ("numpy", "pydicom", "PIL", "monai", "jsonschema") else None

    def version_of(dist):
        if installed.get(dist) is None:
            raise importlib.metadata.PackageNotFoundError(dist)
        return installed[dist]

    # hand placement: pydicom 2.4 is too old; nothing about torch/monai is asked
    assert missing_requirements("measure", find_spec, version_of) == ["pydicom>=3.0"]
    # a model: jsonschema without metadata (bundled) is trusted, monai is there
    assert missing_requirements("model", find_spec, version_of) == ["pydicom>=3.0"]
    assert missing_requirements("dicom-out", find_spec, version_of) == ["pydicom>=3.0", "highdicom>=0.28"]
    with pytest.raises(ValueError, match="unknown task"):
        requirements_for("everything")


def test_numbers_agree_with_pyproject_cmake_readme_and_module():
    assert PYPROJECT["project"]["requires-python"] == ">=" + ".".join(map(str, MIN_PYTHON))
    declared = set(PYPROJECT["project"]["dependencies"]) | set(PYPROJECT["project"]["optional-dependencies"]["ml"])
    for name, (requirement, minimum, _) in environment._PACKAGES.items():
        assert requirement in declared, requirement
        assert requirement.endswith(minimum), requirement
    slicer = ".".join(map(str, MIN_SLICER))
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert f'set(SPINEALIGNMENT_MIN_SLICER_VERSION "{slicer}")' in cmake
    assert re.search(r'VERSION_LESS "\$\{SPINEALIGNMENT_MIN_SLICER_VERSION\}"\)\s*\n\s*message\(FATAL_ERROR', cmake)
    assert f"Needs 3D Slicer {slicer} or later" in cmake
    assert f"3D Slicer **{slicer} or later**" in (REPO / "README.md").read_text()
    assert f"Needs 3D Slicer {slicer} or later" in MODULE_PY.read_text()


def test_check_runs_before_the_library_on_old_python():
    """environment.py (and the package __init__) parse as Python 3.7; the module imports it before anything else."""
    for path in (REPO / "SpineAlignmentLib" / "environment.py", REPO / "SpineAlignmentLib" / "__init__.py"):
        ast.parse(path.read_text(), feature_version=(3, 7))
    ast.parse(MODULE_PY.read_text(), feature_version=(3, 9))
    imports = [n for n in ast.walk(ast.parse(MODULE_PY.read_text()))
               if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("SpineAlignmentLib")]
    first = min(imports, key=lambda n: n.lineno)
    assert first.module == "SpineAlignmentLib.environment" and first.col_offset == 0
    # the only other module-level library import is inside the "no problem" branch
    top_level = [n for n in ast.parse(MODULE_PY.read_text()).body
                 if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("SpineAlignmentLib")]
    assert [n.module for n in top_level] == ["SpineAlignmentLib.environment"]


_BLOCKER = """
import importlib.abc, sys
ALL = {"numpy", "pydicom", "scipy", "SimpleITK", "PIL", "jsonschema", "matplotlib", "monai", "highdicom",
       "torch", "pandas", "dask", "pingouin", "statsmodels", "seaborn"}
from SpineAlignmentLib.environment import TASKS
allowed = set(TASKS[sys.argv[1]])
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ALL - allowed:
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
"""

_TASK_CODE = {
    # hand placement: read the film's calibration, measure, build and update the MRML scene (slicer-core)
    "measure": """
from SpineAlignmentLib.imaging import read_radiograph
from SpineAlignmentLib.slicerio import mrml
import numpy as np
import slicer
rg = read_radiograph(FILM)
scene = slicer.vtkMRMLScene()
scene.AddNewNodeByClass("vtkMRMLSelectionNode")
vol = mrml.make_volume_node(scene, np.zeros((60, 80), np.float32), np.eye(4))
a = mrml.create_empty_analysis(scene, vol, "coronal-shoulder", spacing_mm=rg.spacing_mm, calibration=rg.calibration)
for k, xy in {"Cor_top_L": (60.0, 30.0), "Cor_top_R": (20.0, 35.0)}.items():
    a.add_landmark(k, xy)
a.update()
assert abs(a.result.value("CHD") - 1.0) < 1e-9, a.result.value("CHD")
""",
    # batch: a PNG (Pillow) with a landmark file, overlay (matplotlib), markups
    "batch": """
import json
from SpineAlignmentLib.batch import analyze_one
from PIL import Image
import numpy as np
Image.fromarray(np.zeros((60, 80), np.uint8)).save(OUT / "film.png")
(OUT / "lm.json").write_text(json.dumps({"protocol": "coronal-shoulder", "landmarks": {"Cor_top_L": [60, 30], "Cor_top_R": [20, 35]}}))
r = analyze_one(OUT / "film.png", "coronal-shoulder", OUT / "o", landmarks_path=OUT / "lm.json", spacing=(0.2, 0.2))
assert abs(r.value("CHD") - 1.0) < 1e-9 and (OUT / "o" / "film_overlay.png").is_file()
""",
    "dicom-out": """
import numpy as np
from SpineAlignmentLib.imaging import read_radiograph
from SpineAlignmentLib.pipeline import measure, source_uids
from SpineAlignmentLib.io.dicom_sr import read_source_dataset, write_measurement_report
from SpineAlignmentLib.io.dicom_seg import write_segmentation
rg = read_radiograph(FILM)
r = measure({"Cor_top_L": (60.0, 30.0), "Cor_top_R": (20.0, 35.0)}, "coronal-shoulder", spacing_mm=rg.spacing_mm,
            calibration=rg.calibration)
r.dicom = source_uids(rg)
write_measurement_report(r, read_source_dataset(FILM), OUT / "sr.dcm")
write_segmentation(np.zeros((60, 80), np.uint8), FILM, OUT / "seg.dcm", protocol="coronal-shoulder")
""",
}


@pytest.mark.parametrize("task", sorted(_TASK_CODE))
def test_each_task_runs_with_only_its_listed_packages(tmp_path, task):
    """The task lists are measured: the task's code runs with every other optional package blocked."""
    pytest.importorskip("slicer")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_imaging import write_dicom
    import numpy as np

    film = write_dicom(tmp_path / "film.dcm", np.zeros((60, 80), np.uint16), ImagerPixelSpacing=[0.2, 0.2],
                       PatientOrientation=["L", "F"])
    script = _BLOCKER + f"\nfrom pathlib import Path\nFILM = Path({str(film)!r})\nOUT = Path({str(tmp_path)!r})\n" \
        + _TASK_CODE[task] + "\nprint('task ok')\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script, task], capture_output=True, text=True, timeout=120,
                         env=env, cwd=tmp_path)
    assert "task ok" in out.stdout, out.stderr[-3000:]


def test_license_file_matches_the_declared_license():
    text = (REPO / "LICENSE.txt").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache-2.0 ([LICENSE.txt](LICENSE.txt))" in (REPO / "README.md").read_text()


def test_sample_film_is_registered_with_sample_data_at_startup():
    tree = ast.parse(MODULE_PY.read_text())
    source = MODULE_PY.read_text()
    register = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "registerSampleData")
    body = ast.unparse(register)
    assert "SampleData.SampleDataLogic.registerCustomSampleDataSource(" in body
    assert "checksums=f'SHA256:{digest}'" in body and "loadFileType='VolumeFile'" in body
    assert 'slicer.app.connect("startupCompleted()", registerSampleData)' in source
    sample = re.search(r'SAMPLE_FILM = "([^"]+)"', source).group(1)
    assert (REPO / "Resources" / sample).is_file()


def test_calibration_label_reads_the_header_once_per_file_version(tmp_path, monkeypatch):
    """What the module shows on every parameter change: header only, read again only when the file changes."""
    import numpy as np
    import pydicom

    sys.path.insert(0, str(Path(__file__).parent))
    from test_imaging import write_dicom

    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.imaging.radiograph import calibration_of_file

    film = write_dicom(tmp_path / "film.dcm", np.zeros((60, 80), np.uint16), ImagerPixelSpacing=[0.2, 0.25])
    reads = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: reads.append(k.get("stop_before_pixels")) or real(*a, **k))
    first = calibration_of_file(film)
    for _ in range(5):
        assert calibration_of_file(film) == first
    assert reads == [True]  # once, without pixel data
    rg = read_radiograph(film)
    assert first == (rg.spacing_mm, rg.calibration) == ((0.2, 0.25), "detector-plane (magnified)")
    st = film.stat()
    os.utime(film, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the file changed
    calibration_of_file(film)
    assert reads.count(True) == 2
    png = tmp_path / "film.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    assert calibration_of_file(png) == (None, "pixels-only")

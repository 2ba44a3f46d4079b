"""Which Slicer and Python the library runs in, and which packages each task needs.

The one place that says so: the Slicer module calls :func:`environment_problems`
on load and :func:`missing_requirements` before a task, and the tests check
both against ``pyproject.toml``. This file must import and run on an old
Python (Slicer 5.8 ships Python 3.9), so that a user there gets a sentence
saying what to install instead of a syntax error. It therefore uses no syntax
newer than Python 3.7 and imports nothing from the rest of the library.
"""

import importlib.metadata
import importlib.util

#: The library's minimum Python (pyproject.toml ``requires-python``; pydicom 3 needs 3.10 too).
MIN_PYTHON = (3, 10)
#: The first 3D Slicer whose Python meets MIN_PYTHON: 5.10 moved to Python 3.12 (5.8 has Python 3.9).
MIN_SLICER = (5, 10)

#: import name -> (pip requirement, minimum version, distribution name)
_PACKAGES = {
    "numpy": ("numpy>=1.24", "1.24", "numpy"),
    "pydicom": ("pydicom>=3.0", "3.0", "pydicom"),
    "SimpleITK": ("SimpleITK>=2.3", "2.3", "SimpleITK"),
    "PIL": ("pillow>=10", "10", "pillow"),
    "jsonschema": ("jsonschema>=4.17", "4.17", "jsonschema"),
    "matplotlib": ("matplotlib>=3.7", "3.7", "matplotlib"),
    "monai": ("monai==1.6.1", "1.6.1", "monai"),
    "highdicom": ("highdicom>=0.28", "0.28", "highdicom"),
}

#: What each task imports (measured: Testing/Python/test_environment.py imports the task's code with
#: every other package blocked). PyTorch is not listed: in Slicer it comes from the PyTorch extension.
TASKS = {
    # hand placement, dragging, re-measuring markups: geometry and MRML need numpy; mm from DICOM tags need pydicom
    "measure": ("numpy", "pydicom"),
    # a model: the registry checks metadata with jsonschema, preprocessing resizes with Pillow, networks are MONAI's
    "model": ("numpy", "pydicom", "PIL", "jsonschema", "monai"),
    # batch also reads PNG/JPEG/TIFF (Pillow) and NRRD (SimpleITK) and draws overlays (matplotlib)
    "batch": ("numpy", "pydicom", "PIL", "SimpleITK", "matplotlib"),
    # highdicom converts segment colours with Pillow
    "dicom-out": ("numpy", "pydicom", "PIL", "highdicom"),
}


def version_tuple(text):
    """``"5.10.1"`` -> ``(5, 10, 1)``; stops at the first part without digits (``"3.0rc1"`` -> ``(3, 0)``)."""
    parts = []
    for piece in str(text).split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def environment_problems(python_version, slicer_version=None):
    """Sentences saying what to install instead, or an empty list when this Python/Slicer can run the library.

    Args:
        python_version: ``sys.version_info`` or a tuple ``(major, minor, ...)``.
        slicer_version: ``(major, minor)`` of 3D Slicer, or None outside Slicer.
    """
    problems = []
    py = tuple(python_version)[:2]
    need_py = ".".join(str(v) for v in MIN_PYTHON)
    need_slicer = ".".join(str(v) for v in MIN_SLICER)
    if slicer_version is not None and tuple(slicer_version)[:2] < MIN_SLICER:
        problems.append(
            "SpineAlignment needs 3D Slicer {} or later (Python {}+); this is Slicer {} with Python {}. "
            "Install the current 3D Slicer release from download.slicer.org and install SpineAlignment "
            "there.".format(need_slicer, need_py, ".".join(str(v) for v in tuple(slicer_version)[:2]),
                            ".".join(str(v) for v in py)))
    elif py < MIN_PYTHON:
        problems.append(
            "SpineAlignment needs Python {} or later (its DICOM reader, pydicom 3, does too); this is Python {}. "
            "{}".format(need_py, ".".join(str(v) for v in py),
                        "Install 3D Slicer {} or later.".format(need_slicer) if slicer_version is not None
                        else "Use a newer Python."))
    return problems


def requirements_for(task):
    """``{import name: (pip requirement, minimum version, distribution)}`` of a task in :data:`TASKS`."""
    if task not in TASKS:
        raise ValueError("unknown task {!r}; one of {}".format(task, ", ".join(TASKS)))
    return {name: _PACKAGES[name] for name in TASKS[task]}


def missing_requirements(task, find_spec=importlib.util.find_spec, version_of=importlib.metadata.version):
    """Pip requirements of ``task`` that are absent or older than needed.

    ``find_spec`` and ``version_of`` are the look-ups (replaceable in tests). A package
    without metadata (bundled by Slicer) is trusted.
    """
    missing = []
    for module, (requirement, minimum, distribution) in requirements_for(task).items():
        if find_spec(module) is None:
            missing.append(requirement)
            continue
        try:
            found = version_of(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        if version_tuple(found) < version_tuple(minimum):
            missing.append(requirement)
    return missing

"""AASCE-layout landmark data: discovery, label hygiene, patient-level split, cached inputs.

Layout read (``../shared/datasets/aasce-train``)::

    images/<name>.jpg
    labels/<name>.jpg.mat      # MATLAB file with one array ``p2`` (68, 2), x/y pixels
    labels/angles.csv          # optional: reference AASCE triple per image
    labels/filenames.csv       # optional: image names in the order of angles.csv

Patients: images of one patient share the number before the view letter
(``sunhl-1th-02-Jan-2017-162 A AP.jpg`` and ``... 162 B AP.jpg`` are patient
``162``). Files without such a number (``...-coronal12.jpg``) cannot be tied to
a patient, so they are kept together as one group to rule out any leakage.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import SpineAlignmentError
from ..inference.preprocess import Letterbox, letterbox, normalise_intensity
from .hygiene import HygieneResult, run_hygiene

__all__ = ["Sample", "patient_id", "discover", "patient_split", "read_val_list", "split_names", "check_validation_unseen", "load_samples", "CachedSample", "import_aasce"]

log = logging.getLogger(__name__)

_PATIENT_RE = re.compile(r"-(\d+)\s+[A-Z]\s+AP")


def patient_id(file_name: str) -> str:
    """Patient key of an AASCE file name (``'162'`` for ``'...-162 A AP.jpg'``).

    Names without a number before a view letter share the key of their stem
    with digits removed (e.g. all ``...-coronalN.jpg`` files become one group).
    """
    m = _PATIENT_RE.search(file_name)
    if m:
        return m.group(1)
    stem = Path(file_name).stem
    return "group:" + re.sub(r"\d+", "#", stem)


@dataclass
class Sample:
    """One labelled image on disk."""

    name: str
    image_path: Path
    label_path: Path
    points: np.ndarray  # (68, 2) x, y original pixels, after hygiene fixes
    image_shape: tuple[int, int]  # (rows, cols)
    reference_angles: np.ndarray | None = None  # (3,) AASCE triple from angles.csv


@dataclass
class CachedSample:
    """A sample letterboxed to the network input and kept in memory."""

    name: str
    image: np.ndarray  # (H, W) uint8, normalised intensities * 255
    points: np.ndarray  # (68, 2) network-input pixels
    geometry: Letterbox
    original_points: np.ndarray  # (68, 2) original pixels
    reference_angles: np.ndarray | None = None


def _read_points(label_path: Path) -> np.ndarray:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(label_path))
    except Exception as exc:  # scipy raises several types for a bad file
        raise SpineAlignmentError(f"Label file {label_path} cannot be read as a MATLAB file ({exc}); replace it.") from exc
    if "p2" not in mat:
        raise SpineAlignmentError(f"Label file {label_path} has no 'p2' array; it must hold the (68, 2) corner points.")
    return np.asarray(mat["p2"], dtype=np.float64)


def _reference_angles(label_dir: Path) -> dict[str, np.ndarray]:
    names_csv, angles_csv = label_dir / "filenames.csv", label_dir / "angles.csv"
    if not (names_csv.exists() and angles_csv.exists()):
        return {}
    with open(names_csv, newline="") as f:
        names = [row[0].strip() for row in csv.reader(f) if row]
    with open(angles_csv, newline="") as f:
        angles = [np.array([float(v) for v in row[:3]]) for row in csv.reader(f) if row]
    return dict(zip(names, angles))


def discover(data_dir: Path) -> list[tuple[Path, Path]]:
    """(image, label) path pairs of an AASCE-layout folder, sorted by name."""
    data_dir = Path(data_dir)
    img_dir, lab_dir = data_dir / "images", data_dir / "labels"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise SpineAlignmentError(
            f"Training data folder {data_dir} must contain 'images/' and 'labels/' (AASCE layout); check --data.")
    pairs = []
    for img in sorted(img_dir.iterdir()):
        if img.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        lab = lab_dir / (img.name + ".mat")
        if lab.exists():
            pairs.append((img, lab))
        else:
            log.warning("no label file for %s; skipped", img.name)
    if not pairs:
        raise SpineAlignmentError(f"No labelled images found in {data_dir}; expected images/X.jpg with labels/X.jpg.mat.")
    return pairs


def load_samples(data_dir: Path, vertebra_names: Sequence[str] | None = None) -> tuple[list[Sample], dict[str, HygieneResult]]:
    """Read all labels, run label hygiene and return the usable samples.

    Returns:
        ``(samples, hygiene)``: samples not excluded by hygiene (with fixed points)
        and the hygiene result of every image.
    """
    pairs = discover(data_dir)
    refs = _reference_angles(Path(data_dir) / "labels")
    raw = []
    for img, lab in pairs:
        with Image.open(img) as im:
            shape = (im.size[1], im.size[0])
        raw.append((img.name, _read_points(lab), shape))
    hyg = run_hygiene(raw, vertebra_names=vertebra_names)
    samples = []
    for (img, lab), (name, _, shape) in zip(pairs, raw):
        r = hyg[name]
        if r.excluded:
            continue
        samples.append(Sample(name, img, lab, r.points, shape, refs.get(name)))
    log.info("%d labelled images, %d excluded by label hygiene, %d fixed", len(raw),
             sum(r.excluded for r in hyg.values()), sum(r.fixed for r in hyg.values()))
    return samples, hyg


def patient_split(names: Sequence[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split image names into train/validation with no patient on both sides.

    Patients are shuffled with a fixed seed and assigned to validation until
    it holds ``val_fraction`` of the images.

    Returns:
        ``(train_names, val_names)``, each sorted.
    """
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(patient_id(n), []).append(n)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    target = val_fraction * len(names)
    val: list[str] = []
    for k in keys:
        if len(val) >= target:
            break
        # Keep the big unknown-patient group in training so validation stays per-patient.
        if k.startswith("group:"):
            continue
        val.extend(groups[k])
    val_set = set(val)
    train = sorted(n for n in names if n not in val_set)
    return train, sorted(val)


def read_val_list(path: str) -> set[str]:
    """The image names a validation list (``--val-list``) names: one a line, a run's ``split.json`` (its ``val``),
    or a model folder's ``metadata.json`` (the validation films it was trained without, ``training.split.val_images``).

    Raises:
        SpineAlignmentError: the file cannot be read or is not UTF-8 text (one sentence naming it).
    """
    from ..safefiles import MAX_JSON_BYTES, read_limited

    try:  # a FIFO or a device is refused without being opened; a missing file is named as such
        text = read_limited(path, MAX_JSON_BYTES, what="validation list (--val-list)").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpineAlignmentError(f"{path}: is not UTF-8 text (byte {exc.start}); give a validation list of image "
                                  "names.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {ln.strip() for ln in text.splitlines() if ln.strip()}
    if isinstance(data, dict):
        training = data.get("training")
        split = training.get("split") if isinstance(training, dict) else None
        data = data.get("val") or data.get("val_images") or (split.get("val_images") if isinstance(split, dict) else None)
    return {str(n) for n in data} if isinstance(data, list) else set()


def split_names(names: Sequence[str], val_fraction: float = 0.2, seed: int = 0, val_list: str | None = None,
                data: str = "the dataset") -> tuple[list[str], list[str]]:
    """Train / validation image names: the names ``val_list`` (:func:`read_val_list`) names when given, so that
    two runs of different trainers can be measured on the same films; else :func:`patient_split`.

    Raises:
        SpineAlignmentError: ``val_list`` names none of ``names``.
    """
    if not val_list:
        return patient_split(names, val_fraction, seed)
    wanted = read_val_list(val_list)
    val = sorted(n for n in names if n in wanted)
    if not val:
        raise SpineAlignmentError(f"None of the images named in {val_list} is in {data}; check --val-list.")
    return sorted(n for n in names if n not in wanted), val


def check_validation_unseen(source: str, names: Sequence[str], val_names: Sequence[str], what: str) -> None:
    """Refuse a run whose validation films include films the weights it starts from trained on (its figures would
    flatter it): a later stage's first stage (``--stage1``), or the weights of ``--init-from``. ``source``: a model
    folder or its registered name (its validation films: ``metadata.json``'s ``training.split.val_images``), or a
    weights file (the ``metadata.json`` or the run's ``split.json`` beside it). Weights trained on another dataset
    (none of their validation films among ``names``), or whose split is not on record, are not checked.

    Raises:
        SpineAlignmentError: naming a leaked film and the ``--val-list`` that validates on the earlier films.
    """
    from ..models.registry import find_model

    path = Path(source)
    folder = path.parent if path.is_file() else path if path.is_dir() else find_model(str(source))
    record = next((folder / f for f in ("metadata.json", "split.json") if (folder / f).is_file()), None)
    seen = read_val_list(str(record)) if record is not None else set()
    if not seen & set(names):
        return
    leaked = sorted(set(val_names) - seen)
    if leaked:
        raise SpineAlignmentError(
            f"{len(leaked)} of this run's {len(val_names)} validation films ({leaked[0]}, ...) are training films of "
            f"{what} {source}; validate on its validation films: --val-list {record}.")


def cache_sample(sample: Sample, input_shape: tuple[int, int]) -> CachedSample:
    """Read, normalise and letterbox one sample the way inference does."""
    with Image.open(sample.image_path) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    img, geo = letterbox(normalise_intensity(pixels), input_shape)
    return CachedSample(
        name=sample.name,
        image=np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8),
        points=geo.to_input(sample.points).astype(np.float32),
        geometry=geo,
        original_points=sample.points,
        reference_angles=sample.reference_angles,
    )


def repository_root() -> Path:
    """The source tree this library sits in (``SpineAlignmentLib``'s parent folder)."""
    return Path(__file__).resolve().parents[2]


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def import_aasce(src: str | Path, out: str | Path, *, split: str = "all", limit: int | None = None,
                 val_fraction: float = 0.2, seed: int = 0, protocol: str = "coronal-spine") -> dict:
    """Write an AASCE-layout folder into the dataset format (docs/dataset-format.md).

    Every image kept by the label hygiene (:func:`load_samples`; fixed corners are written fixed,
    excluded images are left out and listed) is copied with its 68 corners as ``<stem>.json``
    (:func:`~SpineAlignmentLib.io.dataset.write_labelled_image`), and ``patients.csv`` holds the AASCE
    patient keys (:func:`patient_id`) so a trainer can hold patients out.

    Args:
        src: AASCE-layout folder (``images/``, ``labels/``).
        out: dataset folder to write (created; never inside this source tree or inside ``src``).
        split: ``train`` or ``val`` (the patient-held-out split :func:`patient_split` makes with
            ``val_fraction`` and ``seed``, the one ``spine-align train`` uses) or ``all``.
        limit: write only the first N images of the split (sorted by name).

    Returns:
        ``{"written", "excluded", "split", "patients", "out"}``: counts, excluded names with reasons.

    Raises:
        SpineAlignmentError: bad source folder, or ``out`` inside the repository or the source.
    """
    from ..io.dataset import write_labelled_image
    from ..protocols import get_protocol
    from .hygiene import summarise

    if split not in ("train", "val", "all"):
        raise SpineAlignmentError(f"split must be train, val or all, not {split!r}.")
    out = Path(out)
    for folder, what in ((repository_root(), "the SpineAlignment source tree"), (Path(src), "the source dataset")):
        if _inside(out, folder):
            raise SpineAlignmentError(f"{out}: is inside {what} ({folder}); write the dataset to a folder outside it "
                                      "(datasets never go into the repository or over their source).")
    ids = get_protocol(protocol).landmark_ids
    if len(ids) != 68:
        raise SpineAlignmentError(f"AASCE labels hold 68 vertebra corners; protocol '{protocol}' has {len(ids)} "
                                  "landmarks: use coronal-spine.")
    vnames = [ids[i].split("_")[0] for i in range(0, len(ids), 4)]
    samples, hyg = load_samples(Path(src), vertebra_names=vnames)
    names = [s.name for s in samples]
    train, val = patient_split(names, val_fraction, seed)
    chosen = set(names if split == "all" else (train if split == "train" else val))
    selected = [s for s in samples if s.name in chosen][: limit if limit else None]
    for s in selected:
        write_labelled_image(out, s.image_path, {k: (float(x), float(y)) for k, (x, y) in zip(ids, s.points)},
                             protocol, name=Path(s.name).stem, patient=patient_id(s.name))
    excluded = {name: "; ".join(f.detail for f in r.findings if f.action == "excluded")
                for name, r in hyg.items() if r.excluded}
    return {"out": str(out), "split": split, "written": len(selected),
            "patients": len({patient_id(s.name) for s in selected}),
            "hygiene": summarise(hyg), "excluded": excluded}

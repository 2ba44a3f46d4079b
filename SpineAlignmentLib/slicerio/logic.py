"""The Slicer module's logic, without Qt and without the running application.

:class:`SceneLogic` is what ``SpineAlignmentLogic`` (the module file) does: analyse a
volume into scene nodes, re-measure edited markups, guided placement, DICOM SR/SEG,
export for training, batch in a worker thread, and every decision the widget shows
(which button is enabled and why, the status and prompt texts). It works on
``slicer.mrmlScene`` with the MRML classes only, so the headless tests run it with
the ``slicer-core`` wheel (Testing/Python/test_mrml*.py, test_slicer_logic.py). The
module file adds what needs the application (pip, the PyTorch extension, the
layout, the DICOM browser) and the parameter node, and its widget only moves values
between Qt and these methods.

Slicer-facing, so camelCase like the module. Importing this file needs the standard
library only; everything else is imported at first use, after the module's
dependency check.
"""

import logging
import os
import threading

#: The model choice that asks for guided manual placement instead of a network.
MANUAL_PLACEMENT = "Manual placement"
#: The ``model`` value of :data:`MANUAL_PLACEMENT`.
MANUAL_MODEL = "manual"


def _slicer():
    import slicer

    return slicer


class SceneLogic:
    """The module's computations; usable from the Python console and headless (see the module docstring)."""

    # ---- dependencies -------------------------------------------------------------------
    def missingDependencies(self, task="measure"):
        """Pip requirements of a task ("measure", "model", "batch", "dicom-out") that are absent or too old.

        PyTorch is handled by ensureTorch (the Slicer PyTorch extension).
        """
        from ..environment import missing_requirements

        return missing_requirements(task)

    @staticmethod
    def dependencyPrompt(task, missing):
        """The question asked before installing ``missing`` for ``task`` (the logic never shows dialogs)."""
        text = ("This step needs these Python packages, which will be installed now:\n  "
                + "\n  ".join(missing) + "\n\nThis takes a few minutes; Slicer stays busy meanwhile.")
        if task == "measure":
            text += "\n\nCancel goes on without them: mm values need pydicom 3 to read the DICOM calibration, " \
                    "so distances stay in pixels unless you set the spacing override."
        return text

    # ---- what the widget shows ------------------------------------------------------------
    @staticmethod
    def modelFromChoice(text):
        """The ``model`` argument for a model-list entry (empty or :data:`MANUAL_PLACEMENT`: manual)."""
        return MANUAL_MODEL if not text or text == MANUAL_PLACEMENT else text

    @staticmethod
    def applyState(volumeNode, model):
        """(enabled, tooltip) of Apply: a single-slice volume is needed; the tooltip says why not, or what Apply does."""
        if not volumeNode:
            return False, "Select a radiograph (a scalar volume) first."
        if volumeNode.GetImageData() is None or volumeNode.GetImageData().GetDimensions()[2] != 1:
            return False, "The selected volume is not a single-slice radiograph."
        return True, ("Start guided landmark placement." if model == MANUAL_MODEL
                      else "Detect the landmarks with the model and measure.")

    def calibrationText(self, volumeNode, spacing=None):
        """The calibration shown before Apply: the override (``manual:user``), else the file's label, else why not."""
        if not volumeNode:
            return "-"
        if spacing is not None:
            return f"manual:user ({spacing[0]:g} x {spacing[1]:g} mm)"
        try:
            spacingMm, label = self.calibrationLabelForVolume(volumeNode)
        except Exception as exc:  # dependencies may be missing before first use
            logging.debug("calibration not known yet: %s", exc)
            return "determined at Apply"
        return label if spacingMm is None else f"{label} ({spacingMm[0]:g} x {spacingMm[1]:g} mm)"

    @staticmethod
    def secondFilmControls(protocol):
        """(enabled, label, tooltip) of the second-film selector for a protocol."""
        from .pairs import PAIRED_LATERAL_ROLES, pair_roles

        try:
            roles = pair_roles(protocol)
        except Exception:  # a one-film protocol
            return False, "Second film:", f"{protocol} measures one film; no second film is used."
        if roles == PAIRED_LATERAL_ROLES:
            return True, "Paired lateral:", ("Optional: the lateral film of the same patient, for T4-T12 "
                                             "kyphosis and L1-L5 lordosis (landmarks placed by hand).")
        return True, f"{roles[1].capitalize()} film:", (f"The {roles[1]} film; the input is the {roles[0]} film. "
                                                       "With both, the range of motion (IROM, dST) is computed.")

    def modelChoices(self, protocol):
        """(entries, tooltip) of the model list: the protocol's registered models, then :data:`MANUAL_PLACEMENT`."""
        models = self.modelsForProtocol(protocol)
        return models + [MANUAL_PLACEMENT], ("Registered models for this protocol, or manual placement."
                                             if models else "No model exists for this protocol yet: place the "
                                             "landmarks by hand (guided) or run a batch from landmark files.")

    @staticmethod
    def flipTTAControls(model):
        """(enabled, tooltip) of the flip test-time augmentation box: models only."""
        usesModel = model != MANUAL_MODEL
        return usesModel, ("Average the model's prediction with its mirrored one (slower, steadier)."
                           if usesModel else "Only for models: Manual placement uses your points.")

    @staticmethod
    def resultSummary(result, analysis=None):
        """The status line after a measurement: how many parameters, the calibration, the first warnings."""
        n = len(result.parameters)
        total = len(analysis.protocol.parameters) if analysis else n
        text = f"{n} of {total} parameters computed; calibration: {result.calibration}."
        if result.warnings:
            text += "\n" + "\n".join(result.warnings[:4]) + ("\n..." if len(result.warnings) > 4 else "")
        return text

    @staticmethod
    def parameterIdOfRow(analysis, row):
        """Canonical ID of a parameter-table row (read from the id column, not from the displayed title), or None."""
        if analysis is None or analysis.table_node is None:
            return None
        table = analysis.table_node.GetTable()
        if row < 0 or row >= table.GetNumberOfRows():
            return None
        return table.GetColumnByName("id").GetValue(row)

    def dicomButtonState(self, analysis):
        """(enabled, tooltip) of *Write DICOM SR...*: the tooltip says what is missing, or what it writes."""
        problem = self.dicomReportProblem(analysis)
        return not problem, problem or (
            "Write the values as a DICOM SR (TID 1500) referencing the film, and a segmentation model's masks as "
            "a DICOM SEG, into a folder (import that folder into the DICOM database to send it to a PACS).")

    # ---- models and calibration ------------------------------------------------------------
    def modelsForProtocol(self, protocol):
        """Names of the models for a protocol, in the registry's search order (user folders first).

        The folders ($SPINEALIGN_MODELS, ~/.spinealignment/models, the shipped Resources/Models) come
        from SpineAlignmentLib.models.registry.model_locations, which reads folder names only; each
        metadata.json is read directly so that opening the module never imports torch or jsonschema.
        The full schema and checksum validation happens when a model is loaded.
        """
        import json

        from ..models.registry import model_locations

        names = []
        for name, entry in model_locations().items():
            path = os.path.join(str(entry["folder"]), "metadata.json")
            try:
                with open(path, encoding="utf-8") as fh:
                    metadata = json.load(fh)
            except (OSError, ValueError):
                continue
            if isinstance(metadata, dict) and metadata.get("protocol") == protocol and metadata.get("name"):
                names.append(name)
        return names

    def exportForTraining(self, analysisOrNode, folder, protocol=None, volumeNode=None, name=None, patient=None):
        """Write the film and its current (corrected) landmarks into a training dataset folder.

        Args:
            analysisOrNode: the analysis (``analyze`` returns it) or a landmark markups node (then
                ``protocol`` and ``volumeNode`` unless the node carries them).
            folder: the dataset folder (created; docs/dataset-format.md); other films in it are kept.
            name: file stem in the dataset; default the source file's name, else the volume's name.
                The same film exported again replaces its label file.
            patient: grouping key for patient-held-out training splits (patients.csv).

        Returns:
            The landmark file written (``<name>.json``). A film of a pair gets its role in pairs.csv.
        """
        from .mrml import SceneAnalysis, analysis_for_node
        from .training_export import export_for_training, training_name

        analysis = analysisOrNode if isinstance(analysisOrNode, SceneAnalysis) else analysis_for_node(
            analysisOrNode, protocol, volumeNode)
        source = self.sourceFileOfVolume(analysis.volume_node)
        name = name or training_name(source, analysis.volume_node)
        pair = role = None
        if analysis.pair is not None:
            role = next(r for r, a in analysis.pair.analyses.items() if a is analysis)
            first = next(iter(analysis.pair.analyses.values()))
            pair = training_name(self.sourceFileOfVolume(first.volume_node), first.volume_node)
        return export_for_training(analysis, folder, source_file=source, name=name, patient=patient, pair=pair,
                                   role=role)

    def exportFilmsForTraining(self, analysis, folder):
        """*Export for training* of the widget: every film of the analysis (both of a pair); returns the status line."""
        films = analysis.pair.analyses.values() if analysis.pair else [analysis]
        written = [self.exportForTraining(film, folder) for film in films]
        return f"Exported for training: {', '.join(os.path.basename(str(p)) for p in written)} in {folder}."

    @staticmethod
    def fileForInstance(uid):
        """The file of a SOP Instance UID in Slicer's DICOM database, or None (no database)."""
        database = getattr(_slicer(), "dicomDatabase", None)
        return database.fileForInstance(uid) if database is not None else None

    def sourceFileOfVolume(self, volumeNode):
        """The file a volume was loaded from (DICOM instance or storage file), or None."""
        from .dicom_out import volume_source_file

        return volume_source_file(volumeNode, self.fileForInstance)

    def calibrationLabelForVolume(self, volumeNode):
        """(spacing_mm or None, label) for display, from the source file's header only.

        Read once per file version (SpineAlignmentLib.imaging.calibration_of_file), so changing other
        settings never re-reads the image.
        """
        path = self.sourceFileOfVolume(volumeNode)
        if path is None:
            return None, "pixels-only"
        from ..imaging.radiograph import calibration_of_file

        return calibration_of_file(path)

    def calibrationForVolume(self, volumeNode, spacing=None):
        """(spacing_mm (row, col) or None, calibration label, radiograph or None) per definitions.md 7.4.

        Millimetres never come from the volume's spacing (ITK reads Imager Pixel
        Spacing for DX/CR); they come from the file's tags through the library,
        or from the user's override.
        """
        if spacing is not None:
            return (float(spacing[0]), float(spacing[1])), "manual:user", None
        path = self.sourceFileOfVolume(volumeNode)
        if path is None:
            return None, "pixels-only", None
        from ..imaging import read_radiograph

        try:
            radiograph = read_radiograph(path)
        except ImportError as exc:  # pydicom 3 declined at the dependency prompt: go on in pixels
            logging.warning("Calibration of %s not read (%s): distances stay in pixels; set the spacing override "
                            "or install the missing package.", path, exc)
            return None, "pixels-only", None
        return radiograph.spacing_mm, radiograph.calibration, radiograph

    # ---- analysis -------------------------------------------------------------------------
    def analyze(self, volumeNode, protocol="coronal-spine", model=None, flipTTA=False, spacing=None,
                pairedVolumeNode=None):
        """Analyse a radiograph volume (or a pair of films) into scene nodes.

        Args:
            volumeNode: vtkMRMLScalarVolumeNode with one slice.
            protocol: protocol ID, e.g. "sagittal-whole-spine" or "coronal-spine".
            model: registered model name; None uses the protocol's packaged model when one exists;
                "manual" (or a protocol without a model) starts an empty analysis for guided placement.
            flipTTA: average with the mirrored prediction (models only).
            spacing: (row, col) mm per pixel to use instead of the image's (label manual:user).
            pairedVolumeNode: the second film of a pair: the extension film for lumbar-dynamic (volumeNode
                is the flexion film), the paired lateral for coronal-spine (T4-T12 and L1-L5 angles).
                A model, if any, runs on volumeNode; the second film's landmarks are placed by hand.

        Returns:
            (result, analysis): the SpineAlignmentLib Result and the SceneAnalysis holding the
            created nodes (landmark_nodes, construction_nodes, table_node, folder_item). For a pair it
            is the first film's analysis; ``analysis.pair`` holds both films and the one table.
        """
        from . import mrml

        if volumeNode is None or volumeNode.GetImageData() is None:
            raise ValueError("Select a radiograph volume with image data.")
        if pairedVolumeNode is not None:
            return self._analyzePair(volumeNode, pairedVolumeNode, protocol, model, flipTTA, spacing)
        spacingMm, label, radiograph = self.calibrationForVolume(volumeNode, spacing)
        orientation = radiograph.patient_orientation if radiograph is not None else None
        imageName = radiograph.path.name if radiograph is not None and radiograph.path else volumeNode.GetName()
        model = self._modelOrManual(protocol, model)
        if model == MANUAL_MODEL:
            analysis = mrml.create_empty_analysis(_slicer().mrmlScene, volumeNode, protocol, spacing_mm=spacingMm,
                                                  calibration=label, patient_orientation=orientation,
                                                  image=imageName, observe=True)
            return analysis.result, analysis
        result = self._predict(volumeNode, radiograph, spacingMm, label, protocol, model, flipTTA)
        result.image = imageName
        analysis = mrml.create_analysis(_slicer().mrmlScene, volumeNode, result, observe=True)
        return analysis.result, analysis

    @staticmethod
    def _modelOrManual(protocol, model):
        """``model``, or for None the protocol's packaged model, else :data:`MANUAL_MODEL`."""
        if model is not None:
            return model
        from ..batch import default_model

        return default_model(protocol) or MANUAL_MODEL

    @staticmethod
    def _predict(volumeNode, radiograph, spacingMm, label, protocol, model, flipTTA):
        """The model's result on one film (no scene changes)."""
        from ..imaging import Radiograph
        from ..pipeline import analyze
        from . import mrml

        orientation = radiograph.patient_orientation if radiograph is not None else None
        size = mrml.volume_image_size(volumeNode)
        if radiograph is None or radiograph.shape != size:
            # no readable source file (or it differs from what is shown): use the displayed pixels
            pixels = mrml.volume_pixels(volumeNode)
            radiograph = Radiograph(pixels=pixels.astype("float32"), raw=pixels, patient_orientation=orientation)
        radiograph.spacing_mm, radiograph.calibration = spacingMm, label
        return analyze(radiograph, protocol, model=model, flip_tta=flipTTA)

    def _analyzePair(self, volumeNode, pairedVolumeNode, protocol, model, flipTTA, spacing):
        from .pairs import create_pair_analysis, pair_roles

        roles = pair_roles(protocol)
        volumes = dict(zip(roles, (volumeNode, pairedVolumeNode)))
        films, radiographs = {}, {}
        for role, volume in volumes.items():
            spacingMm, label, radiograph = self.calibrationForVolume(volume, spacing)
            radiographs[role] = radiograph
            films[role] = {"spacing_mm": spacingMm, "calibration": label,
                           "patient_orientation": radiograph.patient_orientation if radiograph is not None else None,
                           "image": radiograph.path.name if radiograph is not None and radiograph.path
                           else volume.GetName()}
        landmarks = {}
        model = self._modelOrManual(protocol, model)
        if model != MANUAL_MODEL:  # the model finds the first film's landmarks; the second is placed by hand
            first = films[roles[0]]
            predicted = self._predict(volumeNode, radiographs[roles[0]], first["spacing_mm"], first["calibration"],
                                      protocol, model, flipTTA)
            landmarks[roles[0]] = predicted.landmarks
            first["model"] = predicted.model
        pair = create_pair_analysis(_slicer().mrmlScene, volumes, protocol, films=films, landmarks=landmarks)
        return pair.result, pair.analyses[roles[0]]

    def measureFromMarkups(self, markupsNode, protocol=None, volumeNode=None, pairedMarkupsNode=None,
                           pairedVolumeNode=None):
        """Re-measure from edited control points; updates lines, angles and the table. Returns the Result.

        The nodes keep re-measuring as their points are dragged. With pairedMarkupsNode (the
        extension film's or the paired lateral's landmarks) both films are measured as one pair.
        """
        from . import mrml

        if pairedMarkupsNode is not None:
            from .pairs import pair_from_markups, pair_roles

            roles = pair_roles(protocol or markupsNode.GetAttribute(mrml.ATTR_PROTOCOL))
            volumes = {r: v for r, v in zip(roles, (volumeNode, pairedVolumeNode)) if v is not None}
            pair = pair_from_markups(dict(zip(roles, (markupsNode, pairedMarkupsNode))),
                                     protocol or markupsNode.GetAttribute(mrml.ATTR_PROTOCOL), volumes)
            return pair.result
        return mrml.measure_from_markups(markupsNode, protocol, volumeNode)

    def compareMarkups(self, referenceNode, otherNode, protocol=None, volumeNode=None):
        """Compare two landmark sets of one image (e.g. model output and corrected points, or two raters).

        Returns the dict of ``SpineAlignmentLib.slicerio.mrml.compare_markups``: per-landmark errors
        (px, and mm with the reference's calibration label), parameter differences (other - reference)
        and the two table nodes it added to the scene.
        """
        from . import mrml

        return mrml.compare_markups(referenceNode, otherNode, protocol, volumeNode)

    # ---- DICOM outputs ------------------------------------------------------------------------
    def dicomReportProblem(self, analysis):
        """Why writeDicomReport cannot run now (one sentence: no result, no value, a film not from DICOM), or ""."""
        from .dicom_out import dicom_report_problem

        return dicom_report_problem(analysis, self.fileForInstance)

    def writeDicomReport(self, analysis, outputFolder, name=None):
        """Write the analysis's current values as a DICOM SR (TID 1500) that references the film(s) it was
        measured on, and its masks (a segmentation model's) as a DICOM SEG.

        Args:
            analysis: the SceneAnalysis returned by analyze() (for a pair, either film's: the pair is written).
            outputFolder: folder for <name>_sr.dcm and <name>_seg.dcm.
            name: file stem (default: the film's DICOM file name).

        Returns:
            {"sr": path} and, with masks, "seg": path.
        """
        from .dicom_out import write_dicom_report

        return write_dicom_report(analysis, outputFolder, file_for_instance=self.fileForInstance, name=name)

    # ---- guided placement -------------------------------------------------------------------
    def nextLandmark(self, analysis, skip=()):
        """Canonical ID of the next landmark to place (protocol order), or None when all are placed."""
        for landmarkId in analysis.missing_landmarks():
            if landmarkId not in skip:
                return landmarkId
        return None

    def nextPlacement(self, analysis, skip=()):
        """(film analysis, landmark ID or None, prompt) of guided placement.

        When this film is done, a pair goes on with its other film (same table, its own points, no
        skipped landmarks); None when every film is done.
        """
        nextId = self.nextLandmark(analysis, skip=skip)
        if nextId is None and analysis.pair is not None:
            for film in analysis.pair.analyses.values():
                if film is not analysis and self.nextLandmark(film) is not None:
                    analysis, nextId = film, self.nextLandmark(film)
                    break
        if nextId is None:
            return analysis, None, "All landmarks placed. Drag any point to correct it."
        spec = analysis.protocol.landmark(nextId)
        film = f" on the {analysis.volume_node.GetName()} film" if analysis.pair is not None else ""
        return analysis, nextId, f"Next landmark{film}: <b>{nextId}</b> - {spec.description}"

    def startPlacing(self, analysis, landmarkId):
        """Enter place mode for one point in the landmark's group node; the click is assigned to landmarkId."""
        spec = analysis.protocol.landmark(landmarkId)
        node = analysis.landmark_node(spec.group)
        analysis.observe()
        analysis.pending_landmark = landmarkId
        self.startPlacingInto(node)

    def startPlacingInto(self, node):
        """Enter place mode for one point in ``node``."""
        scene = _slicer().mrmlScene
        selectionNode = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        selectionNode.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selectionNode.SetActivePlaceNodeID(node.GetID())
        interactionNode = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        interactionNode.SetPlaceModePersistence(0)
        interactionNode.SetCurrentInteractionMode(interactionNode.Place)

    @staticmethod
    def setLevelAnchor(analysis, level=None, point=None, shift=None, xy=None, by="slicer"):
        """Name the analysis's vertebra chain again from one fact; markups, labels and table follow.

        Args:
            analysis: the SceneAnalysis of a model's result (``analyze`` returns it).
            level: name of the vertebra at ``point`` (RAS, e.g. a clicked position) or ``xy`` (image pixels), e.g. "T1".
            shift: instead: -1 the chain is named one level too high (its T1 is C7), +1 one level too low.
            by: who set it (the result's ``levels.anchor.by``).

        Returns:
            The new SpineAlignmentLib Result (levels confirmed, ``levels.anchor`` set).
        """
        from .level_anchor import set_level_anchor

        return set_level_anchor(analysis, level=level, ras=point, xy=xy, shift=shift, by=by)

    def stopPlacing(self):
        interactionNode = _slicer().mrmlScene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        if interactionNode is not None and interactionNode.GetCurrentInteractionMode() == interactionNode.Place:
            interactionNode.SetCurrentInteractionMode(interactionNode.ViewTransform)

    # ---- batch -----------------------------------------------------------------------------
    @staticmethod
    def batchProblem(inputs, outDir, model, landmarksDir):
        """Why a batch cannot start with these choices (one message), or ""."""
        if not inputs or not outDir:
            return "Choose an input folder (or DICOM studies) and an output folder."
        if model == MANUAL_MODEL and landmarksDir is None:
            return ("Manual placement in batch re-measures landmark files: choose the folder with "
                    "<image stem>.json or .mrk.json files as 'Landmarks', or choose a model.")
        return ""

    @staticmethod
    def batchProgress(item):
        """What the widget shows for one item of the batch queue: (finished, maximum, value, status text).

        ``item`` is a batch Progress event or the Exception that stopped the worker; ``maximum``,
        ``value`` and the text are None where they do not change.
        """
        from ..batch import BatchEvent

        if isinstance(item, Exception):
            return True, None, None, f"Batch stopped: {item}"
        text = None
        if item.event in (BatchEvent.DONE, BatchEvent.FAILED, BatchEvent.SKIPPED):
            text = (f"{item.done} done, {item.failed} failed, {item.skipped} skipped "
                    f"of {item.total} - {os.path.basename(item.image or '')}")
        elif item.event == BatchEvent.FINISHED:
            return True, max(1, item.total), item.finished_items, \
                f"Finished: {item.message}. See summary.csv and failures.csv."
        return False, max(1, item.total), item.finished_items, text

    def startBatch(self, inputs, outDir, protocol, model=None, spacing=None, landmarksDir=None, flipTTA=False,
                   progressQueue=None, callback=None):
        """Run a batch in a worker thread; progress events go to progressQueue (drained on the main thread).

        Returns:
            The BatchRunner (call .cancel() to stop submitting new images).
        """
        from ..batch import BatchOptions, BatchRunner

        if model == MANUAL_MODEL:
            if not landmarksDir:
                raise ValueError("Manual placement in batch re-measures landmark files: give landmarksDir.")
            model = None  # the landmark files are re-measured; no network is involved
        options = BatchOptions(protocol=protocol, out_dir=str(outDir), model=model,
                               spacing=tuple(spacing) if spacing else None, landmarks_dir=landmarksDir,
                               flip_tta=flipTTA)
        report = callback or (progressQueue.put if progressQueue is not None else None)
        runner = BatchRunner(inputs, options, callback=report)

        def work():
            try:
                runner.run()
            except Exception as exc:  # reported to the GUI through the queue, never lost in the thread
                logging.exception("Batch failed")
                if progressQueue is not None:
                    progressQueue.put(exc)

        threading.Thread(target=work, name="SpineAlignmentBatch", daemon=True).start()
        return runner

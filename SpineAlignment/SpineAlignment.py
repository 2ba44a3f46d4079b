"""3D Slicer module: spinal alignment on radiographs (a thin adapter over SpineAlignmentLib).

Everything that works without a GUI lives in the library: measurement
(:mod:`SpineAlignmentLib.pipeline`), the MRML layer
(:mod:`SpineAlignmentLib.slicerio.mrml`), batch processing
(:mod:`SpineAlignmentLib.batch`) and the module's logic with every decision the
widget shows (:mod:`SpineAlignmentLib.slicerio.logic`, tested headless). This file
only connects them to Slicer's GUI and to the running application.
"""

import logging
import os
import queue
import sys
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _addLibraryPath():
    """In a source checkout the library sits next to this module's folder; installed, it sits beside the file."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(candidate, "SpineAlignmentLib")) and candidate not in sys.path:
            sys.path.insert(0, candidate)
            return


_addLibraryPath()

# The version check comes first and runs on any Python 3, so that an older Slicer says what to
# install instead of failing at import (SpineAlignmentLib.environment is the one place for it).
from SpineAlignmentLib.environment import environment_problems  # noqa: E402


def _slicerVersion():
    try:
        return (int(slicer.app.majorVersion), int(slicer.app.minorVersion))
    except (AttributeError, TypeError, ValueError):
        return None


ENVIRONMENT_PROBLEMS = environment_problems(sys.version_info, _slicerVersion())
if ENVIRONMENT_PROBLEMS:
    logging.error("SpineAlignment: %s", " ".join(ENVIRONMENT_PROBLEMS))
    PROTOCOL_IDS = ("coronal-spine",)  # the module shows the problem instead of its GUI
    SceneLogic = object  # nothing of the library runs here
else:
    # Only pure-Python parts of the library are imported here; numpy-, pydicom- and
    # torch-dependent parts are imported after the dependency check at first use.
    from SpineAlignmentLib.protocols import PROTOCOL_IDS  # noqa: E402
    from SpineAlignmentLib.slicerio.logic import MANUAL_MODEL, SceneLogic  # noqa: E402

#: The bundled film offered in Slicer's Sample Data module (Resources/SampleData/README.md says where it is from).
SAMPLE_FILM = "SampleData/aasce-sample-AP.jpg"


def _resourcePath(filename):
    """Module resources next to the module file (installed) or at the repository top (source tree), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (here, os.path.dirname(here)):
        path = os.path.join(base, "Resources", filename)
        if os.path.exists(path):
            return path
    return None


def registerSampleData():
    """Offer the bundled AP film in the Sample Data module (called once Slicer has started)."""
    import hashlib

    import SampleData

    path = _resourcePath(SAMPLE_FILM)
    if path is None:
        logging.warning("SpineAlignment sample film not found; Sample Data entry not registered.")
        return
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SpineAlignment",
        sampleName="SpineAlignmentAP",
        uris=qt.QUrl.fromLocalFile(path).toString(),
        fileNames="aasce-sample-AP.jpg",
        nodeNames="SpineAlignmentAP",
        checksums=f"SHA256:{digest}",
        thumbnailFileName=_resourcePath("Icons/SpineAlignment.png"),
        loadFileType="VolumeFile",
    )


#
# SpineAlignment
#


class SpineAlignment(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Spine Alignment"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = ["Markups", "Tables", "SubjectHierarchy"]
        self.parent.contributors = ["SpineAlignment contributors"]
        self.parent.helpText = """
Measures spinal alignment on a radiograph: landmarks from a model or placed by hand,
clinical parameters (sagittal, cervical, coronal Cobb and AASCE angles, shoulder balance,
lumbar segmental motion) drawn on the image and listed in a table.
<ul>
<li>Choose the radiograph, the protocol and a model (or "Manual placement"), press Apply.</li>
<li>Drag any landmark: every parameter that depends on it is recomputed at once.</li>
<li>Guided placement asks for the next landmark by name; values appear as soon as their landmarks exist.</li>
<li>Distances carry a calibration label: without a calibrated pixel spacing they stay in pixels.</li>
<li>Batch: analyse a folder (or DICOM studies) into result JSON, Slicer markups and overlay pictures.</li>
</ul>
From the Python console: <code>SpineAlignmentLogic().analyze(volumeNode, protocol="coronal-spine", model=None)</code>.
See the <a href="https://github.com/SpineAlignment/SpineAlignment">project page</a> for the definitions of every parameter.
Needs 3D Slicer 5.10 or later (Python 3.10+).
"""
        if ENVIRONMENT_PROBLEMS:
            self.parent.helpText = "<p><b>" + " ".join(ENVIRONMENT_PROBLEMS) + "</b></p>" + self.parent.helpText
        else:
            slicer.app.connect("startupCompleted()", registerSampleData)
        self.parent.acknowledgementText = """
Developed by the SpineAlignment contributors. Built on 3D Slicer, MONAI and PyTorch.
Parameter definitions follow the cited clinical studies (see the project documentation);
the AASCE 2019 challenge data (SpineWeb dataset 16) was used for the coronal model.
"""


#
# SpineAlignmentParameterNode
#


@parameterNodeWrapper
class SpineAlignmentParameterNode:
    """
    The parameters needed by the module.

    inputVolume - the radiograph.
    pairedVolume - the second film of a pair (lumbar-dynamic: extension; coronal-spine: the paired lateral).
    protocol - protocol ID (protocols.md).
    flipTTA - average the model's prediction with its mirrored one.
    useSpacingOverride - use spacingRow/spacingColumn (mm per pixel) instead of the image's.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    pairedVolume: Optional[vtkMRMLScalarVolumeNode]
    protocol: Annotated[str, Choice(list(PROTOCOL_IDS))] = "coronal-spine"
    flipTTA: bool = False
    useSpacingOverride: bool = False
    spacingRow: Annotated[float, WithinRange(0.001, 5.0)] = 0.2
    spacingColumn: Annotated[float, WithinRange(0.001, 5.0)] = 0.2


#
# SpineAlignmentWidget
#


class SpineAlignmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI: binds the .ui to the parameter node and moves values between Qt and the logic.

    Every decision (what is enabled and why, status and prompt texts) is a logic method,
    tested headless (SpineAlignmentLib.slicerio.logic); the methods here only read and set widgets.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.analysis = None
        self.skippedLandmarks = set()
        self.placing = False
        self.batchRunner = None
        self.batchQueue = queue.Queue()
        self.batchTimer = qt.QTimer()
        self.batchTimer.setInterval(200)
        self.batchTimer.connect("timeout()", self.drainBatchQueue)
        self.batchDicomFiles = []

    def resourcePath(self, filename):
        return _resourcePath(filename) or ScriptedLoadableModuleWidget.resourcePath(self, filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if ENVIRONMENT_PROBLEMS:
            # this Slicer's Python cannot run the library: say what to install, offer nothing else
            label = qt.QLabel(" ".join(ENVIRONMENT_PROBLEMS))
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineAlignment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SpineAlignmentLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.protocolComboBox.connect("currentIndexChanged(int)", self.onProtocolChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.startPlacementButton.connect("clicked(bool)", self.onStartPlacement)
        self.ui.skipLandmarkButton.connect("clicked(bool)", self.onSkipLandmark)
        self.ui.stopPlacementButton.connect("clicked(bool)", self.onStopPlacement)
        self.ui.exportCSVButton.connect("clicked(bool)", self.onExportCSV)
        self.ui.exportTrainingButton.connect("clicked(bool)", self.onExportForTraining)
        self.ui.writeDicomButton.connect("clicked(bool)", self.onWriteDicom)
        self.ui.batchRunButton.connect("clicked(bool)", self.onBatchRun)
        self.ui.batchCancelButton.connect("clicked(bool)", self.onBatchCancel)
        self.ui.batchDicomButton.connect("clicked(bool)", self.onBatchUseDicomStudies)
        self.ui.parameterTableView.connect("selectionChanged()", self.onTableSelectionChanged)
        self.ui.parameterTableView.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.ui.parameterTableView.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        # level anchor: "T1 is here" and "Levels up/down" re-name the model's chain (no network re-run)
        row = qt.QHBoxLayout()
        self.levelT1Button = qt.QPushButton("T1 is here")
        self.levelT1Button.toolTip = "Then click the vertebra that is T1: the 17 vertebrae are named again from it."
        self.levelUpButton = qt.QPushButton("Levels \u2191")
        self.levelUpButton.toolTip = "Every name moves one vertebra up (the chain was named one level too low: its T1 is T2)."
        self.levelDownButton = qt.QPushButton("Levels \u2193")
        self.levelDownButton.toolTip = "Every name moves one vertebra down (the chain was named one level too high: its T1 is C7)."
        for button in (self.levelT1Button, self.levelUpButton, self.levelDownButton):
            row.addWidget(button)
        self.ui.resultsCollapsibleButton.layout().addLayout(row)
        self.levelT1Button.connect("clicked(bool)", self.onLevelT1)
        self.levelUpButton.connect("clicked(bool)", lambda: self.onLevelShift(1))
        self.levelDownButton.connect("clicked(bool)", lambda: self.onLevelShift(-1))

        self.initializeParameterNode()
        self.onProtocolChanged()
        self.updatePlacementButtons()

    def cleanup(self) -> None:
        if ENVIRONMENT_PROBLEMS:
            return
        self.removeObservers()
        self.onStopPlacement()
        self.batchTimer.stop()
        if self.batchRunner is not None:
            self.batchRunner.cancel()
        self.cleanupAnalysis()

    def enter(self) -> None:
        if not ENVIRONMENT_PROBLEMS:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode and not ENVIRONMENT_PROBLEMS:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.onStopPlacement()
        self.analysis = None  # the library removes its own observers on scene close
        self.ui.parameterTableView.setMRMLTableNode(None)
        self.ui.exportCSVButton.enabled = False
        self.ui.exportTrainingButton.enabled = False
        self.updateDicomButton()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[SpineAlignmentParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def selectedModel(self):
        return self.logic.modelFromChoice(self.ui.modelComboBox.currentText)

    def spacingOverride(self):
        p = self._parameterNode
        if p is None or not p.useSpacingOverride:
            return None
        return (p.spacingRow, p.spacingColumn)

    def _checkCanApply(self, caller=None, event=None) -> None:
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        self.ui.applyButton.enabled, self.ui.applyButton.toolTip = self.logic.applyState(volume, self.selectedModel())
        self.ui.calibrationLabel.text = self.logic.calibrationText(volume, self.spacingOverride())

    def onProtocolChanged(self, index=None) -> None:
        protocol = self.ui.protocolComboBox.currentText or "coronal-spine"
        selector = self.ui.pairedVolumeSelector
        selector.enabled, self.ui.pairedVolumeLabel.text, selector.toolTip = self.logic.secondFilmControls(protocol)
        entries, self.ui.modelComboBox.toolTip = self.logic.modelChoices(protocol)
        self.ui.modelComboBox.clear()
        for name in entries:
            self.ui.modelComboBox.addItem(name)
        self._checkCanApply()

    def onModelChanged(self, index=None) -> None:
        self.ui.flipTTACheckBox.enabled, self.ui.flipTTACheckBox.toolTip = self.logic.flipTTAControls(
            self.selectedModel())
        self._checkCanApply()

    # ---- analysis ----------------------------------------------------------------------
    def onApplyButton(self) -> None:
        p = self._parameterNode
        model = self.selectedModel()
        if not self.ensureDependencies("measure" if model == MANUAL_MODEL else "model"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to analyse the radiograph.", waitCursor=True):
            self.onStopPlacement()
            paired = p.pairedVolume if self.ui.pairedVolumeSelector.enabled else None
            result, analysis = self.logic.analyze(p.inputVolume, protocol=p.protocol, model=model, flipTTA=p.flipTTA,
                                                  spacing=self.spacingOverride(), pairedVolumeNode=paired)
            self.showAnalysis(analysis)
            if model == MANUAL_MODEL:
                self.onStartPlacement()
            else:
                self.ui.statusLabel.text = self.logic.resultSummary(result, self.analysis)

    def ensureDependencies(self, task):
        """Ask before installing what ``task`` needs (the logic never shows dialogs); True to go on.

        Only what the task imports is asked for (SpineAlignmentLib.environment.TASKS): hand placement
        needs no PyTorch or MONAI. Declining there still goes on, with distances in pixels unless the
        spacing override is set; declining for a model stops, pointing to Manual placement.
        """
        needModel = task == "model"
        missing = self.logic.missingDependencies(task)
        if not missing:
            return self.logic.ensureTorch() if needModel else True
        if not slicer.util.confirmOkCancelDisplay(self.logic.dependencyPrompt(task, missing), "Install Python packages"):
            if task == "measure":
                return True
            self.ui.statusLabel.text = "Not installed: choose Manual placement to place the landmarks by hand."
            return False
        with slicer.util.tryWithErrorDisplay("Could not install the Python packages.", waitCursor=True):
            self.logic.installDependencies(missing)
            return self.logic.ensureTorch() if needModel else True
        return False

    def cleanupAnalysis(self) -> None:
        if self.analysis is not None:
            (self.analysis.pair or self.analysis).cleanup()
            self.analysis = None

    def showAnalysis(self, analysis) -> None:
        if self.analysis is not None and self.analysis is not analysis:
            self.cleanupAnalysis()
        self.analysis = analysis
        for film in (analysis.pair.analyses.values() if analysis.pair else [analysis]):
            film.listeners.append(self.onAnalysisUpdated)
        self.ui.parameterTableView.setMRMLTableNode(analysis.table_node)
        self.ui.exportCSVButton.enabled = True
        self.ui.exportTrainingButton.enabled = True
        self.logic.showTableInLayout(analysis.table_node)
        self.updateDicomButton()

    def onAnalysisUpdated(self, analysis, changed) -> None:
        self.ui.statusLabel.text = self.logic.resultSummary(analysis.result, self.analysis)
        self.updateDicomButton()
        if self.placing:
            self.promptNextLandmark()

    def selectedParameterId(self):
        """Canonical ID of the selected table row (the logic reads the id column, not the displayed title)."""
        view = self.ui.parameterTableView
        indexes = view.selectionModel().selectedIndexes() if view.selectionModel() else []
        if not indexes:
            return None
        source = view.sortFilterProxyModel().mapToSource(indexes[0])
        model = view.tableModel()
        row = model.mrmlTableRowIndex(source) if hasattr(model, "mrmlTableRowIndex") else source.row()
        return self.logic.parameterIdOfRow(self.analysis, row)

    def onTableSelectionChanged(self) -> None:
        if self.analysis is not None:
            self.analysis.highlight(self.selectedParameterId())

    def onExportCSV(self) -> None:
        if self.analysis is None:
            return
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Export parameters",
                                              f"{self.analysis.protocol.id}-parameters.csv", "CSV files (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not write the CSV file.", waitCursor=True):
                self.analysis.export_csv(path)
                self.ui.statusLabel.text = f"Parameters written to {path}."

    def onExportForTraining(self) -> None:
        if self.analysis is None:
            return
        settings = qt.QSettings()
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Training dataset folder",
                                                     settings.value("SpineAlignment/trainingFolder", ""))
        if not folder:
            return
        settings.setValue("SpineAlignment/trainingFolder", folder)
        with slicer.util.tryWithErrorDisplay("Could not export the film for training.", waitCursor=True):
            self.ui.statusLabel.text = self.logic.exportFilmsForTraining(self.analysis, folder)

    def updateDicomButton(self) -> None:
        self.ui.writeDicomButton.enabled, self.ui.writeDicomButton.toolTip = self.logic.dicomButtonState(self.analysis)

    def onWriteDicom(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder for the DICOM SR")
        if folder:
            with slicer.util.tryWithErrorDisplay("Could not write the DICOM SR.", waitCursor=True):
                written = self.logic.writeDicomReport(self.analysis, folder)
                self.ui.statusLabel.text = "Written: " + ", ".join(str(p) for p in written.values())

    # ---- guided placement --------------------------------------------------------------
    def updatePlacementButtons(self) -> None:
        self.ui.startPlacementButton.enabled = self.analysis is not None and not self.placing
        self.ui.skipLandmarkButton.enabled = self.placing
        self.ui.stopPlacementButton.enabled = self.placing

    def onStartPlacement(self) -> None:
        if self.analysis is None:
            return
        self.placing = True
        self.skippedLandmarks = set()
        self.promptNextLandmark()

    def promptNextLandmark(self) -> None:
        film, nextId, self.ui.nextLandmarkLabel.text = self.logic.nextPlacement(self.analysis, self.skippedLandmarks)
        if film is not self.analysis:  # a pair goes on with its other film
            self.analysis, self.skippedLandmarks = film, set()
        if nextId is None:
            self.onStopPlacement()
            return
        self.logic.startPlacing(self.analysis, nextId)
        self.updatePlacementButtons()

    def onSkipLandmark(self) -> None:
        if self.analysis is not None and self.analysis.pending_landmark:
            self.skippedLandmarks.add(self.analysis.pending_landmark)
            self.promptNextLandmark()

    def onStopPlacement(self) -> None:
        self.placing = False
        if self.analysis is not None:
            self.analysis.pending_landmark = None
        self.logic.stopPlacing()
        self.updatePlacementButtons()

    # ---- level anchor: "T1 is here" and "Levels up/down" (SpineAlignmentLib.slicerio.level_anchor) ----------
    def onLevelShift(self, shift) -> None:
        if self.analysis is not None:
            with slicer.util.tryWithErrorDisplay("Could not name the vertebrae again.", waitCursor=True):
                result = self.logic.setLevelAnchor(self.analysis, shift=shift)
                self.ui.statusLabel.text = self.logic.resultSummary(result, self.analysis)

    def onLevelT1(self) -> None:
        if self.analysis is None:
            return
        self.onStopPlacement()
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "T1 is here")
        node.AddObserver(node.PointPositionDefinedEvent, self.onLevelT1Placed)
        self.logic.startPlacingInto(node)
        self.ui.statusLabel.text = "Click the middle of the vertebra that is T1."

    def onLevelT1Placed(self, node, event) -> None:
        ras = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(0, ras)
        qt.QTimer.singleShot(0, lambda: slicer.mrmlScene.RemoveNode(node))  # not inside its own event
        with slicer.util.tryWithErrorDisplay("Could not name the vertebrae again.", waitCursor=True):
            result = self.logic.setLevelAnchor(self.analysis, level="T1", point=ras)
            self.ui.statusLabel.text = self.logic.resultSummary(result, self.analysis)

    # ---- batch --------------------------------------------------------------------------
    def onBatchUseDicomStudies(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not read the DICOM browser selection."):
            self.batchDicomFiles = self.logic.filesOfSelectedDicomStudies()
            self.ui.batchStatusLabel.text = f"{len(self.batchDicomFiles)} DICOM files from the selected studies."

    def onBatchRun(self) -> None:
        p = self._parameterNode
        inputs = list(self.batchDicomFiles) or ([self.ui.batchInputPathLineEdit.currentPath]
                                                if self.ui.batchInputPathLineEdit.currentPath else [])
        outDir = self.ui.batchOutputPathLineEdit.currentPath
        model = self.selectedModel()
        landmarksDir = self.ui.batchLandmarksPathLineEdit.currentPath or None
        problem = self.logic.batchProblem(inputs, outDir, model, landmarksDir)
        if problem:
            slicer.util.errorDisplay(problem)
            return
        if not self.ensureDependencies("batch") or (landmarksDir is None and not self.ensureDependencies("model")):
            return
        with slicer.util.tryWithErrorDisplay("Could not start the batch.", waitCursor=True):
            self.batchRunner = self.logic.startBatch(inputs, outDir, p.protocol, model=model,
                                                     spacing=self.spacingOverride(), landmarksDir=landmarksDir,
                                                     flipTTA=p.flipTTA, progressQueue=self.batchQueue)
            self.ui.batchRunButton.enabled = False
            self.ui.batchCancelButton.enabled = True
            self.ui.batchProgressBar.value = 0
            self.batchTimer.start()

    def onBatchCancel(self) -> None:
        if self.batchRunner is not None:
            self.batchRunner.cancel()
            self.ui.batchStatusLabel.text = "Cancelling: images already running finish and are saved."
            self.ui.batchCancelButton.enabled = False

    def drainBatchQueue(self) -> None:
        """Runs on the main thread (QTimer): the worker thread only puts events into the queue."""
        while True:
            try:
                item = self.batchQueue.get_nowait()
            except queue.Empty:
                return
            finished, maximum, value, text = self.logic.batchProgress(item)
            if maximum is not None:
                self.ui.batchProgressBar.maximum, self.ui.batchProgressBar.value = maximum, value
            if text:
                self.ui.batchStatusLabel.text = text
            if finished:
                self.batchTimer.stop()
                self.batchRunner, self.batchDicomFiles = None, []
                self.ui.batchRunButton.enabled, self.ui.batchCancelButton.enabled = True, False
                return


#
# SpineAlignmentLogic
#


class SpineAlignmentLogic(ScriptedLoadableModuleLogic, SceneLogic):
    """Computation for the module; usable from the Python console without the GUI.

    Everything but the parameter node and the calls into the running application is
    SpineAlignmentLib.slicerio.logic.SceneLogic (tested headless with slicer-core).
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SpineAlignmentParameterNode(super().getParameterNode())

    # ---- the console entry points (README), documented in SceneLogic ---------------------------
    def analyze(self, volumeNode, protocol="coronal-spine", model=None, flipTTA=False, spacing=None,
                pairedVolumeNode=None):
        """Analyse a radiograph volume (or a pair) into scene nodes; returns (result, analysis). See SceneLogic."""
        return super().analyze(volumeNode, protocol, model, flipTTA, spacing, pairedVolumeNode)

    def measureFromMarkups(self, markupsNode, protocol=None, volumeNode=None, pairedMarkupsNode=None,
                           pairedVolumeNode=None):
        """Re-measure from edited control points; returns the Result. See SceneLogic."""
        return super().measureFromMarkups(markupsNode, protocol, volumeNode, pairedMarkupsNode, pairedVolumeNode)

    def startBatch(self, inputs, outDir, protocol, model=None, spacing=None, landmarksDir=None, flipTTA=False,
                   progressQueue=None, callback=None):
        """Run a batch in a worker thread; returns the BatchRunner. See SceneLogic."""
        return super().startBatch(inputs, outDir, protocol, model, spacing, landmarksDir, flipTTA, progressQueue,
                                  callback)

    def missingDependencies(self, task="measure"):
        """Pip requirements of a task that are absent or too old. See SceneLogic."""
        return super().missingDependencies(task)

    # ---- calls into the running application --------------------------------------------------

    def installDependencies(self, requirements):
        """Install with Slicer's pip (slicer.util.pip_install); called only after the user agreed."""
        logging.info("Installing %s", " ".join(requirements))
        slicer.util.pip_install(" ".join(requirements))  # no shell is involved: ">=" needs no quoting

    def ensureTorch(self):
        """PyTorch through the Slicer PyTorch extension (it picks the build for this computer)."""
        try:
            import torch  # noqa: F401
            return True
        except ImportError:
            pass
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("Models need PyTorch: install the 'PyTorch' extension from the Extensions Manager, "
                               "restart Slicer and try again (or choose Manual placement).") from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(askConfirmation=True)
            if torch is None:
                raise RuntimeError("PyTorch is needed for models and was not installed; choose Manual placement "
                                   "or install it with the PyTorch Utils module.")
        return True

    def showTableInLayout(self, tableNode):
        """Show the parameter table in the layout's table view (adds one if the layout has none)."""
        if not hasattr(slicer, "app") or slicer.app.layoutManager() is None:
            return
        layoutManager = slicer.app.layoutManager()
        if layoutManager.tableWidget(0) is None or not layoutManager.tableWidget(0).isVisible():
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetActiveTableID(tableNode.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def filesOfSelectedDicomStudies(self):
        """Files of the studies selected in Slicer's DICOM browser."""
        browser = slicer.modules.dicom.widgetRepresentation().self().browserWidget.dicomBrowser
        studies = browser.dicomTableManager().currentStudiesSelection()
        if not studies:
            raise ValueError("Select one or more studies in the DICOM browser first.")
        files = []
        for study in studies:
            for series in slicer.dicomDatabase.seriesForStudy(study):
                files.extend(slicer.dicomDatabase.filesForSeries(series))
        return files


#
# SpineAlignmentTest
#


class SpineAlignmentTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: analyse a generated radiograph, place landmarks, move one, check the table.

    The scenarios are SpineAlignmentLib.slicerio.selftest (the headless tests run them too).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AnalyzeMoveUpdate()
        self.setUp()
        self.test_ExportAndReload()
        self.setUp()
        self.test_PairMoveUpdate()

    @staticmethod
    def syntheticLateral():
        """45 landmarks of a plausible lateral spine facing +x (pixels), and a matching generated image."""
        from SpineAlignmentLib.slicerio.selftest import synthetic_lateral

        return synthetic_lateral()

    def test_AnalyzeMoveUpdate(self):
        from SpineAlignmentLib.slicerio.selftest import analyze_move_update

        analyze_move_update(self, SpineAlignmentLogic())

    def test_ExportAndReload(self):
        from SpineAlignmentLib.slicerio.selftest import export_and_reload

        export_and_reload(self, SpineAlignmentLogic())

    def test_PairMoveUpdate(self):
        from SpineAlignmentLib.slicerio.selftest import pair_move_update

        pair_move_update(self, SpineAlignmentLogic())

"""Exceptions with messages a user can act on.

Every error raised for bad input derives from :class:`SpineAlignmentError`; the
CLI prints its message as one sentence and exits non-zero, and the Slicer module
shows it in a status line. Messages name the file (or value) and say what to do.
"""


class SpineAlignmentError(Exception):
    """Base class for input problems a user can fix."""


class ProtocolError(SpineAlignmentError):
    """Unknown protocol, landmark or parameter ID."""


class LandmarkError(SpineAlignmentError):
    """Landmark file or landmark values that cannot be used."""


class RadiographError(SpineAlignmentError):
    """An image file that cannot be read as a single-frame grayscale radiograph."""


class CalibrationError(SpineAlignmentError):
    """Spacing values that cannot be used (zero, negative, non-finite)."""


class OrientationError(RadiographError, LandmarkError):
    """A Patient Orientation value that is not two orthogonal DICOM direction codes."""


class ModelError(SpineAlignmentError):
    """A model folder, metadata file or weights file that cannot be used."""


class OutputError(SpineAlignmentError):
    """The output folder cannot be created or written (an existing file, read-only, full disk, no permission).

    A batch stops at the first one (every later image would fail the same way),
    keeps what it finished and says what to free or fix before resuming.
    """


class ManifestError(SpineAlignmentError):
    """A pairs manifest (``batch --pairs``) that cannot be read, or a row of it that makes no pair."""

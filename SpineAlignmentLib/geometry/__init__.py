"""Pure-NumPy geometry: frame, signed primitives and one function per parameter."""

from .measurement import Construct, Measurement  # noqa: F401
from .primitives import Frame, kyph, lord, mid, offset, phi, slope, vtilt, wrap180  # noqa: F401

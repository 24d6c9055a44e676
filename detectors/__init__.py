"""Streaming detectors, one per module, each following :class:`detectors.base.Detector`."""

from detectors.base import AccelBatch, Detection, Detector, Roster, Severity
from detectors.fall import FallDetector, FallSettings

__all__ = [
    "AccelBatch",
    "Detection",
    "Detector",
    "FallDetector",
    "FallSettings",
    "Roster",
    "Severity",
]

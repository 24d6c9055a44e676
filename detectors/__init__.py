"""Streaming detectors on numpy, one per module, all following :class:`detectors.base.Detector`."""

from detectors.base import (
    AccelBatch,
    Batch,
    BatchStream,
    Detection,
    Detector,
    ReadingBatch,
    Roster,
    Severity,
    dispatch,
    tick_all,
)
from detectors.bed_exit import BedExitDetector, BedExitSettings
from detectors.care import CARE_TABLE, Care, CareLimits, CareTable
from detectors.device_health import DeviceHealthDetector, DeviceHealthSettings
from detectors.fall import FallDetector, FallSettings
from detectors.inactivity import InactivityDetector, InactivitySettings
from detectors.morning import MorningDetector, MorningSettings
from detectors.sos import SosDetector, SosSettings
from detectors.vitals import VitalsDetector, VitalsSettings
from detectors.wandering import WanderingDetector, WanderingSettings
from homecare.frames import frame_stats

__all__ = [
    "CARE_TABLE",
    "AccelBatch",
    "Batch",
    "BatchStream",
    "BedExitDetector",
    "BedExitSettings",
    "Care",
    "CareLimits",
    "CareTable",
    "Detection",
    "Detector",
    "DeviceHealthDetector",
    "DeviceHealthSettings",
    "FallDetector",
    "FallSettings",
    "InactivityDetector",
    "InactivitySettings",
    "MorningDetector",
    "MorningSettings",
    "ReadingBatch",
    "Roster",
    "Severity",
    "SosDetector",
    "SosSettings",
    "VitalsDetector",
    "VitalsSettings",
    "WanderingDetector",
    "WanderingSettings",
    "dispatch",
    "frame_stats",
    "tick_all",
]

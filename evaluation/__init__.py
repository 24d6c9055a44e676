"""Judging the detectors: the simulated cohort and recorded traces (``homecare evaluate``)."""

__all__ = ["cli", "cohort", "replay"]
"""Modules the rest of the project imports; the others are this package's own."""

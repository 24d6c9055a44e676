"""Judging the detectors: the simulated cohort and recorded traces (``homecare evaluate``)."""

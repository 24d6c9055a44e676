"""Test and demo harness: real local servers (broker, influxd), the stand-ins for the call
centre, the SMS/push gateway and SMTP, and ``homecare demo``. No production module imports it."""

__all__ = ["demo", "servers", "standins"]
"""Modules the rest of the project imports; the others are this package's own."""

"""Test and demo harness: real local servers (broker, influxd), an MQTT 3.1.1 client as
devices and apps speak it, the stand-ins for the call centre, the SMS/push gateway and SMTP,
and ``homecare demo``. No production module imports it."""

__all__ = ["demo", "mqtt_client", "servers", "standins"]
"""Modules the rest of the project imports; the others are this package's own."""

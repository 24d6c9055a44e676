"""Shared core of the homecare telemetry platform: the wire contract, settings and servers."""

__all__ = [
    "alerts",
    "contract",
    "edge",
    "errors",
    "frames",
    "influx",
    "runtime",
    "settings",
    "status",
]
"""Modules the rest of the project imports; the others are this package's own."""

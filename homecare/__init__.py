"""Shared core of the homecare telemetry platform: the wire contract, settings and servers."""

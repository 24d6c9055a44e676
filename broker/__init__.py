"""The NATS broker's streams and durable consumers: ``homecare broker``."""

__all__ = ["cli", "provision"]
"""Modules the rest of the project imports; the others are this package's own."""

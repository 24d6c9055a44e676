"""Device accounts and certificates on the broker: ``homecare devices``."""

__all__ = ["cli"]
"""Modules the rest of the project imports; the others are this package's own."""

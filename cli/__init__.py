"""The ``homecare`` command: the composition root, the only package that imports every service."""

__all__ = ["main"]
"""Modules the rest of the project imports; the others are this package's own."""

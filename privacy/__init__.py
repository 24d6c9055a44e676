"""Erasure of one elder across every store: ``homecare elder forget``."""

__all__ = ["forget"]
"""Modules the rest of the project imports; the others are this package's own."""

"""Escalation: alerts → the ladder → the call centre, families and apps."""

__all__ = ["cli", "ladder", "notification", "registry", "store"]
"""Modules the rest of the project imports; the others are this package's own."""

"""Erasure of one elder across every store: ``homecare elder forget``."""

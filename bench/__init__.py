"""Benchmarks: throughput and latency measured against the real servers (``homecare bench``).

The commands are in :mod:`bench.cli`, which loads a benchmark only when it runs.
"""

__all__ = ["city", "cli", "detect", "escalate", "ingest", "sessions", "soak", "storage"]

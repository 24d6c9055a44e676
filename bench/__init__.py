"""Benchmarks: throughput and latency measured against the real servers (``homecare bench``).

The commands are in :mod:`bench.cli`, which loads a benchmark only when it runs.
"""

__all__ = ["cli", "detect", "escalate", "ingest", "soak", "storage"]

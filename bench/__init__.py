"""Benchmarks: throughput and latency measured against the real servers (``homecare bench``)."""

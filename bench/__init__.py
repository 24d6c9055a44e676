"""Benchmarks: throughput and latency measured against the real servers (``homecare bench``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

DAY_S = 86400
BENCH_LOCAL_HOUR = 10


def daytime(start: float, hour: int = BENCH_LOCAL_HOUR) -> float:
    """The UTC offset that makes ``start`` ``hour``:00 local time for simulated elders.

    Wearables charge at night, so traffic depends on the elders' clock: the benchmarks
    run at their morning (everyone up, wearables on), whatever the hour here.

    >>> daytime(0.0)  # midnight UTC: 10:00 local is UTC+10
    36000.0
    >>> (86400 * 3 + 3600 * 14 + daytime(86400 * 3 + 3600 * 14)) % 86400 / 3600
    10.0
    """
    return (hour * 3600.0 - start) % DAY_S


def emit(report: dict[str, Any], json_out: Path | None) -> None:
    """Print a benchmark's figures as JSON, and write them to ``--json`` when given."""
    text = json.dumps(report, indent=2)
    typer.echo(text)
    if json_out:
        json_out.write_text(text + "\n")

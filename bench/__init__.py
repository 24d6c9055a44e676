"""Benchmarks: throughput and latency measured against the real servers (``homecare bench``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

__all__ = ["detect", "emit", "escalate", "ingest", "soak", "storage"]
"""Modules the rest of the project imports (the command line), and :func:`emit`."""


def emit(report: dict[str, Any], json_out: Path | None) -> None:
    """Print a benchmark's figures as JSON, and write them to ``--json`` when given."""
    text = json.dumps(report, indent=2)
    typer.echo(text)
    if json_out:
        json_out.write_text(text + "\n")

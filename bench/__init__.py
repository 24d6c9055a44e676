"""Benchmarks: throughput and latency measured against the real servers (``homecare bench``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def emit(report: dict[str, Any], json_out: Path | None) -> None:
    """Print a benchmark's figures as JSON, and write them to ``--json`` when given."""
    text = json.dumps(report, indent=2)
    typer.echo(text)
    if json_out:
        json_out.write_text(text + "\n")

"""A service's status file: counts for operators and benchmarks, liveness for healthchecks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["read_status", "write_status"]


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``status`` and the time it was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status | {"updated_at": time.time()}))
    tmp.replace(path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status written, or ``None`` before the first."""
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None

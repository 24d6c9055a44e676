"""The one protocol every detector follows, and the batches they consume.

A detector holds the state of many elders (or devices) in numpy arrays, one row
each, and consumes a *batch* — readings of many rows at once — in one call. It
returns :class:`Detection` objects: scoring and deciding happen inside the
detector, the alert lifecycle (ids, grace windows, escalation) happens elsewhere.
Rows are small integers handed out by :class:`Roster`; a detector grows its arrays
when it first sees a higher row.

>>> roster = Roster()
>>> roster.rows(["e1", "e2", "e1"]).tolist()
[0, 1, 0]
>>> len(roster)
2
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]
Times = npt.NDArray[np.float64]
Rows = npt.NDArray[np.int64]


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Detection:
    """A detector's finding: what, for which row, when, and the numbers behind it."""

    kind: str
    row: int
    ts: float
    severity: Severity
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccelBatch:
    """Accelerometer frames of many wearables, all at one sample ``rate``.

    ``accel[i]`` holds frame *i*'s samples (N×3, g) starting at ``ts[i]``; a row may
    appear several times in one batch, in time order.
    """

    rows: Rows
    ts: Times
    accel: Floats
    rate: float

    def __post_init__(self) -> None:
        if self.accel.ndim != 3 or self.accel.shape[2] != 3:
            raise ValueError(f"accel must be frames×samples×3, got {self.accel.shape}")
        if not (len(self.rows) == len(self.ts) == len(self.accel)):
            raise ValueError("rows, ts and accel must have one entry per frame")


@runtime_checkable
class Detector(Protocol):
    """What every detector module exports (one per module)."""

    kind: ClassVar[str]

    def update(self, batch: AccelBatch) -> list[Detection]:
        """Consume a batch for many rows; return what it detected, in time order."""
        ...

    def state_bytes(self) -> int:
        """Memory held by the detector's per-row state, for the benchmark."""
        ...


class Roster:
    """Stable small-integer rows for ids (elders or devices), so state can live in arrays."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []

    def row(self, key: str) -> int:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._ids)
            self._ids.append(key)
        return row

    def rows(self, keys: Iterable[str]) -> Rows:
        return np.fromiter((self.row(k) for k in keys), dtype=np.int64)

    def key(self, row: int) -> str:
        return self._ids[row]

    def __len__(self) -> int:
        return len(self._ids)


def grow(array: np.ndarray, rows: int, fill: float | int | bool = 0) -> np.ndarray:
    """Return ``array`` with at least ``rows`` rows (doubling), new rows set to ``fill``."""
    if rows <= len(array):
        return array
    size = max(rows, 2 * len(array), 16)
    out = np.full((size, *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out

"""Night wandering: the front door opens in the sleep window and the elder is not back.

A front-door ``opened`` event inside the elder's sleep window (:class:`Care`, local time,
22:00-06:00 by default, per elder) starts a wait. The elder is back when the front door
has closed again *and* a sign from inside follows (another door: bathroom, bedroom,
fridge), or at once when the bed reports presence. A closed front door alone proves
nothing: one closes it behind oneself going out. In a home with ambient sensors, any
motion sensor or mat (a ``motion`` or ``mat`` event) after the door closed is a sign
from inside too. Still out ``wander_return_s`` (care
level: 30 min at level 1 down to 10 min at level 4) after the door opened → warning.

Assumptions: door events and bed readings of one elder arrive in time order; the wearable
cannot tell inside from outside, so it is not used. A visitor leaving at night looks the
same as the elder leaving, unless the elder goes on showing signs inside.

Warm-up: none. Cost: door and bed batches only, a few gathers; ``tick`` compares one time
per row. State: 10 bytes per row.

>>> det = WanderingDetector()
>>> det.update(ReadingBatch("door", np.array([0]), np.array([23 * 3600.0]),
...                         {"opened": np.array([1]), "role": np.array([0])}))
[]
>>> [(d.kind, d.row, d.evidence["out_s"]) for d in det.tick(23 * 3600.0 + 1201)]
[('wandering', 0, 1201.0)]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from detectors.base import (
    DOOR_ROLES,
    BatchStream,
    Detection,
    ReadingBatch,
    Rows,
    overdue,
    warning_detections,
    waves,
)
from detectors.care import Care, CareRows
from homecare.thresholds import WanderingSettings

__all__ = ["WanderingDetector", "WanderingSettings"]

FRONT = DOOR_ROLES.index("front")


class WanderingDetector(CareRows):
    """Warns when an elder went out of the front door at night and is not back."""

    kind: ClassVar[str] = "wandering"
    streams: ClassVar[frozenset[str]] = frozenset(
        {BatchStream.DOOR, BatchStream.BED, BatchStream.MOTION, BatchStream.MAT}
    )
    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {
        "out_since": np.nan, "closed": False, "fired": False,
    }  # fmt: skip

    def __init__(self, settings: WanderingSettings | None = None, care: Care | None = None) -> None:
        self.settings = settings or WanderingSettings()
        self.care = care or Care()
        self.out_since = np.zeros(0)  # front door opened at night (NaN: not waiting)
        self.closed = np.zeros(0, bool)  # the front door closed since
        self.fired = np.zeros(0, bool)  # warned for this wait
        self.n = 0

    def update(self, batch: ReadingBatch) -> list[Detection]:
        if len(batch) == 0 or batch.stream not in self.streams:
            return []
        self.reserve(batch.rows)
        for part in waves(batch.rows) or [np.arange(len(batch))]:
            self._step(batch, part)
        return []

    def _step(self, batch: ReadingBatch, part: np.ndarray) -> None:
        rows, ts = batch.rows[part], batch.ts[part]
        waiting = ~np.isnan(self.out_since[rows])
        if batch.stream == BatchStream.BED:
            self._back(rows[waiting & (batch.column("presence")[part] > 0.5)])
            return
        if batch.stream in (BatchStream.MOTION, BatchStream.MAT):  # a sign inside
            sign = np.ones(len(rows), bool)
            if batch.stream == BatchStream.MOTION:  # a PIR clearing after a timeout is none
                sign = batch.column("detected")[part] > 0.5
            self._back(rows[waiting & self.closed[rows] & sign])
            return
        front = batch.column("role")[part] == FRONT
        opened = batch.column("opened")[part] > 0.5
        start = front & opened & ~waiting
        if start.any():
            start[start] = self.care.in_sleep_window(rows[start], ts[start])
            self.out_since[rows[start]] = ts[start]
            self.closed[rows[start]] = False
            self.fired[rows[start]] = False
        self.closed[rows[waiting & front & ~opened]] = True
        self._back(rows[waiting & ~front & self.closed[rows]])

    def _back(self, rows: Rows) -> None:
        self.out_since[rows] = np.nan

    def tick(self, now: float) -> list[Detection]:
        n = self.n
        rows, out, limit = overdue(
            self.out_since[:n], self.fired[:n], now, lambda r: self.care.limit("wander_return_s", r)
        )
        evidence = {"out_s": out, "limit_s": limit, "door_closed": self.closed[rows],
                    "opened_ts": self.out_since[rows]}  # fmt: skip
        return warning_detections(
            self.kind, rows, now, evidence, exact=("limit_s", "door_closed", "opened_ts")
        )

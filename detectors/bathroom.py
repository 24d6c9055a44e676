"""Too long in the bathroom: the last sign of life was in the bathroom, and nothing since.

A bathroom is where many falls happen, and where a home's other sensors cannot see: the
elder's last sign was a motion sensor (or an appliance such as the flush) in the
bathroom, or the bathroom door in a home with motion sensors (a home without them has
the wearable's rules), and since then no sign anywhere (another room's motion,
another door or contact, a mat, the bed). Past the personal limit → warning, once per
visit. Any sign elsewhere ends the wait; another bathroom sign restarts it.

**Personal limit.** :func:`bathroom_visits` finds, in 1-4 weeks of history, how long
each visit's silence lasted: from the last bathroom sign to the next sign anywhere else.
Their ``quantile`` (0.95) times ``margin`` (1.5) is the limit, shrunk (geometric weight
``visits / (visits + prior_visits)``) towards the care level's ``bathroom_default_s`` and
clipped to ``bathroom_min_s``-``bathroom_max_s`` (40 min-1.5 h at level 2). An order
statistic needs no model: a few visits a day, skewed lengths (a shower is long).

Assumptions: signs of one row arrive in time order (``waves`` keeps several of one row in
a batch in order); motion rooms and door roles are coded as in :mod:`detectors.base`.

Warm-up: none (care default). Cost: motion, door, mat and bed batches (a comparison and
a scatter each); ``tick`` compares one time per row. State: 14 bytes per row.

>>> det = BathroomDetector()
>>> bath = ReadingBatch("motion", np.array([0, 1]), np.array([0.0, 0.0]),
...                     {"detected": np.array([1.0, 1.0]), "room": np.array([0.0, 1.0])})
>>> det.update(bath)
[]
>>> det.tick(3600.0)  # care level 2 default: 1 h
[]
>>> [(d.kind, d.row, d.evidence["silent_s"]) for d in det.tick(3601.0)]
[('bathroom', 0, 3601.0)]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import (
    BATHROOM,
    DOOR_ROLES,
    BatchStream,
    Bools,
    Detection,
    ReadingBatch,
    Rows,
    Times,
    fit_quantile,
    overdue,
    warning_detections,
    waves,
)
from detectors.care import Care, CareRows
from homecare.thresholds import BathroomSettings

__all__ = ["BathroomDetector", "BathroomSettings", "bathroom_signs", "bathroom_visits"]

BATHROOM_DOOR = DOOR_ROLES.index("bathroom")


def bathroom_signs(batch: ReadingBatch) -> Bools:
    """Which entries of a batch are signs in the bathroom (motion or an appliance there,
    the bathroom door); every other entry of the detector's streams is a sign elsewhere."""
    found = np.zeros(len(batch), bool)
    if batch.stream == BatchStream.MOTION:
        found = batch.column("room") == BATHROOM
    elif batch.stream == BatchStream.DOOR:
        found = batch.column("role") == BATHROOM_DOOR
    return found


def bathroom_visits(
    rows: Rows, ts: Times, bathroom: Bools, on_mat: Bools | None = None
) -> tuple[Rows, Times]:
    """Past visits' silences (row, length): from a bathroom sign to the next sign, where
    that one is elsewhere. ``on_mat`` (a mat occupied after the sign) is accepted for the
    callers' convenience and ignored: a bathroom sign never comes from a mat."""
    del on_mat
    order = np.lexsort((ts, rows))
    r, t, b = rows[order], ts[order], np.asarray(bathroom, bool)[order]
    ends = (r[1:] == r[:-1]) & b[:-1] & ~b[1:]
    return r[:-1][ends], (t[1:] - t[:-1])[ends]


class BathroomDetector(CareRows):
    """Warns when an elder's last sign was in the bathroom, longer ago than their limit."""

    kind: ClassVar[str] = "bathroom"
    streams: ClassVar[frozenset[str]] = frozenset(
        {BatchStream.MOTION, BatchStream.DOOR, BatchStream.MAT, BatchStream.BED}
    )
    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {
        "since": np.nan, "fired": False, "learned": np.nan, "weight": 0.0, "home": False,
    }  # fmt: skip

    def __init__(self, settings: BathroomSettings | None = None, care: Care | None = None) -> None:
        self.settings = settings or BathroomSettings()
        self.care = care or Care()
        self.since = np.zeros(0)  # last bathroom sign, while nothing came since (NaN: not)
        self.fired = np.zeros(0, bool)  # warned for this visit
        self.learned = np.zeros(0, np.float32)  # personal limit, s (NaN: none)
        self.weight = np.zeros(0, np.float32)  # its weight against the care default
        self.home = np.zeros(0, bool)  # has motion sensors (a motion event seen)
        self.n = 0

    def update(self, batch: ReadingBatch) -> list[Detection]:
        if len(batch) == 0 or batch.stream not in self.streams:
            return []
        self.reserve(batch.rows)
        if batch.stream == BatchStream.MOTION:
            self.home[batch.rows] = True
        bath = bathroom_signs(batch)
        if batch.stream == BatchStream.DOOR:
            bath &= self.home[batch.rows]
        # a PIR clearing after its timeout (or an appliance off) is no sign anywhere
        sign = batch.column("detected") > 0.5 if batch.stream == BatchStream.MOTION else None
        for part in waves(batch.rows) or [np.arange(len(batch))]:
            rows, ts, b = batch.rows[part], batch.ts[part], bath[part]
            live = np.ones(len(part), bool) if sign is None else sign[part]
            b = b & live
            self.since[rows[b]] = ts[b]
            self.fired[rows[b]] = False
            self.since[rows[~b & live]] = np.nan
        return []

    def limit_s(self, rows: Rows) -> npt.NDArray[np.float64]:
        """Each row's limit: learned, shrunk towards the care default, clipped to its bounds."""
        return self.care.learned_limit("bathroom", rows, self.learned[rows], self.weight[rows])

    def tick(self, now: float) -> list[Detection]:
        n = self.n
        rows, silent, limit = overdue(self.since[:n], self.fired[:n], now, self.limit_s)
        return warning_detections(self.kind, rows, now, {"silent_s": silent, "limit_s": limit})

    def fit(self, rows: Rows, silences: Times) -> None:
        """Learn each row's limit from its past visits (as from :func:`bathroom_visits`);
        rows absent from the input keep theirs."""
        if len(rows) == 0:
            return
        self.reserve(rows)
        s = self.settings
        fit_quantile(self.learned, self.weight, rows, silences, quantile=s.quantile,
                     prior=s.prior_visits, floor=60.0, margin=s.margin)  # fmt: skip

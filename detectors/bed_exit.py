"""Bed exit without return: out of bed at night for longer than this elder's usual trips.

Getting out of bed (a bed reading without presence after one with presence) inside the
sleep window (:class:`Care`, local time, per elder) starts a wait; presence again ends it,
and so does the kitchen (a fridge door): an elder up and about in the kitchen has started
the day early or is having a snack, not stuck on the way to the toilet. Still out after
the personal limit → warning, also when the limit passes the sleep window's end: a rule
that let such a wait go (getting up shortly before the end as the day starting) cost the
cold simulated cohort its recall target (0.949, docs/detection.md); the fitted window's
end, set early enough, keeps those mornings out instead.

**Personal limit.** From 2-4 weeks of bed history, :func:`night_trips` finds the night
trips (out of bed in the sleep window and back within ``max_trip_s``; longer ones are
the start of the day). Their ``quantile`` (0.95) times ``margin`` is the limit: a trip to
the toilet or the kitchen that takes longer than 95 % of the elder's own trips and then
some is unusual for *them*. An order statistic needs no model: the durations are few (1-3
a night), their distribution is skewed and differs between elders, and a quantile of 30-90
values is stable enough once shrunk (geometric weight ``trips / (trips + prior_trips)``)
towards the care-level default, then clipped to the level's ``bed_exit_min_s`` -
``bed_exit_max_s``. A new elder gets the default (45 min at level 1 down to 15 at 4).

Assumptions: bed readings every 10-30 s, in time order per elder; set the sleep window to
end at the elder's usual wake time (:func:`detectors.morning.wake_times` learns it),
so that getting up for the day is not a night trip.

Warm-up: none (care default). Cost: bed batches only (tens of readings per second for
10,000 elders); ``tick`` compares one time per row. State: 22 bytes per row.

>>> det = BedExitDetector()
>>> bed = lambda t, p: ReadingBatch("bed", np.array([0]), np.array([t]),
...                                 {"presence": np.array([p])})
>>> det.update(bed(2 * 3600.0, 1)) + det.update(bed(2 * 3600.0 + 30, 0))
[]
>>> [(d.kind, d.evidence["out_s"], d.evidence["limit_s"]) for d in det.tick(2 * 3600.0 + 1831)]
[('bed_exit', 1801.0, 1800.0)]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import (
    DOOR_ROLES,
    BatchStream,
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
from homecare.thresholds import BedExitSettings

__all__ = ["BedExitDetector", "BedExitSettings", "night_trips"]

FRIDGE = DOOR_ROLES.index("fridge")


def night_trips(
    rows: Rows, ts: Times, presence: npt.NDArray[np.floating], care: Care, max_trip_s: float
) -> tuple[Rows, Times, Times]:
    """Night trips (row, start, duration) in bed readings of any order (e.g. InfluxDB
    ``bed`` rows): out of bed in the row's sleep window, back within ``max_trip_s``."""
    order = np.lexsort((ts, rows))
    r, t, p = rows[order], ts[order], np.asarray(presence)[order] > 0.5
    same = np.r_[False, r[1:] == r[:-1]]
    leave = np.flatnonzero(same & ~p & np.r_[False, p[:-1]])
    back = np.flatnonzero(same & p & np.r_[True, ~p[:-1]])
    # the first return after each exit, of the same row
    nxt = np.searchsorted(back, leave)
    ok = nxt < len(back)
    leave, ret = leave[ok], back[nxt[ok]]
    ok = (r[ret] == r[leave]) & (t[ret] - t[leave] <= max_trip_s)
    leave, ret = leave[ok], ret[ok]
    night = care.in_sleep_window(r[leave], t[leave])
    leave, ret = leave[night], ret[night]
    return r[leave], t[leave], t[ret] - t[leave]


class BedExitDetector(CareRows):
    """Warns when an elder is out of bed at night for longer than their own limit."""

    kind: ClassVar[str] = "bed_exit"
    streams: ClassVar[frozenset[str]] = frozenset({BatchStream.BED, BatchStream.DOOR})
    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {
        "in_bed": False, "out_since": np.nan, "fired": False, "learned": np.nan, "weight": 0.0,
    }  # fmt: skip

    def __init__(self, settings: BedExitSettings | None = None, care: Care | None = None) -> None:
        self.settings = settings or BedExitSettings()
        self.care = care or Care()
        self.in_bed = np.zeros(0, bool)  # last reading had presence
        self.out_since = np.zeros(0)  # left the bed at night (NaN: not waiting)
        self.fired = np.zeros(0, bool)  # warned for this trip
        self.learned = np.zeros(0, np.float32)  # personal limit, s (NaN: none)
        self.weight = np.zeros(0, np.float32)  # its weight against the care default
        self.n = 0

    def update(self, batch: ReadingBatch) -> list[Detection]:
        if len(batch) == 0 or batch.stream not in self.streams:
            return []
        self.reserve(batch.rows)
        if batch.stream == BatchStream.DOOR:  # order within the batch does not matter
            self.out_since[batch.rows[batch.column("role") == FRIDGE]] = np.nan
            return []
        presence = batch.column("presence") > 0.5
        for part in waves(batch.rows) or [np.arange(len(batch))]:
            rows, ts, p = batch.rows[part], batch.ts[part], presence[part]
            left = ~p & self.in_bed[rows]
            if left.any():
                left[left] = self.care.in_sleep_window(rows[left], ts[left])
                self.out_since[rows[left]] = ts[left]
                self.fired[rows[left]] = False
            self.out_since[rows[p]] = np.nan
            self.in_bed[rows] = p
        return []

    def limit_s(self, rows: Rows) -> npt.NDArray[np.float64]:
        """Each row's limit: learned, shrunk towards the care default, clipped to its bounds."""
        return self.care.learned_limit("bed_exit", rows, self.learned[rows], self.weight[rows])

    def tick(self, now: float) -> list[Detection]:
        n = self.n
        rows, out, limit = overdue(self.out_since[:n], self.fired[:n], now, self.limit_s)
        return warning_detections(self.kind, rows, now, {"out_s": out, "limit_s": limit})

    def fit(self, rows: Rows, durations: Times) -> None:
        """Learn each row's limit from its past night trips (as from :func:`night_trips`);
        rows absent from the input keep their limit."""
        if len(rows) == 0:
            return
        self.reserve(rows)
        s = self.settings
        fit_quantile(self.learned, self.weight, rows, durations, quantile=s.quantile,
                     prior=s.prior_trips, floor=1.0, margin=s.margin)  # fmt: skip

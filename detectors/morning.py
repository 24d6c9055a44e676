"""Not up in the morning: still in bed well past this elder's usual wake time.

An elder is *up* on a local day once they have been out of bed for ``up_min_s`` (30 min)
in a stretch that began after ``morning_from_s`` (04:00 local) and lasted past the end of
the sleep window; a shorter trip (the toilet) is not getting up, nor is a night-time
outing they came back to bed from (wandering at 05:00, then still in bed at 10:00).
Still in bed (a presence reading within ``bed_fresh_s``), not up today, in bed since
before the personal limit as far as this detector saw, and the local time past that
limit → warning, once a day. An elder it first sees in bed after the limit (an
afternoon nap when detect started without its saved state) is not warned about: it did
not see them stay in bed through the morning.

**Personal limit.** :func:`wake_times` finds each past day's wake time in the bed history:
the start of the first stretch out of bed of at least ``up_min_s`` after
``morning_from_s``. The limit is their ``quantile`` (0.9: a usual late morning, not the
median) plus the care level's ``wake_margin_s`` (2 h at level 1 down to 45 min at 4),
shrunk linearly towards the care default (weight ``days / (days + prior_days)``) and
clipped to the level's ``wake_earliest_s``-``wake_latest_s``. A late riser (a usual wake
time after the default) is never warned before their usual time plus the margin times
the weight, and the level's latest moves out to their usual time plus the margin: a
person who sleeps from 02:00 to noon every day is not "not up" at 11:00. Wake times are a small
sample (one a day) of a narrow, skewed distribution; an order statistic needs no model,
and clock times average linearly away from midnight. A new elder gets the default
(10:00 at level 1 down to 08:30 at level 4).

Assumptions: bed readings every 10-30 s, in time order per elder. A silent bed sensor
(device health reports it) does not count as in bed.

Warm-up: none (care default). Cost: bed batches only; ``tick`` ~15 vector operations
over all rows. State: 46 bytes per row.

>>> det = MorningDetector()
>>> det.update(ReadingBatch("bed", np.array([0]), np.array([9.5 * 3600 - 10]),
...                         {"presence": np.array([1])}))
[]
>>> det.tick(9.5 * 3600)  # level 2 default: 09:30 local
[]
>>> [(d.kind, d.severity.value, d.evidence["limit_s"]) for d in det.tick(9.5 * 3600 + 1)]
[('not_up', 'warning', 34200.0)]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import (
    BatchStream,
    Detection,
    ReadingBatch,
    Rows,
    Times,
    fit_quantile,
    warning_detections,
    waves,
)
from detectors.care import Care, CareRows
from homecare.thresholds import MorningSettings

__all__ = ["MorningDetector", "MorningSettings", "wake_times"]


def wake_times(
    rows: Rows,
    ts: Times,
    presence: npt.NDArray[np.floating],
    care: Care,
    s: MorningSettings | None = None,
) -> tuple[Rows, npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Past wake times (row, local day, local seconds after midnight) from bed readings in
    any order (e.g. InfluxDB ``bed`` rows): per day, the first stretch out of bed of at
    least ``up_min_s`` that began after ``morning_from_s``."""
    s = s or MorningSettings()
    order = np.lexsort((ts, rows))
    r, t, p = rows[order], ts[order], np.asarray(presence)[order] > 0.5
    same = np.r_[False, r[1:] == r[:-1]]
    leave = np.flatnonzero(same & ~p & np.r_[False, p[:-1]])
    back = np.flatnonzero(same & p & np.r_[True, ~p[:-1]])
    nxt = np.searchsorted(back, leave)
    # end of the stretch: the return of the same row, else its last reading
    last_of_row = np.r_[np.flatnonzero(r[1:] != r[:-1]), len(r) - 1]
    row_end = last_of_row[np.searchsorted(last_of_row, leave)]
    if len(back):
        ret = np.where(nxt < len(back), back[np.minimum(nxt, len(back) - 1)], row_end)
    else:  # nobody went back to bed in these readings
        ret = row_end
    ret = np.where((ret > row_end) | (r[ret] != r[leave]), row_end, ret)
    long = t[ret] - t[leave] >= s.up_min_s
    leave = leave[long]
    rr, tt = r[leave], t[leave]
    local = care.local_s(rr, tt)
    day = care.local_day(rr, tt)
    ok = local >= s.morning_from_s
    rr, day, local = rr[ok], day[ok], local[ok]
    # the first per (row, day): entries are in time order within a row
    first = np.r_[True, (rr[1:] != rr[:-1]) | (day[1:] != day[:-1])][: len(rr)]
    return rr[first], day[first], local[first]


class MorningDetector(CareRows):
    """Warns when an elder is still in bed well past their usual wake time."""

    kind: ClassVar[str] = "not_up"
    streams: ClassVar[frozenset[str]] = frozenset({BatchStream.BED})
    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {
        "in_bed": False, "bed_ts": -np.inf, "out_since": np.nan, "in_since": np.nan, "up_day": -1,
        "fired_day": -1, "learned": np.nan, "weight": 0.0,
    }  # fmt: skip

    def __init__(self, settings: MorningSettings | None = None, care: Care | None = None) -> None:
        self.settings = settings or MorningSettings()
        self.care = care or Care()
        self.in_bed = np.zeros(0, bool)  # last reading had presence
        self.bed_ts = np.zeros(0)  # time of the last reading
        self.out_since = np.zeros(0)  # out of bed since (NaN: in bed)
        self.in_since = np.zeros(0)  # in bed since, as first seen (NaN: out of bed)
        self.up_day = np.zeros(0, np.int32)  # local day the elder last got up
        self.fired_day = np.zeros(0, np.int32)  # local day of the last warning
        self.learned = np.zeros(0, np.float32)  # personal limit, local s (NaN: none)
        self.weight = np.zeros(0, np.float32)  # its weight against the care default
        self.n = 0

    def _mark_up(self, rows: Rows, until: Times | float) -> None:
        """Rows out of bed long enough, since the morning began, are up that day."""
        since = self.out_since[rows]
        long = ~np.isnan(since) & (until - since >= self.settings.up_min_s)
        if long.any():  # and still out once the night is over
            long[long] = ~self.care.in_sleep_window(
                rows[long], np.broadcast_to(until, len(rows))[long]
            )
        if long.any():
            r, t = rows[long], since[long]
            morning = self.care.local_s(r, t) >= self.settings.morning_from_s
            self.up_day[r[morning]] = self.care.local_day(r[morning], t[morning])

    def update(self, batch: ReadingBatch) -> list[Detection]:
        if len(batch) == 0 or batch.stream != BatchStream.BED:
            return []
        self.reserve(batch.rows)
        presence = batch.column("presence") > 0.5
        held = batch.column("held") > 0.5  # a bed mat: its state holds until it changes
        for part in waves(batch.rows) or [np.arange(len(batch))]:
            rows, ts, p = batch.rows[part], batch.ts[part], presence[part]
            back = p & ~self.in_bed[rows]
            if back.any():
                self._mark_up(rows[back], ts[back])
                self.out_since[rows[back]] = np.nan
                self.in_since[rows[back]] = ts[back]
            left = ~p & self.in_bed[rows]
            self.out_since[rows[left]] = ts[left]
            self.in_since[rows[left]] = np.nan
            self.in_bed[rows] = p
            self.bed_ts[rows] = np.where(held[part], np.inf, ts)
        return []

    def limit_s(self, rows: Rows) -> npt.NDArray[np.float64]:
        """Each row's latest normal wake time (local s): learned + margin, shrunk towards
        the care default, clipped to the care bounds."""
        c = self.care
        default = c.limit("wake_default_s", rows)
        margin = c.limit("wake_margin_s", rows)
        usual = self.learned[rows].astype(np.float64)
        learned = usual + margin
        w = np.where(np.isnan(learned), 0.0, self.weight[rows])
        mix = np.where(w > 0, w * learned + (1 - w) * default, default)
        # a late riser: never before their own usual late morning plus the weighted margin,
        # and the care level's latest moves to their usual time plus the margin
        floor = np.where(w > 0, usual + w * margin, -np.inf)
        hi = np.fmax(c.limit("wake_latest_s", rows), np.where(w > 0, learned, np.nan))
        return np.clip(np.maximum(mix, floor), c.limit("wake_earliest_s", rows), hi)

    def tick(self, now: float) -> list[Detection]:
        if self.n == 0:
            return []
        s, n = self.settings, self.n
        rows = np.arange(n)
        out = np.flatnonzero(~np.isnan(self.out_since[:n]))
        if len(out):
            self._mark_up(out, now)
        in_bed = self.in_bed[:n] & (now - self.bed_ts[:n] <= s.bed_fresh_s)
        today = self.care.local_day(rows, now)
        check = np.flatnonzero(in_bed & (self.up_day[:n] != today) & (self.fired_day[:n] != today))
        if len(check) == 0:
            return []
        local = self.care.local_s(check, now)
        limit = self.limit_s(check)
        # in bed (as seen here) since before the limit: as long as it has been past it
        stayed = now - self.in_since[check] >= local - limit
        late = (local > limit) & (local < s.check_until_s) & stayed
        fire = check[late]
        self.fired_day[fire] = today[fire]
        evidence = {"local_s": local[late], "limit_s": limit[late]}
        return warning_detections(self.kind, fire, now, evidence)

    def fit(self, rows: Rows, wake_local_s: npt.NDArray[np.floating]) -> None:
        """Learn each row's usual wake time from past ones (as from :func:`wake_times`);
        rows absent from the input keep theirs."""
        if len(rows) == 0:
            return
        self.reserve(rows)
        s = self.settings
        fit_quantile(self.learned, self.weight, rows, wake_local_s, quantile=s.quantile,
                     prior=s.prior_days)  # fmt: skip

    def usual_wake_s(self, rows: Rows) -> npt.NDArray[np.float64]:
        """The learned usual (``quantile``) wake time, local s; NaN where none: to end the
        sleep window of :class:`Care` at."""
        return self.learned[rows].astype(np.float64)

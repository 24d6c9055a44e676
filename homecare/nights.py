"""What a night in bed is: the ``sleep_1d`` rollup's definition, from raw bed readings.

Shared by the rollup job (:mod:`ingest.rollups`, which writes ``sleep_1d``) and the
weekly report (which computes the nights the rollups do not have yet), so both count a
night the same way. A night runs from 18:00 to 12:00 the next day, local time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence

import numpy as np

from homecare.contract import ID_PATTERN
from homecare.influx import FieldValue, InfluxClient
from homecare.query import any_of, field, select, show_tag_values
from homecare.schema import DAY_S, ELDER, SITE, Bed, Sleep
from homecare.settings import RetentionSettings

__all__ = [
    "ELDERS_PER_QUERY",
    "MAX_GAP_S",
    "NIGHT_H",
    "list_bed_elders",
    "local_midnight",
    "night_summary",
    "nights",
    "sleep_nights",
]

NIGHT_H = (18.0, 36.0)
"""A night, in hours after the local midnight of its evening: 18:00 to 12:00 next day."""
MAX_GAP_S = 300.0
"""A bed reading stands for the time until the next one, at most this long: a longer
silence is missing data, neither in nor out of bed."""
ELDERS_PER_QUERY = 50


def night_summary(
    t: np.ndarray, present: np.ndarray, start: float, end: float
) -> dict[str, float] | None:
    """Time in bed, exits, first in and last out within ``[start, end)`` from bed readings
    (times ``t`` sorted, readings after ``end`` only tell when the last one stops).

    >>> t = np.arange(0.0, 100.0, 10.0)
    >>> p = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 0], bool)
    >>> night_summary(t, p, 0.0, 100.0)
    {'in_bed_s': 50.0, 'exits': 1.0, 'covered_s': 100.0, 'first_in': 10.0, 'last_out': 80.0}
    """
    inside = (t >= start) & (t < end)
    if not inside.any():
        return None
    following = np.r_[t[1:], np.inf]
    stands = np.minimum(np.minimum(following, t + MAX_GAP_S), end) - t
    ti, pi, di = t[inside], present[inside], stands[inside]
    summary = {Sleep.in_bed_s: float(di[pi].sum()), Sleep.exits: 0.0,
               Sleep.covered_s: float(di.sum())}  # fmt: skip
    if pi.any():
        first, last = int(np.argmax(pi)), int(np.flatnonzero(pi)[-1])
        summary[Sleep.exits] = float(np.count_nonzero(pi[:last] & ~pi[1 : last + 1]))
        summary["first_in"] = float(ti[first])
        summary["last_out"] = float(ti[last] + di[last])
    return summary


def local_midnight(day: int, utc_offset_h: float) -> float:
    """Unix time of the site's local midnight starting ``day`` (days since 1970, local)."""
    return day * DAY_S - utc_offset_h * 3600


def nights(start: float, end: float, utc_offset_h: float = 0.0) -> list[int]:
    """Local days whose night ended within ``(start, end]``.

    >>> nights(10 * 86400, 12 * 86400)  # nights ending at 12:00 on days 10 and 11
    [9, 10]
    """
    local = utc_offset_h * 3600
    first = math.floor((start + local) / DAY_S) - 2
    last = math.floor((end + local) / DAY_S) + 1
    return [
        d
        for d in range(first, last + 1)
        if start < local_midnight(d, utc_offset_h) + NIGHT_H[1] * 3600 <= end
    ]


def _check_elders(elders: Sequence[str]) -> None:
    bad = [e for e in elders if not re.fullmatch(ID_PATTERN, e)]
    if bad:
        raise ValueError(f"not an elder id: {bad[0]!r}")


def list_bed_elders(db: InfluxClient) -> list[str]:
    found = {
        str(v[1])
        for s in db.query(show_tag_values([Bed.name], ELDER))
        for v in s.get("values") or []
    }
    return sorted(found)


def sleep_nights(
    db: InfluxClient,
    retention: RetentionSettings,
    *,
    start: float,
    end: float,
    elders: Sequence[str] | None = None,
) -> Iterator[tuple[dict[str, str], float, dict[str, FieldValue | None]]]:
    """Tags, local midnight and ``sleep_1d`` fields of each night ended in ``(start, end]``,
    for ``elders`` (default: every elder with a bed sensor)."""
    offset = retention.utc_offset_h
    days = nights(start, end, offset)
    ids = list(elders) if elders is not None else list_bed_elders(db) if days else []
    _check_elders(ids)
    for day in days:
        midnight = local_midnight(day, offset)
        lo, hi = midnight + NIGHT_H[0] * 3600, midnight + NIGHT_H[1] * 3600
        for i in range(0, len(ids), ELDERS_PER_QUERY):
            q = (
                select(Bed.name, field(Bed.presence))
                .between(math.floor(lo * 1000), math.ceil((hi + MAX_GAP_S) * 1000))
                .where(any_of(ELDER, ids[i : i + ELDERS_PER_QUERY]))
                .group_by(SITE, ELDER)
            )
            for s in db.query(str(q)):
                values = s["values"]
                t = np.array([v[0] for v in values], np.float64) / 1000
                present = np.array([bool(v[1]) for v in values], bool)
                night = night_summary(t, present, lo, hi)
                if night is None:
                    continue
                fields: dict[str, FieldValue | None] = {
                    name: round(night[name]) for name in (Sleep.in_bed_s, Sleep.exits,
                                                          Sleep.covered_s)
                }  # fmt: skip
                if "first_in" in night:
                    fields[Sleep.bedtime_h] = round((night["first_in"] - midnight) / 3600, 4)
                    fields[Sleep.rise_h] = round((night["last_out"] - midnight - DAY_S) / 3600, 4)
                yield s.get("tags") or {}, midnight, fields

"""A site's daily figures and the week's alerts, read from the rollups in InfluxDB.

Daily rollups (``"history"."wearable_1d"``, ``bed_1d``, ``door_1d``, ``sleep_1d``: see
:mod:`ingest.rollups`) sit at the site's midnight; :func:`window` gives the last
:data:`~care.signs.HISTORY_DAYS` *complete* days before ``now`` on that grid, and
:func:`read_days` reads every elder of the site in four queries (one per measurement,
grouped by elder), into the elder × day arrays the signs take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from care.signs import HISTORY_DAYS, WINDOW_DAYS, Days, Floats
from device_sim.decline import BED_HR, FRONT_OPENS
from homecare.contract import DoorRole
from homecare.influx import InfluxClient
from homecare.query import call, field, select
from homecare.schema import (
    DAY_S,
    ELDER,
    HISTORY,
    KIND,
    SITE,
    Alert,
    BedRollup,
    Door,
    DoorRollup,
    Sleep,
    WearableRollup,
    offset_s,
)


def window(now: float, utc_offset_h: float, days: int = WINDOW_DAYS) -> tuple[float, float]:
    """``[start, end)``: the last ``days`` complete local days before ``now``.

    >>> window(86400 * 40 + 3600, 0.0, 35) == (86400 * 5, 86400 * 40)
    True
    """
    shift = offset_s(DAY_S, utc_offset_h)
    end = math.floor((now - shift) / DAY_S) * DAY_S + shift
    return float(end - days * DAY_S), float(end)


def read_days(
    db: InfluxClient,
    site: str,
    elders: Sequence[str],
    *,
    now: float,
    utc_offset_h: float = 0.0,
    days: int = HISTORY_DAYS,
) -> Days:
    """The daily figures of ``elders`` of ``site`` over the window before ``now``; NaN
    where a rollup has no point (no data that day)."""
    start, end = window(now, utc_offset_h, days)
    index = {e: i for i, e in enumerate(elders)}
    figures: dict[str, Floats] = {}
    wanted: list[tuple[str, tuple[tuple[str, str], ...], dict[str, str]]] = [
        (WearableRollup.at("1d"), ((WearableRollup.steps, WearableRollup.steps),
                                   (WearableRollup.active_s, WearableRollup.active_s),
                                   (WearableRollup.worn_s, WearableRollup.worn_s)), {}),
        (Sleep.name, ((Sleep.exits, Sleep.exits), (Sleep.in_bed_s, Sleep.in_bed_s),
                      (Sleep.covered_s, Sleep.covered_s)), {}),
        (BedRollup.at("1d"), ((BedRollup.hr_mean, BED_HR),), {}),
        (DoorRollup.at("1d"), ((DoorRollup.opens, FRONT_OPENS),),
         {Door.role: DoorRole.FRONT.value}),
    ]  # fmt: skip
    for measurement, columns, tags in wanted:
        q = (
            select(measurement, *(field(c) for c, _ in columns), policy=HISTORY)
            .equal(**{SITE: site}, **tags)
            .between(int(start * 1000), int(end * 1000))
            .group_by(ELDER)
        )
        arrays = {name: np.full((len(elders), days), np.nan) for _, name in columns}
        for s in db.query(str(q)):
            i = index.get((s.get("tags") or {}).get(ELDER, ""))
            if i is None:
                continue
            cols = s["columns"]
            for row in s["values"]:
                d = int((row[0] / 1000 - start) // DAY_S)
                if not 0 <= d < days:
                    continue
                for src, name in columns:
                    v = row[cols.index(src)]
                    if v is not None:
                        arrays[name][i, d] = float(v)
        figures.update(arrays)
    if FRONT_OPENS in figures:  # a day without a front-door opening has no point: 0
        has_door = np.isfinite(figures[FRONT_OPENS]).any(axis=1, keepdims=True)
        figures[FRONT_OPENS] = np.where(has_door, np.nan_to_num(figures[FRONT_OPENS]), np.nan)
    return Days(tuple(elders), start, figures)


def week_alerts(
    db: InfluxClient, site: str, *, now: float, utc_offset_h: float = 0.0
) -> dict[str, dict[str, int]]:
    """Elder → alert kind → alerts that began in the last seven complete days."""
    start, end = window(now, utc_offset_h, 7)
    q = (
        select(Alert.name, call("count", Alert.id, alias="n"))
        .equal(**{SITE: site})
        .between(int(start * 1000), int(end * 1000))
        .group_by(ELDER, KIND)
    )
    out: dict[str, dict[str, int]] = {}
    for row in db.rows(str(q)):
        out.setdefault(row[ELDER], {})[row[KIND]] = int(row["n"])
    return out

"""Data lifecycle in InfluxDB: raw data kept 30 days, hourly and daily rollups kept for years.

Retention policies (database ``homecare``; durations from settings, ``HOMECARE_RETENTION__…``):

=============  ==========  ===============================================================
policy         duration    holds
=============  ==========  ===============================================================
``raw``        ``30d``     the DEFAULT policy: everything written without a policy — all
                           ingest writes (``wearable``, ``bed``, ``door``, ``button``,
                           ``device_status``, ``availability``, ``dead_letter``,
                           ``security_event``) and the alert records ``alert``,
                           ``alert_event`` and ``alert_escalation`` of detect and escalation;
                           unqualified queries read it
``history``    ``1825d``   the rollups below, and a copy of the three alert measurements
                           (same tags and fields), refreshed by every ``homecare rollup run``
=============  ==========  ===============================================================

Long-range panels read ``"history"."<measurement>"``, e.g.
``SELECT sum("active_s") / 3600 FROM "history"."wearable_1d" WHERE "elder" = 'e1' AND
$timeFilter GROUP BY time(1d)``; panels over at most 30 days may read raw data as before.
Alerts over longer ranges: ``"history"."alert"``, ``"history"."alert_event"``,
``"history"."alert_escalation"``.

The names of every policy, rollup measurement and field, and the rollup statements
themselves, are defined in :mod:`homecare.schema` (built into InfluxQL by
:mod:`homecare.query`); the nights of ``sleep_1d`` in :mod:`homecare.nights`. This module
is the job that installs and runs them.

Rollups (tags ``site``, ``elder``; ``door_*`` also ``role``). Hourly ``*_1h`` points sit at
the start of their hour, daily ``*_1d`` at the start of the site's day (UTC shifted by
``utc_offset_h``); both are computed from the raw points (daily ones are not sums of
hourly ones), so any value matches the same aggregate over ``raw``:

=====================  ==========================================================================
measurement            fields
=====================  ==========================================================================
``wearable_1h``/``1d`` ``worn_s`` seconds with a frame (count), ``active_s`` seconds not at rest
                       (``mag_std`` ≥ 0.05 g), ``movement`` mean ``mag_std`` (g), ``steps`` sum,
                       ``hr_mean``/``hr_min``/``hr_max`` (bpm), ``spo2_mean``/``spo2_min`` (%)
``bed_1h``/``1d``      ``readings`` (count), ``in_bed_readings`` (readings with presence),
                       ``hr_mean``/``hr_min``/``hr_max``, ``br_mean``/``br_min``/``br_max``
                       (breaths/min), ``movement`` mean; time in bed of a bucket =
                       ``in_bed_readings / readings`` × its length (readings are evenly spaced)
``door_1h``/``1d``     ``opens`` door openings, per ``role`` (front, bathroom, bedroom, fridge)
``sleep_1d``           one point per night, at the start of the evening's day: ``in_bed_s``
                       seconds in bed between 18:00 and 12:00, ``exits`` times out of bed and back
                       in that window, ``bedtime_h`` first in bed (hours after the evening's
                       midnight, e.g. 22.5 or 24.25), ``rise_h`` last out of bed (hours after the
                       morning's midnight, e.g. 7.5), ``covered_s`` seconds of the window with
                       readings (a night with little coverage is missing data, not a short night)
=====================  ==========================================================================

Fields absent from a bucket mean "no such data" (no frames, no openings of that role), not 0.

How they are produced: on InfluxDB 1.x, ``homecare rollup install`` creates or alters the
two policies (``raw`` made DEFAULT) and one continuous query per rollup statement. They
run ``RESAMPLE EVERY 5m FOR 2h`` (hourly) and ``RESAMPLE EVERY 1h FOR 2d`` (daily;
``HOMECARE_RETENTION__HOURLY_EVERY``, ``__DAILY_EVERY``): each run recomputes the open bucket
and the one before, so the current hour and day reach long-range panels within minutes
rather than when they close (a plain ``RESAMPLE FOR`` fires only at bucket boundaries: the
day's figure would be missing for up to 24 h), and readings arriving up to a bucket late
(spooled by ingest during an outage) are folded in. The price, recomputing each raw point
24 and 48 times, is small at a household's rates. ``homecare rollup run --since/--until``
computes the same statements for a past range (history, late data beyond the resample
window, or servers without continuous queries: InfluxDB 2.x/3.x through their v1 API),
and the nightly ``sleep_1d``, which InfluxQL cannot express (it counts presence changes).
Schedule it: ``homecare rollup run --every 24 --since 3d`` next to the continuous queries
(1.x), ``--every 1 --since 26h`` where there are none (2.x/3.x).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from homecare.errors import StorageError
from homecare.influx import FieldValue, InfluxClient, escape_tag, line
from homecare.nights import sleep_nights
from homecare.query import rollup_select, select, show_field_keys
from homecare.schema import (
    ALERT_MEASUREMENTS,
    DAY_S,
    HISTORY,
    INTERVALS,
    RAW,
    ROLLUPS,
    Alert,
    Rollup,
    Sleep,
    duration,
    offset_s,
    seconds,
)
from homecare.settings import RetentionSettings

log = logging.getLogger(__name__)

ALERT_LOOKBACK_S = 30 * DAY_S
"""An ``alert`` point sits at its start and is rewritten on each state change: copies
look this far back so a late acknowledgement reaches the history."""
CHUNK_S = 7 * DAY_S
"""Longest time range of one rollup statement in ``run`` (bounds the server's work)."""


class RollupError(StorageError):
    """The server cannot do what was asked (e.g. continuous queries on InfluxDB 2.x)."""


def shard_duration(keep_s: int) -> str:
    """InfluxDB's own default shard length for a retention duration (0: forever)."""
    if 0 < keep_s < 2 * DAY_S:
        return "1h"
    return "1d" if 0 < keep_s <= 180 * DAY_S else "1w"


def continuous_queries(database: str, retention: RetentionSettings) -> dict[str, str]:
    """Every rollup's ``CREATE CONTINUOUS QUERY``, by name.

    >>> cqs = continuous_queries("homecare", RetentionSettings(hourly_every="300s"))
    >>> cqs["door_1h"].split(" BEGIN ")[0]
    'CREATE CONTINUOUS QUERY door_1h ON homecare RESAMPLE EVERY 5m FOR 2h'
    """
    every = {"1h": retention.hourly_every, "1d": retention.daily_every}
    out = {}
    for interval, (size, resample_for) in INTERVALS.items():
        every_s = seconds(every[interval])
        if not 0 < every_s <= size:
            raise RollupError(
                f"the {interval} rollups must run at least every {duration(size)} (or buckets "
                f"would be missed), not every {every[interval]}"
            )
        resample = f"RESAMPLE EVERY {duration(every_s)} FOR {resample_for}"
        for rollup in ROLLUPS:
            select = rollup_select(
                rollup, interval, database=database, utc_offset_h=retention.utc_offset_h
            )
            name = rollup.name(interval)
            out[name] = (
                f"CREATE CONTINUOUS QUERY {name} ON {database} {resample} BEGIN {select} END"
            )
    return out


def canonical(text: str) -> str:
    """A statement as compared with the server's copy (which quotes only where needed)."""
    return " ".join(text.replace('"', "").split())


def _check_name(database: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise RollupError(f"database name {database!r}: rollups need letters, digits and _")


def is_v1(db: InfluxClient) -> bool:
    """InfluxDB 1.x: retention policies, ``SELECT … INTO`` and continuous queries."""
    return db.version().lstrip("v").startswith("1.")


@dataclass
class Changes:
    """What ``install`` did, by object (``rp raw``, ``cq wearable_1h``)."""

    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "altered": self.altered, "unchanged": self.unchanged}


def install(db: InfluxClient, retention: RetentionSettings) -> Changes:
    """Create or alter the retention policies and continuous queries; a second run changes
    nothing. Needs an admin account on InfluxDB 1.x."""
    database = db.settings.database
    _check_name(database)
    wanted = continuous_queries(database, retention)
    if not is_v1(db):
        raise RollupError(
            "continuous queries and retention policies are InfluxDB 1.x features: on 2.x/3.x "
            "set the buckets' retention there (map bucket homecare as homecare/raw and a long "
            "bucket as homecare/history) and schedule `homecare rollup run --every 1`"
        )
    db.create_database()
    changes = Changes()
    have = {r["name"]: r for r in db.rows(f"SHOW RETENTION POLICIES ON {database}")}
    for name, keep, default in ((RAW, retention.raw, True), (HISTORY, retention.history, False)):
        keep_s = seconds(keep)
        spec = (
            f"DURATION {duration(keep_s) if keep_s else 'INF'} REPLICATION 1 "
            f"SHARD DURATION {shard_duration(keep_s)}" + (" DEFAULT" if default else "")
        )
        old = have.get(name)
        if old is None:
            db.query(f"CREATE RETENTION POLICY {name} ON {database} {spec}")
            changes.created.append(f"rp {name}")
        elif seconds(old["duration"]) != keep_s or bool(old["default"]) != default:
            db.query(f"ALTER RETENTION POLICY {name} ON {database} {spec}")
            changes.altered.append(f"rp {name}")
        else:
            changes.unchanged.append(f"rp {name}")
    installed = {
        r["name"]: r["query"]
        for s in db.query("SHOW CONTINUOUS QUERIES")
        if s.get("name") == database
        for r in ({"name": v[0], "query": v[1]} for v in s.get("values") or [])
    }
    for name, create in wanted.items():
        old_query = installed.get(name)
        if old_query is None:
            db.query(create)
            changes.created.append(f"cq {name}")
        elif canonical(old_query) != canonical(create):
            db.query(f"DROP CONTINUOUS QUERY {name} ON {database}")
            db.query(create)
            changes.altered.append(f"cq {name}")
        else:
            changes.unchanged.append(f"cq {name}")
    log.info(
        "rollup install: %d created, %d altered, %d unchanged",
        len(changes.created),
        len(changes.altered),
        len(changes.unchanged),
    )
    return changes


@dataclass
class RunReport:
    """What ``run`` wrote: points per ``history`` measurement, and how."""

    via: str
    start: float
    end: float
    written: dict[str, int] = field(default_factory=dict)
    statements: int = 0

    def add(self, measurement: str, n: int) -> None:
        self.written[measurement] = self.written.get(measurement, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "via": self.via,
            "start": self.start,
            "end": self.end,
            "statements": self.statements,
            "written": dict(sorted(self.written.items())),
        }


def _chunks(start: float, end: float, size_s: int, shift_s: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` widened to whole buckets of ``size_s`` (shifted), in ``CHUNK_S`` pieces."""
    lo = math.floor((start - shift_s) / size_s) * size_s + shift_s
    hi = math.ceil((end - shift_s) / size_s) * size_s + shift_s
    step = max(size_s, CHUNK_S // size_s * size_s)
    for a in range(int(lo), int(hi), step):
        yield a, min(a + step, int(hi))


def _written(series: list[dict[str, Any]]) -> int:
    return sum(int(v[1]) for s in series if s.get("name") == "result" for v in s["values"])


def _tagset(tags: dict[str, str]) -> str:
    return ",".join(f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v)


def _rollup_lines(rollup: Rollup, interval: str, series: list[dict[str, Any]]) -> list[str]:
    """The rows of a rollup's plain ``SELECT`` as the points ``SELECT … INTO`` would write."""
    out = []
    for s in series:
        tags = _tagset(s.get("tags") or {})
        cols = s["columns"]
        for row in s["values"]:
            fields: dict[str, FieldValue | None] = {
                c: None if v is None else (int(v) if rollup.is_int(c) else float(v))
                for c, v in zip(cols[1:], row[1:], strict=True)
            }
            if any(v is not None for v in fields.values()):
                out.append(line(rollup.target.at(interval), tags, fields, int(row[0])))
    return out


def _copy_lines(db: InfluxClient, measurement: str, where: str) -> list[str]:
    """Raw points of ``measurement`` as lines, each field keeping its type."""
    types = {
        v[0]: v[1]
        for s in db.query(show_field_keys(measurement))
        for v in s["values"]
    }
    cast = {"float": float, "integer": int, "string": str, "boolean": bool}
    out = []
    for s in db.query(str(select(measurement).where(where).group_by("*"))):
        tags = _tagset(s.get("tags") or {})
        cols = s["columns"]
        for row in s["values"]:
            fields: dict[str, FieldValue | None] = {
                c: None if v is None else cast[types.get(c, "string")](v)
                for c, v in zip(cols[1:], row[1:], strict=True)
            }
            out.append(line(measurement, tags, fields, int(row[0])))
    return out


def run(
    db: InfluxClient,
    retention: RetentionSettings,
    *,
    start: float,
    end: float,
    via: str | None = None,
) -> RunReport:
    """Compute every rollup over ``[start, end)`` (widened to whole buckets), the nights
    that ended in it, and copy the alerts: idempotent, so ranges may overlap.

    ``via="into"`` runs the continuous queries' own ``SELECT … INTO`` on the server
    (InfluxDB 1.x); ``via="write"`` runs the same ``SELECT`` and writes its rows through
    ``/write`` (2.x/3.x, whose v1 API has no ``INTO``). Default: by the server's version.
    """
    database = db.settings.database
    _check_name(database)
    via = via or ("into" if is_v1(db) else "write")
    if via not in ("into", "write"):
        raise ValueError(f"via must be 'into' or 'write', not {via!r}")
    report = RunReport(via, start, end)
    for rollup in ROLLUPS:
        for interval, (size, _) in INTERVALS.items():
            target = rollup.target.at(interval)
            shift = offset_s(size, retention.utc_offset_h)
            for lo, hi in _chunks(start, end, size, shift):
                q = str(rollup_select(
                    rollup, interval, database=database, utc_offset_h=retention.utc_offset_h,
                    into=via == "into", start_ms=lo * 1000, end_ms=hi * 1000,
                ))  # fmt: skip
                report.statements += 1
                if via == "into":
                    report.add(target, _written(db.query(q)))
                else:
                    lines = _rollup_lines(rollup, interval, db.query(q))
                    db.write(lines, rp=HISTORY)
                    report.add(target, len(lines))
    for alerts in ALERT_MEASUREMENTS:
        measurement = alerts.name
        since = start - ALERT_LOOKBACK_S if alerts is Alert else start
        where = f"time >= {math.floor(since * 1000)}ms AND time < {math.ceil(end * 1000)}ms"
        report.statements += 1
        if via == "into":
            copy = select(measurement, policy=RAW).into(measurement, HISTORY, database)
            report.add(measurement, _written(db.query(str(copy.where(where).group_by("*")))))
        else:
            lines = _copy_lines(db, measurement, where)
            db.write(lines, rp=HISTORY)
            report.add(measurement, len(lines))
    lines = sleep_lines(db, retention, start=start, end=end)
    db.write(lines, rp=HISTORY)
    report.add(Sleep.name, len(lines))
    log.info("rollup run via %s: %s", via, report.written)
    return report


def sleep_lines(
    db: InfluxClient, retention: RetentionSettings, *, start: float, end: float
) -> list[str]:
    """``sleep_1d`` points of every elder for the nights that ended in ``(start, end]``."""
    return [
        line(Sleep.name, _tagset(tags), fields, round(midnight * 1000))
        for tags, midnight, fields in sleep_nights(db, retention, start=start, end=end)
    ]

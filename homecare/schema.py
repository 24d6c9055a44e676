"""The storage schema: every InfluxDB measurement, tag and field, by name, in one place.

Ingest writes it, the detectors, rollups, dashboards, the weekly report, baselines,
erasure and the demo read it; none of them spells a measurement or field name itself
(``tests/test_schema.py`` fails when one does). Queries over it are built with
:mod:`homecare.query`.

Retention policies (database ``homecare``; durations from ``HOMECARE_RETENTION__…``):
:data:`RAW` (``30d``, the DEFAULT policy: every ingest write and the alert records,
unqualified queries read it) and :data:`HISTORY` (``1825d``: the rollups and a copy of
the alert records, refreshed by ``homecare rollup run``).

Raw measurements (tags ``site``, ``elder``, ``device``, ``kind`` on every reading; point
times come from the payload, so a re-delivered reading overwrites itself):

====================  =======================================================================
measurement           fields
====================  =======================================================================
``wearable``          ``mag_mean``, ``mag_std``, ``mag_peak``, ``mag_min`` (g), ``hr``,
                      ``spo2``, ``steps``, ``battery``, ``rate``: one point per frame (second)
``accel``             ``x``, ``y``, ``z`` (g) per sample, only with ``store_raw_accel``
``bed``               ``presence``, ``hr``, ``br``, ``movement``
``door``              tags ``door``, ``role``; fields ``opened`` (bool), ``seq``
``button``            tag ``button`` (``sos``/``ok``); field ``seq``
``motion``            tag ``room``; fields ``detected`` (bool), ``seq``: a motion sensor's events
``mat``               tag ``place`` (``bed``/``chair``); fields ``occupied`` (bool), ``seq``
``device_status``     ``battery``, ``firmware``, ``rssi``, ``model``, ``vendor``,
                      ``placement``, ``interval_s``, ``room``
``availability``      ``online`` (bool), at the time it was received
``dead_letter``       tags ``reason``, ``ingest`` (the process); ``topic``, ``device``,
                      ``detail``, ``payload`` (truncated), ``size``
``security_event``    tags ``reason`` (``id_mismatch``), ``ingest``; ``detail``
``alert``             tags ``site``, ``elder``, ``kind``, ``severity``; ``id``, ``device``,
                      ``state``, ``evidence`` (JSON): one point per alert at its start,
                      rewritten when its state changes
``alert_event``       the alert's tags and ``state``; ``id``: one point per state change
``alert_escalation``  tags ``site``, ``elder``, ``kind``, ``event``, ``who``, ``channel``;
                      ``id``, ``state``, ``ref``, ``step``, ``detail``: escalation's story
====================  =======================================================================

Rollups (in ``history``; hourly ``*_1h`` and daily ``*_1d``, see :data:`ROLLUPS` and
:mod:`ingest.rollups` for how they are produced):

=====================  ==========================================================================
measurement            fields
=====================  ==========================================================================
``wearable_1h``/``1d`` ``worn_s`` seconds with a frame, ``active_s`` seconds not at rest
                       (``mag_std`` ≥ :data:`ACTIVE_G`), ``movement`` mean ``mag_std`` (g),
                       ``steps`` sum, ``hr_mean``/``hr_min``/``hr_max``, ``spo2_mean``/``spo2_min``
``bed_1h``/``1d``      ``readings``, ``in_bed_readings`` (readings with presence),
                       ``hr_mean``/``hr_min``/``hr_max``, ``br_mean``/``br_min``/``br_max``,
                       ``movement`` mean
``door_1h``/``1d``     ``opens`` per ``role``
``sleep_1d``           one point per night: ``in_bed_s``, ``exits``, ``bedtime_h``, ``rise_h``,
                       ``covered_s``
=====================  ==========================================================================

>>> Wearable.name, Wearable.mag_std, WearableRollup.at("1h"), measurement_of(Stream.SOS).name
('wearable', 'mag_std', 'wearable_1h', 'button')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from homecare.contract import Stream

__all__ = [
    "ACTIVE_G",
    "ALERT_MEASUREMENTS",
    "CARE_GROUP",
    "CARE_MEASUREMENTS",
    "DAY_S",
    "DEVICE",
    "ELDER",
    "HISTORY",
    "INTERVALS",
    "INT_SOURCES",
    "KIND",
    "MEASUREMENTS",
    "POLICIES",
    "RAW",
    "RAW_MEASUREMENTS",
    "READING_TAGS",
    "ROLLED",
    "ROLLUPS",
    "SITE",
    "STREAM_MEASUREMENTS",
    "WORKER",
    "Accel",
    "Alert",
    "AlertEscalation",
    "AlertEvent",
    "Availability",
    "Bed",
    "BedRollup",
    "Button",
    "CareFollowUps",
    "CareVisitRate",
    "CareWorkerVisits",
    "DeadLetter",
    "DeviceStatus",
    "Door",
    "DoorRollup",
    "Mat",
    "Measurement",
    "Motion",
    "Rolled",
    "Rollup",
    "SecurityEvent",
    "Sleep",
    "Wearable",
    "WearableRollup",
    "duration",
    "field_names",
    "measurement_names",
    "measurement_of",
    "offset_s",
    "seconds",
]

# -- Retention policies -------------------------------------------------------------------

RAW = "raw"
"""The DEFAULT policy: every write without a policy lands here; unqualified reads read it."""
HISTORY = "history"
"""Long-kept policy: the rollups and a copy of the alert records."""
POLICIES = (RAW, HISTORY)

DAY_S = 86400

# -- Tags shared by many measurements ------------------------------------------------------

SITE = "site"
ELDER = "elder"
DEVICE = "device"
KIND = "kind"
READING_TAGS = (SITE, ELDER, DEVICE, KIND)
"""The tags of every reading: its device topic."""


class Measurement:
    """A measurement: its name, policy, tags and fields (each field a class attribute)."""

    name: ClassVar[str]
    policy: ClassVar[str] = RAW
    tags: ClassVar[tuple[str, ...]]
    fields: ClassVar[tuple[str, ...]]
    always: ClassVar[str] = ""
    """A field every point carries: ``count()`` of it counts the points."""


class Wearable(Measurement):
    """Per-second activity statistics of a wearable's frame, and its vital signs."""

    name = "wearable"
    tags = READING_TAGS
    mag_mean = "mag_mean"
    mag_std = "mag_std"
    mag_peak = "mag_peak"
    mag_min = "mag_min"
    hr = "hr"
    spo2 = "spo2"
    steps = "steps"
    battery = "battery"
    rate = "rate"
    fields = (mag_mean, mag_std, mag_peak, mag_min, hr, spo2, steps, battery, rate)
    always = rate
    STATS = (mag_mean, mag_std, mag_peak, mag_min)
    """The per-frame magnitude statistics (:func:`homecare.frames.frame_stats`), in order."""


class Accel(Measurement):
    """Raw accelerometer samples (only with ``store_raw_accel``)."""

    name = "accel"
    tags = READING_TAGS
    x = "x"
    y = "y"
    z = "z"
    fields = (x, y, z)


class Bed(Measurement):
    name = "bed"
    tags = READING_TAGS
    presence = "presence"
    hr = "hr"
    br = "br"
    movement = "movement"
    fields = (presence, hr, br, movement)
    always = movement


class Door(Measurement):
    name = "door"
    door = "door"
    role = "role"
    tags = (*READING_TAGS, door, role)
    opened = "opened"
    seq = "seq"
    fields = (opened, seq)
    always = seq


class Button(Measurement):
    """SOS and "I'm OK" presses and falls the wearable detected itself, told apart by the
    ``button`` tag (``sos``, ``ok``, ``fall``); a fall carries the device's ``confidence``
    and whether the wearer ``cancelled`` it on the device."""

    name = "button"
    button = "button"
    tags = (*READING_TAGS, button)
    seq = "seq"
    confidence = "confidence"
    cancelled = "cancelled"
    fields = (seq, confidence, cancelled)
    always = seq


class Motion(Measurement):
    """A passive infrared sensor's events: motion detected (true) or cleared (false)."""

    name = "motion"
    room = "room"
    tags = (*READING_TAGS, room)
    detected = "detected"
    seq = "seq"
    fields = (detected, seq)
    always = seq


class Mat(Measurement):
    """A pressure mat's events: occupied (true) or free (false)."""

    name = "mat"
    place = "place"
    tags = (*READING_TAGS, place)
    occupied = "occupied"
    seq = "seq"
    fields = (occupied, seq)
    always = seq


class DeviceStatus(Measurement):
    name = "device_status"
    tags = READING_TAGS
    battery = "battery"
    firmware = "firmware"
    rssi = "rssi"
    model = "model"
    vendor = "vendor"
    placement = "placement"
    interval_s = "interval_s"
    room = "room"
    fields = (battery, firmware, rssi, model, vendor, placement, interval_s, room)
    always = battery


class Availability(Measurement):
    name = "availability"
    tags = READING_TAGS
    online = "online"
    fields = (online,)
    always = online


class DeadLetter(Measurement):
    """A message the contract refused, with why; ``ingest`` tells processes apart."""

    name = "dead_letter"
    reason = "reason"
    ingest = "ingest"
    tags = (reason, ingest)
    topic = "topic"
    device = "device"
    detail = "detail"
    payload = "payload"
    size = "size"
    fields = (topic, device, detail, payload, size)
    always = size
    TEXT = (topic, payload, detail)
    """String fields that may name an elder (erasure searches them)."""


class SecurityEvent(Measurement):
    """A device speaking for another elder or device, by the topic it published on."""

    name = "security_event"
    reason = "reason"
    ingest = "ingest"
    tags = (*READING_TAGS, reason, ingest)
    detail = "detail"
    fields = (detail,)
    TEXT = (detail,)


class Alert(Measurement):
    """One point per alert at its start time, rewritten in place when its state changes."""

    name = "alert"
    severity = "severity"
    tags = (SITE, ELDER, KIND, severity)
    id = "id"
    device = "device"
    state = "state"
    evidence = "evidence"
    fields = (id, device, state, evidence)


class AlertEvent(Measurement):
    """One point per state change of an alert, at the time of the change."""

    name = "alert_event"
    state = "state"
    tags = (*Alert.tags, state)
    id = "id"
    fields = (id,)


class AlertEscalation(Measurement):
    """Escalation's story of an alert: who was told, by which channel, on which rung."""

    name = "alert_escalation"
    event = "event"
    who = "who"
    channel = "channel"
    tags = (SITE, ELDER, KIND, event, who, channel)
    id = "id"
    state = "state"
    ref = "ref"
    step = "step"
    detail = "detail"
    fields = (id, state, ref, step, detail)


RAW_MEASUREMENTS: tuple[type[Measurement], ...] = (
    Wearable, Accel, Bed, Door, Button, DeviceStatus, Availability, DeadLetter, SecurityEvent,
    Alert, AlertEvent, AlertEscalation, Motion, Mat,
)  # fmt: skip
ALERT_MEASUREMENTS: tuple[type[Measurement], ...] = (Alert, AlertEvent, AlertEscalation)
"""Alert records: written raw, copied to ``history`` by every ``homecare rollup run``."""

STREAM_MEASUREMENTS: dict[Stream, type[Measurement]] = {
    Stream.FRAME: Wearable,
    Stream.READING: Bed,
    Stream.EVENT: Door,
    Stream.SOS: Button,
    Stream.OK: Button,
    Stream.FALL: Button,
    Stream.STATUS: DeviceStatus,
    Stream.AVAILABILITY: Availability,
    Stream.MOTION: Motion,
    Stream.OCCUPANCY: Mat,
}
"""Where each wire stream is stored (frames may also fill ``accel``)."""


def measurement_of(stream: Stream | str) -> type[Measurement]:
    """The measurement that stores a wire stream."""
    return STREAM_MEASUREMENTS[Stream(stream)]


# -- Rollups ---------------------------------------------------------------------------------

INTERVALS: dict[str, tuple[int, str]] = {"1h": (3600, "2h"), "1d": (DAY_S, "2d")}
"""Bucket length (s) and how far back the continuous query recomputes (``RESAMPLE FOR``):
the open bucket and the one before."""
ACTIVE_G = 0.05
"""``mag_std`` at least this: not at rest (the vitals detector's rest threshold)."""
INT_SOURCES = frozenset({Wearable.hr, Wearable.spo2, Wearable.steps, Door.seq})
"""Raw integer fields: their sum, min and max stay integers (counts always are)."""


class Rolled:
    """A rollup measurement, one per interval: ``<base>_<interval>`` in ``history``."""

    base: ClassVar[str]
    policy: ClassVar[str] = HISTORY
    tags: ClassVar[tuple[str, ...]] = (SITE, ELDER)
    fields: ClassVar[tuple[str, ...]]

    @classmethod
    def at(cls, interval: str) -> str:
        """The measurement of one interval (``1h``, ``1d``)."""
        if interval not in INTERVALS:
            raise ValueError(f"no {interval!r} rollups (intervals: {', '.join(INTERVALS)})")
        return f"{cls.base}_{interval}"


class WearableRollup(Rolled):
    base = Wearable.name
    worn_s = "worn_s"
    active_s = "active_s"
    movement = "movement"
    steps = "steps"
    hr_mean = "hr_mean"
    hr_min = "hr_min"
    hr_max = "hr_max"
    spo2_mean = "spo2_mean"
    spo2_min = "spo2_min"
    fields = (worn_s, active_s, movement, steps, hr_mean, hr_min, hr_max, spo2_mean, spo2_min)


class BedRollup(Rolled):
    base = Bed.name
    readings = "readings"
    in_bed_readings = "in_bed_readings"
    hr_mean = "hr_mean"
    hr_min = "hr_min"
    hr_max = "hr_max"
    br_mean = "br_mean"
    br_min = "br_min"
    br_max = "br_max"
    movement = "movement"
    fields = (readings, in_bed_readings, hr_mean, hr_min, hr_max, br_mean, br_min, br_max,
              movement)  # fmt: skip


class DoorRollup(Rolled):
    base = Door.name
    tags = (SITE, ELDER, Door.role)
    opens = "opens"
    fields = (opens,)


ROLLED: tuple[type[Rolled], ...] = (WearableRollup, BedRollup, DoorRollup)


class Sleep(Measurement):
    """One point per night, at the local midnight starting the evening's day."""

    name = "sleep_1d"
    policy = HISTORY
    tags = (SITE, ELDER)
    in_bed_s = "in_bed_s"
    exits = "exits"
    bedtime_h = "bedtime_h"
    rise_h = "rise_h"
    covered_s = "covered_s"
    fields = (in_bed_s, exits, bedtime_h, rise_h, covered_s)


@dataclass(frozen=True, slots=True)
class Rollup:
    """One aggregate statement over a raw measurement: a continuous query per interval."""

    target: type[Rolled]
    source: type[Measurement]
    aggregates: tuple[tuple[str, str, str], ...]
    """(field written, InfluxQL function, raw field)."""
    where: tuple[str, str, str] | None = None
    """(raw field, operator, InfluxQL value): which raw points count."""
    part: str = ""
    """Tells apart statements writing other fields of the same measurement."""

    @property
    def tags(self) -> tuple[str, ...]:
        return self.target.tags

    def name(self, interval: str) -> str:
        """The continuous query's name."""
        return self.target.at(interval) + (f"_{self.part}" if self.part else "")

    def is_int(self, alias: str) -> bool:
        """Whether the written field is an integer (as ``SELECT … INTO`` writes it)."""
        fn, src = next((f, s) for a, f, s in self.aggregates if a == alias)
        return fn == "count" or (fn != "mean" and src in INT_SOURCES)


def _stats(alias: str, src: str, *fns: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"{alias}_{fn}", fn, src) for fn in fns)


ROLLUPS: tuple[Rollup, ...] = (
    Rollup(
        WearableRollup,
        Wearable,
        (
            (WearableRollup.worn_s, "count", Wearable.mag_std),
            (WearableRollup.movement, "mean", Wearable.mag_std),
            (WearableRollup.steps, "sum", Wearable.steps),
            *_stats(Wearable.hr, Wearable.hr, "mean", "min", "max"),
            *_stats(Wearable.spo2, Wearable.spo2, "mean", "min"),
        ),
    ),
    Rollup(
        WearableRollup,
        Wearable,
        ((WearableRollup.active_s, "count", Wearable.mag_std),),
        where=(Wearable.mag_std, ">=", f"{ACTIVE_G:.3f}"),  # as InfluxQL prints it back
        part="active",
    ),
    Rollup(
        BedRollup,
        Bed,
        (
            (BedRollup.readings, "count", Bed.movement),
            *_stats(Bed.hr, Bed.hr, "mean", "min", "max"),
            *_stats(Bed.br, Bed.br, "mean", "min", "max"),
            (BedRollup.movement, "mean", Bed.movement),
        ),
    ),
    Rollup(
        BedRollup,
        Bed,
        ((BedRollup.in_bed_readings, "count", Bed.presence),),
        where=(Bed.presence, "=", "true"),
        part="in_bed",
    ),
    Rollup(DoorRollup, Door, ((DoorRollup.opens, "count", Door.seq),), (Door.opened, "=", "true")),
)


# -- Durations as InfluxQL writes them ---------------------------------------------------------


def duration(seconds: int) -> str:
    """A duration as InfluxQL writes it back (so installed queries compare equal).

    >>> duration(86400), duration(28800), duration(1800), duration(604800), duration(90)
    ('1d', '8h', '30m', '1w', '90s')
    """
    for unit, size in (("w", 7 * DAY_S), ("d", DAY_S), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def seconds(text: str) -> int:
    """Seconds of a setting (``30d``, ``INF`` = 0) or of a server's answer (``720h0m0s``).

    >>> seconds("30d"), seconds("720h0m0s"), seconds("INF"), seconds("0s"), seconds("2w")
    (2592000, 2592000, 0, 0, 1209600)
    """
    if text.upper() == "INF":
        return 0
    units = {"w": 7 * DAY_S, "d": DAY_S, "h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([wdhms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return round(sum(float(n) * units[u] for n, u in parts))


def offset_s(interval_s: int, utc_offset_h: float) -> int:
    """The ``GROUP BY time`` offset that puts buckets on the site's local hours and days.

    >>> offset_s(86400, 8.0), offset_s(3600, 5.5), offset_s(3600, 0)
    (57600, 1800, 0)
    """
    return round(-utc_offset_h * 3600) % interval_s


# -- Proactive care (care/report.py writes them, the care dashboard reads them) ------------

CARE_GROUP = "care_group"
"""Tag: the visit policy's group (``care/policy.py``)."""
WORKER = "worker"
"""Tag: a community worker's account name."""


class CareVisitRate(Measurement):
    """One point per site, group and month, at the month's first midnight (UTC): how many
    of the group's elders had the contact the policy asks for in that month."""

    name = "care_visit_rate"
    policy = HISTORY
    tags = (SITE, CARE_GROUP)
    elders_in_group = "elders_in_group"
    elders_contacted = "elders_contacted"
    rate_pct = "rate_pct"
    target_pct = "target_pct"
    fields = (elders_in_group, elders_contacted, rate_pct, target_pct)


class CareWorkerVisits(Measurement):
    """One point per site, worker and month: visits and calls recorded."""

    name = "care_worker_visits"
    policy = HISTORY
    tags = (SITE, WORKER)
    visits_made = "visits_made"
    calls_made = "calls_made"
    fields = (visits_made, calls_made)


class CareFollowUps(Measurement):
    """One point per site and month (rewritten as the month goes): follow-ups left open,
    elders overdue for their contact."""

    name = "care_follow_ups"
    policy = HISTORY
    tags = (SITE,)
    follow_ups_open = "follow_ups_open"
    elders_overdue = "elders_overdue"
    fields = (follow_ups_open, elders_overdue)


CARE_MEASUREMENTS: tuple[type[Measurement], ...] = (CareVisitRate, CareWorkerVisits, CareFollowUps)


# -- The whole schema, for checks --------------------------------------------------------------

MEASUREMENTS: tuple[type[Measurement], ...] = (*RAW_MEASUREMENTS, Sleep, *CARE_MEASUREMENTS)
"""Every measurement with one name (the rollups of :data:`ROLLED` have one per interval)."""


def measurement_names() -> frozenset[str]:
    """Every measurement name, raw and rolled up."""
    rolled = {r.at(i) for r in ROLLED for i in INTERVALS}
    return frozenset({m.name for m in MEASUREMENTS} | rolled)


def field_names() -> frozenset[str]:
    """Every field name of every measurement."""
    fields = [m.fields for m in MEASUREMENTS] + [r.fields for r in ROLLED]
    return frozenset(f for names in fields for f in names)

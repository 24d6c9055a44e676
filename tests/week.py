"""A simulated week for several elders in a real influxd, written through ingest's own code.

Dashboards and the weekly report are tested against what ingest really stores, so the
week goes the production path: the simulator's fast path (:func:`device_sim.scenarios.
iter_streams`, the same routines, report phases and vital-sign models as the live
simulation) → contract payloads (JSON bytes, as devices publish them) → the ingest
:class:`~ingest.points.Converter` (validation at the edge, per-second statistics) →
:class:`~homecare.influx.InfluxClient`. Alerts and their lifecycle events are written
with :func:`homecare.alerts.alert_lines`.

To load in seconds, wearable frames are thinned: one frame every ``frame_every_s``
seconds, plus every second in which the elder walked (so steps per day stay true), at
25 Hz. Bed readings are thinned to one a minute, plus every reading where presence
changes (so time in bed and bed exits stay true). Doors, statuses, buttons: all.

What the week holds besides the routines (``Week`` names them):

* elder 1 presses SOS (an alert acknowledged after ``ACK_S`` s, resolved "handled at
  home") and has a fall alert cancelled by "I'm OK"; elder 2 has a tachycardia alert
  resolved as a false alarm and a warning still notified; the last elder's door hub
  goes offline ``OFFLINE_H`` hours before the end (its last will, then nothing), with
  an open ``device_offline`` alert;
* ``gap``: no message at all from some (or all) elders for a stretch of days;
* ``Week.absent``: an elder id of the site that has no data at all.

When: the week ends at ``end`` on the elders' clock (the ``wall_clock`` fixture), which
fixes its content: routines are drawn per local day, so the date matters as well as the
hour. influxd keeps the real time (its retention drops old raw points, the dashboards ask
for ``now() - 1d``), so the week is stored a whole number of weeks away from ``end``,
ending within the week before the real now, with the elders' clock set that far ahead
(``Week.shift_s``): the same weekdays, hours and routines, at times influxd holds.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from device_sim import encode
from device_sim.homes import SimConfig, Simulation
from device_sim.scenarios import iter_streams
from escalation.service import event_line
from harness.servers import LocalInflux
from homecare.alerts import alert_id, alert_lines
from homecare.contract import Alert, AlertState, Severity, Stream
from homecare.edge import RawMessage
from homecare.influx import InfluxClient
from homecare.settings import ContractSettings, InfluxSettings, RetentionSettings
from ingest import rollups
from ingest.points import Converter

WEEK_S = 7 * 86400
FRAME_RATE = 25
BED_EVERY_S = 60
ACK_S = 42.0
"""Seconds from an alert to its acknowledgement, in the written lifecycle events."""
OFFLINE_H = 6.0
KIND_NAMES = ("wearable", "bed", "door")


@dataclass(frozen=True)
class Gap:
    """No message from ``elders`` (all when empty) from ``start_day`` to ``end_day``
    (days after the week's start)."""

    start_day: float
    end_day: float
    elders: tuple[str, ...] = ()

    def covers(self, elder: str) -> bool:
        return not self.elders or elder in self.elders


@dataclass
class Week:
    """What was written: the window, the ids, the alerts and how many points per stream."""

    site: str
    start: float
    end: float
    """When the week is stored (unix seconds, as influxd holds them)."""
    elders: tuple[str, ...]
    absent: str
    offline_device: str
    gap: Gap | None
    shift_s: float = 0.0
    """How far the elders' clock runs ahead of the stored times: whole weeks."""
    alerts: list[Alert] = field(default_factory=list)
    """Every alert in its final state."""
    acks: list[float] = field(default_factory=list)
    """Seconds from each acknowledged alert to its acknowledgement."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Resolved alerts by outcome."""
    stored: Counter[str] = field(default_factory=Counter)

    def devices(self, elder: str) -> tuple[str, str, str]:
        """The elder's wearable, bed sensor and door hub ids."""
        num = elder[1:]
        return (f"w{num}", f"b{num}", f"d{num}")


def _frame(
    elder: str, device: str, ts: float, body: bytes, hr: int, spo2: int, steps: int, battery: float
) -> bytes:
    head = f'{{"elder":"{elder}","device":"{device}","ts":{ts!r},"rate":{FRAME_RATE},"accel":'
    if hr < 0:  # off the body: no heart rate, no SpO2
        tail = f',"steps":0,"battery":{battery:.1f}}}'
    else:
        tail = f',"hr":{hr},"spo2":{spo2},"steps":{steps},"battery":{battery:.1f}}}'
    return head.encode() + body + tail.encode()


def _accel(rng: np.random.Generator, w: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """``FRAME_RATE`` samples around each frame's mean with its magnitude's spread."""
    mean = np.stack([w["gx"][rows], w["gy"][rows], w["gz"][rows]], axis=1).astype(np.float64)
    spread = w["mag_std"][rows].astype(np.float64)[:, None, None]
    return mean[:, None, :] + rng.normal(0.0, 1.0, (len(rows), FRAME_RATE, 3)) * spread


def rolled_up(server: LocalInflux, week: Week, database: str) -> InfluxClient:
    """A database of its own holding the session's week (database ``homecare``) in its
    ``raw`` policy, with retention installed and every rollup computed over the week."""
    # copying the week and rolling it up take influxd many seconds on a busy CI runner
    db = InfluxClient(InfluxSettings(url=server.url, database=database, timeout_s=120))
    retention = RetentionSettings()
    rollups.install(db, retention)
    # The continuous queries fire on influxd's clock (every 5 minutes, every hour, over
    # the last hours and days: where the week ends). One that fired while the week was
    # being copied rolled up part of it and, on a loaded runner, wrote that after run's
    # rollups (a CI failure: the last two days' nights and an alert missing). So they
    # come back only once the week and its rollups are in.
    for name in rollups.continuous_queries(database, retention):
        db.query(f"DROP CONTINUOUS QUERY {name} ON {database}")
    db.query(f"SELECT * INTO {database}.raw.:MEASUREMENT FROM homecare.autogen./.*/ GROUP BY *")
    rollups.run(db, retention, start=week.start, end=week.end)
    rollups.install(db, retention)
    return db


def stored_end(end: float, now: float) -> float:
    """Where a week that ends at ``end`` is stored: the whole number of weeks away from it
    that ends within the week before ``now`` (influxd's clock).

    >>> stored_end(1_000.0, 1_000.0)  # the real now
    1000.0
    >>> stored_end(1_000.0 + 3 * WEEK_S + 60, 1_000.0 + 90)  # a clock weeks ahead
    1060.0
    >>> stored_end(1_000.0 - 2 * WEEK_S, 1_000.0 + 60)  # a clock weeks behind
    1000.0
    """
    return now - (now - end) % WEEK_S


def write_week(
    client: InfluxClient,
    *,
    end: float,
    elders: int = 3,
    days: float = 7,
    seed: int = 0,
    site: str = "north",
    frame_every_s: int = 60,
    gap: Gap | None = None,
) -> Week:
    """Simulate ``days`` ending at ``end`` on the elders' clock and store them through
    ingest, where influxd's real clock holds them (:func:`stored_end`)."""
    clock_end = float(math.floor(end))
    end = stored_end(clock_end, float(math.floor(time.time())))  # influxd's clock
    start = end - round(days * 86400)
    sim = Simulation(SimConfig(elders=elders, seed=seed, site=site, start=start, rate=FRAME_RATE,
                               utc_offset_s=clock_end - end))  # fmt: skip
    ids = tuple(e.elder for e in sim.elders)
    offline = sim.elders[-1].door
    offline_from = end - OFFLINE_H * 3600
    week = Week(site, start, end, ids, f"e{elders + 1:04d}", offline.device, gap,
                shift_s=clock_end - end)  # fmt: skip
    converter = Converter(ContractSettings())
    rng = np.random.default_rng([seed, 0x3EE7])
    door_seq = np.zeros(elders, np.int64)

    def dropped(i: np.ndarray, ts: np.ndarray, kind: int) -> np.ndarray:
        out = np.zeros(len(ts), bool)
        if gap is not None:
            mask = np.array([gap.covers(e) for e in ids])[i]
            out |= mask & (ts >= start + gap.start_day * 86400) & (ts < start + gap.end_day * 86400)
        if kind == 2:
            out |= (i == elders - 1) & (ts >= offline_from)
        return out

    def store(messages: list[RawMessage], now: float) -> None:
        points = converter.convert(messages, now=now)
        if points.dead:
            raise AssertionError(f"the simulated week broke the contract: {dict(points.dead)}")
        client.write(points.lines)
        week.stored.update(points.stored)

    online = [
        RawMessage(str(d.availability), b"online", start) for e in sim.elders for d in e.devices
    ]
    store(online, start)
    for chunk in iter_streams(sim, [], days, seed=seed):
        messages: list[tuple[float, RawMessage]] = []
        now = chunk.t1 + 1.0
        w = chunk.wearable
        sec = w["ts"].astype(np.int64)
        keep = ((sec % frame_every_s == 0) | (w["steps"] > 0)) & ~dropped(w["elder"], w["ts"], 0)
        rows = np.flatnonzero(keep)
        bodies = encode.accel_json(_accel(rng, w, rows))
        for r, body in zip(rows.tolist(), bodies, strict=True):
            e = sim.elders[int(w["elder"][r])]
            ts = float(w["ts"][r])
            payload = _frame(
                e.elder,
                e.wearable.device,
                ts,
                body,
                int(w["hr"][r]),
                int(w["spo2"][r]),
                int(w["steps"][r]),
                float(w["battery"][r]),
            )
            messages.append((ts, RawMessage(str(e.wearable.topic(Stream.FRAME)), payload, ts)))
        b = chunk.bed
        changed = np.ones(len(b["ts"]), bool)
        for i in range(elders):  # presence changes within the elder's own readings
            mine = np.flatnonzero(b["elder"] == i)
            changed[mine[1:]] = b["presence"][mine[1:]] != b["presence"][mine[:-1]]
        keep = (b["ts"].astype(np.int64) % BED_EVERY_S < sim.config.bed_period_s) | changed
        for r in np.flatnonzero(keep & ~dropped(b["elder"], b["ts"], 1)).tolist():
            e = sim.elders[int(b["elder"][r])]
            present = bool(b["presence"][r])
            ts = float(b["ts"][r])
            body = {
                "elder": e.elder,
                "device": e.bed.device,
                "ts": ts,
                "presence": present,
                "hr": int(b["hr"][r]) if present else None,
                "br": round(float(b["br"][r]), 1) if present else None,
                "movement": round(float(b["movement"][r]), 3),
            }
            messages.append(
                (ts, RawMessage(str(e.bed.topic(Stream.READING)), encode.dumps(body), ts))
            )
        d = chunk.doors
        for r in np.flatnonzero(~dropped(d["elder"], d["ts"], 2)).tolist():
            i = int(d["elder"][r])
            e = sim.elders[i]
            ts = round(float(d["ts"][r]), 3)
            body = {
                "elder": e.elder,
                "device": e.door.device,
                "ts": ts,
                "door": str(d["role"][r]),
                "role": str(d["role"][r]),
                "state": str(d["state"][r]),
                "seq": int(door_seq[i]),
            }
            door_seq[i] += 1
            messages.append(
                (ts, RawMessage(str(e.door.topic(Stream.EVENT)), encode.dumps(body), ts))
            )
        s = chunk.status
        for kind in range(3):
            idx = np.flatnonzero(s["kind"] == kind)
            for r in idx[~dropped(s["elder"][idx], s["ts"][idx], kind)].tolist():
                e = sim.elders[int(s["elder"][r])]
                device = e.devices[kind]
                ts = float(s["ts"][r])
                body = {
                    "elder": e.elder,
                    "device": device.device,
                    "ts": ts,
                    "battery": float(s["battery"][r]),
                    "firmware": device.firmware,
                    "rssi": -60 - kind * 5,
                    "model": device.model,
                    "vendor": device.vendor,
                    "placement": device.placement,
                    "interval_s": sim.config.status_period_s,
                }
                messages.append(
                    (ts, RawMessage(str(device.topic(Stream.STATUS)), encode.dumps(body), ts))
                )
        if chunk.t0 <= offline_from < chunk.t1:  # the door hub's last will
            messages.append(
                (offline_from, RawMessage(str(offline.availability), b"offline", offline_from))
            )
        messages.sort(key=lambda m: m[0])
        store([m for _, m in messages], now)
    _events(week, client, sim, converter)
    return week


BAD_MESSAGES = {"not_json": 1, "out_of_range": 2, "schema": 1, "id_mismatch": 1}
"""Dead letters in the week, by reason (the id mismatch is also a security event)."""


def _misbehaving(week: Week, client: InfluxClient, sim: Simulation, converter: Converter) -> None:
    """A wearable sending broken messages one afternoon, and a door hub speaking for another
    elder: dead letters (and a security event) as the edge stores them."""
    at = week.start + 5 * 86400 + 14 * 3600.0
    wearable = sim.elders[-1].wearable
    door = sim.elders[-1].door
    other = sim.elders[0].elder
    frame_topic = str(wearable.topic(Stream.FRAME))
    status = {"elder": wearable.elder, "device": wearable.device, "ts": at, "battery": 50.0,
              "firmware": wearable.firmware, "rssi": -70}  # fmt: skip
    bad = [
        (frame_topic, b"{not json"),
        (str(wearable.topic(Stream.STATUS)), encode.dumps({**status, "battery": 140.0})),
        (str(wearable.topic(Stream.STATUS)), encode.dumps({**status, "rssi": 20})),
        (str(wearable.topic(Stream.STATUS)), encode.dumps({**status, "firmware": None})),
        (str(door.topic(Stream.EVENT)),
         encode.dumps({"elder": other, "device": door.device, "ts": at, "door": "front",
                       "role": "front", "state": "opened", "seq": 0})),
    ]  # fmt: skip
    points = converter.convert([RawMessage(t, p, at + k) for k, (t, p) in enumerate(bad)],
                               now=at + 10)  # fmt: skip
    if dict(points.dead) != BAD_MESSAGES:
        raise AssertionError(f"expected dead letters {BAD_MESSAGES}, got {dict(points.dead)}")
    client.write(points.lines)


def _events(week: Week, client: InfluxClient, sim: Simulation, converter: Converter) -> None:
    """Buttons, alerts and their lifecycle events (the detectors' and escalation's output)."""
    site, start, end = week.site, week.start, week.end
    first = sim.elders[0]
    sos_at = start + 2.5 * 86400 + 11 * 3600.0
    fall_at = start + 4 * 86400 + 15 * 3600.5
    presses = [(sos_at, Stream.SOS, 0), (fall_at + 12.0, Stream.OK, 1)]
    msgs = [
        RawMessage(
            str(first.wearable.topic(stream)),
            encode.dumps(
                {"elder": first.elder, "device": first.wearable.device, "ts": ts, "seq": seq}
            ),
            ts,
        )
        for ts, stream, seq in presses
    ]
    for ts, m in zip((p[0] for p in presses), msgs, strict=True):
        points = converter.convert([m], now=ts + 1)
        client.write(points.lines)
        week.stored.update(points.stored)
    _misbehaving(week, client, sim, converter)
    second = sim.elders[min(1, len(sim.elders) - 1)]
    last = sim.elders[-1]
    # (elder, device, kind, severity, start, [(state, after_s, extra fields)])
    story = [
        (
            first,
            first.wearable.device,
            "sos",
            Severity.CRITICAL,
            sos_at,
            [
                (AlertState.NOTIFIED, 1.0, {}),
                (AlertState.ACKNOWLEDGED, ACK_S, {"who": "c1", "channel": "call_centre"}),
                (AlertState.RESOLVED, 1800.0, {"outcome": "handled_at_home"}),
            ],
        ),
        (
            first,
            first.wearable.device,
            "fall",
            Severity.CRITICAL,
            fall_at,
            [(AlertState.CANCELLED, 12.0, {})],
        ),
        (
            second,
            second.wearable.device,
            "tachycardia",
            Severity.CRITICAL,
            start + 3 * 86400 + 9 * 3600.0,
            [
                (AlertState.NOTIFIED, 1.0, {}),
                (AlertState.ACKNOWLEDGED, 2 * ACK_S, {"who": "f1", "channel": "email"}),
                (AlertState.RESOLVED, 900.0, {"outcome": "false_alarm"}),
            ],
        ),
        (
            last,
            last.wearable.device,
            "fall",
            Severity.CRITICAL,
            start + 1 * 86400 + 10 * 3600.0,
            [
                (AlertState.NOTIFIED, 31.0, {}),
                (AlertState.ACKNOWLEDGED, 31.0 + ACK_S / 2, {"who": "c1", "channel": "http"}),
                (AlertState.RESOLVED, 3600.0, {"who": "c1", "outcome": "ambulance"}),
            ],
        ),
        (
            first,
            first.bed.device,
            "bed_exit",
            Severity.WARNING,
            start + 6 * 86400 + 2 * 3600.0,
            [
                (AlertState.NOTIFIED, 1.0, {}),
                (AlertState.ACKNOWLEDGED, 3 * ACK_S, {"who": "f1", "channel": "mqtt"}),
                (AlertState.RESOLVED, 2400.0, {"who": "f1", "outcome": "visit"}),
            ],
        ),
        (
            second,
            None,
            "inactivity",
            Severity.WARNING,
            end - 2 * 3600.0,
            [(AlertState.NOTIFIED, 1.0, {}),
             (AlertState.NOTIFIED, 95.0, {"event": "failed_email", "who": "f2",
                                          "channel": "email",
                                          "detail": "after 10 attempts: error: 550"})],
        ),
        (
            second,
            second.wearable.device,
            "fall_recovered",
            Severity.WARNING,
            start + 2 * 86400 + 15 * 3600.0,
            [
                (AlertState.NOTIFIED, 1.0, {}),
                (AlertState.RESOLVED, 7200.0, {"who": "f2", "outcome": "handled_at_home"}),
            ],
        ),
        (
            last,
            week.offline_device,
            "device_offline",
            Severity.INFO,
            end - OFFLINE_H * 3600 + 600,
            [],
        ),
    ]
    lines: list[str] = []
    for elder, device, kind, severity, ts, steps in story:
        alert = Alert(
            id=alert_id(elder.elder, kind, ts),
            site=site,
            elder=elder.elder,
            device=device,
            kind=kind,
            severity=severity,
            ts=ts,
            evidence={"x": 1.0},
            updated=ts,
        )
        lines += alert_lines(alert)
        for state, after_s, extra in steps:
            alert = alert.model_copy(update={"state": state, "updated": ts + after_s})
            lines += alert_lines(alert)
            row = {"event": extra.get("event", str(state)), "state": str(state),
                   "ts": alert.updated, "ref": None, "step": None, "who": extra.get("who"),
                   "channel": extra.get("channel"),
                   "detail": extra.get("detail", extra.get("outcome"))}  # fmt: skip
            lines.append(event_line(alert, row))
            if state is AlertState.ACKNOWLEDGED:
                week.acks.append(after_s)
            if "outcome" in extra:
                week.outcomes[extra["outcome"]] += 1
        week.alerts.append(alert)
    client.write(lines)

"""From detections to alerts: stable ids, the "I'm OK" grace window, and how alerts are stored.

An alert's id is derived from its elder, kind and start time, so the same condition
found again (a frame re-delivered after a restart) is the same alert. A fall alert
stays cancellable for ``grace_s``: an "I'm OK" press from the elder in that window
cancels it, and escalation waits out the window before telling anyone.

InfluxDB (:class:`homecare.schema.Alert`, :class:`~homecare.schema.AlertEvent`): one
``alert`` point per alert at its start time, rewritten in place when its state changes
(what dashboards annotate), and one ``alert_event`` point per state change, at its time.

>>> book = AlertBook(grace_s=30)
>>> [fall] = book.open([Raised("north", "e1", "w1", "fall", Severity.CRITICAL, 100.0, {})], now=101)
>>> fall.state, len(fall.id)
(<AlertState.OPEN: 'open'>, 16)
>>> [a.state for a in book.ok_pressed("e1", ts=120.0)]
[<AlertState.CANCELLED: 'cancelled'>]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from homecare.contract import Alert, AlertState, Severity
from homecare.influx import line
from homecare.schema import Alert as AlertPoint
from homecare.schema import AlertEvent

__all__ = [
    "CANCELLABLE",
    "OPERATIONS_SITE",
    "SOURCE_BROKEN",
    "AlertBook",
    "Raised",
    "alert_id",
    "alert_lines",
    "is_operations",
    "source_broken_alert",
]

CANCELLABLE = frozenset({"fall"})
"""Kinds the wearer can cancel with "I'm OK" within the grace window."""
OPERATIONS_SITE = "_ops"
"""The reserved site of operations alerts: a fault of the platform, not of one home.
Its "elder" is the broken thing (a stream's name); escalation tells the provider's call
centre and supervisor (a registry may give ``sites: {_ops: ...}`` an operations desk of
its own), never an elder's family. ``_`` keeps it apart from site names people choose."""
SOURCE_BROKEN = "source_broken"
"""A stream's source (TELEMETRY's ``$MQTT_msgs``) stays missing, broken or inactive:
devices are still acknowledged, but ingest and detect see nothing."""


@dataclass(frozen=True, slots=True)
class Raised:
    """A detection with its ids resolved: what the alert book needs."""

    site: str
    elder: str
    device: str | None
    kind: str
    severity: Severity
    ts: float
    evidence: dict[str, float] = field(default_factory=dict)


def alert_id(elder: str, kind: str, ts: float, device: str | None = None) -> str:
    """The same condition always gets the same id (a replayed detection is recognised);
    a device's own condition is keyed by the device too, so that an elder's three devices
    going silent at once are three alerts, not one.

    >>> alert_id("e1", "offline", 60.0, "w1") != alert_id("e1", "offline", 60.0, "b1")
    True
    >>> alert_id("e1", "fall", 60.0) == alert_id("e1", "fall", 60.0)
    True
    """
    key = f"{elder}|{kind}|{round(ts * 1000)}" + (f"|{device}" if device else "")
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def is_operations(alert: Alert) -> bool:
    """Whether an alert is about the platform (:data:`OPERATIONS_SITE`), not an elder."""
    return alert.site == OPERATIONS_SITE


def source_broken_alert(
    stream: str,
    since: float,
    now: float,
    *,
    lag: int | None = None,
    state: AlertState = AlertState.OPEN,
) -> Alert:
    """The operations alert of ``stream``'s source broken since ``since`` (Unix s): its
    id comes from the stream and ``since``, so a watchdog raising it again (a restart, a
    second watchdog) raises the same alert; ``state`` RESOLVED when it flows again.

    >>> a = source_broken_alert("TELEMETRY", 1000.0, 1031.0)
    >>> a.site, a.elder, a.kind, a.severity.value, a.evidence
    ('_ops', 'TELEMETRY', 'source_broken', 'critical', {'broken_s': 31.0})
    >>> a.id == source_broken_alert("TELEMETRY", 1000.0, 1040.0, state="resolved").id
    True
    """
    evidence = {"broken_s": round(now - since, 1)}
    if lag is not None:
        evidence["lag"] = float(lag)
    return Alert(
        id=alert_id(stream, SOURCE_BROKEN, since),
        site=OPERATIONS_SITE,
        elder=stream,
        kind=SOURCE_BROKEN,
        severity=Severity.CRITICAL,
        ts=since,
        evidence=evidence,
        state=state,
        updated=now,
    )


class AlertBook:
    """Alerts opened by the detectors, and the cancellable ones still in their window."""

    def __init__(self, *, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self._cancellable: dict[str, list[Alert]] = {}

    def open(self, raised: Iterable[Raised], *, now: float) -> list[Alert]:
        alerts = []
        for r in raised:
            alert = Alert(
                id=alert_id(r.elder, r.kind, r.ts, r.device),
                site=r.site,
                elder=r.elder,
                device=r.device,
                kind=r.kind,
                severity=r.severity,
                ts=r.ts,
                evidence=r.evidence,
                updated=now,
            )
            if r.kind in CANCELLABLE:
                self._cancellable.setdefault(r.elder, []).append(alert)
            alerts.append(alert)
        return alerts

    def ok_pressed(self, elder: str, *, ts: float) -> list[Alert]:
        """Cancel the elder's cancellable alerts whose grace window holds ``ts``."""
        keep, cancelled = [], []
        for alert in self._cancellable.pop(elder, []):
            if alert.ts <= ts <= alert.ts + self.grace_s:
                cancelled.append(
                    alert.model_copy(update={"state": AlertState.CANCELLED, "updated": ts})
                )
            elif ts < alert.ts:
                keep.append(alert)
        if keep:
            self._cancellable[elder] = keep
        return cancelled

    def expire(self, now: float) -> None:
        """Forget alerts whose grace window has passed (escalation owns them now)."""
        for elder in list(self._cancellable):
            left = [a for a in self._cancellable[elder] if now <= a.ts + self.grace_s]
            if left:
                self._cancellable[elder] = left
            else:
                del self._cancellable[elder]

    @property
    def in_grace(self) -> int:
        return sum(len(v) for v in self._cancellable.values())


def alert_lines(alert: Alert) -> list[str]:
    """The ``alert`` point (latest state, at the start time) and its ``alert_event``."""
    a = AlertPoint
    site, elder, kind, severity = a.tags
    tags = (
        f"{site}={alert.site},{elder}={alert.elder},{kind}={alert.kind},{severity}={alert.severity}"
    )
    fields = {
        a.id: alert.id,
        a.device: alert.device,
        a.state: str(alert.state),
        a.evidence: json.dumps(alert.evidence, sort_keys=True),
    }
    return [
        line(a.name, tags, fields, round(alert.ts * 1000)),
        line(
            AlertEvent.name,
            f"{tags},{AlertEvent.state}={alert.state}",
            {AlertEvent.id: alert.id},
            round(alert.updated * 1000),
        ),
    ]

"""``homecare detect``: live streams → detectors → alerts on MQTT and in InfluxDB.

Runs as its own process beside ingest, with its own persistent MQTT session, so a
restart misses nothing. Each batch of messages is decoded at the edge (bad ones are
ingest's to dead-letter; here they are only counted), turned into one batch per
stream for all elders, and handed to every detector; then time is let pass. A
detection becomes an alert (QoS 1, retained, under the elder's topic, and a point
in InfluxDB) before the batch is acknowledged.

The clock is the wall clock in production. ``clock="data"`` uses the newest reading's
time instead, for accelerated simulations and replays of the past.

A city runs several processes, each owning some sites (``detect.sites``, a *shard*): each
subscribes per site, because detectors keep per-elder state and a shared subscription
would spread one elder's readings over several processes. Each shard has its own
session (client id) and status file, named after its sites (:func:`shard_name`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.base import Detection, Detector, dispatch, tick_all
from detectors.baselines import BaselineFile, baselines_path
from detectors.batches import Batcher
from detectors.bed_exit import BedExitDetector
from detectors.care import Care
from detectors.device_health import DeviceHealthDetector
from detectors.fall import FallDetector
from detectors.inactivity import InactivityDetector
from detectors.morning import MorningDetector
from detectors.sos import SosDetector
from detectors.vitals import VitalsDetector
from detectors.wandering import WanderingDetector
from homecare.alerts import AlertBook, Raised, alert_lines
from homecare.consumer import RawMessage
from homecare.contract import Alert, ContractError, alert_topic, subscription
from homecare.edge import Edge
from homecare.influx import InfluxClient, InfluxError
from homecare.jetstream import shard_name
from homecare.receiver import MqttConsumer
from homecare.settings import DetectSettings, Settings
from homecare.status import write_status
from homecare.thresholds import DetectorSettings

log = logging.getLogger(__name__)

TICK_EVERY_S = 1.0
WEARABLE_KINDS = frozenset({"fall"})
def for_sites(settings: Settings, sites: Sequence[str]) -> Settings:
    """The settings of a shard given on the command line, validated like the environment's."""
    detect = DetectSettings.model_validate({**settings.detect.model_dump(), "sites": sites})
    return settings.model_copy(update={"detect": detect})


def default_detectors(
    care: Care, settings: DetectorSettings | None = None
) -> list[Detector[Any]]:
    """Every detector with its thresholds from ``settings`` (``Settings.detectors``, the
    environment's), sharing one care table."""
    s = settings or DetectorSettings()
    return [
        FallDetector(s.fall), SosDetector(s.sos), InactivityDetector(s.inactivity, care),
        WanderingDetector(s.wandering, care), BedExitDetector(s.bed_exit, care),
        MorningDetector(s.morning, care), VitalsDetector(s.vitals, care),
        DeviceHealthDetector(s.device_health, care),
    ]  # fmt: skip


def care_table(settings: DetectorSettings) -> Care:
    """The care table of ``settings.care_table`` if one is given, else the shipped one."""
    return Care(settings.care)


@dataclass(slots=True)
class DetectStats:
    messages: int = 0
    undecodable: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "undecodable": self.undecodable,
            "alerts": dict(self.alerts),
            "cancelled": self.cancelled,
        }


class Detect:
    """The detection pipeline without I/O: messages in, alerts out (tests drive it directly)."""

    def __init__(self, settings: Settings, *, detectors: list[Detector[Any]] | None = None) -> None:
        self.edge = Edge(settings.contract)
        self.care = care_table(settings.detectors)
        self.detectors = (
            detectors if detectors is not None else default_detectors(self.care, settings.detectors)
        )
        self.batcher = Batcher()
        self.book = AlertBook(grace_s=settings.detect.grace_s)
        self.clock = settings.detect.clock
        self.care_levels = settings.detect.care_levels
        self.stats = DetectStats()
        self._data_now = float("-inf")
        self._next_tick = 0.0

    def now(self) -> float:
        return time.time() if self.clock == "wall" else self._data_now

    def handle(self, messages: list[RawMessage], *, received: float | None = None) -> list[Alert]:
        """Decode, batch, detect; return the alerts opened or cancelled, in time order."""
        ctx = self.edge.context()
        decoded = []
        for msg in messages:
            try:
                decoded.append(self.edge.decode(msg, ctx))
            except ContractError:
                self.stats.undecodable += 1
        self.stats.messages += len(messages)
        known = len(self.batcher.elders)
        built = self.batcher.build(decoded, received=received)
        if len(self.batcher.elders) > known:
            self._new_elders(known)
        self._data_now = max(self._data_now, built.latest_ts)
        found: list[Detection] = []
        for batch in built.batches:
            found += dispatch(self.detectors, batch)
        now = self.now()
        if now >= self._next_tick:
            self._next_tick = now + TICK_EVERY_S
            found += tick_all(self.detectors, now)
        alerts = self.book.open((self._raised(d) for d in found), now=now)
        for elder, ts in built.ok_presses:
            cancelled = self.book.ok_pressed(elder, ts=ts)
            self.stats.cancelled += len(cancelled)
            alerts += cancelled
        self.book.expire(now)
        for alert in alerts:
            self.stats.alerts[alert.kind] += alert.state == "open"
        return alerts

    def _new_elders(self, first_row: int) -> None:
        """Elders seen for the first time get their care level (tighter limits when higher)."""
        rows = np.arange(first_row, len(self.batcher.elders))
        levels = [self.care_levels.get(self.batcher.elders.key(int(r)), 0) for r in rows]
        given = np.flatnonzero(levels)
        if len(given):
            self.care.set_care_levels(rows[given], np.asarray(levels)[given])

    def _raised(self, d: Detection) -> Raised:
        elder = self.batcher.elders.key(d.row)
        if d.device >= 0:
            device: str | None = self.batcher.devices.key(d.device)
        else:  # an elder-level finding; the wearable's, if it came from its frames
            device = self.batcher.wearable.get(elder) if d.kind in WEARABLE_KINDS else None
        return Raised(
            self.batcher.site.get(elder, "unknown"),
            elder,
            device,
            d.kind,
            d.severity,
            d.ts,
            d.evidence,
        )


class DetectService:
    """``homecare detect``: :class:`Detect` between a persistent MQTT session and InfluxDB."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.detect = Detect(settings)
        self.baselines = BaselineFile(baselines_path(settings))
        shard = shard_name(settings.detect.sites)
        # A shard's own persistent session: even with one client id set for all shards.
        self.client_id = f"{settings.detect.client_id}.{shard}" if shard else (
            settings.detect.client_id
        )
        self.status_path = settings.state_dir / (f"detect.{shard}.json" if shard else "detect.json")
        self.topics = [subscription(s) for s in sorted(set(settings.detect.sites))] or [
            subscription()
        ]
        self._unwritten: list[str] = []

    def run(self, stop: threading.Event) -> DetectStats:
        cfg = self.settings.detect
        consumer = MqttConsumer(
            self.settings.mqtt,
            client_id=self.client_id,
            topics=self.topics,
            max_pending=self.settings.ingest.max_pending,
        )
        with InfluxClient(self.settings.influx) as db, consumer:
            log.info("detect %s subscribed to %s", self.client_id, consumer.topic)
            next_status = 0.0
            while not stop.is_set():
                self.baselines.poll(
                    self.detect.detectors, self.detect.care, self.detect.batcher.elders
                )
                delivery = consumer.take(cfg.batch_size, cfg.batch_interval_s)
                alerts = self.detect.handle(delivery.messages, received=time.time())
                for alert in alerts:  # serialised once, to leave the process
                    consumer.publish(
                        alert_topic(alert.site, alert.elder, alert.id),
                        alert.model_dump_json().encode(),
                        retain=True,
                    )
                    self._unwritten += alert_lines(alert)
                self._write(db)
                consumer.ack(delivery)  # after the alerts it caused are published
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + 1.0
                    write_status(self.status_path, self.detect.stats.as_dict())
            write_status(self.status_path, self.detect.stats.as_dict())
        return self.detect.stats

    def _write(self, db: InfluxClient) -> None:
        """Alerts go to InfluxDB when it is there; they are already on MQTT regardless."""
        if not self._unwritten:
            return
        try:
            db.write(self._unwritten)
            self._unwritten = []
        except InfluxError as exc:
            log.warning("alerts not yet in InfluxDB (%d lines held): %s", len(self._unwritten), exc)
            self._unwritten = self._unwritten[-10000:]

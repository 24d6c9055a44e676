"""``homecare detect``: TELEMETRY → detectors → alerts in the ALERTS stream and InfluxDB.

Runs as its own process beside ingest, on its own durable JetStream consumer of
TELEMETRY. Each batch of messages is decoded at the edge (bad ones are ingest's to
dead-letter; here they are only counted), turned into one batch per stream for all
elders, and handed to every detector; then time is let pass. A detection becomes an
alert, stored in the ALERTS stream (``Nats-Msg-Id``: the alert id and its state, so a
replayed detection is stored once; escalation consumes it and publishes the retained
alert states on MQTT for apps) and written to InfluxDB.

A message is acknowledged only once the detectors' saved state covers it
(:mod:`detectors.resume`): every ``detect.save_every_s`` and on SIGTERM the state goes to
the broker's object store with the stream sequence it covers, and a restart (kill -9 or
clean) resumes from there, so a fall in progress when detect stopped is still alerted,
once.

The clock is the wall clock in production. ``clock="data"`` uses the newest reading's
time instead, for accelerated simulations and replays of the past.

A city runs several processes, each owning some sites (``detect.sites``, a *shard*),
because detectors keep per-elder state: each shard has its own durable consumer
(:func:`~homecare.jetstream.detect_consumer`, filtered to its sites, made by ``homecare
broker provision --detect-shard north,south``), snapshot and status file, named after its
sites (:func:`~homecare.jetstream.shard_name`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
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
from detectors.bathroom import BathroomDetector
from detectors.bed_exit import BedExitDetector
from detectors.care import Care
from detectors.device_health import DeviceHealthDetector
from detectors.fall import FallDetector
from detectors.inactivity import InactivityDetector
from detectors.morning import MorningDetector
from detectors.resume import Position, StateStore
from detectors.snapshot import SnapshotMismatch, freeze, read_meta, thaw
from detectors.sos import SosDetector
from detectors.vitals import VitalsDetector
from detectors.wandering import WanderingDetector
from homecare.alerts import AlertBook, Raised, alert_lines
from homecare.consumer import ConsumerError, Delivery, RawMessage
from homecare.contract import Alert, AlertState, ContractError
from homecare.edge import Edge
from homecare.influx import InfluxClient, InfluxError
from homecare.jetstream import JetStreamConsumer, alert_subject, detect_consumer, shard_name
from homecare.settings import DetectSettings, Settings
from homecare.status import write_status
from homecare.thresholds import DetectorSettings

log = logging.getLogger(__name__)

TICK_EVERY_S = 1.0
WEARABLE_KINDS = frozenset({"fall"})
STATE_FORMAT = 1
"""Of what :meth:`Detect.freeze` saves beside the objects (:data:`STATE`)."""
STATE = ("detectors", "care", "batcher", "book", "_data_now", "_next_tick")
"""What of :class:`Detect` a restart must find again: every detector's arrays, the care
table they share, the rosters and maps of the batcher, the alerts in their grace window
and the clocks. Not the edge nor the settings (the running process's), nor the stats."""


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
        DeviceHealthDetector(s.device_health, care), BathroomDetector(s.bathroom, care),
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
    replayed: int = 0
    """Messages read again at start, after the saved state (:mod:`detectors.resume`)."""
    skipped: int = 0
    """Redelivered messages the state already covered."""
    stored_again: int = 0
    """Alerts ALERTS already had (a detection found again after a restart)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "undecodable": self.undecodable,
            "alerts": dict(self.alerts),
            "cancelled": self.cancelled,
            "replayed": self.replayed,
            "skipped": self.skipped,
            "stored_again": self.stored_again,
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
        self.fingerprint = hashlib.sha256(
            f"{STATE_FORMAT}|{settings.detectors.model_dump_json()}|{settings.detect.grace_s}|"
            f"{settings.detect.clock}".encode()
        ).hexdigest()[:16]
        """Of the settings the state depends on: a snapshot made under others is not resumed."""

    def freeze(self, **meta: object) -> bytes:
        """The state a restart needs (:data:`STATE`) as bytes, with ``meta``."""
        return freeze({name: getattr(self, name) for name in STATE},
                      meta={**meta, "fingerprint": self.fingerprint})  # fmt: skip

    def thaw(self, blob: bytes) -> dict[str, Any]:
        """Resume the state of :meth:`freeze` (into this fresh pipeline); its meta.
        :class:`SnapshotMismatch` when it was made by other code or settings."""
        if read_meta(blob).get("fingerprint") != self.fingerprint:
            raise SnapshotMismatch("the snapshot was made under other detector settings")
        meta, values = thaw({name: getattr(self, name) for name in STATE}, blob)
        for name in STATE:  # objects were written in place; plain values are set here
            setattr(self, name, values[name])
        return meta

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
    """``homecare detect``: :class:`Detect` between its durable consumer of TELEMETRY, the
    ALERTS stream, its saved state and InfluxDB."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.detect = Detect(settings)
        self.baselines = BaselineFile(baselines_path(settings))
        shard = shard_name(settings.detect.sites)
        self.durable = detect_consumer(settings.detect.sites)
        self.status_path = settings.state_dir / (f"detect.{shard}.json" if shard else "detect.json")
        self._unwritten: list[str] = []
        self.processed = 0
        """The highest stream sequence the detectors have seen; every message of the
        consumer up to it has been processed (a durable consumer delivers in order)."""
        self.saved = 0
        """The sequence the last saved snapshot covers (what may be acknowledged)."""
        self._held: list[Delivery] = []
        self._held_n = 0
        self._dirty = False
        self._saving: tuple[concurrent.futures.Future[float], int, int] | None = None
        """The save in flight: its future, the deliveries it covers, its sequence."""
        self._last_save: dict[str, object] = {}
        self._acking: concurrent.futures.Future[None] | None = None
        """Acknowledgements of the last save, sent off the detect thread (a 5,000-elder
        shard acknowledges ~30,000 messages at once; the batches go on meanwhile)."""

    def run(self, stop: threading.Event) -> DetectStats:
        cfg = self.settings.detect
        nats = self.settings.nats
        consumer = JetStreamConsumer.from_settings(nats, durable=self.durable)
        acks = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.durable}-ack")
        with (
            InfluxClient(self.settings.influx) as db,
            consumer,
            StateStore(nats, durable=self.durable) as store,
            acks,
        ):
            position = store.position()
            self._check_limits(position)
            self._resume(store, consumer, db, position)
            log.info("detect %s: resumed at sequence %d (delivered %d, acknowledged %d)",
                     self.durable, self.processed, position.delivered, position.ack_floor)
            next_status = 0.0
            next_save = time.monotonic() + cfg.save_every_s
            pending_limit = max(1, position.max_ack_pending // 2)
            while not stop.is_set():
                self.baselines.poll(
                    self.detect.detectors, self.detect.care, self.detect.batcher.elders
                )
                delivery = consumer.take(cfg.batch_size, cfg.batch_interval_s)
                self._handle(consumer, db, delivery.messages)
                if delivery.messages:
                    self._held.append(delivery)
                    self._held_n += len(delivery.messages)
                self._settle_save(consumer, acks)
                now = time.monotonic()
                if self._saving is None and (self._held_n >= pending_limit or (
                        now >= next_save and (self._dirty or self._held))):  # fmt: skip
                    next_save = now + cfg.save_every_s
                    self._start_save(store)
                if now >= next_status:
                    next_status = now + 1.0
                    self._write_status(consumer)
            self._final_save(store, consumer, acks)
            self._write_status(consumer)
        return self.detect.stats

    # resuming ----------------------------------------------------------------------------
    def _check_limits(self, position: Position) -> None:
        every = self.settings.detect.save_every_s
        if position.ack_wait_s < 2 * every:
            log.warning("%s: ack_wait %.1f s is under twice detect.save_every_s (%.1f s): "
                        "messages will be delivered again before a save acknowledges them",
                        self.durable, position.ack_wait_s, every)  # fmt: skip

    def _resume(
        self, store: StateStore, consumer: JetStreamConsumer, db: InfluxClient, at: Position
    ) -> None:
        """Thaw the saved state, then read again what the last process was handed after it."""
        start = at.ack_floor
        blob = store.load()
        if blob is not None:
            try:
                meta = self.detect.thaw(blob)
            except SnapshotMismatch as exc:
                # nothing was written into the detectors: they start fresh
                log.warning("%s: saved state not resumed (%s): starting fresh from sequence %d",
                            self.durable, exc, at.ack_floor)  # fmt: skip
            else:
                start = int(meta["seq"])
                self._unwritten = list(meta.get("unwritten", []))
                self.saved = start
        self.processed = start
        for messages in store.replay(start + 1, at.delivered, filters=at.filters,
                                     batch=self.settings.detect.batch_size):  # fmt: skip
            self.detect.stats.replayed += len(messages)
            self._handle(consumer, db, messages)
        self.processed = max(self.processed, at.delivered)

    # the work ----------------------------------------------------------------------------
    def _handle(
        self, consumer: JetStreamConsumer, db: InfluxClient, messages: list[RawMessage]
    ) -> None:
        """Detect on what was not processed yet; store the alerts it raised."""
        fresh = [m for m in messages if m.seq > self.processed]
        self.detect.stats.skipped += len(messages) - len(fresh)
        alerts = self.detect.handle(fresh, received=time.time())
        if fresh:
            self.processed = max(m.seq for m in fresh)
            self._dirty = True
        if alerts:
            self._dirty = True
            self._store(consumer, alerts)
        self._write(db)

    def _store(self, consumer: JetStreamConsumer, alerts: list[Alert]) -> None:
        """Each alert into ALERTS, once per id and state; a failure stops the service (its
        input is not acknowledged: the restart finds the alert again)."""
        out = [(alert_subject(a.site, a.elder, a.id), a.model_dump_json().encode(),
                a.id if a.state == AlertState.OPEN else f"{a.id}-{a.state}")
               for a in alerts]  # fmt: skip
        for attempt in range(3):
            try:
                duplicates = consumer.publish(out)
                break
            except ConsumerError as exc:
                if attempt == 2:
                    raise
                log.warning("%s: alerts not stored yet, retrying: %s", self.durable, exc)
                time.sleep(1.0)
        for alert, again in zip(alerts, duplicates, strict=True):
            if again:
                self.detect.stats.stored_again += 1
            else:
                self._unwritten += alert_lines(alert)

    def _write(self, db: InfluxClient) -> None:
        """Alerts go to InfluxDB when it is there; they are already in ALERTS regardless
        (what is held is saved with the state)."""
        if not self._unwritten:
            return
        try:
            db.write(self._unwritten)
            self._unwritten = []
        except InfluxError as exc:
            log.warning("alerts not yet in InfluxDB (%d lines held): %s", len(self._unwritten), exc)
            self._unwritten = self._unwritten[-10000:]

    # saving the state --------------------------------------------------------------------
    def _start_save(self, store: StateStore) -> None:
        blob = self.detect.freeze(seq=self.processed, unwritten=self._unwritten,
                                  saved_at=time.time())  # fmt: skip
        self._saving = (store.save(blob), len(self._held), self.processed)
        self._last_save["bytes"] = len(blob)
        self._dirty = False

    def _settle_save(
        self, consumer: JetStreamConsumer, acks: concurrent.futures.Executor, *,
        wait_s: float = 0.0,
    ) -> None:  # fmt: skip
        """Once the save in flight is stored, acknowledge what it covers (on ``acks``)."""
        if self._saving is None:
            return
        future, n, seq = self._saving
        try:
            took = future.result(wait_s) if wait_s else (
                future.result() if future.done() else None)  # fmt: skip
        except concurrent.futures.TimeoutError:
            return
        except Exception as exc:  # the next save tries again; nothing is acknowledged
            log.error("%s: state not saved: %s", self.durable, exc)
            self._saving = None
            self._dirty = True
            return
        if took is None:
            return
        self._saving = None
        covered, self._held = self._held[:n], self._held[n:]
        self._held_n -= sum(len(d.messages) for d in covered)
        if self._acking is not None:
            self._acking.result()  # in order, and an error is raised here
        self._acking = acks.submit(_acknowledge, consumer, covered)
        self.saved = seq
        self._last_save.update(seq=seq, seconds=round(took, 3), at=time.time())

    def _final_save(
        self, store: StateStore, consumer: JetStreamConsumer, acks: concurrent.futures.Executor
    ) -> None:
        """On SIGTERM: the state as it is now, then acknowledge all it covers."""
        self._settle_save(consumer, acks, wait_s=60.0)
        self._start_save(store)
        self._settle_save(consumer, acks, wait_s=60.0)
        if self._acking is not None:
            self._acking.result(60.0)

    def _write_status(self, consumer: JetStreamConsumer) -> None:
        source = consumer.source_status
        status = self.detect.stats.as_dict() | {
            "consumer": self.durable,
            "processed_seq": self.processed,
            "saved_seq": self.saved,
            "unacknowledged": self._held_n,
            "last_save": dict(self._last_save),
            "source_ok": None if source is None else source.ok,
            "source": None if source is None else source.detail,
        }
        write_status(self.status_path, status)


def _acknowledge(consumer: JetStreamConsumer, deliveries: list[Delivery]) -> None:
    """Acknowledge deliveries a saved state covers (on the acknowledging thread)."""
    for delivery in deliveries:
        consumer.ack(delivery)

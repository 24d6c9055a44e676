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

Every process is a *worker*: detectors keep per-elder state, and TELEMETRY is
partitioned by elder, so workers share the partitions, one worker per partition at a
time (:class:`DetectService`); a worker that dies loses its partitions to a live one
within the consumers' ``priority_timeout``, and the new holder resumes each from its
saved state. One worker alone holds every partition (a single site).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
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
from detectors.resume import Position, Prepared, StateStore
from detectors.snapshot import SnapshotMismatch, freeze, read_meta, thaw
from detectors.sos import SosDetector
from detectors.vitals import VitalsDetector
from detectors.wandering import WanderingDetector
from detectors.workers import Roster, fair_share, worker_id
from homecare.alerts import AlertBook, Raised, alert_lines
from homecare.consumer import ConsumerError, Delivery, RawMessage
from homecare.contract import Alert, AlertState, ContractError, Stream
from homecare.edge import Edge
from homecare.influx import InfluxClient, InfluxError
from homecare.jetstream import (
    DETECT_CONSUMER,
    DETECT_GROUP,
    JetStreamConsumer,
    alert_subject,
    detect_partition_consumer,
)
from homecare.settings import Settings
from homecare.status import write_status
from homecare.thresholds import DetectorSettings

log = logging.getLogger(__name__)

TICK_EVERY_S = 1.0
URGENT_STREAMS = frozenset({Stream.SOS.value, Stream.FALL.value})
"""A press or a device's own fall alarm is taken at once with what has arrived, not held
for the rest of the batch window (``batch_interval_s``): at most one window sooner."""
WEARABLE_KINDS = frozenset({"fall"})
STATE_FORMAT = 1
"""Of what :meth:`Detect.freeze` saves beside the objects (:data:`STATE`)."""
SETTLE_S = 2.0
"""Seconds the count of live workers must hold before a worker hands partitions back."""
PULL_EXPIRES_S = 1.0
"""The longest pull a worker keeps out (the consumer's default; under priority_timeout)."""
STORE_WAIT_S = 40.0
"""How long detect keeps trying to store an alert in ALERTS before it stops: an election
after a node's kill took longer than the three tries of 1 s it had before, and the worker
exited (its partitions then waited for a restart)."""
STORE_RETRY_S = 0.5
"""The pause between tries to store alerts (each try waits up to
:data:`~homecare.jetstream.PUBLISH_TRY_S`): an alarm goes out within a second of ALERTS'
new leader, not at the end of a growing back-off."""
HAND_BACK_PAUSE_S = 2.0
"""A worker does not pull on a partition it handed back for this long, whatever it wants:
another worker, already pulling, takes it at its next message."""
KEEP_S = 30.0
"""How long a worker keeps the state of a partition whose pin it lost: a consumer whose
node died elects a new leader that does not know the pin (status 423), and the same
worker is usually pinned again within seconds; taken back with its own state it waits
for no snapshot (the snapshot store may be electing a leader of its own)."""
TAKE_LATER = (TimeoutError, nats.errors.Error, nats.js.errors.Error, ConsumerError)
"""What fetching a takeover may meet on a cluster (a stream, consumer or store without a
leader yet): the partition is asked for again with its next message."""
STATE = ("detectors", "care", "batcher", "book", "_data_now", "_next_tick")
"""What of :class:`Detect` a restart must find again: every detector's arrays, the care
table they share, the rosters and maps of the batcher, the alerts in their grace window
and the clocks. Not the edge nor the settings (the running process's), nor the stats."""


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


@dataclass(eq=False)
class Partition:
    """One TELEMETRY partition held by this worker: its detectors' state, what of its
    consumer is held unacknowledged until a save covers it, and its saves."""

    index: int
    name: str
    """Its durable consumer (``detect-p<N>``), also its snapshot's name."""
    detect: Detect
    baselines: BaselineFile
    processed: int = 0
    """The highest stream sequence the detectors have seen; every message of the
    partition's consumer up to it has been processed (a durable consumer delivers in order)."""
    saved: int = 0
    """The sequence the last saved snapshot covers (what may be acknowledged)."""
    held: list[Delivery] = field(default_factory=list)
    held_n: int = 0
    dirty: bool = False
    unwritten: list[str] = field(default_factory=list)
    storing: int = 0
    """Its batches of alerts not yet stored in ALERTS: no save starts meanwhile (a save
    acknowledges what raised them)."""
    saving: tuple[concurrent.futures.Future[float], int, int] | None = None
    """The save in flight: its future, the deliveries it covers, its sequence."""
    last_save: dict[str, object] = field(default_factory=dict)
    next_save: float = 0.0
    """When (monotonic) its next save is due: partitions are saved in turn, spread over
    the save interval, so that no batch waits for all of them to be frozen at once."""


class DetectService:
    """``homecare detect``: a worker. :class:`Detect` per partition it holds, between the
    partitions' durable consumers of TELEMETRY, the ALERTS stream, the partitions' saved
    state and InfluxDB.

    Every worker pulls on the partitions' consumers (``detect-p<N>``, priority group
    ``detect``, ``pinned_client``): the server pins each partition to one worker, and a
    worker takes a partition (its snapshot, then the replay of what the last holder was
    handed after it) when the partition's first message comes with its pin. Workers say
    they are alive in a key-value bucket (:class:`~detectors.workers.Roster`); one that
    holds more than its fair share of the partitions saves the surplus, acknowledges it
    and hands it back (unpin), and one that holds less pulls on the partitions nobody
    holds. One worker alone holds every partition."""

    def __init__(
        self, settings: Settings, *, worker: str | None = None,
        on_new_detect: Callable[[Detect], None] | None = None,
    ) -> None:  # fmt: skip
        """``on_new_detect``: called with each partition's fresh pipeline (the benchmark
        times its parts)."""
        self.settings = settings
        self.on_new_detect = on_new_detect
        self.worker = worker or worker_id()
        self.durable = DETECT_CONSUMER
        self.partitions = settings.nats.partitions
        self.names = [detect_partition_consumer(p) for p in range(self.partitions)]
        self.stats = DetectStats()
        self.status_path = settings.state_dir / "detect.json"
        self.parts: dict[int, Partition] = {}
        self._preparing: list[tuple[concurrent.futures.Future[dict[str, Prepared | Exception]],
                                    set[str]]] = []  # fmt: skip
        """The takeovers being fetched (:meth:`_prepare`), and of which partitions."""
        self._waiting: dict[str, list[Delivery]] = {}
        """Partition → what it delivered while its takeover was fetched."""
        self._checking: tuple[concurrent.futures.Future[dict[str, bool | None]],
                              list[Partition]] | None = None
        """The pins check in flight, and the partitions due for a save it is for."""
        self._storer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="detect-alerts")  # fmt: skip
        """Stores alerts in ALERTS, in the order raised, off the detect thread: ALERTS without a
        leader (its election after a node's loss, 4 to 9 s) held the detect loop, and with it
        every partition's takeover, for as long."""
        self._stores: deque[tuple[Partition, list[Alert],
                                  concurrent.futures.Future[list[bool]]]] = deque()  # fmt: skip
        """Alerts being stored, oldest first."""
        self._acking: concurrent.futures.Future[None] | None = None
        """Acknowledgements of the last saves, sent off the detect thread (a 5,000-elder
        worker acknowledges ~30,000 messages at once; the batches go on meanwhile)."""
        self._pending_limit = 1000
        self._checked_limits = False
        self._next_balance = 0.0
        self.takeovers = 0
        self.taken_at: dict[int, float] = {}
        """Partition → when (wall time) this worker took it last."""
        self.last_saves: dict[str, dict[str, object]] = {}
        self._fingerprint = Detect(settings).fingerprint
        self._kept: dict[str, tuple[Partition, float]] = {}
        """Partitions whose pin this worker lost, with their state and when (monotonic):
        for :data:`KEEP_S`, one given back is taken from that state (:meth:`_prepare`)."""
        self.taken_back = 0
        """Partitions taken back from the state kept since they were set aside."""
        self.gaps = 0
        """Partitions set aside because messages their consumer handed out never came."""
        self._orphans: dict[str, concurrent.futures.Future[float]] = {}
        """Saves in flight of partitions this worker lost: waited for before it takes
        them again (a late one would overwrite a newer snapshot)."""
        """Each partition's last save (kept after the partition is handed back)."""
        self.released = 0
        self.lost = 0

    def run(self, stop: threading.Event) -> DetectStats:
        cfg = self.settings.detect
        consumer = JetStreamConsumer.from_settings(
            self.settings.nats, durable=self.durable, group=DETECT_GROUP, durables=self.names,
            urgent=URGENT_STREAMS,
        )  # fmt: skip
        acks = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="detect-ack")
        with (
            InfluxClient(self.settings.influx) as db,
            consumer,
            StateStore(consumer) as store,
            Roster(consumer, self.worker) as roster,
            acks,
            self._storer,
        ):
            log.info("detect worker %s: %d partitions", self.worker, self.partitions)
            consumer.want(self.names)
            next_status = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if now >= self._next_balance:
                    self._next_balance = now + 0.5
                    self._balance(consumer, store, db, acks, roster)
                delivery = consumer.take(cfg.batch_size, cfg.batch_interval_s)
                self._drop_lost(consumer.take_lost())
                self._take_prepared(consumer, store, db)
                self._dispatch(consumer, store, db, delivery)
                self._settle_stores()
                self._settle_saves(consumer, acks)
                self._settle_checks(consumer, store)
                now = time.monotonic()
                due = [p for p in self.parts.values() if p.saving is None and not p.storing and (
                    p.held_n >= self._pending_limit
                    or (now >= p.next_save and (p.dirty or p.held)))]  # fmt: skip
                if due and self._checking is None:
                    for part in due:
                        part.next_save = now + cfg.save_every_s
                    self._checking = (consumer.check_pins([p.name for p in due]), due)
                if now >= next_status:
                    next_status = now + 1.0
                    self._write_status(consumer)
            self._hand_back(consumer, store, db, acks, list(self.parts.values()), final=True)
            self._write_status(consumer)
        return self.stats

    # holding partitions ------------------------------------------------------------------
    def _balance(
        self, consumer: JetStreamConsumer, store: StateStore, db: InfluxClient,
        acks: concurrent.futures.Executor, roster: Roster,
    ) -> None:  # fmt: skip
        """Pull on the partitions nobody holds while under the fair share; hand back the
        surplus once the count of live workers has been steady for a while."""
        self._expire_kept()  # a partition that went to another worker for good
        share = fair_share(self.partitions, roster.live)
        held = [n for n in self.names if n in consumer.pinned]
        consumer.want([n for n in self.names if n not in consumer.pinned]
                      if len(held) < share else [])  # fmt: skip
        surplus = len(held) - share
        if surplus <= 0 or time.monotonic() - roster.changed_at < SETTLE_S:
            return
        names = held[-surplus:]
        parts = [p for p in self.parts.values() if p.name in names]
        log.info("detect worker %s: %d live workers, handing back %d of %d partitions",
                 self.worker, roster.live, surplus, len(held))  # fmt: skip
        self._hand_back(consumer, store, db, acks, parts, names=names)
        self.released += len(names)

    def _hand_back(
        self, consumer: JetStreamConsumer, store: StateStore, db: InfluxClient,
        acks: concurrent.futures.Executor, parts: list[Partition], *,
        names: list[str] | None = None, final: bool = False,
    ) -> None:  # fmt: skip
        """Stop pulling on these partitions, detect what they still delivered, save their
        state, acknowledge what it covers, then unpin them: the next worker resumes
        exactly there. On SIGTERM (``final``) every partition held goes so."""
        names = names if names is not None else [p.name for p in parts]
        if final:
            consumer.want([])
            names = list(self.names)
        consumer.pause(names, 3600.0 if final else HAND_BACK_PAUSE_S,
                       wait_s=PULL_EXPIRES_S + 1.0)  # fmt: skip
        for name in names:
            rest = consumer.take(1, 0.0, only=name)
            if rest.messages:
                self._dispatch(consumer, store, db, rest)
        parts = [p for p in self.parts.values() if p.name in names]
        self._settle_stores(wait_s=STORE_WAIT_S + 10.0)
        self._settle_saves(consumer, acks, wait_s=60.0)
        self._start_saves(store, parts)
        self._settle_saves(consumer, acks, wait_s=60.0)
        if self._acking is not None:
            self._acking.result(60.0)
        held = [n for n in names if n in consumer.pinned]
        if held:
            try:
                consumer.unpin(held)
            except (TimeoutError, nats.errors.Error, ConsumerError) as exc:
                # not pulled on any more: the server moves them after the priority timeout
                log.warning("detect worker %s: unpin failed: %r", self.worker, exc)
        for part in parts:
            self.parts.pop(part.index, None)

    def _drop_lost(self, names: list[str]) -> None:
        """Partitions whose pin the server gave to another worker, or reset (a new consumer
        leader): what they held unacknowledged is the new holder's to replay."""
        for part in [p for p in self.parts.values() if p.name in names]:
            log.warning("detect worker %s: lost %s to another worker (state saved at %d, "
                        "processed %d)", self.worker, part.name, part.saved,
                        part.processed)  # fmt: skip
            self.lost += 1
            self._set_aside(part)

    def _retake(self, names: list[str]) -> None:
        """Partitions whose consumer handed out messages that never came here (in flight
        when this worker's node died: the server sends them again only after ``ack_wait``,
        and by then later ones are processed, so they would be skipped): taken again from
        their own state, the replay reading what never came."""
        for part in [p for p in self.parts.values() if p.name in names]:
            log.warning("detect worker %s: %s handed out messages that never came; taken "
                        "again from sequence %d", self.worker, part.name,
                        part.processed)  # fmt: skip
            self.gaps += 1
            self._set_aside(part)

    def _set_aside(self, part: Partition) -> None:
        """Stop detecting on a partition, keeping its state for :data:`KEEP_S`: valid for the
        stream up to ``processed`` whoever held the partition since, as a snapshot at that
        sequence would be; taken from it if the partition comes back meanwhile."""
        self.parts.pop(part.index, None)
        self._kept[part.name] = (part, time.monotonic())
        if part.saving is not None:
            self._orphans[part.name] = part.saving[0]

    def _start_of(self, blob: bytes | None, at: Position) -> int:
        """The first sequence a partition's replay reads: after its snapshot, if it will
        be resumed, else after the consumer's acknowledgement floor."""
        if blob is not None:
            with contextlib.suppress(SnapshotMismatch, ValueError, KeyError):
                meta = read_meta(blob)
                if meta.get("fingerprint") == self._fingerprint:
                    return int(meta["seq"]) + 1
        return at.ack_floor + 1

    def _prepare(self, names: list[str], store: StateStore) -> None:
        """Fetch in the background what taking these partitions needs. Fetches run side by
        side: one at a time, partitions whose pins came back while one was fetched waited
        for it (3.5 s more for some after a node's loss in ``homecare bench city``)."""
        if not names:
            return
        fetching = self._fetching()
        names = [n for n in names if n not in fetching]
        if not names:
            return
        self._expire_kept()
        kept = {n: self._kept[n][0].processed for n in names if n in self._kept}
        after = [self._orphans.pop(n) for n in names if n in self._orphans]
        future = store.prepare(names, start_of=self._start_of, after=after, kept=kept,
                               batch=self.settings.detect.batch_size)  # fmt: skip
        self._preparing.append((future, set(names)))

    def _fetching(self) -> set[str]:
        """The partitions whose takeover is being fetched."""
        return {n for _, batch in self._preparing for n in batch}

    def _expire_kept(self) -> None:
        """Let go of the states kept longer than :data:`KEEP_S` (not of one being fetched:
        its takeover resumes from it)."""
        stale, fetching = time.monotonic() - KEEP_S, self._fetching()
        for name in [n for n, (_, at) in self._kept.items() if at < stale and n not in fetching]:
            del self._kept[name]

    def _take_prepared(
        self, consumer: JetStreamConsumer, store: StateStore, db: InfluxClient
    ) -> None:
        """Take the partitions whose takeover is fetched (:meth:`_prepare`)."""
        self._prepare(list(self._waiting), store)  # those whose last fetch failed
        for future, names in [p for p in self._preparing if p[0].done()]:
            self._preparing.remove((future, names))
            self._take_fetched(future, names, consumer, store, db)

    def _take_fetched(
        self, future: concurrent.futures.Future[dict[str, Prepared | Exception]],
        names: set[str], consumer: JetStreamConsumer, store: StateStore, db: InfluxClient,
    ) -> None:  # fmt: skip
        try:
            ready = future.result()
        except TAKE_LATER as exc:
            # a leader change on a cluster: their next messages ask again, and the next
            # replay covers those that came meanwhile (they are not acknowledged)
            log.warning("detect worker %s: partitions not taken yet: %r", self.worker, exc)
            for name in names:
                self._waiting.pop(name, None)
            return
        for name, prepared in ready.items():
            index = self.names.index(name)
            if isinstance(prepared, Exception):
                if not isinstance(prepared, TAKE_LATER):
                    raise prepared
                log.warning("detect worker %s: %s not taken yet: %r", self.worker, name,
                            prepared)  # fmt: skip
                self._waiting.pop(name, None)
                continue
            if index in self.parts or name not in consumer.pinned:  # lost again meanwhile
                self._waiting.pop(name, None)
                continue
            try:
                self._take_over(index, consumer, store, db, prepared)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("detect worker %s: %s not taken yet: %r", self.worker, name, exc)
                self._waiting.pop(name, None)

    def _take_over(
        self, index: int, consumer: JetStreamConsumer, store: StateStore, db: InfluxClient,
        ready: Prepared,
    ) -> Partition:  # fmt: skip
        """Thaw the partition's saved state, detect on what its consumer had handed out
        after it (to a dead worker, or to this one in the batch that brought the pin), then
        on what came while the takeover was fetched. ``ready``: its position, snapshot and
        replay, fetched in the background (:meth:`_prepare`): nothing here waits on the
        cluster."""
        t = time.perf_counter()
        name = self.names[index]
        kept = self._kept.pop(name, None)
        if ready.kept:
            if kept is None:  # never here: kept states expire only before a fetch starts
                raise TimeoutError(f"{name}: the state kept for it is gone; taken again later")
            return self._take_back(kept[0], consumer, db, ready, t)
        detect = Detect(self.settings)
        detect.stats = self.stats
        if self.on_new_detect is not None:
            self.on_new_detect(detect)
        part = Partition(index, name, detect, BaselineFile(baselines_path(self.settings)))
        every = self.settings.detect.save_every_s
        part.next_save = time.monotonic() + every * (1 + index / self.partitions)
        at = ready.position
        self._check_limits(at)
        start = at.ack_floor
        blob = ready.blob
        if blob is not None:
            try:
                meta = detect.thaw(blob)
            except SnapshotMismatch as exc:
                # nothing was written into the detectors: they start fresh
                log.warning("%s: saved state not resumed (%s): starting fresh from sequence %d",
                            name, exc, at.ack_floor)  # fmt: skip
            else:
                start = int(meta["seq"])
                part.unwritten = list(meta.get("unwritten", []))
                part.saved = start
        part.processed = start
        part.baselines.poll(detect.detectors, detect.care, detect.batcher.elders)
        replay = [ready.replay]
        if ready.start != start + 1:  # the snapshot thawed otherwise than foreseen: read here
            replay = store.replay(start + 1, at.delivered, filters=at.filters,
                                  batch=self.settings.detect.batch_size)  # fmt: skip
        for messages in replay:
            self.stats.replayed += len(messages)
            self._handle(part, consumer, db, messages)
        part.processed = max(part.processed, at.delivered)
        for waiting in self._waiting.pop(name, []):  # delivered while it was fetched
            self._handle(part, consumer, db, waiting.messages)
            part.held.append(waiting)
            part.held_n += len(waiting.messages)
        self.parts[index] = part
        self.taken_at[index] = time.time()
        self.takeovers += 1
        log.info("detect worker %s: took %s at sequence %d (saved %d, delivered %d) in %.2f s",
                 self.worker, name, part.processed, part.saved, at.delivered,
                 time.perf_counter() - t)  # fmt: skip
        return part

    def _take_back(
        self, part: Partition, consumer: JetStreamConsumer, db: InfluxClient, ready: Prepared,
        t: float,
    ) -> Partition:  # fmt: skip
        """Take a partition back with the state this worker kept since it lost the pin:
        detect on what its consumer handed out since (read from ``processed``), then on
        what came while that was fetched."""
        self.stats.replayed += len(ready.replay)
        self._handle(part, consumer, db, ready.replay)
        part.processed = max(part.processed, ready.position.delivered)
        for waiting in self._waiting.pop(part.name, []):
            self._handle(part, consumer, db, waiting.messages)
            part.held.append(waiting)
            part.held_n += len(waiting.messages)
        part.dirty = True
        part.next_save = time.monotonic()
        self.parts[part.index] = part
        self.taken_at[part.index] = time.time()
        self.takeovers += 1
        self.taken_back += 1
        log.info("detect worker %s: took %s back with its own state at sequence %d (saved %d, "
                 "delivered %d) in %.2f s", self.worker, part.name, part.processed, part.saved,
                 ready.position.delivered, time.perf_counter() - t)  # fmt: skip
        return part

    def _check_limits(self, position: Position) -> None:
        if self._checked_limits:
            return
        self._checked_limits = True
        self._pending_limit = max(1, position.max_ack_pending // 2)
        every = self.settings.detect.save_every_s
        if position.ack_wait_s < 2 * every:
            log.warning("ack_wait %.1f s is under twice detect.save_every_s (%.1f s): "
                        "messages will be delivered again before a save acknowledges them",
                        position.ack_wait_s, every)  # fmt: skip

    # the work ----------------------------------------------------------------------------
    def _dispatch(
        self, consumer: JetStreamConsumer, store: StateStore, db: InfluxClient,
        delivery: Delivery,
    ) -> None:  # fmt: skip
        """Each partition's messages to its detectors (taking the partition first)."""
        self._retake(consumer.take_gaps())  # before any message past a gap is detected on
        if not delivery.messages:
            return
        split: dict[int, Delivery] = {}
        for message, receipt in zip(delivery.messages, delivery.receipts, strict=True):
            one = split.setdefault(message.partition, Delivery())
            one.messages.append(message)
            one.receipts.append(receipt)
        for index in [i for i in split if not 0 <= i < self.partitions]:
            log.error("messages of partition %d: the worker knows %d partitions (is "
                      "HOMECARE_NATS__PARTITIONS that of the broker?)", index,
                      self.partitions)  # fmt: skip
            del split[index]
        new = [i for i in split if i not in self.parts]
        for i in new:  # kept until the partition is taken (:meth:`_take_over`)
            self._waiting.setdefault(self.names[i], []).append(split[i])
        self._prepare([self.names[i] for i in new], store)
        for index, one in split.items():
            part = self.parts.get(index)
            if part is None:
                continue
            part.baselines.poll(part.detect.detectors, part.detect.care,
                                part.detect.batcher.elders)  # fmt: skip
            self._handle(part, consumer, db, one.messages)
            part.held.append(one)
            part.held_n += len(one.messages)

    def _handle(
        self, part: Partition, consumer: JetStreamConsumer, db: InfluxClient,
        messages: list[RawMessage],
    ) -> None:  # fmt: skip
        """Detect on what was not processed yet; store the alerts it raised."""
        fresh = [m for m in messages if m.seq > part.processed]
        self.stats.skipped += len(messages) - len(fresh)
        alerts = part.detect.handle(fresh, received=time.time())
        if fresh:
            part.processed = max(m.seq for m in fresh)
            part.dirty = True
        if alerts:
            part.dirty = True
            self._store(part, consumer, alerts)
        self._write(part, db)

    def _store(self, part: Partition, consumer: JetStreamConsumer, alerts: list[Alert]) -> None:
        """Each alert into ALERTS, once per id and state, in the background
        (:meth:`_settle_stores` sees them stored)."""
        out = [(alert_subject(a.site, a.elder, a.id), a.model_dump_json().encode(),
                a.id if a.state == AlertState.OPEN else f"{a.id}-{a.state}")
               for a in alerts]  # fmt: skip
        part.storing += 1
        self._stores.append((part, alerts, self._storer.submit(_publish, part.name, consumer, out)))

    def _settle_stores(self, wait_s: float = 0.0) -> None:
        """Take in the alerts stored since (all of them, with ``wait_s``); an alert ALERTS
        would not take within :data:`STORE_WAIT_S` stops the service (its input is not
        acknowledged: the restart finds the alert again)."""
        while self._stores:
            part, alerts, future = self._stores[0]
            if not wait_s and not future.done():
                return
            duplicates = future.result(wait_s or None)
            self._stores.popleft()
            part.storing -= 1
            for alert, again in zip(alerts, duplicates, strict=True):
                if again:
                    self.stats.stored_again += 1
                else:
                    part.unwritten += alert_lines(alert)

    def _write(self, part: Partition, db: InfluxClient) -> None:
        """Alerts go to InfluxDB when it is there; they are already in ALERTS regardless
        (what is held is saved with the state)."""
        if not part.unwritten:
            return
        try:
            db.write(part.unwritten)
            part.unwritten = []
        except InfluxError as exc:
            log.warning("alerts not yet in InfluxDB (%d lines held): %s", len(part.unwritten),
                        exc)  # fmt: skip
            part.unwritten = part.unwritten[-10000:]

    # saving the state --------------------------------------------------------------------
    def _settle_checks(self, consumer: JetStreamConsumer, store: StateStore) -> None:
        """Once the server has said which partitions due for a save this worker still holds
        (:meth:`JetStreamConsumer.check_pins`, asked in the background while detection goes
        on), save those, drop those it lost; those it did not answer for wait for the
        next round."""
        if self._checking is None or not self._checking[0].done():
            return
        future, parts = self._checking
        self._checking = None
        try:
            current = future.result()
        except (ConsumerError, TimeoutError, nats.errors.Error) as exc:
            log.warning("pins not checked, saves wait: %r", exc)
            return
        self._drop_lost([name for name, ok in current.items() if ok is False])
        unknown = [name for name, ok in current.items() if ok is None]
        if unknown:
            log.warning("pins of %s not checked (no answer), their saves wait", unknown)
        # a partition lost and taken again meanwhile is another Partition: it waits too
        self._start_saves(store, [p for p in parts if current.get(p.name) and not p.storing
                                  and self.parts.get(p.index) is p and p.saving is None])

    def _start_saves(self, store: StateStore, parts: list[Partition]) -> None:
        """Save each partition's state in the background (of a partition this worker holds:
        checked first, or handed back)."""
        for part in parts:
            blob = part.detect.freeze(seq=part.processed, unwritten=part.unwritten,
                                      saved_at=time.time())  # fmt: skip
            part.saving = (store.save(part.name, blob), len(part.held), part.processed)
            part.last_save["bytes"] = len(blob)
            part.dirty = False

    def _settle_saves(
        self, consumer: JetStreamConsumer, acks: concurrent.futures.Executor, *,
        wait_s: float = 0.0,
    ) -> None:  # fmt: skip
        """Once a save in flight is stored, acknowledge what it covers (on ``acks``)."""
        covered: list[Delivery] = []
        for part in list(self.parts.values()):
            if part.saving is None:
                continue
            future, n, seq = part.saving
            try:
                took = future.result(wait_s) if wait_s else (
                    future.result() if future.done() else None)  # fmt: skip
            except concurrent.futures.TimeoutError:
                continue
            except Exception as exc:  # the next save tries again; nothing is acknowledged
                log.error("%s: state not saved: %s", part.name, exc)
                part.saving = None
                part.dirty = True
                continue
            if took is None:
                continue
            part.saving = None
            done, part.held = part.held[:n], part.held[n:]
            part.held_n -= sum(len(d.messages) for d in done)
            covered += done
            part.saved = seq
            part.last_save.update(seq=seq, seconds=round(took, 3), at=time.time())
            self.last_saves[part.name] = dict(part.last_save)
        if not covered:
            return
        if self._acking is not None:
            self._acking.result()  # in order, and an error is raised here
        self._acking = acks.submit(_acknowledge, consumer, covered)

    def last_save_total(self) -> dict[str, object]:
        """The partitions' last saves together: bytes, the longest time, how many."""
        saves = list(self.last_saves.values())
        return {
            "bytes": sum(int(str(s.get("bytes", 0))) for s in saves),
            "seconds": max((float(str(s.get("seconds", 0))) for s in saves), default=0.0),
            "partitions": len(saves),
        }

    def _write_status(self, consumer: JetStreamConsumer) -> None:
        source = consumer.source_status
        parts = sorted(self.parts.values(), key=lambda p: p.index)
        status = self.stats.as_dict() | {
            "worker": self.worker,
            "partitions": [p.index for p in parts],
            "taken_at": {str(p.index): self.taken_at.get(p.index) for p in parts},
            "sequences": {str(p.index): [p.processed, p.saved] for p in parts},
            "pinned": sorted(self.names.index(n) for n in consumer.pinned),
            "takeovers": self.takeovers,
            "taken_back": self.taken_back,
            "gaps": self.gaps,
            "released": self.released,
            "lost": self.lost,
            "processed_seq": max((p.processed for p in parts), default=0),
            "saved_seq": max((p.saved for p in parts), default=0),
            "unacknowledged": sum(p.held_n for p in parts),
            "last_save": max((p.last_save for p in parts),
                             key=lambda s: float(str(s.get("at", 0))), default={}),
            "source_ok": None if source is None else source.ok,
            "source": None if source is None else source.detail,
        }  # fmt: skip
        write_status(self.status_path, status)


def _publish(
    name: str, consumer: JetStreamConsumer, out: list[tuple[str, bytes, str]]
) -> list[bool]:
    """Store alerts in ALERTS (on the storing thread); which were there already. ALERTS
    without a leader (a Raft election after a node's loss) is waited out for
    :data:`STORE_WAIT_S`."""
    deadline = time.monotonic() + STORE_WAIT_S
    while True:
        try:
            return consumer.publish(out)
        except ConsumerError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("%s: alerts not stored yet, retrying: %s", name, exc)
            time.sleep(STORE_RETRY_S)


def _acknowledge(consumer: JetStreamConsumer, deliveries: list[Delivery]) -> None:
    """Acknowledge deliveries a saved state covers (on the acknowledging thread)."""
    for delivery in deliveries:
        consumer.ack(delivery)

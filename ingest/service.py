"""The ingest loop: take a batch from MQTT, validate it, store it, then acknowledge it.

A message is acknowledged to the broker only after its points (or its dead letter)
are in InfluxDB or fsynced in the local spool, so a crash at any point loses
nothing: the broker re-sends what was not acknowledged, and re-sent readings
overwrite themselves (their timestamps come from the payload). While InfluxDB is
unreachable every batch goes to the spool; when it returns the spool is replayed
oldest first, and new batches keep queueing behind it so order is kept.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from homecare.consumer import Consumer, Delivery, RawMessage
from homecare.errors import StorageError
from homecare.influx import InfluxClient, InfluxError, InfluxUnavailable
from homecare.receiver import MqttConsumer
from homecare.settings import Settings
from homecare.status import read_status, write_status
from ingest.points import Converter, Points
from ingest.spool import Spool

log = logging.getLogger(__name__)

SPOOL_RETRY_S = 1.0
LOG_EVERY_S = 10.0
STATUS_EVERY_S = 1.0


class IngestError(StorageError):
    """Ingest could not store nor spool a batch (e.g. the disk is full); it stops."""


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    readings: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    spooled_batches: int = 0
    replayed_batches: int = 0
    rejected_points: int = 0
    first_at: float | None = None
    """Wall time the first message was received (for rates)."""
    last_at: float | None = None
    """Wall time the last batch was stored and acknowledged."""
    cpu_s: float = 0.0
    """Process CPU time between the first message and the last batch stored."""
    _cpu0: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "readings": self.readings,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "cpu_s": round(self.cpu_s, 3),
            "stored": dict(self.stored),
            "dead_letters": dict(self.dead),
            "spooled_batches": self.spooled_batches,
            "replayed_batches": self.replayed_batches,
            "rejected_points": self.rejected_points,
        }


IN_FLIGHT = 2
"""Batches validated and waiting while the writer stores the one before."""


def _hand_over(
    handover: queue.Queue[tuple[Delivery, Points] | None],
    item: tuple[Delivery, Points] | None,
    writer: threading.Thread,
) -> None:
    """Queue ``item`` for the writer, but never wait on a writer that has died."""
    while writer.is_alive():
        with contextlib.suppress(queue.Full):
            handover.put(item, timeout=0.5)
            return


class IngestService:
    """One ingest process. Several can share the load through an MQTT shared subscription."""

    def __init__(self, settings: Settings, *, instance: str | None = None) -> None:
        self.settings = settings
        suffix = f"-{instance}" if instance else ""
        self.client_id = f"{settings.mqtt.client_id}{suffix}"
        self.status_path = settings.state_dir / f"ingest-{instance or 'main'}.json"
        previous = read_status(self.status_path) or {}
        self.converter = Converter(
            settings.contract,
            store_raw_accel=settings.ingest.store_raw_accel,
            source=self.client_id,
            last_dead_ms=int(previous.get("last_dead_ms") or 0),
        )
        self.spool = Spool(settings.spool_dir / (instance or "main"))
        self.stats = IngestStats()
        self._retry_at = 0.0
        self._failure: Exception | None = None

    def run(self, stop: threading.Event) -> IngestStats:
        """Run until ``stop`` is set, then store and acknowledge what was received, and return.

        Two stages overlap: this thread validates and formats batch *n+1* while the
        writer thread stores batch *n* and acknowledges it (InfluxDB works meanwhile on
        the other core). The hand-over queue holds two batches, so memory stays bounded
        and a slow InfluxDB slows the intake, leaving the rest queued in the broker.
        """
        cfg = self.settings.ingest
        consumer = MqttConsumer(
            self.settings.mqtt,
            client_id=self.client_id,
            shared_group=cfg.shared_group,
            max_pending=cfg.max_pending,
        )
        # A batch to store, or None: stop.
        handover: queue.Queue[tuple[Delivery, Points] | None] = queue.Queue(maxsize=IN_FLIGHT)
        with InfluxClient(self.settings.influx) as db, consumer:
            self._ensure_database(db)
            writer = threading.Thread(
                target=self._writer, args=(db, consumer, handover), name="ingest-writer"
            )
            writer.start()
            log.info("ingest %s subscribed to %s", self.client_id, consumer.topic)
            next_log = time.monotonic() + LOG_EVERY_S
            next_status = 0.0
            try:
                while writer.is_alive():
                    stopping = stop.is_set()
                    delivery = consumer.take(
                        cfg.batch_size, 0 if stopping else cfg.batch_interval_s
                    )
                    if delivery.messages:
                        points = self.converter.convert(delivery.messages)
                        _hand_over(handover, (delivery, points), writer)
                    elif stopping:
                        break
                    if time.monotonic() >= next_status:
                        next_status = time.monotonic() + STATUS_EVERY_S
                        self._write_status(consumer)
                    if time.monotonic() >= next_log:
                        next_log = time.monotonic() + LOG_EVERY_S
                        log.info("ingest %s: %s", self.client_id, self.stats.as_dict())
            finally:
                _hand_over(handover, None, writer)
                writer.join()
        self._write_status(None)
        if self._failure is not None:
            raise IngestError(f"ingest writer failed: {self._failure}") from self._failure
        if self.spool:
            log.warning(
                "ingest stopped with %d batches spooled in %s", len(self.spool), self.spool.folder
            )
        return self.stats

    def _writer(
        self,
        db: InfluxClient,
        consumer: Consumer,
        handover: queue.Queue[tuple[Delivery, Points] | None],
    ) -> None:
        """Store each batch (InfluxDB or spool), then acknowledge it; replay the spool."""
        try:
            while True:
                item: tuple[Delivery, Points] | bool | None
                try:
                    item = handover.get(timeout=SPOOL_RETRY_S)
                except queue.Empty:  # idle: a good moment to retry the spool
                    item = False
                if self.spool and time.monotonic() >= self._retry_at:
                    self._replay(db)
                if item is None:
                    return
                if isinstance(item, tuple):
                    delivery, points = item
                    self._store(db, delivery.messages, points)
                    consumer.ack(delivery)
        except Exception as exc:
            # Nothing unacknowledged is lost: the broker re-sends it to the next run.
            log.exception("ingest writer failed")
            self._failure = exc

    def _write_status(self, consumer: Consumer | None) -> None:
        write_status(
            self.status_path,
            self.stats.as_dict()
            | {
                "connected": consumer is not None and consumer.connected,
                "pending": consumer.pending if consumer else 0,
                "spooled": len(self.spool),
                "last_dead_ms": self.converter.last_dead_ms,
            },
        )

    def _ensure_database(self, db: InfluxClient) -> None:
        try:
            db.create_database()
        except InfluxUnavailable as exc:
            log.warning("InfluxDB unavailable at start, spooling: %s", exc)
            self._retry_at = time.monotonic() + SPOOL_RETRY_S
        except InfluxError as exc:
            # A write-only account (or InfluxDB 2.x/3.x) cannot create it: it must exist.
            log.info("not creating database %s: %s", self.settings.influx.database, exc)

    def _store(self, db: InfluxClient, messages: list[RawMessage], points: Points) -> None:
        if self.spool or time.monotonic() < self._retry_at:
            self._to_spool(points.lines)
        else:
            try:
                self._write(db, points.lines)
            except InfluxUnavailable as exc:
                log.warning("InfluxDB unavailable, spooling: %s", exc)
                self._retry_at = time.monotonic() + SPOOL_RETRY_S
                self._to_spool(points.lines)
        if self.stats.first_at is None:
            self.stats.first_at = messages[0].received
            self.stats._cpu0 = time.process_time()
        self.stats.last_at = time.time()
        self.stats.cpu_s = time.process_time() - self.stats._cpu0
        self.stats.messages += len(messages)
        self.stats.readings += points.readings
        self.stats.stored.update(points.stored)
        self.stats.dead.update(points.dead)

    def _to_spool(self, lines: list[str]) -> None:
        self.spool.append(lines)
        self.stats.spooled_batches += 1

    def _replay(self, db: InfluxClient) -> None:
        """Write spooled batches oldest first; stop at the first failure and retry later."""
        deadline = time.monotonic() + 1.0
        for batch in self.spool:
            try:
                self._write(db, batch.lines.decode().split("\n"))
            except InfluxUnavailable:
                self._retry_at = time.monotonic() + SPOOL_RETRY_S
                return
            batch.done()
            self.stats.replayed_batches += 1
            if time.monotonic() > deadline:
                return
        log.info("spool replayed; writing directly again")

    def _write(self, db: InfluxClient, lines: list[str]) -> None:
        """Write lines; if InfluxDB refuses some, bisect to store all the others."""
        try:
            db.write(lines)
        except InfluxUnavailable:
            raise
        except InfluxError as exc:
            if len(lines) == 1:
                self.stats.rejected_points += 1
                log.error("InfluxDB rejected a point: %s", exc)
                return
            half = len(lines) // 2
            self._write(db, lines[:half])
            self._write(db, lines[half:])

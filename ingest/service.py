"""The ingest loop: take a batch from TELEMETRY, validate it, store it, then acknowledge it.

Ingest reads the ``TELEMETRY`` stream (what devices published over MQTT, sourced from
NATS's ``$MQTT_msgs``) through the durable pull consumer ``ingest``. A message is
acknowledged only after its points (or its dead letter) are in InfluxDB or fsynced in
the local spool, so a crash at any point loses nothing: the server delivers again what
was not acknowledged (after the consumer's ``ack_wait``), and re-sent readings overwrite
themselves (their timestamps come from the payload). The consumer's ``max_ack_pending``
bounds what is in flight; several ingest processes bind the same durable consumer to
share the load. While InfluxDB is
unreachable every batch goes to the spool; when it returns the spool is replayed
oldest first, and new batches keep queueing behind it so order is kept.

Storage by district (``HOMECARE_DISTRICTS``): ``homecare ingest --district D --replica R``
reads the durable consumer ``ingest-D-R`` (filtered to D's sites) and writes to that one
InfluxDB of D's pair. There is no spool then: while that InfluxDB is away the worker holds
its batch unacknowledged and retries, and the rest waits in TELEMETRY (interest retention
keeps a message until every consumer has acknowledged it), so only this consumer's backlog
grows and any worker on any machine can take over. The other InfluxDB of the pair, fed by
its own consumer from the same stream, is not slowed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

import nats.errors

from homecare.consumer import ConsumerError, Delivery, RawMessage
from homecare.errors import StorageError
from homecare.influx import InfluxClient, InfluxError, InfluxUnavailable
from homecare.jetstream import JetStreamConsumer, SourceStatus, ingest_consumer
from homecare.settings import Settings
from homecare.status import read_status, write_status
from ingest.points import Converter, Points
from ingest.spool import Spool

log = logging.getLogger(__name__)

SPOOL_RETRY_S = 1.0
LOG_EVERY_S = 10.0
STATUS_EVERY_S = 1.0
BACKLOG_EVERY_S = 5.0
"""How often the status file's consumer backlog is asked of the server."""


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
T = TypeVar("T")


def _hand_over(handover: queue.Queue[T], item: T, taker: threading.Thread) -> None:
    """Queue ``item`` for the next stage, but never wait on a stage that has died."""
    while taker.is_alive():
        with contextlib.suppress(queue.Full):
            handover.put(item, timeout=0.5)
            return


class IngestService:
    """One ingest process. Several share the load by binding the same durable consumer
    (each with its own ``instance``, so their dead letters and status files differ)."""

    def __init__(
        self, settings: Settings, *, instance: str | None = None, district: str | None = None,
        replica: str = "primary",
    ) -> None:  # fmt: skip
        """``district``/``replica``: which InfluxDB of which district's pair this worker
        feeds (none: the single store of ``settings.influx``, with its spool)."""
        self.settings = settings
        if district is None and settings.districts:
            raise ValueError(f"choose a --district ({', '.join(settings.districts)}): "
                             "HOMECARE_DISTRICTS is set")  # fmt: skip
        self.influx = settings.influx_for(district, replica)  # ValueError: no such district
        self.durable = ingest_consumer(district, replica)
        suffix = f"-{instance}" if instance else ""
        self.client_id = f"{settings.mqtt.client_id}{suffix}"
        stem = "ingest" if district is None else self.durable
        self.status_path = settings.state_dir / f"{stem}-{instance or 'main'}.json"
        previous = read_status(self.status_path) or {}
        self.converter = Converter(
            settings.contract,
            store_raw_accel=settings.ingest.store_raw_accel,
            source=self.client_id,
            last_dead_ms=int(previous.get("last_dead_ms") or 0),
        )
        self.spool: Spool | None = (
            Spool(settings.spool_dir / (instance or "main")) if district is None else None
        )
        """None by district: the stream holds what waits for an InfluxDB that is away."""
        self._stop = threading.Event()
        self._unavailable = False
        """The last write found InfluxDB away (district mode: the batch is held)."""
        self.stats = IngestStats()
        self._retry_at = 0.0
        self._failure: Exception | None = None
        self._source: SourceStatus | None = None
        self._backlog: int | None = None
        self._next_backlog = 0.0

    def run(self, stop: threading.Event) -> IngestStats:
        """Run until ``stop`` is set, then store and acknowledge what was received, and return.

        Three stages overlap: this thread takes batch *n+2* from the server while the
        converter thread validates and formats batch *n+1* and the writer thread stores
        batch *n* and acknowledges it (InfluxDB works meanwhile on the other core). Each
        hand-over queue is short, so memory stays bounded and a slow InfluxDB slows the
        intake, leaving the rest in the stream (and ``max_ack_pending`` bounds what is
        out unacknowledged in any case).
        """
        cfg = self.settings.ingest
        self._stop = stop
        # Raises SourceMissing when TELEMETRY's source is not active: ingest refuses to
        # start rather than wait on a stream that devices' readings no longer reach.
        consumer = JetStreamConsumer.from_settings(self.settings.nats, durable=self.durable)
        # A batch to convert or to store, or None: stop.
        taken: queue.Queue[Delivery | None] = queue.Queue(maxsize=1)
        handover: queue.Queue[tuple[Delivery, Points] | None] = queue.Queue(maxsize=IN_FLIGHT)
        with InfluxClient(self.influx) as db, consumer:
            self._ensure_database(db)
            writer = threading.Thread(
                target=self._writer, args=(db, consumer, handover), name="ingest-writer"
            )
            converter = threading.Thread(
                target=self._converter, args=(taken, handover, writer), name="ingest-converter"
            )
            writer.start()
            converter.start()
            log.info("ingest %s consuming %s through durable %s (%s) into %s", self.client_id,
                     consumer.stream, consumer.durable, consumer.url, self.influx.url)  # fmt: skip
            next_log = time.monotonic() + LOG_EVERY_S
            next_status = 0.0
            try:
                while converter.is_alive():  # it ends when the writer has died
                    stopping = stop.is_set()
                    if stopping and self.spool is None and self._unavailable:
                        break  # nothing more can be stored: the rest stays in the stream
                    delivery = consumer.take(
                        cfg.batch_size, 0 if stopping else cfg.batch_interval_s
                    )
                    if delivery.messages:
                        _hand_over(taken, delivery, converter)
                    elif stopping:
                        break
                    if time.monotonic() >= next_status:
                        next_status = time.monotonic() + STATUS_EVERY_S
                        self._write_status(consumer)
                    if time.monotonic() >= next_log:
                        next_log = time.monotonic() + LOG_EVERY_S
                        log.info("ingest %s: %s", self.client_id, self.stats.as_dict())
            finally:
                _hand_over(taken, None, converter)
                converter.join()
                writer.join()
        self._write_status(None)
        if self._failure is not None:
            raise IngestError(f"ingest writer failed: {self._failure}") from self._failure
        if self.spool:
            log.warning(
                "ingest stopped with %d batches spooled in %s", len(self.spool), self.spool.folder
            )
        return self.stats

    def _converter(
        self,
        taken: queue.Queue[Delivery | None],
        handover: queue.Queue[tuple[Delivery, Points] | None],
        writer: threading.Thread,
    ) -> None:
        """Validate and format each batch taken; hand it to the writer. On stop (None),
        or when the writer has died, tell the writer to stop and return."""
        try:
            while writer.is_alive():
                try:
                    delivery = taken.get(timeout=0.5)
                except queue.Empty:
                    continue
                if delivery is None:
                    return
                _hand_over(handover, (delivery, self.converter.convert(delivery.messages)), writer)
        except Exception as exc:
            # Nothing unacknowledged is lost: the server delivers it again.
            log.exception("ingest converter failed")
            self._failure = exc
        finally:
            _hand_over(handover, None, writer)

    def _writer(
        self,
        db: InfluxClient,
        consumer: JetStreamConsumer,
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
                    if self._store(db, delivery.messages, points):
                        self._ack(consumer, delivery)
        except Exception as exc:
            # Nothing unacknowledged is lost: the broker re-sends it to the next run.
            log.exception("ingest writer failed")
            self._failure = exc

    @staticmethod
    def _ack(consumer: JetStreamConsumer, delivery: Delivery) -> None:
        """Acknowledge a stored batch. An acknowledgement lost with the connection is no
        loss: the server delivers the batch again and its points overwrite themselves."""
        try:
            consumer.ack(delivery)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("ingest: %d acknowledgements not sent (they come again): %s",
                        len(delivery.receipts), exc)  # fmt: skip

    def _write_status(self, consumer: JetStreamConsumer | None) -> None:
        """The status file operations read: progress, the source's health (a broken
        source shows here, besides the error the consumer logs at each failed check) and
        what waits in the stream for ingest."""
        source = consumer.source_status if consumer is not None else self._source
        self._source = source
        if consumer is not None and time.monotonic() >= self._next_backlog:
            self._next_backlog = time.monotonic() + BACKLOG_EVERY_S
            self._backlog = self._ask_backlog(consumer)
        write_status(
            self.status_path,
            self.stats.as_dict()
            | {
                "connected": consumer is not None and consumer.connected,
                "backlog": self._backlog,
                "source": None if source is None else {
                    "ok": source.ok, "detail": source.detail, "lag": source.lag},
                "spooled": len(self.spool) if self.spool is not None else None,
                "influx": self.influx.url,
                "influx_unavailable": self._unavailable,
                "last_dead_ms": self.converter.last_dead_ms,
            },
        )  # fmt: skip

    @staticmethod
    def _ask_backlog(consumer: JetStreamConsumer) -> int | None:
        """Messages of TELEMETRY not yet handed to ingest; None while the server is away."""
        if not consumer.connected:
            return None
        try:
            return consumer.backlog()
        except (TimeoutError, nats.errors.Error, ConsumerError) as exc:
            log.warning("ingest %s: could not read the backlog: %s", consumer.durable, exc)
            return None

    def _ensure_database(self, db: InfluxClient) -> None:
        try:
            db.create_database()
        except InfluxUnavailable as exc:
            log.warning("InfluxDB unavailable at start, spooling: %s", exc)
            self._retry_at = time.monotonic() + SPOOL_RETRY_S
        except InfluxError as exc:
            # A write-only account (or InfluxDB 2.x/3.x) cannot create it: it must exist.
            log.info("not creating database %s: %s", self.influx.database, exc)

    def _store(self, db: InfluxClient, messages: list[RawMessage], points: Points) -> bool:
        """Store a batch (InfluxDB, else the spool); False when it could not be stored
        before the stop (district mode): it is then not acknowledged."""
        if self.spool is None:
            if not self._write_until_stored(db, points.lines):
                return False
        elif self.spool or time.monotonic() < self._retry_at:
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
        return True

    def _write_until_stored(self, db: InfluxClient, lines: list[str]) -> bool:
        """District mode: write, retrying while InfluxDB is away; the batch stays
        unacknowledged meanwhile (after ``ack_wait`` the server may hand it to another
        worker too: a point written twice overwrites itself). False on stop."""
        while not (self._unavailable and self._stop.is_set()):
            try:
                self._write(db, lines)
            except InfluxUnavailable as exc:
                if not self._unavailable:
                    log.warning("InfluxDB %s unavailable; holding the batch, the rest waits "
                                "in the stream: %s", self.influx.url, exc)  # fmt: skip
                self._unavailable = True
                self._stop.wait(SPOOL_RETRY_S)
                continue
            if self._unavailable:
                log.info("InfluxDB %s answers again", self.influx.url)
            self._unavailable = False
            return True
        return False

    def _to_spool(self, lines: list[str]) -> None:
        assert self.spool is not None
        self.spool.append(lines)
        self.stats.spooled_batches += 1

    def _replay(self, db: InfluxClient) -> None:
        """Write spooled batches oldest first; stop at the first failure and retry later."""
        deadline = time.monotonic() + 1.0
        for batch in self.spool or ():
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

"""Detect's saved state in the broker, and the replay that resumes a partition where it stopped.

A fall in progress (impact seen, stillness window not over, ~12 s), an open inactivity
wait or a wandering lives in the detectors' arrays. Detect acknowledges a message only
once a saved snapshot covers it, so whatever a restart (kill -9 or SIGTERM) loses is
still in TELEMETRY:

1. every few seconds (``detect.save_every_s``) and on SIGTERM, the state of
   :class:`~detectors.service.Detect` is frozen (:mod:`detectors.snapshot`) with the
   highest stream sequence it has processed, and stored in the object store
   :data:`STATE_BUCKET` under the partition's durable consumer name (``detect-p<N>``);
   once the store has it, every message of the partition up to that sequence is
   acknowledged;
2. a worker that takes a partition (at start, or from a worker that died or handed it
   over) thaws its snapshot into fresh detectors, and reads again what the durable
   consumer had handed out after it (sequence + 1 … its *delivered* sequence) at once
   by batch direct gets (:meth:`StateStore.replay`), rather than waiting the durable's
   ``ack_wait`` for its redelivery;
3. then the durable consumer carries on; its redeliveries of what was already
   processed are skipped and acknowledged once a save covers them.

A detection found again in the replay has the same alert id, and ALERTS keeps one
message per id, so it is not stored twice.

Why the object store and not the key-value store: a KV value is one message, at most the
server's ``max_payload`` (1 MiB by default), and 5,000 elders' state is ~30 MB (the fall
detector's 10 s history ring per wearable, float32, is nearly all of it); the object
store chunks it, and replaces an object atomically (its metadata message points at the
new chunks only once they are all stored, then the old chunks are purged).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerInfo,
    ObjectMeta,
    ObjectMetaOptions,
)
from nats.js.object_store import ObjectStore

from homecare.consumer import ConsumerError, RawMessage
from homecare.jetstream import (
    PUBLISH_TRY_S,
    SUBJECT_ROOT,
    TELEMETRY_STREAM,
    JetStreamConsumer,
    read_stream,
    read_stream_leader,
)

__all__ = ["CHUNK_BYTES", "STATE_BUCKET", "Position", "Prepared", "StateStore"]

log = logging.getLogger(__name__)

STATE_BUCKET = "detect_state"
"""The object store of detect's snapshots, one object per partition (its durable's name);
``homecare broker provision`` makes it."""
CHUNK_BYTES = 512 * 1024
"""Chunks under the server's default 1 MiB ``max_payload``."""
ORPHAN_WAIT_S = 30.0
"""How long a takeover waits for a save of the partition still in flight from when this
worker held it before."""
LEADER_BATCH = 200
"""Messages a replay reads from the stream's leader at a time, one request each, while
the replica that answers its direct gets lags behind."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """What :meth:`StateStore.prepare` fetched for taking one partition."""

    position: Position
    blob: bytes | None
    """Its snapshot (None: it has none)."""
    start: int
    """Where its replay starts (``start_of``'s answer)."""
    replay: list[RawMessage]
    """The replay: the partition's messages from ``start`` to what its consumer had
    delivered (fewer where the stream has no more)."""
    kept: bool = False
    """The worker's own state of the partition resumes it (``prepare``'s ``kept``): no
    snapshot was fetched."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a partition's durable consumer stands, read when a worker takes it."""

    delivered: int
    """The highest stream sequence it has handed out (to this or a dead process)."""
    ack_floor: int
    """Every message up to this one is acknowledged."""
    ack_wait_s: float
    max_ack_pending: int
    filters: tuple[str, ...]
    """Its subject filters (none: the whole stream)."""


class StateStore:
    """Snapshots in :data:`STATE_BUCKET`, one object per partition (its durable consumer's
    name), and the replay of a partition's gap, on the connection and event loop of
    detect's :class:`~homecare.jetstream.JetStreamConsumer` (no second connection).

    Entering checks that the bucket exists, or raises :class:`ConsumerError` saying what
    to provision."""

    def __init__(
        self, consumer: JetStreamConsumer, *, stream: str = TELEMETRY_STREAM,
        request_timeout_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.consumer = consumer
        self.durable = consumer.durable
        self.stream = stream
        self._timeout_s = request_timeout_s
        self._objects: ObjectStore | None = None

    def __enter__(self) -> Self:
        async def open_(js: JetStreamContext) -> ObjectStore:
            try:
                return await js.object_store(STATE_BUCKET)
            except nats.js.errors.BucketNotFoundError as exc:
                raise ConsumerError(
                    f"no object store {STATE_BUCKET!r} for detect's state at "
                    f"{self.consumer.url}: run homecare broker provision"
                ) from exc

        self._objects = self.consumer.on_loop(open_, self._timeout_s + 5)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._objects = None

    def _store(self) -> ObjectStore:
        if self._objects is None:
            raise ConsumerError(f"the state store of {self.durable} is not open")
        return self._objects

    # the durable consumer's position ---------------------------------------------------
    def position(self, durable: str) -> Position:
        """The durable consumer's delivered sequence, ack floor and limits."""
        info = self.consumer.on_loop(lambda js: js.consumer_info(self.stream, durable),
                                     self._timeout_s + 5)  # fmt: skip
        return _position(info)

    # snapshots -------------------------------------------------------------------------
    def load(self, name: str) -> bytes | None:
        """The partition's snapshot, or None when it has none yet."""
        objects = self._store()

        async def get(_: JetStreamContext) -> bytes | None:
            try:
                return bytes((await objects.get(name)).data or b"")
            except nats.js.errors.ObjectNotFoundError:
                return None
            except nats.js.errors.NotFoundError:
                return None

        return self.consumer.on_loop(get, 120.0)

    def save(self, name: str, blob: bytes) -> concurrent.futures.Future[float]:
        """Store ``blob`` as the partition's snapshot in the background; the future gives
        the seconds it took once the store has it all (or raises)."""
        objects = self._store()
        meta = ObjectMeta(name=name, description=f"{name}: detect's state",
                          options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))  # fmt: skip

        async def put(_: JetStreamContext) -> float:
            t = time.perf_counter()
            await objects.put(name, blob, meta=meta)
            return time.perf_counter() - t

        return self.consumer.submit(put)

    # taking partitions -------------------------------------------------------------------
    def prepare(
        self, names: list[str], *, start_of: Callable[[bytes | None, Position], int],
        batch: int = 5000, after: Sequence[concurrent.futures.Future[Any]] = (),
        kept: Mapping[str, int] | None = None,
    ) -> concurrent.futures.Future[dict[str, Prepared | Exception]]:  # fmt: skip
        """What a worker needs to take each of ``names``, fetched in the background for all
        at once (on a cluster each step is a round trip through Raft; one partition after
        another, a worker that took 8 partitions took 8 times as long): the consumer's
        position, the snapshot, and the replay: what the consumer handed out after the
        snapshot, from ``start_of(snapshot, position)``. ``after``: saves of these
        partitions still in flight, waited for first (a late one would overwrite a newer
        snapshot). ``kept``: partitions whose state the worker still holds in memory, with
        the sequence it covers (a pin lost and given back, as when a consumer elects a new
        leader): their replay starts after it and no snapshot is fetched, so taking them
        back does not wait for the object store (its own election, after a node's loss).

        All of it in the background: done in the detect loop, a takeover whose stream,
        consumer or store had no leader (a Raft election after a node's loss: 4 to 9 s)
        held back every partition the worker had for a request's timeout, 10 s."""

        async def one(js: JetStreamContext, name: str) -> Prepared:
            info = await asyncio.wait_for(js.consumer_info(self.stream, name), PUBLISH_TRY_S)
            at = _position(info)
            if kept and name in kept:
                # as correct as a snapshot at that sequence: the replay reads the stream
                # from there to what the consumer handed out, acknowledged or not
                start = kept[name] + 1
                batches = await self._replay(js, start, at.delivered, at.filters, batch)
                return Prepared(at, None, start, [m for b in batches for m in b], kept=True)
            objects = self._store()
            try:
                # first a short try (the store answers: it has a leader), then the snapshot
                # with the request timeout (a large one takes its time)
                await asyncio.wait_for(objects.get_info(name), PUBLISH_TRY_S)
                blob: bytes | None = bytes((await objects.get(name)).data or b"")
            except nats.js.errors.NotFoundError:
                blob = None
            start = start_of(blob, at)
            batches = await self._replay(js, start, at.delivered, at.filters, batch)
            return Prepared(at, blob, start, [m for b in batches for m in b])

        async def all_(js: JetStreamContext) -> dict[str, Prepared | Exception]:
            for save in after:
                with contextlib.suppress(Exception):  # a failed save: nothing to wait for
                    await asyncio.wait_for(asyncio.wrap_future(save), ORPHAN_WAIT_S)
            # each partition on its own: one whose consumer or replay has no leader yet
            # does not hold back the others
            found = await asyncio.gather(*(one(js, n) for n in names), return_exceptions=True)
            out: dict[str, Prepared | Exception] = {}
            for name, got in zip(names, found, strict=True):
                if isinstance(got, BaseException) and not isinstance(got, Exception):
                    raise got  # cancelled, or the process is stopping
                out[name] = got
            return out

        return self.consumer.submit(all_)

    # the replay ------------------------------------------------------------------------
    def replay(
        self, start: int, end: int, *, filters: tuple[str, ...], batch: int = 5000
    ) -> list[list[RawMessage]]:
        """Batches of the stream's messages ``start`` … ``end`` (sequences, inclusive) that
        pass ``filters``, in order, read by batch direct gets (no consumer: the durable
        consumer still owns them, and detect's user may make none). Stops early where the
        stream has no more (messages past ``max_age``, or erased)."""
        return self.consumer.on_loop(
            lambda js: self._replay(js, start, end, filters, batch), 120.0
        )

    async def _replay(
        self, js: JetStreamContext, start: int, end: int, filters: tuple[str, ...], batch: int
    ) -> list[list[RawMessage]]:
        out: list[list[RawMessage]] = []
        while start <= end:
            got, last, more = await self._next_batch(js, start, end, filters, batch)
            if got:
                out.append(got)
            if not more:
                break
            start = last + 1
        return out

    async def _read(self, start: int, subject: str, batch: int) -> list[RawMessage]:
        """One batch direct get, asked again while no replica answers within
        :data:`PUBLISH_TRY_S`, up to the request timeout: one replica that drops it (just
        elected, catching up after a node's loss) cost the whole timeout, 10 s, during
        which the worker's other partitions waited (seen in ``homecare bench city``)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                return await read_stream(self.consumer.connection, self.stream, start, subject,
                                         batch=batch, max_bytes=self.consumer.pull_max_bytes,
                                         timeout_s=PUBLISH_TRY_S)  # fmt: skip
            except ConsumerError as exc:
                if not isinstance(exc.__cause__, nats.errors.TimeoutError):
                    raise
                if time.monotonic() >= deadline:  # the caller tries the partition again
                    raise TimeoutError(str(exc)) from exc
                log.info("%s: %s; asked again", self.durable, exc)

    async def _next_batch(
        self, js: JetStreamContext, start: int, end: int, filters: tuple[str, ...], batch: int
    ) -> tuple[list[RawMessage], int, bool]:
        """The next batch of ``start`` … ``end``, its last sequence, and whether more may
        follow (False where the stream has no more of ``filters`` up to ``end``).

        Any replica answers a direct get, and one behind the leader may not have ``end``
        yet although the durable consumer handed it out: where none comes, the batch is
        read from the leader (:meth:`_from_leader`). A replay that stopped there instead
        would let the messages it did not read be skipped as processed when they come
        again (a loaded cluster lost SOS presses so)."""
        if len(filters) > 1:
            raise ConsumerError(f"{self.durable}: a replay reads one subject filter, not {filters}")
        subject = filters[0] if filters else f"{SUBJECT_ROOT}.>"
        got = await self._read(start, subject, batch)
        out = [m for m in got if m.seq <= end]
        if not got:
            out = await self._from_leader(js, start, end, subject, min(batch, LEADER_BATCH))
        if out:
            return out, out[-1].seq, out[-1].seq < end
        # none left up to ``end``: a filtered consumer's delivered sequence counts the other
        # partitions' messages it passed over, so ``end`` is often not one of this subject's
        return [], 0, False

    async def _from_leader(
        self, js: JetStreamContext, start: int, end: int, subject: str, limit: int
    ) -> list[RawMessage]:
        """Up to ``limit`` messages of ``start`` … ``end`` read from the stream's leader, once
        it has stored up to ``end`` (its last sequence, asked every :data:`PUBLISH_TRY_S` up
        to the request timeout): a leader just elected on a loaded cluster was seen, 9 s
        after its election, not to hold yet a message the consumer had handed out, and the
        replay stopped there. [] where the leader holds none of them (past ``max_age``, or
        erased); :class:`TimeoutError` where no leader answers (the caller takes the
        partition later: a replay that stopped would let what it did not read be skipped)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                info = await asyncio.wait_for(js.stream_info(self.stream), PUBLISH_TRY_S)
                last: int | None = info.state.last_seq
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                last = None
                log.info("%s: %s's leader did not answer (%r); asked again", self.durable,
                         self.stream, exc)  # fmt: skip
            if last is not None and last >= end:
                break
            if time.monotonic() >= deadline:
                if last is None:
                    raise TimeoutError(f"{self.stream}: no leader answered within "
                                       f"{self._timeout_s:.0f} s")  # fmt: skip
                log.warning("%s: replay stopped before %d: the stream has no more (its "
                            "leader holds up to %d)", self.durable, end, last)  # fmt: skip
                break
            await asyncio.sleep(PUBLISH_TRY_S / 4)
        log.debug("%s: the replica behind; %d… read from the leader", self.durable, start)
        return await read_stream_leader(js, self.stream, start, end, subject, limit=limit)


def _position(info: ConsumerInfo) -> Position:
    """A durable consumer's :class:`Position` from its info."""
    c = info.config
    filters = tuple(c.filter_subjects or ()) or ((c.filter_subject,) if c.filter_subject
                                                  else ())  # fmt: skip
    return Position(
        delivered=info.delivered.stream_seq if info.delivered else 0,
        ack_floor=info.ack_floor.stream_seq if info.ack_floor else 0,
        ack_wait_s=float(c.ack_wait or 30.0),
        max_ack_pending=int(c.max_ack_pending or 1000),
        filters=filters,
    )

"""The live detect workers, as each of them sees it: liveness in a JetStream key-value bucket.

Each worker puts its key (``worker.<id>``) into the bucket :data:`WORKERS_BUCKET` every
``beat_s``, from its consumer's event-loop thread (however busy its detect thread is), and
reads everyone's. A key whose revision has not changed for ``dead_after_s`` (measured on
this worker's own monotonic clock: no two machines' clocks are compared) is a dead worker.
The count of live workers gives each its fair share of the partitions,
``ceil(partitions / live)`` (:func:`fair_share`); a worker holding more hands the surplus
back after saving its state, one holding fewer pulls on the partitions nobody holds.

Liveness only balances the partitions: which worker holds a partition is the server's
pin (the ``pinned_client`` priority group), so two workers never both hold one because
their views of who is alive differ for a moment. A worker wrongly thought dead (a long
pause) keeps its partitions: it still pulls, and the others only pull on partitions
nobody holds.

>>> fair_share(64, 1), fair_share(64, 2), fair_share(64, 3), fair_share(8, 0)
(64, 32, 22, 8)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import socket
import time
import uuid
from types import TracebackType
from typing import Self

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from homecare.consumer import ConsumerError
from homecare.jetstream import JetStreamConsumer

__all__ = ["WORKERS_BUCKET", "Roster", "fair_share", "worker_id"]

log = logging.getLogger(__name__)

WORKERS_BUCKET = "detect_state"
"""The key-value bucket of detect's workers (``homecare broker provision`` makes it with a
TTL). The same name as the object store of its state: the only bucket names the detect
service user may use (``devices.access.DETECT_BUCKET``)."""
KEY_PREFIX = "worker."


def fair_share(partitions: int, live: int) -> int:
    """The most partitions one of ``live`` workers should hold."""
    return math.ceil(partitions / max(1, live))


def worker_id() -> str:
    """A name for this process, unique among workers: host, pid and a random part."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Roster:
    """This worker's beat and its view of the live workers (:attr:`live`)."""

    def __init__(
        self, consumer: JetStreamConsumer, worker: str, *, beat_s: float = 1.0,
        dead_after_s: float = 2.0,
    ) -> None:  # fmt: skip
        self.consumer = consumer
        self.worker = worker
        self.key = KEY_PREFIX + worker
        self.beat_s = beat_s
        self.dead_after_s = dead_after_s
        self.live = 1
        """Live workers, this one included."""
        self.changed_at = time.monotonic()
        """When :attr:`live` last changed (balancing waits for it to settle)."""
        self._seen: dict[str, tuple[int, float]] = {}
        """Key → its last revision and when (monotonic) it was first seen."""
        self._kv: KeyValue | None = None
        self._task: asyncio.Future[None] | None = None

    def __enter__(self) -> Self:
        async def open_(js: JetStreamContext) -> KeyValue:
            try:
                kv = await js.key_value(WORKERS_BUCKET)
            except nats.js.errors.BucketNotFoundError as exc:
                raise ConsumerError(
                    f"no key-value bucket {WORKERS_BUCKET!r} for detect's workers at "
                    f"{self.consumer.url}: run homecare broker provision"
                ) from exc
            await kv.put(self.key, b"1")
            return kv

        self._kv = self.consumer.on_loop(open_, 15.0)
        self._task = self.consumer.submit(self._run)  # type: ignore[assignment]
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, kv = self._task, self._kv
        self._task = None
        if task is not None:
            task.cancel()

        async def leave(_: JetStreamContext) -> None:
            if kv is not None:
                with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                    await kv.delete(self.key)

        with contextlib.suppress(ConsumerError, TimeoutError):
            self.consumer.on_loop(leave, 5.0)

    async def _run(self, _: JetStreamContext) -> None:
        while True:
            try:
                await self._beat()
            except (nats.errors.Error, nats.js.errors.Error) as exc:  # the client reconnects
                log.debug("%s: beat failed: %s", self.worker, exc)
            await asyncio.sleep(self.beat_s)

    async def _beat(self) -> None:
        kv = self._kv
        assert kv is not None
        await kv.put(self.key, b"1")
        try:
            keys = [k for k in await kv.keys() if k.startswith(KEY_PREFIX)]
        except nats.js.errors.NoKeysError:
            keys = []
        now = time.monotonic()
        live = 1
        for key in keys:
            if key == self.key:
                continue
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                self._seen.pop(key, None)
                continue
            revision = int(entry.revision or 0)
            seen = self._seen.get(key)
            if seen is None or seen[0] != revision:
                self._seen[key] = (revision, now)
                seen = self._seen[key]
            if now - seen[1] <= self.dead_after_s:
                live += 1
        if live != self.live:
            log.info("%s: %d live detect workers (were %d)", self.worker, live, self.live)
            self.live = live
            self.changed_at = now

"""Escalation's state in the cluster (``HOMECARE_ESCALATE__STORE=cluster``): JetStream
key-value buckets, replicated like ALERTS, and the lease that makes one ``homecare
escalate`` the active one while the others stand by.

Why not SQLite here: its file lives on one machine, and the machine is what may die.
Why not a new store interface: the ladder's every query is SQL already, and one active
process owns the state (the lease), so :class:`ClusterStore` is the
:class:`~escalation.store.Store` — the same methods, the same SQL — on an in-memory
SQLite database that mirrors the bucket ``escalation``:

- triggers note each row a transaction changes (alerts, deliveries, events); at the
  end of the transaction, *before* SQLite commits and so before anything decided in it
  leaves the process, the changed rows go to the bucket: first all of them as one value
  under ``wal``, written with compare-and-set on its revision (the fence: a process
  that is no longer the active one finds another's revision there and stops), then each
  row under its own key (``a.<alert id>``, ``d.<ref>``, ``e.<seq>``; a deleted row's key
  is deleted);
- a process that takes over loads every key, then applies ``wal`` on top: the last
  transaction whole, so a kill between the two steps loses nothing and leaves nothing
  half-written.

The lease (bucket ``escalation-lease``, key ``active``): the bucket's ``max_age`` is
``lease_s``, so the server removes the key ``lease_s`` after it was last written.
The active creates it (create = compare-and-set with "no such key") and rewrites it
every third of ``lease_s``, each time with the revision it last wrote; a standby tries
to create it every few hundred ms and succeeds once the active has stopped renewing
it (kill -9, a machine lost: at most ``lease_s`` plus one try). An active that cannot
renew it in time (its node partitioned away, a long pause) stops sending at once and
exits (:class:`LeaseLost`); a clean stop deletes the key, so the standby takes over at
once. The time is the server's (the stream leader's), not the machines' clocks.

>>> key_of("a", "sos-e1-1767225600"), key_of("a", "e.1/x")
('a.sos-e1-1767225600', 'a.=ZS4xL3g')
>>> row_of_key("a.=ZS4xL3g")
('a', 'e.1/x')
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import re
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from escalation.store import ROW_TABLES, Store
from homecare.errors import StorageError
from homecare.jetstream import ALERTS_STREAM, EventLoopThread, connect
from homecare.settings import Settings

log = logging.getLogger(__name__)

FORGET_SUBJECT = "homecare.escalation.forget"
"""``homecare elder forget`` asks the active escalate here (request/reply) to erase an
elder from the state it holds: only the active writes the bucket."""
STATE_BUCKET = "escalation"
LEASE_BUCKET = "escalation-lease"
LEASE_KEY = "active"
WAL_KEY = "wal"
_CHUNK_KEY = "walc"
_SENT = "s"
_WAL_CHUNK = 256 * 1024
"""Above this (compressed), the last transaction is written in chunks before ``wal``
points at them (a server takes 1 MiB per message by default)."""
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_REQUEST_S = 5.0
_TRANSIENT = (TimeoutError, nats.errors.Error, OSError)
"""What a write may meet while the client reconnects to another node: tried again."""


class StoreUnavailable(StorageError):
    """The cluster did not take the escalation's state in time: nothing decided is sent."""


class LeaseLost(StorageError):
    """Another escalate is the active one now (or may be): this one stops at once."""


def key_of(prefix: str, pk: object) -> str:
    """A row's key: the id as it is where a key may hold it, else ``=`` + base64url."""
    text = str(pk)
    if _PLAIN.fullmatch(text):
        return f"{prefix}.{text}"
    return f"{prefix}.=" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def row_of_key(key: str) -> tuple[str, str]:
    prefix, _, text = key.partition(".")
    if text.startswith("="):
        raw = text[1:]
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    return prefix, text


async def replicas_for(nc: Nats, wanted: int | None) -> int:
    """The buckets' replicas: as set, else as many as ALERTS has (3 on a 3-node cluster)."""
    if wanted is not None:
        return wanted
    try:
        info = await nc.jetstream(timeout=_REQUEST_S).stream_info(ALERTS_STREAM)
    except nats.js.errors.NotFoundError as exc:
        raise StorageError(f"no stream {ALERTS_STREAM}: run homecare broker provision") from exc
    return int(info.config.num_replicas or 1)


_LEADERLESS_S = 40.0
"""How long escalate waits for its buckets' streams to have a leader before it gives up."""


async def open_buckets(nc: Nats, replicas: int, lease_s: float) -> tuple[KeyValue, KeyValue]:
    """The state bucket and the lease bucket, made if missing (either process may be first)."""
    js = nc.jetstream(timeout=_REQUEST_S)
    out = []
    for config in (
        KeyValueConfig(bucket=STATE_BUCKET, history=1, replicas=replicas,
                       storage=StorageType.FILE,
                       description="homecare escalation: alerts, deliveries, events"),
        KeyValueConfig(bucket=LEASE_BUCKET, history=1, replicas=replicas, ttl=lease_s,
                       storage=StorageType.FILE,
                       description="homecare escalation: which escalate is the active one"),
    ):  # fmt: skip
        try:
            out.append(await js.key_value(config.bucket))
        except nats.js.errors.BucketNotFoundError:
            try:
                out.append(await js.create_key_value(config))
            except nats.js.errors.APIError:  # the other process made it meanwhile
                out.append(await js.key_value(config.bucket))
    stream = await js.stream_info(f"KV_{LEASE_BUCKET}")
    if abs((stream.config.max_age or 0.0) - lease_s) > 0.001:  # lease_s changed since
        log.warning("the lease bucket's max_age was %s s: set to %s s (lease_s)",
                    stream.config.max_age, lease_s)  # fmt: skip
        stream.config.max_age = lease_s
        stream.config.duplicate_window = min(stream.config.duplicate_window or lease_s, lease_s)
        await js.update_stream(stream.config)
    return out[0], out[1]


class Lease:
    """The active's lease, renewed on the store's loop; :meth:`valid` from any thread."""

    def __init__(self, kv: KeyValue, holder: str, lease_s: float) -> None:
        self.kv = kv
        self.holder = holder
        self.lease_s = lease_s
        self.revision = 0
        self._valid_until = 0.0
        """Monotonic time until which no one else can hold it (from the last renewal sent)."""
        self.lost = threading.Event()
        self.reason = ""

    def valid(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self._valid_until

    async def acquire(self, stop: threading.Event, poll_s: float = 0.25) -> bool:
        """Wait until this process holds the lease (``False``: stopped first)."""
        said = False
        while not stop.is_set():
            sent = time.monotonic()
            try:
                self.revision = await self.kv.create(LEASE_KEY, self.holder.encode())
                self._valid_until = sent + self.lease_s * 0.8
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                if not said:
                    with contextlib.suppress(*_TRANSIENT, nats.js.errors.KeyNotFoundError):
                        entry = await self.kv.get(LEASE_KEY)
                        log.info("escalate standing by: %s is active",
                                 (entry.value or b"").decode())  # fmt: skip
                    said = True
            except _TRANSIENT as exc:
                log.warning("lease: %s", exc)
            await asyncio.sleep(poll_s)
        return False

    async def keep(self) -> None:
        """Renew every third of the lease until cancelled; on a refusal, or when no renewal
        went through before the lease would lapse, set :attr:`lost`."""
        while not self.lost.is_set():
            await asyncio.sleep(self.lease_s / 3)
            sent = time.monotonic()
            try:
                self.revision = await asyncio.wait_for(
                    self.kv.update(LEASE_KEY, self.holder.encode(), last=self.revision),
                    self.lease_s / 3,
                )
                self._valid_until = sent + self.lease_s * 0.8
            except nats.js.errors.KeyWrongLastSequenceError:
                if not await self._renewed_after_all():
                    self._lose("another escalate holds the lease")
            except _TRANSIENT as exc:
                if time.monotonic() >= self._valid_until:
                    self._lose(f"not renewed in time: {exc}")
                else:
                    log.warning("lease renewal failed (tried again): %s", exc)

    async def _renewed_after_all(self) -> bool:
        """A renewal that timed out may have been written: then the key is still ours."""
        with contextlib.suppress(*_TRANSIENT, nats.js.errors.KeyNotFoundError):
            entry = await self.kv.get(LEASE_KEY)
            if entry.value == self.holder.encode() and entry.revision:
                self.revision = entry.revision
                return True
        return False

    def _lose(self, reason: str) -> None:
        self.reason = reason
        self._valid_until = 0.0
        self.lost.set()
        log.error("escalate lost its lease: %s; it stops sending and exits", reason)

    async def release(self) -> None:
        """On a clean stop: the standby need not wait for the lease to lapse."""
        if self.revision and not self.lost.is_set():
            with contextlib.suppress(*_TRANSIENT, nats.js.errors.KeyWrongLastSequenceError):
                await self.kv.delete(LEASE_KEY, last=self.revision)
        self._valid_until = 0.0


class ClusterStore(Store):
    """The :class:`Store` on an in-memory SQLite mirror of the bucket ``escalation``."""

    def __init__(self, loop: EventLoopThread, kv: KeyValue, lease: Lease) -> None:
        super().__init__(Path(":memory:"))
        self.track_changes()
        self._loop = loop
        self.kv = kv
        self.lease = lease
        self.wal_revision = 0
        self.transactions = 0
        self._marked: set[str] = set()
        self.sent_marks: set[str] = set()
        """Refs of emails a server accepted (its 250) that the previous active may not
        have recorded: :meth:`mark_sent`'s keys, found at :meth:`load`."""

    # loading on takeover ---------------------------------------------------------------
    def load(self) -> int:
        """Every row of the bucket, then its last transaction on top; answer the rows."""
        entries = self._loop.run(self._entries(), 120.0)
        wal = entries.pop(WAL_KEY, None)
        chunks = {k: v[0] for k, v in entries.items() if k.startswith(_CHUNK_KEY + ".")}
        last: dict[str, Any] = {}
        if wal is not None:
            self.wal_revision = wal[1]
            last = self._last_transaction(wal[0], chunks)
        self.sent_marks = {row_of_key(k)[1] for k in entries if k.startswith(_SENT + ".")}
        rows = [
            (*row_of_key(key), json.loads(value))
            for key, (value, _) in entries.items()
            if key.split(".", 1)[0] in ROW_TABLES and key not in last
        ]
        self.put_rows(
            [
                *rows,
                *((*row_of_key(k), v) for k, v in last.items() if k.split(".", 1)[0] in ROW_TABLES),
            ]
        )
        return len(rows) + len(last)

    async def _entries(self) -> dict[str, tuple[bytes, int]]:
        """Every key's latest value and revision. Read until the bucket's last revision
        (asked first) has come: nats-py may mark the initial values done before the last
        of them is handed over (seen once on a loaded CI machine: a takeover loaded a
        state without its oldest alert). Deletes come too, so that the last revision is
        seen whatever it was; a deleted key is left out."""
        out: dict[str, tuple[bytes, int]] = {}
        last = (await self.kv.status()).stream_info.state.last_seq or 0
        watcher = await self.kv.watchall()
        seen = 0
        done = False
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=_REQUEST_S)  # type: ignore[no-untyped-call]
                except TimeoutError:
                    if not done:
                        raise
                    # the last revision was a marker nats-py does not hand over
                    log.warning("escalation state loaded to revision %d of %d", seen, last)
                    return out
                if entry is None:
                    done = True
                else:
                    seen = max(seen, entry.revision or 0)
                    if entry.operation in ("DEL", "PURGE"):
                        out.pop(entry.key, None)
                    else:
                        out[entry.key] = (entry.value or b"", entry.revision or 0)
                if done and seen >= last:
                    return out
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    @staticmethod
    def _last_transaction(value: bytes, chunks: dict[str, bytes]) -> dict[str, Any]:
        head = json.loads(value)
        if "chunks" in head:
            parts = [chunks.get(f"{_CHUNK_KEY}.{i}", b"") for i in range(head["chunks"])]
            tagged = [json.loads(p) if p else {} for p in parts]
            if any(t.get("tx") != head["tx"] for t in tagged):
                return {}  # a later transaction's chunks, half written: this one is applied
            body = b"".join(base64.b64decode(t["data"]) for t in tagged)
        else:
            body = base64.b64decode(head["data"])
        rows: dict[str, Any] = json.loads(zlib.decompress(body))
        return rows

    # every transaction goes to the bucket before SQLite commits -------------------------
    def _before_commit(self) -> None:
        changed = self.take_changes()
        if not changed:
            return
        if not self.lease.valid():
            raise LeaseLost(f"escalate's lease is not held ({self.lease.reason or 'lapsed'})")
        rows = {key_of(prefix, pk): row for (prefix, pk), row in changed.items()}
        for (prefix, pk), row in changed.items():  # recorded now: its mark is not needed
            marked = pk in self._marked or pk in self.sent_marks
            if prefix == "d" and marked and row is not None and row["status"] != "pending":
                rows[key_of(_SENT, pk)] = None
                self._marked.discard(pk)
                self.sent_marks.discard(pk)
        self.transactions += 1
        self._loop.run(self._write(rows), self.lease.lease_s * 2 + _REQUEST_S)

    def mark_sent(self, ref: str) -> None:
        """Record at once, from any thread, that a server accepted this delivery (one
        write, no transaction): the next active treats it as delivered."""
        self._marked.add(ref)
        self._loop.run(
            self._retrying(lambda: self.kv.put(key_of(_SENT, ref), b"250")), _REQUEST_S * 2
        )

    async def _write(self, rows: dict[str, Any]) -> None:
        body = zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 1)
        tx = f"{uuid.uuid4().hex}"
        writes: dict[str, bytes] = {}
        head: dict[str, object]
        if len(body) <= _WAL_CHUNK:
            head = {"tx": tx, "data": base64.b64encode(body).decode()}
        else:
            parts = [body[i : i + _WAL_CHUNK] for i in range(0, len(body), _WAL_CHUNK)]
            for i, part in enumerate(parts):
                writes[f"{_CHUNK_KEY}.{i}"] = json.dumps(
                    {"tx": tx, "data": base64.b64encode(part).decode()}
                ).encode()
            head = {"tx": tx, "chunks": len(parts)}
        await self._retrying(lambda: self._put_all(writes))
        wal = json.dumps(head).encode()
        self.wal_revision = await self._retrying(lambda: self._cas_wal(wal))
        await self._retrying(lambda: self._apply(rows))

    async def _cas_wal(self, value: bytes) -> int:
        try:
            return await self.kv.update(WAL_KEY, value, last=self.wal_revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            # an earlier try that timed out may have been written after all
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                entry = await self.kv.get(WAL_KEY)
                if entry.value == value and entry.revision:
                    return entry.revision
            self.lease._lose("another escalate wrote the state")
            raise LeaseLost("another escalate wrote the escalation state: this one stops") from None

    async def _put_all(self, writes: dict[str, bytes]) -> None:
        await asyncio.gather(*(self.kv.put(k, v) for k, v in writes.items()))

    async def _apply(self, rows: dict[str, Any]) -> None:
        async def one(key: str, row: Any) -> None:
            if row is None:
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    await self.kv.delete(key)
            else:
                await self.kv.put(key, json.dumps(row, separators=(",", ":")).encode())

        await asyncio.gather(*(one(k, v) for k, v in rows.items()))

    async def _retrying(self, write: Any) -> Any:
        """Tried again while the client finds another node, until the lease would lapse."""
        deadline = time.monotonic() + self.lease.lease_s
        while True:
            try:
                return await asyncio.wait_for(write(), _REQUEST_S)
            except LeaseLost:
                raise
            except _TRANSIENT as exc:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"the cluster did not take escalation's state: "
                                           f"{exc}") from exc  # fmt: skip
                log.warning("escalation state not yet written (tried again): %s", exc)
                await asyncio.sleep(0.1)


def forget_in_cluster(settings: Settings, elder: str, site: str | None) -> dict[str, int]:
    """Ask the active escalate to erase an elder (alerts, deliveries, events) from the
    cluster's state; :class:`StorageError` when none answers (nothing can be erased
    behind its back: it would write the rows again)."""

    async def ask() -> dict[str, int]:
        nc = await connect(settings.nats.url, name="homecare-forget-escalation",
                           settings=settings.nats)  # fmt: skip
        try:
            body = json.dumps({"elder": elder, "site": site}).encode()
            reply = await nc.request(FORGET_SUBJECT, body, timeout=30)
        except nats.errors.NoRespondersError as exc:
            raise StorageError("no active escalate answered: escalation's state in the "
                               "cluster is erased by the active one; start it and run "
                               "this again") from exc  # fmt: skip
        except (TimeoutError, nats.errors.Error) as exc:
            raise StorageError(f"erasing {elder} from escalation's state: {exc}") from exc
        finally:
            await nc.close()
        answer = json.loads(reply.data)
        if "error" in answer:
            raise StorageError(f"the active escalate refused to erase {elder}: {answer['error']}")
        return {str(k): int(v) for k, v in answer["removed"].items()}

    return asyncio.run(ask())


class ClusterState:
    """The connection, the buckets and the lease of one escalate process in cluster mode."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.escalate
        self.settings = settings
        self.holder = f"{cfg.client_id}@{uuid.uuid4().hex[:12]}"
        self.loop = EventLoopThread("escalate-cluster")
        self.nc: Nats | None = None
        self.store: ClusterStore | None = None
        self._renewal: concurrent.futures.Future[None] | None = None
        try:
            self.state, self.lease = self.loop.run(self._open(), 60.0)
        except BaseException:
            self.close()
            raise

    async def _open(self) -> tuple[KeyValue, Lease]:
        s = self.settings
        self.nc = await connect(s.nats.url, name=f"homecare-escalate-{self.holder}",
                                settings=s.nats)  # fmt: skip
        # Right after a node's loss a stream may have no leader for some seconds (a Raft
        # election: 4–6 s measured on the 3-node cluster): wait it out, as a standby must,
        # rather than exit (tests/test_city_failures.py saw escalate exit here).
        deadline = time.monotonic() + _LEADERLESS_S
        while True:
            try:
                replicas = await replicas_for(self.nc, s.escalate.replicas)
                state, lease = await open_buckets(self.nc, replicas, s.escalate.lease_s)
            except (TimeoutError, nats.errors.NoRespondersError,
                    nats.js.errors.ServiceUnavailableError) as exc:  # fmt: skip
                if time.monotonic() > deadline:
                    raise
                log.warning("the cluster's buckets do not answer yet (%s): trying again", exc)
                await asyncio.sleep(0.5)
                continue
            return state, Lease(lease, self.holder, s.escalate.lease_s)

    def acquire(self, stop: threading.Event) -> ClusterStore | None:
        """Stand by until this process is the active one; then its store, loaded."""
        future = asyncio.run_coroutine_threadsafe(self.lease.acquire(stop), self.loop.loop)
        if not future.result():
            return None
        self._renewal = asyncio.run_coroutine_threadsafe(self.lease.keep(), self.loop.loop)
        started = time.monotonic()
        store = ClusterStore(self.loop, self.state, self.lease)
        rows = store.load()
        self.store = store
        log.info("escalate is the active one (%s): %d rows of state loaded in %.2f s",
                 self.holder, rows, time.monotonic() - started)  # fmt: skip
        return store

    def serve_forget(self, main: asyncio.AbstractEventLoop) -> None:
        """Answer :data:`FORGET_SUBJECT` requests (``{"elder", "site"}``) by erasing on the
        service's loop ``main``, where the store is used, and replying the rows removed."""
        store, nc = self.store, self.nc
        assert store is not None
        assert nc is not None

        async def erase(elder: str, site: str | None) -> dict[str, int]:
            return store.erase_elder(elder, site)

        async def handle(msg: Msg) -> None:
            try:
                req = json.loads(msg.data)
                elder, site = str(req["elder"]), req.get("site")
                done = asyncio.run_coroutine_threadsafe(erase(elder, site), main)
                answer: dict[str, Any] = {"removed": await asyncio.wrap_future(done)}
            except Exception as exc:  # the requester gets the reason; the service goes on
                log.warning("erasure request refused: %s", exc)
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            await msg.respond(json.dumps(answer).encode())

        self.loop.run(nc.subscribe(FORGET_SUBJECT, cb=handle), _REQUEST_S)

    def close(self) -> None:
        """Hand the lease back (a clean stop) and disconnect."""
        if self._renewal is not None:
            self._renewal.cancel()
        if self.nc is not None:
            if getattr(self, "lease", None) is not None:
                with contextlib.suppress(TimeoutError, *_TRANSIENT):
                    self.loop.run(self.lease.release(), _REQUEST_S)
            with contextlib.suppress(TimeoutError, *_TRANSIENT):
                self.loop.run(self.nc.close(), _REQUEST_S)
        self.loop.close()

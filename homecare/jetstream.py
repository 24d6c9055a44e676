"""The :class:`~homecare.consumer.Consumer` on NATS JetStream: batches from a durable pull consumer.

Devices publish MQTT 3.1.1 at QoS 1 to NATS Server's MQTT listener, which stores each
publish in its internal stream ``$MQTT_msgs`` (subject ``$MQTT.msgs.`` + the topic with
``/`` for ``.``) before it acknowledges it. The ``TELEMETRY`` stream *sources*
``$MQTT_msgs`` (``homecare broker provision`` creates it) through a subject transform that
partitions by elder, so every stream of one elder (wearable, bed, door) lands in the same
partition::

    $MQTT.msgs.homecare.v1.<site>.<elder>.<kind>.<device>.<stream>
        → telemetry.<partition(P, elder)>.<site>.<elder>.<kind>.<device>.<stream>

Services read it through durable pull consumers (``ingest``, ``detect``): a
:class:`JetStreamConsumer` fetches a batch, hands it out as :class:`RawMessage` whose
``topic`` is the device's MQTT topic again (:func:`topic_of`), so :mod:`homecare.edge`
judges it unchanged, and acknowledges each message once the caller says its work is
durable. What was not acknowledged comes again: at once when the consumer is left (it
says so, ``-NAK``), after the consumer's ``ack_wait`` when the process died.
``max_ack_pending`` on the consumer bounds what is out unacknowledged: back-pressure is
the server's.

The services are synchronous; ``nats-py`` is asyncio. Each consumer runs its client on a
private event-loop thread and the service's threads hand it coroutines.

>>> topic_of("telemetry.51.north.e0001.wearable.w0001.frame")
'homecare/v1/north/e0001/wearable/w0001/frame'
>>> partition_of("e0001", 64), partition_of("e0002", 64)
(51, 6)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from homecare.consumer import AckMode, ConsumerError, Delivery, RawMessage
from homecare.contract import TOPIC_ROOT
from homecare.settings import NatsSettings

__all__ = [
    "ACK_SUBJECT_ROOT",
    "ALERTS_STREAM",
    "ALERT_SUBJECT_ROOT",
    "DETECT_CONSUMER",
    "DETECT_GROUP",
    "ESCALATE_CONSUMER",
    "INGEST_CONSUMER",
    "MQTT_QOS_HEADER",
    "MQTT_STREAM",
    "PIN_HEADER",
    "PUBLISH_TRY_S",
    "SUBJECT_ROOT",
    "TELEMETRY_STREAM",
    "EventLoopThread",
    "JetStreamConsumer",
    "SourceMissing",
    "SourceStatus",
    "alert_subject",
    "check_source",
    "connect",
    "connect_options",
    "detect_partition_consumer",
    "ingest_consumer",
    "partition_filter",
    "partition_of",
    "partition_of_subject",
    "read_stream",
    "read_stream_leader",
    "refusal",
    "server_urls",
    "site_filters",
    "source_status",
    "topic_of",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

TELEMETRY_STREAM = "TELEMETRY"
"""Every device stream's readings, partitioned by elder."""
MQTT_STREAM = "$MQTT_msgs"
"""NATS Server's own stream of MQTT QoS 1 publishes (interest retention: it keeps a
message only while a consumer, such as TELEMETRY's source, still wants it)."""
SUBJECT_ROOT = "telemetry"
INGEST_CONSUMER = "ingest"
DETECT_CONSUMER = "detect"
"""The name of detect's workers; each partition has its consumer
(:func:`detect_partition_consumer`), all in the priority group :data:`DETECT_GROUP`."""
DETECT_GROUP = "detect"
"""The priority group (``pinned_client`` policy) of detect's per-partition consumers."""
PIN_HEADER = "Nats-Pin-Id"
"""The header with which the server tells the pinned client its pin (ADR-42)."""
ALERTS_STREAM = "ALERTS"
"""Alerts as detect raised them (``alerts.raised.<site>.<elder>.<alert id>``, one per id:
``Nats-Msg-Id`` is the alert id) and apps' MQTT acknowledgements, sourced from
``$MQTT_msgs`` (``alerts.ack.<site>.<elder>.<alert id>``): what escalation consumes."""
ALERT_SUBJECT_ROOT = "alerts.raised"
ACK_SUBJECT_ROOT = "alerts.ack"
ESCALATE_CONSUMER = "escalate"
PUBLISH_TRY_S = 2.0
"""One try to store messages: a stream whose leader died answers nothing until its Raft
group elects another (4–6 s measured on the 3-node cluster); a try that waits longer
only makes an alarm later. The caller tries again (``Nats-Msg-Id`` drops duplicates)."""
MQTT_QOS_HEADER = "Nmqtt-Pub"
"""The header in which NATS Server keeps an MQTT publish's QoS."""
_MQTT_DOT = "//"
"""NATS Server writes a ``.`` inside an MQTT topic level as ``//`` in the subject."""


def topic_of(subject: str) -> str:
    """The device's MQTT topic of a TELEMETRY subject (the partition token dropped).

    A subject outside the scheme is returned as it is: the edge dead-letters it
    (``bad_topic``) rather than anything guessing here.

    >>> topic_of("telemetry.31.north.e//3.wearable.w3.frame")
    'homecare/v1/north/e.3/wearable/w3/frame'
    >>> topic_of("elsewhere.x")
    'elsewhere.x'
    """
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != SUBJECT_ROOT:
        return subject
    return "/".join([TOPIC_ROOT, *(p.replace(_MQTT_DOT, ".") for p in parts[2:])])


def _is_app_ack(subject: str) -> bool:
    """An app's acknowledgement of an alert (``…/<elder>/alert/<id>/ack``): it has as many
    levels as a device topic, so TELEMETRY's transform copies it too, but it is no reading
    (ALERTS carries it to escalation), so consumers of TELEMETRY acknowledge it unseen.

    >>> _is_app_ack("telemetry.3.north.e1.alert.a1.ack")
    True
    >>> _is_app_ack("telemetry.3.north.e1.bed.b1.reading")
    False
    """
    parts = subject.split(".")
    return len(parts) == 7 and parts[0] == SUBJECT_ROOT and parts[4] == "alert" and (
        parts[6] == "ack"
    )


def alert_subject(site: str, elder: str, alert_id: str) -> str:
    """Where detect publishes an alert in :data:`ALERTS_STREAM`.

    >>> alert_subject("north", "e1", "e1-fall-1767225600")
    'alerts.raised.north.e1.e1-fall-1767225600'
    """
    return f"{ALERT_SUBJECT_ROOT}.{site}.{elder}.{alert_id}"


def detect_partition_consumer(partition: int) -> str:
    """The durable consumer of one TELEMETRY partition for detect's workers.

    >>> detect_partition_consumer(7), partition_filter(7)
    ('detect-p7', 'telemetry.7.>')
    """
    return f"{DETECT_CONSUMER}-p{partition}"


def partition_filter(partition: int) -> str:
    """The TELEMETRY subjects of one partition."""
    return f"{SUBJECT_ROOT}.{partition}.>"


def _raw_message(
    subject: str, data: bytes, headers: dict[str, str] | None, seq: int, received: float
) -> RawMessage:
    """A TELEMETRY message as the edge takes it: its device's topic, the QoS NATS kept in
    its header, its sequence and partition."""
    qos = (headers or {}).get(MQTT_QOS_HEADER, "1")
    return RawMessage(topic_of(subject), data, received, False, int(qos) if qos.isdigit() else 1,
                      seq, partition_of_subject(subject))  # fmt: skip


async def read_stream(
    nc: Nats, stream: str, start: int, subject: str, *, batch: int, max_bytes: int,
    timeout_s: float,
) -> list[RawMessage]:  # fmt: skip
    """Up to ``batch`` messages of ``stream`` on ``subject`` from sequence ``start`` on, in
    order, in one batch direct get (``$JS.API.DIRECT.GET``, NATS ≥ 2.11; the stream allows
    direct gets): no consumer is made, so the reader needs no right to make or delete one,
    and no round of the stream's Raft group is waited for. Any replica may answer: one that
    lags behind answers with fewer, which the caller sees (the last sequence it wanted is
    not there). [] where the stream has none left."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = {"seq": start, "batch": batch, "next_by_subj": subject, "max_bytes": max_bytes}
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(),
                         reply=inbox)  # fmt: skip
        out: list[RawMessage] = []
        while True:
            try:
                msg = await sub.next_msg(timeout_s)
            except nats.errors.TimeoutError as exc:
                raise ConsumerError(f"{stream}: no answer to a direct get from {start} in "
                                    f"{timeout_s:.0f} s") from exc  # fmt: skip
            headers = msg.headers or {}
            status = headers.get("Status")
            if status in ("204", "404"):  # the end of the batch; none (left) to send
                return out
            if status == "503":
                raise ConsumerError(f"{stream} takes no direct gets (NATS ≥ 2.11, "
                                    "allow_direct): run `homecare broker provision`")  # fmt: skip
            if status:
                raise ConsumerError(f"{stream}: direct get refused: {status} "
                                    f"{headers.get('Description', '')}")  # fmt: skip
            out.append(_raw_message(headers["Nats-Subject"], msg.data, headers,
                                   int(headers["Nats-Sequence"]), time.time()))  # fmt: skip
    finally:
        await sub.unsubscribe()


async def read_stream_leader(
    js: JetStreamContext, stream: str, start: int, end: int, subject: str, *, limit: int
) -> list[RawMessage]:
    """Up to ``limit`` messages of ``stream`` on ``subject`` from ``start`` to ``end``, in
    order, asked of the stream's leader one at a time (``STREAM.MSG.GET`` with
    ``next_by_subj``): slower than :func:`read_stream`, but the leader holds every message
    the stream has taken, where the replica that answers a direct get may lag behind (a
    loaded cluster: seconds to minutes)."""
    out: list[RawMessage] = []
    seq = start
    while len(out) < limit and seq <= end:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            break
        if msg.seq is None or msg.seq > end:
            break
        out.append(_raw_message(msg.subject or "", msg.data or b"", msg.headers, msg.seq,
                                time.time()))  # fmt: skip
        seq = msg.seq + 1
    return out


def partition_of_subject(subject: str) -> int:
    """The partition token of a TELEMETRY subject; -1 for a subject outside the scheme.

    >>> partition_of_subject("telemetry.5.north.e1.bed.b1.reading"), partition_of_subject("x.y")
    (5, -1)
    """
    parts = subject.split(".", 2)
    if len(parts) < 3 or parts[0] != SUBJECT_ROOT or not parts[1].isdigit():
        return -1
    return int(parts[1])


def ingest_consumer(district: str | None = None, replica: str = "primary") -> str:
    """The durable consumer of ingest: ``ingest`` for the single store, else one per
    district and InfluxDB of its pair (each InfluxDB is fed by its own consumer).

    >>> ingest_consumer(), ingest_consumer("north", "replica")
    ('ingest', 'ingest-north-replica')
    """
    return INGEST_CONSUMER if district is None else f"{INGEST_CONSUMER}-{district}-{replica}"


def site_filters(sites: Sequence[str]) -> list[str]:
    """TELEMETRY subjects of these sites (every partition).

    >>> site_filters(["north"])
    ['telemetry.*.north.>']
    """
    return [f"{SUBJECT_ROOT}.*.{site}.>" for site in sorted(set(sites))]


def partition_of(elder: str, partitions: int) -> int:
    """The partition NATS's ``{{partition(P, elder)}}`` transform gives an elder: FNV-1a
    (32 bits) of the token, modulo P. For the workers that will own partitions."""
    h = 0x811C9DC5
    for byte in elder.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


class EventLoopThread:
    """An asyncio loop on a daemon thread of its own; other threads run coroutines on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        """Cancel what still runs, stop the loop and join its thread."""

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_closed():
            return
        with contextlib.suppress(TimeoutError, RuntimeError):
            self.run(cancel_the_rest(), 5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def connect_options(settings: NatsSettings | None) -> dict[str, Any]:
    """``nats.connect`` keywords for the service's account and the server's CA."""
    if settings is None:
        return {}
    options: dict[str, Any] = {}
    if settings.username:
        options["user"] = settings.username
        if settings.password is not None:
            options["password"] = settings.password.get_secret_value()
    if settings.creds_file is not None:
        if not settings.creds_file.is_file():  # else the client retries a missing file for ever
            raise ConsumerError(f"NATS credentials file {settings.creds_file} not found "
                                "(HOMECARE_NATS__CREDS_FILE)")  # fmt: skip
        options["user_credentials"] = str(settings.creds_file)
    if settings.ca_file is not None or settings.url.startswith("tls://"):
        options["tls"] = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
    return options


def refusal(exc: BaseException) -> bool:
    """Whether a connection error is the server refusing who we are (credentials, or its
    certificate that we refuse): retrying cannot help, unlike a server not up yet."""
    if isinstance(exc, nats.errors.AuthorizationError | nats.errors.InvalidUserCredentialsError
                  | ssl.SSLCertVerificationError):  # fmt: skip
        return True
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text


def server_urls(url: str) -> list[str]:
    """The servers of ``url``: one, or a cluster's nodes comma-separated (the client
    starts with any and reconnects to another when its node is lost).

    >>> server_urls("nats://a:4222, nats://b:4222")
    ['nats://a:4222', 'nats://b:4222']
    """
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ConsumerError("no NATS server: set HOMECARE_NATS__URL (nats://host:4222)")
    return urls


async def connect(
    url: str, *, name: str, wait_s: float = 30.0, settings: NatsSettings | None = None
) -> Nats:
    """A NATS connection that reconnects for ever once made; the first connect is retried
    for ``wait_s`` while the server is not up yet (services may start before it), but a
    refusal of the credentials (or of the server's certificate) fails at once.
    ``url`` may name several servers, comma-separated (:func:`server_urls`).
    ``settings`` gives the account and TLS (:func:`connect_options`)."""
    options = connect_options(settings)
    servers = server_urls(url)
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def quiet(exc: Exception) -> None:
        if refusal(exc) and not refused.done():
            refused.set_result(exc)
            return
        log.warning("%s: NATS %s: %s", name, url, exc)

    async def disconnected() -> None:
        log.info("%s: disconnected from NATS %s", name, url)  # a close says it too

    # nats-py retries a first connect for ever (max_reconnect_attempts=-1), refusals
    # included: it runs as a task, bounded by wait_s and stopped by the first refusal.
    nc = Nats()
    attempt: asyncio.Future[None] = asyncio.ensure_future(nc.connect(
        servers, name=name, connect_timeout=2, allow_reconnect=True, max_reconnect_attempts=-1,
        reconnect_time_wait=0.5, error_cb=quiet, disconnected_cb=disconnected, **options,  # type: ignore[arg-type]  # seconds, a float is fine
    ))  # fmt: skip
    waiting: set[asyncio.Future[Any]] = {attempt, refused}
    done, _ = await asyncio.wait(waiting, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    if attempt in done and attempt.exception() is None:
        return nc
    attempt.cancel()
    with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
        await attempt
    with contextlib.suppress(nats.errors.Error, OSError):
        await nc.close()
    if refused.done():
        who = f"credentials {settings.creds_file}" if settings and settings.creds_file else (
            f"user {settings.username!r}" if settings and settings.username else "no credentials")
        raise ConsumerError(f"NATS {url} refused {name} ({who}): {refused.result()}; check "
                            "HOMECARE_NATS__CREDS_FILE and HOMECARE_NATS__CA_FILE")  # fmt: skip
    reason = attempt.exception() if attempt in done and not attempt.cancelled() else None
    raise ConsumerError(f"NATS {url} unreachable for {name} within {wait_s:g} s"
                        + (f": {reason}" if reason else ""))  # fmt: skip


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Whether TELEMETRY receives what devices publish: its source is set up and running."""

    ok: bool
    detail: str
    lag: int | None = None
    """Messages of ``$MQTT_msgs`` not yet copied into TELEMETRY."""


async def source_status(
    js: JetStreamContext, stream: str = TELEMETRY_STREAM, source: str = MQTT_STREAM
) -> SourceStatus:
    """:class:`SourceStatus` of ``stream``'s source ``source``, read from the server.

    Right after the server restarts it is briefly not ``ok`` (not active yet); a caller
    retries before it concludes the source is broken. Then, measured on 2.15.1 (one
    node), it reports ``ok`` with lag 0 while it copies nothing for about 10 s:
    TELEMETRY is restored before ``$MQTT_msgs`` and its source is set up again only on
    a later retry. The publishes wait in ``$MQTT_msgs`` meanwhile; nothing is lost, but
    this check cannot see that stall."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return SourceStatus(False, f"stream {stream} not found: run homecare broker provision")
    found = [s for s in info.sources or () if s.name == source]
    if not found:
        return SourceStatus(False, f"stream {stream} does not source {source}")
    src = found[0]
    if src.error:
        return SourceStatus(
            False, f"{stream}'s source {source}: {src.error.get('description', src.error)}", src.lag
        )
    try:
        await js.stream_info(source)
    except nats.js.errors.NotFoundError:
        return SourceStatus(False, f"stream {source} not found: run homecare broker provision")
    if src.active is None or src.active < 0:
        return SourceStatus(False, f"{stream}'s source {source} is not active yet", src.lag)
    return SourceStatus(True, f"{stream} sources {source} (lag {src.lag})", src.lag)


def check_source(
    url: str,
    *,
    stream: str = TELEMETRY_STREAM,
    source: str = MQTT_STREAM,
    timeout_s: float = 10.0,
    settings: NatsSettings | None = None,
) -> SourceStatus:
    """:func:`source_status` on a connection of its own, for a service at start (and
    every minute, or with :meth:`JetStreamConsumer.check_source` on its connection).
    ``settings``: the service's account and the server's CA (:func:`connect_options`)."""

    async def check() -> SourceStatus:
        nc = await connect(url, name="homecare-check", wait_s=timeout_s, settings=settings)
        try:
            return await source_status(nc.jetstream(timeout=timeout_s), stream, source)
        finally:
            await nc.close()

    return asyncio.run(check())


class SourceMissing(ConsumerError):
    """TELEMETRY does not receive what devices publish (its source is missing, broken or
    not active): a service refuses to start on it rather than consume an empty stream."""


class JetStreamConsumer:
    """The :class:`~homecare.consumer.Consumer` on a durable pull consumer of a stream.

    The durable consumer (its ``ack_wait``, ``max_ack_pending``) is provisioned
    beforehand (``homecare broker provision``); entering binds to it, or raises
    :class:`ConsumerError` naming what is missing. Several processes may bind to the same
    durable name: the server hands each message to one of them (ingest instances).

    Each message is acknowledged on its own (``+ACK`` to its reply subject), after the
    caller's :meth:`ack`; leaving flushes those acknowledgements (the server has read them)
    and hands back (``-NAK``) what was taken and not acknowledged, for the next session.
    A pull consumer holds nothing it was not asked for: :attr:`pending` is 0 and the
    backlog is on the server (:meth:`backlog`).

    **Pinned mode** (``group`` given, detect's workers): the consumer reads several durable
    consumers (``durables``, one per partition) whose priority group ``group`` has the
    ``pinned_client`` policy (NATS ≥ 2.11, ADR-42): the server hands each durable's
    messages to one client at a time, the *pinned* one, and tells it its pin in the
    ``Nats-Pin-Id`` header; every later pull of that client carries the pin (``id``), and
    a pull with a pin that is no longer current gets status 423 (the pin is lost). A client
    that has not pulled for the consumer's ``priority_timeout`` loses its pin to another
    client that pulls. So pulls are not made by :meth:`take` but kept up on the event-loop
    thread (a pull of at most ``pull_expires_s`` always out per durable), whatever the
    caller's thread is busy with: a worker keeps its pins while it replays or saves.
    It pulls on the durables it holds and on those :meth:`want` names, except those
    :meth:`pause` stopped; :meth:`unpin` hands a durable back to the server (another
    client that pulls gets it). :attr:`pinned` is what it holds now.
    """

    def __init__(
        self,
        url: str,
        *,
        durable: str,
        stream: str = TELEMETRY_STREAM,
        ack: AckMode = AckMode.MANUAL,
        connect_wait_s: float = 30.0,
        request_timeout_s: float = 10.0,
        source: str | None = MQTT_STREAM,
        source_check_s: float = 60.0,
        source_wait_s: float = 15.0,
        settings: NatsSettings | None = None,
        group: str | None = None,
        durables: Sequence[str] = (),
        pull_expires_s: float = 1.0,
        buffer_limit: int = 20_000,
        urgent: Collection[str] = (),
    ) -> None:
        """``source``: the stream that must feed ``stream`` (checked at start, where it is
        given up to ``source_wait_s`` to become active, and every ``source_check_s``
        while taking); None for a stream fed directly (ALERTS). ``group``: pinned mode on
        ``durables`` (``durable`` then only names this client), each pull waiting at most
        ``pull_expires_s`` (under the consumers' ``priority_timeout``), and no more than
        ``buffer_limit`` messages held between two takes. ``urgent``: the devices' streams
        (a subject's last token: ``sos``) whose message ends a batch's wait, taken with
        what has arrived: an SOS press does not wait out the window."""
        self.url = url
        self._urgent = frozenset(urgent)
        self.durable = durable
        self.group = group
        self.durables = tuple(durables) if group else (durable,)
        if group and not self.durables:
            raise ValueError("a pinned consumer needs the durables it may hold")
        self._pull_expires_s = pull_expires_s
        self._buffer_limit = buffer_limit
        self._max_bytes = (settings or NatsSettings()).pull_max_bytes
        """Each pull's byte limit: with ``max_ack_pending`` messages out, a flood of
        1 MiB messages would otherwise hold that many MiB in one batch."""
        self.pinned: dict[str, str] = {}
        """Durable → the pin the server gave this client (pinned mode): what it holds."""
        self._wanted: set[str] = set()
        self._paused: dict[str, float] = {}
        """Durable → until when (monotonic) it is not pulled on."""
        self._out: dict[str, tuple[str, int, float]] = {}
        """Durable → its pull out: reply subject, messages still due, when it expires."""
        self._pump: asyncio.Task[None] | None = None
        self._pump_wake = asyncio.Event()
        self.lost: list[str] = []
        """Durables whose pin the server gave to another client (423), not yet seen by the
        caller (:meth:`take_lost`)."""
        self._last_delivery: dict[str, int] = {}
        """Durable held → the consumer sequence of the last message it delivered here."""
        self.gaps: list[str] = []
        """Durables held whose deliveries here skipped a consumer sequence, not yet seen by
        the caller (:meth:`take_gaps`)."""
        self.stream = stream
        self.ack_mode = ack
        self._connect_wait_s = connect_wait_s
        self._request_timeout_s = request_timeout_s
        self._loop: EventLoopThread | None = None
        self._nc: Nats | None = None
        self._js: JetStreamContext | None = None
        self._inbox = ""
        """Where the server delivers what this consumer pulls (``<inbox>.<request>``)."""
        self._arrived: list[Msg] = []
        """Delivered, not yet taken (a pull request may deliver after its take returned)."""
        self._pulling = ""
        """The pull request a take waits on; "" once the server has ended it (a status: no
        messages, timed out...)."""
        self._wake: asyncio.Event | None = None
        self._requests = 0
        self._unacked: dict[int, str] = {}
        """Receipt → the reply subject that acknowledges it, for what is out."""
        self._next_receipt = 0
        self._generation = 0
        self._closed = True
        self.source = source
        self.source_check_s = source_check_s
        self._source_wait_s = source_wait_s
        self._settings = settings
        self._next_source_check = 0.0
        self.source_status: SourceStatus | None = None
        """The last check of the source (None before the first, or with no source)."""

    @classmethod
    def from_settings(
        cls, settings: NatsSettings, *, durable: str, stream: str = TELEMETRY_STREAM,
        source: str | None = MQTT_STREAM, ack: AckMode = AckMode.MANUAL,
        group: str | None = None, durables: Sequence[str] = (), urgent: Collection[str] = (),
    ) -> JetStreamConsumer:  # fmt: skip
        """A service's consumer: the server, account and source check of its settings."""
        if not settings.url:
            raise ConsumerError("no NATS server: set HOMECARE_NATS__URL (nats://host:4222)")
        return cls(settings.url, durable=durable, stream=stream, source=source, ack=ack,
                   source_check_s=settings.source_check_s,
                   source_wait_s=settings.source_wait_s, settings=settings, group=group,
                   durables=durables, urgent=urgent)  # fmt: skip

    # the Consumer ----------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self._loop is not None:
            raise RuntimeError("JetStreamConsumer is not re-entrant")
        self._loop = EventLoopThread(f"jetstream-{self.durable}")
        try:
            self._loop.run(
                self._bind(),
                self._connect_wait_s + self._request_timeout_s + self._source_wait_s + 5,
            )
        except BaseException:
            self._loop.run(self._disconnect(), self._request_timeout_s + 5)
            self._loop.close()
            self._loop = None
            raise
        self._generation += 1
        self._closed = False
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        if self._loop is None:
            return
        try:
            self._loop.run(self._settle(), self._request_timeout_s + 5)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("%s: the server did not confirm our last acknowledgements: %s",
                        self.durable, exc)  # fmt: skip
        finally:
            self._loop.run(self._disconnect(), self._request_timeout_s + 5)
            self._loop.close()
            self._loop = None

    def take(
        self, max_messages: int, timeout_s: float, *, eager: bool = False, only: str = ""
    ) -> Delivery:
        """Up to ``max_messages``, waiting at most ``timeout_s`` for a full batch (with
        ``eager``, for the first message); none once the consumer is closed. ``only``
        (pinned mode): just what has arrived from that durable, without waiting."""
        delivery = Delivery()
        if self._closed or self._loop is None or max_messages < 1:
            return delivery
        if self.source is not None and time.monotonic() >= self._next_source_check:
            self._watch_source()
        if only:
            msgs = self._loop.run(self._take_arrived(only), self._request_timeout_s)
        else:
            msgs = self._loop.run(
                self._fetch(max_messages, timeout_s, eager), timeout_s + self._request_timeout_s
            )
        now = time.time()
        messages, receipts = delivery.messages, delivery.receipts
        generation = self._generation
        not_readings = []
        for msg in msgs:
            if _is_app_ack(msg.subject):
                not_readings.append(msg.reply)
                continue
            messages.append(_raw_message(msg.subject, msg.data, msg.headers,
                                        msg.metadata.sequence.stream, now))  # fmt: skip
            self._next_receipt += 1
            self._unacked[self._next_receipt] = msg.reply
            receipts.append((generation, self._next_receipt))
        if not_readings:  # escalation has them, through ALERTS
            self._loop.run(self._send(not_readings, b"+ACK"), self._request_timeout_s)
        if self.ack_mode is AckMode.ON_TAKE:
            self._acknowledge(receipts)
        return delivery

    def ack(self, delivery: Delivery) -> int:
        """Acknowledge a handled delivery; return how many acknowledgements were sent."""
        if self.ack_mode is AckMode.ON_TAKE:
            return 0  # acknowledged when it was taken
        return self._acknowledge(delivery.receipts)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def pending(self) -> int:
        """Messages received and not yet taken: none, a pull consumer asks for each batch."""
        return 0

    # pinned mode -----------------------------------------------------------------------
    def want(self, durables: Sequence[str]) -> None:
        """Pull on these durables too (besides those held), to be pinned to them."""
        wanted = set(durables)
        if self._loop is not None:
            self._loop.loop.call_soon_threadsafe(self._set_wanted, wanted)
        else:
            self._wanted = wanted

    def _set_wanted(self, wanted: set[str]) -> None:
        self._wanted = wanted
        self._pump_wake.set()

    def pause(self, durables: Sequence[str], seconds: float, *, wait_s: float = 0.0) -> None:
        """Stop pulling on ``durables`` for ``seconds``; with ``wait_s``, wait up to that
        long until their pulls out have ended (nothing more arrives from them)."""
        if self._loop is None:
            return
        until = time.monotonic() + seconds

        async def stop() -> None:
            for durable in durables:
                self._paused[durable] = until
            deadline = time.monotonic() + wait_s
            # the arrival callback ends them: a short poll of its dict, bounded by wait_s
            while any(d in self._out for d in durables) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            for durable in durables:  # the server ends them anyway; nothing more is awaited
                self._out.pop(durable, None)

        self._loop.run(stop(), wait_s + self._request_timeout_s)

    def unpin(self, durables: Sequence[str]) -> None:
        """Hand ``durables`` back to the server (``$JS.API.CONSUMER.UNPIN``): it pins the
        next client that pulls. Pause them first, or this client may get them again."""
        if self._loop is None or self._nc is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        nc, group = self._nc, self.group

        async def unpin_all() -> None:
            for durable in durables:
                self.pinned.pop(durable, None)
                self._last_delivery.pop(durable, None)
                reply = await nc.request(f"$JS.API.CONSUMER.UNPIN.{self.stream}.{durable}",
                                         json.dumps({"group": group}).encode(),
                                         timeout=self._request_timeout_s)  # fmt: skip
                error = json.loads(reply.data or b"{}").get("error")
                if error:
                    log.warning("%s: unpin %s refused: %s", self.durable, durable, error)

        self._loop.run(unpin_all(), self._request_timeout_s * (1 + len(durables)))

    def take_lost(self) -> list[str]:
        """The durables lost to another client since the last call (status 423)."""
        lost, self.lost = self.lost, []
        return lost

    def take_gaps(self) -> list[str]:
        """The durables held whose deliveries skipped a consumer sequence since the last
        call: messages the server handed out that never came here (in flight when this
        client's node died: the server delivers them again only after ``ack_wait``). Each
        durable is named before the message that showed its gap is taken."""
        gaps, self.gaps = self.gaps, []
        return gaps

    def check_pins(
        self, durables: Sequence[str]
    ) -> concurrent.futures.Future[dict[str, bool | None]]:
        """Whether the server still has this client pinned on each durable (its consumer
        info's priority group state), asked in the background: before a save, a worker
        that lost a pin without hearing of it yet must not overwrite the new holder's state.

        ``None`` for a durable whose consumer did not answer within :data:`PUBLISH_TRY_S`
        (no leader: a Raft election after a node's loss takes 4 to 9 s). Asked and waited
        for in the detect loop with the connection's 10 s request timeout, one leaderless
        consumer held back every partition's alerts until it answered (a node's kill -9
        cost 10 s more than the elections in ``homecare bench city``)."""
        if self._loop is None or self._nc is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        nc = self._nc

        async def check(durable: str) -> bool | None:
            try:
                reply = await nc.request(f"$JS.API.CONSUMER.INFO.{self.stream}.{durable}", b"",
                                         timeout=PUBLISH_TRY_S)  # fmt: skip
            except (TimeoutError, nats.errors.Error):
                return None
            info = json.loads(reply.data or b"{}")
            if not reply.data or "error" in info:  # a status, or "temporarily unavailable"
                return None
            groups = info.get("priority_groups") or []
            pin = self.pinned.get(durable)
            return pin is not None and any(
                g.get("group") == self.group and g.get("pinned_client_id") == pin for g in groups
            )

        async def all_() -> dict[str, bool | None]:
            found = await asyncio.gather(*(check(d) for d in durables))
            return dict(zip(durables, found, strict=True))

        return asyncio.run_coroutine_threadsafe(all_(), self._loop.loop)

    @property
    def pull_max_bytes(self) -> int:
        """The most bytes one pull (or read) of this consumer asks for."""
        return self._max_bytes

    @property
    def connection(self) -> Nats:
        """This consumer's connection, for helpers that run on its loop (:meth:`on_loop`)."""
        if self._nc is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        return self._nc

    def on_loop(
        self, work: Callable[[JetStreamContext], Coroutine[Any, Any, T]], timeout_s: float
    ) -> T:
        """Run ``work(js)`` on this consumer's connection and event loop (helpers that
        share the connection: detect's state store, its roster of workers)."""
        if self._loop is None or self._js is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        return self._loop.run(work(self._js), timeout_s)

    def submit(
        self, work: Callable[[JetStreamContext], Coroutine[Any, Any, T]]
    ) -> concurrent.futures.Future[T]:
        """:meth:`on_loop` without waiting: the future of its result."""
        if self._loop is None or self._js is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        return asyncio.run_coroutine_threadsafe(work(self._js), self._loop.loop)

    # beyond the seam -------------------------------------------------------------------
    def backlog(self) -> int:
        """Messages of the stream this durable consumer has not been handed yet."""
        if self._loop is None or self._js is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        js = self._js

        async def pending() -> int:
            infos = await asyncio.gather(*(js.consumer_info(self.stream, d) for d in self.durables))
            return sum(int(i.num_pending or 0) for i in infos)

        return self._loop.run(pending(), self._request_timeout_s)

    def check_source(self) -> SourceStatus:
        """:func:`source_status` of this consumer's stream, on this connection."""
        if self._loop is None or self._js is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        return self._loop.run(
            source_status(self._js, self.stream, self.source or MQTT_STREAM),
            self._request_timeout_s + 5,
        )

    def publish(self, messages: list[tuple[str, bytes, str]]) -> list[bool]:
        """Store ``(subject, payload, id)`` messages in their stream on this connection and
        wait until the stream has them all; return, for each, whether the stream already
        had that id (``Nats-Msg-Id``: a replayed detection is not stored twice within the
        stream's duplicate window). Raises :class:`ConsumerError` when it could not within
        :data:`PUBLISH_TRY_S`: the caller tries again."""
        if not messages:
            return []
        if self._loop is None or self._js is None:
            raise ConsumerError(f"consumer {self.durable} is not connected")
        js = self._js

        async def store() -> list[bool]:
            acks = await asyncio.gather(*(
                js.publish(subject, payload, timeout=PUBLISH_TRY_S,
                           headers={"Nats-Msg-Id": msg_id})
                for subject, payload, msg_id in messages
            ))  # fmt: skip
            return [bool(ack.duplicate) for ack in acks]

        try:
            return self._loop.run(store(), PUBLISH_TRY_S + 5)
        except (TimeoutError, nats.errors.Error) as exc:
            raise ConsumerError(f"{self.durable}: could not store {len(messages)} messages: "
                                f"{exc}") from exc  # fmt: skip

    def _watch_source(self) -> None:
        """The periodic check while taking: a broken source is logged as an error each
        time (services put :attr:`source_status` in their status file for operations);
        the service keeps consuming what the stream still has."""
        self._next_source_check = time.monotonic() + self.source_check_s
        try:
            status = self.check_source()
        except (TimeoutError, nats.errors.Error, ConsumerError) as exc:
            status = SourceStatus(False, f"source check failed: {exc}")
        if not status.ok:
            log.error("%s: %s: readings from devices are not reaching %s",
                      self.durable, status.detail, self.stream)  # fmt: skip
        self.source_status = status

    # on the loop -----------------------------------------------------------------------
    async def _consumer_info(self, durable: str) -> dict[str, Any]:
        """The durable's info, waiting out a stream with no leader (a Raft election after a
        node's loss takes seconds) for up to ``connect_wait_s``, rather than failing."""
        assert self._nc is not None
        deadline = time.monotonic() + self._connect_wait_s
        while True:
            # the raw API: nats-py (2.16) does not know priority groups and drops them
            try:
                reply = await self._nc.request(
                    f"$JS.API.CONSUMER.INFO.{self.stream}.{durable}", b"",
                    timeout=self._request_timeout_s,
                )  # fmt: skip
            except (TimeoutError, nats.errors.NoRespondersError) as exc:
                if time.monotonic() > deadline:
                    raise ConsumerError(f"JetStream at {self.url} did not answer for consumer "
                                        f"{durable!r}: {exc}") from exc  # fmt: skip
                await asyncio.sleep(0.5)
                continue
            if reply.data:
                info: dict[str, Any] = json.loads(reply.data)
                return info
            status = (reply.headers or {}).get("Status", "no answer")
            if time.monotonic() > deadline:  # a status instead of an answer: not ready yet
                raise ConsumerError(f"JetStream at {self.url} did not answer for consumer "
                                    f"{durable!r} (status {status})")  # fmt: skip
            await asyncio.sleep(0.5)

    async def _bind(self) -> None:
        self._nc = await connect(
            self.url, name=f"homecare-{self.durable}", wait_s=self._connect_wait_s,
            settings=self._settings,
        )  # fmt: skip
        self._js = self._nc.jetstream(timeout=self._request_timeout_s)
        for durable in self.durables:
            info = await self._consumer_info(durable)
            if "error" in info:
                raise ConsumerError(
                    f"no durable consumer {durable!r} on stream {self.stream} at {self.url} "
                    f"({info['error'].get('description')}): run homecare broker provision"
                )
            groups = info.get("config", {}).get("priority_groups") or []
            if self.group and self.group not in groups:
                raise ConsumerError(f"durable consumer {durable!r} has no priority group "
                                    f"{self.group!r}: run homecare broker provision")  # fmt: skip
        if self.source is not None:
            self.source_status = await self._wait_for_source(self._js)
            self._next_source_check = time.monotonic() + self.source_check_s
        # The pull protocol on the connection's own subscription (JetStream's documented
        # API: a request to $JS.API.CONSUMER.MSG.NEXT with a reply inbox): nats-py's
        # fetch() awaits a task per message, ~40 µs of CPU each, 3× this callback's.
        self._inbox = self._nc.new_inbox()
        self._wake = asyncio.Event()
        if self.group:
            await self._nc.subscribe(f"{self._inbox}.*.*", cb=self._arrive_pinned,
                                     pending_msgs_limit=-1, pending_bytes_limit=-1)  # fmt: skip
            self._pump = asyncio.get_running_loop().create_task(self._keep_pulling())
        else:
            await self._nc.subscribe(f"{self._inbox}.*", cb=self._arrive,
                                     pending_msgs_limit=-1, pending_bytes_limit=-1)  # fmt: skip

    async def _arrive(self, msg: Msg) -> None:
        """A pulled message, or the status that ends a pull request (no body, a
        ``Status`` header: 404 no messages, 408 timed out, 409 ...)."""
        if not msg.data and msg.headers and msg.headers.get("Status"):
            if msg.subject == self._pulling:
                self._pulling = ""
        else:
            self._arrived.append(msg)
        assert self._wake is not None
        self._wake.set()

    async def _wait_for_source(self, js: JetStreamContext) -> SourceStatus:
        """Refuse to start (:class:`SourceMissing`) unless the source is active: right
        after a server restart it is briefly not, so it is given ``source_wait_s``."""
        assert self.source is not None
        deadline = time.monotonic() + self._source_wait_s
        while True:
            status = await source_status(js, self.stream, self.source)
            if status.ok:
                return status
            if time.monotonic() > deadline:
                raise SourceMissing(
                    f"{self.durable} refuses to start at {self.url}: {status.detail}"
                )
            await asyncio.sleep(0.2)

    async def _fetch(self, max_messages: int, timeout_s: float, eager: bool) -> list[Msg]:
        nc, wake = self._nc, self._wake
        assert nc is not None
        assert wake is not None
        out: dict[int, Msg] = {}
        """By stream sequence: a message held past ``ack_wait`` while the batch fills comes
        again; its newest copy (the one whose acknowledgement counts) replaces the first."""
        size = 0
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        deadline = time.monotonic() + max(timeout_s, 0.01)
        hurry = False  # an urgent message came: take what is here now
        self._pulling = ""
        while not self._closed:
            wake.clear()  # before looking: what arrives from now on wakes the wait below
            room = max_messages - len(out)
            taken, self._arrived = self._arrived[:room], self._arrived[room:]
            for msg in taken:
                out[msg.metadata.sequence.stream] = msg
                size += len(msg.data)
                hurry = hurry or msg.subject.rpartition(".")[2] in self._urgent
            left = deadline - time.monotonic()
            full = len(out) >= max_messages or size >= self._max_bytes
            if full or (eager and out) or hurry or left < 0.005:
                break
            if not self._pulling and not self.group:  # ask for the rest, before the deadline
                self._requests += 1
                self._pulling = f"{self._inbox}.{self._requests}"
                pull = {"batch": max_messages - len(out), "expires": int(left * 1e9),
                        "max_bytes": self._max_bytes}  # fmt: skip
                try:
                    await nc.publish(next_subject, json.dumps(pull).encode(),
                                     reply=self._pulling)  # fmt: skip
                except nats.errors.Error as exc:  # disconnected: the client reconnects
                    log.debug("%s: pull failed: %s", self.durable, exc)
                    self._pulling = ""
                    await asyncio.sleep(min(0.1, left))
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), left)
        self._pulling = ""
        return list(out.values())

    async def _take_arrived(self, durable: str) -> list[Msg]:
        """What has arrived from ``durable`` and was not taken yet."""
        index = self.durables.index(durable)
        mine = [m for m in self._arrived if self._index_of(m.reply) == index]
        self._arrived = [m for m in self._arrived if self._index_of(m.reply) != index]
        return mine

    def _index_of(self, ack_subject: str) -> int:
        """The durable (its index) an acknowledgement subject belongs to:
        ``$JS.ACK.<stream>.<durable>.…``."""
        parts = ack_subject.split(".")
        try:
            return self.durables.index(parts[3]) if len(parts) > 4 else -1
        except ValueError:
            return -1

    async def _keep_pulling(self) -> None:
        """Pinned mode: keep one pull out on every durable held or wanted and not paused,
        so the server sees this client pull within its ``priority_timeout``."""
        nc, wake = self._nc, self._pump_wake
        assert nc is not None
        expires = self._pull_expires_s
        while True:
            wake.clear()
            now = time.monotonic()
            room = self._buffer_limit - len(self._arrived)
            for index, durable in enumerate(self.durables):
                out = self._out.get(durable)
                # A pull past its expiry is renewed even if its end has not come yet: a
                # busy client reads its messages late, and the server counts the time
                # from the last pull *request* (a reconnect may also have lost the end).
                if (out is not None and now < out[2]) or self._paused.get(durable, 0.0) > now:
                    continue
                pin = self.pinned.get(durable)
                if pin is None and durable not in self._wanted:
                    continue
                self._requests += 1
                reply = f"{self._inbox}.{index}.{self._requests}"
                batch = max(1, min(room, 1000))
                pull: dict[str, Any] = {"batch": batch, "expires": int(expires * 1e9),
                                        "max_bytes": self._max_bytes,
                                        "group": self.group}  # fmt: skip
                if pin is not None:
                    pull["id"] = pin
                try:
                    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{durable}",
                                     json.dumps(pull).encode(), reply=reply)  # fmt: skip
                except nats.errors.Error as exc:  # disconnected: the client reconnects
                    log.debug("%s: pull on %s failed: %s", self.durable, durable, exc)
                    break
                self._out[durable] = (reply, batch, now + expires)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(0.1, expires / 4))

    async def _arrive_pinned(self, msg: Msg) -> None:
        """A pulled message (its ``Nats-Pin-Id``: this client's pin on that durable), or
        the status that ends a pull (408 expired, 423 the pin is another's, 409 ...)."""
        headers = msg.headers or {}
        status = not msg.data and headers.get("Status")
        # a status comes on the pull's reply subject (<inbox>.<index>.<n>); a message
        # under its own subject, its durable named in its acknowledgement subject
        try:
            index = int(msg.subject.rsplit(".", 2)[1]) if status else self._index_of(msg.reply)
            durable = self.durables[index]
        except (ValueError, IndexError):
            return
        out = self._out.get(durable)
        if status:
            if status == "423" and durable in self.pinned:
                del self.pinned[durable]
                self._last_delivery.pop(durable, None)
                self.lost.append(durable)
                log.info("%s: %s is pinned to another worker now", self.durable, durable)
            if out is not None and out[0] == msg.subject:
                del self._out[durable]
        else:
            pin = headers.get(PIN_HEADER)
            if pin and self.pinned.get(durable) != pin:
                if durable not in self.pinned:
                    log.info("%s: pinned to %s", self.durable, durable)
                self.pinned[durable] = pin
                self._last_delivery.pop(durable, None)  # a new pin: a new start
            self._check_gap(durable, msg)
            self._arrived.append(msg)
            if out is not None:
                if out[1] <= 1:  # the pull's batch is complete: the server sends no status
                    del self._out[durable]
                else:
                    self._out[durable] = (out[0], out[1] - 1, out[2])
        assert self._wake is not None
        self._wake.set()
        if out is None or durable not in self._out:  # that pull ended: the next one
            self._pump_wake.set()

    def _check_gap(self, durable: str, msg: Msg) -> None:
        """Note a durable whose consumer sequence (of its acknowledgement subject) does not
        follow the last one delivered here (:meth:`take_gaps`)."""
        try:
            seq = int(msg.metadata.sequence.consumer)
        except (nats.errors.NotJSMessageError, ValueError, TypeError):
            return
        last = self._last_delivery.get(durable)
        self._last_delivery[durable] = seq
        if last is not None and seq != last + 1 and durable not in self.gaps:
            log.warning("%s: %s delivered consumer sequence %d after %d: messages in between "
                        "never came", self.durable, durable, seq, last)  # fmt: skip
            self.gaps.append(durable)

    def _acknowledge(self, receipts: list[tuple[int, int]]) -> int:
        """One flush for all; receipts of an earlier session are skipped (the server
        delivers those messages again anyway)."""
        generation, unacked = self._generation, self._unacked
        replies = [unacked.pop(r) for g, r in receipts if g == generation and r in unacked]
        if replies and self._loop is not None:
            self._loop.run(self._send(replies, b"+ACK"), self._request_timeout_s)
        return len(replies)

    async def _send(self, replies: list[str], verb: bytes) -> None:
        nc = self._nc
        assert nc is not None
        for reply in replies:
            await nc.publish(reply, verb)

    async def _settle(self) -> None:
        """Hand back what was taken and not acknowledged, and make sure the server has
        read every acknowledgement (a round trip after them)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        replies, self._unacked = list(self._unacked.values()), {}
        replies += [m.reply for m in self._arrived]  # delivered, never taken
        self._arrived = []
        await self._send(replies, b"-NAK")
        await nc.flush(timeout=int(self._request_timeout_s))

    async def _disconnect(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        self._out.clear()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()


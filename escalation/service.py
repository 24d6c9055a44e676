"""``homecare escalate``: alerts from the ALERTS stream → the ladder → the call centre,
families and apps.

One asyncio process. Its input is the durable consumer ``escalate`` of the JetStream
stream ALERTS (:class:`~homecare.jetstream.JetStreamConsumer`): detect stores each alert
it raises there (``alerts.raised.<site>.<elder>.<id>``), and the stream sources apps'
MQTT acknowledgements (``alerts.ack.<site>.<elder>.<id>``). Each alert is parsed once,
on arrival, and goes to the ladder as an object; the loop commits each batch to the
store (:mod:`escalation.store`) before it acknowledges the batch to the stream, so a
kill -9 loses nothing: what was not committed is delivered again by the stream, and
what was committed is resumed from the store. Then:

- due notifications are sent through the channels, many at once, each with its ref;
- the open alert and every transition are published retained (MQTT 3.1.1, QoS 1) on
  the alert's topic on NATS's MQTT listener, where apps and families' app backends
  subscribe, and written to InfluxDB, both from the store's outbox, so neither misses
  one made while it was away;
- acknowledgements arrive from apps on ``homecare/v1/<site>/<elder>/alert/<id>/ack``
  (JSON ``{"contact", "token", "outcome"?}``, through ALERTS) or through the HTTP API
  (:mod:`.api`);
- the registry is re-read when it changes, digests go out once a day, and the call
  centre gets a heartbeat.

With ``--store cluster`` (``HOMECARE_ESCALATE__STORE=cluster``) the state lives in the
cluster (:mod:`escalation.cluster`) and several escalate processes run: the one that
holds the lease is active and does all of the above; the others stand by (no consumer,
no API, no MQTT) and one takes over when the active stops renewing its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from escalation.api import AckServer
from escalation.channels.email import EmailChannel
from escalation.cluster import ClusterState, ClusterStore, Lease, LeaseLost
from escalation.engine import Clock, Escalation
from escalation.ladder import AckResult, EscalationPolicy
from escalation.notification import (
    Channel,
    ChannelKind,
    Delivery,
    DeliveryStatus,
    MessageType,
    Notification,
)
from escalation.registry import RegistryFile
from escalation.store import OPENED, EventRecord, Store, store_path
from homecare.alerts import alert_lines
from homecare.consumer import RawMessage
from homecare.contract import Alert, alert_topic
from homecare.influx import InfluxClient, InfluxError, line
from homecare.jetstream import (
    ACK_SUBJECT_ROOT,
    ALERT_SUBJECT_ROOT,
    ALERTS_STREAM,
    ESCALATE_CONSUMER,
    JetStreamConsumer,
)
from homecare.mqtt_publish import MqttPublisher, MqttPublishError
from homecare.schema import AlertEscalation
from homecare.settings import Settings
from homecare.status import write_status

log = logging.getLogger(__name__)

INTAKE_BATCH = 250
INTAKE_WAIT_S = 0.5
"""How long one take waits for the first message (also bounds the wait at shutdown)."""
OUTBOX_EVERY_S = 0.5


PUBACK_WAIT_S = 10.0
"""How long the outbox waits for the MQTT listener's PUBACKs before it tries again later."""


def ack_topic(site: str, elder: str, alert_id: str) -> str:
    """Where an app acknowledges an alert over MQTT (ALERTS sources it as an ack subject)."""
    return alert_topic(site, elder, alert_id) + "/ack"


class Arrived(NamedTuple):
    """What an ALERTS subject says: an alert raised, or an app's acknowledgement of one."""

    ack: bool
    site: str
    elder: str
    alert_id: str


def arrived(subject: str) -> Arrived:
    """Read an ALERTS subject (as :attr:`RawMessage.topic` has it: the subject as it is).

    NATS writes a ``.`` inside an MQTT topic level as ``//``; a subject outside the two
    schemes is a ``ValueError`` naming it.

    >>> arrived("alerts.raised.north.e1.e1-fall-1767225600")
    Arrived(ack=False, site='north', elder='e1', alert_id='e1-fall-1767225600')
    >>> arrived("alerts.ack.north.e//1.sos-1").elder
    'e.1'
    >>> arrived("alerts.raised.north.e1")
    Traceback (most recent call last):
    ...
    ValueError: not an alert or an acknowledgement: alerts.raised.north.e1
    """
    tokens = subject.split(".")
    root = ".".join(tokens[:2])
    if len(tokens) != 5 or root not in (ALERT_SUBJECT_ROOT, ACK_SUBJECT_ROOT) or "" in tokens:
        raise ValueError(f"not an alert or an acknowledgement: {subject}")
    site, elder, alert_id = (t.replace("//", ".") for t in tokens[2:])
    return Arrived(root == ACK_SUBJECT_ROOT, site, elder, alert_id)


def load_secret(settings: Settings, *, make: bool = True) -> bytes:
    """The key of the contacts' tokens: from the settings, else a file made once in state_dir
    (with ``make`` False, a missing one is a ``FileNotFoundError``: a new key would give
    tokens the running service refuses)."""
    if settings.escalate.secret is not None:
        return settings.escalate.secret.get_secret_value().encode()
    if settings.escalate.store == "cluster":  # active and standby must give the same tokens
        raise ValueError(
            "escalate in cluster mode needs HOMECARE_ESCALATE__SECRET (or "
            "__SECRET_FILE), the same for every escalate process"
        )
    path = settings.state_dir / "escalation.secret"
    if not path.exists() and not make:
        raise FileNotFoundError(
            f"no token key: set HOMECARE_ESCALATE__SECRET (or __SECRET_FILE) as the service "
            f"has it, or run this where the service keeps {path}"
        )
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
        log.warning("no HOMECARE_ESCALATE__SECRET: made a token key in %s", path)
    return path.read_text().strip().encode()


ChannelFactory = Callable[[Settings], dict[ChannelKind, Channel]]


@dataclass(slots=True)
class EscalateStats:
    received: int = 0
    opened: int = 0
    duplicates: int = 0
    cancelled: int = 0
    ignored: int = 0
    """Alerts in a later state never seen open (the stream's history after the store was lost)."""
    malformed: int = 0
    acks: int = 0
    acks_refused: int = 0
    sent_ok: int = 0
    sent_failed: int = 0
    in_doubt: int = 0
    """Deliveries sent again because a try had started before a stop (same ref)."""
    heartbeats: int = 0
    http_port: int = 0
    registry_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__ if k != "extra"}
        return out | self.extra


class EscalateService:
    """The escalation process: MQTT and HTTP in, channels out, the store in between."""

    def __init__(
        self,
        settings: Settings,
        channels: ChannelFactory,
        *,
        clock: Clock = time.time,
        store: Store | None = None,
        lease: Lease | None = None,
    ) -> None:
        """``store``: the cluster's (with its ``lease``); else the SQLite file in state_dir."""
        if settings.registry is None:
            raise ValueError("set HOMECARE_REGISTRY to the registry file (YAML)")
        self.settings = settings
        self.cfg = settings.escalate
        self.registry = RegistryFile(settings.registry)
        self.store = store if store is not None else Store(store_path(settings.state_dir))
        self.lease = lease
        policy = EscalationPolicy(
            secret=load_secret(settings),
            grace_s=settings.detect.grace_s,
            flap_s=self.cfg.flap_s,
            retries={
                ChannelKind.CALL_CENTRE: self.cfg.call_centre,
                ChannelKind.EMAIL: self.cfg.smtp,
                ChannelKind.WEBHOOK: self.cfg.webhook,
            },
        )
        self.engine = Escalation(self.store, lambda: self.registry.current, policy, clock=clock)
        self.make_channels = channels
        self.stats = EscalateStats()
        self.status_path = settings.state_dir / "escalate.json"
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._done: list[tuple[Notification, Delivery]] = []
        self._consumer = JetStreamConsumer.from_settings(
            settings.nats, durable=ESCALATE_CONSUMER, stream=ALERTS_STREAM, source=None
        )
        self._mqtt = MqttPublisher(settings.mqtt, client_id=self.cfg.client_id)
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> EscalateStats:
        api = AckServer(self._acknowledge, self.engine.describe, self._health)
        await api.start(self.cfg.http_host, self.cfg.http_port)
        self.stats.http_port = api.port
        self.engine.policy.ack_base = (
            self.cfg.public_url or f"http://{self.cfg.http_host}:{api.port}"
        )
        async with AsyncExitStack() as stack:
            channels: dict[ChannelKind, Channel] = {}
            for kind, channel in self.make_channels(self.settings).items():
                channels[kind] = await stack.enter_async_context(channel)  # type: ignore[arg-type]
            self._channels = channels
            email = channels.get(ChannelKind.EMAIL)
            if isinstance(self.store, ClusterStore) and isinstance(email, EmailChannel):
                email.on_accepted = self.store.mark_sent
                self._accepted_before(self.store)
            db = stack.enter_context(InfluxClient(self.settings.influx))
            # both at once: a standby that takes over is sending a round trip sooner
            entered = await asyncio.gather(
                asyncio.to_thread(self._mqtt.__enter__),
                asyncio.to_thread(self._consumer.__enter__),
                return_exceptions=True,
            )
            if not isinstance(entered[0], BaseException):
                stack.push_async_callback(asyncio.to_thread, self._mqtt.__exit__, None, None, None)
            if not isinstance(entered[1], BaseException):
                # after the loops stop: settle the acknowledgements sent, then disconnect
                stack.push_async_callback(
                    asyncio.to_thread, self._consumer.__exit__, None, None, None
                )
            for outcome in entered:
                if isinstance(outcome, BaseException):
                    raise outcome
            log.info(
                "escalate subscribed to %s through durable consumer %s at %s; alert states "
                "go to %s; ack API on port %d; %d alerts in the store", ALERTS_STREAM,
                ESCALATE_CONSUMER, self.settings.nats.url, self.settings.mqtt.url, api.port,
                self.store.count_alerts(),
            )  # fmt: skip
            intake = asyncio.create_task(self._intake())
            tasks = [
                intake,
                asyncio.create_task(self._sender()),
                asyncio.create_task(self._outbox(db)),
                asyncio.create_task(self._housekeeping()),
                asyncio.create_task(self._heartbeat()),
            ]
            if self.lease is not None:
                tasks.append(asyncio.create_task(self._fence(self.lease)))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            # intake finishes the batch it holds (committed, then acknowledged) and stops
            self._stopping = True
            await asyncio.wait([intake], timeout=INTAKE_WAIT_S + 15)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._may_send():
                await self._settle()
            await api.close()
            failed = [t for t in tasks if not t.cancelled() and t.exception() is not None]
            if failed:  # a loop died: exit (non-zero), the supervisor restarts us from the store
                raise RuntimeError("escalation loop failed") from failed[0].exception()
        self._write_status()
        self.store.close()
        return self.stats

    async def _intake(self) -> None:
        """Alerts and acknowledgements from ALERTS, committed in batches, then acknowledged;
        each batch's alarms start going out before the next batch is taken in."""
        consumer = self._consumer
        while not self._stopping:
            delivery = await asyncio.to_thread(
                consumer.take, INTAKE_BATCH, INTAKE_WAIT_S, eager=True
            )
            if not delivery.messages:
                continue
            self._take(delivery.messages)
            self._dispatch()  # committed: the alarms may go, and the stream may forget them
            await asyncio.to_thread(consumer.ack, delivery)
            await asyncio.sleep(0)  # the sends start; then the next batch

    def _take(self, messages: list[RawMessage]) -> None:
        """Parse each alert once and hand the objects to the ladder, which commits them."""
        alerts: list[Alert] = []
        for msg in messages:
            try:
                where = arrived(msg.topic)
            except ValueError as exc:
                self.stats.malformed += 1
                log.warning("message refused: %s", exc)
                continue
            if where.ack:
                self._mqtt_ack(msg, where)
                continue
            try:
                alert = Alert.model_validate_json(msg.payload)
            except ValidationError as exc:
                self.stats.malformed += 1
                log.warning("malformed alert on %s refused: %s", msg.topic, str(exc)[:200])
                continue
            if (alert.site, alert.elder, alert.id) != where[1:]:
                self.stats.malformed += 1
                log.warning("alert %s (site %s, elder %s) on %s refused: not its subject",
                            alert.id, alert.site, alert.elder, msg.topic)  # fmt: skip
                continue
            alerts.append(alert)
        if alerts:
            outcomes = self.engine.receive_many(alerts)
            self.stats.received += len(alerts)
            self.stats.opened += outcomes.count("opened")
            self.stats.duplicates += outcomes.count("duplicate")
            self.stats.cancelled += outcomes.count("cancelled")
            self.stats.ignored += outcomes.count("ignored")

    def _mqtt_ack(self, msg: RawMessage, where: Arrived) -> None:
        try:
            data = json.loads(msg.payload)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            fields = {str(k): str(v) for k, v in data.items() if v is not None}
            if not fields.get("contact") or not fields.get("token"):
                raise ValueError("contact and token are required")
        except ValueError as exc:
            self.stats.malformed += 1
            log.warning("malformed acknowledgement on %s refused: %s", msg.topic, exc)
            return
        self._acknowledge(where.alert_id, fields, "mqtt")

    def _acknowledge(self, alert_id: str, fields: dict[str, str], channel: str) -> AckResult:
        result = self.engine.acknowledge(
            alert_id, fields["contact"], fields["token"], channel=channel,
            outcome=fields.get("outcome") or None,
        )  # fmt: skip
        if result.ok:
            self.stats.acks += 1
            log.info("alert %s %s by contact %s over %s", alert_id, result.message,
                     fields["contact"], channel)  # fmt: skip
        elif result.status == 403:
            self.stats.acks_refused += 1
        self._wake.set()
        return result

    def _health(self) -> dict[str, Any]:
        return {"ok": True, "alerts": self.store.count_alerts(), "in_flight": len(self._in_flight)}

    def _accepted_before(self, store: ClusterStore) -> None:
        """Emails the previous active saw accepted (its mark written after the server's
        250) but did not record: delivered, not sent again."""
        done = []
        for ref in sorted(store.sent_marks):
            if store.attempts(ref) is not None:  # still pending in the state
                note = Notification.model_validate_json(store.notification(ref))
                done.append((note, Delivery(ref=ref, status=DeliveryStatus.OK,
                                            detail="accepted before the takeover")))  # fmt: skip
        if done:
            log.info("%d emails accepted by the server before the takeover: recorded as "
                     "delivered, not sent again", len(done))  # fmt: skip
            self.engine.delivered(done)

    def _may_send(self) -> bool:
        """Whether this process may act: always with SQLite; in the cluster, while its
        lease holds (checked before every send, so a process that lost it sends nothing)."""
        return self.lease is None or self.lease.valid()

    async def _fence(self, lease: Lease) -> None:
        """Stop the process the moment the lease is lost: another escalate is active."""
        while not lease.lost.is_set():  # noqa: ASYNC110 (a threading.Event, set on the lease's loop)
            await asyncio.sleep(0.05)
        raise LeaseLost(f"escalate lost its lease: {lease.reason}")

    def _dispatch(self) -> None:
        """Start sending what is due, up to ``concurrency`` deliveries in flight; each is
        recorded as being sent (committed) before it leaves."""
        room = self.cfg.concurrency - len(self._in_flight)
        if room > 0 and self._may_send():
            notes = self.engine.due(room, busy=self._in_flight)
            self.stats.in_doubt += len(self.engine.sending(notes))
            for note in notes:
                self._in_flight.add(note.ref)
                task = asyncio.create_task(self._send(note))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _sender(self) -> None:
        """Run the ladder and send what is due, many at once; record the answers in batches."""
        while True:
            self._wake.clear()
            if self._done:
                done, self._done = self._done, []
                self.engine.delivered(done)
                for note, _ in done:
                    self._in_flight.discard(note.ref)
            self.engine.advance()
            self._dispatch()
            # answers are recorded every 50 ms together (one commit), not one by one
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.05 if self._in_flight else 0.2)

    async def _send(self, note: Notification) -> None:
        channel = self._channels.get(note.recipient.channel)
        if not self._may_send():
            return  # the lease is lost: the process stops; the next active sends it
        if channel is None:
            result = Delivery(ref=note.ref, status=DeliveryStatus.ERROR,
                              detail=f"no {note.recipient.channel} channel configured",
                              final=True)  # fmt: skip
        else:
            try:
                result = await channel.send(note)
            except Exception as exc:  # a channel must not raise; if it does, retry later
                log.exception("channel %s raised on %s", note.recipient.channel, note.ref)
                result = Delivery(ref=note.ref, status=DeliveryStatus.ERROR, detail=str(exc))
        if result.status == DeliveryStatus.OK:
            self.stats.sent_ok += 1
        else:
            self.stats.sent_failed += 1
        if note.recipient.channel == ChannelKind.EMAIL and self._may_send():
            # Email has no idempotency at the receiver: "sent" is committed right after the
            # server's 250 to DATA (the channel answers before QUIT), not batched, so the
            # window in which a stop re-sends an email is one commit long.
            self.engine.delivered([(note, result)])
            self._in_flight.discard(note.ref)
        else:
            self._done.append((note, result))

    async def _settle(self) -> None:
        """On SIGTERM: give deliveries in flight a moment and record their answers."""
        deadline = time.monotonic() + 5
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self._done:
                done, self._done = self._done, []
                self.engine.delivered(done)
                for note, _ in done:
                    self._in_flight.discard(note.ref)

    async def _outbox(self, db: InfluxClient) -> None:
        """Publish each transition retained on the alert's topic; write every event to InfluxDB."""
        deferred = 0
        while True:
            await asyncio.sleep(OUTBOX_EVERY_S)
            if self._in_flight and deferred < 4:  # people first: a burst is being delivered
                deferred += 1
                continue
            deferred = 0
            seen: dict[int, Alert] = {}  # an event's alert, parsed once for both
            await self._publish_events(seen)
            await self._write_events(db, seen)

    async def _publish_events(self, seen: dict[int, Alert]) -> None:
        events = self.store.unpublished()
        if not events or not self._mqtt.connected:  # away: the outbox keeps them for later
            return
        states = []
        for event in events:
            if event.transition or event.event == OPENED:
                alert = seen[event.seq] = event.alert_at()
                states.append((alert_topic(alert.site, alert.elder, alert.id),
                               alert.model_dump_json().encode()))  # fmt: skip
        try:
            await asyncio.to_thread(self._mqtt.publish_all, states, retain=True,
                                    timeout_s=PUBACK_WAIT_S)  # fmt: skip
        except MqttPublishError as exc:
            log.warning("alert states: %s: published again later", exc)
            return  # the broker is away: try again later
        self.store.mark_published(e.seq for e in events)

    async def _write_events(self, db: InfluxClient, seen: dict[int, Alert]) -> None:
        events = self.store.unwritten()
        if not events:
            return
        lines: list[str] = []
        for event in events:
            alert = seen.get(event.seq) or event.alert_at()
            if event.transition:
                lines += alert_lines(alert)
            lines.append(event_line(alert, event))
        try:
            await asyncio.to_thread(db.write, lines)
        except InfluxError as exc:
            log.warning("escalation events not yet in InfluxDB (%d held): %s", len(events), exc)
            return
        self.store.mark_written(e.seq for e in events)

    async def _housekeeping(self) -> None:
        next_digest = 0.0
        while True:
            if self.registry.poll():
                self._wake.set()
            self.stats.registry_error = self.registry.error
            if time.monotonic() >= next_digest:
                next_digest = time.monotonic() + 60
                if self.engine.digests():
                    self._wake.set()
            self._write_status()
            await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        """SCAIP heartbeat: the call centre knows the platform is alive while these arrive."""
        while True:
            now = self.engine.clock()
            reg = self.registry.current
            targets = {reg.provider_for(site).call_centre for site in reg.sites}
            targets.add(reg.provider.call_centre)
            channel = self._channels.get(ChannelKind.CALL_CENTRE)
            for cid in sorted(targets):
                contact = reg.contact(cid)
                if contact is None or channel is None:
                    continue
                for recipient in contact.recipients():
                    note = Notification(
                        ref=f"hb-{cid}-{int(now)}", type=MessageType.HEARTBEAT,
                        recipient=recipient, created=now,
                    )  # fmt: skip
                    result = await channel.send(note)
                    self.stats.heartbeats += result.status == DeliveryStatus.OK
                    if result.status != DeliveryStatus.OK:
                        log.warning("heartbeat to %s: %s", cid, result.status)
            await asyncio.sleep(self.cfg.heartbeat_s)

    def _write_status(self) -> None:
        self.stats.extra = {
            "alerts": self.store.count_alerts(),
            "pending": self.store.count_pending(),
            "registry_reloads": self.registry.reloads,
        }
        write_status(self.status_path, self.stats.as_dict())


def event_line(alert: Alert, event: EventRecord | Mapping[str, Any]) -> str:
    """One ``alert_escalation`` point: the ladder's story (who, which channel, which rung,
    and each delivery's final state: ``delivered_<type>`` or ``failed_<type>``). ``event``:
    from the store's outbox, or its fields by name (a test's fixture week)."""
    row = event if isinstance(event, Mapping) else {k: getattr(event, k) for k in _EVENT_KEYS}
    e = AlertEscalation  # the store's event columns carry the same names as its fields
    site, elder, kind, event_tag, who, channel = e.tags
    tags = f"{site}={alert.site},{elder}={alert.elder},{kind}={alert.kind}"
    tags += f",{event_tag}={row[event_tag]}"
    if row[who]:
        tags += f",{who}={row[who]}"
    if row[channel]:
        tags += f",{channel}={row[channel]}"
    fields = {e.id: alert.id, **{name: row[name] for name in (e.state, e.ref, e.step, e.detail)}}
    return line(e.name, tags, fields, round(row["ts"] * 1000))


_EVENT_KEYS = ("event", "who", "channel", "state", "ref", "step", "detail", "ts")


def run_service(
    settings: Settings, channels: ChannelFactory, stop: threading.Event
) -> EscalateStats:
    """Run until ``stop`` is set (by SIGTERM or SIGINT in the CLI). In cluster mode, stand
    by until this process holds the lease; raise :class:`LeaseLost` if it loses it."""
    store: Store | None = None
    lease: Lease | None = None
    cluster: ClusterState | None = None

    async def main() -> EscalateStats:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)), daemon=True
        ).start()
        if cluster is not None:
            cluster.serve_forget(loop)
        return await EscalateService(settings, channels, store=store, lease=lease).run(done)

    if settings.escalate.store == "sqlite":
        return asyncio.run(main())
    cluster = ClusterState(settings)
    try:
        store = cluster.acquire(stop)
        if store is None:  # stopped while standing by
            return EscalateStats()
        lease = cluster.lease
        try:
            return asyncio.run(main())
        except RuntimeError as exc:
            if lease.lost.is_set():
                raise LeaseLost(f"escalate lost its lease: {lease.reason}") from exc
            raise
    finally:
        cluster.close()

"""The :class:`~homecare.consumer.Consumer` on MQTT 5: batches from a persistent session.

This sits on paho-mqtt 2.x directly rather than aiomqtt: ingest needs ``manual_ack``
(aiomqtt does not expose it) and must not pay an asyncio task switch per message —
measured here, an aiomqtt ``async for`` loop took 48 % of the bare paho rate. paho's
network thread only appends each message to a deque; the service takes batches.

The session is persistent (MQTT 5, ``clean_start=False`` and a session expiry), so
the broker queues QoS 1 messages while a service is down, and ``Receive Maximum``
bounds how many unacknowledged messages the broker sends us: that is the memory
bound and the back-pressure. An acknowledgement is sent only on the connection the
message arrived on; after a reconnect the broker re-sends what was not acknowledged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from typing_extensions import TypeVar

from homecare import contract
from homecare.consumer import (
    AckMode,
    ConsumerError,
    Delivery,
    RawMessage,
    Retained,
    Subscription,
    SubscriptionRefused,
    subscriptions,
)
from homecare.mqtt_batch import BatchClient
from homecare.settings import MqttSettings

__all__ = [
    "RETAIN_HANDLING",
    "SESSION_EXPIRY_S",
    "MqttConsumer",
    "connect_session",
    "mqtt_client",
    "session_properties",
]

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86400
C = TypeVar("C", bound=mqtt.Client, default=mqtt.Client)  # default: PEP 696
RETAIN_HANDLING = {Retained.SKIP: 2, Retained.REPLAY: 1, Retained.AS_PUBLISHED: 2}
"""MQTT 5 Retain Handling: 1, only to a new subscription; 2, never at subscribe time."""


def mqtt_client(
    settings: MqttSettings, client_id: str, *, manual_ack: bool = False,
    client_class: type[C] = mqtt.Client,  # type: ignore[assignment]  # mypy cannot bind C here
) -> C:
    """A paho MQTT 5 client configured from settings (auth, TLS, Nagle off)."""
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)

    def nodelay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = nodelay
    client.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]  # paho says int; any number works
    return client


def session_properties(
    *, expiry_s: int = SESSION_EXPIRY_S, receive_maximum: int | None = None
) -> Properties:
    """CONNECT properties of a persistent session: the broker keeps it (and queues QoS 1
    messages for it) ``expiry_s`` after a disconnect; ``receive_maximum`` bounds what it
    sends unacknowledged."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
    props.SessionExpiryInterval = expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = min(max(receive_maximum, 1), 65535)
    return props


def connect_session(
    client: mqtt.Client, settings: MqttSettings, props: Properties, *, wait_s: float = 30.0
) -> None:
    """Connect (``clean_start=False``) and start paho's thread, retrying for ``wait_s``
    while the broker is not up yet: services may start before it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.connect(
                settings.host, settings.port, settings.keepalive_s, clean_start=False,
                properties=props,
            )  # fmt: skip
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ConsumerError(f"broker {settings.url} unreachable: {exc}") from exc
            time.sleep(0.5)
    client.loop_start()


class MqttConsumer:
    """The :class:`~homecare.consumer.Consumer` (and publisher) on one persistent MQTT session.

    ``topics`` are subscribed to in one SUBSCRIBE at every connect (a detect shard takes
    one filter per site it owns; escalation its alerts and their acknowledgements); the
    default is every device stream. ``shared_group`` spreads them over several processes
    (ingest). ``max_pending`` bounds what is received and not yet acknowledged (MQTT
    Receive Maximum) and what is held before reading pauses. A ``durable`` session
    outlives the process (the broker queues for it while the service is down); otherwise
    it lasts across reconnects and ends on exit (the kit's observer).
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        topics: Sequence[str | Subscription] = (contract.subscription(),),
        shared_group: str | None = None,
        max_pending: int = 20000,
        ack: AckMode = AckMode.MANUAL,
        durable: bool = True,
        session_expiry_s: int = SESSION_EXPIRY_S,
        reconnect_s: tuple[float, float] = (0.2, 5.0),
        connect_wait_s: float = 30.0,
    ) -> None:
        self.settings = settings
        subs = subscriptions(topics)
        if shared_group and any(s.retained is Retained.REPLAY for s in subs):
            raise ValueError("a shared subscription gets no retained state: use Retained.SKIP")
        prefix = f"$share/{shared_group}/" if shared_group else ""
        self.subscriptions = tuple(Subscription(prefix + s.filter, s.retained, s.own) for s in subs)
        self.client_id = client_id
        self.ack_mode = ack
        self.durable = durable
        self.reconnects = 0
        self._drop_retained = all(s.retained is Retained.SKIP for s in subs)
        self._buffer: deque[tuple[RawMessage, int, int]] = deque()
        self._ready = threading.Event()
        self._wake_at = 1
        self._full = threading.Event()
        self._connected = threading.Event()
        self._closed = False
        self._generation = 0
        self._refused: str | None = None
        self._subscription_refused = False
        self._connect_wait_s = connect_wait_s
        self._client = mqtt_client(settings, client_id, manual_ack=True, client_class=BatchClient)
        self._client.reconnect_delay_set(*reconnect_s)  # type: ignore[arg-type]  # as above
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_raw_publish = self._on_publish
        self._client.on_message = self._on_message
        self._props = session_properties(expiry_s=session_expiry_s, receive_maximum=max_pending)
        self._max_buffer = max_pending
        """Messages held before reading pauses: the memory bound. The broker stops there
        for QoS 1 (Receive Maximum), not for QoS 0."""

    # paho callbacks, on its network thread -------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        if rc.is_failure:
            log.error("broker refused %s: %s", self.client_id, rc)
            self._refused = str(rc)
            self._ready.set()
            return
        self._refused = None
        self._generation += 1
        self.reconnects += self._generation > 1
        # Retained state is not replayed at each subscribe (SKIP): it is state we stored
        # when it was live, and acknowledging it out of order makes Mosquitto search its
        # whole in-flight list for each acknowledgement (88 % of its CPU, measured with perf).
        client.subscribe([
            (s.filter, SubscribeOptions(
                qos=1, noLocal=not s.own, retainAsPublished=s.retained is Retained.AS_PUBLISHED,
                retainHandling=RETAIN_HANDLING[s.retained]))
            for s in self.subscriptions
        ])  # fmt: skip
        self._connected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any = None
    ) -> None:
        refused = [
            f"{s.filter}: {rc}"
            for s, rc in zip(self.subscriptions, codes, strict=False)
            if rc.is_failure
        ]
        if refused:
            log.error("broker refused %s the subscriptions %s", self.client_id, refused)
            self._refused = "subscription refused: " + "; ".join(refused)
            self._subscription_refused = True
        self._ready.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()

    def _on_publish(self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        if retain and self._drop_retained:
            # Retained state was stored when it was live; a new subscription replays it.
            if qos:
                self._client.ack_many((mid,))
            return
        raw = RawMessage(topic.decode("utf-8", "replace"), payload, time.time(), retain, qos)
        self._buffer.append((raw, self._generation, mid if qos else 0))
        if len(self._buffer) >= self._wake_at:
            self._full.set()
            if len(self._buffer) >= self._max_buffer and self._ready.is_set():
                # (not before our SUBACK is in: it may queue behind a backlog)
                self._client.pause_reading()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """A PUBLISH with properties, which BatchClient leaves to paho."""
        self._on_publish(bytes(msg._topic), bytes(msg.payload), msg.mid, msg.qos, msg.retain)

    # the Consumer ----------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._closed = False
        connect_session(self._client, self.settings, self._props, wait_s=self._connect_wait_s)
        if not self._ready.wait(self._connect_wait_s) or self._refused:
            self._client.disconnect()  # a refused subscription leaves the connection open
            self._client.loop_stop()
            if self._subscription_refused:
                raise SubscriptionRefused(f"broker {self.settings.url} refused us: {self._refused}")
            if self._refused:
                raise ConsumerError(f"broker {self.settings.url} refused us: {self._refused}")
            raise ConsumerError(f"no subscription to {self.topic} on {self.settings.url}")
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        self._full.set()  # a take waiting in another thread returns now
        if self.connected and not self._client.settle():
            log.warning("%s: the broker did not confirm our last acknowledgements", self.client_id)
        if self.durable:
            self._client.disconnect()
        else:  # end the session: the broker queues nothing more for us
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]  # paho
            props.SessionExpiryInterval = 0
            self._client.disconnect(properties=props)
        self._client.loop_stop()

    def take(self, max_messages: int, timeout_s: float, *, eager: bool = False) -> Delivery:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for a full batch
        (with ``eager``, for the first message); none once the consumer is closed."""
        self._wake_at = 1 if eager else max_messages
        if len(self._buffer) < self._wake_at and not self._closed:
            self._full.wait(timeout_s)
        self._full.clear()
        delivery = Delivery()
        if self._closed:
            return delivery
        messages, receipts = delivery.messages, delivery.receipts
        pop = self._buffer.popleft
        for _ in range(min(max_messages, len(self._buffer))):
            raw, generation, mid = pop()
            messages.append(raw)
            if mid:
                receipts.append((generation, mid))
        if len(self._buffer) < self._max_buffer:
            self._client.resume_reading()
        if self.ack_mode is AckMode.ON_TAKE:
            self._acknowledge(receipts)
        return delivery

    def ack(self, delivery: Delivery) -> int:
        """Acknowledge a handled delivery; return how many acknowledgements were sent."""
        if self.ack_mode is AckMode.ON_TAKE:
            return 0  # acknowledged when it was taken
        return self._acknowledge(delivery.receipts)

    def _acknowledge(self, receipts: list[tuple[int, int]]) -> int:
        """One write for all; only those of this connection (the broker re-sends the rest)."""
        generation = self._generation
        mids = [mid for gen, mid in receipts if gen == generation]
        self._client.ack_many(mids)
        return len(mids)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 on the same connection (alerts, escalation transitions)."""
        return self._client.publish(topic, payload, qos=1, retain=retain)

    @property
    def topic(self) -> str:
        """The filters subscribed to, for logs and errors."""
        return ", ".join(s.filter for s in self.subscriptions)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

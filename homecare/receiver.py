"""Receive MQTT in batches and acknowledge only what was handled (ingest, detect).

This sits on paho-mqtt 2.x directly rather than aiomqtt: ingest needs ``manual_ack``
(aiomqtt does not expose it) and must not pay an asyncio task switch per message —
measured here, an aiomqtt ``async for`` loop took 48 % of the bare paho rate. paho's
network thread only appends each message to a deque; the service takes batches.

The session is persistent (MQTT 5, ``clean_start=False`` and a session expiry), so
the broker queues QoS 1 messages while ingest is down, and ``Receive Maximum``
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
from dataclasses import dataclass, field
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
from homecare.edge import RawMessage
from homecare.errors import BrokerError
from homecare.mqtt_batch import BatchClient
from homecare.settings import MqttSettings

__all__ = [
    "SESSION_EXPIRY_S",
    "Delivery",
    "Receiver",
    "ReceiverError",
    "connect_session",
    "mqtt_client",
    "session_properties",
]

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86400
C = TypeVar("C", bound=mqtt.Client, default=mqtt.Client)  # default: PEP 696


class ReceiverError(BrokerError):
    """The broker could not be reached or refused us."""


@dataclass(slots=True)
class Delivery:
    """A batch of messages and what acknowledging them takes."""

    messages: list[RawMessage] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    """(generation, mid) of each QoS 1 message, in arrival order."""


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
    client.reconnect_delay_set(0.2, 5)
    return client


def session_properties(
    *, expiry_s: int = SESSION_EXPIRY_S, receive_maximum: int | None = None
) -> Properties:
    """CONNECT properties of a persistent session: the broker keeps it (and queues QoS 1
    messages for it) ``expiry_s`` after a disconnect; ``receive_maximum`` bounds what it
    sends unacknowledged."""
    props = Properties(PacketTypes.CONNECT)
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
                raise ReceiverError(f"broker {settings.url} unreachable: {exc}") from exc
            time.sleep(0.5)
    client.loop_start()


class Receiver:
    """Subscribe to device streams; hand out batches; acknowledge them after storage.

    ``topics`` are the filters subscribed to, all in one SUBSCRIBE (a detect shard takes
    one per site it owns); the default is every device stream.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        topics: Sequence[str] = (contract.subscription(),),
        shared_group: str | None = None,
        receive_maximum: int = 20000,
    ) -> None:
        self.settings = settings
        if isinstance(topics, str) or not topics:
            raise ValueError(f"topics must be a non-empty list of filters, not {topics!r}")
        prefix = f"$share/{shared_group}/" if shared_group else ""
        self.topics = tuple(prefix + t for t in topics)
        self._buffer: deque[tuple[RawMessage, int, int, int]] = deque()
        self._ready = threading.Event()
        self._batch_size = 1
        self._full = threading.Event()
        self._connected = threading.Event()
        self._generation = 0
        self.reconnects = 0
        self._refused: str | None = None
        self.client_id = client_id
        self._client = mqtt_client(settings, client_id, manual_ack=True, client_class=BatchClient)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_raw_publish = self._on_publish
        self._client.on_message = self._on_message
        self._props = session_properties(receive_maximum=receive_maximum)
        self._max_buffer = receive_maximum
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
        # retainHandling 2: no retained replay at each subscribe. It is state we stored when
        # it was live, and acknowledging it out of order makes Mosquitto search its whole
        # in-flight list for each acknowledgement (88 % of its CPU, measured with perf).
        client.subscribe([(t, SubscribeOptions(qos=1, retainHandling=2)) for t in self.topics])
        self._connected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any = None
    ) -> None:
        refused = [f"{t}: {rc}" for t, rc in zip(self.topics, codes, strict=False) if rc.is_failure]
        if refused:
            log.error("broker refused %s the subscriptions %s", self.client_id, refused)
            self._refused = "subscription refused: " + "; ".join(refused)
        self._ready.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()

    def _on_publish(self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        if retain:
            # Retained state was stored when it was live; a new subscription replays it.
            if qos:
                self._client.ack_many((mid,))
            return
        raw = RawMessage(topic.decode("utf-8", "replace"), payload, time.time())
        self._buffer.append((raw, self._generation, mid, qos))
        if len(self._buffer) >= self._batch_size:
            self._full.set()
            if len(self._buffer) >= self._max_buffer and self._ready.is_set():
                # (not before our SUBACK is in: it may queue behind a backlog)
                self._client.pause_reading()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """A PUBLISH with properties, which BatchClient leaves to paho."""
        self._on_publish(msg._topic, msg.payload, msg.mid, msg.qos, msg.retain)

    # used by the service -----------------------------------------------------------------
    def __enter__(self) -> Self:
        connect_session(self._client, self.settings, self._props)
        if not self._ready.wait(30) or self._refused:
            self._client.disconnect()  # a refused subscription leaves the connection open
            self._client.loop_stop()
            if self._refused:
                raise ReceiverError(f"broker {self.settings.url} refused us: {self._refused}")
            raise ReceiverError(f"no subscription to {self.topic} on {self.settings.url}")
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.connected and not self._client.settle():
            log.warning("%s: the broker did not confirm our last acknowledgements", self.client_id)
        self._client.disconnect()
        self._client.loop_stop()

    def take(self, max_messages: int, timeout_s: float) -> Delivery:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for a full batch."""
        self._batch_size = max_messages
        if len(self._buffer) < max_messages:
            self._full.wait(timeout_s)
        self._full.clear()
        delivery = Delivery()
        pop = self._buffer.popleft
        for _ in range(min(max_messages, len(self._buffer))):
            raw, generation, mid, qos = pop()
            delivery.messages.append(raw)
            if qos:
                delivery.acks.append((generation, mid))
        if len(self._buffer) < self._max_buffer:
            self._client.resume_reading()
        return delivery

    def ack(self, delivery: Delivery) -> int:
        """Acknowledge a stored delivery; return how many acks were sent."""
        generation = self._generation
        mids = [mid for gen, mid in delivery.acks if gen == generation]
        self._client.ack_many(mids)
        return len(mids)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 on the same connection (alerts from the detectors)."""
        return self._client.publish(topic, payload, qos=1, retain=retain)

    @property
    def topic(self) -> str:
        """The filters subscribed to, for logs and errors."""
        return ", ".join(self.topics)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

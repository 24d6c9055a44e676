"""Publish-only MQTT 3.1.1 at QoS 1: how a service shows apps a state as a retained message.

The services read the broker through JetStream (:mod:`homecare.jetstream`); apps and
families' app backends speak MQTT 3.1.1 to NATS's MQTT listener (no MQTT 5 there).
Escalation keeps each alert's latest state retained on the alert's topic with this
client: paho's public API only, a clean session (what was not acknowledged is published
again by the caller, from its own store), and a PUBACK per message, which NATS sends
once the message is stored.

A publish made while the connection is down (its loss not yet seen by the caller) is
kept by paho and sent on the next connection, but paho's handle of it only ever answers
"failed" (``MQTT_ERR_NO_CONN``); so PUBACKs are counted by message id in ``on_publish``,
paho's documented way, and a :class:`Sent` says whether its own came.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from homecare.errors import BrokerError
from homecare.settings import MqttSettings

__all__ = ["MAX_INFLIGHT", "MqttPublishError", "MqttPublisher", "Sent"]

log = logging.getLogger(__name__)

MAX_INFLIGHT = 1000
"""QoS 1 publishes out unacknowledged at once (paho queues the rest): a burst of alerts."""


class MqttPublishError(BrokerError):
    """The MQTT listener could not be reached, or did not acknowledge in time."""


@dataclass(frozen=True, slots=True)
class Sent:
    """One publish: its message id, and how many PUBACKs had come before it was made (a
    PUBACK for this id counted from then on is its own: paho does not reuse the id of a
    message still waiting for one)."""

    mid: int
    after: int


class MqttPublisher:
    """One MQTT 3.1.1 connection that publishes at QoS 1 and reconnects on its own: to the
    next listener of ``settings.url`` when it lists several (a cluster's nodes: the node it
    was on may be the one lost), else to the same.

    A context manager: entering connects (retried for ``connect_wait_s`` while the
    broker is not up yet: services may start before it), leaving disconnects.
    :meth:`publish` returns a :class:`Sent`, which :meth:`acknowledged` answers once its
    PUBACK came; :meth:`publish_all` waits for them all.
    """

    def __init__(
        self, settings: MqttSettings, *, client_id: str, connect_wait_s: float = 30.0
    ) -> None:
        if not settings.url:
            raise MqttPublishError("no MQTT listener: set HOMECARE_MQTT__URL (mqtt://host:1883)")
        self.settings = settings
        self.client_id = client_id
        self._connect_wait_s = connect_wait_s
        self._listeners = settings.listeners
        self._at = 0
        """The listener it is on, or tries next."""
        self._closing = False
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._pubacks = 0
        """PUBACKs received so far."""
        self._puback_of: dict[int, int] = {}
        """Message id → the count at its latest PUBACK."""
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
            clean_session=True,
        )  # fmt: skip
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        if settings.tls:
            self._client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._move
        self._client.on_socket_open = _nodelay

    def __enter__(self) -> Self:
        deadline = time.monotonic() + self._connect_wait_s
        while True:
            host, port = self._listeners[self._at]
            try:
                self._client.connect(host, port, self.settings.keepalive_s)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise MqttPublishError(
                        f"MQTT listener {self.settings.url} unreachable for {self.client_id}: {exc}"
                    ) from exc
                self._at = (self._at + 1) % len(self._listeners)
                time.sleep(0.5)
        self._client.loop_start()
        if not self._connected.wait(max(deadline - time.monotonic(), 5.0)):
            self._client.loop_stop()
            raise MqttPublishError(
                f"MQTT listener {self.settings.url} did not accept {self.client_id}"
            )
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> Sent:
        """Queue one QoS 1 publish (sent now, or on the next connection)."""
        with self._lock:
            after = self._pubacks
        return Sent(self._client.publish(topic, payload, qos=1, retain=retain).mid, after)

    def acknowledged(self, sent: Sent) -> bool:
        """Whether the broker acknowledged this publish (PUBACK)."""
        with self._lock:
            return self._puback_of.get(sent.mid, -1) >= sent.after

    def publish_all(
        self, messages: Sequence[tuple[str, bytes]], *, retain: bool = False, timeout_s: float = 10
    ) -> None:
        """Publish once connected, and wait for every PUBACK; :class:`MqttPublishError` if
        not all came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        if not self._connected.wait(timeout_s):
            raise MqttPublishError(f"{self.settings.url}: not connected within {timeout_s} s")
        sent = [self.publish(topic, payload, retain=retain) for topic, payload in messages]
        while not all(self.acknowledged(s) for s in sent):
            if time.monotonic() > deadline:
                missing = sum(not self.acknowledged(s) for s in sent)
                raise MqttPublishError(
                    f"{self.settings.url}: {missing} of {len(sent)} publishes not acknowledged "
                    f"within {timeout_s} s"
                )
            time.sleep(0.01)

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("%s: MQTT listener %s refused us: %s", self.client_id, self.settings.url,
                      reason)  # fmt: skip
            return
        self._connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._lock:
            self._puback_of[mid] = self._pubacks
            self._pubacks += 1

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self._connected.is_set():
            log.info("%s: disconnected from %s (%s)", self.client_id, self.settings.url, reason)
        self._connected.clear()
        self._move()

    def _move(self, *_args: Any) -> None:
        """Its listener is lost or refused: the client's next reconnect goes to the next one
        (paho reconnects to the host of the last connect)."""
        if self._closing or len(self._listeners) < 2:
            return
        self._at = (self._at + 1) % len(self._listeners)
        host, port = self._listeners[self._at]
        log.info("%s: reconnecting to MQTT listener %s:%d", self.client_id, host, port)
        self._client.connect_async(host, port, self.settings.keepalive_s)


def _nodelay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
    """Nagle off: a retained state goes out at once, not with the next one."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

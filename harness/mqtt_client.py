"""MQTT 3.1.1 as a device or an app speaks it to NATS Server's MQTT listener (paho's public API).

For the certification kit's observer, the demo's alert listener and the tests: the
clients that must see the broker the way devices and apps do. NATS speaks MQTT 3.1.1
only, so there is no retain-as-published: a live message always arrives with the
retain flag off, and one that arrives with it on is the broker's stored state, sent
because the subscription is new. Whether a publish was retained is asked the way an
app would find out: :func:`retained` subscribes afresh and reads what the broker
holds for the topic.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from homecare.settings import MqttSettings

__all__ = ["RETAINED_WAIT_S", "mqtt_client", "retained"]

RETAINED_WAIT_S = 1.0
"""How long a fresh subscriber waits for the retained messages of a filter: the broker
sends them right after its SUBACK, so a topic with none costs this wait."""


def mqtt_client(settings: MqttSettings, client_id: str, *,
                clean_session: bool = True) -> mqtt.Client:
    """A paho MQTT 3.1.1 client configured from ``settings`` (account, TLS, Nagle off),
    not connected yet."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, clean_session=clean_session)
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)

    def nodelay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = nodelay
    client.reconnect_delay_set(1, 2)
    return client


def retained(settings: MqttSettings, topic_filter: str, *, expect: int | None = None,
             wait_s: float = RETAINED_WAIT_S) -> dict[str, bytes]:
    """What the broker retains under ``topic_filter`` (topic → payload), as a new subscriber
    receives it: up to ``wait_s`` for the messages, less once ``expect`` of them came.

    Raises :class:`ConnectionError` when the broker does not take the subscription."""
    got: dict[str, bytes] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    enough = threading.Event()
    granted: list[int] = []

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.retain:
            return  # live traffic, not the stored state
        with lock:
            got[msg.topic] = bytes(msg.payload)
            if expect is not None and len(got) >= expect:
                enough.set()

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        granted.extend(int(getattr(c, "value", c)) for c in codes)
        subscribed.set()

    client = mqtt_client(settings, f"peek-{time.monotonic_ns()}", clean_session=True)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
    try:
        client.connect(settings.host, settings.port, keepalive=10)
    except OSError as exc:
        raise ConnectionError(f"{settings.url} unreachable: {exc}") from exc
    client.loop_start()
    try:
        if not subscribed.wait(10) or any(code >= 0x80 for code in granted):
            raise ConnectionError(f"{settings.url} did not take a subscription to "
                                  f"{topic_filter!r}")
        enough.wait(wait_s)
        with lock:
            return dict(got)
    finally:
        with contextlib.suppress(OSError):
            client.disconnect()
        client.loop_stop()

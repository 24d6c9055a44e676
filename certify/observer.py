"""Watch one device's traffic as an app does: an MQTT 3.1.1 subscriber to ``#`` at QoS 1.

NATS Server's MQTT listener speaks MQTT 3.1.1 only, so the kit observes with what a
device or an app has (paho's public API, :mod:`harness.mqtt_client`), never with the
services' JetStream consumers: TELEMETRY holds only QoS 1 publishes on contract topics,
and the kit must also see a device publishing at QoS 0 or on a wrong topic to judge it.

The observer subscribes to everything (``#``) and keeps each message that names the
device, in its topic or in its payload's ``device`` field. The subscription asks for
QoS 1 (a message arrives at the QoS it was published with, so QoS 0 shows). The session
is persistent, so what the device re-sends after a broker outage reaches the kit even
if the device reconnects first; it is ended when the kit stops.

MQTT 3.1.1 has no retain-as-published: live messages arrive with the retain flag off,
and one flagged retained is the broker's stored state replayed because the subscription
is new (old state, not the device's behaviour now: dropped). Whether a device retained
its ``availability`` is asked as an app would find out: right after the message, a fresh
subscriber reads what the broker retains for that topic (:func:`~harness.mqtt_client.retained`);
the message counts as retained when the broker holds exactly it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from harness.mqtt_client import mqtt_client, retained
from homecare.contract import Stream
from homecare.errors import BrokerError
from homecare.settings import MqttSettings

KEEPALIVE_S = 10
"""Short, so a broker outage is noticed (and the session resumed) within seconds."""
WATCH_WAIT_S = 0.2
RETAINED_TRIES = 3
RETAINED_WAIT_S = 0.5
"""Per try: the broker stores a retained publish before it forwards it, so the first
try nearly always answers; the others cover a broker that is slower to store."""


class ObserverError(BrokerError):
    """The kit could not subscribe to the broker."""


@dataclass(frozen=True, slots=True)
class Observed:
    """One message of the device as the kit received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    """Whether the broker retained it (for ``availability``; other streams: False)."""
    received: float

    @property
    def stream(self) -> str:
        """The topic's last level: the stream it claims to be."""
        return self.topic.rsplit("/", 1)[-1]


def names_device(topic: str, payload: bytes, device: str) -> bool:
    """Whether a message belongs to ``device``: a topic level, or the payload's ``device``.

    >>> names_device("homecare/v1/s/e1/bed/b1/reading", b"{}", "b1")
    True
    >>> names_device("x/y", b'{"device": "b1"}', "b1"), names_device("x/b12", b"{}", "b1")
    (True, False)
    """
    if device in topic.split("/"):
        return True
    if device.encode() not in payload:
        return False
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("device") == device


class Observer:
    """Every message of one device, in arrival order; wait for one that matters.

    paho's network thread hands each message (acknowledged as it is received: the kit
    stores nothing, it only looks) to an inbox; a watcher thread keeps what names the
    device, asks the broker whether each ``availability`` was retained, and wakes
    :meth:`wait`."""

    def __init__(self, settings: MqttSettings, device: str, *, client_id: str) -> None:
        self.settings = settings
        self.device = device
        self.messages: list[Observed] = []
        self.reconnects = 0
        self._cond = threading.Condition()
        self._inbox: deque[tuple[str, bytes, int, float]] = deque()
        """Received, not yet looked at by the watcher (under :attr:`_cond`)."""
        self._probing: float | None = None
        """The receive time of the message the watcher is asking about (retained?)."""
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._client_id = client_id
        self._client: mqtt.Client | None = None
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._connects = 0

    def start(self, timeout_s: float = 30.0) -> None:
        client = self._client = mqtt_client(self.settings, self._client_id, clean_session=False)
        client.reconnect_delay_set(1, 1)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.connect(self.settings.host, self.settings.port, keepalive=KEEPALIVE_S)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise ObserverError(f"cannot watch {self.settings.url}: {exc}") from exc
                time.sleep(0.2)
        client.loop_start()
        if not self._subscribed.wait(max(0.0, deadline - time.monotonic())) or self._refused:
            self._end(client)
            why = self._refused or "no answer to the subscription"
            if why.startswith("connection refused"):
                raise ObserverError(f"{self.settings.url} refused the kit ({why}): check "
                                    "HOMECARE_MQTT__USERNAME and HOMECARE_MQTT__PASSWORD")
            raise ObserverError(f"{self.settings.url} refused the kit's subscription to '#' "
                                f"({why}): give the kit's user read access to all topics, "
                                "or run the kit's own broker")
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch, name="certify-observer",
                                         daemon=True)
        self._watcher.start()

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any,
                    _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = f"connection refused: {reason}"
            self._subscribed.set()
            return
        self._connects += 1
        self.reconnects = self._connects - 1
        if not flags.session_present:  # a resumed session keeps its subscription
            client.subscribe("#", qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(int(getattr(code, "value", code)) >= 0x80 for code in codes):
            self._refused = "SUBACK failure"
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return  # stored state replayed to a new subscription: not the device now
        with self._cond:
            self._inbox.append((msg.topic, bytes(msg.payload), msg.qos, time.time()))
            self._cond.notify_all()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                if not self._inbox:
                    self._cond.wait(WATCH_WAIT_S)
                    continue
                topic, payload, qos, received = self._inbox.popleft()
                self._probing = received
            kept = False
            mine = names_device(topic, payload, self.device)
            if mine and topic.rsplit("/", 1)[-1] == Stream.AVAILABILITY:
                kept = self._was_retained(topic, payload)
            with self._cond:
                if mine:
                    self.messages.append(Observed(topic, payload, qos, kept, received))
                self._probing = None
                self._cond.notify_all()

    def _behind(self, until: float) -> bool:
        """Whether a message received by ``until`` is still being looked at (under _cond)."""
        if self._probing is not None and self._probing <= until:
            return True
        return bool(self._inbox) and self._inbox[0][3] <= until

    def _was_retained(self, topic: str, payload: bytes) -> bool:
        """Whether the broker now retains exactly this ``payload`` on ``topic``."""
        for _ in range(RETAINED_TRIES):
            try:
                held = retained(self.settings, topic, expect=1, wait_s=RETAINED_WAIT_S)
            except ConnectionError:
                return False  # the broker went away: it retains nothing the kit can see
            if held.get(topic) == payload:
                return True
        return False

    def stop(self) -> None:
        """Disconnect and end the session, so the broker queues nothing more for the kit."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(WATCH_WAIT_S + RETAINED_TRIES * (RETAINED_WAIT_S + 10))
        if self._client is not None:
            self._end(self._client)

    def _end(self, client: mqtt.Client) -> None:
        with contextlib.suppress(OSError):
            client.disconnect()
        client.loop_stop()
        # MQTT 3.1.1 ends a persistent session by connecting once with a clean session.
        cleaner = mqtt_client(self.settings, self._client_id, clean_session=True)
        accepted = threading.Event()
        cleaner.on_connect = lambda *_a: accepted.set()
        with contextlib.suppress(OSError):
            cleaner.connect(self.settings.host, self.settings.port, keepalive=KEEPALIVE_S)
            cleaner.loop_start()
            accepted.wait(5)
            cleaner.disconnect()
        cleaner.loop_stop()

    def snapshot(self) -> list[Observed]:
        with self._cond:
            return list(self.messages)

    def wait(self, match: Callable[[Observed], bool], *, since: float,
             timeout_s: float) -> Observed | None:
        """The first message received after ``since`` that ``match``es, or None at timeout.

        A message received in time counts even when the watcher is still asking the broker
        about it (whether it was retained) as the time runs out."""
        deadline = time.monotonic() + timeout_s
        until = time.time() + timeout_s
        start = 0
        with self._cond:
            while True:
                for k in range(start, len(self.messages)):
                    seen = self.messages[k]
                    if seen.received >= since and match(seen):
                        return seen
                start = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    if not self._behind(until):
                        return None
                    left = WATCH_WAIT_S
                self._cond.wait(left)

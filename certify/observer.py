"""Watch one device's traffic as a real MQTT subscriber does: paho, MQTT 5, QoS 1.

The observer subscribes to everything (``#``) and keeps each message that names the
device, in its topic or in its payload's ``device`` field, so a device publishing on
a wrong topic is still seen and judged. The subscription asks for QoS 1 (a message
arrives at the QoS it was published with, so QoS 0 shows), retain-as-published (so a
live ``availability`` shows whether it was retained) and no retained replay at
subscribe time (old state would not be the device's behaviour now). The session is
persistent, so what the device re-sends after a broker outage reaches the kit even if
the device reconnects first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from homecare.errors import BrokerError
from homecare.receiver import mqtt_client, session_properties
from homecare.settings import MqttSettings

SESSION_EXPIRY_S = 3600


class ObserverError(BrokerError):
    """The kit could not subscribe to the broker."""


@dataclass(frozen=True, slots=True)
class Observed:
    """One message of the device as the kit received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
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
    """Every message of one device, in arrival order; wait for one that matters."""

    def __init__(self, settings: MqttSettings, device: str, *, client_id: str) -> None:
        self.settings = settings
        self.device = device
        self.messages: list[Observed] = []
        self.reconnects = 0
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._connects = 0
        self._client = mqtt_client(settings, client_id)
        self._client.reconnect_delay_set(0.1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._refused: str | None = None
        self._client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        self._connects += 1
        self.reconnects = self._connects - 1
        if not flags.session_present:
            options = SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=2)
            client.subscribe("#", options=options)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[Any],
                      _p: Any) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        self._refused = ", ".join(refused) or None
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg._topic.decode("utf-8", "replace")
        if not names_device(topic, msg.payload, self.device):
            return
        seen = Observed(topic, bytes(msg.payload), msg.qos, bool(msg.retain), time.time())
        with self._cond:
            self.messages.append(seen)
            self._cond.notify_all()

    def start(self, timeout_s: float = 30.0) -> None:
        props = session_properties(expiry_s=SESSION_EXPIRY_S)
        try:
            self._client.connect(self.settings.host, self.settings.port, 10,
                                 clean_start=False, properties=props)
        except OSError as exc:
            raise ObserverError(f"cannot connect to {self.settings.url}: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise ObserverError(f"no subscription acknowledged by {self.settings.url} "
                                f"within {timeout_s:.0f} s")
        if self._refused:
            self.stop()
            raise ObserverError(f"{self.settings.url} refused the kit's subscription to '#' "
                                f"({self._refused}): give the kit's user read access to all "
                                "topics, or run the kit's own broker")

    def stop(self) -> None:
        """Disconnect and end the session, so the broker queues nothing more for the kit."""
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()

    def snapshot(self) -> list[Observed]:
        with self._cond:
            return list(self.messages)

    def wait(self, match: Callable[[Observed], bool], *, since: float,
             timeout_s: float) -> Observed | None:
        """The first message received after ``since`` that ``match``es, or None at timeout."""
        deadline = time.monotonic() + timeout_s
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
                    return None
                self._cond.wait(left)

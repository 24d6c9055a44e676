"""Watch one device's traffic as a real MQTT subscriber does: MQTT 5, QoS 1, the core's consumer.

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

import orjson

from homecare.consumer import AckMode, ConsumerError, Retained, Subscription, SubscriptionRefused
from homecare.errors import BrokerError
from homecare.receiver import MqttConsumer
from homecare.settings import MqttSettings

SESSION_EXPIRY_S = 3600
KEEPALIVE_S = 10
"""Short, so a broker outage is noticed (and the session resumed) within seconds."""
WATCH_BATCH = 1000
WATCH_WAIT_S = 0.2
WATCH_PENDING = 65535
"""Everything on the broker passes through the observer's buffer: a generous bound."""


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
    """Every message of one device, in arrival order; wait for one that matters.

    The kit's :class:`~homecare.consumer.Consumer` takes with ``AckMode.ON_TAKE``: it
    watches and stores nothing, so a message is acknowledged as it is taken. A thread
    takes what arrives and keeps what names the device; :meth:`wait` blocks on that."""

    def __init__(self, settings: MqttSettings, device: str, *, client_id: str) -> None:
        self.settings = settings
        self.device = device
        self.messages: list[Observed] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._client_id = client_id
        self._consumer: MqttConsumer | None = None

    @property
    def reconnects(self) -> int:
        return self._consumer.reconnects if self._consumer else 0

    def start(self, timeout_s: float = 30.0) -> None:
        self._consumer = MqttConsumer(
            self.settings.model_copy(update={"keepalive_s": KEEPALIVE_S}),
            client_id=self._client_id,
            topics=[Subscription("#", Retained.AS_PUBLISHED)],
            max_pending=WATCH_PENDING,
            ack=AckMode.ON_TAKE,
            durable=False,  # kept across the outage the kit stages, ended when it stops
            session_expiry_s=SESSION_EXPIRY_S,
            reconnect_s=(0.1, 1.0),
            connect_wait_s=timeout_s,
        )
        try:
            self._consumer.__enter__()
        except SubscriptionRefused as exc:
            raise ObserverError(f"{self.settings.url} refused the kit's subscription to '#' "
                                f"({exc}): give the kit's user read access to all "
                                "topics, or run the kit's own broker") from exc
        except ConsumerError as exc:
            raise ObserverError(f"cannot watch {self.settings.url}: {exc}") from exc
        self._stopping.clear()
        self._watcher = threading.Thread(
            target=self._watch, args=(self._consumer,), name="certify-observer", daemon=True
        )
        self._watcher.start()

    def _watch(self, consumer: MqttConsumer) -> None:
        while not self._stopping.is_set():
            delivery = consumer.take(WATCH_BATCH, WATCH_WAIT_S, eager=True)
            seen = [
                Observed(m.topic, m.payload, m.qos, m.retained, m.received)
                for m in delivery.messages
                if names_device(m.topic, m.payload, self.device)
            ]
            if seen:
                with self._cond:
                    self.messages += seen
                    self._cond.notify_all()

    def stop(self) -> None:
        """Disconnect and end the session, so the broker queues nothing more for the kit."""
        self._stopping.set()
        if self._consumer is not None:
            self._consumer.__exit__(None, None, None)
        if self._watcher is not None:
            self._watcher.join(WATCH_WAIT_S + 5)

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

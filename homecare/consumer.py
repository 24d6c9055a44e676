"""One way to read from the broker: take a batch, acknowledge it once its work is durable.

Ingest, detect, escalate and the certification kit's observer all receive through a
:class:`Consumer`, so the guarantee is one property of the platform rather than of each
service (Telegraf's "tracking metrics", Quix Streams' checkpoint): the source is told a
message was handled only after what it caused is stored — points in InfluxDB or the
spool, alerts published, escalations committed. What was taken and not acknowledged
comes again after a restart. The seam is broker-neutral; :mod:`homecare.receiver`
implements it on MQTT 5 (a persistent session with manual acknowledgement), and a
JetStream pull consumer fits the same shape (durable name, ``fetch``, ``ack``).

A service holds it as a context manager: entering connects and subscribes (or raises
:class:`ConsumerError`), leaving settles — the broker has read every acknowledgement
sent — and disconnects::

    with MqttConsumer(settings.mqtt, client_id="ingest") as source:
        while running:
            delivery = source.take(5000, 0.1)
            store(delivery.messages)
            source.ack(delivery)

A watcher that stores nothing (the kit's observer) takes with ``AckMode.ON_TAKE``:
every message is acknowledged as it is handed out, the same abstraction without the
promise.

>>> Subscription("homecare/v1/+/+/alert/+", retained=Retained.REPLAY, own=False).retained
<Retained.REPLAY: 'replay'>
>>> Delivery().messages
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import NamedTuple, Protocol, Self

from homecare.errors import BrokerError

__all__ = [
    "AckMode",
    "Consumer",
    "ConsumerError",
    "Delivery",
    "Published",
    "Publisher",
    "RawMessage",
    "Retained",
    "Subscription",
    "SubscriptionRefused",
    "subscriptions",
]


class RawMessage(NamedTuple):
    """A message as received, before any validation (:mod:`homecare.edge` judges it)."""

    topic: str
    payload: bytes
    received: float
    """Wall time it reached this process."""
    retained: bool = False
    """The broker's stored state rather than a live message (see :class:`Retained`)."""
    qos: int = 1
    """The delivery guarantee it was published with: 1 (at least once) is the contract's."""
    seq: int = 0
    """Its sequence in the stream it was read from (JetStream); 0 where there is none."""


@dataclass(slots=True)
class Delivery:
    """A batch of messages and what acknowledging them takes.

    ``receipts`` belong to the consumer that made the delivery (on MQTT: the connection
    it arrived on and the packet id of each QoS 1 message); callers hand the whole
    delivery back to :meth:`Consumer.ack` and never look inside."""

    messages: list[RawMessage] = field(default_factory=list)
    receipts: list[tuple[int, int]] = field(default_factory=list)


class AckMode(StrEnum):
    MANUAL = "manual"
    """The caller acknowledges each delivery once its work is durable (every service)."""
    ON_TAKE = "on_take"
    """Acknowledged as it is taken: for a watcher whose work is only to look."""


class Retained(StrEnum):
    """What a subscription does with the broker's retained state (availability, alerts)."""

    SKIP = "skip"
    """None at subscribe time, and a message flagged retained is dropped: it was stored
    when it was live (ingest, detect)."""
    REPLAY = "replay"
    """The retained state once, when the subscription is new (not at each reconnect), and
    flagged ``retained`` (escalation resumes the alerts it has not seen)."""
    AS_PUBLISHED = "as_published"
    """None at subscribe time; a live message keeps the retain flag it was published with
    (the kit judges whether a device retains its availability)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter and how it is delivered."""

    filter: str
    retained: Retained = Retained.SKIP
    own: bool = True
    """Whether messages this client published itself come back (False: MQTT ``noLocal``)."""


def subscriptions(topics: Sequence[str | Subscription]) -> tuple[Subscription, ...]:
    """Plain filters as default subscriptions; a single string is refused (a common slip).

    >>> [s.filter for s in subscriptions(["a/+", Subscription("b/#")])]
    ['a/+', 'b/#']
    >>> subscriptions("a/+")
    Traceback (most recent call last):
    ...
    ValueError: topics must be a non-empty list of filters, not 'a/+'
    """
    if isinstance(topics, str) or not topics:
        raise ValueError(f"topics must be a non-empty list of filters, not {topics!r}")
    return tuple(t if isinstance(t, Subscription) else Subscription(t) for t in topics)


class ConsumerError(BrokerError, RuntimeError):
    """The broker could not be reached or refused us; the message says which broker and why."""


class SubscriptionRefused(ConsumerError):
    """The broker took the connection but refused a subscription (an ACL, a bad filter)."""


class Consumer(Protocol):
    """Batches in, acknowledgements out; connected while entered.

    Not re-entrant. ``take`` and ``ack`` may be called from different threads (ingest
    acknowledges from its writer thread), but ``take`` from one thread at a time."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Settle (the broker has read every acknowledgement sent) and disconnect;
        what was taken and not acknowledged is delivered again to the next session."""

    def take(self, max_messages: int, timeout_s: float, *, eager: bool = False) -> Delivery:
        """Up to ``max_messages``, waiting at most ``timeout_s`` for a full batch, or with
        ``eager`` only for the first message (latency first: escalation, the kit)."""
        ...

    def ack(self, delivery: Delivery) -> int:
        """Tell the broker the delivery was handled; return how many messages that
        acknowledged (those that arrived on an older connection are re-sent anyway)."""
        ...

    @property
    def connected(self) -> bool: ...

    @property
    def pending(self) -> int:
        """Messages received and not yet taken."""
        ...


class Published(Protocol):
    """A message handed to the broker; ``is_published`` once the broker has it."""

    def is_published(self) -> bool: ...


class Publisher(Protocol):
    """Publishing on the consumer's own connection (alerts from detect, transitions from
    escalation), at least once: queued on the connection ahead of the acknowledgement of
    the input that caused it, so the broker reads the one before the other."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> Published: ...

"""One way to read from the broker: take a batch, acknowledge it once its work is durable.

Ingest, detect and escalate all receive through a :class:`Consumer`, so the guarantee is
one property of the platform rather than of each service (Telegraf's "tracking
metrics", Quix Streams' checkpoint): the source is told a message was handled only after
what it caused is stored — points in InfluxDB or the spool, alerts in their stream,
escalations committed. What was taken and not acknowledged comes again after a restart.
:mod:`homecare.jetstream` implements it on a JetStream durable pull consumer.

A service holds it as a context manager: entering connects and binds (or raises
:class:`ConsumerError`), leaving settles — the broker has read every acknowledgement
sent — and disconnects::

    with JetStreamConsumer.from_settings(settings.nats, durable="ingest") as source:
        while running:
            delivery = source.take(5000, 0.1)
            store(delivery.messages)
            source.ack(delivery)

A watcher that stores nothing takes with ``AckMode.ON_TAKE``: every message is
acknowledged as it is handed out, the same abstraction without the promise.

>>> Delivery().messages
[]
"""

from __future__ import annotations

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
    "RawMessage",
]


class RawMessage(NamedTuple):
    """A message as received, before any validation (:mod:`homecare.edge` judges it)."""

    topic: str
    payload: bytes
    received: float
    """Wall time it reached this process."""
    retained: bool = False
    """The broker's stored state rather than a live message (an MQTT retained message)."""
    qos: int = 1
    """The delivery guarantee it was published with: 1 (at least once) is the contract's."""
    seq: int = 0
    """Its sequence in the stream it was read from (JetStream); 0 where there is none."""
    partition: int = -1
    """The TELEMETRY partition it was read from; -1 where there is none."""


@dataclass(slots=True)
class Delivery:
    """A batch of messages and what acknowledging them takes.

    ``receipts`` belong to the consumer that made the delivery (on JetStream: its session
    and each message's acknowledgement subject); callers hand the whole delivery back to
    :meth:`Consumer.ack` and never look inside."""

    messages: list[RawMessage] = field(default_factory=list)
    receipts: list[tuple[int, int]] = field(default_factory=list)


class AckMode(StrEnum):
    MANUAL = "manual"
    """The caller acknowledges each delivery once its work is durable (every service)."""
    ON_TAKE = "on_take"
    """Acknowledged as it is taken: for a watcher whose work is only to look."""


class ConsumerError(BrokerError, RuntimeError):
    """The broker could not be reached or refused us; the message says which broker and why."""


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
        ``eager`` only for the first message (latency first: escalation)."""
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

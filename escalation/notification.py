"""What the escalation ladder hands to a delivery channel, and what the channel answers.

The ladder (which knows the registry, the timers and the state) builds a
:class:`Notification`; a :class:`Channel` (call centre webhook, email, generic webhook)
delivers it and returns a :class:`Delivery`. Channels know nothing of the registry or
of the ladder: everything they need to word a message travels in the notification.

``ref`` is the idempotency key (SCAIP's message reference): the same step of the same
alert to the same recipient always carries the same ``ref``, across retries and
restarts, so a receiver that has seen it never opens a second incident.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from homecare.contract import Alert


class MessageType(StrEnum):
    """SCAIP's message types, plus the family digest and the device-desk batch."""

    ALARM = "alarm"
    RESET = "reset"
    UPDATE = "update"
    HEARTBEAT = "heartbeat"
    DIGEST = "digest"


class ChannelKind(StrEnum):
    CALL_CENTRE = "call_centre"
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryStatus(StrEnum):
    """The receiver's answer (SCAIP-like): only ``ok`` counts as delivered."""

    OK = "ok"
    UNKNOWN_CALLER = "unknown_caller"
    BUSY = "busy"
    ERROR = "error"


class ElderCard(BaseModel):
    """What a responder needs to know about the elder (from the registry)."""

    model_config = ConfigDict(frozen=True)

    id: str
    site: str
    display_name: str
    address: str = Field(description="Address or room, for responders.")
    phone: str | None = Field(None, description="How to reach the elder by voice.")
    timezone: str = "UTC"
    care_level: int = Field(2, ge=1, le=4)
    language: str | None = Field(
        None, description="The site's language: the words for a contact who named none."
    )
    hotline: str | None = Field(
        None, description="The site's hotline (e.g. the elders' services line), told to families."
    )


class Recipient(BaseModel):
    """One contact on one channel."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    role: str = Field(description="family, care_worker, call_centre, supervisor, device_desk")
    channel: ChannelKind
    address: str = Field(description="Email address, or the webhook URL.")
    language: str | None = Field(None, description="The language they read (None: the site's).")


class Notification(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str = Field(description="Idempotency key / SCAIP message reference.")
    type: MessageType
    recipient: Recipient
    elder: ElderCard | None = None
    alert: Alert | None = Field(None, description="The alert (none for heartbeats).")
    batch: tuple[Alert, ...] = Field((), description="Digest or batched info alerts.")
    outcomes: dict[str, str] = Field(
        default_factory=dict, description="Alert id → how it ended (digest), when it has."
    )
    step: int = Field(0, ge=0, description="Rung of the ladder that sent this.")
    ack_url: str | None = Field(None, description="Link that acknowledges (token included).")
    created: float = Field(description="When the ladder decided to send it (Unix s).")


class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str
    status: DeliveryStatus
    detail: str = ""
    attempts: int = 1
    delivered: float | None = Field(None, description="When the receiver said ok (Unix s).")
    final: bool = Field(
        False,
        description="Sending again cannot help (unknown caller, refused, unsendable, no such "
        "channel): the delivery fails for good instead of being tried again later.",
    )
    retry_after: float | None = Field(
        None, description="The receiver asked to wait this long before the next try (s)."
    )
    acknowledged_by: str | None = Field(
        None,
        description="The call centre took responsibility in its answer: its operator's id, "
        "or the recipient's id when it named no operator.",
    )


class Channel(Protocol):
    """A delivery channel: an async context manager that sends notifications."""

    kind: ChannelKind

    async def send(self, notification: Notification) -> Delivery:
        """One try; never raise for a receiver's failure (the ladder's retry policy decides
        whether and when to try again)."""
        ...

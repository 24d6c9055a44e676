"""Delivery channels: the call centre's SCAIP-like webhook, family email, a generic webhook.

Each is an async context manager whose ``send`` delivers one
:class:`~escalation.notification.Notification`, retrying transient failures
with backoff under the same idempotency key, and answers a
:class:`~escalation.notification.Delivery` instead of raising.
"""

from __future__ import annotations

from escalation.channels.callcentre import CallCentreChannel
from escalation.channels.email import EmailChannel
from escalation.channels.webhook import WebhookChannel
from escalation.notification import Channel, ChannelKind
from homecare.settings import Settings

__all__ = [
    "CallCentreChannel",
    "EmailChannel",
    "WebhookChannel",
    "default_channels",
]


def default_channels(settings: Settings) -> dict[ChannelKind, Channel]:
    """Every channel, configured from ``settings.escalate`` (not yet entered)."""
    esc = settings.escalate
    return {
        ChannelKind.CALL_CENTRE: CallCentreChannel(esc.call_centre),
        ChannelKind.EMAIL: EmailChannel(esc.smtp),
        ChannelKind.WEBHOOK: WebhookChannel(esc.webhook),
    }

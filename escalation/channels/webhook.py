"""A generic JSON webhook for SMS and push gateways: the family's short message.

The gateway gets the words (:mod:`escalation.messages`) rather than the
alarm's data: a ``text`` short enough for one SMS where it can be, a ``subject`` and
``body`` for push, the ``ack_url``, and the ``ref`` (also the ``Idempotency-Key``
header), so a retry never texts twice. No evidence, no health values.
"""

from __future__ import annotations

from typing import Any

from escalation.channels.jsonpost import PostingChannel
from escalation.messages import family_message
from escalation.notification import (
    ChannelKind,
    Notification,
)
from homecare.settings import WebhookSettings


def webhook_message(note: Notification) -> dict[str, Any]:
    words = family_message(note)
    message: dict[str, Any] = {
        "ref": note.ref,
        "type": str(note.type),
        "to": {"id": note.recipient.id, "name": note.recipient.name},
        "subject": words.subject,
        "text": words.short,
        "body": words.body,
        "ack_url": note.ack_url,
    }
    if note.alert is not None:
        message["alert"] = {"id": note.alert.id, "severity": str(note.alert.severity),
                            "state": str(note.alert.state)}  # fmt: skip
    return message


class WebhookChannel(PostingChannel):
    """Family messages to an SMS or push gateway (the recipient's address is its URL)."""

    kind = ChannelKind.WEBHOOK

    def __init__(self, settings: WebhookSettings | None = None) -> None:
        self.settings = settings or WebhookSettings()
        super().__init__(self.settings)

    def message(self, note: Notification) -> dict[str, Any]:
        return webhook_message(note)

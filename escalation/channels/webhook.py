"""A generic JSON webhook for SMS and push gateways: the family's short message.

The gateway gets the words (:mod:`escalation.messages`) rather than the
alarm's data, in the reader's ``language``: ``sms``, the alarm in one SMS segment (70
characters in Chinese, 160 in plain English) then "I'm on it" with the link as a second;
``text``, both on one line (push); a ``subject`` and ``body``; the ``ack_url``; and the
``ref`` (also the ``Idempotency-Key``
header), so a retry never texts twice. No evidence, no health values.
"""

from __future__ import annotations

from typing import Any

from escalation.channels.jsonpost import PostingChannel
from escalation.messages import family_message, language_of
from escalation.notification import (
    ChannelKind,
    Notification,
)
from homecare.i18n import translator
from homecare.settings import WebhookSettings


def webhook_message(note: Notification) -> dict[str, Any]:
    words = family_message(note)
    message: dict[str, Any] = {
        "ref": note.ref,
        "type": str(note.type),
        "to": {"id": note.recipient.id, "name": note.recipient.name},
        "language": translator(language_of(note), fallback=True).language,
        "subject": words.subject,
        "text": words.text,
        "sms": [words.short, words.ack] if words.ack else [words.short],
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

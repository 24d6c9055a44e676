"""Family email over SMTP: the standard library's smtplib, run in worker threads.

A family email is rare and small; smtplib needs no new dependency and speaks
STARTTLS, implicit TLS and AUTH. Each send opens its own connection (in a thread, at
most ``connections`` at once), so a hung mail server never blocks the ladder.

Words are in the reader's language (:mod:`escalation.messages`). The message is built
with the standard library's modern policy (``email.policy.default``): a Chinese
subject or name goes out as RFC 2047 encoded words, the body as UTF-8, and
``Content-Language`` says which language it is.

The ``Message-ID`` is derived from the notification's ``ref``: a retry, or a re-send
after a restart or a failover, is the same message, and mail systems drop the duplicate.
The send answers as soon as the server has said 250 to DATA (QUIT follows on its own
thread), so the service commits "sent" at once: a stop re-sends an email only when it
falls between that 250 and the commit (see docs/escalation.md, "Active and standby"). 4xx answers
and lost connections are worth another try (the ladder's retry policy schedules it);
5xx answers (a refused address, bad credentials) are final.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from types import TracebackType
from typing import Self

from escalation.channels.retry import Answer, delivery
from escalation.messages import family_message, language_of
from escalation.notification import (
    ChannelKind,
    Delivery,
    DeliveryStatus,
    Notification,
)
from homecare.i18n import translator
from homecare.settings import SmtpSettings

log = logging.getLogger(__name__)


def email_message(note: Notification, sender: str) -> EmailMessage:
    """The email for one notification; ``ValueError`` if it cannot be written (a header
    with a line break, a heartbeat)."""
    words = family_message(note)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    try:
        msg["To"] = Address(display_name=note.recipient.name, addr_spec=note.recipient.address)
    except (ValueError, IndexError) as exc:  # the parser's errors for a malformed address
        raise ValueError(f"no valid To header for contact {note.recipient.id!r}: {exc}") from exc
    msg["Subject"] = words.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{note.ref}@homecare.invalid>"
    msg["X-Homecare-Ref"] = note.ref
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the platform
    # Not every relay takes 8-bit mail (8BITMIME): words beyond ASCII travel as base64.
    msg.set_content(words.body, cte=None if words.body.isascii() else "base64")
    # after set_content, which clears every Content-* header
    msg["Content-Language"] = translator(language_of(note), fallback=True).language
    return msg


def _smtp_answer(exc: Exception) -> Answer:
    """An SMTP failure as a delivery status: 4xx and lost connections are worth a retry."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        temporary = all(400 <= c < 500 for c in codes)
        status = DeliveryStatus.BUSY if temporary else DeliveryStatus.ERROR
        return Answer(status, f"recipient refused: {codes}", final=not temporary)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        detail = f"SMTP {exc.smtp_code} {text}".strip()
        if 400 <= exc.smtp_code < 500:
            return Answer(DeliveryStatus.BUSY, detail)
        return Answer(DeliveryStatus.ERROR, detail, final=True)
    if isinstance(exc, smtplib.SMTPNotSupportedError | ssl.SSLCertVerificationError):
        return Answer(DeliveryStatus.ERROR, f"{type(exc).__name__}: {exc}", final=True)
    return Answer(DeliveryStatus.ERROR, f"{type(exc).__name__}: {exc}")


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class EmailChannel:
    """Family emails through one SMTP server (``settings.host``)."""

    kind = ChannelKind.EMAIL

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.connections)
        self._tls: ssl.SSLContext | None = None
        self.on_accepted: Callable[[str], None] | None = None
        """Called with the ref in the sending thread as soon as the server said 250 to DATA,
        before anything else: the cluster store records "sent" there (one write), so a
        failover re-sends an email only if it falls between that 250 and that write."""

    async def __aenter__(self) -> Self:
        if self.settings.tls or self.settings.starttls:
            self._tls = self.settings.ssl_context()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def send(self, notification: Notification) -> Delivery:
        if not self.settings.host:
            return Delivery(ref=notification.ref, status=DeliveryStatus.ERROR,
                            detail="no SMTP host configured", final=True)  # fmt: skip
        try:
            msg = email_message(notification, self.settings.sender)
        except ValueError as exc:  # nothing a server could take: no point retrying
            return Delivery(ref=notification.ref, status=DeliveryStatus.ERROR, detail=str(exc),
                            final=True)  # fmt: skip
        return delivery(notification.ref, await self._try(msg, notification.ref))

    async def _try(self, msg: EmailMessage, ref: str) -> Answer:
        async with self._slots:
            try:
                await asyncio.to_thread(self._send_now, msg, ref)
            except (smtplib.SMTPException, OSError) as exc:
                return _smtp_answer(exc)
        return Answer(DeliveryStatus.OK, "accepted")

    def _send_now(self, msg: EmailMessage, ref: str) -> None:
        s = self.settings
        smtp: smtplib.SMTP
        if s.tls:
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=self._tls)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        try:
            if s.starttls:
                smtp.starttls(context=self._tls)
            if s.username and s.password is not None:
                smtp.login(s.username, s.password.get_secret_value())
            smtp.send_message(msg)
        except BaseException:
            smtp.close()
            raise
        if self.on_accepted is not None:
            try:
                self.on_accepted(ref)
            except Exception:  # it is delivered: the answer below still records it
                log.exception("email %s accepted, but recording it at once failed", ref)
        # The server's 250 to DATA is the delivery: answer now, so that "sent" is committed
        # at once; QUIT follows on a thread of its own and its answer changes nothing.
        threading.Thread(target=_quit, args=(smtp,), name="smtp-quit", daemon=True).start()

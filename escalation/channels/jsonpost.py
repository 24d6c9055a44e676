"""JSON over HTTP(S) with an idempotency key: what the call centre and webhook channels share.

One pooled keep-alive client per channel
(:class:`~escalation.channels.transport.LeanClient`); a semaphore admits at
most ``connections`` sends at once, so that many connections per receiver.

The receiver's answer decides what happens next:

==========================================  ==============  ========
answer                                      status          retried
==========================================  ==============  ========
2xx, body ``status`` ok or none             ok              —
body ``status`` unknown_caller (any code)   unknown_caller  never
body ``busy`` (any code), HTTP 429 or 503   busy            yes
2xx with body ``error``, HTTP 408, 5xx      error           yes
timeout, connection refused or reset        error           yes
any other 4xx (401: wrong token), bad URL   error           never
==========================================  ==============  ========

A retry re-sends the same bytes with the same ``Idempotency-Key`` (the notification's
``ref``), after :meth:`RetrySettings.delay`; ``Retry-After`` (seconds) is honoured.
An ok answer's ``ack`` part is handed to the channel's reader, if it has one (only the
call centre's answer may acknowledge).

>>> answer(429, b"", "5").status, answer(200, b'{"status": "unknown_caller"}').final
(<DeliveryStatus.BUSY: 'busy'>, True)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from escalation.channels.retry import DETAIL_MAX, Answer, deliver
from escalation.channels.transport import (
    LeanClient,
    TransportError,
    Unsendable,
    header_block,
)
from escalation.notification import (
    ChannelKind,
    Delivery,
    DeliveryStatus,
    Notification,
)
from homecare.settings import HttpSettings

USER_AGENT = "homecare-escalate/1"

AckReader = Callable[[object], str | None]
"""Reads the ``ack`` part of an ok answer: who took responsibility, or ``None``."""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def answer(
    code: int, body: bytes, retry_after: str | None = None, read_ack: AckReader | None = None
) -> Answer:
    """Read a receiver's response (HTTP code and JSON body) as a delivery status."""
    said: dict[str, object] = {}
    try:
        parsed = json.loads(body) if body.strip() else {}
        said = parsed if isinstance(parsed, dict) else {}
    except (ValueError, UnicodeDecodeError):
        pass
    detail = " ".join(f"{k}={said[k]}" for k in ("incident", "detail") if said.get(k) is not None)
    wait = _retry_after(retry_after)
    try:
        status = DeliveryStatus(str(said["status"])) if "status" in said else None
    except ValueError:
        status = None
    said_matters = status in (DeliveryStatus.UNKNOWN_CALLER, DeliveryStatus.BUSY)
    ok = 200 <= code < 300 and status in (DeliveryStatus.OK, None)
    acked = read_ack(said["ack"]) if ok and read_ack and said.get("ack") is not None else None
    if status is not None and (200 <= code < 300 or said_matters):
        final = status in (DeliveryStatus.OK, DeliveryStatus.UNKNOWN_CALLER)
        return Answer(status, detail[:DETAIL_MAX], final, wait, acked)
    detail = f"HTTP {code}" + (f" {detail}" if detail else "")
    if 200 <= code < 300:
        return Answer(DeliveryStatus.OK, detail[:DETAIL_MAX], True, acknowledged_by=acked)
    if code in (429, 503):
        return Answer(DeliveryStatus.BUSY, detail[:DETAIL_MAX], False, wait)
    retry = code == 408 or code >= 500
    return Answer(DeliveryStatus.ERROR, detail[:DETAIL_MAX], not retry, wait)


class JsonPoster:
    """POST JSON with an idempotency key; retry transient failures; never raise for them."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._client: LeanClient | None = None
        self._slots = asyncio.Semaphore(settings.connections)
        headers = [("User-Agent", USER_AGENT), ("Content-Type", "application/json")]
        if settings.token is not None:
            headers.append(("Authorization", f"Bearer {settings.token.get_secret_value()}"))
        self._headers = header_block(headers)  # a token with a line break fails here, at start

    async def __aenter__(self) -> Self:
        s = self.settings
        self._client = LeanClient(ssl_context=s.ssl_context(), timeout_s=s.timeout_s)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def post(
        self, url: str, ref: str, payload: dict[str, Any], read_ack: AckReader | None = None
    ) -> Delivery:
        """Deliver ``payload`` to ``url``; the same bytes and key on every try."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            headers = self._headers + header_block([("Idempotency-Key", ref)])
        except Unsendable as exc:
            return Delivery(ref=ref, status=DeliveryStatus.ERROR, detail=str(exc), final=True)
        return await deliver(ref, lambda _n: self._try(url, headers, body, read_ack), self.settings)

    async def _try(
        self, url: str, headers: bytes, body: bytes, read_ack: AckReader | None
    ) -> Answer:
        if self._client is None:
            raise RuntimeError("use the channel as an async context manager")
        try:
            async with self._slots:
                response = await self._client.post(url, headers, body)
        except Unsendable as exc:
            return Answer(DeliveryStatus.ERROR, str(exc), final=True)
        except TransportError as exc:
            return Answer(DeliveryStatus.ERROR, str(exc))
        return answer(response.status, response.body, response.headers.get("retry-after"), read_ack)


class PostingChannel:
    """A channel that posts one JSON message per notification to the recipient's URL."""

    kind: ChannelKind

    def __init__(self, settings: HttpSettings) -> None:
        self._poster = JsonPoster(settings)

    def message(self, note: Notification) -> dict[str, Any]:
        raise NotImplementedError

    def acknowledgement(self, note: Notification, ack: object) -> str | None:
        """Who took responsibility, by the answer's ``ack`` part: nobody, unless the
        channel's receiver may acknowledge in its answer."""
        return None

    async def __aenter__(self) -> Self:
        await self._poster.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._poster.__aexit__(et, ev, tb)

    async def send(self, notification: Notification) -> Delivery:
        try:
            message = self.message(notification)
        except ValueError as exc:  # nothing a receiver could take: no point retrying
            return Delivery(ref=notification.ref, status=DeliveryStatus.ERROR, detail=str(exc),
                            final=True)  # fmt: skip
        return await self._poster.post(
            notification.recipient.address, notification.ref, message,
            lambda ack: self.acknowledgement(notification, ack),
        )  # fmt: skip

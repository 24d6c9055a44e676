"""JSON over HTTP(S) with an idempotency key: what the call centre and webhook channels share.

One aiohttp ``ClientSession`` per channel: a keep-alive pool of at most ``connections``
connections (TLS with the platform's CA and, for mutual TLS, our client certificate),
and a semaphore that admits that many sends at once, each bounded by ``timeout_s``
(connect, send and answer; waiting for a connection is not counted). A request that
fails on a kept-alive connection the receiver closed while idle, before any answer, is
sent once more at once on a fresh one: every request carries an idempotency key, so
that is safe.

Each send is one try. The receiver's answer decides whether another try can help (the
ladder's retry policy schedules it, :meth:`~escalation.ladder.EscalationPolicy.after_delivery`):

==========================================  ==============  ==========
answer                                      status          tried again
==========================================  ==============  ==========
2xx, body ``status`` ok or none             ok              —
body ``status`` unknown_caller (any code)   unknown_caller  never
body ``busy`` (any code), HTTP 429 or 503   busy            yes
2xx with body ``error``, HTTP 408, 5xx      error           yes
timeout, connection refused or reset        error           yes
any other 4xx (401: wrong token), bad URL   error           never
==========================================  ==============  ==========

Another try re-sends the same message (its ``sent`` time apart) with the same
``Idempotency-Key`` (the notification's ``ref``), after :meth:`RetrySettings.delay`;
``Retry-After`` (seconds) is honoured.
An ok answer's ``ack`` part is handed to the channel's reader, if it has one (only the
call centre's answer may acknowledge).

>>> answer(429, b"", "5").status, answer(200, b'{"status": "unknown_caller"}').final
(<DeliveryStatus.BUSY: 'busy'>, True)
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from functools import lru_cache
from types import TracebackType
from typing import Any, Self

import aiohttp
from yarl import URL

from escalation.channels.retry import DETAIL_MAX, Answer, delivery
from escalation.notification import (
    ChannelKind,
    Delivery,
    DeliveryStatus,
    Notification,
)
from homecare.errors import DeliveryError
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


_BAD_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Unsendable(DeliveryError, ValueError):
    """Not an http(s) URL, or a header no HTTP peer would take: another try cannot help."""


@lru_cache(maxsize=1024)
def _url(url: str) -> URL:
    """The URL, parsed once (the same few receivers all day); ``Unsendable`` if not one.

    >>> _url("https://arc.example/alarm?x=1").port
    443
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise Unsendable(f"bad URL {url[:100]!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Unsendable(f"not an http(s) URL: {url[:100]!r}")
    return parsed


def _header(name: str, value: str) -> tuple[str, str]:
    if _BAD_HEADER.search(value):
        raise Unsendable(f"header {name} has a control character or line break")
    return name, value


class JsonPoster:
    """POST JSON with an idempotency key, one try per call; never raise for a failure."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.connections)
        headers = [("User-Agent", USER_AGENT), ("Content-Type", "application/json")]
        if settings.token is not None:  # a token with a line break fails here, at start
            headers.append(_header("Authorization", f"Bearer {settings.token.get_secret_value()}"))
        self._headers = dict(headers)

    async def __aenter__(self) -> Self:
        s = self.settings
        connector = aiohttp.TCPConnector(
            limit=s.connections, limit_per_host=s.connections, ssl=s.ssl_context()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            # per try: the semaphore in front of the pool means no wait for a connection
            timeout=aiohttp.ClientTimeout(total=s.timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self, url: str, ref: str, payload: dict[str, Any], read_ack: AckReader | None = None
    ) -> Delivery:
        """Deliver ``payload`` to ``url`` once, under the idempotency key ``ref``."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            target = _url(url)
            headers = dict([_header("Idempotency-Key", ref)])
        except Unsendable as exc:
            return Delivery(ref=ref, status=DeliveryStatus.ERROR, detail=str(exc), final=True)
        return delivery(ref, await self._try(target, headers, body, read_ack))

    async def _try(
        self, url: URL, headers: dict[str, str], body: bytes, read_ack: AckReader | None
    ) -> Answer:
        session = self._session
        if session is None:
            raise RuntimeError("use the channel as an async context manager")
        timeout = self.settings.timeout_s
        async with self._slots:
            for fresh in (False, True):
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        got = await response.read()
                        retry_after = response.headers.get("Retry-After")
                        return answer(response.status, got, retry_after, read_ack)
                except aiohttp.ServerDisconnectedError as exc:
                    if fresh:  # a fresh connection dropped too: the receiver's fault
                        return Answer(DeliveryStatus.ERROR, f"connection lost: {exc}")
                except TimeoutError:
                    return Answer(DeliveryStatus.ERROR, f"no answer within {timeout} s")
                except aiohttp.ClientConnectorError as exc:
                    where = f"{url.host}:{url.port}"
                    return Answer(DeliveryStatus.ERROR, f"cannot connect to {where}: {exc}")
                except aiohttp.ClientResponseError as exc:  # a status line that is not HTTP
                    return Answer(DeliveryStatus.ERROR, f"not an HTTP answer: {exc.message}")
                except aiohttp.InvalidURL as exc:
                    return Answer(DeliveryStatus.ERROR, f"bad URL: {exc}", final=True)
                except (aiohttp.ClientError, OSError) as exc:
                    return Answer(DeliveryStatus.ERROR, f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")


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

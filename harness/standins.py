"""Real local servers standing in for the call centre, a gateway and a mail server.

Tests and ``homecare demo`` need peers that behave like the real ones over real
sockets: :class:`HttpStandIn` is an HTTP/1.1 server (aiohttp's, on an asyncio loop in its
own thread) on a free loopback port, HTTPS when given a certificate, that records every
request and answers as it is told;
:class:`CallCentreStandIn` adds what an alarm receiving centre does — one incident per
message reference, heartbeats, an operator who acknowledges through the alert's
``ack_url`` later or in the answer at once (``ack``); :class:`LocalSmtp` is aiosmtpd
collecting the emails it is sent.

>>> with CallCentreStandIn() as centre:
...     centre.then(Reply(http=500), times=1)
...     first = httpx.post(centre.url, json={"type": "alarm", "ref": "r1"})
...     second = httpx.post(centre.url, json={"type": "alarm", "ref": "r1"})
>>> first.status_code, second.json()["status"], len(centre.requests), len(centre.incidents)
(500, 'ok', 2, 1)
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import httpx
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from escalation.notification import DeliveryStatus, MessageType
from harness.servers import free_port
from homecare.settings import SmtpSettings

ItemT = TypeVar("ItemT")
AnswerT = TypeVar("AnswerT")


class _Peer(Generic[ItemT, AnswerT]):
    """What every stand-in keeps, thread-safe: what it received, and answers queued."""

    _what = "items"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._received: list[ItemT] = []
        self._script: deque[AnswerT] = deque()
        self._checks: list[Callable[[], bool]] = []

    def _until(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Block until ``check()`` holds; woken only then, not at every request (a
        thousand wake-ups per burst would cost the server thread the GIL each time)."""
        with self._cond:
            self._checks.append(check)
            try:
                if not self._cond.wait_for(check, timeout_s):
                    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
            finally:
                self._checks.remove(check)

    def _changed(self) -> None:
        """Something arrived (the lock held): wake the waiters whose condition now holds."""
        if any(check() for check in self._checks):
            self._cond.notify_all()

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _queue(self, answer: AnswerT, times: int) -> None:
        with self._cond:
            self._script.extend([answer] * times)

    def _next_answer(self) -> AnswerT | None:
        with self._cond:
            return self._script.popleft() if self._script else None

    def _record(self, item: ItemT) -> None:
        with self._cond:
            self._received.append(item)
            self._changed()

    def _all(self) -> list[ItemT]:
        with self._cond:
            return list(self._received)

    def wait(self, count: int, timeout_s: float = 30.0) -> list[ItemT]:
        """Block until at least ``count`` arrived; return them all."""
        self._until(lambda: len(self._received) >= count, timeout_s, f"{count} {self._what}")
        return self._all()


@dataclass(frozen=True, slots=True)
class Reply:
    """How the stand-in answers one request: the body's status (``None``: no body status),
    the HTTP code, a delay first (longer than the client's timeout: a timeout)."""

    status: DeliveryStatus | None = DeliveryStatus.OK
    http: int = 200
    delay_s: float = 0.0
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived (``received``: Unix s, when its body was read;
    ``json``: the body parsed, ``None`` if it is not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received: float
    reply: Reply
    json: Any = None

    @staticmethod
    def parse(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def ref(self) -> str | None:
        data = self.json
        ref = data.get("ref") if isinstance(data, dict) else None
        return self.headers.get("idempotency-key") or (str(ref) if ref is not None else None)


class HttpStandIn(_Peer[Received, Reply]):
    """A real HTTP(S) server on loopback that records requests and answers as scripted.

    ``then(Reply(http=500), times=3)`` queues answers for the next requests; after them
    ``default`` applies. ``stop()`` ends every connection; ``start()`` again listens on
    the same port (a receiver's restart), keeping what was recorded. ``token``: requests
    without ``Authorization: Bearer <token>`` get 401. ``tls``: (certificate, key) files
    to serve HTTPS; ``client_ca``: also require a client certificate it signed.
    """

    _what = "requests"

    def __init__(
        self,
        *,
        default: Reply | None = None,
        token: str | None = None,
        tls: tuple[Path, Path] | None = None,
        path: str = "/",
        port: int = 0,
        client_ca: Path | None = None,
    ) -> None:
        self.default = default or Reply()
        self.client_ca = client_ca
        self._port = port
        self.token = token
        self.tls = tls
        self.path = path
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("the stand-in is not started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = "localhost" if self.tls else "127.0.0.1"  # certificates name localhost
        return f"{scheme}://{host}:{self.port}{self.path}"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*self.tls)
        if self.client_ca is not None:  # mutual TLS: only clients this CA signed
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def start(self) -> Self:
        """Listen (on the previous port after a stop), served by a loop in its own thread."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True, name="standin")
        thread.start()
        try:
            runner = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(10)
        except BaseException:
            self._end(loop, thread)
            raise
        self._port = int(runner.addresses[0][1])
        self._loop, self._runner, self._thread = loop, runner, thread
        return self

    async def _listen(self) -> web.ServerRunner:
        server = web.Server(self._handle, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, ssl_context=self._ssl_context(),
                           backlog=1024, reuse_address=True)  # fmt: skip
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    def stop(self) -> None:
        """Close the listener and every connection, as a real restart would."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None or runner is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        finally:
            self._end(loop, thread)
            self._loop = self._runner = self._thread = None

    @staticmethod
    def _end(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await request.read()
        code, extra, out = await self._answer(request.method, request.raw_path, headers, body)
        return web.Response(status=code, body=out, content_type="application/json",
                            headers=extra)  # fmt: skip

    def then(self, reply: Reply, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``reply`` (after any already queued)."""
        self._queue(reply, times)

    @property
    def requests(self) -> list[Received]:
        return self._all()

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        now = time.time()
        reply = self._next_answer() or self.default
        got = Received(method, path, headers, body, now, reply, Received.parse(body))
        self._record(got)
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, b'{"status": "error", "detail": "missing or wrong bearer token"}'
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        extra = {} if reply.retry_after is None else {"Retry-After": f"{reply.retry_after:g}"}
        answer: dict[str, Any] = {}
        if reply.status is not None:
            answer["status"] = str(reply.status)
        if reply.status == DeliveryStatus.OK and 200 <= reply.http < 300:
            answer.update(self._accepted(got))
        return reply.http, extra, json.dumps(answer).encode()

    def _accepted(self, got: Received) -> dict[str, Any]:
        """A request answered ok: subclasses act on it; the return joins the answer."""
        return {}


@dataclass(slots=True)
class Incident:
    """What the call centre opened for one alarm's message reference, and what followed."""

    number: int
    ref: str
    alert_id: str | None
    kind: str | None
    opened: float
    message: dict[str, Any]
    repeats: list[float] = field(default_factory=list)
    """When the same reference came again (answered ok, no new incident)."""
    updates: list[dict[str, Any]] = field(default_factory=list)
    """Later messages about the same alert: ``update`` and ``reset``."""
    closed: float | None = None
    """When a ``reset`` arrived."""


@dataclass(frozen=True, slots=True)
class Operator:
    """A call-centre operator who acknowledges each new alarm after ``after_s`` by calling
    its ``ack_url`` (``method``, with ``body`` as JSON if given)."""

    after_s: float = 1.0
    method: str = "POST"
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AckCall:
    url: str
    status_code: int
    answer: str
    at: float


class CallCentreStandIn(HttpStandIn):
    """The call centre's alarm endpoint: one incident per message reference, however
    often the reference arrives; heartbeats counted; an optional :class:`Operator`.

    ``ack``: the ``ack`` part of its ok answer to every alarm (a repeat too, as a real
    centre answers a reference it knows), e.g. ``{"operator": "op-17"}``: taken at once;
    whatever it is set to is sent as it is, so tests can send malformed ones. A plain
    attribute: set it between alarms."""

    def __init__(
        self, *, operator: Operator | None = None, ack: object = None, **kwargs: Any
    ) -> None:
        super().__init__(path=kwargs.pop("path", "/alarm"), **kwargs)
        self.operator = operator
        self.ack = ack
        self._incidents: dict[str, Incident] = {}
        self._seen: dict[str, Incident] = {}
        self._heartbeats: list[Received] = []
        self._acks: list[AckCall] = []
        self._timers: list[threading.Timer] = []

    @property
    def incidents(self) -> list[Incident]:
        with self._cond:
            return sorted(self._incidents.values(), key=lambda i: i.number)

    def incidents_for(self, alert_id: str) -> list[Incident]:
        return [i for i in self.incidents if i.alert_id == alert_id]

    @property
    def heartbeats(self) -> list[Received]:
        with self._cond:
            return list(self._heartbeats)

    @property
    def acks(self) -> list[AckCall]:
        with self._cond:
            return list(self._acks)

    def wait_incidents(self, count: int, timeout_s: float = 30.0) -> list[Incident]:
        self._until(lambda: len(self._incidents) >= count, timeout_s, f"{count} incidents")
        return self.incidents

    def wait_acks(self, count: int, timeout_s: float = 30.0) -> list[AckCall]:
        self._until(lambda: len(self._acks) >= count, timeout_s, f"{count} acks")
        return self.acks

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        super().stop()

    def _accepted(self, got: Received) -> dict[str, Any]:
        message = got.json if isinstance(got.json, dict) else {}
        ref = got.ref
        if message.get("type") == MessageType.HEARTBEAT:
            with self._cond:
                self._heartbeats.append(got)
                self._changed()
            return {}
        if ref is None:
            return {"detail": "no message reference"}
        taken = self.ack is not None and message.get("type") == MessageType.ALARM
        ack = {"ack": self.ack} if taken else {}
        with self._cond:
            seen = self._seen.get(ref)
            if seen is not None:
                seen.repeats.append(got.received)
                return {"incident": seen.number, "detail": "repeat", **ack}
            if message.get("type") not in (MessageType.ALARM, MessageType.DIGEST):
                return self._follow_up(ref, message, got.received)
            incident = Incident(
                len(self._incidents) + 1, ref, message.get("alert_id"),
                (message.get("status") or {}).get("kind"), got.received, message,
            )  # fmt: skip
            self._incidents[ref] = self._seen[ref] = incident
            self._changed()
        ack_url = message.get("ack_url")
        if self.operator is not None and message.get("type") == MessageType.ALARM and ack_url:
            timer = threading.Timer(self.operator.after_s, self._acknowledge, (str(ack_url),))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        return {"incident": incident.number, **ack}

    def _follow_up(self, ref: str, message: dict[str, Any], at: float) -> dict[str, Any]:
        """An update or reset joins the alert's incidents (it opens none)."""
        found = [i for i in self._incidents.values() if i.alert_id == message.get("alert_id")]
        for incident in found:
            incident.updates.append(message)
            if message.get("type") == MessageType.RESET:
                incident.closed = at
        if found:
            self._seen[ref] = found[0]
            return {"incident": found[0].number}
        return {"detail": "no incident for this alert"}

    def _acknowledge(self, url: str) -> None:
        assert self.operator is not None
        try:
            response = httpx.request(self.operator.method, url, json=self.operator.body, timeout=10)
            call = AckCall(url, response.status_code, response.text[:500], time.time())
        except httpx.HTTPError as exc:
            call = AckCall(url, 0, f"{type(exc).__name__}: {exc}", time.time())
        with self._cond:
            self._acks.append(call)
            self._changed()


@dataclass(frozen=True, slots=True)
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    received: float

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        return cast(str, part.get_content()) if part is not None else ""


class LocalSmtp(_Peer[Mail, int]):
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives.

    ``tls``: (certificate, key) to offer and require STARTTLS; ``login``: (user,
    password) it then requires. ``refuse(451, times=2)`` answers the next messages with
    that code.
    """

    _what = "emails"

    def __init__(
        self, *, login: tuple[str, str] | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        if login is not None and tls is None:
            raise ValueError("a login needs tls: passwords never cross the wire in clear")
        self.login = login
        self.tls = tls
        self.port = 0
        super().__init__()
        self._controller: Controller | None = None

    def start(self) -> Self:
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if self.login is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*self.tls)
            kwargs.update(tls_context=ctx, require_starttls=True)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def settings(self, **overrides: Any) -> SmtpSettings:
        """Client settings that reach this server (no TLS unless overridden)."""
        base: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "starttls": False}
        if self.login is not None:
            base.update(username=self.login[0], password=self.login[1])
        return SmtpSettings(**{**base, **overrides})

    def refuse(self, code: int = 451, times: int = 1) -> None:
        """Answer the next ``times`` messages with ``code`` (4xx: try later; 5xx: never)."""
        self._queue(code, times)

    @property
    def mails(self) -> list[Mail]:
        return self._all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.login is not None
            and (data.login.decode(), data.password.decode()) == self.login
        )
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self._next_answer()
        if refusal is not None:
            return f"{refusal} not now, try again later"
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        message = message_from_bytes(data, policy=policy.default)
        self._record(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message, time.time()))
        return "250 Message accepted for delivery"

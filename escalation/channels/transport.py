"""A lean HTTP/1.1 keep-alive client: asyncio streams and a few lines of framing.

A burst of 1,000 alarms must reach the call centre in well under half a second, on the
same two cores as everything else. httpx's ``AsyncClient`` spends about 1 ms of CPU per
request on a small machine (header and URL models, then httpcore's pool); even h11's
framing alone, with its event objects and header validation, cost about 100 µs per
exchange. Posting a JSON body to a known URL and reading a small answer needs much
less: the request is written as bytes once, and the answer is read as a status line,
headers, and a body framed by ``Content-Length``, chunks, or the connection's end.
Keep-alive connections per origin, TLS from the standard library, one timeout per
exchange.

A request that fails on a reused connection before any answer arrived (the receiver
closed it while idle) is sent once more on a fresh one: every request carries an
idempotency key, so that is safe.

>>> origin("https://arc.example/alarm?x=1")
('https', 'arc.example', 443, b'/alarm?x=1')
>>> request_start("http://127.0.0.1:8080/alarm")[1]
b'POST /alarm HTTP/1.1\\r\\nHost: 127.0.0.1:8080\\r\\nContent-Length: '
>>> parse_head(b"HTTP/1.1 503 Busy\\r\\nRetry-After: 2\\r\\nContent-Length: 0\\r\\n\\r\\n")
(503, {'retry-after': '2', 'content-length': '0'}, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from homecare.errors import DeliveryError

Origin = tuple[str, str, int]
MAX_BODY = 1 << 20
MAX_HEAD = 64 << 10
"""Answers are a few hundred bytes; anything past this is not a receiver we talk to."""
CLOSE_WAIT_S = 1.0
"""How long closing waits for a TLS connection's goodbye before cutting it."""
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class TransportError(DeliveryError):
    """The exchange failed: no connection, a timeout, or a broken answer."""


class Unsendable(TransportError):
    """Not an http(s) URL, or a header no HTTP peer would take: retrying cannot help."""


class Timeout(TransportError):
    pass


class _Stale(TransportError):
    """A reused connection was closed by the receiver before answering."""


@lru_cache(maxsize=1024)
def origin(url: str) -> tuple[str, str, int, bytes]:
    """Scheme, host, port and request target of a URL (cached: the same few URLs)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Unsendable(f"bad URL {url[:100]!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unsendable(f"not an http(s) URL: {url[:100]!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _BAD_VALUE.search(target) or " " in target:
        raise Unsendable(f"bad URL {url[:100]!r}: control characters or spaces")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default, target.encode()


@lru_cache(maxsize=1024)
def request_start(url: str) -> tuple[Origin, bytes]:
    """The origin, and the request's first bytes up to the Content-Length value."""
    scheme, host, port, target = origin(url)
    name = f"[{host}]" if ":" in host else host
    authority = name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"
    start = b"POST " + target + b" HTTP/1.1\r\nHost: " + authority.encode("idna")
    return (scheme, host, port), start + b"\r\nContent-Length: "


def header_block(headers: list[tuple[str, str]]) -> bytes:
    """Header lines as sent, refusing what would break the framing (CR, LF, bad names)."""
    lines = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise Unsendable(f"cannot send header {name[:40]!r}: not a valid HTTP header")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise Unsendable("cannot send a header outside Latin-1") from None


def parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """Status, headers (names lower-cased) and whether the connection may be reused."""
    try:
        text = head.decode("latin-1")
        status_line, *lines = text[: text.index("\r\n\r\n")].split("\r\n")
        version, code, *_ = status_line.split(" ", 2)
        status = int(code)
    except ValueError:
        raise TransportError(f"not an HTTP answer: {head[:60]!r}") from None
    if not version.startswith("HTTP/1.") or not 100 <= status <= 999 or len(code) != 3:
        raise TransportError(f"not an HTTP/1.x answer: {head[:60]!r}")
    headers: dict[str, str] = {}
    for header in lines:
        name, sep, value = header.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise TransportError(f"bad header line in the answer: {header[:60]!r}")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    reusable = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return status, headers, reusable


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_answer(buf: bytes | bytearray, eof: bool) -> tuple[Response, bool, int] | None:
    """One whole answer at the start of ``buf`` (1xx interim answers skipped): the
    response, whether the connection may be reused, and the bytes it took; ``None`` while
    it is incomplete. Answers are small, so an incomplete one is parsed again from the
    start when more bytes arrive.

    >>> parse_answer(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok", False)[0].body
    b'ok'
    >>> chunked = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n2\\r\\nok\\r\\n"
    >>> parse_answer(chunked, False) is None, parse_answer(chunked + b"0\\r\\n\\r\\n", False)[2]
    (True, 59)
    """
    pos = 0
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return _incomplete(len(buf) - pos > MAX_HEAD, eof)
        status, headers, reusable = parse_head(bytes(buf[pos : end + 4]))
        pos = end + 4
        if status >= 200:
            break
    if status in (204, 304):
        return Response(status, headers, b""), reusable, pos
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(buf, pos, status, headers, reusable, eof)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise TransportError("bad Content-Length in the answer") from None
        if not 0 <= length <= MAX_BODY:
            raise TransportError(f"answer of {length} bytes refused")
        if len(buf) < pos + length:
            return _incomplete(False, eof)
        return Response(status, headers, bytes(buf[pos : pos + length])), reusable, pos + length
    if len(buf) - pos > MAX_BODY:  # delimited by the connection's end
        raise TransportError("answer too long")
    if not eof:
        return None
    return Response(status, headers, bytes(buf[pos:])), False, len(buf)


def _incomplete(too_long: bool, eof: bool) -> None:
    if too_long:
        raise TransportError("answer too long")
    if eof:
        raise TransportError("connection lost: the answer was cut short")


def _chunked(
    buf: bytes | bytearray, pos: int, status: int, headers: dict[str, str], reusable: bool,
    eof: bool,
) -> tuple[Response, bool, int] | None:  # fmt: skip
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return _incomplete(len(buf) - pos > MAX_HEAD, eof)
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise TransportError(f"bad chunk size in the answer: {buf[pos:eol][:40]!r}") from None
        pos = eol + 2
        if size == 0:
            while True:  # trailers, up to an empty line: nothing we use
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return _incomplete(len(buf) - pos > MAX_HEAD, eof)
                if eol == pos:
                    return Response(status, headers, b"".join(parts)), reusable, eol + 2
                pos = eol + 2
        if sum(map(len, parts)) + size > MAX_BODY:
            raise TransportError("answer too long")
        if len(buf) < pos + size + 2:
            return _incomplete(False, eof)
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class _Connection(asyncio.Protocol):
    """One keep-alive connection: bytes in, whole answers out to the request waiting."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[Response, bool]] | None = None
        self.closed = False
        self.lost: asyncio.Future[None] | None = None
        """Done once the socket is closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._answer(eof=False)

    def eof_received(self) -> bool:
        self._answer(eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            stale = not self.buffer  # nothing of an answer: the receiver closed an idle one
            waiter.set_exception(_Stale() if stale else TransportError("connection lost"))

    def _answer(self, *, eof: bool) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            if self.buffer or eof:  # unasked-for bytes, or the peer is leaving: not reusable
                self.close()
            return
        if eof and not self.buffer:
            waiter.set_exception(_Stale())
            return
        try:
            got = parse_answer(self.buffer, eof)
        except TransportError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if got is None:
            return
        response, reusable, used = got
        del self.buffer[:used]
        waiter.set_result((response, reusable and not eof and not self.buffer))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanClient:
    """POST bytes over keep-alive connections; at most as many as sends in flight."""

    def __init__(self, *, ssl_context: ssl.SSLContext, timeout_s: float) -> None:
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self._idle: dict[Origin, list[_Connection]] = {}

    async def post(self, url: str, headers: bytes, body: bytes) -> Response:
        """POST ``body`` with ``headers`` (a block from :func:`header_block`)."""
        key, start = request_start(url)
        request = b"".join((start, str(len(body)).encode(), b"\r\n", headers, b"\r\n", body))
        try:
            async with asyncio.timeout(self.timeout_s):
                idle = self._idle.get(key)
                while idle:
                    conn = idle.pop()
                    if conn.closed:
                        continue
                    with contextlib.suppress(_Stale):
                        return await self._exchange(conn, key, request)
                    break
                return await self._exchange(await self._connect(key), key, request)
        except _Stale:
            raise TransportError("connection lost before an answer") from None
        except TimeoutError:
            raise Timeout(f"no answer within {self.timeout_s} s") from None

    async def _connect(self, key: Origin) -> _Connection:
        scheme, host, port = key
        tls = scheme == "https"
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection, host, port, ssl=self.ssl_context if tls else None,
                server_hostname=host if tls else None,
            )  # fmt: skip
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    async def _exchange(self, conn: _Connection, key: Origin, request: bytes) -> Response:
        assert conn.transport is not None
        conn.waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            conn.transport.write(request)
            response, reusable = await waiter
        except BaseException:  # cancelled (a timeout), lost, a broken answer: it is spent
            conn.close()
            raise
        finally:
            conn.waiter = None
        if reusable and not conn.closed:
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()
        return response

    async def aclose(self) -> None:
        conns = [conn for idle in self._idle.values() for conn in idle]
        self._idle.clear()
        for conn in conns:
            conn.close()
        # TLS says goodbye (close_notify) before its socket closes: wait for that a
        # moment, then cut it, so that no socket is left to the garbage collector.
        closing = [conn.lost for conn in conns if conn.lost is not None and not conn.lost.done()]
        if closing:
            _, late = await asyncio.wait(closing, timeout=CLOSE_WAIT_S)
            for conn in conns:
                if conn.lost in late and conn.transport is not None:
                    conn.transport.abort()
        await asyncio.sleep(0)  # let the transports finish closing

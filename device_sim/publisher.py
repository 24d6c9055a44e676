"""A lean MQTT 3.1.1 publisher for asyncio: QoS 1, last will, persistent session, resend.

Why not paho or aiomqtt: a simulated fleet needs thousands of connections and
~11,000 QoS 1 messages per second from one process. paho reads each PUBACK with
several ``recv`` calls and pokes a socketpair on every publish; aiomqtt adds a
future per message. This link writes prebuilt PUBLISH packets in batches (one
``write`` per loop turn), parses every PUBACK in a received chunk at once, and does
only what a device needs: CONNECT (with will), PUBLISH QoS 0/1, PUBACK, PINGREQ.

It never loses a message: every QoS 1 packet stays in :attr:`MqttLink.inflight`
until its PUBACK arrives; publishing while disconnected only queues; after a
reconnect (``clean_session=False``, the same client id) everything unacknowledged is
sent again in order, with the DUP flag on what had already gone out.

>>> _encode_publish(b"a/b", b"hi", mid=1, retain=True)
b'3\\t\\x00\\x03a/b\\x00\\x01hi'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from homecare.errors import BrokerError

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 12, 13, 14
MAX_MID = 65535
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttError(BrokerError, ConnectionError):
    """The broker refused or dropped a link; the message names the client and the reason."""


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def _encode_publish(topic: bytes, payload: bytes, *, mid: int, retain: bool = False,
                    qos: int = 1) -> bytes:
    """A PUBLISH packet (``mid`` ignored at QoS 0)."""
    head = 0x30 | (qos << 1) | (1 if retain else 0)
    var = _str(topic) + (struct.pack("!H", mid) if qos else b"")
    return bytes((head,)) + _remaining(len(var) + len(payload)) + var + payload


def _encode_connect(client_id: str, *, keepalive: int, clean: bool,
                    will: tuple[str, bytes] | None, username: str | None,
                    password: str | None) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id.encode())
    if will is not None:
        flags |= 0x04 | (1 << 3) | 0x20  # will, will QoS 1, will retain
        payload += _str(will[0].encode()) + _str(will[1])
    if username is not None:
        flags |= 0x80
        payload += _str(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _str(password.encode())
    var = _str(b"MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive)
    return bytes((CONNECT << 4,)) + _remaining(len(var) + len(payload)) + var + payload


@dataclass(frozen=True)
class LinkOptions:
    """Where and how a link connects; shared by every link of a fleet."""

    host: str = "127.0.0.1"
    port: int = 1883
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 2.0


AckCallback = Callable[[int], None]


class MqttLink(asyncio.Protocol):
    """One MQTT connection that publishes at QoS 1 and reconnects until closed.

    ``on_ack(token)`` is called once per PUBACKed message with the token given to
    :meth:`publish`. Not thread-safe: use it from its event loop only.
    """

    def __init__(self, client_id: str, options: LinkOptions, on_ack: AckCallback, *,
                 will: tuple[str, bytes] | None = None,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self.client_id = client_id
        self.options = options
        self.will = will
        self._on_ack = on_ack
        self._on_reconnect = on_reconnect
        self.inflight: dict[int, tuple[bytes, int]] = {}
        """mid → (packet, token) of every QoS 1 message not yet acknowledged, in order."""
        self._sent: set[int] = set()
        self._mid = 0
        self._transport: asyncio.Transport | None = None
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._rx = b""
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._connack: asyncio.Future[int] | None = None
        self._closing = False
        self.killed = False
        self._task: asyncio.Task[None] | None = None
        self._ping: asyncio.TimerHandle | None = None
        self._last_rx = 0.0
        self.connects = 0

    # -- public -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Connect (raising :class:`MqttError` if the first attempt fails), then keep connected."""
        await self._connect_once()
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    def publish(self, topic: bytes, payload: bytes, token: int, *, retain: bool = False,
                qos: int = 1) -> None:
        """Queue a QoS 1 message; it goes out now if connected, else after the reconnect.

        ``qos=0`` sends only while connected and forgets it: lost while offline, never
        acknowledged (what a device that ignores the contract does).
        """
        if qos == 0:
            if self._connected.is_set():
                self._write(_encode_publish(topic, payload, mid=0, retain=retain, qos=0))
            return
        mid = self._next_mid()
        packet = _encode_publish(topic, payload, mid=mid, retain=retain)
        self.inflight[mid] = (packet, token)
        if self._connected.is_set():
            self._sent.add(mid)
            self._write(packet)

    async def close(self, *, disconnect: bool = True) -> None:
        """Stop reconnecting; with ``disconnect`` say goodbye cleanly (no will)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ping is not None:
            self._ping.cancel()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if disconnect:
                self._flush()
                transport.write(bytes((DISCONNECT << 4, 0)))
                transport.close()
            else:
                transport.abort()
        self._connected.clear()

    def kill(self) -> None:
        """Drop the connection abruptly (no DISCONNECT: the broker publishes the will)."""
        self.killed = True
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        if self._ping is not None:
            self._ping.cancel()
        if self._transport is not None:
            self._transport.abort()
        self._connected.clear()

    # -- connection ---------------------------------------------------------------

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(opts.connect_timeout_s):
                await loop.create_connection(lambda: self, opts.host, opts.port, ssl=opts.tls)
                code = await self._connack
        except (OSError, TimeoutError) as exc:
            if self._transport is not None:
                self._transport.abort()
            raise MqttError(f"{self.client_id}: cannot connect to {opts.host}:{opts.port}: "
                            f"{exc}") from exc
        if code != 0:
            raise MqttError(f"{self.client_id}: broker refused the connection: "
                            f"{CONNACK_REASONS.get(code, code)}")

    async def _keep_connected(self) -> None:
        delay = self.options.reconnect_min_s
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            try:
                await self._connect_once()
            except MqttError as exc:
                log.debug("reconnect failed: %s", exc)
                delay = min(delay * 2, self.options.reconnect_max_s)
                continue
            delay = self.options.reconnect_min_s
            if self._on_reconnect is not None:
                self._on_reconnect()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._rx = b""
        self._buffer.clear()
        self._last_rx = asyncio.get_running_loop().time()
        opts = self.options
        transport.write(_encode_connect(
            self.client_id, keepalive=opts.keepalive_s, clean=False, will=self.will,
            username=opts.username, password=opts.password,
        ))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connected.clear()
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(OSError(f"connection closed: {exc}"))
        if not self._closing:
            self._lost.set()

    def _on_connack(self, code: int) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)
        if code != 0:
            return
        self.connects += 1
        self._lost.clear()
        self._connected.set()
        # Resend everything unacknowledged, in order; DUP on what went out before.
        for mid, (packet, _) in self.inflight.items():
            self._write(bytes((packet[0] | 0x08,)) + packet[1:] if mid in self._sent else packet)
        self._sent = set(self.inflight)
        self._schedule_ping()

    def _schedule_ping(self) -> None:
        loop = asyncio.get_running_loop()
        self._ping = loop.call_later(self.options.keepalive_s / 2, self._keepalive)

    def _keepalive(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if asyncio.get_running_loop().time() - self._last_rx > 1.5 * self.options.keepalive_s:
            transport.abort()  # the broker is gone without closing: reconnect
            return
        self._write(bytes((PINGREQ << 4, 0)))
        self._schedule_ping()

    # -- bytes --------------------------------------------------------------------

    def _next_mid(self) -> int:
        if len(self.inflight) >= MAX_MID - 1:
            raise MqttError(f"{self.client_id}: {MAX_MID - 1} messages in flight; wait for acks")
        mid = self._mid
        while True:
            mid = mid % MAX_MID + 1
            if mid not in self.inflight:
                self._mid = mid
                return mid

    def _write(self, packet: bytes) -> None:
        self._buffer.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._buffer and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._buffer))
        self._buffer.clear()

    def data_received(self, data: bytes) -> None:
        self._last_rx = asyncio.get_running_loop().time()
        buf = self._rx + data if self._rx else data
        pos, size = 0, len(buf)
        inflight, sent, on_ack = self.inflight, self._sent, self._on_ack
        while pos < size:
            # Fast path: PUBACK is always exactly 4 bytes.
            if buf[pos] == 0x40 and pos + 4 <= size and buf[pos + 1] == 2:
                mid = (buf[pos + 2] << 8) | buf[pos + 3]
                pos += 4
                entry = inflight.pop(mid, None)
                if entry is not None:
                    sent.discard(mid)
                    on_ack(entry[1])
                continue
            start, length, mult, i = pos, 0, 1, pos + 1
            while i < size:
                byte = buf[i]
                length += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
            else:
                break  # incomplete header
            if i + length > size:
                break  # incomplete body
            kind, body = buf[start] >> 4, buf[i : i + length]
            pos = i + length
            if kind == CONNACK and length >= 2:
                self._on_connack(body[1])
            elif kind not in (PINGRESP, PUBACK):
                log.debug("%s: ignoring packet type %d", self.client_id, kind)
        self._rx = buf[pos:]

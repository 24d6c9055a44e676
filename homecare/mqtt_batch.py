"""paho's MQTT client with a receive path for many small messages (ingest, detect).

paho-mqtt 2.2 reads one packet per ``select()`` with three or more ``recv()`` calls,
builds a ``Properties`` object (two dicts of 40 entries) and an ``MQTTMessage`` for
every PUBLISH, and sends every acknowledgement as its own write. Measured in
``homecare bench ingest``, that was most of ingest's CPU, and it grew under live load.
Here one ``recv()`` takes up to 256 KiB and every complete packet in it is handled at
once; a PUBLISH without properties (what devices send) goes straight to
``on_raw_publish`` as ``(topic, payload, mid, qos, retain)``; and :meth:`ack_many`
acknowledges a whole batch in one write. Every other packet (CONNACK, SUBACK, the
PUBACK of our own publishes, a PUBLISH with properties) goes to paho's own handlers, so
sessions, reconnects and keepalive stay paho's.

It uses paho internals (``_sock_recv``, ``_in_packet``, ``_packet_handle``,
``_packet_queue``, ``_loop_rc_handle``, ``_send_pingreq``, ``_handle_pingresp``):
pyproject pins paho-mqtt below 2.3 and ``tests/test_mqtt_batch.py`` checks them against
a real broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

__all__ = ["PAUSE_POLL_S", "READ_BYTES", "BatchClient", "RawPublish"]

log = logging.getLogger(__name__)

RawPublish = Callable[[bytes, bytes, int, int, bool], None]
"""``(topic, payload, mid, qos, retain)`` of one received PUBLISH."""

READ_BYTES = 1 << 18
PAUSE_POLL_S = 0.05
"""While reading is paused, paho's loop still runs this often (acknowledgements out)."""
_PUBLISH = mqtt.PUBLISH
_PUBACKS = [bytes((mqtt.PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in range(65536)]


class BatchClient(mqtt.Client):
    """A paho client that parses every complete packet of a read in one pass.

    >>> from paho.mqtt.enums import CallbackAPIVersion
    >>> c = BatchClient(CallbackAPIVersion.VERSION2, client_id="doc", protocol=mqtt.MQTTv5)
    >>> got = []
    >>> c.on_raw_publish = lambda *m: got.append(m)
    >>> packet = b"\\x32\\x0b\\x00\\x03a/b\\x00\\x07\\x00{}1"  # QoS 1, mid 7, no properties
    >>> c._handle_packets(packet + packet[:5])  # one and a half packets: 13 bytes used
    (13, <MQTTErrorCode.MQTT_ERR_SUCCESS: 0>)
    >>> got
    [(b'a/b', b'{}1', 7, 1, False)]
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_raw_publish: RawPublish | None = None
        self._rx = b""
        self._reading = threading.Event()
        self._reading.set()
        self._pings = threading.Condition()
        self._pings_sent = self._pings_answered = 0

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`: what is not read stays in the
        socket and TCP holds the broker back. Receive Maximum bounds only QoS 1 messages
        in flight; this bounds the receiver's memory whatever the broker sends."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def reconnect(self) -> MQTTErrorCode:
        self._rx = b""  # a partial packet of the old connection
        return super().reconnect()

    def settle(self, timeout_s: float = 5.0) -> bool:
        """Wait until the broker has handled everything sent so far (it answers a PINGREQ
        after the packets before it). Disconnect after this: a restart that reconnects
        while the broker still reads the old connection takes the session over, and the
        broker drops what it had not read, our last acknowledgements with it."""
        if self._sock is None:
            return False
        self.resume_reading()  # the answer has to be read
        with self._pings:
            if self._send_pingreq() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False
            sent = self._pings_sent
            return self._pings.wait_for(lambda: self._pings_answered >= sent, timeout_s)

    def _send_pingreq(self) -> MQTTErrorCode:
        with self._pings:  # numbered in the order they are queued; answered in that order
            rc = super()._send_pingreq()
            self._pings_sent += rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            return rc

    def _handle_pingresp(self) -> MQTTErrorCode:
        rc = super()._handle_pingresp()
        with self._pings:
            self._pings_answered += 1
            self._pings.notify_all()
        return rc

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read what the socket has (up to 256 KiB) and handle every complete packet."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if not self._reading.wait(PAUSE_POLL_S):
            return MQTTErrorCode.MQTT_ERR_SUCCESS  # back to paho's loop: writes, keepalive
        try:
            data = self._sock_recv(READ_BYTES)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except OSError as err:
            log.warning("failed to receive on socket: %s", err)
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        buf = self._rx + data if self._rx else data
        used, rc = self._handle_packets(buf)
        self._rx = buf[used:]
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return self._loop_rc_handle(rc)
        return rc

    def _handle_packets(self, buf: bytes) -> tuple[int, MQTTErrorCode]:
        """Handle the complete packets at the start of ``buf``; return the bytes used."""
        pos, end = 0, len(buf)
        fast = self.on_raw_publish
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        while end - pos >= 2:
            header = buf[pos]
            length, mult, i = 0, 1, pos + 1
            while i < end:
                byte = buf[i]
                length += (byte & 0x7F) * mult
                mult <<= 7
                i += 1
                if byte < 0x80:
                    break
                if i - pos > 4:
                    return pos, MQTTErrorCode.MQTT_ERR_PROTOCOL
            else:
                break  # the remaining length is not all here yet
            stop = i + length
            if stop > end:
                break
            pos = stop
            qos = (header >> 1) & 3
            if fast is not None and header & 0xF0 == _PUBLISH and qos < 2 and length >= 2:
                p = i + 2 + ((buf[i] << 8) | buf[i + 1])  # the topic ends here
                props = p + 2 * (qos > 0)  # after the packet id
                # Properties present (or a packet too short for its fields): paho's handler.
                if props + v5 <= stop and (not v5 or buf[props] == 0):
                    mid = (buf[p] << 8) | buf[p + 1] if qos else 0
                    fast(buf[i + 2 : p], buf[props + v5 : stop], mid, qos, bool(header & 1))
                    continue
            rc = self._handle_one(header, buf[i:stop])
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is None:
                return pos, rc
        return pos, MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_one(self, header: int, body: bytes) -> MQTTErrorCode:
        """Hand one packet to paho's handlers, as paho's own reader would."""
        self._in_packet = {
            "command": header, "have_remaining": 1, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": len(body), "packet": body, "to_process": 0, "pos": 0,  # type: ignore[typeddict-item]  # paho only reads it: no copy to a bytearray
        }  # fmt: skip
        try:
            return self._packet_handle()
        except MalformedPacket as exc:
            log.warning("malformed packet from the broker: %s", exc)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages in one write (``manual_ack``)."""
        blob = b"".join([_PUBACKS[mid] for mid in mids])
        if blob:
            self._packet_queue(mqtt.PUBACK, blob, 0, 0)

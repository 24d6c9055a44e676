"""The acknowledgement API: a small HTTP/1.1 server on asyncio, framed by h11.

h11 (already here as httpx's HTTP/1.1 engine, maintained by python-hyper) does the
parsing and framing; asyncio does the sockets. Three routes, nothing else:

- ``GET /health`` — liveness, for the compose healthcheck.
- ``POST /alerts/<id>/ack`` (also ``GET``, so the link in an email works), with
  ``contact`` and ``token`` in the query or a JSON body; an ``outcome`` resolves.
- ``POST /alerts/<id>/resolve`` with ``contact``, ``token`` and ``outcome``.

Answers are JSON: 200, 400 (malformed), 403 (invalid token), 404 (unknown alert or
route), 409 (already closed), 413 (body over 64 KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11

from detectors.escalation.ladder import AckResult

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
ROUTE = re.compile(r"^/alerts/([A-Za-z0-9_-]{1,64})/(ack|resolve)$")

Acknowledge = Callable[[str, dict[str, str], str], AckResult]
"""(alert id, fields, action) → the answer; the service's bridge to the ladder."""


def parse_fields(target: str, body: bytes) -> dict[str, str]:
    """The query string and a JSON object body, merged; ``ValueError`` if malformed.

    >>> parse_fields("/alerts/a/ack?contact=anna&token=t", b'{"outcome": "visit"}')
    {'contact': 'anna', 'token': 't', 'outcome': 'visit'}
    """
    fields = dict(parse_qsl(urlsplit(target).query))
    if body.strip():
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        fields.update({str(k): str(v) for k, v in data.items() if v is not None})
    return fields


class AckServer:
    """Serve the acknowledgement API until closed."""

    def __init__(self, acknowledge: Acknowledge, health: Callable[[], dict[str, Any]]) -> None:
        self.acknowledge = acknowledge
        self.health = health
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._connection, host, port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    def route(self, method: str, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        path = urlsplit(target).path
        if path == "/health" and method == "GET":
            return 200, self.health()
        match = ROUTE.match(path)
        if match is None or method not in ("GET", "POST"):
            return 404, {"error": f"no route {method} {path[:80]}"}
        try:
            fields = parse_fields(target, body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, {"error": f"malformed acknowledgement: {exc}"[:300]}
        alert_id, action = match[1], match[2]
        if not fields.get("contact") or not fields.get("token"):
            return 400, {"error": "contact and token are required"}
        if action == "resolve" and not fields.get("outcome"):
            return 400, {"error": "outcome is required to resolve"}
        result = self.acknowledge(alert_id, fields, "http")
        body_out: dict[str, Any] = {"result": result.message}
        if result.state:
            body_out["state"] = result.state
        return result.status, body_out

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65536), 30)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        await self._send(conn, writer, 413, {"error": "body over 64 KiB"})
                        return
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    status, payload = self.route(
                        request.method.decode(), request.target.decode("latin-1"), body
                    )
                    await self._send(conn, writer, status, payload)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                    request = None
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(Exception):
                    await self._send(conn, writer, 400, {"error": f"bad request: {exc}"[:200]})
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _send(
        conn: h11.Connection, writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]
    ) -> None:
        data = json.dumps(payload).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=data)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

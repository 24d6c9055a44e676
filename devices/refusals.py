"""What the broker refused, as security events per device for the fleet dashboard.

NATS Server 2.15.1's MQTT listener acknowledges a publish it refuses (PUBACK, the
connection stays up; measured): the device cannot learn it from the protocol, and no
``$SYS`` advisory carries it. The one place every refusal appears is the server's log,
one line each, naming the connection's MQTT client id (``client_id`` = the device id,
as ``homecare devices provision`` tells the installer)::

    [7] 2026/12/06 21:28:51.520111 [ERR] 10.0.0.7:54761 - mid:7 - "w1" - Publish Violation
    - Subject "homecare.v1.s.e2.wearable.w2.frame"        (one line in the log)

:class:`RefusalWatcher` follows that log and writes one ``security_event`` point per
refusal (reasons ``publish_refused``, ``subscribe_refused``, ``connect_refused``), tagged
with the device's site, elder and kind from the registry, beside the edge's
``id_mismatch`` events. Given a way to (``disconnect``: :func:`devices.access.disconnect`),
it then closes the connection of each device whose publish was refused, so the device
learns the refusal (its session drops, as AWS IoT Core does it) where MQTT 3.1.1 over
NATS gave it a PUBACK. The client id is what the connection *said*; NATS does not tie
it to the JWT, so an event names the device that a refused client claimed to be.

>>> refusal = parse('[7] 2026/12/06 21:28:51.520111 [ERR] 127.0.0.1:54761 - mid:7 - "w1" - '
...                 'Publish Violation - Subject "homecare.v1.s.e2.wearable.w2.frame"')
>>> refusal.client, refusal.reason, refusal.detail, refusal.ts_ms
('w1', 'publish_refused', 'homecare/v1/s/e2/wearable/w2/frame', 1796592531520)
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from devices.access import BrokerAccess
from homecare.errors import HomecareError
from homecare.influx import InfluxClient, escape_tag, line
from homecare.schema import SecurityEvent

__all__ = ["Refusal", "RefusalWatcher", "parse", "security_lines"]

log = logging.getLogger(__name__)

_LINE = re.compile(
    r'^\[\d+\] (?P<ts>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) \[ERR\] \S+ - (?:mid|cid):\d+ - '
    r'"(?P<client>[^"]*)" - (?P<what>Publish Violation|Subscription Violation|'
    r"authentication error)(?: - (?P<rest>.*))?$"
)
_REASONS = {
    "Publish Violation": "publish_refused",
    "Subscription Violation": "subscribe_refused",
    "authentication error": "connect_refused",
}
_SUBJECT = re.compile(r'Subject "([^"]*)"')


class Refusal(NamedTuple):
    """One refused connection, publish or subscription, as the server logged it."""

    ts_ms: int
    client: str
    reason: str
    detail: str


def parse(text: str) -> Refusal | None:
    """The refusal a log line records, or None (any other line). Times are UTC
    (``logtime_utc`` in the server's configuration)."""
    found = _LINE.match(text.rstrip("\n"))
    if found is None:
        return None
    when = dt.datetime.strptime(found["ts"], "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=dt.UTC)
    rest = found["rest"] or ""
    subject = _SUBJECT.search(rest)
    # The subject as the device's MQTT topic (what an installer recognises).
    detail = subject[1].replace(".", "/") if subject else rest[:200]
    return Refusal(int(when.timestamp() * 1000), found["client"], _REASONS[found["what"]], detail)


def security_lines(refusals: Iterable[Refusal], access: BrokerAccess) -> list[str]:
    """``security_event`` line protocol, one point per refusal, tagged from the registry."""
    grants = {g.device: g for g in access.devices()}
    gateways = access.gateways()
    lines: list[str] = []
    last = 0
    for refusal in refusals:
        if not refusal.client:
            continue  # no client id at all: nothing to attribute it to (the log keeps it)
        ev = SecurityEvent
        grant = grants.get(refusal.client)
        device = f"device={escape_tag(refusal.client)}"
        if grant is not None:
            tags = (f"site={escape_tag(grant.site)},elder={escape_tag(grant.elder)},{device},"
                    f"kind={escape_tag(str(grant.kind))}")  # fmt: skip
        elif refusal.client in gateways:
            tags = f"site={escape_tag(gateways[refusal.client])},{device}"
        else:
            tags = device
        ts = max(refusal.ts_ms, last + 1)  # refusals of one millisecond all stay
        last = ts
        lines.append(line(ev.name, f"{tags},{ev.reason}={refusal.reason}",
                          {ev.detail: refusal.detail}, ts))  # fmt: skip
    return lines


class RefusalWatcher:
    """Follows nats-server's log file and stores each refusal as a security event."""

    def __init__(
        self,
        log: Path,
        access: BrokerAccess,
        influx: InfluxClient,
        disconnect: Callable[[Iterable[str]], int] | None = None,
    ) -> None:
        self.log = log
        self.access = access
        self.influx = influx
        self.disconnect = disconnect
        self.offset = 0
        self.stored = 0
        self.disconnected = 0

    def poll(self) -> int:
        """Store the refusals logged since the last poll; how many. A log that shrank
        was rotated: read it from its start."""
        try:
            size = self.log.stat().st_size
        except FileNotFoundError:
            return 0
        if size < self.offset:
            self.offset = 0
        with self.log.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        refusals = [r for raw in chunk[:end].decode("utf-8", "replace").splitlines()
                    if (r := parse(raw)) is not None]  # fmt: skip
        lines = security_lines(refusals, self.access)
        if lines:
            self.influx.write(lines)  # raises when not stored: read again next time
        self.offset += end
        self.stored += len(lines)
        refused = {r.client for r in refusals if r.reason == "publish_refused" and r.client}
        if refused and self.disconnect is not None:
            try:
                self.disconnected += self.disconnect(refused)
            except HomecareError as exc:  # stored already; the next refusal tries again
                log.warning("could not disconnect %s: %s", ", ".join(sorted(refused)), exc)
        return len(lines)

    def run(self, stop: threading.Event, interval_s: float = 2.0) -> None:
        while not stop.is_set():
            self.poll()
            stop.wait(interval_s)

"""Keep the streams' sources flowing across leader changes in a NATS cluster.

TELEMETRY (and ALERTS, for apps' acknowledgements) *source* ``$MQTT_msgs``: the leader of
the sourcing stream runs the source. Measured on the 3-node cluster (NATS 2.15.1,
``tests/test_cluster.py``): after a kill -9 of TELEMETRY's leader, the new leader's source
sometimes stays inactive (``active`` -1, lag 0, no error) for 30 to 50 s, because the
server retries a failed source set-up with a growing back-off (10 s per failure, up to
2 minutes). Nothing is lost (the readings wait in ``$MQTT_msgs``), but nothing reaches
ingest or detect meanwhile: a fall would be alerted a minute late. A leader step-down of
the sourcing stream makes the next leader set its sources up afresh; it flowed again
within a second each time (nats-server issues 8630 and 7664 report the same stall and the
same remedy).

:class:`SourceWatchdog` watches each stream's sources and asks for that step-down when a
source has been inactive for ``stall_s`` seconds, at most once per ``cooldown_s`` per
stream (a source whose stream has no leader at all is not helped by more step-downs).
``homecare broker watch`` runs it; one per cluster is enough, more do no harm.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from homecare.jetstream import ALERTS_STREAM, TELEMETRY_STREAM, connect
from homecare.settings import NatsSettings

__all__ = ["SourceWatchdog", "WatchdogStats"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WatchdogStats:
    """What the watchdog saw and did."""

    checks: int = 0
    step_downs: dict[str, int] = field(default_factory=dict)
    """Per stream, how many step-downs it asked for."""


class SourceWatchdog:
    """Asks a sourcing stream's leader to step down when one of its sources stalls."""

    def __init__(
        self,
        url: str,
        *,
        streams: tuple[str, ...] = (TELEMETRY_STREAM, ALERTS_STREAM),
        stall_s: float = 5.0,
        cooldown_s: float = 15.0,
        interval_s: float = 1.0,
        settings: NatsSettings | None = None,
    ) -> None:
        """``stall_s``: how long a source may stay inactive (a normal leader election
        sets it up again within a few seconds); ``cooldown_s``: the least time between
        two step-downs of one stream (the next leader needs time to set up too)."""
        if stall_s <= 0 or cooldown_s <= 0 or interval_s <= 0:
            raise ValueError("stall_s, cooldown_s and interval_s must be > 0")
        self.url = url
        self.streams = streams
        self.stall_s = stall_s
        self.cooldown_s = cooldown_s
        self.interval_s = interval_s
        self._settings = settings
        self.stats = WatchdogStats()
        self._inactive_since: dict[str, float] = {}
        self._last_step_down: dict[str, float] = {}

    def run(self, stop: threading.Event) -> WatchdogStats:
        """Watch until ``stop`` is set; return what it did."""
        asyncio.run(self._run(stop))
        return self.stats

    async def _run(self, stop: threading.Event) -> None:
        nc = await connect(self.url, name="homecare-watchdog", settings=self._settings)
        try:
            js = nc.jetstream(timeout=2)
            while not stop.is_set():
                for stream in self.streams:
                    source = await self._inactive_source(js, stream)
                    if self.due(stream, source is not None, time.monotonic()):
                        await self._step_down(nc, stream, source or "?")
                self.stats.checks += 1
                await asyncio.sleep(self.interval_s)
        finally:
            await nc.close()

    async def _inactive_source(self, js: JetStreamContext, stream: str) -> str | None:
        """The name of a source of ``stream`` that is not active now, else None (also
        when the stream cannot be asked: no leader yet, or no such stream)."""
        try:
            info = await js.stream_info(stream)
        except (TimeoutError, nats.errors.Error):
            return None
        for source in info.sources or ():
            if source.active is None or source.active < 0:
                return source.name
        return None

    def due(self, stream: str, inactive: bool, now: float) -> bool:
        """Whether to step ``stream``'s leader down now, given whether one of its sources
        is inactive at ``now``: inactive for ``stall_s`` and not stepped down within
        ``cooldown_s``. Counts the step-downs it asks for."""
        if not inactive:
            self._inactive_since.pop(stream, None)
            return False
        since = self._inactive_since.setdefault(stream, now)
        last = self._last_step_down.get(stream, -float("inf"))
        if now - since < self.stall_s or now - last < self.cooldown_s:
            return False
        self._last_step_down[stream] = now
        self.stats.step_downs[stream] = self.stats.step_downs.get(stream, 0) + 1
        return True

    async def _step_down(self, nc: Nats, stream: str, source: str) -> None:
        log.warning("%s's source %s inactive for %.0f s or more: asking %s's leader to step "
                    "down", stream, source, self.stall_s, stream)  # fmt: skip
        try:
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=2)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("%s: step-down not confirmed: %s", stream, exc)

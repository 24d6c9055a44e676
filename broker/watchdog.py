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

It also tells people. When a stream's source stays broken (the stream or its source
missing, the source in error, or not active: :func:`homecare.jetstream.source_status`)
for ``alert_s`` seconds (``HOMECARE_NATS__SOURCE_ALERT_S``, 30 s), it raises an
operations alert into ALERTS (:func:`homecare.alerts.source_broken_alert`: site
``_ops``, the stream as its "elder", kind ``source_broken``, critical). Its id comes
from the stream and the moment the source broke, and it is published with that id as
``Nats-Msg-Id``: raised again (a restarted or second watchdog), ALERTS keeps it once.
When the source flows again it publishes the same alert resolved. Escalation sends it
to the call centre and the supervisor, never to a family (docs/escalation.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from pydantic import ValidationError

from homecare.alerts import OPERATIONS_SITE, source_broken_alert
from homecare.contract import Alert, AlertState
from homecare.jetstream import (
    ALERTS_STREAM,
    MQTT_STREAM,
    TELEMETRY_STREAM,
    SourceStatus,
    alert_subject,
    connect,
    source_status,
)
from homecare.settings import NatsSettings

__all__ = ["SourceWatchdog", "WatchdogStats"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WatchdogStats:
    """What the watchdog saw and did."""

    checks: int = 0
    step_downs: dict[str, int] = field(default_factory=dict)
    """Per stream, how many step-downs it asked for."""
    raised: dict[str, int] = field(default_factory=dict)
    """Per stream, operations alerts raised (published open) about its source."""
    resolved: dict[str, int] = field(default_factory=dict)
    """Per stream, operations alerts resolved (its source flowed again)."""


class SourceWatchdog:
    """Asks a sourcing stream's leader to step down when one of its sources stalls."""

    def __init__(
        self,
        url: str,
        *,
        streams: tuple[str, ...] = (TELEMETRY_STREAM, ALERTS_STREAM),
        stall_s: float = 2.0,
        cooldown_s: float = 15.0,
        interval_s: float = 0.5,
        alert_s: float | None = None,
        settings: NatsSettings | None = None,
    ) -> None:
        """``stall_s``: how long a source may stay inactive once its stream's new leader
        answers (a normal election's leader sets it up within 0.1–0.6 s of its first
        answer: 8 kills of TELEMETRY's leader on the loopback cluster, devices publishing;
        each second waited is a second a press waits, and the step-down costs another
        election, so the stall is cut short, not waited out); ``cooldown_s``: the least time between
        two step-downs of one stream (the next leader needs time to set up too);
        ``alert_s``: how long a source may stay broken before people are told (default:
        ``settings.source_alert_s``, 30 s)."""
        if alert_s is None:
            alert_s = settings.source_alert_s if settings else NatsSettings().source_alert_s
        if stall_s <= 0 or cooldown_s <= 0 or interval_s <= 0 or alert_s <= 0:
            raise ValueError("stall_s, cooldown_s, interval_s and alert_s must be > 0")
        self.url = url
        self.streams = streams
        self.stall_s = stall_s
        self.cooldown_s = cooldown_s
        self.interval_s = interval_s
        self.alert_s = alert_s
        self._settings = settings
        self.stats = WatchdogStats()
        self._inactive_since: dict[str, float] = {}
        self._last_step_down: dict[str, float] = {}
        self._broken_since: dict[str, float] = {}
        """Per stream, when (Unix s) its source was first seen broken, until it flows."""
        self._raised: dict[str, Alert] = {}
        """Per stream, the operations alert raised and not yet resolved."""
        self._adopted: set[str] = set()
        """Streams whose last operations alert in ALERTS was looked up (once, at start)."""

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
                    answered, source = await self._inactive_source(js, stream)
                    if self.due(stream, source is not None, time.monotonic()):
                        await self._step_down(nc, stream, source or "?")
                    if not answered:  # an election: no verdict, and no more waits on it
                        continue
                    status = await self._source_status(js, stream)
                    if status is not None and await self._adopt(js, stream):
                        alert = self.alert_due(stream, status, time.time())
                        if alert is not None:
                            await self._publish(js, stream, alert, status)
                self.stats.checks += 1
                await asyncio.sleep(self.interval_s)
        finally:
            await nc.close()

    async def _inactive_source(self, js: JetStreamContext, stream: str) -> tuple[bool, str | None]:
        """Whether the server answered about ``stream`` (no such stream is an answer; no
        leader yet is not), and the name of a source of it that is not active now, else
        None (also when the stream cannot be asked, or does not exist)."""
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return True, None
        except (TimeoutError, nats.errors.Error):
            return False, None
        for source in info.sources or ():
            if source.active is None or source.active < 0:
                return True, source.name
        return True, None

    async def _source_status(self, js: JetStreamContext, stream: str) -> SourceStatus | None:
        """Whether ``stream`` receives from ``$MQTT_msgs``; ``None`` when the server did
        not answer (no leader, no connection): that is not a verdict on the source."""
        try:
            return await source_status(js, stream, MQTT_STREAM)
        except (TimeoutError, nats.errors.Error) as exc:
            log.debug("%s: source not checked: %s", stream, exc)
            return None

    async def _adopt(self, js: JetStreamContext, stream: str) -> bool:
        """Once per stream: take over an operations alert an earlier watchdog left open
        in ALERTS, so that a restart neither raises the same breakage again nor leaves
        the alert unresolved. ``False`` while ALERTS cannot be read."""
        if stream in self._adopted:
            return True
        subject = alert_subject(OPERATIONS_SITE, stream, "*")
        try:
            last = await js.get_last_msg(ALERTS_STREAM, subject)
        except nats.js.errors.NotFoundError:
            self._adopted.add(stream)
            return True
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("%s: operations alerts in %s not read yet: %s", stream, ALERTS_STREAM, exc)
            return False
        try:
            alert = Alert.model_validate_json(last.data or b"")
        except ValidationError as exc:
            log.warning("%s: last operations alert on %s unreadable, ignored: %s",
                        stream, last.subject, str(exc)[:200])  # fmt: skip
        else:
            self.adopt(stream, alert)
        self._adopted.add(stream)
        return True

    def adopt(self, stream: str, alert: Alert) -> None:
        """An alert found in ALERTS: still open, it is this watchdog's to resolve."""
        if alert.state == AlertState.OPEN:
            self._raised[stream] = alert
            self._broken_since[stream] = alert.ts
            log.info("%s: operations alert %s still open: taken over", stream, alert.id)

    def alert_due(self, stream: str, status: SourceStatus, now: float) -> Alert | None:
        """The operations alert to publish about ``stream``'s source at ``now`` (Unix s),
        if any: open once the source has been broken for ``alert_s``, resolved once it
        flows again. Until :meth:`published` confirms it, it is due again each check."""
        if not status.ok:
            since = self._broken_since.setdefault(stream, now)
            if stream in self._raised or now - since < self.alert_s:
                return None
            return source_broken_alert(stream, since, now, lag=status.lag)
        self._broken_since.pop(stream, None)
        raised = self._raised.get(stream)
        if raised is None:
            return None
        return raised.model_copy(update={"state": AlertState.RESOLVED, "updated": now})

    def published(self, stream: str, alert: Alert) -> None:
        """ALERTS holds ``alert``: an open one is not raised again, a resolved one closes."""
        if alert.state == AlertState.OPEN:
            self._raised[stream] = alert
            self.stats.raised[stream] = self.stats.raised.get(stream, 0) + 1
        else:
            self._raised.pop(stream, None)
            self.stats.resolved[stream] = self.stats.resolved.get(stream, 0) + 1

    async def _publish(
        self, js: JetStreamContext, stream: str, alert: Alert, status: SourceStatus
    ) -> None:
        """Into ALERTS, with the alert id (and its state, once closed) as ``Nats-Msg-Id``,
        as detect stores alerts: raised twice, it is stored once."""
        msg_id = alert.id if alert.state == AlertState.OPEN else f"{alert.id}-{alert.state}"
        try:
            await js.publish(alert_subject(alert.site, alert.elder, alert.id),
                             alert.model_dump_json().encode(), stream=ALERTS_STREAM,
                             headers={"Nats-Msg-Id": msg_id})  # fmt: skip
        except (TimeoutError, nats.errors.Error) as exc:
            log.error("%s: operations alert %s (%s) not stored in %s, trying again: %s",
                      stream, alert.id, alert.state, ALERTS_STREAM, exc)  # fmt: skip
            return
        self.published(stream, alert)
        if alert.state == AlertState.OPEN:
            log.error("%s: source broken for %.0f s (%s): operations alert %s raised",
                      stream, alert.evidence["broken_s"], status.detail, alert.id)  # fmt: skip
        else:
            log.warning("%s: source flows again (%s): operations alert %s resolved",
                        stream, status.detail, alert.id)  # fmt: skip

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

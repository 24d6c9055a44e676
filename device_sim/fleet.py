"""Publish a :class:`~device_sim.homes.Simulation` to a broker like a fleet of real devices.

Two shapes of fleet:

* **per device** (``gateways=0``): one MQTT connection per device, each with its
  own last will (retained ``offline`` on ``<device topic>/availability``, QoS 1)
  and a retained ``online`` on connect — what ingest sees from real devices;
* **gateway** (``gateways=N``): N connections carry every device's traffic, as a
  vendor gateway does; availability is then published explicitly per device (a
  gateway crash leaves its devices ``online``: ingest's staleness check covers it).

Every message is QoS 1 and counted in :class:`FleetStats` only once PUBACKed.
Connections reconnect after a broker restart with their persistent session and
re-send everything unacknowledged; what is published meanwhile waits in the link.
Memory is bounded: stepping pauses while more than ``window`` messages are unacked.
Used like this (tests/test_sim_fleet.py runs it against a real broker)::

    async with Fleet(Simulation(SimConfig(elders=5)), "mqtt://127.0.0.1:1883") as fleet:
        await fleet.run(seconds=60, speed=None)
    print(fleet.stats.acked)
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from device_sim.homes import SimDevice, Simulation
from device_sim.publisher import LinkOptions, MqttError, MqttLink
from homecare.contract import OFFLINE, ONLINE, Stream, Topic
from homecare.errors import BrokerError

_STREAMS = list(Stream)
_STREAM_CODE = {s: k for k, s in enumerate(_STREAMS)}
assert len(_STREAMS) <= 16, "a message's ack token keeps its stream in 4 bits"


class FleetError(BrokerError):
    """The fleet could not connect, or could not get its messages acknowledged in time."""


@dataclass
class FleetStats:
    """What the broker acknowledged (PUBACK), per stream and per elder; plus bookkeeping."""

    per_stream: dict[Stream, int] = field(default_factory=dict)
    per_elder: dict[str, int] = field(default_factory=dict)
    offered: int = 0
    """Messages handed to the links (acknowledged or not yet)."""
    acked: int = 0
    dropped: int = 0
    """Messages for devices killed with :meth:`Fleet.kill` (never sent or never acked)."""
    reconnects: int = 0
    sim_seconds: int = 0
    wall_s: float = 0.0

    @property
    def pending(self) -> int:
        return self.offered - self.acked - self.dropped

    @property
    def rate(self) -> float:
        """Acknowledged messages per wall second."""
        return self.acked / self.wall_s if self.wall_s > 0 else 0.0


def link_options(url: str, *, keepalive_s: int = 30, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None) -> LinkOptions:
    """Link options from a ``mqtt://host:port`` or ``mqtts://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker url {url!r} must start with mqtt:// or mqtts://")
    tls = None
    if parts.scheme == "mqtts":
        tls = ssl.create_default_context(cafile=ca_file)
    return LinkOptions(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        keepalive_s=keepalive_s,
        username=username or parts.username,
        password=password or parts.password,
        tls=tls,
    )


class Fleet:
    """An async context manager: connect every link on enter, drain and disconnect on exit.

    Reusable run by run (:meth:`run` continues from the simulation's clock), not re-entrant.
    """

    def __init__(
        self,
        sim: Simulation,
        url: str,
        *,
        gateways: int = 0,
        window: int = 20000,
        keepalive_s: int = 30,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        client_prefix: str = "sim",
        offline_on_exit: bool = True,
        drain_timeout_s: float = 60.0,
        spread: int = 20,
    ) -> None:
        if gateways < 0:
            raise ValueError("gateways must be 0 (one connection per device) or more")
        if spread < 0:
            raise ValueError("spread must be 0 (each second at once) or a number of slices")
        if not 1 <= window <= 60000:
            raise ValueError("window must be 1-60000 (MQTT message ids are 16-bit)")
        self.sim = sim
        self.options = link_options(url, keepalive_s=keepalive_s, username=username,
                                    password=password, ca_file=ca_file)
        self.gateways = gateways
        self.window = window
        self.client_prefix = client_prefix
        self.offline_on_exit = offline_on_exit
        self.drain_timeout_s = drain_timeout_s
        self.spread = spread
        """Slices each paced second is handed over in (0: all at once, every device in phase)."""
        self._pace: tuple[float, float, float] | None = None
        """(wall, simulated time, speed) the paced schedule counts from."""
        self._links: dict[str, MqttLink] = {}
        self._gateway_links: list[MqttLink] = []
        self._route: dict[Topic, tuple[MqttLink, bytes, int]] = {}
        self._elder_index = {e.elder: e.index for e in sim.elders}
        self._by_elder = [0] * len(sim.elders)
        self._by_stream = [0] * len(_STREAMS)
        self._offered = 0
        self._acked = 0
        self._dropped = 0
        self._reconnects = 0
        self._sim_seconds = 0
        self._started = 0.0
        self._waiter: tuple[int, asyncio.Future[None]] | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._started = time.monotonic()
        devices = [d for e in self.sim.elders for d in e.devices]
        if self.gateways:
            site = self.sim.config.site
            self._gateway_links = [
                self._link(f"{self.client_prefix}-{site}-gw{k}", None)
                for k in range(self.gateways)
            ]
            links = self._gateway_links
        else:
            _raise_fd_limit(len(devices) + 64)
            for d in devices:
                will = (str(d.availability), OFFLINE.encode())
                self._links[d.device] = self._link(f"{self.client_prefix}-{d.site}-{d.device}",
                                                   will)
            links = list(self._links.values())
        gate = asyncio.Semaphore(256)

        async def start(link: MqttLink) -> None:
            async with gate:
                await link.start()

        try:
            async with asyncio.TaskGroup() as tg:
                for link in links:
                    tg.create_task(start(link))
        except* MqttError as group:
            await self._close_all(disconnect=False)
            raise FleetError(f"{len(group.exceptions)} of {len(links)} connections failed; "
                             f"first: {group.exceptions[0]}") from group.exceptions[0]
        self._availability(devices, ONLINE)
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if et is None:
                await self.drain()
                if self.offline_on_exit:
                    alive = [d for e in self.sim.elders for d in e.devices
                             if not self._link_of(d).killed]
                    self._availability(alive, OFFLINE)
                    await self.drain()
        finally:
            await self._close_all(disconnect=True)

    def _link(self, client_id: str, will: tuple[str, bytes] | None) -> MqttLink:
        return MqttLink(client_id, self.options, self._on_ack, will=will,
                        on_reconnect=self._on_reconnect)

    async def _close_all(self, *, disconnect: bool) -> None:
        links = self._gateway_links or list(self._links.values())
        await asyncio.gather(*(link.close(disconnect=disconnect) for link in links))

    def _availability(self, devices: list[SimDevice], state: str) -> None:
        for d in devices:
            self.publish(d.availability, state.encode(), retain=True)

    # -- publishing ---------------------------------------------------------------

    def _link_of(self, device: SimDevice | Topic) -> MqttLink:
        if self.gateways:
            index = self._elder_index[device.elder]
            return self._gateway_links[index % self.gateways]
        return self._links[device.device]

    def publish(self, topic: Topic, payload: bytes, *, retain: bool = False) -> None:
        """Send one message at QoS 1 through the device's link (or its gateway)."""
        route = self._route.get(topic)
        if route is None:
            token = (self._elder_index[topic.elder] << 4) | _STREAM_CODE[topic.stream]
            route = (self._link_of(topic), str(topic).encode(), token)
            self._route[topic] = route
        link, topic_bytes, token = route
        if link.killed:
            self._dropped += 1
            return
        self._offered += 1
        link.publish(topic_bytes, payload, token, retain=retain)

    def _on_ack(self, token: int) -> None:
        self._acked += 1
        self._by_elder[token >> 4] += 1
        self._by_stream[token & 15] += 1
        waiter = self._waiter
        if waiter is not None and self.outstanding <= waiter[0] and not waiter[1].done():
            waiter[1].set_result(None)

    def _on_reconnect(self) -> None:
        self._reconnects += 1

    @property
    def outstanding(self) -> int:
        """Messages handed to live links and not yet acknowledged."""
        return self._offered - self._acked - self._dropped

    async def _wait_outstanding(self, at_most: int) -> None:
        if self.outstanding <= at_most:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiter = (at_most, future)
        try:
            await future
        finally:
            self._waiter = None

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait until every message is acknowledged; :class:`FleetError` after the timeout."""
        timeout = self.drain_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._wait_outstanding(0)
        except TimeoutError:
            raise FleetError(f"{self.outstanding} messages still unacknowledged after "
                             f"{timeout:.0f} s") from None

    async def run(self, *, seconds: float | None = None, until: float | None = None,
                  speed: float | None = 1.0,
                  on_second: Callable[[FleetStats], None] | None = None) -> FleetStats:
        """Step the simulation from its clock for ``seconds`` (or ``until`` a time) and publish.

        ``speed`` 1 is real time (each simulated second published when it has passed
        on the wall clock, relative to the start of the run), N is N times faster, and
        ``None`` is as fast as the broker acknowledges, bounded by ``window``. Paced
        seconds go out in :attr:`spread` slices across the next (wall) second, in the
        simulator's order, so each device keeps its own phase as real devices do,
        rather than every device of the city publishing in the same millisecond. A paced
        run that follows another on time continues its schedule.
        ``on_second`` sees the stats after each simulated second (benchmarks sample).
        """
        if (seconds is None) == (until is None):
            raise ValueError("give exactly one of seconds= or until=")
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive, or None for as fast as possible")
        sim = self.sim
        t = sim.clock
        end = until if until is not None else t + float(seconds or 0.0)
        loop = asyncio.get_running_loop()
        wall0, sim0 = loop.time(), t
        if speed is not None and self._pace is not None:
            pace_wall, pace_sim, pace_speed = self._pace
            # a run that follows another on time keeps its schedule: no drift per call
            due = pace_wall + (t + 1.0 - pace_sim) / speed
            if pace_speed == speed and abs(due - wall0) <= 1.0 + 1.0 / speed:
                wall0, sim0 = pace_wall, pace_sim
        self._pace = (wall0, sim0, speed) if speed is not None else None
        # slices at least 1/spread s of wall time apart: all of them in real time
        slices = max(1, min(self.spread, int(self.spread / speed))) if speed is not None else 1
        while t < end - 1e-9:
            messages = sim.step(t, 1.0)
            for k in range(slices):
                if speed is not None:
                    delay = wall0 + (t + 1.0 - sim0 + k / slices) / speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if self.outstanding > self.window:
                    await self._wait_outstanding(self.window // 2)
                lo, hi = len(messages) * k // slices, len(messages) * (k + 1) // slices
                for topic, payload in messages[lo:hi]:
                    self.publish(topic, payload)
                await asyncio.sleep(0)  # let the links write before the next slice
            self._sim_seconds += 1
            t += 1.0
            if on_second is not None:
                on_second(self.stats)
        return self.stats

    async def offer(self, messages: Sequence[tuple[Topic, bytes]], rate: float,
                    on_second: Callable[[FleetStats], None] | None = None) -> FleetStats:
        """Publish messages rendered beforehand (:meth:`Simulation.step`) at ``rate`` per
        second, in order: a load generator whose cost is only the publishing, so a
        benchmark can offer more than the simulation renders live on a small machine."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        loop = asyncio.get_running_loop()
        start, sent, second = loop.time(), 0, 1
        while sent < len(messages):
            await asyncio.sleep(0.01)
            if self.outstanding >= self.window:
                await self._wait_outstanding(self.window // 2)
            due = min(len(messages), int((loop.time() - start) * rate),
                      sent + self.window - self.outstanding)
            for topic, payload in messages[sent:due]:
                self.publish(topic, payload)
            sent = max(sent, due)
            if on_second is not None and loop.time() - start >= second:
                second += 1
                on_second(self.stats)
        return self.stats

    # -- faults -------------------------------------------------------------------

    def kill(self, device: str) -> None:
        """Cut a device's connection abruptly, as a dead battery would; it stays dead.

        The broker then publishes its will (retained ``offline``). Per-device mode only.
        """
        if self.gateways:
            raise ValueError("kill() needs one connection per device (gateways=0)")
        link = self._links[device]
        self._dropped += len(link.inflight)
        link.kill()
        link.inflight.clear()

    @property
    def stats(self) -> FleetStats:
        """A snapshot of what was acknowledged so far."""
        return FleetStats(
            per_stream={s: n for s, n in zip(_STREAMS, self._by_stream, strict=True) if n},
            per_elder={e.elder: n for e, n in zip(self.sim.elders, self._by_elder,
                                                   strict=True) if n},
            offered=self._offered,
            acked=self._acked,
            dropped=self._dropped,
            reconnects=self._reconnects,
            sim_seconds=self._sim_seconds,
            wall_s=time.monotonic() - self._started if self._started else 0.0,
        )


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(needed, soft), hard), hard))

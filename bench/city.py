"""``homecare bench city``: a city's elders in real time through the whole pipeline, on one
node or on the 3-node cluster, and what a kill -9 of a detect worker and of a NATS node
costs.

Everything is real and on this machine: NATS Server (:class:`~harness.servers.LocalNats`,
or :class:`~harness.servers.LocalNatsCluster`: three nodes, R3, an fsync before each
acknowledgement), provisioned before any device connects; influxd; ``homecare ingest``,
``homecare detect`` and ``homecare escalate`` each as processes of their own
(:class:`~harness.demo.ServiceProcess`, as in production), several ingest and detect
workers; the call centre's stand-in (:class:`~harness.standins.CallCentreStandIn`)
recording when each alarm arrives. Simulated elders publish in real time over MQTT 3.1.1
at QoS 1 through gateway connections (:class:`~bench.detect.TimedFleet`, which notes
when each SOS press and watched frame was handed over); on the cluster they connect to
the first node.

Phases:

1. **Steady** (``--seconds``): SOS presses and falls with a long lie are injected for a
   few dozen elders. Reported: acknowledged messages/s, alert latency p50/p99 from the
   message that completes a detection (the SOS press; for a fall, the frame on which its
   stillness window ends, found by replaying the elder's frames through a
   :class:`~detectors.fall.FallDetector`) to the call centre receiving the alarm, and the
   CPU of each component (psutil, every process of it summed) per 10,000 elders.
   The "I'm OK" grace window of falls (30 s by default, a wait by design) is set to 0, so
   that the latency is the pipeline's.
2. **Chaos** (``--chaos-seconds`` each; 0 skips): a kill -9 of a detect worker, then (on
   the cluster) of the NATS node that leads TELEMETRY (moved off the first node, which
   holds the devices' connections, beforehand). Elders press SOS every fraction of a
   second from 2 s before the kill on. *Time to take over*: from the kill to the call
   centre receiving the first alarm of a press made after it. *Alert latency during
   takeover*: of every press of the phase. A detect worker that was the only one is
   started again at once, as a supervisor (compose's ``restart``) would; with several,
   the others take its share. The node is started again after its phase.

Losses, at the end, once everything has drained: every reading the broker acknowledged
to the devices against the points InfluxDB holds, and every injected SOS and fall
against the alarms the call centre received (one each: a second alarm for the same
event counts as a duplicate).

Today every detect worker reads the one durable consumer ``detect``; with partitioned
workers (priority groups, one active worker per partition) nothing here changes: the
workers are processes of ``homecare detect``, and the bench kills one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import yaml
from nats.js.api import AckPolicy, ConsumerConfig

from bench.detect import Plan, TimedFleet, fall_frames, inject_events, percentile
from bench.escalate import bench_registry
from bench.ingest import published_readings, stored_readings
from broker.provision import provision
from broker.watchdog import SourceWatchdog
from device_sim.homes import SimConfig, Simulation, SosPress
from device_sim.routine import daytime
from harness.demo import ServiceProcess
from harness.servers import LocalInflux, LocalNats, LocalNatsCluster, ServerError
from harness.standins import CallCentreStandIn, Incident
from homecare.contract import Stream
from homecare.errors import ServiceError
from homecare.influx import InfluxClient
from homecare.jetstream import ALERTS_STREAM, SUBJECT_ROOT, TELEMETRY_STREAM, alert_subject
from homecare.settings import InfluxSettings, MqttSettings, NatsSettings, Settings
from homecare.status import read_status

__all__ = ["run"]

PARTITIONS = 16
"""TELEMETRY's partitions on the bench's broker."""
PER_10K = 10_000
STORED_AT_TRIES = 5
"""Reads of the streams' times after the run (the restarted node's API may not answer)."""
SITE = "bench"
LATENCY_P99_TARGET_MS = 250.0
TAKEOVER_P99_TARGET_MS = 10_000.0
KILL_AT = 0.3
"""Where in a chaos phase the kill falls (share of the phase)."""
PRESS_EVERY_S = 0.5
"""How often an elder presses SOS during a chaos phase (each press a different elder)."""


@dataclass
class Workers:
    """The service processes, started and restarted the same way."""

    settings: Settings
    root: Path
    registry: Path
    procs: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    restarts: int = 0
    exits: list[str] = field(default_factory=list)
    """Workers that exited by themselves (and were started again)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, service: str, k: int) -> ServiceProcess:
        """Worker ``k`` of ``service``: its own state folder (status file, spool)."""
        state = self.root / f"{service}-{k}"
        extra = {"HOMECARE_STATE_DIR": str(state), "HOMECARE_DETECT__GRACE_S": "0"}
        if service == "detect":
            extra["HOMECARE_DETECT__CLOCK"] = "wall"
        if service == "escalate":
            extra |= {
                "HOMECARE_REGISTRY": str(self.registry), "HOMECARE_ESCALATE__HTTP_PORT": "0",
                "HOMECARE_ESCALATE__SECRET": secrets.token_hex(16),
                "HOMECARE_ESCALATE__HEARTBEAT_S": "3600",
                "HOMECARE_ESCALATE__CLIENT_ID": f"bench-city-escalate-{k}",
            }  # fmt: skip
        ready = state / {"ingest": "ingest-main.json"}.get(service, f"{service}.json")
        log = self.root / f"{service}-{k}-{self.restarts}.log"
        proc = ServiceProcess(service, self.settings, log, ready=ready, **extra)
        self.procs.setdefault(service, []).append(proc)
        return proc

    def supervise(self, stop: threading.Event, log: Callable[[str], Any]) -> None:
        """Start again, as compose's ``restart: unless-stopped`` does, any worker that
        exited by itself (the kills of the chaos phases restart their own); each such
        exit is noted in :attr:`exits` with the last line of its log."""
        while not stop.wait(1.0):
            with self.lock:
                for service, procs in self.procs.items():
                    for k, proc in enumerate(list(procs)):
                        if proc.proc.poll() is None:
                            continue
                        tail = proc.log.read_text(errors="replace").strip().splitlines()[-1:]
                        self.exits.append(f"{service}: {' '.join(tail)[:200]}")
                        log(f"  {service} exited by itself ({self.exits[-1]}); starting it again")
                        procs.remove(proc)
                        self.restarts += 1
                        with contextlib.suppress(ServiceError):
                            self.start(service, k)

    def psutil(self) -> dict[str, list[psutil.Process]]:
        return {s: [psutil.Process(p.proc.pid) for p in ps if p.proc.poll() is None]
                for s, ps in self.procs.items()}  # fmt: skip

    def stop(self) -> None:
        for procs in self.procs.values():
            for p in procs:
                p.stop()


Kill = Callable[[], tuple[str, float]]
"""Kills something; returns what, and when (wall clock)."""


@dataclass
class Chaos:
    """One kill: what, when (wall clock), and when what was killed was back."""

    name: str
    plan: Plan
    killed_at: float = 0.0
    what: str = ""
    back_at: float | None = None


class LeaderWatch:
    """When each stream and consumer that a killed node led (TELEMETRY's source, a consumer
    on ``$MQTT_msgs``, among them) has a leader again: a surviving node's ``/jsz`` asked
    every :data:`WATCH_EVERY_S` from the kill on, on a thread of its own.

    Tells the Raft elections (each group's followers wait 4 to 9 s, nats-server's fixed
    election timeout, before they campaign) from what the clients add after them."""

    def __init__(self, monitor_url: str, victim: str) -> None:
        self.url = f"{monitor_url}/jsz"
        self.victim = victim
        before = self._leaders()
        self.led = sorted(k for k, v in before.items() if v == victim)
        self.elected: dict[str, float] = {}
        self.killed_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _leaders(self) -> dict[str, str]:
        """Each stream's and consumer's leader (``STREAM`` or ``STREAM/consumer``), as this
        node knows it ("" while it knows none)."""
        params = {"accounts": "true", "streams": "true", "consumers": "true"}
        out: dict[str, str] = {}
        for account in httpx.get(self.url, params=params, timeout=2).json().get(
            "account_details"
        ) or []:
            for stream in account.get("stream_detail") or []:
                out[stream["name"]] = (stream.get("cluster") or {}).get("leader", "")
                for c in stream.get("consumer_detail") or []:
                    key = f"{stream['name']}/{c['name']}"
                    out[key] = (c.get("cluster") or {}).get("leader", "")
        return out

    def start(self) -> None:
        """Call at the kill."""
        self.killed_at = time.monotonic()
        self._thread.start()

    def _watch(self) -> None:
        deadline = self.killed_at + WATCH_FOR_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            at = time.monotonic() - self.killed_at
            with contextlib.suppress(httpx.HTTPError, ValueError):
                now = self._leaders()
                for k in self.led:
                    if k not in self.elected and now.get(k) not in ("", None, self.victim):
                        self.elected[k] = round(at, 2)
            if len(self.elected) == len(self.led):
                return
            self._stop.wait(WATCH_EVERY_S)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        return {
            "led_by_the_killed_node": self.led,
            "leader_again_s": self.elected,
            "not_led_again": [k for k in self.led if k not in self.elected],
            "last_leader_again_s": max(self.elected.values(), default=None),
        }


NODE_KILLED = "NATS node killed"
WATCH_EVERY_S = 0.2
WATCH_FOR_S = 40.0


def _cpu(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """CPU seconds (user + system) of each component, its processes summed."""
    out: dict[str, float] = {}
    for name, procs in groups.items():
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += sum(p.cpu_times()[:2])
        out[name] = total
    return out


@contextlib.contextmanager
def _broker(
    root: Path, cluster: bool, watchdog: list[SourceWatchdog]
) -> Iterator[tuple[Any, str, str, int]]:
    """The broker (one node, or three), provisioned: it, its NATS URLs, the MQTT URL the
    devices use, the replicas. The cluster runs the source watchdog (into ``watchdog``)
    as a cluster deployment does (compose's ``watchdog``, ``homecare cluster up``)."""
    with contextlib.ExitStack() as stack:
        if cluster:
            nodes = stack.enter_context(LocalNatsCluster(root / "nats"))
            urls, mqtt_url, replicas = nodes.urls, nodes.mqtt_url, nodes.replicas
            broker: Any = nodes
        else:
            single = stack.enter_context(LocalNats(root / "nats"))
            urls, mqtt_url, replicas, broker = single.url, single.mqtt_url, 1, single
        done = provision(urls, mqtt_url=mqtt_url, partitions=PARTITIONS, replicas=replicas,
                         timeout_s=120)  # fmt: skip
        if not done.source.ok:
            raise RuntimeError(f"the bench's broker is not provisioned: {done.source.detail}")
        asyncio.run(_keep_presses(urls))
        if cluster:
            watching = threading.Event()
            watchdog.append(SourceWatchdog(urls))
            thread = threading.Thread(target=watchdog[0].run, args=(watching,), daemon=True)
            thread.start()
            stack.callback(thread.join, 10)
            stack.callback(watching.set)
        yield broker, urls, mqtt_url, replicas


def _server_pids(broker: Any) -> list[psutil.Process]:
    nodes = broker.nodes if isinstance(broker, LocalNatsCluster) else [broker]
    return [psutil.Process(n.pid) for n in nodes if n.running]


def _presses(sim: Simulation, plan: Plan, elders: list[int], *, t0: float, seconds: float,
             kill_at: float) -> None:  # fmt: skip
    """SOS presses from 2 s before the kill to the end of the phase less 3 s, one elder
    each, every :data:`PRESS_EVERY_S` (spread wider when there are few elders)."""
    first, last = max(1.0, kill_at - 2.0), max(kill_at + 1.0, seconds - 3.0)
    count = min(len(elders), int((last - first) / PRESS_EVERY_S) + 1)
    for k, i in enumerate(elders[:count]):
        at = t0 + first + (last - first) * k / max(count - 1, 1)
        sim.inject(i, at, SosPress())
        plan.sos[sim.elders[i].elder] = at


async def _drive(
    sim: Simulation,
    url: str,
    *,
    seconds: int,
    chaos_seconds: int,
    chaos: list[tuple[str, Kill, Callable[[], None]]],
    events: int,
    gateways: int,
    rng: np.random.Generator,
    sample: Callable[[], None],
    seek_s: float,
    log: Callable[[str], Any],
    offered: list[int],
) -> tuple[TimedFleet, Plan, list[Chaos]]:
    """Publish in real time: the steady phase, then each chaos phase (a kill at
    :data:`KILL_AT` of it, what was killed brought back after it)."""
    order = rng.permutation(len(sim.elders)).tolist()
    steady_elders, rest = order[: 2 * events], order[2 * events :]
    per_phase = min(len(rest) // max(len(chaos), 1), int(chaos_seconds / PRESS_EVERY_S) + 1)
    # Only the elders with an event are watched: their frames and presses are kept.
    watch = {sim.elders[i].elder for i in order[: 2 * events + per_phase * len(chaos)]}
    loop = asyncio.get_running_loop()
    async with TimedFleet(sim, url, gateways=gateways, client_prefix=f"city{time.time_ns()}",
                          offline_on_exit=False, watch=watch) as fleet:  # fmt: skip
        if time.time() - sim.clock > 1.0:
            sim.step(float(math.floor(time.time() + 0.9 * seek_s)) - 1.0)
        await fleet.drain(120)
        steady = Plan("steady")
        warm_s = min(10, max(2, seconds // 5))
        inject_events(
            sim, steady, steady_elders, t0=sim.clock, seconds=seconds, warm_s=warm_s, rng=rng
        )
        acked, began = fleet.stats.acked, time.time()
        await fleet.run(seconds=seconds, speed=1.0, on_second=lambda _s: sample())
        steady.wall, steady.published = (began, time.time()), fleet.stats.acked - acked
        offered.append(fleet.stats.acked - acked)  # ``seconds`` simulated seconds' worth
        log(f"  steady: {steady.published:,} messages in {steady.wall[1] - began:.0f} s")
        phases: list[Chaos] = []
        for n, (name, kill, restore) in enumerate(chaos):
            phase = Chaos(name, Plan(name))
            kill_at = KILL_AT * chaos_seconds
            _presses(sim, phase.plan, rest[n * per_phase : (n + 1) * per_phase], t0=sim.clock,
                     seconds=chaos_seconds, kill_at=kill_at)  # fmt: skip

            async def strike(phase: Chaos = phase, kill: Kill = kill) -> None:
                phase.what, phase.killed_at = await loop.run_in_executor(None, kill)
                log(f"  {phase.name}: killed {phase.what}")

            acked, began = fleet.stats.acked, time.time()
            struck: list[asyncio.Task[None]] = []

            def fire(s: Callable[[], Any] = strike, out: list[Any] = struck) -> None:
                out.append(loop.create_task(s()))

            timer = loop.call_later(kill_at + 1.0, fire)
            await fleet.run(seconds=chaos_seconds, speed=1.0)
            timer.cancel()
            for task in struck:
                await task
            await loop.run_in_executor(None, restore)
            phase.back_at = time.time()
            phase.plan.wall, phase.plan.published = (began, time.time()), fleet.stats.acked - acked
            phases.append(phase)
        await fleet.drain(300)
    return fleet, steady, phases


def _detect_backlog(urls: str) -> int:
    """Readings of TELEMETRY not yet handed to detect, over every detect consumer
    (``detect``, or one per partition). Those handed over and not acknowledged are not
    counted: detect acknowledges only what its saved state covers, seconds later."""
    import nats

    async def ask() -> int:
        nc = await nats.connect(urls.split(","), connect_timeout=5, max_reconnect_attempts=2)
        try:
            js = nc.jetstream(timeout=10)
            total = 0
            for info in await js.consumers_info(TELEMETRY_STREAM):
                if info.name.startswith("detect"):
                    total += int(info.num_pending or 0)
            return total
        finally:
            await nc.close()

    return asyncio.run(ask())


def _wait_for_detect(urls: str, timeout_s: float, log: Callable[[str], Any]) -> int:
    """Wait until detect has caught up with TELEMETRY (or ``timeout_s``): an alert counted
    missing must be missing, not late. Returns what was still waiting."""
    deadline, left = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a node still catching up: ask again
            left = _detect_backlog(urls)
            if left == 0:
                return 0
        time.sleep(2.0)
    log(f"  detect still {left:,} readings behind after {timeout_s:.0f} s")
    return left


PRESSES = "bench-presses"
"""The bench's durable consumer of the SOS readings in TELEMETRY, never read until the
end: TELEMETRY keeps a message while some consumer still wants it."""
PRESS_SUBJECT = f"{SUBJECT_ROOT}.*.{SITE}.*.*.*.{Stream.SOS.value}"


async def _keep_presses(urls: str) -> None:
    import nats

    nc = await nats.connect(urls.split(","), connect_timeout=5)
    try:
        config = ConsumerConfig(durable_name=PRESSES, filter_subject=PRESS_SUBJECT,
                                ack_policy=AckPolicy.NONE)  # fmt: skip
        await nc.jetstream(timeout=30).add_consumer(TELEMETRY_STREAM, config)
    finally:
        await nc.close()


def _stored_at(urls: str, log: Callable[[str], Any]) -> dict[tuple[str, str, str], float]:
    """When each elder's first SOS reading reached TELEMETRY and each elder's first alert
    of each kind reached ALERTS (the server's times), by (stream, elder, kind): tells an
    alert detect never raised from one that escalation did not deliver, and splits a
    latency into the broker's part, detect's and escalation's."""
    import nats
    import nats.errors
    import nats.js.errors

    wanted = [(TELEMETRY_STREAM, PRESS_SUBJECT, PRESSES),
              (ALERTS_STREAM, alert_subject(SITE, "*", "*"), None)]  # fmt: skip

    async def ask() -> dict[tuple[str, str, str], float]:
        nc = await nats.connect(urls.split(","), connect_timeout=5, max_reconnect_attempts=2)
        out: dict[tuple[str, str, str], float] = {}
        try:
            js = nc.jetstream(timeout=10)
            for stream, subject, durable in wanted:
                sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
                while True:
                    try:
                        msgs = await sub.fetch(1000, timeout=2)
                    except TimeoutError:
                        break
                    for m in msgs:
                        kind = (str(json.loads(m.data).get("kind", "?"))
                                if stream == ALERTS_STREAM else Stream.SOS.value)  # fmt: skip
                        key = (stream, m.subject.split(".")[3], kind)  # the elder's token
                        at = m.metadata.timestamp.timestamp()
                        out[key] = min(out.get(key, at), at)
                await sub.unsubscribe()
        finally:
            await nc.close()
        return out

    for attempt in range(STORED_AT_TRIES):
        try:
            return asyncio.run(ask())
        except (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError) as exc:
            # a node just restarted: the JetStream API may have no responder for a moment
            if attempt == STORED_AT_TRIES - 1:
                raise
            log(f"  stream times not read yet ({exc!r}); again in 2 s")
            time.sleep(2.0)
    raise AssertionError("unreachable")


def _first_alarms(incidents: list[Incident]) -> dict[tuple[str, str], list[Incident]]:
    """The call centre's incidents per (elder, kind of alert)."""
    out: dict[tuple[str, str], list[Incident]] = {}
    for i in incidents:
        elder = str((i.message.get("caller") or {}).get("id", ""))
        out.setdefault((elder, str(i.kind)), []).append(i)
    return out


def _expected(steady: Plan, phases: list[Chaos]) -> list[tuple[str, str]]:
    """(elder, kind of alert) of every injected event."""
    out = [(e, "sos") for e in steady.sos] + [(e, "fall") for e in steady.falls]
    return out + [(e, "sos") for p in phases for e in p.plan.sos]


def _summary(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": round(percentile(ms, 0.5), 1),
            "p99": round(percentile(ms, 0.99), 1), "max": round(max(ms), 1)}  # fmt: skip


def _latencies(
    plan: Plan, fleet: TimedFleet, alarms: dict[tuple[str, str], list[Incident]],
    stored_at: dict[tuple[str, str, str], float],
) -> tuple[list[tuple[float, float, float, float]], list[str], list[str]]:  # fmt: skip
    """(published, stored in TELEMETRY, stored in ALERTS, arrived at the call centre) per
    injected event alerted (NaN where not known: a fall's frame in TELEMETRY); the events
    missed; those alerted twice."""
    pressed: dict[str, float] = {}
    for who, stream, at, _ in fleet.sent:
        if stream is Stream.SOS:
            pressed.setdefault(who, at)
    out: list[tuple[float, float, float, float]] = []
    missed: list[str] = []
    duplicated: list[str] = []
    events = [(e, "sos") for e in plan.sos] + [(e, "fall") for e in plan.falls]
    for elder, kind in events:
        got = alarms.get((elder, kind), [])
        ids = {i.alert_id for i in got}
        if len(ids) > 1:
            duplicated.append(f"{elder}:{kind}")
        if kind == "sos":
            sent = pressed.get(elder)
        else:
            done = fall_frames(fleet.sent, elder)
            sent = done[0] if done else None
            if sent is None and not got:  # its stillness window outlasted the run
                continue
        if sent is None or not got:
            missed.append(f"{elder}:{kind}")
            continue
        out.append((sent, stored_at.get((TELEMETRY_STREAM, elder, kind), math.nan),
                    stored_at.get((ALERTS_STREAM, elder, kind), math.nan),
                    min(i.opened for i in got)))  # fmt: skip
    return out, missed, duplicated


def run(
    *,
    elders: int = 5000,
    seconds: int = 60,
    cluster: bool = False,
    chaos_seconds: int = 40,
    ingest_workers: int = 2,
    detect_workers: int = 2,
    events: int = 20,
    gateways: int = 4,
    seed: int = 0,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the phases; return the figures (also printed through ``log``)."""
    rng = np.random.default_rng(seed)
    where = "the 3-node cluster (R3, sync_interval always)" if cluster else "one node"
    report: dict[str, Any] = {
        "elders": elders, "seconds": seconds, "broker": where, "cores": os.cpu_count(),
        "ingest_workers": ingest_workers, "detect_workers": detect_workers,
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-city-")))
        watchdog: list[SourceWatchdog] = []
        broker, urls, mqtt_url, _ = stack.enter_context(_broker(root, cluster, watchdog))
        influx = stack.enter_context(LocalInflux(root / "influxd"))
        with InfluxClient(InfluxSettings(url=influx.url)) as db:
            db.create_database()
        centre = stack.enter_context(CallCentreStandIn())
        made = time.perf_counter()
        start = float(math.floor(time.time()))
        sim = Simulation(SimConfig(elders=elders, seed=seed, site=SITE, start=start,
                                   utc_offset_s=daytime(start)))  # fmt: skip
        seek_s = time.perf_counter() - made
        registry = root / "registry.yaml"
        registry.write_text(
            yaml.safe_dump(bench_registry(centre.url, [e.elder for e in sim.elders]))
        )
        settings = Settings(
            _env_file=None, state_dir=root / "state", site=SITE,
            nats=NatsSettings(url=urls, partitions=PARTITIONS),
            # the services know every node's listener (escalate's alert states move on)
            mqtt=MqttSettings(url=",".join(broker.mqtt_urls) if cluster else mqtt_url),
            influx=InfluxSettings(url=influx.url),
        )  # fmt: skip
        workers = Workers(settings, root, registry)
        stack.callback(workers.stop)
        log(f"city: {elders} elders in real time on {where}; {ingest_workers} ingest and "
            f"{detect_workers} detect workers, escalate, influxd ...")  # fmt: skip
        for k in range(ingest_workers):
            workers.start("ingest", k)
        for k in range(detect_workers):
            workers.start("detect", k)
        workers.start("escalate", 0)
        supervising = threading.Event()
        supervisor = threading.Thread(target=workers.supervise, args=(supervising, log),
                                      daemon=True)  # fmt: skip
        supervisor.start()
        stack.callback(supervisor.join, 120)  # on the way out: stop supervising, then
        stack.callback(supervising.set)  # the workers stop (callbacks run last first)

        marks: list[tuple[float, dict[str, float]]] = []
        offered: list[int] = []

        def sample() -> None:
            groups = {"nats-server": _server_pids(broker), **workers.psutil(),
                      "influxd": [psutil.Process(influx.pid)],
                      "publisher": [psutil.Process()]}  # fmt: skip
            marks.append((time.monotonic(), _cpu(groups)))

        def kill_detect() -> tuple[str, float]:
            with workers.lock:
                victim = workers.procs["detect"][0]
                at = time.time()
                victim.proc.kill()
                victim.proc.wait()
                workers.procs["detect"].remove(victim)
                if not workers.procs["detect"]:  # the only one: its supervisor starts it again
                    for attempt in range(5):  # as compose's restart does, until it runs
                        workers.restarts += 1
                        try:
                            workers.start("detect", 0)
                            break
                        except ServiceError as exc:
                            log(f"  detect did not start ({attempt + 1}): {str(exc)[-160:]}")
                    return "the only detect worker (started again at once)", at
            return f"detect worker 1 of {detect_workers}", at

        def no_restore() -> None:
            return None

        chaos: list[tuple[str, Kill, Callable[[], None]]] = []
        if chaos_seconds:
            chaos.append(("detect worker killed", kill_detect, no_restore))
        watch: list[LeaderWatch] = []
        elections: dict[str, Any] = {}
        if chaos_seconds and isinstance(broker, LocalNatsCluster):
            nodes = broker
            victim = [nodes.step_down(TELEMETRY_STREAM, avoid=0, timeout_s=60)]

            def kill_node() -> tuple[str, float]:
                victim[0] = nodes.leader(TELEMETRY_STREAM)
                if victim[0] == 0:  # led again by the devices' node: take the next one
                    victim[0] = 1
                watch.append(LeaderWatch(nodes.nodes[0].monitor_url, f"n{victim[0] + 1}"))
                at = time.time()
                nodes.kill(victim[0])
                watch[-1].start()
                return f"NATS node n{victim[0] + 1} (TELEMETRY's leader)", at

            def restart_node() -> None:
                """Start the node again: ready once it has caught up with the others (a
                loaded machine may need more than one start's 30 s; its store is kept)."""
                elections.update(watch[-1].stop())
                for attempt in range(4):
                    try:
                        nodes.start(victim[0])
                        return
                    except ServerError as exc:
                        log(f"  node n{victim[0] + 1} not caught up yet ({attempt + 1}): "
                            f"{str(exc).splitlines()[-1][:120]}")  # fmt: skip
                log(f"  node n{victim[0] + 1} left down: the rest runs on two nodes")

            chaos.append((NODE_KILLED, kill_node, restart_node))

        fleet, steady, phases = asyncio.run(
            _drive(sim, mqtt_url, seconds=seconds, chaos_seconds=chaos_seconds, chaos=chaos,
                   events=events, gateways=gateways, rng=rng, sample=sample, seek_s=seek_s,
                   log=log, offered=offered),
        )  # fmt: skip

        # Losses: every acknowledged reading in InfluxDB, every event at the call centre.
        published = published_readings(fleet.stats)
        deadline, stored, last = time.monotonic() + 180, -1, -1
        while time.monotonic() < deadline:
            stored = stored_readings(influx)
            if stored >= published or (stored == last and time.monotonic() > deadline - 120):
                break
            last = stored
            time.sleep(2.0)
        # Every SOS press, and every fall whose stillness window ended while the devices
        # still published (a fall late in a short run may not have).
        falls = [e for e in steady.falls if fall_frames(fleet.sent, e) is not None]
        injected = len(steady.sos) + len(falls) + sum(len(p.plan.sos) for p in phases)
        log(f"  drained: {stored:,} of {published:,} readings stored")
        behind = _wait_for_detect(urls, 600, log)
        with contextlib.suppress(TimeoutError):
            centre.wait_incidents(injected, timeout_s=60)
        time.sleep(2.0)  # a duplicate would come now
        alarms = _first_alarms(centre.incidents)
        missing = [e for (e, k) in _expected(steady, phases) if (e, k) not in alarms]
        stored_at = _stored_at(urls, log)
        raised = {e: sorted(k for (s, who, k) in stored_at if s == ALERTS_STREAM and who == e)
                  for e in missing}  # fmt: skip
        log(f"  {len(centre.incidents)} alarms at the call centre; stopping")
        takeovers = _detect_takeovers(workers.root)

    (m0, cpu0), (m1, cpu1) = marks[0], marks[-1]
    wall = steady.wall[1] - steady.wall[0]
    # The load is what one simulated second holds; a publisher that fell behind real time
    # offered less than that per wall second: CPU per 10,000 elders is scaled by the
    # traffic actually carried, not by the elders configured.
    per_sim_second = offered[0] / seconds
    pace = steady.published / wall / per_sim_second
    scale = PER_10K / elders / pace
    per_10k = {k: round((cpu1[k] - cpu0[k]) / (m1 - m0) * scale, 2) for k in cpu1}
    times, missed, duplicated = _latencies(steady, fleet, alarms, stored_at)
    ms = [(b - a) * 1e3 for a, _, _, b in times]
    report["steady"] = {
        "messages_per_s": round(steady.published / wall),
        "messages_per_s_real_time": round(per_sim_second),
        "real_time_pace": round(pace, 2),
        "alert_latency_ms": _summary(ms),
        **_parts(times),
        "meets_p99_target": bool(ms) and percentile(ms, 0.99) <= LATENCY_P99_TARGET_MS,
        "missed": missed,
        "duplicated": duplicated,
        "cpu_cores_per_10k_elders": per_10k,
        "cpu_cores_per_10k_elders_total": round(sum(per_10k.values()), 2),
    }
    log(
        f"steady: {report['steady']['messages_per_s']:,} messages/s ({pace:.2f} of real time, "
        f"{per_sim_second:,.0f}/s); alert latency (message → "
        f"call centre) {_fmt(report['steady']['alert_latency_ms'])} (target p99 ≤ "
        f"{LATENCY_P99_TARGET_MS:.0f} ms); missed {len(missed)}, duplicated {len(duplicated)}"
    )
    log("  " + _fmt_parts(report["steady"]))
    log("  CPU, cores per 10,000 elders: " + ", ".join(f"{k} {v}" for k, v in per_10k.items())
        + f" (total {report['steady']['cpu_cores_per_10k_elders_total']})")  # fmt: skip
    all_missed, all_dup = list(missed), list(duplicated)
    report["chaos"] = []
    for phase in phases:
        times, missed, duplicated = _latencies(phase.plan, fleet, alarms, stored_at)
        began = phase.plan.wall[0]
        all_missed += missed
        all_dup += duplicated
        after = [b for a, _, _, b in times if a >= phase.killed_at]
        ms = [(b - a) * 1e3 for a, _, _, b in times]
        latency = _summary(ms)
        figures: dict[str, Any] = {
            "phase": phase.name,
            "killed": phase.what,
            "takeover_s": round(min(after) - phase.killed_at, 2) if after else None,
            "alert_latency_ms": latency,
            **_parts(times),
            "meets_p99_target": bool(ms) and percentile(ms, 0.99) <= TAKEOVER_P99_TARGET_MS,
            "presses": len(phase.plan.sos),
            "missed": missed,
            "duplicated": duplicated,
            "messages_per_s": round(phase.plan.published / (phase.plan.wall[1] - began)),
        }
        if phase.name == NODE_KILLED and elections:
            figures["elections"] = elections
        report["chaos"].append(figures)
        log(f"{phase.name} ({phase.what}): first alarm of a press after the kill "
            f"{figures['takeover_s']} s after it; alert latency "
            f"{_fmt(latency)} "
            f"(target p99 ≤ {TAKEOVER_P99_TARGET_MS / 1e3:.0f} s); missed {len(missed)}, "
            f"duplicated {len(duplicated)}")  # fmt: skip
        log("  " + _fmt_parts(figures))
        if "elections" in figures:
            e = figures["elections"]
            log(f"  the killed node led {len(e['led_by_the_killed_node'])} streams and "
                f"consumers: a leader again after {_spread(list(e['leader_again_s'].values()))}"
                f" ({', '.join(f'{k} {v} s' for k, v in e['leader_again_s'].items())}); "
                f"none yet: {e['not_led_again']}")  # fmt: skip
    report["detect_takeovers"] = takeovers
    log(f"detect: {takeovers['takeovers']} partitions taken ({takeovers['taken_back']} back "
        f"from the state kept), {takeovers['lost']} pins lost, {takeovers['gaps']} gaps "
        f"(messages handed out that never came)")  # fmt: skip
    report["losses"] = {
        "acknowledged_readings": published,
        "stored_in_influxdb": stored,
        "readings_lost": published - stored,
        "events_injected": injected,
        "falls_not_completed": len(steady.falls) - len(falls),
        "alerts_missed": len(all_missed),
        "alerts_duplicated": len(all_dup),
        "fleet_reconnects": fleet.stats.reconnects,
        "detect_backlog_at_end": behind,
        "workers_exited_by_themselves": workers.exits,
        "source_watchdog_step_downs": watchdog[0].stats.step_downs if watchdog else None,
        "missed_in_alerts_stream": {e: k for e, k in raised.items() if k},
    }
    if watchdog:
        log(f"source watchdog: step-downs asked {watchdog[0].stats.step_downs or 'none'}")
    log(f"losses: {published:,} readings acknowledged, {stored:,} stored ({published - stored} "
        f"lost); {injected} SOS presses and falls injected, {len(all_missed)} not alerted, "
        f"{len(all_dup)} alerted twice")  # fmt: skip
    return report


def _detect_takeovers(root: Path) -> dict[str, int]:
    """What the detect workers' status files say of their partitions, all workers together
    (a killed worker's last status stays; one started again in its folder starts from 0):
    partitions taken, taken back from the state kept, pins lost, gaps."""
    keys = ("takeovers", "taken_back", "lost", "gaps")
    total = dict.fromkeys(keys, 0)
    for path in sorted(root.glob("detect-*/detect.json")):
        status = read_status(path) or {}
        for key in keys:
            total[key] += int(status.get(key, 0))
    return total


def _parts(times: list[tuple[float, float, float, float]]) -> dict[str, dict[str, float]]:
    """An alert latency's parts: the broker's (published to stored in TELEMETRY: MQTT,
    ``$MQTT_msgs``, the source; SOS presses only), detect's (TELEMETRY, or the press for a
    fall, to ALERTS) and escalation's (ALERTS to the call centre)."""
    known = [t for t in times if not math.isnan(t[2])]
    return {
        "to_telemetry_ms": _summary([(t - a) * 1e3 for a, t, _, _ in known if not math.isnan(t)]),
        "telemetry_to_alerts_ms": _summary(
            [(s - t) * 1e3 for _, t, s, _ in known if not math.isnan(t)]
        ),
        "to_alerts_ms": _summary([(s - a) * 1e3 for a, _, s, _ in known]),
        "alerts_to_centre_ms": _summary([(b - s) * 1e3 for _, _, s, b in known]),
    }


def _fmt_parts(figures: dict[str, Any]) -> str:
    return (f"SOS presses to TELEMETRY (broker) {_fmt(figures['to_telemetry_ms'])}; TELEMETRY "
            f"to ALERTS (detect) {_fmt(figures['telemetry_to_alerts_ms'])}; ALERTS to the call "
            f"centre (escalation) {_fmt(figures['alerts_to_centre_ms'])}")  # fmt: skip


def _spread(values: list[float]) -> str:
    return f"{min(values)}–{max(values)} s" if values else "none"


def _fmt(s: dict[str, float]) -> str:
    if not s.get("n"):
        return "none matched"
    return f"p50 {s['p50']:.0f} ms / p99 {s['p99']:.0f} ms / max {s['max']:.0f} ms (n {s['n']})"

"""Issue 15, part 6: the city's pipeline survives a kill -9 of any one machine, in turn.

ONE real pipeline on loopback, shared by every phase (to stay within CI's time):
the 3-node :class:`~harness.servers.LocalNatsCluster` (R3, an fsync before each
acknowledgement), provisioned before any device connects with one district whose
readings go to a pair of InfluxDBs (consumers ``ingest-d1-primary`` and
``ingest-d1-replica``, two ``homecare ingest`` workers on each); two ``homecare detect``
workers sharing TELEMETRY's partitions; ``homecare escalate --store cluster`` active and
standby (:class:`test_escalation_failover.Pair`); the call centre's stand-in recording;
simulated elders publishing in real time over MQTT 3.1.1 at QoS 1 through gateway links
to the first node (:class:`~bench.detect.TimedFleet`, as ``homecare bench city`` does).

Phases, each while the elders publish, each with SOS presses (and one fall) injected at
known times around its kill:

1. the node that leads TELEMETRY (moved off the devices' node first), started again;
2. the node that leads ``$MQTT_msgs`` (where the devices' QoS 1 publishes are stored
   before TELEMETRY sources them), started again;
3. a detect worker between a fall's impact and the end of its stillness window (the
   frame with the impact published and read; the fall not yet alerted), started again
   as a supervisor would;
4. an ingest worker of the primary's consumer, mid-batch (batches held up to 0.5 s);
5. the primary InfluxDB of the pair, started again after a few seconds;
6. the active escalate between an alert's arrival and its delivery: the call centre
   holds its answer, escalate is killed with the request in flight; the standby takes
   over.

An escalate process that exits is started again at once (:class:`Supervisor`, as
compose's ``restart: unless-stopped``): a node's kill can end one. The active exits by
design when it cannot renew its lease (the lease bucket's new Raft leader may take
longer to be elected than the lease lasts), and a process that binds its consumer or
opens its buckets while a stream has no leader exits on the request's timeout; the test
prints which exited.

At the end, once everything has drained: every reading the broker acknowledged to a
device (PUBACK) is stored exactly once in each InfluxDB of the pair (per elder); every
injected SOS and fall produced exactly one alert in ALERTS; every alert reached the call
centre exactly once (one incident per alert, under one idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
import numpy as np
import pytest
import yaml
from support import wait_for
from test_detect_service import stored_alerts
from test_escalation_failover import LEASE_S, Pair

from bench.detect import FALLS, Plan, TimedFleet, fall_frames
from bench.escalate import bench_registry
from bench.ingest import STORED, published_readings
from broker.provision import provision, provision_districts
from device_sim.fleet import FleetStats
from device_sim.homes import Motion, SimConfig, Simulation, SosPress
from device_sim.motions import motion
from device_sim.routine import Posture, daytime
from device_sim.signals import to_device_frame
from harness.demo import ServiceProcess
from harness.servers import LocalInflux, LocalNatsCluster, ServerError
from harness.standins import CallCentreStandIn, Reply
from homecare.errors import ServiceError
from homecare.influx import InfluxClient
from homecare.jetstream import MQTT_STREAM, TELEMETRY_STREAM, partition_of
from homecare.query import call, select
from homecare.settings import DistrictSettings, InfluxSettings, MqttSettings, NatsSettings, Settings
from homecare.status import read_status

pytestmark = pytest.mark.integration

SITE = "city"
DISTRICT = "d1"
PARTITIONS = 4
ELDERS = 24
ACK_WAIT_S = 5.0
"""A taken, unacknowledged reading is delivered again after this (a killed worker's batch)."""
CENTRE_HOLDS_S = 3.0
"""How long the call centre holds its answer in the escalate phase (below escalate's 5 s
timeout: the request is in flight, not failed, when escalate is killed)."""
SECRET = "city-failures-secret"
T = TypeVar("T")


@dataclass
class Phase:
    """One kill: what was injected around it (``plan``), what was killed, and what was
    checked before the kill (why it fell where it should)."""

    name: str
    plan: Plan
    killed: str = ""
    notes: list[str] = field(default_factory=list)


class Elders:
    """The simulated elders, publishing in real time on an event loop of their own (so the
    test kills and waits meanwhile); events are injected on that loop, at known times."""

    def __init__(self, sim: Simulation, url: str, watch: set[str]) -> None:
        self.sim = sim
        self.rng = np.random.default_rng(15)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping = False
        self.error: BaseException | None = None
        self.fleet: TimedFleet | None = None
        self.thread = threading.Thread(target=self._run, args=(url, watch), daemon=True)
        self.thread.start()
        if not self.ready.wait(120) or self.error is not None:
            raise AssertionError(f"the elders did not start publishing: {self.error!r}")

    def _run(self, url: str, watch: set[str]) -> None:
        try:
            self.loop.run_until_complete(self._publish(url, watch))
        except BaseException as exc:  # handed to the test thread by close()
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _publish(self, url: str, watch: set[str]) -> None:
        sim = self.sim
        async with TimedFleet(sim, url, gateways=2, client_prefix=f"city{time.time_ns()}",
                              offline_on_exit=False, watch=watch) as fleet:  # fmt: skip
            self.fleet = fleet
            if time.time() - sim.clock > 1.0:  # the devices' clock is the wall clock
                sim.step(float(math.floor(time.time())) - 1.0)
            await fleet.drain(120)
            self.ready.set()
            while not self.stopping:
                await fleet.run(seconds=1, speed=1.0)
            await fleet.drain(180)

    def _on_loop(self, fn: Callable[[], T]) -> T:
        async def call_it() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call_it(), self.loop).result(30)

    def sos(self, plan: Plan, i: int, lead_s: float = 1.0) -> str:
        """Elder ``i`` presses SOS ``lead_s`` from now (the simulation's clock)."""

        def inject() -> str:
            at = math.ceil(self.sim.clock) + lead_s
            self.sim.inject(i, at, SosPress())
            elder = self.sim.elders[i].elder
            plan.sos[elder] = at
            return elder

        return self._on_loop(inject)

    def fall(self, plan: Plan, i: int, lead_s: float = 1.0) -> tuple[str, float]:
        """Elder ``i`` falls (and lies still) from ``lead_s`` from now: the elder and the
        instant of the impact (simulated time: the wall clock)."""
        _, xyz, label = motion(FALLS[1], self.rng, rate=self.sim.config.rate)
        accel = to_device_frame(xyz.astype(np.float64)).astype(np.float32)

        def inject() -> tuple[str, float]:
            at = float(math.ceil(self.sim.clock) + lead_s)
            self.sim.inject(i, at, Motion(accel, then=Posture.PRONE, hold_s=120.0))
            elder = self.sim.elders[i].elder
            plan.falls[elder] = at
            return elder, at + float(label["impact_t"])

        return self._on_loop(inject)

    def flowing(self, timeout_s: float) -> None:
        """Wait until the devices' messages are acknowledged within about two seconds of
        being handed over (after a node's kill their links may still be reconnecting)."""

        def behind() -> int:
            return self.fleet.outstanding if self.fleet is not None else 1 << 30

        limit = 2 * len(self.sim.elders) * 2
        wait_for(lambda: self._on_loop(behind) <= limit, timeout_s, "the devices acknowledged")

    def close(self) -> FleetStats:
        """Stop stepping, wait until every message is acknowledged; what was."""
        self.stopping = True
        self.thread.join(240)
        if self.error is not None:
            raise self.error
        assert self.fleet is not None
        return self.fleet.stats


class Services:
    """The service processes (``homecare ingest|detect``), each with its state folder."""

    def __init__(self, settings: Settings, root: Path, env: dict[str, str]) -> None:
        self.settings, self.root, self.env = settings, root, env
        self.procs: dict[str, ServiceProcess] = {}
        self.starts = 0

    def ingest(self, replica: str, k: int) -> str:
        name = f"ingest-{replica}-{k}"
        state = self.root / name
        self._start(name, "ingest", state / f"ingest-{DISTRICT}-{replica}-w{k}.json",
                    ["--district", DISTRICT, "--replica", replica, "--instance", f"w{k}"],
                    HOMECARE_INGEST__BATCH_INTERVAL_S="0.5")  # fmt: skip
        return name

    def detect(self, k: int) -> str:
        name = f"detect-{k}"
        self._start(name, "detect", self.root / name / "detect.json", [],
                    HOMECARE_DETECT__GRACE_S="0", HOMECARE_DETECT__CLOCK="wall",
                    HOMECARE_DETECT__SAVE_EVERY_S="1")  # fmt: skip
        return name

    def _start(self, name: str, command: str, ready: Path, args: list[str], **extra: str) -> None:
        for attempt in range(3):  # a loaded machine: a slow start is tried again
            self.starts += 1
            log = self.root / f"{name}-{self.starts}.log"
            try:
                self.procs[name] = ServiceProcess(
                    command, self.settings, log, ready=ready, args=args,
                    HOMECARE_STATE_DIR=str(ready.parent), **self.env, **extra,
                )  # fmt: skip
                return
            except ServiceError:
                if attempt == 2:
                    raise

    def status(self, name: str) -> dict[str, Any]:
        proc = self.procs[name]
        if proc.proc.poll() is not None:
            return {}
        return read_status(self.root / name / "detect.json") or {}

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name).proc
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


class Supervisor:
    """Starts again every escalate process that exits, as compose's ``restart:
    unless-stopped`` does (an active that loses its lease exits by design: its lease
    bucket's leader may take longer to be elected again than the lease lasts); counts."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.lock = threading.Lock()
        self.exits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with self.lock:
                for p in [p for p in self.pair.procs if p.proc.poll() is not None]:
                    lines = p.log.read_text(errors="replace").strip().splitlines()
                    self.exits.append(f"{p.name} exit {p.proc.returncode}: "
                                      f"{lines[-1][-160:] if lines else ''}")  # fmt: skip
                    self.pair.procs.remove(p)
                    self.pair.procs.append(self.pair.start())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _parallel(*starts: Callable[[], Any]) -> None:
    with ThreadPoolExecutor(len(starts)) as pool:
        for future in [pool.submit(s) for s in starts]:
            future.result()


def _stored_by_elder(influx: LocalInflux) -> dict[str, int] | None:
    """Points of readings per elder in one InfluxDB (None: it does not answer)."""
    out: dict[str, int] = {}
    try:
        with InfluxClient(InfluxSettings(url=influx.url, timeout_s=5.0)) as db:
            for m in STORED:
                for series in db.query(str(select(m.name, call("count", m.always))
                                           .group_by("elder"))):  # fmt: skip
                    elder = series["tags"]["elder"]
                    out[elder] = out.get(elder, 0) + int(series["values"][0][1])
    except Exception:  # down, starting, or no database yet
        return None
    return out


def _alarms_for(centre: CallCentreStandIn, elder: str) -> list[Any]:
    return [r for r in centre.requests
            if isinstance(r.json, dict) and (r.json.get("caller") or {}).get("id") == elder
            and r.json.get("type") == "alarm"]  # fmt: skip


def _last_seq(url: str) -> int:
    """TELEMETRY's last sequence (its messages are removed once every consumer has them)."""

    async def get() -> int:
        nc = await nats.connect(url, connect_timeout=5)
        try:
            info = await nc.jetstream(timeout=5).stream_info(TELEMETRY_STREAM)
            return int(info.state.last_seq or 0)
        finally:
            await nc.close()

    return asyncio.run(get())


def _restart_node(nodes: LocalNatsCluster, i: int) -> None:
    """Start node ``i`` again; ready once caught up (a loaded machine may need two tries)."""
    for attempt in range(3):
        try:
            nodes.start(i)
            return
        except ServerError:
            if attempt == 2:
                raise


@contextlib.contextmanager
def _pipeline(root: Path) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        nodes = stack.enter_context(LocalNatsCluster(root / "nats"))
        primary = stack.enter_context(LocalInflux(root / "influx-a"))
        replica = stack.enter_context(LocalInflux(root / "influx-b"))
        centre = stack.enter_context(CallCentreStandIn())
        districts = {DISTRICT: DistrictSettings(sites=[SITE], primary=primary.url,
                                                replica=replica.url)}  # fmt: skip
        done = provision(nodes.urls, mqtt_url=nodes.mqtt_url, partitions=PARTITIONS,
                         ack_wait_s=ACK_WAIT_S, replicas=nodes.replicas, consumers=(),
                         timeout_s=60)  # fmt: skip
        assert done.source.ok, done.source.detail
        provision_districts(nodes.urls, districts, ack_wait_s=ACK_WAIT_S,
                            replicas=nodes.replicas, timeout_s=60)  # fmt: skip
        for db in (primary, replica):
            with InfluxClient(InfluxSettings(url=db.url)) as client:
                client.create_database()
        start = float(math.floor(time.time()))
        sim = Simulation(SimConfig(elders=ELDERS, seed=15, site=SITE, start=start,
                                   utc_offset_s=daytime(start)))  # fmt: skip
        registry = bench_registry(centre.url, [e.elder for e in sim.elders])
        for elder in registry["elders"]:
            elder["site"] = SITE
        (root / "registry.yaml").write_text(yaml.safe_dump(registry))
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            state_dir=root / "state", site=SITE,
            nats=NatsSettings(url=nodes.urls, partitions=PARTITIONS),
            mqtt=MqttSettings(url=nodes.mqtt_url), influx=InfluxSettings(url=primary.url),
        )  # fmt: skip
        env = {"HOMECARE_DISTRICTS": json.dumps({k: v.model_dump() for k, v in districts.items()})}
        services = Services(settings, root, env)
        stack.callback(services.stop)
        pair_env = {
            **env, "HOMECARE_NATS__URL": nodes.urls, "HOMECARE_MQTT__URL": nodes.mqtt_url,
            "HOMECARE_MQTT__CLIENT_ID": "city-escalate", "HOMECARE_INFLUX__URL": primary.url,
            "HOMECARE_REGISTRY": str(root / "registry.yaml"), "HOMECARE_ESCALATE__SECRET": SECRET,
            "HOMECARE_ESCALATE__LEASE_S": str(LEASE_S), "HOMECARE_ESCALATE__HEARTBEAT_S": "3600",
            "HOMECARE_ESCALATE__CALL_CENTRE__TIMEOUT_S": "5",
            "HOMECARE_ESCALATE__CALL_CENTRE__BACKOFF_S": "0.1",
        }  # fmt: skip
        pairs: list[Pair] = []
        try:
            _parallel(
                lambda: services.ingest("primary", 0), lambda: services.ingest("primary", 1),
                lambda: services.ingest("replica", 0), lambda: services.ingest("replica", 1),
                lambda: services.detect(0), lambda: services.detect(1),
                lambda: pairs.append(Pair(root / "escalate", pair_env)),
            )  # fmt: skip
            yield {"nodes": nodes, "primary": primary, "replica": replica, "centre": centre,
                   "sim": sim, "services": services, "pair": pairs[0]}  # fmt: skip
        finally:
            for pair in pairs:
                pair.stop()


def test_a_kill_9_of_each_machine_in_turn_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with _pipeline(tmp_path) as world:
        nodes: LocalNatsCluster = world["nodes"]
        centre: CallCentreStandIn = world["centre"]
        services: Services = world["services"]
        pair: Pair = world["pair"]
        sim: Simulation = world["sim"]
        url0 = nodes.nodes[0].url  # the devices' node: never killed
        who = iter(range(ELDERS))  # one elder per event: one alert each
        phases: list[Phase] = []
        watch = {sim.elders[i].elder for i in range(12)}
        supervisor = Supervisor(pair)
        elders = Elders(sim, nodes.mqtt_url, watch)
        settled_at = time.monotonic()
        try:
            # 1, 2: the node leading TELEMETRY, then the one leading $MQTT_msgs
            for stream in (TELEMETRY_STREAM, MQTT_STREAM):
                phase = Phase(f"node leading {stream}", Plan(stream))
                phases.append(phase)
                victim = nodes.step_down(stream, avoid=0, timeout_s=30)
                elders.sos(phase.plan, next(who), lead_s=1.0)
                time.sleep(2.0)
                nodes.kill(victim)
                phase.killed = f"n{victim + 1}"
                elders.sos(phase.plan, next(who), lead_s=1.0)  # pressed while it is down
                time.sleep(3.0)
                _restart_node(nodes, victim)

            # 3: a detect worker between a fall's impact and the end of its stillness window
            phase = Phase("detect worker", Plan("detect"))
            phases.append(phase)
            i = next(who)
            elders.flowing(60)  # so that the impact's frame is in TELEMETRY when read below

            def balanced() -> bool:  # the nodes' kills may have moved partitions
                held = [services.status(n).get("partitions", []) for n in ("detect-0", "detect-1")]
                return sorted(p for h in held for p in h) == list(range(PARTITIONS)) and all(
                    len(h) == PARTITIONS // 2 for h in held
                )

            wait_for(balanced, 60, "the detect workers holding two partitions each")
            fallen, impact = elders.fall(phase.plan, i, lead_s=1.0)
            part = partition_of(fallen, PARTITIONS)
            elders.sos(phase.plan, next(who), lead_s=impact - time.time() + 4.0)
            time.sleep(max(0.0, impact + 2.0 - time.time()))  # the impact's frame published
            seen = _last_seq(url0)

            holder: list[str] = []

            def read_by_holder() -> bool:
                """The worker holding the fall's partition now has read past the impact
                (partitions may still move between workers after the nodes' kills)."""
                for name in ("detect-0", "detect-1"):
                    status = services.status(name)
                    done = (status.get("sequences") or {}).get(str(part), [0])[0]
                    if part in status.get("partitions", []) and int(done) >= seen:
                        holder[:] = [name]
                        return True
                return False

            wait_for(read_by_holder, 15, f"the worker holding partition {part} reading the impact")
            victim_name = holder[0]
            assert not [a for a in stored_alerts(url0) if a.elder == fallen], "alerted too soon"
            services.kill(victim_name)
            killed_at = time.time()
            phase.killed = f"{victim_name} (holding partition {part})"

            # 4: an ingest worker of the primary's consumer, mid-batch (while 3 takes over)
            phase4 = Phase("ingest worker", Plan("ingest"))
            phases.append(phase4)
            elders.sos(phase4.plan, next(who), lead_s=1.0)
            time.sleep(1.5)
            services.kill("ingest-primary-0")
            phase4.killed = "ingest-primary-0"
            elders.sos(phase4.plan, next(who), lead_s=1.0)

            # 5: the primary InfluxDB, started again after a few seconds
            phase5 = Phase("primary InfluxDB", Plan("influx"))
            phases.append(phase5)
            time.sleep(1.0)
            world["primary"].kill()
            phase5.killed = "influxd (primary)"
            elders.sos(phase5.plan, next(who), lead_s=1.0)
            time.sleep(3.0)  # the readings wait in the stream for it
            world["primary"].start()

            # the killed detect worker is started again, as a supervisor would: its
            # partitions come back to it (one more handover) while the rest goes on
            again = threading.Thread(target=services.detect, args=(int(victim_name[-1]),))
            again.start()

            # 6: the active escalate, with an alarm in flight to the call centre
            phase6 = Phase("active escalate", Plan("escalate"))
            phases.append(phase6)
            expected = [(e, "sos") for p in phases for e in p.plan.sos]
            expected += [(e, "fall") for p in phases for e in p.plan.falls]
            wait_for(lambda: len(centre.incidents) >= len(expected), 60, "the alarms so far")
            pair.wait_standby()
            centre.default = Reply(delay_s=CENTRE_HOLDS_S)
            pressed = elders.sos(phase6.plan, next(who), lead_s=1.0)
            wait_for(lambda: bool(_alarms_for(centre, pressed)), 20, "the alarm in flight")
            with supervisor.lock:
                assert not centre.incidents_for(_alarms_for(centre, pressed)[0].json["alert_id"])
                _, took = pair.fail_over()
            centre.default = Reply()
            phase6.killed = "the active escalate"
            phase6.notes.append(f"standby took over in {took:.1f} s")
            again.join(90)
        finally:
            stats = elders.close()
            supervisor.stop()
        traffic_s = time.monotonic() - settled_at

        # the fall was confirmed after the kill (its stillness window ended later)
        assert elders.fleet is not None
        confirmed = fall_frames(elders.fleet.sent, fallen)
        assert confirmed is not None, "the fall was not confirmed by the frames"
        phase.notes.append(f"impact {impact:.1f}, kill {killed_at:.1f}, "
                           f"stillness window over {confirmed[1]:.1f}")  # fmt: skip
        assert impact < killed_at < confirmed[1], phase.notes

        # Every acknowledged reading, exactly once, in each InfluxDB of the pair (per elder)
        acked = {e.elder: stats.per_elder.get(e.elder, 0) - len(e.devices) for e in sim.elders}
        assert sum(acked.values()) == published_readings(stats)
        for db in ("primary", "replica"):
            wait_for(lambda db=db: _stored_by_elder(world[db]) == acked, 90,
                     f"every acknowledged reading in the {db}")  # fmt: skip
        stored_at = time.monotonic()

        # Every injected SOS and fall: exactly one alert, delivered once to the call centre
        expected = [(e, "sos", p.name) for p in phases for e in p.plan.sos]
        expected += [(e, "fall", p.name) for p in phases for e in p.plan.falls]
        wait_for(lambda: len(centre.incidents) >= len(expected), 60, "every alarm")
        # a duplicate alarm, or a late redelivery of readings, would show now
        time.sleep(max(2.0, stored_at + ACK_WAIT_S + 1.0 - time.monotonic()))
        for db in ("primary", "replica"):
            assert _stored_by_elder(world[db]) == acked, db
        raised: dict[tuple[str, str], set[str]] = {}
        for alert in stored_alerts(url0):
            if alert.kind in ("sos", "fall"):
                raised.setdefault((alert.elder, alert.kind), set()).add(alert.id)
        wrong = {
            f"{phase}: {elder} {kind}": sorted(raised.get((elder, kind), set()))
            for elder, kind, phase in expected
            if len(raised.get((elder, kind), ())) != 1
        }
        assert not wrong, f"alerts per injected event (want one each): {wrong}"
        assert len(raised) == len(expected), f"alerts nobody injected: {raised}"
        for elder, kind, phase in expected:
            [alert_id] = raised[(elder, kind)]
            got = centre.incidents_for(alert_id)
            assert len(got) == 1, f"{phase}: {alert_id} opened {len(got)} incidents"
        assert len([i for i in centre.incidents if i.kind in ("sos", "fall")]) == len(expected)
        print(
            f"\n{len(phases)} kills in {traffic_s:.0f} s of traffic; "
            f"{sum(acked.values())} readings acknowledged, stored once in each InfluxDB; "
            f"{len(expected)} SOS and falls, one alert and one incident each; "
            + "; ".join(f"{p.name}: {p.killed} {' '.join(p.notes)}" for p in phases)
            + f"; escalate processes that exited (started again): {supervisor.exits}"
        )

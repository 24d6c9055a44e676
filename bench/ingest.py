"""``homecare bench ingest``: ingest throughput against a bare JetStream consumer, in one run.

Everything runs on this machine against a real NATS Server (JetStream file store, MQTT
listener) and influxd that the benchmark starts and provisions as ``homecare broker
provision`` does, before any device connects: TELEMETRY sourcing ``$MQTT_msgs``, the
durable consumer ``ingest`` and, for the ceiling, a second durable consumer of the same
stream (``bench-bare``). The subscriber under test gets the first core; InfluxDB and the
publishing fleet share the others (on 2 cores: the second); nats-server may run on every
core. Simulated elders' traffic (frames, bed readings, door events, status) is published over
MQTT 3.1.1 at QoS 1 by the simulator's fleet in gateway mode, at 10:00 the elders' time
(wearables charge at night), their clock starting hours back so that traffic rendered
ahead of time is never in the future.

1. **Capacity.** ``--seconds`` of traffic for ``--elders`` is published and stored in
   TELEMETRY for both durable consumers. Each then drains it alone: the bare consumer
   (a nats-py pull loop that only counts and acknowledges each message) first, then
   ``homecare ingest`` as its own process. The rates are messages received (bare) or
   stored and acknowledged (ingest) per second between the first message and the last;
   the ratio ingest/bare is printed. Neither competes with the publisher for CPU.
   The bare consumer is deleted afterwards, so that TELEMETRY (interest retention)
   drops what ingest acknowledged, as in production.
2. **Real time.** ``--elders`` publish at real-time speed for ``--live-seconds`` while
   ingest runs: offered rate, stored rate, the lag (published − stored), and the CPU of
   each component (nats-server, ingest, influxd, and the publishing fleet) per 10,000
   elders in real time: CPU seconds per second, i.e. cores.
3. **Overload.** Twice ingest's capacity over ``--live-seconds``, two ways: *live*, all
   of it published at 2× capacity while ingest runs; *queued*, half of it waiting in
   TELEMETRY when ingest starts (as after an outage) and half published live at
   capacity. The traffic is rendered by the simulator beforehand and then published on
   schedule (:meth:`Fleet.offer`): on 2 cores, simulating 2× live would take the CPU
   that the broker and InfluxDB need. Reported per way: offered and stored rates (from
   the first whole second to the last), stored against capacity, each process's share
   of a core and which side ran out of CPU (``bottleneck``: when it is not ingest, the
   ratio measures the machine, not ingest), ingest's memory, and what the broker still
   held; once everything has drained, every published reading is counted back in
   InfluxDB, and dead letters are counted too.
4. **Two processes.** Two ingest processes bound to the one durable consumer, one per
   core, offered twice one process's capacity live: their stored rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import psutil

from broker.provision import provision
from device_sim.fleet import Fleet, FleetStats
from device_sim.homes import SimConfig, Simulation
from device_sim.routine import daytime
from harness.servers import LocalInflux, LocalNats
from homecare import contract
from homecare.influx import InfluxClient
from homecare.jetstream import INGEST_CONSUMER, TELEMETRY_STREAM
from homecare.query import call, select
from homecare.runtime import start_process, stop_process
from homecare.schema import Bed, Button, DeadLetter, DeviceStatus, Door, Measurement, Wearable
from homecare.settings import InfluxSettings
from homecare.status import read_status

INGEST_ID = "bench-ingest"
BARE_CONSUMER = "bench-bare"
"""The ceiling's own durable consumer of TELEMETRY."""
BATCH = 5000
"""Messages the bare consumer asks for at once (ingest's default batch size)."""
PARTITIONS = 64
MAX_ACK_PENDING = 20_000
ACK_WAIT_S = 30.0
PER_10K = 10_000
HISTORY_S = 6 * 3600
BUSY = 0.9
"""A core this busy has no room left."""
STORED = (Wearable, Bed, Door, Button, DeviceStatus)
"""The measurements of readings (availability is not a reading)."""


CORES = sorted(os.sched_getaffinity(0))
SUBSCRIBER_CORE = {CORES[0]}
OTHER_CORES = set(CORES[1:]) or SUBSCRIBER_CORE


def _pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of a process: affinity is per thread, and influxd (Go) has
    started its threads by the time we pin it."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cores)


def _bare_session(url: str, *, drain: int, result: Any = None) -> None:
    """The ceiling: a nats-py pull loop on its own durable consumer of TELEMETRY that only
    counts and acknowledges each message (``+ACK``, as ingest does), until ``drain``
    messages (or 15 s without any)."""

    async def pull() -> dict[str, Any]:
        nc = await nats.connect(url, name=BARE_CONSUMER)
        try:
            sub = await nc.jetstream().pull_subscribe_bind(BARE_CONSUMER, TELEMETRY_STREAM)
            proc = psutil.Process()
            cpu0 = sum(proc.cpu_times()[:2])
            seen, first, last = 0, 0.0, 0.0
            idle_since = time.monotonic()
            while seen < drain:
                try:
                    msgs = await sub.fetch(BATCH, timeout=1.0)
                except TimeoutError:
                    if time.monotonic() - idle_since > 15:
                        break
                    continue
                if seen == 0:
                    first = time.time()
                for msg in msgs:
                    await msg.ack()
                seen += len(msgs)
                last, idle_since = time.time(), time.monotonic()
            await nc.flush()
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            return {"messages": seen, "first_at": first, "last_at": last, "cpu_s": cpu}
        finally:
            await nc.close()

    out = asyncio.run(pull())
    if result is not None:
        result.put(out)


def _drain_bare(url: str, expected: int) -> dict[str, Any]:
    queue: mp.Queue[dict[str, Any]] = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=_bare_session, args=(url,), kwargs={"drain": expected, "result": queue}
    )
    try:
        proc.start()
        assert proc.pid is not None  # set by start()
        _pin(proc.pid, SUBSCRIBER_CORE)
        out = queue.get(timeout=900)
        proc.join()
    finally:
        stop_process(proc)
    return out


def _delete_bare(url: str) -> None:
    """Drop the ceiling's durable consumer once measured: TELEMETRY keeps a message only
    while some consumer still wants it."""

    async def delete() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_consumer(TELEMETRY_STREAM, BARE_CONSUMER)
        finally:
            await nc.close()

    asyncio.run(delete())


class BrokerWatch:
    """Samples, once a second on a thread of its own, where the readings wait in the
    broker: TELEMETRY's source lag (published to ``$MQTT_msgs``, not yet copied into
    TELEMETRY) and ingest's backlog (in TELEMETRY, not yet handed to ingest). Tells a
    slow source from a slow ingest."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.source_lag: list[int] = []
        self.backlog: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)

    async def _watch(self) -> None:
        nc = await nats.connect(self.url, name="bench-watch")
        try:
            js = nc.jetstream()
            while not self._stop.is_set():
                info = await js.stream_info(TELEMETRY_STREAM)
                self.source_lag.append(sum(src.lag or 0 for src in info.sources or ()))
                consumer = await js.consumer_info(TELEMETRY_STREAM, INGEST_CONSUMER)
                self.backlog.append(int(consumer.num_pending or 0))
                await asyncio.sleep(1.0)
        finally:
            await nc.close()

    def __enter__(self) -> BrokerWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def summary(self) -> dict[str, int]:
        return {
            "source_lag_max": max(self.source_lag, default=0),
            "source_lag_end": self.source_lag[-1] if self.source_lag else 0,
            "ingest_backlog_max": max(self.backlog, default=0),
            "ingest_backlog_end": self.backlog[-1] if self.backlog else 0,
        }


@dataclass
class IngestProc:
    """``homecare ingest`` as its own process (in a session of its own, as the servers):
    a context manager that stops it on exit if it still runs."""

    proc: subprocess.Popen[bytes]
    status: Path

    @classmethod
    def start(
        cls,
        broker: LocalNats,
        influx: LocalInflux,
        state: Path,
        *,
        instance: str = "",
        cores: set[int] = SUBSCRIBER_CORE,
    ) -> IngestProc:
        env = {
            **os.environ,
            "HOMECARE_NATS__URL": broker.url,
            "HOMECARE_MQTT__CLIENT_ID": INGEST_ID,
            "HOMECARE_INFLUX__URL": influx.url,
            "HOMECARE_STATE_DIR": str(state),
        }
        status = state / f"ingest-{instance or 'main'}.json"
        status.unlink(missing_ok=True)
        proc: subprocess.Popen[bytes] | None = None
        try:
            with (state / "ingest.log").open("ab") as log:
                proc = start_process(
                    [sys.executable, "-m", "cli", "ingest", "--instance", instance],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                )
            _pin(proc.pid, cores)
            deadline = time.monotonic() + 60
            while not status.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ingest did not start, see {state / 'ingest.log'}")
                time.sleep(0.05)
        except BaseException:
            if proc is not None:
                stop_process(proc)
            raise
        return cls(proc, status)

    def read(self) -> dict[str, Any]:
        status = read_status(self.status)
        if status is None:
            raise RuntimeError(f"no ingest status in {self.status}")
        return status

    def wait_for(self, messages: int, timeout_s: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (status := self.read())["messages"] < messages:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"ingest stored {status['messages']} of {messages}")
            time.sleep(0.2)
        return status

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 60 s); ingest writes its final status on the way out."""
        stop_process(self.proc, timeout_s=60)

    def __enter__(self) -> IngestProc:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _count(influx: LocalInflux, measurements: Iterable[type[Measurement]]) -> int:
    """Points stored in these measurements (by a field every point has)."""
    with InfluxClient(InfluxSettings(url=influx.url)) as db:
        total = 0
        for m in measurements:
            series = db.query(str(select(m.name, call("count", m.always))))
            total += int(series[0]["values"][0][1]) if series else 0
        return total


def stored_readings(influx: LocalInflux) -> int:
    """Points InfluxDB holds in the reading measurements (what ingest stored)."""
    return _count(influx, STORED)


def published_readings(stats: FleetStats) -> int:
    """Readings the broker acknowledged to the fleet, availability left out."""
    return sum(n for s, n in stats.per_stream.items() if s is not contract.Stream.AVAILABILITY)


def _fleet(sim: Simulation, url: str, gateways: int) -> Fleet:
    return Fleet(
        sim, url, gateways=gateways, client_prefix=f"bench{time.time_ns()}", offline_on_exit=False
    )


async def publish_run(
    sim: Simulation,
    url: str,
    gateways: int,
    seconds: float,
    speed: float | None,
    sample: Callable[[FleetStats], None] | None = None,
) -> FleetStats:
    """Publish ``seconds`` of the simulation through a fleet; return once all is acknowledged."""
    async with _fleet(sim, url, gateways) as fleet:
        await fleet.run(seconds=seconds, speed=speed, on_second=sample)
        await fleet.drain(300)
    return fleet.stats


async def _offer(
    sim: Simulation,
    url: str,
    gateways: int,
    messages: list[tuple[contract.Topic, bytes]],
    rate: float,
    sample: Callable[[FleetStats], None],
) -> FleetStats:
    async with _fleet(sim, url, gateways) as fleet:
        await fleet.offer(messages, rate, on_second=sample)
        await fleet.drain(300)
    return fleet.stats


def _render(sim: Simulation, messages: int) -> list[tuple[contract.Topic, bytes]]:
    """Whole simulated seconds holding at least ``messages`` messages."""
    out: list[tuple[contract.Topic, bytes]] = []
    while len(out) < messages:
        out += sim.step(sim.clock, 1.0)
    return out


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far."""
    return {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}


def run(
    *, elders: int, seconds: int, live_seconds: int, gateways: int, seed: int, log: Any = print
) -> dict[str, Any]:
    """Run every phase; return the figures (also printed through ``log``)."""
    report: dict[str, Any] = {"elders": elders, "cores": os.cpu_count()}
    with (
        tempfile.TemporaryDirectory(prefix="homecare-bench-") as tmp,
        LocalNats(Path(tmp) / "nats") as broker,
        LocalInflux(Path(tmp) / "influxd") as influx,
        contextlib.ExitStack() as services,
    ):
        # The subscriber under test (the bare consumer, then ingest) gets a core that
        # InfluxDB and this publisher stay off. nats-server is left free on every core:
        # pinned to the other core beside them, TELEMETRY's source (its copy of
        # $MQTT_msgs) fell behind 10,000 elders in real time (106k messages in 15 s) while
        # ingest idled at a third of its core; free, the same run kept up.
        for pid in (os.getpid(), influx.pid):
            _pin(pid, OTHER_CORES)
        report["pinning"] = {
            "subscriber": sorted(SUBSCRIBER_CORE), "influxd_and_publisher": sorted(OTHER_CORES),
            "nats-server": sorted(CORES),
        }  # fmt: skip
        state = Path(tmp) / "state"
        state.mkdir()
        # Before any device connects: the MQTT streams, TELEMETRY and both durable
        # consumers, so TELEMETRY keeps every publish for both.
        done = provision(
            broker.url, mqtt_url=broker.mqtt_url, partitions=PARTITIONS, ack_wait_s=ACK_WAIT_S,
            max_ack_pending=MAX_ACK_PENDING, consumers=(INGEST_CONSUMER, BARE_CONSUMER),
            detect=False,
        )  # fmt: skip
        if not done.source.ok:
            raise RuntimeError(f"TELEMETRY's source is not active: {done.source.detail}")

        # The simulated clock starts hours back: the overload phases render minutes of
        # traffic ahead of time, and ingest dead-letters readings > 5 min in the future.
        start = float(math.floor(time.time()) - HISTORY_S)
        sim = Simulation(
            SimConfig(elders=elders, seed=seed, start=start, utc_offset_s=daytime(start))
        )
        log(f"preloading {seconds} s of traffic from {elders} elders ...")
        pre = asyncio.run(publish_run(sim, broker.mqtt_url, gateways, seconds, None))
        n = pre.acked
        report["preload"] = {"messages": n, "publish_rate": round(pre.rate)}

        bare = _drain_bare(broker.url, n)
        bare_rate = bare["messages"] / max(bare["last_at"] - bare["first_at"], 1e-9)
        report["bare_consumer"] = {
            "messages": bare["messages"],
            "rate": round(bare_rate),
            "cpu": round(bare["cpu_s"] / max(bare["last_at"] - bare["first_at"], 1e-9), 2),
        }
        log(f"bare JetStream consumer: {bare['messages']} messages at {bare_rate:,.0f}/s")
        _delete_bare(broker.url)

        servers = {
            "nats-server": psutil.Process(broker.pid),
            "influxd": psutil.Process(influx.pid),
        }
        server_cpu0 = _cpu(servers)
        ingest = services.enter_context(IngestProc.start(broker, influx, state))
        proc = psutil.Process(ingest.proc.pid)
        times0 = proc.cpu_times()
        status = ingest.wait_for(n)
        times1 = proc.cpu_times()
        span_s = status["last_at"] - status["first_at"]
        server_cpu = {k: round((v - server_cpu0[k]) / span_s, 2) for k, v in _cpu(servers).items()}
        cap = status["messages"] / span_s
        cpu = status["cpu_s"]
        report["ingest_capacity"] = {
            "messages": status["messages"],
            "rate": round(cap),
            "readings_per_s": round(status["readings"] / span_s),
            "cpu": round(cpu / span_s, 2),
            "ratio_to_bare": round(cap / bare_rate, 3),
            "us_per_message": _us_per_message(times0, times1, status["messages"]),
            "rss_mb": round(proc.memory_info().rss / 1e6),
            "server_cpu": server_cpu,
        }
        log(
            f"ingest: {status['messages']} messages at {cap:,.0f}/s "
            f"= {cap / bare_rate:.2f} of the bare consumer, {status['readings'] / span_s:,.0f} "
            f"readings/s, CPU {cpu / span_s:.0%} of a core; meanwhile nats-server "
            f"{server_cpu['nats-server']:.0%}, influxd {server_cpu['influxd']:.0%}"
        )

        # Real time: the fleet publishes at speed 1 while ingest keeps up (or not).
        base = ingest.read()["messages"]
        lags: list[int] = []
        marks: list[tuple[float, dict[str, float]]] = []
        published0 = n
        busy = {**servers, "ingest": proc, "publisher": psutil.Process()}

        def sample(stats: FleetStats) -> None:
            lags.append(published0 + stats.acked - ingest.read()["messages"])
            marks.append((time.monotonic(), _cpu(busy)))

        t0 = time.time()
        with BrokerWatch(broker.url) as watch:
            live = asyncio.run(
                publish_run(sim, broker.mqtt_url, gateways, live_seconds, 1.0, sample)
            )
        wall = time.time() - t0
        after = ingest.wait_for(n + live.acked, 120)
        (m0, cpu0), (m1, cpu1) = marks[0], marks[-1]
        per_10k = {
            k: round((cpu1[k] - cpu0[k]) / max(m1 - m0, 1e-9) * PER_10K / elders, 3) for k in busy
        }
        report["real_time"] = {
            "offered_rate": round(live.acked / wall),
            "stored_rate": round((after["messages"] - base) / (after["last_at"] - t0)),
            "lag_max": max(lags, default=0),
            "lag_end": lags[-1] if lags else 0,
            "where_the_lag_waits": watch.summary(),
            "cpu_s_per_s_per_10k_elders": per_10k,
        }
        log(
            f"real time: offered {live.acked / wall:,.0f}/s, stored "
            f"{report['real_time']['stored_rate']:,}/s, lag max {max(lags, default=0)} "
            f"messages, end {report['real_time']['lag_end']} (of which, at most, "
            f"{watch.summary()['source_lag_max']:,} not yet in TELEMETRY: its source's lag, "
            f"and {watch.summary()['ingest_backlog_max']:,} in TELEMETRY not yet taken by "
            "ingest); CPU seconds per second per "
            f"10,000 elders: " + ", ".join(f"{k} {v:.2f}" for k, v in per_10k.items())
        )
        ingest.stop()

        # Overload, twice ingest's capacity over --live-seconds, two ways: all of it
        # published live, and half of it queued in TELEMETRY while ingest was down with
        # the other half published live at capacity.
        published = published_readings(pre) + published_readings(live)
        rig = Rig(sim, broker, influx, state, gateways, cap, live_seconds, servers, log)
        for mode in ("live", "queued"):
            report[f"overload_{mode}"], readings = _overload(mode, rig)
            published += readings
        report["two_processes"], readings = _two_processes(rig)
        published += readings
        stored = stored_readings(influx)
        dead = _count(influx, [DeadLetter])
        report["exactly_once"] = {
            "published_readings": published,
            "stored_in_influxdb": stored,
            "lost": published - stored,
            "dead_letters": dead,
        }
        log(
            f"all phases: published {published} readings, in InfluxDB {stored}, "
            f"lost {published - stored}, dead-lettered messages {dead}"
        )
    return report


@dataclass
class Rig:
    """What the overload phases run against, and the capacity they are measured by."""

    sim: Simulation
    broker: LocalNats
    influx: LocalInflux
    state: Path
    gateways: int
    cap: float
    seconds: int
    servers: dict[str, psutil.Process]
    log: Callable[[str], Any]

    def offer(
        self,
        messages: list[tuple[contract.Topic, bytes]],
        rate: float,
        sample: Callable[[FleetStats], None],
    ) -> FleetStats:
        return asyncio.run(
            _offer(self.sim, self.broker.mqtt_url, self.gateways, messages, rate, sample)
        )


def _overload(mode: str, rig: Rig) -> tuple[dict[str, Any], int]:
    """Offer 2 × ``cap`` × ``seconds`` messages: ``live`` at 2 × capacity, or ``queued``
    (half in the broker before ingest starts, half live at capacity). The traffic is
    rendered first, so the load generator costs only its publishing: simulating 2× live
    on a small machine would take the CPU the broker and InfluxDB need. Returns the
    figures and the readings published."""
    cap, log = rig.cap, rig.log
    want = round(2 * cap * rig.seconds)
    rendered = _render(rig.sim, want)
    rate = 2 * cap if mode == "live" else cap
    head: FleetStats | None = None
    half = 0
    if mode == "queued":
        half = len(rendered) // 2
        head = rig.offer(rendered[:half], 1e9, lambda _: None)
        rendered = rendered[half:]
    log(f"overload ({mode}): {want:,} messages, offering {rate:,.0f}/s live ...")
    with IngestProc.start(rig.broker, rig.influx, rig.state) as ingest:
        proc = psutil.Process(ingest.proc.pid)
        rss = [proc.memory_info().rss]
        busy = {**rig.servers, "ingest": proc, "publisher": psutil.Process()}
        marks: list[tuple[float, int, int, dict[str, float]]] = []

        def sample(stats: FleetStats) -> None:
            rss.append(proc.memory_info().rss)
            cpu = {k: sum(p.cpu_times()[:2]) for k, p in busy.items()}
            marks.append((time.time(), stats.acked, ingest.read()["messages"], cpu))
            times.append(proc.cpu_times())

        stored_before = ingest.read()["messages"]
        times: list[Any] = []
        over = rig.offer(rendered, rate, sample)
        # from the first whole second on: the fleet's connect and ingest's start left out
        (t0, acked0, stored0, cpu0), (t1, acked1, stored1, cpu1) = marks[0], marks[-1]
        queued = head.acked if head else 0
        offered = (half + len(rendered)) / (len(rendered) / rate)  # on the offering's schedule
        live_rate = (acked1 - acked0) / (t1 - t0)
        stored_rate = (stored1 - stored0) / (t1 - t0)
        backlog = queued + over.acked - (stored1 - stored_before)
        cpu = {k: round((cpu1[k] - cpu0[k]) / (t1 - t0), 2) for k in busy}
        ingest.wait_for(stored_before + queued + over.acked, 900)
        rss.append(proc.memory_info().rss)
    report = {
        "offered_rate": round(offered),
        "offered_to_capacity": round(offered / cap, 2),
        "queued_before": half,
        "live_rate": round(live_rate),
        "stored_rate": round(stored_rate),
        "stored_to_capacity": round(stored_rate / cap, 3),
        "seconds": round(t1 - t0, 1),
        "cores_busy": cpu,
        "bottleneck": _bottleneck(cpu),
        "broker_backlog_at_end": backlog,
        "rss_mb_start": round(rss[0] / 1e6),
        "rss_mb_max": round(max(rss) / 1e6),
        "ingest_us_per_message": _us_per_message(times[0], times[-1], stored1 - stored0),
    }
    log(
        f"overload ({mode}): offered {offered:,.0f}/s ({offered / cap:.1f}× capacity; "
        f"{half} queued before, {live_rate:,.0f}/s live), stored "
        f"{stored_rate:,.0f}/s = {stored_rate / cap:.0%} of capacity, {backlog} left in the "
        f"broker, ingest RSS {rss[0] / 1e6:.0f} → max {max(rss) / 1e6:.0f} MB; cores busy "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        + f"; the bottleneck: {report['bottleneck']}"
    )
    return report, published_readings(over) + (published_readings(head) if head else 0)


def _two_processes(rig: Rig) -> tuple[dict[str, Any], int]:
    """Two ingest processes bound to the one durable consumer, one per core, offered
    twice one process's capacity live: their combined stored rate against one's capacity.
    On 2 cores the second process shares its core with the broker, InfluxDB and the
    publisher, so this shows that the load spreads and nothing is lost, not the
    many-core speed-up. Returns the figures and the readings published."""
    cap = rig.cap
    rendered = _render(rig.sim, round(2 * cap * rig.seconds))
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                IngestProc.start(rig.broker, rig.influx, rig.state, instance=name, cores=cores)
            )
            for name, cores in (("a", SUBSCRIBER_CORE), ("b", OTHER_CORES))
        ]
        rig.log(f"two processes, one durable consumer: offering {2 * cap:,.0f}/s live ...")
        marks: list[tuple[float, list[int]]] = []

        def sample(_stats: FleetStats) -> None:
            marks.append((time.time(), [p.read()["messages"] for p in procs]))

        over = rig.offer(rendered, 2 * cap, sample)
        (t0, each0), (t1, each1) = marks[0], marks[-1]
        rates = [(b - a) / (t1 - t0) for a, b in zip(each0, each1, strict=True)]
        deadline = time.monotonic() + 900
        while sum(p.read()["messages"] for p in procs) < over.acked:
            if time.monotonic() > deadline:
                raise RuntimeError("the two ingest processes did not drain")
            time.sleep(0.2)
    report = {
        "processes": len(procs),
        "offered_rate": round(2 * cap),
        "stored_rate": round(sum(rates)),
        "stored_rate_each": [round(r) for r in rates],
        "to_one_process_capacity": round(sum(rates) / cap, 2),
    }
    rig.log(
        f"two processes: stored {sum(rates):,.0f}/s together "
        f"({' + '.join(f'{r:,.0f}' for r in rates)}) = {sum(rates) / cap:.2f}× one process"
    )
    return report, published_readings(over)


def _bottleneck(cpu: dict[str, float]) -> str:
    """Which side ran out of CPU: ingest on its core, or the rest (broker, InfluxDB and
    the publisher) on theirs. When the rest did, the overload ratio measures this
    machine's core count, not ingest."""
    rest = sum(v for k, v in cpu.items() if k != "ingest") / len(OTHER_CORES)
    if cpu["ingest"] >= BUSY:
        return "ingest"
    return "the other cores (broker, InfluxDB, publisher)" if rest >= BUSY else "none"


def _us_per_message(before: Any, after: Any, messages: int) -> dict[str, float]:
    """Ingest's CPU per message, in user space (Python) and in the kernel (sockets)."""
    return {
        "user": round((after.user - before.user) / max(messages, 1) * 1e6, 1),
        "system": round((after.system - before.system) / max(messages, 1) * 1e6, 1),
    }


def run_workers(
    *, elders: int, seconds: int, workers: int, gateways: int, seed: int, log: Any = print
) -> dict[str, Any]:
    """``--workers N``: the stored rate of 1 ingest worker, then of N, on the one durable
    consumer ``ingest``, in one run against the same servers. Each round, ``--seconds`` of
    the elders' traffic is queued in TELEMETRY first (ingest stopped), then the workers
    start together and drain it; the rate is the messages stored and acknowledged between
    the first worker's first message and the last worker's last batch. Worker ``i`` is
    pinned to core ``i`` (modulo the cores); influxd and the publisher to the others, as in
    :func:`run`. Every published reading is counted back in InfluxDB at the end."""
    report: dict[str, Any] = {"elders": elders, "cores": os.cpu_count(), "rounds": []}
    with (
        tempfile.TemporaryDirectory(prefix="homecare-bench-") as tmp,
        LocalNats(Path(tmp) / "nats") as broker,
        LocalInflux(Path(tmp) / "influxd") as influx,
    ):
        for pid in (os.getpid(), influx.pid):
            _pin(pid, OTHER_CORES)
        state = Path(tmp) / "state"
        state.mkdir()
        done = provision(
            broker.url, mqtt_url=broker.mqtt_url, partitions=PARTITIONS, ack_wait_s=ACK_WAIT_S,
            max_ack_pending=MAX_ACK_PENDING, consumers=(INGEST_CONSUMER,),
        )  # fmt: skip
        if not done.source.ok:
            raise RuntimeError(f"TELEMETRY's source is not active: {done.source.detail}")
        start = float(math.floor(time.time()) - HISTORY_S)
        sim = Simulation(
            SimConfig(elders=elders, seed=seed, start=start, utc_offset_s=daytime(start))
        )
        servers = {"nats-server": psutil.Process(broker.pid), "influxd": psutil.Process(influx.pid)}
        published = 0
        for count in sorted({1, workers}):
            log(f"{count} worker(s): queuing {seconds} s of traffic from {elders} elders ...")
            pre = asyncio.run(publish_run(sim, broker.mqtt_url, gateways, seconds, None))
            published += published_readings(pre)
            with contextlib.ExitStack() as stack:
                procs = [
                    stack.enter_context(IngestProc.start(
                        broker, influx, state, instance=f"w{count}-{i}",
                        cores={CORES[i % len(CORES)]},
                    ))
                    for i in range(count)
                ]  # fmt: skip
                cpu0, t0 = _cpu(servers), time.monotonic()
                deadline = time.monotonic() + 900
                while sum(p.read()["messages"] for p in procs) < pre.acked:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{count} workers did not drain {pre.acked}")
                    time.sleep(0.2)
                each = [p.read() for p in procs]
                busy = {k: round((v - cpu0[k]) / (time.monotonic() - t0), 2)
                        for k, v in _cpu(servers).items()}  # fmt: skip
            first = min(s["first_at"] for s in each if s["first_at"])
            last = max(s["last_at"] for s in each if s["last_at"])
            rate = pre.acked / max(last - first, 1e-9)
            report["rounds"].append({
                "workers": count, "messages": pre.acked, "stored_rate": round(rate),
                "messages_each": [s["messages"] for s in each],
                "cpu_each": [round(s["cpu_s"] / max(last - first, 1e-9), 2) for s in each],
                "servers_cores_busy": busy, "load_average_1m": round(os.getloadavg()[0], 1),
            })  # fmt: skip
            log(f"{count} worker(s): {pre.acked} messages stored at {rate:,.0f}/s "
                f"(each took {', '.join(str(s['messages']) for s in each)}); cores busy: "
                + ", ".join(f"{k} {v:.2f}" for k, v in busy.items()))  # fmt: skip
        rounds = report["rounds"]
        report["speed_up"] = round(rounds[-1]["stored_rate"] / rounds[0]["stored_rate"], 2)
        stored = stored_readings(influx)
        report["exactly_once"] = {"published_readings": published, "stored_in_influxdb": stored,
                                  "lost": published - stored}  # fmt: skip
        log(f"{workers} workers store {report['speed_up']}× one worker's rate; published "
            f"{published} readings, in InfluxDB {stored}")  # fmt: skip
    return report

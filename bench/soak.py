"""``homecare bench soak``: hours of traffic in minutes, with the servers restarted under it.

Simulated elders publish at ``speed`` times real time (a past window, so no timestamp
is in the future) over MQTT 3.1.1 to a real NATS Server (provisioned before they
connect), whose TELEMETRY stream a real ``homecare ingest`` process consumes into a real
influxd. Every ``restart_every_s`` the broker and influxd are restarted in turn
(SIGTERM, then started on the same ports and data; after a restart TELEMETRY's source
idles about 10 s while the publishes wait in ``$MQTT_msgs``). At the end the fleet drains and
every reading the broker acknowledged is counted back in InfluxDB: published, stored,
lost (target 0), and ingest's memory at the start and the end (target: flat).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PARTITIONS = 8
"""TELEMETRY's partitions on the soak's own broker (one ingest process reads them all)."""


def run(
    *,
    minutes: float,
    elders: int = 200,
    speed: float = 10.0,
    restart_every_s: float = 120.0,
    gateways: int = 4,
    seed: int = 0,
    root: Path | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Run the soak (servers' data under ``root``, default a temporary folder removed at
    the end); return the figures (also printed through ``log``)."""
    import psutil

    from bench.ingest import IngestProc, publish_run, published_readings, stored_readings
    from broker.provision import provision
    from device_sim.homes import SimConfig, Simulation
    from harness.servers import LocalInflux, LocalNats

    seconds = minutes * 60
    sim_span = seconds * speed
    if sim_span > 6 * 86400:
        raise ValueError("minutes × speed must stay within the 7 days ingest accepts")
    report: dict[str, Any] = {"minutes": minutes, "elders": elders, "speed": speed}
    with contextlib.ExitStack() as stack:
        folder = root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        broker = stack.enter_context(LocalNats(folder / "nats"))
        provisioned = provision(broker.url, mqtt_url=broker.mqtt_url, partitions=PARTITIONS,
                                detect=False)
        if not provisioned.source.ok:
            raise RuntimeError(f"the soak's NATS Server: {provisioned.source.detail}")
        influx = stack.enter_context(LocalInflux(folder / "influxd"))
        state = folder / "state"
        state.mkdir()
        ingest = stack.enter_context(IngestProc.start(broker, influx, state))
        proc = psutil.Process(ingest.proc.pid)
        start = float(math.floor(time.time() - sim_span - 120))
        sim = Simulation(SimConfig(elders=elders, seed=seed, start=start))
        rss: list[tuple[float, int]] = []
        restarts: list[str] = []
        done = threading.Event()

        def faults() -> None:
            """Sample ingest's memory each second; restart broker and influxd in turn."""
            t0 = time.monotonic()
            next_restart = t0 + restart_every_s
            while not done.wait(1.0):
                try:
                    rss.append((time.monotonic() - t0, proc.memory_info().rss))
                except psutil.Error:
                    return  # ingest died: the report says so
                if time.monotonic() >= next_restart:
                    server = broker if len(restarts) % 2 == 0 else influx
                    server.restart()
                    restarts.append(server.name)
                    log(f"  {time.monotonic() - t0:5.0f} s: restarted {server.name}")
                    next_restart = time.monotonic() + restart_every_s

        log(
            f"soak: {elders} elders at {speed:g}× for {minutes:g} min ({sim_span / 3600:.1f} "
            f"simulated hours), restarting the broker or influxd every {restart_every_s:g} s"
        )
        sampler = threading.Thread(target=faults, name="soak-faults", daemon=True)
        sampler.start()
        t0 = time.monotonic()
        try:
            try:
                stats = asyncio.run(publish_run(sim, broker.mqtt_url, gateways, sim_span, speed))
            finally:
                done.set()
                sampler.join()
            published = published_readings(stats)
            deadline = time.monotonic() + 300
            stored = stored_readings(influx)
            while stored < published and time.monotonic() < deadline:
                time.sleep(1)
                stored = stored_readings(influx)
            alive = ingest.proc.poll() is None
            if alive:
                rss.append((time.monotonic() - t0, proc.memory_info().rss))
                ingest.stop()
        finally:
            ingest.stop()  # if the soak itself failed: leave nothing behind
        status = ingest.read()  # its last words, written on the way out
        warm = [r for t, r in rss if t >= min(30.0, seconds / 4)] or [r for _, r in rss]
        report |= {
            "wall_s": round(time.monotonic() - t0),
            "restarts": restarts,
            "published_readings": published,
            "stored_in_influxdb": stored,
            "lost": published - stored,
            "ingest_alive": alive,
            "ingest_messages": status["messages"],
            "spooled_batches": status["spooled_batches"],
            "fleet_reconnects": stats.reconnects,
            "rss_mb_start": round(warm[0] / 1e6),
            "rss_mb_end": round(rss[-1][1] / 1e6),
            "rss_mb_max": round(max(r for _, r in rss) / 1e6),
            "rss_mb_each_minute": _each_minute(rss),
        }
    log(
        f"published {published} readings, stored {stored}, lost {published - stored}; "
        f"ingest RSS {report['rss_mb_start']} MB after warm-up → {report['rss_mb_end']} MB at "
        f"the end (max {report['rss_mb_max']}); {len(restarts)} restarts"
    )
    return report


def _each_minute(samples: list[tuple[float, int]]) -> list[int]:
    """The first sample (MB) at or after each whole minute.

    >>> _each_minute([(0.5, 10**8), (30, 2 * 10**8), (60.2, 3 * 10**8), (61, 0)])
    [100, 300]
    """
    out: list[int] = []
    for t, rss in samples:
        if t >= 60 * len(out):
            out.append(round(rss / 1e6))
    return out

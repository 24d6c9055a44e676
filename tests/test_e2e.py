"""Simulated homes → NATS Server (MQTT 3.1.1 in, TELEMETRY) → ingest → InfluxDB, counted back
exactly; ingest scaled out (two processes on the one durable consumer)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from support import elders_at, settings_for, wait_for

from device_sim import SimConfig, Simulation, SosPress
from device_sim.fleet import Fleet
from harness.demo import stored_counts
from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings
from ingest.service import IngestService

pytestmark = pytest.mark.servers


def _ingest(settings, instance=None):
    service = IngestService(settings, instance=instance)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: service.status_path.exists(), 10, "ingest running")
    return service, stop, thread


async def _publish(sim: Simulation, url: str, seconds: float, gateways: int = 0):
    async with Fleet(sim, url, gateways=gateways) as fleet:
        await fleet.run(seconds=seconds, speed=None)
    return fleet.stats


def _check_counted_back(influx, site, start, published):
    with InfluxClient(InfluxSettings(url=influx.url)) as db:
        expected = sum(published.per_stream.values())
        wait_for(lambda: sum(stored_counts(db, site, start, time.time() + 60)[0].values())
                 >= expected, 30, f"{expected} points")
        time.sleep(0.5)
        per_stream, per_elder = stored_counts(db, site, start, time.time() + 60)
    assert per_stream == {str(s): n for s, n in published.per_stream.items()} | {
        s: 0 for s in per_stream if all(str(k) != s for k in published.per_stream)
    }
    assert per_elder == published.per_elder


def test_simulated_homes_are_counted_back_exactly(nats_broker, influx, tmp_path):
    start = float(int(time.time()) - 3600)
    sim = Simulation(SimConfig(elders=4, seed=3, site="e2e", start=start,
                               utc_offset_s=elders_at(start)))  # whatever the real hour
    sim.inject(1, start + 30.0, SosPress())
    service, stop, thread = _ingest(settings_for(nats_broker, influx, tmp_path))
    published = asyncio.run(_publish(sim, nats_broker.mqtt_url, 1200))
    assert published.per_stream["sos"] == 1
    assert {"frame", "reading", "status", "availability"} <= {str(s) for s in published.per_stream}
    _check_counted_back(influx, "e2e", start, published)
    stop.set()
    thread.join(20)
    assert service.stats.dead == {}


def test_two_ingest_processes_share_the_load(nats_broker, influx, tmp_path):
    """Both bind the durable consumer ``ingest``: the server hands each message to one of
    them, and together they store everything once."""
    start = float(int(time.time()) - 3600)
    sim = Simulation(SimConfig(elders=6, seed=5, site="shared", start=start,
                               utc_offset_s=elders_at(start)))  # whatever the real hour
    running = [
        _ingest(settings_for(nats_broker, influx, tmp_path), instance=name) for name in ("a", "b")
    ]
    published = asyncio.run(_publish(sim, nats_broker.mqtt_url, 900, gateways=2))
    _check_counted_back(influx, "shared", start, published)
    shares = [service.stats.messages for service, _, _ in running]
    assert sum(shares) >= published.acked
    assert all(share > published.acked / 10 for share in shares), shares
    for _, stop, thread in running:
        stop.set()
        thread.join(20)


def test_a_fitted_homes_motion_sensors_and_mats_are_stored(nats_broker, influx, tmp_path):
    """A home with a motion sensor per room and bed and chair mats: its events pass the
    contract and ingest stores every one (a window around the elder sitting down)."""
    from device_sim.ambient import ambient_events
    from device_sim.routine import make_profile, plan_day

    day = plan_day(make_profile(3, 0), 3, 0, 20516)  # on the elder's own (local) clock
    sits = [e[0] for e in ambient_events(day) if e[1] == "chair-mat" and e[4] > 0.5]
    start = float(int(time.time()) - 3600)
    sim = Simulation(SimConfig(elders=1, seed=3, site="amb", start=start, rate=25, ambient=1.0,
                               utc_offset_s=elders_at(start, sits[0] - 120.0)))
    service, stop, thread = _ingest(settings_for(nats_broker, influx, tmp_path))
    published = asyncio.run(_publish(sim, nats_broker.mqtt_url, 300))
    assert published.per_stream["motion"] >= 1
    assert published.per_stream["occupancy"] >= 1
    _check_counted_back(influx, "amb", start, published)
    stop.set()
    thread.join(20)
    assert service.stats.dead == {}

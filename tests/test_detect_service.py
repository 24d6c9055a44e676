"""`homecare detect` on the real NATS Server: device events become alerts in ALERTS and InfluxDB."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import nats
import numpy as np
import pytest
from support import wait_for

from detectors.service import DetectService
from device_sim import Motion, OkPress, SimConfig, Simulation, SosPress
from device_sim.fleet import Fleet
from device_sim.motions import motion
from device_sim.routine import Posture
from device_sim.signals import to_device_frame
from harness.servers import LocalNats
from homecare.contract import Alert
from homecare.influx import InfluxClient
from homecare.jetstream import ALERT_SUBJECT_ROOT, ALERTS_STREAM
from homecare.settings import DetectSettings, InfluxSettings, MqttSettings, NatsSettings, Settings
from homecare.status import read_status

pytestmark = pytest.mark.servers


def stored_alerts(url: str) -> list[Alert]:
    """Every alert message in ALERTS, oldest first (an ephemeral ordered read)."""

    async def read() -> list[Alert]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            total = (await js.stream_info(ALERTS_STREAM)).state.messages
            got: list[Alert] = []
            if not total:
                return got
            sub = await js.subscribe(f"{ALERT_SUBJECT_ROOT}.>", ordered_consumer=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    break
                got.append(Alert.model_validate_json(msg.data))
            await sub.unsubscribe()
            return got
        finally:
            await nc.close()

    return asyncio.run(read())


def nats_settings(server: LocalNats, influx_url: str, tmp_path: Path, **detect: Any) -> Settings:
    """Detect's settings against a test NATS server (state saved every second)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        state_dir=tmp_path / "state",
        nats=NatsSettings(url=server.url, partitions=8),  # as the fixture provisions
        mqtt=MqttSettings(url=server.mqtt_url),
        influx=InfluxSettings(url=influx_url, database="homecare"),
        detect=DetectSettings.model_validate({"save_every_s": 1.0, **detect}),
    )


def _fall(rng: np.random.Generator, rate: int) -> np.ndarray:
    _, xyz, _ = motion("fall_forward", rng, rate=rate)
    return to_device_frame(xyz).astype(np.float32)


def test_sos_and_fall_become_alerts_and_ok_cancels(nats_broker, influx, tmp_path):
    start = float(int(time.time()) - 7200)
    sim = Simulation(SimConfig(elders=3, seed=11, site="det", start=start))
    day = [sim.day(i) for i in range(3)]
    assert day  # routines planned
    rng = np.random.default_rng(4)
    sim.inject(0, start + 120.0, SosPress())
    sim.inject(1, start + 600.0, Motion(_fall(rng, 50), then=Posture.PRONE, hold_s=180.0))
    sim.inject(2, start + 900.0, Motion(_fall(rng, 50), then=Posture.SUPINE, hold_s=180.0))
    sim.inject(2, start + 925.0, OkPress())

    settings = nats_settings(nats_broker, influx.url, tmp_path, clock="data")
    service = DetectService(settings)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: service.status_path.exists(), 20, "detect started")

    async def publish():
        async with Fleet(sim, nats_broker.mqtt_url, gateways=1) as fleet:
            await fleet.run(seconds=1500, speed=None)

    asyncio.run(publish())
    wanted = {("sos", "open"), ("fall", "open"), ("fall", "cancelled")}
    wait_for(lambda: {(a.kind, a.state) for a in stored_alerts(nats_broker.url)} >= wanted,
             30, "alerts")
    alerts = stored_alerts(nats_broker.url)
    by = {(a.elder, a.kind, a.state): a for a in alerts}
    sos = by[("e0001", "sos", "open")]
    assert sos.severity == "critical"
    assert sos.device == "w0001"
    assert sos.ts == pytest.approx(start + 120, abs=1.5)
    fall = by[("e0002", "fall", "open")]
    assert start + 600 <= fall.ts <= start + 620
    assert fall.device == "w0002"
    assert fall.evidence
    assert ("e0003", "fall", "cancelled") in by
    assert ("e0002", "fall", "cancelled") not in by
    # nothing else in 25 quiet minutes of three homes (devices go offline as the fleet stops)
    assert {a.kind for a in alerts} <= {"sos", "fall", "offline"}
    assert len({(a.id, a.state) for a in alerts}) == len(alerts)  # each stored once
    stop.set()
    thread.join(20)
    assert not thread.is_alive()
    # each partition was saved as it was handed back, covering all it processed
    assert service.last_saves
    assert all(int(s["seq"]) > 0 for s in service.last_saves.values())
    assert read_status(service.status_path)["unacknowledged"] == 0
    with InfluxClient(InfluxSettings(url=influx.url)) as db:
        rows = db.rows("SELECT * FROM alert WHERE kind = 'sos' OR kind = 'fall'")
    states = {(r["elder"], r["kind"]): r["state"] for r in rows}
    assert states[("e0001", "sos")] == "open"
    assert states[("e0002", "fall")] == "open"
    assert states[("e0003", "fall")] == "cancelled"
    assert json.loads(next(r for r in rows if r["kind"] == "sos")["evidence"]) is not None

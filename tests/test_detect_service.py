"""`homecare detect` via the real broker: injected events become alerts on MQTT and in InfluxDB."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from support import settings_for, wait_for

from detectors.service import DetectService
from device_sim import Motion, OkPress, SimConfig, Simulation, SosPress
from device_sim.fleet import Fleet
from device_sim.motions import motion
from device_sim.routine import Posture
from device_sim.signals import to_device_frame
from homecare.contract import Alert, alert_subscription
from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings

pytestmark = pytest.mark.servers


class AlertListener:
    def __init__(self, port: int) -> None:
        self.alerts: list[Alert] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="alert-listener")
        self.client.on_connect = lambda c, *_: c.subscribe(alert_subscription(), qos=1)
        self.client.on_message = lambda _c, _u, m: self.alerts.append(
            Alert.model_validate_json(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _fall(rng: np.random.Generator, rate: int) -> np.ndarray:
    _, xyz, _ = motion("fall_forward", rng, rate=rate)
    return to_device_frame(xyz).astype(np.float32)


def test_sos_and_fall_become_alerts_and_ok_cancels(broker, influx, tmp_path):
    start = float(int(time.time()) - 7200)
    sim = Simulation(SimConfig(elders=3, seed=11, site="det", start=start))
    day = [sim.day(i) for i in range(3)]
    assert day  # routines planned
    rng = np.random.default_rng(4)
    sim.inject(0, start + 120.0, SosPress())
    sim.inject(1, start + 600.0, Motion(_fall(rng, 50), then=Posture.PRONE, hold_s=180.0))
    sim.inject(2, start + 900.0, Motion(_fall(rng, 50), then=Posture.SUPINE, hold_s=180.0))
    sim.inject(2, start + 925.0, OkPress())

    settings = settings_for(broker, influx, tmp_path)
    settings = settings.model_copy(update={"detect": settings.detect.model_copy(
        update={"clock": "data"})})
    service = DetectService(settings)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    listener = AlertListener(broker.port)
    time.sleep(1)

    async def publish():
        async with Fleet(sim, broker.url, gateways=1) as fleet:
            await fleet.run(seconds=1500, speed=None)

    asyncio.run(publish())
    wait_for(lambda: {(a.kind, a.state) for a in listener.alerts}
             >= {("sos", "open"), ("fall", "open"), ("fall", "cancelled")}, 30, "alerts")
    by = {(a.elder, a.kind, a.state): a for a in listener.alerts}
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
    assert {a.kind for a in listener.alerts} <= {"sos", "fall", "offline"}
    stop.set()
    thread.join(20)
    listener.close()
    with InfluxClient(InfluxSettings(url=influx.url)) as db:
        rows = db.rows("SELECT * FROM alert WHERE kind = 'sos' OR kind = 'fall'")
    states = {(r["elder"], r["kind"]): r["state"] for r in rows}
    assert states[("e0001", "sos")] == "open"
    assert states[("e0002", "fall")] == "open"
    assert states[("e0003", "fall")] == "cancelled"
    assert json.loads(next(r for r in rows if r["kind"] == "sos")["evidence"]) is not None

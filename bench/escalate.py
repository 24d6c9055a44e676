"""``homecare bench escalate``: from an alert opening to the call centre's webhook receiving it.

Real NATS Server (JetStream, its MQTT listener) and influxd, provisioned as ``homecare
broker provision`` does, ``homecare escalate`` as its own process, and the call
centre's stand-in (a real HTTP server in this process) recording when each alarm
arrives. Each round stores a burst of ``alerts`` critical alerts (distinct elders, no
grace window) in the ALERTS stream as ``homecare detect`` does — on its consumer's
connection, the alert id as message id, all opened at the same instant — and measures,
per alert, the time from that instant to the stand-in reading the alarm's body. The
clock starts before the first publish, so the figures include storing the whole burst.
An app subscribed to the alert topics over MQTT 3.1.1 records when it sees each alert
notified (retained, from escalate's outbox): the apps' latency, reported beside.
"""

from __future__ import annotations

import gc
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from broker.provision import provision
from harness.demo import ServiceProcess
from harness.servers import LocalInflux, LocalNats
from harness.standins import CallCentreStandIn
from homecare.contract import Alert, AlertState, Severity, alert_subscription
from homecare.jetstream import JetStreamConsumer, alert_subject, detect_partition_consumer
from homecare.settings import InfluxSettings, MqttSettings, NatsSettings, Settings
from homecare.status import read_status


def bench_registry(centre_url: str, elders: list[str]) -> dict[str, Any]:
    """Every elder registered; the critical ladder's first rung is the call centre alone."""
    return {
        "provider": {"call_centre": "arc"},
        "contacts": [
            {
                "id": "arc",
                "name": "ARC",
                "role": "call_centre",
                "channels": [{"kind": "call_centre", "address": centre_url}],
            }
        ],
        "elders": [
            {"id": e, "display_name": f"Elder {e}", "site": "bench", "address": "Room 1"}
            for e in elders
        ],
        "policy": {"critical": {"steps": [{"after_s": 0, "to": ["call_centre"]}]}},
        "digest_hour": None,
    }


def store_burst(detect: JetStreamConsumer, alerts: list[Alert]) -> float:
    """Store every alert in ALERTS as detect does; return when the stream has them all."""
    stored = detect.publish(
        [(alert_subject(a.site, a.elder, a.id), a.model_dump_json().encode(), a.id) for a in alerts]
    )
    if any(stored):
        raise RuntimeError(f"{sum(stored)} alerts of the burst were already in ALERTS")
    return time.time()


class AppView:
    """An app subscribed to every alert topic (MQTT 3.1.1, QoS 1): when each alert was
    first seen notified."""

    def __init__(self, settings: MqttSettings) -> None:
        self.notified: dict[str, float] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-escalate-app",
                                  protocol=mqtt.MQTTv311)  # fmt: skip
        self.client.on_connect = lambda c, *_: c.subscribe(alert_subscription(), qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"the app's subscription at {settings.url} was not granted")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        alert = Alert.model_validate_json(msg.payload)
        if alert.state == AlertState.NOTIFIED:
            with self._lock:
                self.notified.setdefault(alert.id, now)

    def wait(self, ids: set[str], timeout_s: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if ids <= self.notified.keys():
                    break
            time.sleep(0.05)
        with self._lock:
            return {i: self.notified[i] for i in ids if i in self.notified}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _ms(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1)


def run(
    *, alerts: int = 1000, rounds: int = 3, connections: int = 64, log: Callable[[str], None]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-escalate-") as tmp:
        root = Path(tmp)
        with (
            LocalNats(root / "nats") as broker,
            LocalInflux(root / "influxd") as influx,
            CallCentreStandIn() as centre,
        ):
            done = provision(broker.url, mqtt_url=broker.mqtt_url, partitions=8)
            if not done.source.ok:
                raise RuntimeError(f"the broker is not provisioned: {done.source.detail}")
            elders = [f"b{r}x{i:05d}" for r in range(rounds) for i in range(alerts)]
            registry = root / "registry.yaml"
            registry.write_text(yaml.safe_dump(bench_registry(centre.url, elders)))
            settings = Settings(
                state_dir=root / "state",
                mqtt=MqttSettings(url=broker.mqtt_url),
                nats=NatsSettings(url=broker.url),
                influx=InfluxSettings(url=influx.url),
            )
            service = ServiceProcess(
                "escalate", settings, root / "escalate.log", HOMECARE_NATS__URL=broker.url,
                HOMECARE_REGISTRY=str(registry), HOMECARE_ESCALATE__HTTP_PORT="0",
                HOMECARE_ESCALATE__SECRET="bench",
                HOMECARE_ESCALATE__CALL_CENTRE__CONNECTIONS=str(connections),
                HOMECARE_ESCALATE__CONCURRENCY=str(max(connections, alerts)),
                HOMECARE_ESCALATE__HEARTBEAT_S="3600",
            )  # fmt: skip
            report: dict[str, Any] = {
                "alerts": alerts,
                "rounds": rounds,
                "connections": connections,
            }
            detect = JetStreamConsumer(broker.url, durable=detect_partition_consumer(0))
            detect.__enter__()
            app = AppView(settings.mqtt)
            try:
                time.sleep(1.0)
                per_round = []
                proc = psutil.Process(service.proc.pid)
                here = psutil.Process()
                for r in range(rounds):
                    gc.collect()  # what the stand-in recorded so far: out of the burst's way
                    gc.freeze()
                    cpu0 = (sum(proc.cpu_times()[:2]), sum(here.cpu_times()[:2]))
                    t0 = time.time()
                    burst = [
                        Alert(id=f"bench{r}x{i:05d}", site="bench", elder=f"b{r}x{i:05d}",
                              device="w1", kind="sos", severity=Severity.CRITICAL, ts=t0,
                              updated=t0)
                        for i in range(alerts)
                    ]  # fmt: skip
                    published = store_burst(detect, burst)
                    got = centre.wait_incidents((r + 1) * alerts, timeout_s=120)
                    ids = {a.id for a in burst}
                    ours = {i.alert_id: i.opened for i in got if i.alert_id in ids}
                    latency = np.array([ours[a.id] - t0 for a in burst])
                    cpu1 = (sum(proc.cpu_times()[:2]), sum(here.cpu_times()[:2]))
                    seen = app.wait(ids, timeout_s=60)  # the outbox's turn: after the alarms
                    app_latency = np.array([seen[i] - t0 for i in ids if i in seen])
                    figures: dict[str, Any] = {
                        "first_ms": round(float(latency.min()) * 1000, 1),
                        "p50_ms": _ms(latency, 50), "p90_ms": _ms(latency, 90),
                        "p99_ms": _ms(latency, 99), "max_ms": round(float(latency.max()) * 1000, 1),
                        "publish_ms": round((published - t0) * 1000, 1),
                        "app_seen": len(seen),
                        "app_p50_ms": _ms(app_latency, 50) if len(seen) else None,
                        "app_p99_ms": _ms(app_latency, 99) if len(seen) else None,
                        "escalate_cpu_s": round(cpu1[0] - cpu0[0], 2),
                        "bench_cpu_s": round(cpu1[1] - cpu0[1], 2),
                        "escalate_cpu_to_app_s": round(sum(proc.cpu_times()[:2]) - cpu0[0], 2),
                    }  # fmt: skip
                    log(f"round {r + 1}: {alerts} alerts → call centre: {figures}")
                    per_round.append(figures)
                    time.sleep(2.0)
                report["rounds_figures"] = per_round
                report["incidents"] = len(centre.incidents)
                report["duplicates"] = len(centre.incidents) - len({
                    i.alert_id for i in centre.incidents
                })  # fmt: skip
                report["p99_ms_worst_round"] = max(f["p99_ms"] for f in per_round)
                report["target_p99_ms"] = 500
            finally:
                app.close()
                detect.__exit__(None, None, None)
                report["service"] = service.stop()
                report["status"] = read_status(settings.state_dir / "escalate.json")
    return report

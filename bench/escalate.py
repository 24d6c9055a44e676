"""``homecare bench escalate``: from an alert opening to the call centre's webhook receiving it.

Real Mosquitto and influxd, ``homecare escalate`` as its own process, and the call
centre's stand-in (a real HTTP server in this process) recording when each alarm
arrives. Each round publishes a burst of ``alerts`` critical alerts (distinct elders,
no grace window) as ``homecare detect`` does — QoS 1, retained, all opened at the same
instant — and measures, per alert, the time from that instant to the stand-in reading
the alarm's body. The clock starts before the first publish, so the figures include
publishing the whole burst.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from harness.demo import ServiceProcess
from harness.servers import LocalBroker, LocalInflux
from harness.standins import CallCentreStandIn
from homecare.contract import Alert, Severity, alert_topic
from homecare.receiver import mqtt_client
from homecare.settings import InfluxSettings, MqttSettings, Settings
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


def publish_burst(settings: MqttSettings, alerts: list[Alert]) -> float:
    """Publish every alert at QoS 1, retained; return when the broker has acknowledged all."""
    client = mqtt_client(settings, "bench-escalate-detect")
    client.max_inflight_messages_set(0)
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        infos = [
            client.publish(alert_topic(a.site, a.elder, a.id), a.model_dump_json(), 1, True)
            for a in alerts
        ]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return time.time()


def _ms(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1)


def run(
    *, alerts: int = 1000, rounds: int = 3, connections: int = 64, log: Callable[[str], None]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-escalate-") as tmp:
        root = Path(tmp)
        with (
            LocalBroker(root / "mosquitto") as broker,
            LocalInflux(root / "influxd") as influx,
            CallCentreStandIn() as centre,
        ):
            elders = [f"b{r}x{i:05d}" for r in range(rounds) for i in range(alerts)]
            registry = root / "registry.yaml"
            registry.write_text(yaml.safe_dump(bench_registry(centre.url, elders)))
            settings = Settings(
                state_dir=root / "state",
                mqtt=MqttSettings(url=broker.url),
                influx=InfluxSettings(url=influx.url),
            )
            service = ServiceProcess(
                "escalate", settings, root / "escalate.log",
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
                    published = publish_burst(settings.mqtt, burst)
                    got = centre.wait_incidents((r + 1) * alerts, timeout_s=120)
                    ids = {a.id for a in burst}
                    ours = {i.alert_id: i.opened for i in got if i.alert_id in ids}
                    latency = np.array([ours[a.id] - t0 for a in burst])
                    figures = {
                        "first_ms": round(float(latency.min()) * 1000, 1),
                        "p50_ms": _ms(latency, 50), "p90_ms": _ms(latency, 90),
                        "p99_ms": _ms(latency, 99), "max_ms": round(float(latency.max()) * 1000, 1),
                        "publish_ms": round((published - t0) * 1000, 1),
                        "escalate_cpu_s": round(sum(proc.cpu_times()[:2]) - cpu0[0], 2),
                        "bench_cpu_s": round(sum(here.cpu_times()[:2]) - cpu0[1], 2),
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
                report["service"] = service.stop()
                report["status"] = read_status(settings.state_dir / "escalate.json")
    return report

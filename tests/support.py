"""Helpers for tests against the real servers: a plain paho publisher and waiting on InfluxDB."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from detectors.fall_model import TreeModel
from harness.servers import LocalInflux, LocalNats
from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings, MqttSettings, NatsSettings, Settings

ELDERS_MORNING = datetime(2026, 3, 4, 10, tzinfo=UTC).timestamp()
"""A Wednesday, 10:00: the simulated elders' clock in server tests that need them up and
wearing their pendant (wearables charge at night)."""


def elders_at(start: float, local: float = ELDERS_MORNING) -> float:
    """The ``utc_offset_s`` that makes ``start`` (real time, as the servers need) the instant
    ``local`` on the simulated elders' clock. Their routines are drawn per local day and
    follow the local hour, so the traffic is the same whatever the real date and hour.

    >>> elders_at(ELDERS_MORNING - 3600) / 3600
    1.0
    """
    return local - start


def settings_for(nats: LocalNats, influx: LocalInflux, tmp_path: Path, **ingest: Any) -> Settings:
    """The services' settings against a test's NATS Server (provisioned with 8 partitions, as
    the ``nats_broker`` fixture does) and influxd; ``ingest`` overrides ingest's settings.
    No ``.env`` file: a developer's own settings never leak into a test."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        state_dir=tmp_path / "state",
        nats=NatsSettings(url=nats.url, partitions=8),
        mqtt=MqttSettings(url=nats.mqtt_url, client_id="ingest-test"),
        influx=InfluxSettings(url=influx.url, database="homecare"),
        ingest={"batch_interval_s": 0.05, **ingest},
    )


class Publisher:
    """A QoS 1 publisher that queues while the broker is away and counts PUBACKs."""

    def __init__(self, broker_port: int, client_id: str = "test-publisher") -> None:
        self.acked = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()

    def _on_publish(self, *_args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(
        self, messages: Iterable[tuple[str, bytes | str]], qos: int = 1, rate: float | None = None
    ) -> int:
        n = 0
        t0 = time.monotonic()
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=qos)
            n += 1
            if rate:
                ahead = n / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        return n

    def wait_acked(self, n: int, timeout_s: float = 60) -> None:
        wait_for(lambda: self.acked >= n, timeout_s, f"{n} PUBACKs (have {self.acked})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def count(db: InfluxClient, measurement: str, where: str = "") -> int:
    """Points in a measurement (counting a field every point of it has)."""
    field = {
        "wearable": "rate",
        "bed": "movement",
        "door": "seq",
        "button": "seq",
        "device_status": "battery",
        "availability": "online",
        "dead_letter": "size",
    }
    clause = f" WHERE {where}" if where else ""
    series = db.query(f'SELECT count("{field[measurement]}") FROM "{measurement}"{clause}')
    return int(series[0]["values"][0][1]) if series else 0


def frame(elder: str, device: str, ts: float, rate: int = 25, **extra: Any) -> bytes:
    accel = [[0.01, -0.99, 0.05]] * rate
    return json.dumps(
        {"elder": elder, "device": device, "ts": ts, "rate": rate, "accel": accel, **extra}
    ).encode()


def topic(elder: str, kind: str, device: str, stream: str, site: str = "t") -> str:
    return f"homecare/v1/{site}/{elder}/{kind}/{device}/{stream}"


def constant_model(p: float) -> TreeModel:
    """A fall model that scores every candidate ``p`` (one leaf)."""
    logit = float(np.log(p / (1 - p)))
    return TreeModel.from_arrays(
        features=("peak_g",), base=logit, rate=1.0, threshold=0.5, left=np.array([[-1]]),
        right=np.array([[-1]]), feature=np.array([[0]]), split=np.array([[0.0]]),
        value=np.array([[0.0]]),
    )  # fmt: skip

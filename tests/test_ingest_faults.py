"""Faults mid-stream (kill -9 of influxd, of ingest, of nats-server, and of nats-server
holding a 30 s backlog): every reading the broker acknowledged is stored exactly once.

Devices publish MQTT 3.1.1 at QoS 1 to the real NATS Server's MQTT listener; ``homecare
ingest`` runs as its own process on TELEMETRY's durable consumer ``ingest``. Ingest's
writes are idempotent (a reading's time comes from its payload), so what comes again
after a crash overwrites itself: counting points in influxd counts each reading once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import ClassVar

import pytest
from support import Publisher, count, frame, topic, wait_for

from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings

ELDERS = 10
SECONDS = 40  # frames per elder
RATE = 100.0  # messages per second offered


class IngestProcess:
    """`homecare ingest` as its own OS process, so it can be killed like a real service."""

    running: ClassVar[list[IngestProcess]] = []

    def __init__(self, nats_server, influx, tmp_path) -> None:
        self.env = {
            **os.environ,
            "HOMECARE_NATS__URL": nats_server.url,
            "HOMECARE_MQTT__CLIENT_ID": "ingest-faults",
            "HOMECARE_INFLUX__URL": influx.url,
            "HOMECARE_STATE_DIR": str(tmp_path / "state"),
            "HOMECARE_INGEST__BATCH_INTERVAL_S": "0.05",
        }
        self.log = tmp_path / "ingest.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.running.append(self)

    def start(self) -> None:
        seen = self.log.read_bytes().count(b"consuming") if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "ingest"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.log.read_bytes().count(b"consuming") > seen, 30, "consuming")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture(autouse=True)
def _no_ingest_left_running():
    """A failed test must not leave `homecare ingest` running."""
    yield
    while IngestProcess.running:
        ingest = IngestProcess.running.pop()
        if ingest.proc is not None and ingest.proc.poll() is None:
            ingest.kill()


def _db(influx) -> InfluxClient:
    return InfluxClient(InfluxSettings(url=influx.url, database="homecare"))


def _stream(now: float):
    for i in range(SECONDS):
        for e in range(ELDERS):
            yield (
                topic(f"e{e}", "wearable", f"w{e}", "frame"),
                frame(f"e{e}", f"w{e}", now - 300 + i),
            )


def _stored_exactly(influx, total: int, per_elder: int, elders: int) -> None:
    """Wait for ``total`` frames, then check none more came and each elder has its own."""
    with _db(influx) as db:
        wait_for(lambda: count(db, "wearable") >= total, 60, f"{total} frames in InfluxDB")
        time.sleep(1)  # anything re-delivered late would show as extra points now
        assert count(db, "wearable") == total
        for e in range(elders):
            assert count(db, "wearable", f"elder='e{e}'") == per_elder


def _run_with_fault(nats_broker, influx, tmp_path, fault) -> IngestProcess:
    ingest = IngestProcess(nats_broker, influx, tmp_path)
    ingest.start()
    pub = Publisher(nats_broker.mqtt_port)
    total = ELDERS * SECONDS
    sender = threading.Thread(
        target=pub.publish, args=(_stream(time.time()),), kwargs={"rate": RATE}
    )
    sender.start()
    time.sleep(total / RATE / 3)
    fault(ingest)
    sender.join()
    pub.wait_acked(total, 60)
    pub.close()
    _stored_exactly(influx, total, SECONDS, ELDERS)
    assert ingest.stop() == 0
    return ingest


def test_influxd_killed_and_started_mid_stream(nats_broker, influx, tmp_path):
    def fault(_ingest):
        influx.kill()
        time.sleep(3)
        influx.start()

    ingest = _run_with_fault(nats_broker, influx, tmp_path, fault)
    assert b"spooling" in ingest.log.read_bytes()
    assert not list((tmp_path / "state" / "spool").rglob("*.lp"))


def test_ingest_killed_and_restarted_mid_stream(nats_broker, influx, tmp_path):
    def fault(ingest):
        ingest.kill()
        time.sleep(2)
        ingest.start()

    _run_with_fault(nats_broker, influx, tmp_path, fault)


def test_broker_killed_and_restarted_mid_stream(nats_broker, influx, tmp_path):
    """Ingest reconnects by itself; the device's session resends what was not PUBACKed.
    After the restart TELEMETRY's source copies nothing for about 10 s (measured), so
    the wait for the last frames is long."""

    def fault(_ingest):
        nats_broker.kill()
        nats_broker.start()  # the same ports and file store

    _run_with_fault(nats_broker, influx, tmp_path, fault)


BACKLOG_S = 30
BACKLOG_ELDERS = 20
BACKLOG_RATE = 1000.0
"""Messages per second the devices publish while ingest is stopped (the issue's measure
on Mosquitto: 59,400 readings in 30 s, 14,742 of them lost by a kill -9)."""


def test_a_kill_9_of_the_broker_holding_a_30_s_backlog_loses_nothing(
    nats_broker, influx, tmp_path
):
    """Ingest is stopped while devices publish for 30 s; every publish is PUBACKed, then
    nats-server is killed (-9) and started again on the same store, and only then ingest:
    every acknowledged reading is stored, exactly once."""
    per_elder = round(BACKLOG_S * BACKLOG_RATE / BACKLOG_ELDERS)
    now = time.time()
    readings = [
        (topic(f"e{e}", "wearable", f"w{e}", "frame"),
         frame(f"e{e}", f"w{e}", now - 2 * per_elder + i))
        for i in range(per_elder) for e in range(BACKLOG_ELDERS)
    ]  # fmt: skip
    pub = Publisher(nats_broker.mqtt_port)
    began = time.monotonic()
    try:
        pub.publish(readings, rate=BACKLOG_RATE)
        pub.wait_acked(len(readings), 60)
    finally:
        pub.close()
    assert time.monotonic() - began >= BACKLOG_S
    nats_broker.kill()  # at once after the last PUBACK
    nats_broker.start()
    ingest = IngestProcess(nats_broker, influx, tmp_path)
    ingest.start()
    _stored_exactly(influx, len(readings), per_elder, BACKLOG_ELDERS)
    assert ingest.stop() == 0


def test_sigterm_flushes_and_exits_zero(nats_broker, influx, tmp_path):
    ingest = IngestProcess(nats_broker, influx, tmp_path)
    ingest.start()
    pub = Publisher(nats_broker.mqtt_port)
    n = pub.publish(_stream(time.time()))
    pub.wait_acked(n)
    assert ingest.proc is not None
    ingest.proc.send_signal(signal.SIGTERM)
    assert ingest.proc.wait(30) == 0
    db = _db(influx)
    # Whatever ingest had taken was stored before exit; the rest waits in TELEMETRY.
    stored = count(db, "wearable")
    ingest.start()
    wait_for(lambda: count(db, "wearable") == n, 30, "the rest after restart")
    assert stored <= n
    assert ingest.stop() == 0
    db.close()

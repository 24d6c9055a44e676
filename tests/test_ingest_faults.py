"""Faults mid-stream (influxd down, ingest killed, broker restarted): each reading stored once."""

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

    def __init__(self, broker, influx, tmp_path) -> None:
        self.env = {
            **os.environ,
            "HOMECARE_MQTT__URL": broker.url,
            "HOMECARE_MQTT__CLIENT_ID": "ingest-faults",
            "HOMECARE_INFLUX__URL": influx.url,
            "HOMECARE_STATE_DIR": str(tmp_path / "state"),
            "HOMECARE_INGEST__BATCH_INTERVAL_S": "0.05",
        }
        self.log = tmp_path / "ingest.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.running.append(self)

    def start(self) -> None:
        seen = self.log.read_bytes().count(b"subscribed") if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "ingest"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.log.read_bytes().count(b"subscribed") > seen, 30, "subscribed")

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
    """A failed test must not leave `homecare ingest` running (it would hold a session)."""
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


def _run_with_fault(broker, influx, tmp_path, fault) -> IngestProcess:
    ingest = IngestProcess(broker, influx, tmp_path)
    ingest.start()
    pub = Publisher(broker.port)
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
    db = _db(influx)
    wait_for(lambda: count(db, "wearable") >= total, 60, f"{total} frames in InfluxDB")
    time.sleep(1)  # anything re-delivered late would show as extra points now
    assert count(db, "wearable") == total
    for e in range(ELDERS):
        assert count(db, "wearable", f"elder='e{e}'") == SECONDS
    assert ingest.stop() == 0
    db.close()
    return ingest


def test_influxd_stopped_and_started_mid_stream(broker, influx, tmp_path):
    def fault(_ingest):
        influx.stop()
        time.sleep(3)
        influx.start()

    ingest = _run_with_fault(broker, influx, tmp_path, fault)
    assert b"spooling" in ingest.log.read_bytes()
    assert not list((tmp_path / "state" / "spool").rglob("*.lp"))


def test_ingest_killed_and_restarted_mid_stream(broker, influx, tmp_path):
    def fault(ingest):
        ingest.kill()
        time.sleep(2)
        ingest.start()

    _run_with_fault(broker, influx, tmp_path, fault)


def test_broker_restarted_mid_stream(broker, influx, tmp_path):
    def fault(_ingest):
        broker.restart()

    _run_with_fault(broker, influx, tmp_path, fault)


def test_sigterm_flushes_and_exits_zero(broker, influx, tmp_path):
    ingest = IngestProcess(broker, influx, tmp_path)
    ingest.start()
    pub = Publisher(broker.port)
    n = pub.publish(_stream(time.time()))
    pub.wait_acked(n)
    assert ingest.proc is not None
    ingest.proc.send_signal(signal.SIGTERM)
    assert ingest.proc.wait(30) == 0
    db = _db(influx)
    # Whatever ingest had received was stored before exit; the rest waits in the broker.
    stored = count(db, "wearable")
    ingest.start()
    wait_for(lambda: count(db, "wearable") == n, 30, "the rest after restart")
    assert stored <= n
    assert ingest.stop() == 0
    db.close()

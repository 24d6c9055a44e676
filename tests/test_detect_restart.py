"""`homecare detect` stopped between a fall's impact and the end of its stillness window.

A real ``nats-server`` (the ``nats_broker`` fixture: TELEMETRY, the ``detect`` consumer
with a 5 s ack wait, ALERTS and the state bucket), a wearable publishing a simulated
forward fall over MQTT, and ``homecare detect`` as a subprocess (data clock, state saved
every second). The process is killed (-9) or stopped (SIGTERM) after the impact and
before the stillness window ends (~11 s later), started again, and the rest of the fall
published: ALERTS holds the fall exactly once. Without the saved state the restarted
process would never see the impact (its frames were acknowledged) and miss the fall.
A third case kills it before its first save: the restart replays all it was handed.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import Publisher, topic, wait_for
from test_detect_service import stored_alerts

from device_sim.motions import motion
from device_sim.signals import to_device_frame
from harness.demo import DetectWorker
from harness.servers import LocalNats

pytestmark = pytest.mark.servers

RATE = 50


def fall_frames(now: float) -> tuple[list[tuple[str, bytes]], int]:
    """A forward fall as 1 s wearable frames stamped up to ``now``, and its impact's frame."""
    _, xyz, info = motion("fall_forward", np.random.default_rng(7), rate=RATE)
    accel = to_device_frame(xyz).astype(np.float32)
    n = len(accel) // RATE
    t0 = float(int(now)) - n
    frames = []
    for k in range(n):
        body = {"elder": "e1", "device": "w1", "ts": t0 + k, "rate": RATE,
                "accel": np.round(accel[k * RATE : (k + 1) * RATE], 4).tolist()}  # fmt: skip
        frames.append((topic("e1", "wearable", "w1", "frame"), json.dumps(body).encode()))
    return frames, int(info["impact_t"])


class DetectProcess(DetectWorker):
    """``homecare detect`` as its own process, as operations run it; the next one takes
    over the same state folder."""

    def __init__(self, server: LocalNats, tmp_path: Path, n: int, save_every_s: float = 1) -> None:
        self.state_dir = tmp_path / "state"
        super().__init__(server.url, 8, self.state_dir, tmp_path / f"detect-{n}.log",  # as the
                         save_every_s=save_every_s, HOMECARE_DETECT__CLOCK="data")  # fixture

    def wait(self, what: str, check: Any, timeout_s: float = 30) -> None:
        wait_for(lambda: bool(check(self.status())), timeout_s, what)


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM", "kill -9 before any save"])
def test_a_fall_in_progress_survives_a_restart_of_detect_once(how, nats_broker, tmp_path):
    """``kill -9 before any save``: nothing was saved nor acknowledged, so the restarted
    process replays everything the first was handed, and skips the consumer's
    redeliveries of it (after its 5 s ack wait)."""
    frames, impact = fall_frames(time.time())
    device = Publisher(nats_broker.mqtt_port, client_id="w1")
    unsaved = how == "kill -9 before any save"
    first = DetectProcess(nats_broker, tmp_path, 1, save_every_s=3600 if unsaved else 1)
    try:
        first.wait("detect started", lambda s: "processed_seq" in s)
        # up to two frames past the impact: seen, saved and acknowledged
        sent = device.publish(frames[: impact + 3])
        device.wait_acked(sent, 20)
        first.wait("the impact seen", lambda s: s["messages"] >= sent)
        if not unsaved:
            first.wait("the impact saved", lambda s: s["saved_seq"] >= sent)
        # two more, processed (perhaps not saved yet), then the stop
        device.publish(frames[impact + 3 : impact + 5])
        device.wait_acked(sent + 2, 20)
        first.wait("two more frames", lambda s: s["messages"] >= sent + 2)
        assert first.status()["alerts"] == {}  # the stillness window is not over
        if how == "SIGTERM":
            first.proc.send_signal(signal.SIGTERM)
        else:
            first.proc.kill()
        assert first.proc.wait(30) == (0 if how == "SIGTERM" else -signal.SIGKILL)
        (first.state_dir / "detect.json").unlink()

        second = DetectProcess(nats_broker, tmp_path, 2)
        try:
            second.wait("detect started again", lambda s: "processed_seq" in s)
            # it takes the elder's partition when its next message comes with the pin
            # (the rest of the fall, or a redelivery of what the first was handed)
            device.publish(frames[impact + 5 :])
            device.wait_acked(len(frames), 20)
            second.wait("the partition taken", lambda s: s["takeovers"] == 1)
            resumed = second.status()
            if unsaved:  # it read again all the first process was handed
                assert resumed["replayed"] >= sent + 2
            else:
                assert resumed["replayed"] <= len(frames) - sent  # it resumed the saved state
            second.wait("the fall", lambda s: s["alerts"].get("fall") == 1)
            if unsaved:  # the consumer's redeliveries, skipped
                second.wait("redeliveries", lambda s: s["skipped"] >= sent + 2)
            second.wait("every frame acknowledged",
                        lambda s: s["saved_seq"] >= len(frames) and s["unacknowledged"] == 0)
        finally:
            second.proc.send_signal(signal.SIGTERM)
            assert second.proc.wait(30) == 0, second.log.read_text()[-2000:]
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
        device.close()
    stored = stored_alerts(nats_broker.url)
    falls = [a for a in stored if a.kind == "fall"]
    assert len(falls) == 1, stored
    assert falls[0].elder == "e1"
    assert abs(falls[0].ts - json.loads(frames[impact][1])["ts"]) < 1.5
    if how == "SIGTERM":  # the state covered all it was handed: the replay is what the
        assert resumed["replayed"] <= len(frames) - sent - 2  # batch that brought the pin held

"""`homecare detect` as several workers sharing TELEMETRY's partitions.

A real ``nats-server`` (the ``nats_broker`` fixture: 8 partitions, each with its detect
consumer in the ``pinned_client`` priority group, a 3 s priority timeout, a 5 s ack
wait), one wearable per partition publishing a frame a second over MQTT, and workers as
processes (``homecare detect``, state saved every second, each with its own state
folder). One worker takes every partition; a second joins and they hold four each; the
one holding a fall in progress (impact seen, stillness window not over) is killed (-9):
the other takes its partitions within seconds and the fall is alerted exactly once; a
third joins and takes a share.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from support import Publisher, topic, wait_for
from test_detect_restart import fall_frames
from test_detect_service import stored_alerts

from broker.provision import provision
from harness.demo import DetectWorker
from harness.servers import LocalNats
from homecare.jetstream import partition_of

pytestmark = pytest.mark.servers

PARTITIONS = 8
TAKEOVER_LIMIT_S = 12.0
"""Generous for a loaded CI machine: the target (priority timeout 3 s, liveness 3 s) is 5 s."""


def last_seq(url: str, subjects: str) -> int:
    """The stream sequence of TELEMETRY's last message on ``subjects``."""

    async def get() -> int:
        nc = await nats.connect(url)
        try:
            return int((await nc.jetstream().get_last_msg("TELEMETRY", subjects)).seq or 0)
        finally:
            await nc.close()

    return asyncio.run(get())


def elder_per_partition() -> dict[int, str]:
    """An elder id for each partition (TELEMETRY's transform puts elders by FNV-1a)."""
    found: dict[int, str] = {}
    k = 0
    while len(found) < PARTITIONS:
        k += 1
        found.setdefault(partition_of(f"e{k}", PARTITIONS), f"e{k}")
    return found


def fall_of(elder: str) -> tuple[list[tuple[str, bytes]], int]:
    """A fall as ``elder``'s wearable frames (``w<elder>``), and its impact's frame."""
    frames, impact = fall_frames(time.time())
    return [(t.replace("/e1/", f"/{elder}/").replace("/w1/", f"/w{elder}/"),
             p.replace(b'"e1"', f'"{elder}"'.encode()).replace(b'"w1"', f'"w{elder}"'.encode()))
            for t, p in frames], impact  # fmt: skip


def publish_first(
    device: Publisher, url: str, frames: list[tuple[str, bytes]], n: int, partition: int,
    elder: str,
) -> int:  # fmt: skip
    """Publish ``frames[:n]``, acknowledged; the stream sequence of the last."""
    device.publish(frames[:n])
    device.wait_acked(n, 20)
    return last_seq(url, f"telemetry.{partition}.t.{elder}.>")


def start_worker(server: LocalNats, tmp_path: Path, name: str) -> DetectWorker:
    """``homecare detect`` as its own process, with its own state folder."""
    return DetectWorker(server.url, PARTITIONS, tmp_path / name, tmp_path / f"{name}.log",
                        HOMECARE_DETECT__CLOCK="data")  # fmt: skip


class Beds:
    """One bed sensor per partition, a reading a second each, until stopped: every
    partition has traffic, so every partition is pinned to some worker. The beds are
    empty: their elders are up (a fall while the bed says "in bed" is a turn in bed)."""

    def __init__(self, port: int, elders: dict[int, str]) -> None:
        self.device = Publisher(port, client_id="beds")
        self.elders = list(elders.values())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            now = float(int(time.time()))
            self.device.publish([
                (topic(e, "bed", f"b{e}", "reading"), json.dumps({
                    "elder": e, "device": f"b{e}", "ts": now, "presence": False,
                    "movement": 0.0}).encode())
                for e in self.elders
            ])  # fmt: skip

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.device.close()


def test_workers_share_the_partitions_and_a_killed_one_loses_no_fall(nats_broker, tmp_path):
    elders = elder_per_partition()
    workers: list[DetectWorker] = []
    background: Beds | None = None
    try:
        a = start_worker(nats_broker, tmp_path, "a")
        workers.append(a)
        wait_for(lambda: "processed_seq" in a.status(), 60, "worker a started")
        background = Beds(nats_broker.mqtt_port, elders)
        wait_for(lambda: len(a.held()) == PARTITIONS, 60, "a alone to hold every partition")

        b = start_worker(nats_broker, tmp_path, "b")
        workers.append(b)
        wait_for(lambda: len(a.held()) == len(b.held()) == 4, 60, "a and b to hold 4 each")
        assert not a.held() & b.held()
        assert a.status()["released"] == 4  # its surplus, saved and handed back

        # a fall in one of b's partitions: the impact and two frames past it, seen and saved
        fall_partition = min(b.held())
        fall_elder = elders[fall_partition]
        frames, impact = fall_of(fall_elder)
        device = Publisher(nats_broker.mqtt_port, client_id=f"w{fall_elder}")
        try:
            seen = publish_first(device, nats_broker.url, frames, impact + 3, fall_partition,
                                 fall_elder)  # fmt: skip
            wait_for(lambda: b.status()["sequences"][str(fall_partition)][1] >= seen, 20,
                     "b to save its state past the impact")  # fmt: skip
            assert b.status()["alerts"] == {}  # the stillness window is not over
            theirs = b.held()
            b.proc.kill()
            killed = time.time()
            assert b.proc.wait(10) == -signal.SIGKILL

            wait_for(lambda: theirs <= a.held(), TAKEOVER_LIMIT_S + 5, "a to take b's partitions")
            taken = a.status()["taken_at"]
            takeover = max(float(taken[str(p)]) for p in theirs) - killed
            assert takeover < TAKEOVER_LIMIT_S, takeover

            device.publish(frames[impact + 3 :])
            device.wait_acked(len(frames), 20)
            wait_for(lambda: a.status()["alerts"].get("fall") == 1, 30, "the fall")
            assert a.status()["replayed"] >= 1  # what b was handed after its last save
        finally:
            device.close()

        c = start_worker(nats_broker, tmp_path, "c")
        workers.append(c)
        wait_for(lambda: len(c.held()) >= 3 and len(a.held()) <= 4, 60, "c to take a share")
        assert not a.held() & c.held()
    finally:
        if background is not None:
            background.close()
        for worker in workers:
            worker.stop()
    falls = [x for x in stored_alerts(nats_broker.url) if x.kind == "fall"]
    assert len(falls) == 1, falls
    assert falls[0].elder == fall_elder


def test_provisioning_retires_the_consumers_of_site_shards(nats_broker):
    """Detect's consumers of before its workers (``detect``, ``detect~<sites>``) would
    keep every reading of an interest stream until its max age: provisioning deletes
    them, and keeps the partitions' consumers."""

    async def add_old() -> None:
        nc = await nats.connect(nats_broker.url)
        try:
            js = nc.jetstream()
            for name, subject in (("detect", None), ("detect~north", "telemetry.*.north.>")):
                config = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT,
                                        filter_subject=subject)  # fmt: skip
                await js.add_consumer("TELEMETRY", config)
        finally:
            await nc.close()

    asyncio.run(add_old())
    done = provision(nats_broker.url, mqtt_url=nats_broker.mqtt_url, partitions=PARTITIONS,
                     ack_wait_s=5.0)  # fmt: skip
    assert sorted(done.retired) == ["detect", "detect~north"]
    assert done.created == []
    assert [f"detect-p{p}" for p in range(PARTITIONS)] == [
        n for n in done.existing if n.startswith("detect-p")]  # fmt: skip


def unpin(url: str, durable: str) -> None:
    """Reset a partition's pin from outside (``$JS.API.CONSUMER.UNPIN``): the server then
    answers its holder's pull with status 423, as a consumer's new leader does after a
    node's loss (it does not know the pin)."""

    async def run() -> None:
        nc = await nats.connect(url)
        try:
            reply = await nc.request(f"$JS.API.CONSUMER.UNPIN.TELEMETRY.{durable}",
                                     json.dumps({"group": "detect"}).encode(), timeout=5)
            assert "error" not in json.loads(reply.data or b"{}"), reply.data
        finally:
            await nc.close()

    asyncio.run(run())


def test_a_pin_given_back_is_taken_with_the_state_kept(nats_broker, tmp_path):
    """A worker whose pin is reset (status 423) and then given back takes the partition
    again from the state it kept, not from its snapshot: a fall whose impact it had seen
    before is still alerted, once."""
    elders = elder_per_partition()
    background: Beds | None = None
    a = start_worker(nats_broker, tmp_path, "a")
    try:
        wait_for(lambda: "processed_seq" in a.status(), 60, "worker a started")
        background = Beds(nats_broker.mqtt_port, elders)
        wait_for(lambda: len(a.held()) == PARTITIONS, 60, "a alone to hold every partition")
        fall_partition = 3
        fall_elder = elders[fall_partition]
        frames, impact = fall_of(fall_elder)
        device = Publisher(nats_broker.mqtt_port, client_id=f"w{fall_elder}")
        try:
            seen = publish_first(device, nats_broker.url, frames, impact + 3, fall_partition,
                                 fall_elder)  # fmt: skip
            wait_for(lambda: a.status()["sequences"][str(fall_partition)][0] >= seen, 20,
                     "a to detect past the impact")  # fmt: skip
            assert a.status()["alerts"] == {}
            unpin(nats_broker.url, f"detect-p{fall_partition}")
            wait_for(lambda: a.status()["lost"] >= 1, 20, "a to hear its pin is lost")
            wait_for(lambda: a.status()["taken_back"] >= 1, 20, "a to take it back")
            assert fall_partition in a.held()
            device.publish(frames[impact + 3 :])
            device.wait_acked(len(frames), 20)
            wait_for(lambda: a.status()["alerts"].get("fall") == 1, 30, "the fall")
        finally:
            device.close()
    finally:
        if background is not None:
            background.close()
        a.stop()
    assert "back with its own state" in a.log.read_text()
    falls = [x for x in stored_alerts(nats_broker.url) if x.kind == "fall"]
    assert len(falls) == 1, falls


def steal(url: str, durable: str, n: int, publish: Callable[[], None]) -> list[int]:
    """Pull ``n`` messages of a partition with its holder's pin, as the holder's own pull
    would have got them, and never hand them on: what a worker whose node dies loses in
    flight. ``publish`` once this pull is first in the consumer's queue (the holder's pull
    out, at most 1 s long, has expired). The stream sequences taken."""

    async def run() -> list[int]:
        nc = await nats.connect(url)
        try:
            info = json.loads((await nc.request(f"$JS.API.CONSUMER.INFO.TELEMETRY.{durable}",
                                                b"", timeout=5)).data)
            pin = info["priority_groups"][0]["pinned_client_id"]
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            pull = {"batch": n, "expires": int(20e9), "group": "detect", "id": pin}
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.{durable}",
                             json.dumps(pull).encode(), reply=inbox)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(publish)
            taken: list[int] = []
            while len(taken) < n:
                msg = await sub.next_msg(20)
                if msg.data:
                    taken.append(msg.metadata.sequence.stream)
            return taken
        finally:
            await nc.close()

    return asyncio.run(run())


def test_messages_handed_out_that_never_came_are_read_again(nats_broker, tmp_path):
    """Messages the partition's consumer handed out that never reached its worker (in
    flight when the worker's node died) would come again only after ``ack_wait``, and be
    skipped then as processed: the worker sees the gap in the consumer's sequence, takes
    the partition again from its own state and reads them from the stream. Here a fall's
    impact is what never came: it is still alerted, once."""
    elders = elder_per_partition()
    fall_partition = 5
    fall_elder = elders.pop(fall_partition)
    background: Beds | None = None
    a = start_worker(nats_broker, tmp_path, "a")
    try:
        wait_for(lambda: "processed_seq" in a.status(), 60, "worker a started")
        background = Beds(nats_broker.mqtt_port, elders)  # the other partitions
        frames, impact = fall_of(fall_elder)
        device = Publisher(nats_broker.mqtt_port, client_id=f"w{fall_elder}")
        try:
            seen = publish_first(device, nats_broker.url, frames, impact - 2, fall_partition,
                                 fall_elder)  # fmt: skip
            wait_for(lambda: len(a.held()) == PARTITIONS, 60, "a alone to hold every partition")
            wait_for(lambda: a.status()["sequences"][str(fall_partition)][0] >= seen, 20,
                     "a to detect up to the impact")  # fmt: skip

            def impact_frames() -> None:
                device.publish(frames[impact - 2 : impact + 2])
                device.wait_acked(impact + 2, 20)

            stolen = steal(nats_broker.url, f"detect-p{fall_partition}", 4, impact_frames)
            assert len(stolen) == 4
            assert min(stolen) > seen  # the impact's frames never reached the worker
            device.publish(frames[impact + 2 :])
            device.wait_acked(len(frames), 20)
            wait_for(lambda: a.status()["alerts"].get("fall") == 1, 30, "the fall")
            assert a.status()["gaps"] >= 1
        finally:
            device.close()
    finally:
        if background is not None:
            background.close()
        a.stop()
    falls = [x for x in stored_alerts(nats_broker.url) if x.kind == "fall"]
    assert len(falls) == 1, falls

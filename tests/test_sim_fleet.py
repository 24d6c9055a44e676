"""The simulated fleet through a real NATS Server's MQTT listener: counts, availability, wills,
restarts and a kill -9 of the server (where no will is published: presence comes from the
device-health detector's timeouts)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from itertools import pairwise

import paho.mqtt.client as mqtt
import pytest
from support import elders_at, wait_for

from detectors.base import ReadingBatch
from detectors.batches import Batcher
from detectors.device_health import DeviceHealthDetector
from device_sim import SimConfig, Simulation, SosPress
from device_sim.fleet import Fleet, FleetError, FleetStats
from homecare.consumer import AckMode, RawMessage
from homecare.contract import PAYLOADS, Stream, Topic, check_ids, subscription
from homecare.edge import Edge
from homecare.jetstream import INGEST_CONSUMER, JetStreamConsumer
from homecare.settings import ContractSettings

pytestmark = pytest.mark.servers


class Subscriber:
    """A QoS 1 subscriber with a persistent session that keeps every message it gets."""

    def __init__(self, port: int, client_id: str = "counter", topic: str = "homecare/v1/#"):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5)

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < count:
            time.sleep(0.02)
        time.sleep(0.2)  # anything beyond the expected count would show up now
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained(port: int, topic: str, expect: int, timeout: float = 5.0) -> dict[str, bytes]:
    """The retained messages under ``topic`` as a fresh subscriber sees them."""
    sub = Subscriber(port, client_id=f"peek-{time.monotonic_ns()}", topic=topic)
    try:
        got = sub.wait_for(expect, timeout)
    finally:
        sub.close()
    return {t: p for t, p, was_retained in got if was_retained}


NOON = 19723 * 86400.0 + 12 * 3600.0


@pytest.mark.parametrize("gateways", [0, 2])
def test_subscriber_counts_exactly_what_the_fleet_says(nats_broker, gateways):
    sub = Subscriber(nats_broker.mqtt_port)
    sim = Simulation(SimConfig(elders=6, seed=2, site="north", start=NOON))
    sim.inject(3, NOON + 4.2, SosPress())

    async def main() -> Fleet:
        async with Fleet(sim, nats_broker.mqtt_url, gateways=gateways) as fleet:
            await fleet.run(seconds=40, speed=None)
        return fleet

    fleet = asyncio.run(main())
    stats = fleet.stats
    got = sub.wait_for(stats.acked)
    sub.close()
    assert stats.pending == 0
    assert stats.offered == stats.acked == len(got)
    topics = [Topic.parse(t) for t, _, _ in got]
    assert Counter(t.stream for t in topics) == stats.per_stream
    assert Counter(t.elder for t in topics) == stats.per_elder
    assert stats.per_stream[Stream.SOS] == 1
    assert stats.per_stream[Stream.AVAILABILITY] == 2 * 3 * 6  # online, then offline on exit
    assert stats.per_stream[Stream.FRAME] >= 6 * 40 * 0.5
    ctx = {"now": NOON + 40}
    for (_, payload, _), topic in zip(got, topics, strict=True):
        if topic.stream == Stream.AVAILABILITY:
            assert payload in (b"online", b"offline")
            continue
        check_ids(topic, PAYLOADS[topic.stream].model_validate_json(payload, context=ctx))
    # Per device, messages arrive in the order they were stamped.
    frames: dict[str, list[float]] = {}
    for (_, payload, _), topic in zip(got, topics, strict=True):
        if topic.stream == Stream.FRAME:
            frames.setdefault(topic.device, []).append(json.loads(payload)["ts"])
    assert all(ts == sorted(ts) and len(ts) == len(set(ts)) for ts in frames.values())
    final = retained(nats_broker.mqtt_port, subscription("north"), 18)
    assert len(final) == 18
    assert set(final.values()) == {b"offline"}


def test_each_device_online_with_a_last_will_that_fires_when_killed(nats_broker):
    sim = Simulation(SimConfig(elders=2, seed=3, start=NOON))

    async def main() -> dict[str, bytes]:
        async with Fleet(sim, nats_broker.mqtt_url) as fleet:
            await fleet.run(seconds=3, speed=None)
            await fleet.drain()
            before = await asyncio.to_thread(retained, nats_broker.mqtt_port,
                                             "homecare/v1/+/+/+/+/availability", 6)
            assert set(before.values()) == {b"online"}
            assert len(before) == 6
            fleet.kill("w0001")  # no DISCONNECT: the broker publishes the will
            await fleet.run(seconds=3, speed=None)
            await fleet.drain()
            after = await asyncio.to_thread(retained, nats_broker.mqtt_port,
                                            "homecare/v1/+/+/+/+/availability", 6)
            assert fleet.stats.dropped >= 3  # the dead wearable's frames went nowhere
        return after

    after = asyncio.run(main())
    wearable = str(sim.elders[0].wearable.availability)
    assert after[wearable] == b"offline"
    assert [v for k, v in after.items() if k != wearable] == [b"online"] * 5
    # On a clean exit the others said offline themselves.
    assert set(retained(nats_broker.mqtt_port, "homecare/v1/+/+/+/+/availability", 6).values()) == {
        b"offline"}


def test_a_killed_broker_publishes_no_last_will_presence_comes_from_timeouts(nats_broker):
    """A last will is not published when the node that holds the device's connection is
    killed: device presence comes from data and heartbeat timeouts (the device-health
    detector).

    A home's three devices publish for a minute; detect's consumer takes what they sent;
    then kill -9 of nats-server, and the home loses power too (its devices never come
    back). After the restart nobody says ``offline``: not the dead node, not the
    restarted one (the devices' sessions and wills were on the node that died), and the
    retained availability still says ``online``. The device-health detector, fed the
    readings the consumer took, reports each device offline from its silence alone
    (``last_will`` 0), after its own cadence and not before."""
    start = float(int(time.time()) - 90)
    sim = Simulation(SimConfig(elders=1, seed=3, site="north", start=start,
                               utc_offset_s=elders_at(start)))
    devices = {d.device for d in sim.elders[0].devices}
    availability = "homecare/v1/+/+/+/+/availability"
    watch = Subscriber(nats_broker.mqtt_port, client_id="presence", topic=availability)

    with JetStreamConsumer(nats_broker.url, durable=INGEST_CONSUMER,
                           ack=AckMode.ON_TAKE) as consumer:

        async def publish() -> FleetStats:
            async with Fleet(sim, nats_broker.mqtt_url, offline_on_exit=False) as fleet:
                await fleet.run(seconds=60, speed=None)
                await fleet.drain()
                took.extend(await asyncio.to_thread(_take, consumer, fleet.stats.acked))
                nats_broker.kill()  # kill -9 of the node holding the devices' connections
                for device in devices:
                    fleet.kill(device)  # ... and the power cut at home: they stay dead
                await asyncio.to_thread(nats_broker.start)
            return fleet.stats

        took: list[RawMessage] = []
        stats = asyncio.run(publish())
    assert len(took) == stats.acked

    wait_for(lambda: watch.client.is_connected(), 20, "the watcher back on the restarted server")
    time.sleep(3.0)  # a will, had anyone published one, would be here by now
    seen = watch.wait_for(0, timeout=0)
    watch.close()
    # live "online" from the start (again, where the kill took the watcher's acks) and the
    # retained state replayed to its resubscription: "offline" nowhere
    assert {p for _t, p, _r in seen} == {b"online"}
    assert len({t for t, _p, _r in seen}) == 3
    stale = retained(nats_broker.mqtt_port, availability, 3)
    assert sorted(stale.values()) == [b"online"] * 3  # what apps see: still "online"

    edge, batcher = Edge(ContractSettings()), Batcher()
    ctx = edge.context()
    detector = DeviceHealthDetector()
    for batch in batcher.build(edge.decode(m, ctx) for m in took).batches:
        if isinstance(batch, ReadingBatch) and batch.stream in detector.streams:
            assert detector.update(batch) == []
    last = time.time()
    assert detector.tick(last + 60) == []  # a minute of silence is no outage
    offline: dict[str, dict[str, float]] = {}
    for t in range(90, 1230, 30):
        for found in detector.tick(last + t):
            assert found.kind == "offline"
            offline[batcher.devices.key(found.device)] = found.evidence
    assert set(offline) == devices
    assert all(ev["last_will"] == 0.0 and ev["silent_s"] > ev["limit_s"] >= 120
               for ev in offline.values()), offline


def _take(consumer: JetStreamConsumer, n: int, timeout_s: float = 30.0) -> list[RawMessage]:
    got: list[RawMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.take(n - len(got), 0.5).messages
    return got


def _key(topic: str, payload: bytes) -> tuple[str, float, int]:
    body = json.loads(payload)
    return topic, body["ts"], body.get("seq", -1)


@pytest.mark.parametrize(("gateways", "how", "gap_s"),
                         [(0, "restart", 0.0), (0, "kill", 0.5), (1, "stop", 0.5)])
def test_broker_restart_mid_run_loses_nothing(nats_broker, gateways, how, gap_s):
    """A clean restart (gap 0), or a stop or a kill -9, a gap while devices keep
    publishing, a start on the same ports and file store."""
    sub = Subscriber(nats_broker.mqtt_port)
    sim = Simulation(SimConfig(elders=5, seed=4, start=NOON))
    sent: list[tuple[str, bytes]] = []
    while_down = []
    down = threading.Event()

    def restart() -> None:
        if how == "restart":
            nats_broker.restart()
            return
        if how == "kill":
            nats_broker.kill()
        else:
            nats_broker.stop()
        down.set()
        time.sleep(gap_s)
        down.clear()
        nats_broker.start()
    step = sim.step

    def recording_step(t: float, dt: float = 1.0):
        msgs = step(t, dt)
        sent.extend((str(topic), payload) for topic, payload in msgs)
        if down.is_set():
            while_down.extend(msgs)
        return msgs

    sim.step = recording_step  # type: ignore[method-assign]

    async def main() -> Fleet:
        async with Fleet(sim, nats_broker.mqtt_url, gateways=gateways, keepalive_s=5) as fleet:
            run = asyncio.create_task(fleet.run(seconds=60, speed=30))  # 2 s of wall time
            await asyncio.sleep(0.6)
            await asyncio.to_thread(restart)
            await run
            await fleet.drain(20)
        return fleet

    fleet = asyncio.run(main())
    stats = fleet.stats
    assert stats.reconnects >= (15 if gateways == 0 else 1)
    if gap_s:
        assert len(while_down) > 50  # published while the broker was away, sent after
    assert stats.pending == 0
    assert stats.acked == stats.offered
    expected = {_key(t, p) for t, p in sent}
    assert len(expected) == len(sent) > 300
    got = sub.wait_for(len(sent) + 2 * 15, timeout=30)
    sub.close()
    received = {_key(t, p) for t, p, _ in got if not t.endswith("/availability")}
    assert received == expected  # every message at least once (QoS 1 may duplicate)


def test_unreachable_broker_is_a_clear_error(nats_broker):
    nats_broker.stop()
    sim = Simulation(SimConfig(elders=1, seed=0, start=NOON))

    async def main() -> None:
        async with Fleet(sim, nats_broker.mqtt_url):
            pass

    with pytest.raises(FleetError, match="cannot connect"):
        asyncio.run(main())


@pytest.mark.parametrize(("spread", "widest"), [(10, 0.6), (0, 0.3)])
def test_paced_seconds_go_out_in_device_phases(nats_broker, spread, widest):
    """In real time each device keeps its own phase within the second (``spread``
    slices), so a city's devices do not all publish in the same millisecond; 0 is
    the synchronized worst case. Arrival times at a real subscriber show which: spread
    over more than 0.6 s, or one burst (some 20 ms alone; under 0.3 s on a CI machine
    busy with other tests, where 0.1 s once failed)."""
    sub = Subscriber(nats_broker.mqtt_port, client_id=f"phase{spread}",
                     topic="homecare/v1/+/+/+/+/frame")
    arrived: list[tuple[float, str]] = []
    sub.client.on_message = lambda _c, _u, m: arrived.append((time.monotonic(), m.topic))
    sim = Simulation(SimConfig(elders=30, seed=4, start=NOON))  # paced from the run's start

    async def main() -> None:
        async with Fleet(sim, nats_broker.mqtt_url, gateways=1, spread=spread) as fleet:
            for _ in range(3):  # in chunks, as `homecare sim` runs: one schedule throughout
                await fleet.run(seconds=1, speed=1.0)
            await fleet.drain()

    asyncio.run(main())
    sub.close()
    assert len(arrived) >= 3 * 15  # frames of the wearables worn at noon
    # one simulated second's frames: their arrivals span most of a second, or an instant
    t0 = arrived[0][0]
    second = [t for t, _ in arrived if t - t0 < 0.95]
    span = max(second) - min(second)
    assert (span > widest) if spread else (span < widest)
    # a device's frames keep their phase, one second apart, across the runs too
    device = arrived[len(arrived) // 2][1]
    times = [t for t, topic in arrived if topic == device]
    assert len(times) >= 2
    assert all(abs(b - a - 1.0) < 0.3 for a, b in pairwise(times))


def test_offer_publishes_prerendered_traffic_on_schedule_within_the_window(nats_broker):
    """A benchmark's load generator: messages rendered first, then published at a rate,
    never more than ``window`` unacknowledged, every one counted by a real subscriber."""
    sub = Subscriber(nats_broker.mqtt_port, client_id="offer", topic="homecare/v1/+/+/+/+/frame")
    sim = Simulation(SimConfig(elders=10, seed=5, start=NOON))
    rendered = [m for m in sim.step(NOON, 12.0) if m[0].stream is Stream.FRAME]
    seconds: list[int] = []
    most = [0]

    async def main() -> tuple[float, float]:
        async with Fleet(sim, nats_broker.mqtt_url, gateways=1, window=7,
                         offline_on_exit=False) as fleet:
            await fleet.drain()  # the devices' availability
            publish = fleet.publish

            def publish_noting(topic: Topic, payload: bytes, *, retain: bool = False) -> None:
                publish(topic, payload, retain=retain)
                most[0] = max(most[0], fleet.outstanding)

            fleet.publish = publish_noting  # type: ignore[method-assign]
            t = time.monotonic()
            await fleet.offer(rendered, 1e9)  # as fast as the window allows
            burst = time.monotonic() - t
            await fleet.drain()
            t = time.monotonic()
            await fleet.offer(rendered, len(rendered) / 1.5,
                              on_second=lambda s: seconds.append(s.acked))
            paced = time.monotonic() - t
            await fleet.drain()
        return burst, paced

    burst, paced = asyncio.run(main())
    got = sub.wait_for(2 * len(rendered))
    sub.close()
    assert len(rendered) >= 60
    assert len(got) == 2 * len(rendered)
    assert most[0] == 7
    assert 1.3 < paced < 3.0
    assert burst < paced
    assert len(seconds) == 1

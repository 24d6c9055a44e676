"""BatchClient against a real Mosquitto: it must read exactly what paho reads, and its
batched acknowledgements must be the ones the broker expects."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from support import wait_for

from harness.servers import LocalBroker
from homecare.consumer import AckMode, Retained, Subscription
from homecare.mqtt_batch import READ_BYTES, BatchClient
from homecare.receiver import MqttConsumer, connect_session, mqtt_client, session_properties
from homecare.settings import MqttSettings

Received = tuple[bytes, bytes, int, bool]


class Subscriber:
    """A BatchClient in a persistent session that records what it reads."""

    def __init__(self, settings: MqttSettings, client_id: str = "batch") -> None:
        self.got: list[Received] = []
        self.mids: list[int] = []
        self.lock = threading.Lock()
        self.client = mqtt_client(settings, client_id, manual_ack=True, client_class=BatchClient)
        self.client.on_raw_publish = self._raw
        self.client.on_message = lambda _c, _u, m: self._raw(
            m._topic, m.payload, m.mid, m.qos, m.retain
        )
        self.client.on_connect = lambda c, *_: c.subscribe("t/#", options=SubscribeOptions(qos=1))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        connect_session(self.client, settings, session_properties(receive_maximum=65535))
        # what is published before the SUBACK may find no subscription (a loaded machine)
        assert subscribed.wait(30)

    def _raw(self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        with self.lock:
            self.got.append((topic, payload, qos, retain))
            if qos:
                self.mids.append(mid)

    def close(self) -> None:
        """Disconnect once the broker has read our acknowledgements (see settle)."""
        assert self.client.settle()
        self.client.disconnect()
        self.client.loop_stop()


def _publish(settings: MqttSettings, messages: list[tuple[str, bytes, int, Any]]) -> None:
    client = mqtt_client(settings, "publisher")
    client.max_inflight_messages_set(0)  # in order, QoS 0 and 1 alike
    client.connect(settings.host, settings.port)
    client.loop_start()
    infos = [client.publish(t, p, qos=q, properties=props) for t, p, q, props in messages]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def test_reads_every_packet_as_paho_does(tmp_path: Path) -> None:
    """Packet sizes that cross a read (300 kB payloads), long topics, QoS 0 and 1, and a
    PUBLISH with properties (left to paho) all arrive whole and in order."""
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("vendor", "acme")
    messages = [
        (f"t/{'x' * (i % 300)}/{i}", bytes([i % 256]) * size, i % 2, props if i == 7 else None)
        for i, size in enumerate([0, 1, 10, 2000, 300_000, 5, 70_000, 3, 1_000_000] * 20)
    ]
    with LocalBroker(tmp_path / "mosquitto") as broker:
        settings = MqttSettings(url=broker.url)
        batch = Subscriber(settings)
        plain: list[Received] = []
        paho = mqtt_client(settings, "plain")
        paho.on_message = lambda _c, _u, m: plain.append((m._topic, m.payload, m.qos, m.retain))
        paho.on_connect = lambda c, *_: c.subscribe("t/#", options=SubscribeOptions(qos=1))
        subscribed = threading.Event()
        paho.on_subscribe = lambda *_: subscribed.set()
        connect_session(paho, settings, session_properties())
        assert subscribed.wait(30)
        _publish(settings, messages)
        wait_for(lambda: len(batch.got) == len(messages) == len(plain), 30, "every message")
        batch.close()
        paho.disconnect()
        paho.loop_stop()
    assert batch.got == plain
    assert [(t.encode(), p, q) for t, p, q, _ in messages] == [g[:3] for g in batch.got]


def test_acknowledged_in_one_write_means_not_redelivered(tmp_path: Path) -> None:
    """Ack 1,500 of 2,000 with ack_many, reconnect: the broker re-sends exactly the 500."""
    messages = [(f"t/e{i % 50}/frame", f"{i}".encode(), 1, None) for i in range(2000)]
    with LocalBroker(tmp_path / "mosquitto") as broker:
        settings = MqttSettings(url=broker.url)
        first = Subscriber(settings)
        _publish(settings, messages)
        wait_for(lambda: len(first.got) == 2000, 30, "2,000 messages")
        first.client.ack_many(first.mids[:1500])
        first.client.ack_many([])  # nothing to send is not an error
        first.close()

        again = Subscriber(settings)
        wait_for(lambda: len(again.got) >= 500, 30, "the 500 unacknowledged messages")
        again.client.ack_many(again.mids)
        again.close()
        third = Subscriber(settings)
        _publish(settings, [("t/last", b"last", 1, None)])
        wait_for(lambda: len(third.got) == 1, 30, "the next message")
        third.close()
    assert [p for _t, p, _q, _r in again.got] == [f"{i}".encode() for i in range(1500, 2000)]
    assert third.got == [(b"t/last", b"last", 1, False)]


def test_receiver_stays_within_its_bound_when_the_broker_sends_past_it(tmp_path: Path) -> None:
    """Receive Maximum bounds only QoS 1 messages in flight; QoS 0 ones (a device that
    publishes below the contract's QoS) come as fast as TCP allows. The receiver stops
    reading at Receive Maximum, TCP holds the rest back, and it reads on as batches are
    taken."""
    receive_maximum, size, n = 200, 4000, 3000
    bound = receive_maximum
    with LocalBroker(tmp_path / "mosquitto") as broker:
        settings = MqttSettings(url=broker.url)
        receiver = MqttConsumer(
            settings, client_id="bounded", topics=("t/#",), max_pending=receive_maximum
        )
        with receiver:
            _publish(settings, [(f"t/e{i % 50}/frame", b"x" * size, 0, None) for i in range(n)])
            time.sleep(1.0)
            held = receiver.pending
            got = 0
            deadline = time.monotonic() + 60
            while got < n and time.monotonic() < deadline:
                delivery = receiver.take(500, 1.0)
                got += len(delivery.messages)
                receiver.ack(delivery)
    assert bound <= held <= bound + READ_BYTES // size + 1
    assert got == n


def test_receiver_starts_behind_a_backlog_larger_than_its_bound(tmp_path: Path) -> None:
    """After an outage the broker sends the queued backlog before our SUBACK: the
    receiver must not stop reading before the SUBACK is in (it would never start)."""
    with LocalBroker(tmp_path / "mosquitto") as broker:
        settings = MqttSettings(url=broker.url)
        with MqttConsumer(settings, client_id="behind", topics=("t/#",), max_pending=100):
            pass  # the session now exists, and the broker queues for it
        _publish(settings, [(f"t/e{i % 50}/frame", b"%d" % i, 1, None) for i in range(1000)])
        payloads: list[bytes] = []
        receiver = MqttConsumer(settings, client_id="behind", topics=("t/#",), max_pending=100)
        with receiver:
            deadline = time.monotonic() + 60
            while len(payloads) < 1000 and time.monotonic() < deadline:
                delivery = receiver.take(100, 1.0)
                payloads += [m.payload for m in delivery.messages]
                receiver.ack(delivery)
    assert payloads == [b"%d" % i for i in range(1000)]


def _retained(settings: MqttSettings, topic: str, payload: bytes) -> None:
    client = mqtt_client(settings, "retainer")
    client.connect(settings.host, settings.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def test_retained_state_is_replayed_once_where_asked_and_own_messages_skipped(tmp_path: Path):
    """Escalation's subscription: the retained alerts once, when the subscription is new,
    flagged; not its own transitions. A device-stream subscription (ingest) gets no
    retained state at all."""
    with LocalBroker(tmp_path / "mosquitto") as broker:
        settings = MqttSettings(url=broker.url)
        _retained(settings, "r/1", b"state")
        replay = [Subscription("r/#", Retained.REPLAY, own=False)]
        with MqttConsumer(settings, client_id="esc", topics=replay) as consumer:
            delivery = consumer.take(10, 10, eager=True)
            consumer.ack(delivery)
            first = delivery.messages
            assert consumer.publish("r/2", b"mine", retain=True).wait_for_publish(10) is None
            _publish(settings, [("r/3", b"live", 1, None)])
            later = []
            for wait_s in (10, 0.3):
                delivery = consumer.take(10, wait_s, eager=True)
                consumer.ack(delivery)
                later += delivery.messages
        with MqttConsumer(settings, client_id="esc", topics=replay) as consumer:
            time.sleep(0.5)
            again = consumer.take(10, 0).messages
        with MqttConsumer(settings, client_id="ingest", topics=["r/#"]) as consumer:
            time.sleep(0.5)
            skipped = consumer.take(10, 0).messages
    assert [(m.topic, m.payload, m.retained, m.qos) for m in first] == [("r/1", b"state", True, 1)]
    assert [(m.topic, m.payload, m.retained) for m in later] == [("r/3", b"live", False)]
    assert again == []
    assert skipped == []


def test_acknowledged_on_take_or_by_the_caller_and_a_session_that_ends(tmp_path: Path):
    """MANUAL: what was taken and not acknowledged comes again. ON_TAKE (the kit's
    observer): taking acknowledges. Not durable: nothing is queued after the exit."""
    with LocalBroker(tmp_path / "mosquitto") as broker:
        settings = MqttSettings(url=broker.url)

        def session(client_id: str, **options: Any) -> MqttConsumer:
            return MqttConsumer(settings, client_id=client_id, topics=["t/#"], **options)

        def take_all(consumer: MqttConsumer, n: int, *, ack: bool = False) -> list[bytes]:
            """The first ``n`` payloads; acknowledged (``ack``) as they are taken."""
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                delivery = consumer.take(n - len(got), 1.0)
                got += [m.payload for m in delivery.messages]
                if ack:
                    acks[consumer.client_id] += consumer.ack(delivery)
            return got

        acks = {"manual": 0, "watch": 0}
        for client_id in ("manual", "watch"):
            with session(client_id):
                pass  # the durable sessions exist: the broker queues for them
        _publish(settings, [(f"t/{i}", b"%d" % i, 1, None) for i in range(5)])
        expected = [b"%d" % i for i in range(5)]
        with session("manual") as consumer:
            assert take_all(consumer, 5) == expected  # and not acknowledged
        with session("manual") as consumer:
            redelivered = take_all(consumer, 5, ack=True)
        with session("manual") as consumer:
            time.sleep(0.5)
            after_ack = consumer.take(10, 0).messages
        with session("watch", ack=AckMode.ON_TAKE) as consumer:
            watched = take_all(consumer, 5, ack=True)
        with session("watch", ack=AckMode.ON_TAKE, durable=False) as consumer:
            time.sleep(0.5)
            watched_again = consumer.take(10, 0).messages
        _publish(settings, [("t/late", b"late", 1, None)])
        with session("watch", ack=AckMode.ON_TAKE, durable=False) as consumer:
            time.sleep(0.5)
            after_end = consumer.take(10, 0).messages
    assert redelivered == expected
    assert watched == expected
    assert acks == {"manual": 5, "watch": 0}  # ON_TAKE: acknowledged already at take
    assert after_ack == []
    assert watched_again == []
    assert after_end == []


def test_an_eager_take_returns_at_the_first_message_and_exit_wakes_a_waiting_take(
    tmp_path: Path,
) -> None:
    with LocalBroker(tmp_path / "mosquitto") as broker:
        settings = MqttSettings(url=broker.url)
        consumer = MqttConsumer(settings, client_id="eager", topics=["t/#"])
        with consumer:
            _publish(settings, [("t/1", b"one", 1, None)])
            t0 = time.monotonic()
            eager = consumer.take(100, 20, eager=True)
            eager_s = time.monotonic() - t0
            consumer.ack(eager)
            waited: list[tuple[int, float]] = []

            def wait() -> None:
                t = time.monotonic()
                got = consumer.take(100, 20)
                waited.append((len(got.messages), time.monotonic() - t))

            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(0.3)
        waiter.join(10)
    assert [m.payload for m in eager.messages] == [b"one"]
    assert eager_s < 10
    assert [n for n, _s in waited] == [0]  # woken by the exit, not at its 20 s timeout
    assert waited[0][1] < 10

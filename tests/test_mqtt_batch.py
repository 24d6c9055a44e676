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
from homecare.mqtt_batch import READ_BYTES, BatchClient
from homecare.receiver import Receiver, connect_session, mqtt_client, session_properties
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
        connect_session(self.client, settings, session_properties(receive_maximum=65535))

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
        connect_session(paho, settings, session_properties())
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
        receiver = Receiver(
            settings, client_id="bounded", topics=("t/#",), receive_maximum=receive_maximum
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
        with Receiver(settings, client_id="behind", topics=("t/#",), receive_maximum=100):
            pass  # the session now exists, and the broker queues for it
        _publish(settings, [(f"t/e{i % 50}/frame", b"%d" % i, 1, None) for i in range(1000)])
        payloads: list[bytes] = []
        receiver = Receiver(settings, client_id="behind", topics=("t/#",), receive_maximum=100)
        with receiver:
            deadline = time.monotonic() + 60
            while len(payloads) < 1000 and time.monotonic() < deadline:
                delivery = receiver.take(100, 1.0)
                payloads += [m.payload for m in delivery.messages]
                receiver.ack(delivery)
    assert payloads == [b"%d" % i for i in range(1000)]

"""What JetStream's fsync policy costs on the 3-node cluster: acknowledged MQTT publishes/s.

Devices publish MQTT 3.1.1 at QoS 1; a node answers PUBACK once ``$MQTT_msgs`` (R3) has
the reading on a quorum of nodes. With ``sync_interval: always`` each of those nodes
fsyncs the write before it counts; with NATS's default (``2m``) the write sits in the
page cache until the next periodic fsync. :func:`fsync_cost` runs the same publishes
against a fresh, provisioned cluster in each mode, one after the other on this machine.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.provision import provision
from harness.servers import LocalNatsCluster

__all__ = ["acknowledged_rate", "fsync_cost"]


def acknowledged_rate(
    cluster: LocalNatsCluster, messages: int, *, connections: int = 4, payload_bytes: int = 1400
) -> float:
    """Acknowledged QoS 1 publishes per second: ``messages`` readings of ``payload_bytes``
    from ``connections`` MQTT clients spread over the nodes, from the first publish to the
    last PUBACK."""
    per_client = messages // connections
    done = threading.Semaphore(0)
    clients: list[mqtt.Client] = []
    ports = [n.mqtt_port for n in cluster.nodes]
    for i in range(connections):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-{i}", protocol=mqtt.MQTTv311,
            clean_session=True,
        )  # fmt: skip
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        acked = [0]

        def on_publish(*_args: Any, acked: list[int] = acked) -> None:
            acked[0] += 1
            if acked[0] == per_client:
                done.release()

        client.on_publish = on_publish
        client.connect("127.0.0.1", ports[i % len(ports)])
        client.loop_start()
        clients.append(client)
    payload = b"x" * payload_bytes
    topics = [f"homecare/v1/bench/e{i:04d}/wearable/w{i:04d}/frame" for i in range(connections)]
    try:
        t0 = time.perf_counter()
        for _ in range(per_client):
            for topic, client in zip(topics, clients, strict=True):
                client.publish(topic, payload, 1)
        for _ in clients:
            if not done.acquire(timeout=300):
                raise TimeoutError("the cluster did not acknowledge every publish in 300 s")
        return per_client * connections / (time.perf_counter() - t0)
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()


def fsync_cost(
    messages: int = 20_000, *, modes: tuple[str, ...] = ("2m", "always"), root: Path | None = None
) -> dict[str, float]:
    """Acknowledged publishes/s for each ``sync_interval``, each on a fresh provisioned
    3-node cluster, in one run."""
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fsync-", dir=root) as folder:
        for mode in modes:
            with LocalNatsCluster(Path(folder) / mode, sync_interval=mode) as cluster:
                done = provision(cluster.urls, mqtt_url=cluster.mqtt_url, partitions=8,
                                 replicas=cluster.replicas)  # fmt: skip
                if not done.source.ok:
                    raise RuntimeError(f"provisioning failed: {done.source.detail}")
                rates[mode] = acknowledged_rate(cluster, messages)
    return rates

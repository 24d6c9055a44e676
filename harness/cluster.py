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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from broker.provision import provision
from harness.servers import LocalNatsCluster

__all__ = ["acknowledged_rate", "broker_cpu", "fsync_cost"]


class _Publishers:
    """``connections`` MQTT 3.1.1 clients spread over the cluster's nodes, publishing
    readings of ``payload_bytes`` at QoS 1 and counting the PUBACKs."""

    def __init__(
        self, cluster: LocalNatsCluster, *, connections: int = 4, payload_bytes: int = 1400
    ) -> None:
        self.cluster = cluster
        self.payload = b"x" * payload_bytes
        self.topics = [f"homecare/v1/bench/e{i:04d}/wearable/w{i:04d}/frame"
                       for i in range(connections)]  # fmt: skip
        self.clients: list[mqtt.Client] = []
        self.acked = 0
        self._changed = threading.Condition()

    def _on_publish(self, *_args: Any) -> None:
        with self._changed:
            self.acked += 1
            self._changed.notify_all()

    def __enter__(self) -> Self:
        ports = [n.mqtt_port for n in self.cluster.nodes]
        try:
            for i in range(len(self.topics)):
                client = mqtt.Client(
                    CallbackAPIVersion.VERSION2, client_id=f"bench-{i}", protocol=mqtt.MQTTv311,
                    clean_session=True,
                )  # fmt: skip
                client.max_inflight_messages_set(1000)
                client.max_queued_messages_set(0)
                client.on_publish = self._on_publish
                client.connect("127.0.0.1", ports[i % len(ports)])
                client.loop_start()
                self.clients.append(client)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()

    def publish(self, k: int) -> None:
        """The ``k``-th reading, from connection ``k`` modulo their number."""
        i = k % len(self.clients)
        self.clients[i].publish(self.topics[i], self.payload, 1)

    def wait_acked(self, count: int, timeout_s: float = 300.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.acked >= count, timeout_s):
                raise TimeoutError(f"the cluster acknowledged {self.acked} of {count} "
                                   f"publishes in {timeout_s:.0f} s")  # fmt: skip


def acknowledged_rate(
    cluster: LocalNatsCluster, messages: int, *, connections: int = 4, payload_bytes: int = 1400
) -> float:
    """Acknowledged QoS 1 publishes per second: ``messages`` readings of ``payload_bytes``
    from ``connections`` MQTT clients spread over the nodes, from the first publish to the
    last PUBACK."""
    with _Publishers(cluster, connections=connections, payload_bytes=payload_bytes) as pubs:
        t0 = time.perf_counter()
        for k in range(messages):
            pubs.publish(k)
        pubs.wait_acked(messages)
        return messages / (time.perf_counter() - t0)


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


def broker_cpu(
    rates: Sequence[int],
    *,
    seconds: float = 10.0,
    sync_interval: str = "always",
    partitions: int = 16,
    root: Path | None = None,
) -> dict[str, Any]:
    """The nodes' CPU (user and system, all three) idle and while devices publish at each
    of ``rates`` QoS 1 readings a second for ``seconds``, one rate after the other on one
    fresh provisioned cluster. Per rate: the CPU from the first publish to the last
    PUBACK, as cores and as microseconds per reading; and the publishing devices' own
    (this process: paho's clients), which share the machine."""
    with (
        tempfile.TemporaryDirectory(prefix="broker-cpu-", dir=root) as folder,
        LocalNatsCluster(Path(folder), sync_interval=sync_interval) as cluster,
    ):
        done = provision(cluster.urls, mqtt_url=cluster.mqtt_url, partitions=partitions,
                         replicas=cluster.replicas)  # fmt: skip
        if not done.source.ok:
            raise RuntimeError(f"provisioning failed: {done.source.detail}")
        nodes = [psutil.Process(n.pid) for n in cluster.nodes]
        me = psutil.Process()

        def cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in nodes)

        def mine() -> float:
            return sum(me.cpu_times()[:2])

        time.sleep(1.0)  # provisioning's elections settle
        c0, t0 = cpu(), time.perf_counter()
        time.sleep(min(5.0, seconds))
        idle = (cpu() - c0) / (time.perf_counter() - t0)
        figures: list[dict[str, float]] = []
        with _Publishers(cluster) as pubs:
            sent = 0
            for rate in rates:
                c0, p0, t0 = cpu(), mine(), time.perf_counter()
                n, total = 0, round(rate * seconds)
                while n < total:  # paced as devices publish: a few readings every 5 ms
                    due = min(total, int((time.perf_counter() - t0) * rate) + 1)
                    while n < due:
                        pubs.publish(sent + n)
                        n += 1
                    time.sleep(0.005)
                sent += n
                pubs.wait_acked(sent)
                took = time.perf_counter() - t0
                used, publishing = cpu() - c0, mine() - p0
                figures.append({
                    "rate": rate, "published": n, "seconds": round(took, 2),
                    "acknowledged_per_s": round(n / took, 1),
                    "cores": round(used / took, 3),
                    "cores_above_idle": round(used / took - idle, 3),
                    "us_per_reading": round(used / n * 1e6, 1),
                    "publisher_cores": round(publishing / took, 3),
                })  # fmt: skip
        return {"sync_interval": sync_interval, "partitions": partitions,
                "idle_cores": round(idle, 3), "rates": figures}  # fmt: skip

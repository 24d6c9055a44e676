"""``homecare bench sessions``: what a device's MQTT connection and its command-topic
subscription cost the 3-node cluster, per kind of session.

In nats-server's MQTT implementation a QoS 1 subscription of a persistent session
(clean session off) is backed by a JetStream consumer on ``$MQTT_msgs``, replicated as
``mqtt { consumer_replicas }`` says (3 here): a Raft group per device. A QoS 0
subscription is a plain NATS subscription, and a clean session keeps nothing once the
device is gone. For each kind, on a fresh :class:`~harness.servers.LocalNatsCluster`
(three nodes, ``consumer_replicas: 3``), ``--connections`` devices connect (MQTT 3.1.1,
a minimal client of the simulator's packets) and subscribe to their command topic;
then, with every connection still open: the nodes' memory (RSS of the three
``nats-server`` processes, and ``mem`` of ``/varz``), JetStream's consumers and
replicated assets (``ha_assets`` of each node's ``/jsz``, a Raft group counted once per
replica: divided by the 3 replicas, Raft groups) against the same figures
before, per connection; and how fast the devices connected and subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from device_sim.publisher import _encode_connect, _remaining, _str
from harness.servers import LocalNatsCluster
from homecare.contract import command_topic

__all__ = ["KINDS", "run"]

KINDS: dict[str, tuple[int, bool]] = {
    "qos1_persistent": (1, False),
    "qos0_persistent": (0, False),
    "qos0_clean": (0, True),
}
"""Kind of session → (subscription QoS, clean session)."""
SUBSCRIBE = 0x82
SETTLE_S = 3.0


class Refused(RuntimeError):
    """The broker refused a device's connection or subscription."""


async def _device(
    host: str, port: int, client_id: str, topic: str, qos: int, clean: bool
) -> asyncio.StreamWriter:
    """Connect (no keepalive: the connection idles), subscribe, and return the open link."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(_encode_connect(client_id, keepalive=0, clean=clean, will=None, username=None,
                                 password=None))  # fmt: skip
    connack = await asyncio.wait_for(reader.readexactly(4), 60)
    if connack[0] >> 4 != 2 or connack[3] != 0:
        raise Refused(f"{client_id}: CONNACK {connack.hex()}")
    body = struct.pack("!H", 1) + _str(topic.encode()) + bytes((qos,))
    writer.write(bytes((SUBSCRIBE,)) + _remaining(len(body)) + body)
    suback = await asyncio.wait_for(reader.readexactly(5), 120)
    if suback[0] >> 4 != 9 or suback[4] == 0x80:
        raise Refused(f"{client_id}: SUBACK {suback.hex()}")
    return writer


def _figures(cluster: LocalNatsCluster) -> dict[str, float]:
    """Memory of the nodes and JetStream's assets, summed over the three nodes (``/jsz``
    counts the replicas each node holds)."""
    rss = sum(psutil.Process(n.pid).memory_info().rss for n in cluster.nodes)
    mem = consumers = assets = 0
    for node in cluster.nodes:
        mem += httpx.get(f"{node.monitor_url}/varz", timeout=10).json()["mem"]
        jsz = httpx.get(f"{node.monitor_url}/jsz", timeout=10).json()
        consumers += jsz.get("consumers", 0)
        assets += jsz.get("ha_assets", 0)
    return {"rss": rss, "varz_mem": mem, "consumers": consumers, "ha_assets": assets}


async def _connect_all(
    cluster: LocalNatsCluster, n: int, qos: int, clean: bool, parallel: int
) -> tuple[list[asyncio.StreamWriter], float]:
    gate = asyncio.Semaphore(parallel)
    ports = [node.mqtt_port for node in cluster.nodes]

    async def one(k: int) -> asyncio.StreamWriter:
        async with gate:
            topic = command_topic("city", f"e{k:06d}", f"w{k:06d}")
            return await _device("127.0.0.1", ports[k % len(ports)], f"dev-{k:06d}", topic,
                                 qos, clean)  # fmt: skip

    t0 = time.perf_counter()
    links = await asyncio.gather(*(one(k) for k in range(n)))
    return list(links), time.perf_counter() - t0


def measure(root: Path, kind: str, n: int, *, parallel: int = 64) -> dict[str, Any]:
    """One kind of session, ``n`` devices, on a fresh cluster."""
    qos, clean = KINDS[kind]
    with LocalNatsCluster(root / f"{kind}-{n}") as cluster:

        async def go() -> dict[str, Any]:
            # The $MQTT_* streams are made at the first connection: one device before the
            # baseline, so that what is measured is what each further device adds.
            first, _ = await _connect_all(cluster, 1, qos, clean, 1)
            await asyncio.sleep(SETTLE_S)
            before = await asyncio.to_thread(_figures, cluster)
            links, took = await _connect_all(cluster, n, qos, clean, parallel)
            await asyncio.sleep(SETTLE_S)
            after = await asyncio.to_thread(_figures, cluster)
            for w in first + links:
                w.close()

            def per_device(key: str, scale: float = 1.0) -> float:
                return round((after[key] - before[key]) / n / scale, 2)

            return {
                "kind": kind, "devices": n, "subscription_qos": qos, "clean_session": clean,
                "connect_and_subscribe_s": round(took, 2),
                "devices_per_s": round(n / took),
                "rss_mb_total": round(after["rss"] / 1e6),
                "rss_kb_per_device": per_device("rss", 1e3),
                "varz_mem_kb_per_device": per_device("varz_mem", 1e3),
                "consumers_per_device": per_device("consumers"),
                # /jsz counts a replicated asset on every node holding a replica of it
                "raft_replicas_per_device": per_device("ha_assets"),
                "raft_groups_per_device": round(per_device("ha_assets") / cluster.replicas, 2),
                "consumers_total": after["consumers"],
                "raft_groups_total": round(after["ha_assets"] / cluster.replicas),
            }  # fmt: skip

        return asyncio.run(go())


def run(
    *, connections: list[int], kinds: list[str] | None = None, root: Path | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:  # fmt: skip
    """Every kind at every count; the figures (also printed through ``log``)."""
    from device_sim.fleet import _raise_fd_limit

    _raise_fd_limit(max(connections) + 256)
    rows = []
    with contextlib.ExitStack() as stack:
        folder = root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sess-")))
        for n in connections:
            for kind in kinds or list(KINDS):
                row = measure(folder, kind, n)
                rows.append(row)
                log(f"{kind:16} {n:6} devices: {row['devices_per_s']:5}/s connected, "
                    f"{row['rss_kb_per_device']:6.1f} kB RSS and "
                    f"{row['raft_groups_per_device']:.2f} Raft groups per device "
                    f"(cluster: {row['rss_mb_total']} MB, "
                    f"{row['raft_groups_total']} Raft groups)")  # fmt: skip
    return {"cluster": "3 nodes on this machine, consumer_replicas 3", "rows": rows}

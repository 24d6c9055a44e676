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
Raft groups (``ha_assets`` of ``/jsz``) against the same figures
before, per connection; and how fast the devices connected and subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness.servers import LocalNatsCluster
from homecare.contract import command_topic
from homecare.errors import BrokerError
from homecare.jetstream import MQTT_STREAM

__all__ = ["KINDS", "connect_packet", "measure", "run", "subscribe_packet"]

KINDS: dict[str, tuple[int, bool]] = {
    "qos1_persistent": (1, False),
    "qos0_persistent": (0, False),
    "qos0_clean": (0, True),
}
"""Kind of session → (subscription QoS, clean session)."""
SUBSCRIBE = 0x82


def _length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(head: int, body: bytes) -> bytes:
    return bytes((head,)) + _length(len(body)) + body


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, *, clean: bool) -> bytes:
    """CONNECT (MQTT 3.1.1), no will, no keepalive (the device idles), anonymous."""
    return _packet(0x10, _text("MQTT") + bytes((4, 0x02 if clean else 0)) + b"\0\0"
                   + _text(client_id))  # fmt: skip


def subscribe_packet(topic: str, qos: int, mid: int = 1) -> bytes:
    return _packet(SUBSCRIBE, struct.pack("!H", mid) + _text(topic) + bytes((qos,)))


SETTLE_S = 1.0


CONNECT_WAIT_S = 60.0
"""How long a device connects again after the server closed it before its CONNACK."""


class Refused(BrokerError):
    """The broker refused a device's connection or subscription."""


async def _device(
    host: str, port: int, client_id: str, topic: str, qos: int, clean: bool
) -> asyncio.StreamWriter | None:
    """Connect (no keepalive: the connection idles), subscribe, and return the open link;
    ``None`` when the broker refused the subscription (SUBACK failure)."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    while True:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(connect_packet(client_id, clean=clean))
        try:
            connack = await asyncio.wait_for(reader.readexactly(4), 60)
            break
        except asyncio.IncompleteReadError:
            # Closed before its CONNACK: the server could not set up the session in time
            # (seen on the first device, while a loaded cluster makes its $MQTT_ streams).
            writer.close()
            if time.monotonic() > deadline:
                raise Refused(f"{client_id}: connection closed before a CONNACK") from None
            await asyncio.sleep(0.5)
    if connack[0] >> 4 != 2 or connack[3] != 0:
        raise Refused(f"{client_id}: CONNACK {connack.hex()}")
    writer.write(subscribe_packet(topic, qos))
    suback = await asyncio.wait_for(reader.readexactly(5), 120)
    if suback[0] >> 4 != 9:
        raise Refused(f"{client_id}: SUBACK {suback.hex()}")
    if suback[4] == 0x80:  # the broker could not make the subscription (its log says why)
        writer.close()
        return None
    return writer


def _figures(cluster: LocalNatsCluster) -> dict[str, float]:
    """The nodes' memory, summed; the devices' consumers (on ``$MQTT_msgs``, counted once
    whichever node holds a replica) and the cluster's Raft groups (``ha_assets``: every
    node of a 3-node R3 cluster holds a replica of each, so the most any node reports)."""
    rss = sum(psutil.Process(n.pid).memory_info().rss for n in cluster.nodes)
    mem = assets = 0
    consumers: set[str] = set()
    for node in cluster.nodes:
        mem += httpx.get(f"{node.monitor_url}/varz", timeout=10).json()["mem"]
        jsz = httpx.get(f"{node.monitor_url}/jsz?accounts=true&streams=true&consumers=true",
                        timeout=30).json()  # fmt: skip
        assets = max(assets, int(jsz.get("ha_assets", 0)))
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if stream["name"] == MQTT_STREAM:
                    consumers |= {c["name"] for c in stream.get("consumer_detail") or []}
    return {"rss": rss, "varz_mem": mem, "consumers": len(consumers), "ha_assets": assets}


def _errors(cluster: LocalNatsCluster) -> dict[str, int]:
    """The nodes' errors and warnings about sessions and consumers (not the start-up's
    route and meta-leader chatter), numbers and names blanked, with how often each."""
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        for line in node.log.read_text(errors="replace").splitlines():
            level = "[ERR] " if "[ERR] " in line else "[WRN] " if "[WRN] " in line else None
            if level is None or re.search(r"route|meta leader|routing", line, re.I):
                continue
            text = re.sub(r"[0-9A-Za-z]{16,}|\d+(\.\d+)?", "#", line.split(level, 1)[1])[:200]
            counts[text] = counts.get(text, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:8])


async def _settled(cluster: LocalNatsCluster, timeout_s: float = 60.0) -> dict[str, float]:
    """The figures once the nodes' consumers and replicated assets stop changing (each
    replica of a new consumer appears on its node a little later)."""
    deadline = time.monotonic() + timeout_s
    last = await asyncio.to_thread(_figures, cluster)
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_S)
        now = await asyncio.to_thread(_figures, cluster)
        if (now["consumers"], now["ha_assets"]) == (last["consumers"], last["ha_assets"]):
            return now
        last = now
    return last


async def _connect_all(
    cluster: LocalNatsCluster, n: int, qos: int, clean: bool, parallel: int, first: int = 1
) -> tuple[list[asyncio.StreamWriter | None], float]:
    """Devices ``first`` … ``first + n - 1``, spread over the nodes' MQTT listeners."""
    gate = asyncio.Semaphore(parallel)
    ports = [node.mqtt_port for node in cluster.nodes]

    async def one(k: int) -> asyncio.StreamWriter | None:
        async with gate:
            topic = command_topic("city", f"e{k:06d}", f"w{k:06d}")
            return await _device("127.0.0.1", ports[k % len(ports)], f"dev-{k:06d}", topic,
                                 qos, clean)  # fmt: skip

    t0 = time.perf_counter()
    links = await asyncio.gather(*(one(k) for k in range(first, first + n)))
    return list(links), time.perf_counter() - t0


def measure(root: Path, kind: str, n: int, *, parallel: int = 64) -> dict[str, Any]:
    """One kind of session, ``n`` devices, on a fresh cluster."""
    qos, clean = KINDS[kind]
    with LocalNatsCluster(root / f"{kind}-{n}") as cluster:

        async def go() -> dict[str, Any]:
            # The $MQTT_* streams are made at the first connection: one device before the
            # baseline, so that what is measured is what each further device adds.
            first, _ = await _connect_all(cluster, 1, qos, clean, 1, first=0)
            before = await _settled(cluster)
            links, took = await _connect_all(cluster, n, qos, clean, parallel)
            after = await _settled(cluster)
            for w in first + links:
                if w is not None:
                    w.close()
            refused = sum(w is None for w in links)
            why = _errors(cluster)

            subscribed = max(n - refused, 1)

            def per_device(key: str, scale: float = 1.0, of: int = n) -> float:
                return round((after[key] - before[key]) / of / scale, 2)

            return {
                "kind": kind, "devices": n, "subscription_qos": qos, "clean_session": clean,
                "subscriptions_refused": refused,
                "server_errors": why,
                "connect_and_subscribe_s": round(took, 2),
                "devices_per_s": round(n / took),
                "rss_mb_total": round(after["rss"] / 1e6),
                "rss_kb_per_device": per_device("rss", 1e3),
                "rss_mb_before": round(before["rss"] / 1e6),
                "varz_mem_kb_per_device": per_device("varz_mem", 1e3),
                "consumers_per_device": per_device("consumers", of=subscribed),
                "raft_groups_per_device": per_device("ha_assets", of=subscribed),
                "consumers_total": after["consumers"],
                "raft_groups_total": after["ha_assets"],
                "replicas": cluster.replicas,
            }  # fmt: skip

        return asyncio.run(go())


def run(
    *, connections: list[int], kinds: list[str] | None = None, root: Path | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:  # fmt: skip
    """Every kind at every count; the figures (also printed through ``log``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(connections) + 256
    if soft != resource.RLIM_INFINITY and soft < want:  # a socket per device
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
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
                    f"{row['raft_groups_total']} Raft groups); "
                    f"{row['subscriptions_refused']} subscriptions refused")  # fmt: skip
    return {"cluster": "3 nodes on this machine, consumer_replicas 3", "rows": rows}

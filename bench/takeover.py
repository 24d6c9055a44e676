"""``homecare bench takeover``: how long a killed detect worker's partitions stay without one.

Two detect workers (``homecare detect`` processes) share TELEMETRY's partitions on a
real ``nats-server`` (one node, or the 3-node cluster with R3); one bed sensor per
partition publishes a reading a second over MQTT, so every partition is pinned. Each
trial kills (-9) the worker that holds the higher partitions and measures, on the
survivor's own record of when it took each partition (its status file's ``taken_at``),
the time from the kill to the last of them taken (state loaded and gap replayed); then a
new worker is started and the trial waits until the two share the partitions again.

The time is the consumers' ``priority_timeout`` (provisioning: 3 s; a dead worker's pin
expires that long after its last pull) or the survivors' view of the dead worker
(``detectors.workers``: no beat for 2 s), whichever is later, plus the next message of
the partition and its takeover.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.provision import DETECT_PRIORITY_TIMEOUT_S, provision
from harness.demo import DetectWorker
from harness.servers import LocalNats, LocalNatsCluster
from homecare.jetstream import partition_of

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]


def _elders(partitions: int) -> list[str]:
    """One elder id per partition."""
    found: dict[int, str] = {}
    k = 0
    while len(found) < partitions:
        k += 1
        found.setdefault(partition_of(f"e{k}", partitions), f"e{k}")
    return [found[p] for p in range(partitions)]


@contextlib.contextmanager
def _beds(mqtt_url: str, elders: list[str]) -> Iterator[None]:
    """A bed reading a second per elder, QoS 1, until the block ends."""
    parts = urlsplit(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-takeover-beds",
                         protocol=mqtt.MQTTv311, clean_session=False)  # fmt: skip
    client.reconnect_delay_set(1, 2)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(1.0):
            now = float(int(time.time()))
            for e in elders:
                body = {"elder": e, "device": f"b{e}", "ts": now, "presence": True, "hr": 60,
                        "br": 14.0, "movement": 0.1}  # fmt: skip
                client.publish(f"homecare/v1/bench/{e}/bed/b{e}/reading", json.dumps(body), 1)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        client.disconnect()
        client.loop_stop()


def _stop_all(workers: list[DetectWorker]) -> None:
    for worker in workers:
        worker.stop()


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:g} s")
        time.sleep(0.05)


def run(
    *, partitions: int = 16, trials: int = 5, cluster: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Kill -9 a detect worker ``trials`` times; the takeover times, in seconds."""
    elders = _elders(partitions)
    times: list[float] = []
    first_taken: list[float] = []
    workers: list[DetectWorker] = []
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="takeover-")))
        if cluster:
            nodes = stack.enter_context(LocalNatsCluster(folder / "cluster"))
            url, mqtt_url, replicas = nodes.urls, nodes.mqtt_url, nodes.replicas
        else:
            node = stack.enter_context(LocalNats(folder / "nats"))
            url, mqtt_url, replicas = node.url, node.mqtt_url, 1
        done = provision(url, mqtt_url=mqtt_url, partitions=partitions, replicas=replicas,
                         ack_wait_s=30.0)  # fmt: skip
        if not done.source.ok:
            raise RuntimeError(f"provisioning failed: {done.source.detail}")
        stack.enter_context(_beds(mqtt_url, elders))
        stack.callback(_stop_all, workers)
        survivor = DetectWorker(url, partitions, folder / "w0", folder / "w0.log")
        workers.append(survivor)
        _wait(lambda: len(survivor.held()) == partitions, 60, "first worker holding all")
        half = -(-partitions // 2)
        for trial in range(trials):
            name = f"w{trial + 1}"
            victim = DetectWorker(url, partitions, folder / name, folder / f"{name}.log")
            workers.append(victim)
            _wait(lambda v=victim: len(v.held()) == partitions - half  # type: ignore[misc]
                  and len(survivor.held()) == half,
                  60, "the two sharing the partitions")  # fmt: skip
            time.sleep(2.0)  # a save or two of the victim's partitions
            theirs = victim.held()
            victim.proc.kill()
            killed = time.time()
            victim.proc.wait(10)
            _wait(lambda t=theirs: t <= survivor.held(), 60,  # type: ignore[misc]
                  "the survivor holding the victim's partitions")  # fmt: skip
            taken = survivor.status()["taken_at"]
            at = [float(taken[str(p)]) - killed for p in theirs]
            times.append(max(at))
            first_taken.append(min(at))
            log(f"  trial {trial + 1}: {len(theirs)} partitions taken {min(at):.2f} … "
                f"{max(at):.2f} s after the kill -9")  # fmt: skip
    report = {
        "nodes": 3 if cluster else 1,
        "partitions": partitions,
        "trials": trials,
        "priority_timeout_s": DETECT_PRIORITY_TIMEOUT_S,
        "takeover_s": [round(t, 2) for t in times],
        "takeover_first_partition_s": [round(t, 2) for t in first_taken],
        "takeover_median_s": round(statistics.median(times), 2),
        "takeover_max_s": round(max(times), 2),
    }
    log(f"takeover after kill -9 ({report['nodes']} node(s), {partitions} partitions): "
        f"median {report['takeover_median_s']} s, max {report['takeover_max_s']} s")  # fmt: skip
    return report

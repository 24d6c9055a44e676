"""Storage by district, with a replica (issue 15, parts 2 and 5), on real servers.

Each district has a pair of InfluxDBs, each fed by its own durable consumer of TELEMETRY
(``ingest-<district>-<primary|replica>``, filtered to the district's sites): the stream is
the replication. A kill -9 of one InfluxDB of a pair only grows its consumer's backlog;
queries are answered by the other meanwhile, and once it is back it holds every reading a
device was told was received, exactly once (points are idempotent: a reading written
again overwrites itself). Ingest workers are stateless: two share one consumer, and a
kill -9 of one mid-batch loses nothing (its unacknowledged batch is delivered again) and
double-counts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from pydantic import ValidationError
from support import Publisher, count, frame, topic, wait_for
from typer.testing import CliRunner

from broker.provision import provision, provision_districts
from cli.main import app
from harness.servers import LocalInflux, LocalNats, LocalNatsCluster, free_port
from homecare.influx import InfluxClient
from homecare.jetstream import TELEMETRY_STREAM, ingest_consumer
from homecare.settings import (
    DistrictSettings,
    InfluxSettings,
    MqttSettings,
    NatsSettings,
    Settings,
)
from ingest.service import IngestService

PARTITIONS = 8


# settings ----------------------------------------------------------------------------------
def test_a_site_belongs_to_one_district() -> None:
    pair = {"primary": "http://a:8086", "replica": "http://b:8086"}
    with pytest.raises(ValidationError, match="site 's1' is in districts"):
        Settings(_env_file=None, districts={"n": {"sites": ["s1"], **pair},  # type: ignore[call-arg]
                                            "s": {"sites": ["s1"], **pair}})  # fmt: skip


def test_a_pair_is_two_influxdbs() -> None:
    with pytest.raises(ValidationError, match="a pair needs two InfluxDBs"):
        DistrictSettings(sites=["s1"], primary="http://a:8086", replica="http://a:8086/")
    with pytest.raises(ValidationError, match="must start with http"):
        DistrictSettings(sites=["s1"], primary="a:8086")


def test_the_single_store_needs_no_district(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMECARE_DISTRICTS", raising=False)
    single = Settings(_env_file=None, influx=InfluxSettings(url="http://one:8086"))  # type: ignore[call-arg]
    assert single.influx_urls() == ["http://one:8086"]
    assert single.influx_for(None).url == "http://one:8086"
    city = Settings(_env_file=None, districts={  # type: ignore[call-arg]
        "north": {"sites": ["s1"], "primary": "http://a:8086", "replica": "http://b:8086"}})
    assert city.influx_urls("north") == ["http://a:8086", "http://b:8086"]
    assert city.influx_for("north", "replica").url == "http://b:8086"
    with pytest.raises(ValueError, match="choose a district"):
        city.influx_urls()
    with pytest.raises(ValueError, match="no district 'south'"):
        city.influx_urls("south")


# helpers -----------------------------------------------------------------------------------
def _readings(site: str, elders: int, seconds: int, start: float) -> list[tuple[str, bytes]]:
    return [
        (topic(f"{site}e{e}", "wearable", f"{site}w{e}", "frame", site=site),
         frame(f"{site}e{e}", f"{site}w{e}", start + i))
        for i in range(seconds) for e in range(elders)
    ]  # fmt: skip


def _interleave(*streams: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(max(len(s) for s in streams)):
        out.extend(s[i] for s in streams if i < len(s))
    return out


def _db(url: str) -> InfluxClient:
    return InfluxClient(InfluxSettings(url=url, database="homecare"))


def _stored(url: str, where: str = "") -> int:
    with _db(url) as db:
        try:
            return count(db, "wearable", where)
        except Exception:  # not up, or no database yet
            return -1


def _pending(nats_url: str, durable: str) -> int:
    """What the consumer has not had acknowledged: its backlog and what is out."""

    async def ask() -> int:
        nc = await nats.connect(nats_url.split(","), connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=5).consumer_info(TELEMETRY_STREAM, durable)
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        finally:
            await nc.close()

    return asyncio.run(ask())


# two districts, a pair in one: kill -9 one InfluxDB of the pair -------------------------------
@pytest.fixture
def city(tmp_path: Path) -> Iterator[tuple[LocalNats, dict[str, LocalInflux], Settings]]:
    """One NATS Server, three influxd: north's pair and south's single store; provisioned
    by ``homecare broker provision`` with HOMECARE_DISTRICTS before any device connects
    (a consumer per district and InfluxDB, no plain ``ingest``)."""
    with (
        LocalNats(tmp_path / "nats") as server,
        LocalInflux(tmp_path / "n1") as n1,
        LocalInflux(tmp_path / "n2") as n2,
        LocalInflux(tmp_path / "s1") as s1,
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            state_dir=tmp_path / "state",
            nats=NatsSettings(url=server.url, partitions=PARTITIONS),
            mqtt=MqttSettings(url=server.mqtt_url, client_id="ingest-districts"),
            influx=InfluxSettings(database="homecare", timeout_s=2.0),
            ingest={"batch_interval_s": 0.05},
            districts={
                "north": {"sites": ["na", "nb"], "primary": n1.url, "replica": n2.url},
                "south": {"sites": ["sa"], "primary": s1.url},
            },
        )
        districts = {k: v.model_dump() for k, v in settings.districts.items()}
        result = CliRunner().invoke(app, [
            "broker", "provision", "--url", server.url, "--mqtt-url", server.mqtt_url,
            "--partitions", str(PARTITIONS), "--ack-wait-s", "5"],
            env={"HOMECARE_DISTRICTS": json.dumps(districts)})  # fmt: skip
        assert result.exit_code == 0, result.output
        made = json.loads(result.stdout.splitlines()[-1])["created"]
        assert "ingest" not in made
        assert sorted(c for c in made if c.startswith("ingest")) == [
            "ingest-north-primary", "ingest-north-replica", "ingest-south-primary"]  # fmt: skip
        yield server, {"n1": n1, "n2": n2, "s1": s1}, settings


def test_a_kill_9_of_one_influxdb_of_a_pair_loses_nothing_and_the_other_answers(
    city: tuple[LocalNats, dict[str, LocalInflux], Settings],
) -> None:
    server, influx, settings = city
    stop = threading.Event()
    workers = [
        IngestService(settings, instance=f"{d}-{r}", district=d, replica=r)
        for d, r in (("north", "primary"), ("north", "replica"), ("south", "primary"))
    ]
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    start = time.time() - 600
    north = _interleave(_readings("na", 4, 60, start), _readings("nb", 3, 60, start))
    south = _readings("sa", 3, 60, start)
    pub = Publisher(server.mqtt_port, client_id="districts")
    try:
        sender = threading.Thread(
            target=pub.publish, args=(_interleave(north, south),), kwargs={"rate": 150.0}
        )
        sender.start()
        wait_for(lambda: _stored(influx["n1"].url) > 50, 30, "north's primary storing")
        influx["n1"].kill()  # kill -9, mid-stream
        # Queries go to the replica while the primary does not answer (as the report does).
        with InfluxClient.failover(settings.influx, settings.influx_urls("north")) as db:
            answered = count(db, "wearable")
            assert db.url == influx["n2"].url
        assert answered > 0
        report = CliRunner().invoke(
            app, ["report", "nae0", "--district", "north", "--days", "2", "--end",
                  time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400)),
                  "--out", str(settings.state_dir / "reports")],
            env={"HOMECARE_DISTRICTS": json.dumps({k: v.model_dump()
                                                   for k, v in settings.districts.items()}),
                 "HOMECARE_INFLUX__URL": "", "HOMECARE_INFLUX__TIMEOUT_S": "2"},
        )  # fmt: skip
        assert report.exit_code == 0, report.output
        assert "no readings for" not in report.output
        assert list((settings.state_dir / "reports").glob("nae0-*.png"))
        sender.join()
        pub.wait_acked(len(north) + len(south), 60)
        # The replica and south keep up; only the dead primary's consumer holds a backlog.
        wait_for(lambda: _stored(influx["n2"].url) == len(north), 30, "north's replica")
        wait_for(lambda: _stored(influx["s1"].url) == len(south), 30, "south")
        assert _pending(server.url, ingest_consumer("north", "primary")) > 0
        assert _pending(server.url, ingest_consumer("north", "replica")) == 0
        influx["n1"].start()
        wait_for(lambda: _stored(influx["n1"].url) >= len(north), 30, "north's primary back")
        time.sleep(1)  # a late redelivery would show as an extra point now
    finally:
        pub.close()
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    # Every acknowledged reading, exactly once, in both InfluxDBs of the pair, per elder;
    # no district stores another's sites.
    for url in (influx["n1"].url, influx["n2"].url):
        assert _stored(url) == len(north)
        assert _stored(url, "elder = 'nae0'") == 60
        assert _stored(url, "site = 'sa'") == 0
    assert _stored(influx["s1"].url) == len(south)
    assert _stored(influx["s1"].url, "site = 'na' OR site = 'nb'") == 0
    assert workers[0].stats.messages >= len(north)
    with InfluxClient.failover(settings.influx, settings.influx_urls("north")) as db:
        assert count(db, "wearable") == len(north)
        assert db.url == influx["n1"].url  # the primary is asked first again


# two ingest workers on one consumer of a 3-node cluster: kill -9 one mid-batch ---------------
ACK_WAIT_S = 2.0


class Worker:
    """`homecare ingest --district d1` as its own process, to be killed like a service."""

    def __init__(self, env: dict[str, str], name: str, log: Path) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "ingest", "--district", "d1", "--replica",
                 "primary", "--instance", name],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def consuming(self) -> bool:
        return b"consuming" in self.log.read_bytes()

    def stored(self, state: Path) -> int:
        """Messages it stored, from its status file (``ingest-<consumer>-<instance>``)."""
        path = state / f"ingest-d1-primary-{self.name}.json"
        try:
            return int(json.loads(path.read_text()).get("messages") or 0)
        except (OSError, ValueError):
            return 0


def _consumer_info(urls: str, durable: str) -> Any:
    async def ask() -> Any:
        nc = await nats.connect(urls.split(","), connect_timeout=2)
        try:
            return await nc.jetstream(timeout=5).consumer_info(TELEMETRY_STREAM, durable)
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_two_workers_share_a_consumer_and_a_kill_9_mid_batch_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    with (
        LocalNatsCluster(tmp_path / "cluster") as nodes,
        LocalInflux(tmp_path / "influxd") as influx,
    ):
        districts = {"d1": DistrictSettings(sites=["t"], primary=influx.url)}
        done = provision(nodes.urls, mqtt_url=nodes.mqtt_url, partitions=PARTITIONS,
                         ack_wait_s=ACK_WAIT_S, replicas=nodes.replicas, consumers=())  # fmt: skip
        assert done.source.ok, done.source.detail
        provision_districts(nodes.urls, districts, ack_wait_s=ACK_WAIT_S, replicas=nodes.replicas)
        state = tmp_path / "state"
        env = {
            **os.environ,
            "HOMECARE_NATS__URL": nodes.urls,
            "HOMECARE_MQTT__CLIENT_ID": "ingest-workers",
            "HOMECARE_STATE_DIR": str(state),
            "HOMECARE_INFLUX__URL": "",
            "HOMECARE_DISTRICTS": json.dumps({"d1": {"sites": ["t"], "primary": influx.url}}),
            # Batches held for up to half a second: a kill lands mid-batch.
            "HOMECARE_INGEST__BATCH_INTERVAL_S": "0.5",
        }
        workers = [Worker(env, n, tmp_path / f"{n}.log") for n in ("w1", "w2")]
        try:
            wait_for(lambda: all(w.consuming() for w in workers), 30, "both workers consuming")
            elders, seconds = 10, 80  # 5 s of traffic: the kill lands while it flows
            readings = _readings("t", elders, seconds, time.time() - 600)
            pub = Publisher(nodes.nodes[0].mqtt_port, client_id="workers")
            try:
                sender = threading.Thread(
                    target=pub.publish, args=(readings,), kwargs={"rate": 150.0}
                )
                sender.start()
                victim = workers[0]
                wait_for(lambda: all(w.stored(state) > 0 for w in workers), 30, "both storing")
                victim.proc.kill()  # kill -9 mid-stream, holding a batch
                victim.proc.wait()
                sender.join()
                pub.wait_acked(len(readings), 60)
            finally:
                pub.close()
            with _db(influx.url) as db:
                wait_for(lambda: count(db, "wearable") >= len(readings), 30, "every reading")
                time.sleep(ACK_WAIT_S + 1)  # a late redelivery would show as extra points now
                assert count(db, "wearable") == len(readings)
                for e in range(elders):
                    assert count(db, "wearable", f"elder = 'te{e}'") == seconds
            info = _consumer_info(nodes.urls, ingest_consumer("d1", "primary"))
            # More deliveries than messages: the killed worker's batch was delivered again.
            assert info.delivered.consumer_seq > len(readings)
            assert (info.num_pending or 0) + (info.num_ack_pending or 0) == 0
            assert workers[1].stored(state) > 0
        finally:
            for w in workers:
                if w.proc.poll() is None:
                    w.proc.terminate()
                    w.proc.wait(30)


def test_a_worker_stopped_while_its_influxdb_is_away_hands_its_batch_back(
    tmp_path: Path,
) -> None:
    """No spool by district: SIGTERM (the stop event) while the InfluxDB is away ends the
    worker at once, with nothing acknowledged; every reading waits in the stream."""
    with LocalNats(tmp_path / "nats") as server:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            state_dir=tmp_path / "state",
            nats=NatsSettings(url=server.url, partitions=PARTITIONS),
            mqtt=MqttSettings(url=server.mqtt_url, client_id="ingest-away"),
            influx=InfluxSettings(database="homecare", timeout_s=1.0),
            ingest={"batch_interval_s": 0.05},
            districts={"d1": {"sites": ["t"], "primary": f"http://127.0.0.1:{free_port()}"}},
        )
        done = provision(server.url, mqtt_url=server.mqtt_url, partitions=PARTITIONS,
                         ack_wait_s=30.0, consumers=())  # fmt: skip
        assert done.source.ok, done.source.detail
        provision_districts(server.url, settings.districts, ack_wait_s=30.0)
        worker = IngestService(settings, district="d1")
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        readings = _readings("t", 5, 10, time.time() - 600)
        pub = Publisher(server.mqtt_port, client_id="away")
        try:
            pub.publish(readings)
            pub.wait_acked(len(readings), 30)
        finally:
            pub.close()
        status = settings.state_dir / "ingest-d1-primary-main.json"
        wait_for(lambda: status.exists() and json.loads(status.read_text())["influx_unavailable"],
                 30, "the worker holding its batch")  # fmt: skip
        stop.set()
        thread.join(15)
        assert not thread.is_alive()
        assert worker.stats.messages == 0
        assert _pending(server.url, ingest_consumer("d1")) == len(readings)
        assert not (settings.state_dir / "spool").exists()

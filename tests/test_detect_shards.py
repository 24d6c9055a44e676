"""`homecare detect` sharded by site: each process owns some sites, on its own durable
consumer of TELEMETRY filtered to them, against the real NATS Server."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import nats
import pytest
from pydantic import ValidationError
from support import Publisher, topic, wait_for
from test_detect_service import nats_settings, stored_alerts
from typer.testing import CliRunner

from broker.provision import DETECT_MAX_ACK_PENDING, provision
from cli.main import app
from detectors.service import DetectService, for_sites
from harness.servers import LocalNats
from homecare.jetstream import TELEMETRY_STREAM, detect_consumer
from homecare.settings import DetectSettings, Settings

pytestmark = pytest.mark.servers


def sos(site: str, elder: str, device: str, seq: int = 1) -> tuple[str, bytes]:
    body = {"elder": elder, "device": device, "ts": time.time(), "seq": seq}
    return topic(elder, "wearable", device, "sos", site=site), json.dumps(body).encode()


def test_a_site_that_is_not_an_id_is_refused_clearly(monkeypatch):
    with pytest.raises(ValidationError, match=r"sites\.1\s+String should match pattern"):
        DetectSettings(sites=["north", "north/+"])
    with pytest.raises(ValidationError, match=r"sites\.0"):
        for_sites(Settings(), ["#"])
    monkeypatch.setenv("HOMECARE_DETECT__SITES", '["north", "south"]')
    assert Settings().detect.sites == ["north", "south"]
    monkeypatch.setenv("HOMECARE_NATS__URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("HOMECARE_INFLUX__URL", "http://127.0.0.1:1")
    result = CliRunner().invoke(app, ["detect", "--site", "north", "--site", "a b"])
    assert result.exit_code == 2
    assert "invalid --site" in result.output
    result = CliRunner().invoke(app, ["broker", "provision", "--url", "nats://127.0.0.1:1",
                                      "--mqtt-url", "mqtt://127.0.0.1:1",
                                      "--detect-shard", "north,a b"])  # fmt: skip
    assert result.exit_code == 2
    assert "sites are ids separated by commas" in result.output


def test_each_shard_has_its_own_consumer_and_status(tmp_path):
    whole = DetectService(Settings(state_dir=tmp_path))
    assert whole.durable == "detect"
    assert whole.status_path == tmp_path / "detect.json"
    shards = [
        DetectService(for_sites(Settings(state_dir=tmp_path), sites))
        for sites in (["south", "north"], ["north-south"], ["north", "south", "north"])
    ]
    assert [s.durable for s in shards] == [
        "detect~north+south", "detect~north-south", "detect~north+south"]
    assert shards[0].status_path == tmp_path / "detect.north.south.json"
    assert shards[1].status_path != shards[0].status_path


def test_provision_makes_a_filtered_consumer_per_shard_and_detect_refuses_a_missing_one(
    tmp_path,
):
    with LocalNats(tmp_path / "nats") as server:
        env = {"HOMECARE_NATS__URL": server.url, "HOMECARE_MQTT__URL": server.mqtt_url,
               "HOMECARE_INFLUX__URL": "http://127.0.0.1:9",
               "HOMECARE_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
        runner = CliRunner()
        refused = runner.invoke(app, ["detect", "--site", "north"], env=env)
        assert refused.exit_code == 1
        assert "detect refuses to start" in refused.output
        assert "no durable consumer 'detect~north'" in refused.output
        assert "homecare broker provision" in refused.output
        done = runner.invoke(app, ["broker", "provision", "--partitions", "4", "--detect-shard",
                                   "south, north", "--detect-shard", "east"], env=env)  # fmt: skip
        assert done.exit_code == 0, done.output
        created = json.loads(done.output)["created"]
        assert {"detect~north+south", "detect~east", "detect_state"} <= set(created)
        assert "detect" not in created  # sharded: no consumer for every site

        async def configs() -> dict[str, tuple[list[str], int]]:
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                out = {}
                for name in ("detect~north+south", "detect~east"):
                    c = (await js.consumer_info(TELEMETRY_STREAM, name)).config
                    out[name] = (sorted(c.filter_subjects or [c.filter_subject]),
                                 c.max_ack_pending)  # fmt: skip
                return out
            finally:
                await nc.close()

        assert asyncio.run(configs()) == {
            "detect~north+south": (["telemetry.*.north.>", "telemetry.*.south.>"],
                                   DETECT_MAX_ACK_PENDING),
            "detect~east": (["telemetry.*.east.>"], DETECT_MAX_ACK_PENDING),
        }  # fmt: skip


def test_two_shards_raise_only_their_own_sites_alerts(tmp_path):
    with LocalNats(tmp_path / "nats") as server:
        done = provision(server.url, mqtt_url=server.mqtt_url, partitions=4, ack_wait_s=5.0,
                         detect_shards=(("north",), ("south",)))  # fmt: skip
        assert done.source.ok
        base = nats_settings(server, "http://127.0.0.1:9", tmp_path)
        shards = {site: DetectService(for_sites(base, [site])) for site in ("north", "south")}
        stop = threading.Event()
        threads = [threading.Thread(target=s.run, args=(stop,), daemon=True)
                   for s in shards.values()]  # fmt: skip
        for thread in threads:
            thread.start()
        wait_for(lambda: all(s.status_path.exists() for s in shards.values()), 20, "both shards")
        publisher = Publisher(server.mqtt_port)
        publisher.publish([sos("north", "n1", "wn1"), sos("south", "s1", "ws1"),
                           sos("west", "w1", "ww1")])  # fmt: skip
        publisher.wait_acked(3, 10)
        wait_for(lambda: len(stored_alerts(server.url)) >= 2, 15, "the two shards' alerts")
        time.sleep(1.0)  # the unowned site's press would have raised by now
        stop.set()
        for thread in threads:
            thread.join(15)
        publisher.close()
        alerts = stored_alerts(server.url)
    assert sorted((a.site, a.elder, a.kind) for a in alerts) == [
        ("north", "n1", "sos"), ("south", "s1", "sos")]
    for site, shard in shards.items():
        assert shard.durable == detect_consumer([site])
        assert shard.detect.stats.messages == 1, site  # only its own site's press
        assert dict(shard.detect.stats.alerts) == {"sos": 1}, site
        status = json.loads(shard.status_path.read_text())
        assert status["alerts"] == {"sos": 1}
        assert status["source_ok"] is True
        assert status["saved_seq"] == status["processed_seq"] > 0

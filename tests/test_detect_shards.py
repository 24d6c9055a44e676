"""`homecare detect` sharded by site: each process owns some sites, against the real servers."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError
from support import Publisher, settings_for, topic, wait_for
from test_detect_service import AlertListener
from typer.testing import CliRunner

from cli.main import app
from detectors.service import DetectService, for_sites
from devices.access import BrokerAccess
from harness.servers import LocalBroker
from homecare.consumer import SubscriptionRefused
from homecare.contract import subscription
from homecare.receiver import MqttConsumer
from homecare.settings import DetectSettings, MqttSettings, Settings

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
    monkeypatch.setenv("HOMECARE_MQTT__URL", "mqtt://127.0.0.1:1")
    monkeypatch.setenv("HOMECARE_INFLUX__URL", "http://127.0.0.1:1")
    result = CliRunner().invoke(app, ["detect", "--site", "north", "--site", "a b"])
    assert result.exit_code == 2
    assert "invalid --site" in result.output


def test_each_shard_has_its_own_session_status_and_filters(tmp_path):
    whole = DetectService(Settings(state_dir=tmp_path))
    assert whole.client_id == "homecare-detect"  # unsharded: as before (the demo relies on it)
    assert whole.status_path == tmp_path / "detect.json"
    assert whole.topics == [subscription()]
    shards = [
        DetectService(for_sites(Settings(state_dir=tmp_path), sites))
        for sites in (["south", "north"], ["north-south"], ["north", "south", "north"])
    ]
    assert [s.client_id for s in shards] == [
        "homecare-detect.north.south", "homecare-detect.north-south", "homecare-detect.north.south"]
    assert shards[0].status_path == tmp_path / "detect.north.south.json"
    assert shards[1].status_path != shards[0].status_path
    assert shards[2].topics == [subscription("north"), subscription("south")]


def test_a_receiver_takes_several_filters_in_one_subscription(broker):
    with pytest.raises(ValueError, match="non-empty list"):
        MqttConsumer(MqttSettings(url=broker.url), client_id="r", topics=subscription("north"))
    receiver = MqttConsumer(MqttSettings(url=broker.url), client_id="two-sites",
                        topics=[subscription("north"), subscription("south")])
    publisher = Publisher(broker.port)
    with receiver:
        assert receiver.topic == f"{subscription('north')}, {subscription('south')}"
        publisher.publish([sos(s, "e1", "w1") for s in ("north", "west", "south")])
        publisher.wait_acked(3, 10)
        got: list[str] = []
        wait_for(lambda: got.extend(m.topic for m in receiver.take(10, 0.1).messages)
                 or len(got) >= 2, 10, "both sites' messages")
        time.sleep(0.3)
        got += [m.topic for m in receiver.take(10, 0.1).messages]
    publisher.close()
    assert sorted(got) == [sos("north", "e1", "w1")[0], sos("south", "e1", "w1")[0]]


def test_a_refused_subscription_is_a_clear_error(broker):
    """Mosquitto 2.0.11 grants every filter (its ACL applies on delivery), so the refusing
    SUBACK that other brokers send is forged here, on the real connection."""
    receiver = MqttConsumer(MqttSettings(url=broker.url), client_id="refused",
                        topics=[subscription("north"), subscription("south")])
    granted = receiver._client.on_subscribe
    denied = ReasonCode(PacketTypes.SUBACK, "Not authorized")
    receiver._client.on_subscribe = lambda c, u, mid, codes, p: granted(
        c, u, mid, [codes[0], denied], p)
    with pytest.raises(SubscriptionRefused, match=r"subscription refused: homecare/v1/south/\+/\+/"
                       r"\+/\+: Not authorized"), receiver:
        pass


def test_per_site_filters_pass_the_broker_acl_of_a_shard_account(tmp_path):
    """Each shard has its own account (the broker makes the client id the user name)."""
    access = BrokerAccess(tmp_path / "access")
    access.set_password("detect-north", "detect-north-pw-5e1b")
    gateways = {site: access.add_gateway(f"gw-{site}", site=site) for site in ("north", "south")}
    with LocalBroker(tmp_path / "mosquitto", access=access.folder) as broker:
        settings = MqttSettings(url=broker.url, username="detect-north",
                                password="detect-north-pw-5e1b")
        receiver = MqttConsumer(settings, client_id="ignored", topics=[subscription("north")])
        with receiver:  # a refused subscription would raise here
            for site, creds in gateways.items():
                gateway = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.username)
                gateway.username_pw_set(creds.username, creds.password)
                gateway.connect("127.0.0.1", broker.port)
                gateway.loop_start()
                gateway.publish(*sos(site, "e1", "w1"), qos=1).wait_for_publish(10)
                gateway.disconnect()
                gateway.loop_stop()
            got = receiver.take(10, 5).messages
            time.sleep(0.3)
            got += receiver.take(10, 0.1).messages
    assert [m.topic for m in got] == [sos("north", "e1", "w1")[0]]


def test_two_shards_raise_only_their_own_sites_alerts(broker, influx, tmp_path):
    base = settings_for(broker, influx, tmp_path)
    shards = {site: DetectService(for_sites(base, [site])) for site in ("north", "south")}
    stop = threading.Event()
    threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in shards.values()]
    for thread in threads:
        thread.start()
    listener = AlertListener(broker.port)
    wait_for(lambda: all(s.status_path.exists() for s in shards.values()), 15, "both shards")
    publisher = Publisher(broker.port)
    publisher.publish([sos("north", "n1", "wn1"), sos("south", "s1", "ws1"),
                       sos("west", "w1", "ww1")])
    publisher.wait_acked(3, 10)
    wait_for(lambda: len(listener.alerts) >= 2, 15, "the two shards' alerts")
    time.sleep(1.0)  # the unowned site's press would have raised by now
    stop.set()
    for thread in threads:
        thread.join(15)
    publisher.close()
    listener.close()
    assert sorted((a.site, a.elder, a.kind) for a in listener.alerts) == [
        ("north", "n1", "sos"), ("south", "s1", "sos")]
    for site, shard in shards.items():
        assert shard.detect.stats.messages == 1, site  # only its own site's press
        assert dict(shard.detect.stats.alerts) == {"sos": 1}, site
        assert json.loads(shard.status_path.read_text())["alerts"] == {"sos": 1}

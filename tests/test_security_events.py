"""Security events per device in InfluxDB (the device-fleet view): a payload speaking for
another elder or device (the edge's identity checks), and each connection, publish or
subscription the broker refused (:mod:`devices.refusals`, from nats-server's log)."""

from __future__ import annotations

import time

from support import frame, topic
from test_security_broker import Probe, wait_for
from typer.testing import CliRunner

from cli.main import app
from homecare.edge import RawMessage
from homecare.influx import InfluxClient
from homecare.settings import ContractSettings, InfluxSettings
from ingest.points import Converter


def test_id_mismatches_are_dead_lettered_and_counted_per_publishing_device(influx):
    now = time.time()
    w8 = topic("e8", "wearable", "w8", "frame")
    messages = [
        RawMessage(w8, frame("e1", "w8", now), now),  # w8 speaks for elder e1
        RawMessage(w8, frame("e8", "w1", now + 1), now),  # w8 speaks as device w1
        RawMessage(topic("e9", "wearable", "w9", "frame"), frame("e8", "w8", now), now),
        RawMessage(w8, frame("e8", "w8", now + 2), now),  # its own reading: stored
        RawMessage(topic("e9", "wearable", "w9", "frame"), b"{", now),  # not a security event
    ]
    converter = Converter(ContractSettings())
    points = converter.convert(messages[:2], now=now)
    later = converter.convert(messages[2:], now=now)  # a later batch, the same millisecond
    assert points.dead["id_mismatch"] + later.dead["id_mismatch"] == 3
    with InfluxClient(InfluxSettings(url=influx.url)) as db:
        db.create_database()
        db.write(points.lines + later.lines)
        per_device = {
            row["device"]: row["count"]
            for row in db.rows('SELECT count("detail") FROM security_event GROUP BY "device"')
        }
        assert per_device == {"w8": 2, "w9": 1}
        dead = db.rows('SELECT count("size") FROM dead_letter GROUP BY "reason"')
        assert {r["reason"]: r["count"] for r in dead} == {"id_mismatch": 3, "not_json": 1}
        [event] = db.rows("SELECT * FROM security_event WHERE \"device\" = 'w9'")
        assert (event["elder"], event["kind"], event["reason"]) == ("e9", "wearable",
                                                                    "id_mismatch")
        assert "elder=e8" in event["detail"]
        assert db.rows('SELECT count("rate") FROM wearable')[0]["count"] == 1


def test_each_refusal_of_the_broker_is_a_security_event_of_its_device(
        secure_nats, pki, access, influx, monkeypatch):
    ca = pki[0].cert
    _, w1 = access.provision("w1", site="s", elder="e1", kind="wearable")
    port = secure_nats.mqtt_port
    device = Probe(port, ca=ca, user="w1", password=w1.password, client_id="w1")
    device.publish("homecare/v1/s/e2/wearable/w2/frame", frame("e2", "w2", time.time()))
    device.publish("homecare/v1/s/e1/wearable/w1/frame", frame("e1", "w1", time.time()))
    assert device.subscribe("homecare/v1/s/e2/alert/+").is_failure
    device.close()
    forged = Probe(port, ca=ca, user="w1", password=w1.password[:-4] + "AAAA", client_id="w1")
    anonymous = Probe(port, ca=ca, client_id="w9")  # not in the registry
    for probe in (forged, anonymous):
        assert probe.connack.is_failure
        probe.close()
    monkeypatch.setenv("HOMECARE_MQTT__ACCESS_DIR", str(access.folder))
    monkeypatch.setenv("HOMECARE_INFLUX__URL", influx.url)
    result = CliRunner().invoke(app, ["devices", "watch", "--log", str(secure_nats.log),
                                      "--once"])
    assert result.exit_code == 0, result.output
    assert "4 security events stored, 0 refused devices disconnected" in result.output
    with InfluxClient(InfluxSettings(url=influx.url)) as db:
        rows = db.rows('SELECT count("detail") FROM security_event GROUP BY "device", "reason"')
        assert {(r["device"], r["reason"]): r["count"] for r in rows} == {
            ("w1", "publish_refused"): 1, ("w1", "subscribe_refused"): 1,
            ("w1", "connect_refused"): 1, ("w9", "connect_refused"): 1}
        [published] = db.rows("SELECT * FROM security_event WHERE \"reason\" = 'publish_refused'")
        assert (published["site"], published["elder"], published["kind"]) == ("s", "e1",
                                                                               "wearable")
        assert published["detail"] == "homecare/v1/s/e2/wearable/w2/frame"
        # On the fleet dashboard's query (by site): the registered device's three events.
        board = db.rows('SELECT count("detail") AS "events" FROM "security_event" WHERE '
                        '"site" = \'s\' GROUP BY "elder", "device", "reason"')
        assert sum(r["events"] for r in board) == 3


def test_readings_of_a_device_not_in_the_registry_are_dead_lettered_not_stored(
        access, tmp_path):
    """Gateway credentials may publish for a whole site: the registry says which devices
    exist there. Re-read when it changes, so a newly provisioned device counts."""
    access.provision("w8", site="t", elder="e8", kind="wearable")
    now = time.time()
    converter = Converter(ContractSettings(registry=access.registry_path))
    messages = [
        RawMessage(topic("e8", "wearable", "w8", "frame"), frame("e8", "w8", now), now),
        RawMessage(topic("e7", "wearable", "w7", "frame"), frame("e7", "w7", now), now),
        RawMessage(topic("e9", "wearable", "w8", "frame"), frame("e9", "w8", now), now),
        RawMessage(topic("e7", "wearable", "w7", "availability"), b"online", now),
    ]
    points = converter.convert(messages, now=now)
    assert dict(points.dead) == {"unknown_device": 3}
    assert points.stored["frame"] == 1
    assert [ln.split(",")[0] for ln in points.lines].count("wearable") == 1
    access.provision("w7", site="t", elder="e7", kind="wearable")
    converter.edge.registry.check_s = 0.0
    assert converter.convert(messages[1:2], now=now).dead == {}


def test_a_device_whose_publish_is_refused_is_disconnected_so_it_learns(
        secure_nats, pki, access, influx, monkeypatch):
    """NATS PUBACKs a refused publish over MQTT 3.1.1; the watcher closes the device's
    connection instead (a device reconnects, and learns from the repeated drops)."""
    ca = pki[0].cert
    _, w1 = access.provision("w1", site="s", elder="e1", kind="wearable")
    _, w2 = access.provision("w2", site="s", elder="e2", kind="wearable")
    port = secure_nats.mqtt_port
    rogue = Probe(port, ca=ca, user="w1", password=w1.password, client_id="w1")
    honest = Probe(port, ca=ca, user="w2", password=w2.password, client_id="w2")
    try:
        rogue.publish("homecare/v1/s/e2/wearable/w2/frame", frame("e2", "w2", time.time()))
        honest.publish("homecare/v1/s/e2/wearable/w2/frame", frame("e2", "w2", time.time()))
        assert not rogue.disconnects  # acknowledged: the protocol alone tells it nothing
        monkeypatch.setenv("HOMECARE_MQTT__ACCESS_DIR", str(access.folder))
        monkeypatch.setenv("HOMECARE_INFLUX__URL", influx.url)
        monkeypatch.setenv("HOMECARE_NATS__URL", secure_nats.url)
        result = CliRunner().invoke(app, ["devices", "watch", "--log", str(secure_nats.log),
                                          "--once"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "1 security events stored, 1 refused devices disconnected" in result.output
        wait_for(lambda: rogue.disconnects, 10, "the refused device's disconnect")
        time.sleep(0.5)
        assert not honest.disconnects
        honest.publish("homecare/v1/s/e2/wearable/w2/frame", frame("e2", "w2", time.time()))
    finally:
        rogue.close()
        honest.close()

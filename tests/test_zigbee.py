"""Zigbee2MQTT homes: payloads shaped as Zigbee2MQTT publishes them for common PIR, contact
and pressure sensors, mapped to the contract; dead letters; the commands; the live bridge."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from cli.main import app
from homecare.contract import PAYLOADS, Topic, check_ids, parse_availability
from homecare.settings import MqttSettings
from zigbee.adapter import Adapter, Message
from zigbee.bridge import Bridge
from zigbee.mapping import MappingError, load_mapping

NOW = 1_800_000_000.0
MAPPING = """
site = "north"

[devices."Bathroom PIR"]
elder = "e1"
kind = "motion"
room = "bathroom"
model = "RTCGQ11LM"
vendor = "Aqara"

[devices."Front door"]
elder = "e1"
kind = "door"
role = "front"

[devices."Medicine box"]
elder = "e1"
kind = "door"
role = "medicine"
device = "pillbox"

[devices."Bed presence"]
elder = "e1"
kind = "mat"
place = "bed"

[devices."Armchair mat"]
elder = "e1"
kind = "mat"
place = "chair"
field = "contact"
"""
# As Zigbee2MQTT publishes them (its device pages' exposes): Aqara RTCGQ11LM motion
# sensor, Aqara MCCGQ11LM door/window contact, a presence-style bed sensor, and a
# pressure mat wired to a contact sensor (pressed: contact true).
AQARA_PIR = {"battery": 100, "voltage": 3055, "illuminance": 58, "illuminance_lux": 58,
             "occupancy": True, "linkquality": 102, "device_temperature": 30,
             "power_outage_count": 0}  # fmt: skip
AQARA_CONTACT = {"battery": 91, "voltage": 3025, "contact": False, "linkquality": 87,
                 "device_temperature": 27, "power_outage_count": 3}  # fmt: skip
BED_PRESENCE = {"presence": True, "battery": 64, "linkquality": 150}
MAT_CONTACT = {"contact": True, "battery": 77, "linkquality": 40}


@pytest.fixture
def adapter(tmp_path: Path) -> Adapter:
    path = tmp_path / "home.toml"
    path.write_text(MAPPING)
    return Adapter(load_mapping(path))


def valid(message: Message) -> dict:
    """The message as ingest's edge would judge it: topic, payload model, ids."""
    topic = Topic.parse(message.topic)
    if topic.stream == "availability":
        parse_availability(message.payload)
        return {"availability": message.payload.decode()}
    payload = PAYLOADS[topic.stream].model_validate_json(message.payload, context={"now": NOW})
    check_ids(topic, payload)
    return json.loads(message.payload)


def send(adapter: Adapter, name: str, data: dict | bytes, at: float = NOW):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return adapter.translate(f"zigbee2mqtt/{name}", raw, received=at)


def test_pir_contact_and_mats_become_contract_events(adapter: Adapter) -> None:
    out, dead = send(adapter, "Bathroom PIR", AQARA_PIR)
    assert dead == []
    motion, status = (valid(m) for m in out)
    assert out[0].topic == "homecare/v1/north/e1/motion/bathroom-pir/motion"
    assert (motion["room"], motion["state"], motion["ts"]) == ("bathroom", "detected", NOW)
    assert status["battery"] == 100
    assert status["rssi"] == -72
    assert (status["model"], status["room"]) == ("RTCGQ11LM", "bathroom")

    out, _ = send(adapter, "Front door", AQARA_CONTACT)  # contact false: open
    assert valid(out[0])["state"] == "opened"
    assert valid(out[0])["role"] == "front"
    out, _ = send(adapter, "Medicine box", {**AQARA_CONTACT, "contact": True})
    assert out[0].topic.endswith("/door/pillbox/event")
    assert valid(out[0])["state"] == "closed"

    out, _ = send(adapter, "Bed presence", BED_PRESENCE)
    assert out[0].topic.endswith("/mat/bed-presence/occupancy")
    assert (valid(out[0])["place"], valid(out[0])["state"]) == ("bed", "occupied")
    out, _ = send(adapter, "Armchair mat", MAT_CONTACT)
    assert (valid(out[0])["place"], valid(out[0])["state"]) == ("chair", "occupied")


def test_only_changes_are_events_and_status_is_paced(adapter: Adapter) -> None:
    first, _ = send(adapter, "Bathroom PIR", AQARA_PIR)
    assert len(first) == 2
    again, _ = send(adapter, "Bathroom PIR", AQARA_PIR, NOW + 10)  # a repeated report
    assert again == []
    cleared, _ = send(adapter, "Bathroom PIR", {**AQARA_PIR, "occupancy": False}, NOW + 90)
    assert [valid(m)["state"] for m in cleared] == ["cleared"]
    later, _ = send(adapter, "Bathroom PIR", {**AQARA_PIR, "occupancy": False}, NOW + 400)
    assert [json.loads(m.payload)["battery"] for m in later] == [100]  # status, 5 min on
    seqs = [json.loads(m.payload)["seq"] for m in first[:1] + cleared]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 2


def test_availability_json_and_legacy_and_last_seen(adapter: Adapter) -> None:
    out, _ = adapter.translate(
        "zigbee2mqtt/Front door/availability", b'{"state":"offline"}', received=NOW
    )
    assert out == [Message("homecare/v1/north/e1/door/front-door/availability", b"offline", True)]
    out, _ = adapter.translate("zigbee2mqtt/Front door/availability", b"online", received=NOW)
    assert valid(out[0]) == {"availability": "online"}
    seen = datetime.fromtimestamp(NOW - 30, UTC).isoformat()  # e.g. 2027-01-15T08:00:00+00:00
    out, _ = send(adapter, "Front door", {**AQARA_CONTACT, "last_seen": seen})
    assert json.loads(out[0].payload)["ts"] == NOW - 30  # the device's moment, not receipt
    out, _ = send(adapter, "Bed presence", {**BED_PRESENCE, "last_seen": int(NOW * 1000) - 5000})
    assert json.loads(out[0].payload)["ts"] == NOW - 5


@pytest.mark.parametrize(
    ("name", "payload", "reason", "words"),
    [
        ("Hall lamp", b'{"state": "ON"}', "unmapped", "no device 'Hall lamp'"),
        ("Bathroom PIR", b"{not json", "bad_json", ""),
        ("Bathroom PIR", b"[1, 2]", "schema", "not a JSON object"),
        ("Bathroom PIR", b'{"occupancy": "yes"}', "schema", "occupancy must be true or false"),
        ("Bathroom PIR", b'{"illuminance": 20}', "schema", "no field this motion maps"),
        ("Front door", b'{"contact": true, "battery": "full"}', "schema", "battery must be"),
        ("Front door", b'{"contact": true, "battery": 140}', "schema", "status: battery"),
        ("Front door", b'{"contact": true, "last_seen": "yesterday"}', "schema", "last_seen"),
        ("Front door/availability", b'{"state": "sleeping"}', "schema", "online or offline"),
    ],
)
def test_malformed_and_unmapped_are_dead_lettered(
    adapter: Adapter, name: str, payload: bytes, reason: str, words: str
) -> None:
    out, dead = send(adapter, name, payload)
    assert out == []
    assert [d.reason for d in dead] == [reason]
    assert words in dead[0].detail
    assert dead[0].as_dict()["topic"] == f"zigbee2mqtt/{name}"


def test_bridge_topics_and_commands_are_not_devices(adapter: Adapter) -> None:
    for topic in ("zigbee2mqtt/bridge/state", "zigbee2mqtt/bridge/devices",
                  "zigbee2mqtt/Front door/set"):  # fmt: skip
        assert adapter.translate(topic, b'{"state":"online"}', received=NOW) == ([], [])
    _out, dead = adapter.translate("other/Front door", b"{}", received=NOW)
    assert dead[0].reason == "bad_topic"


def test_mapping_errors_say_where(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('site = "north"\n[devices."PIR"]\nelder = "e1"\nkind = "motion"\n')
    with pytest.raises(MappingError, match="a motion needs room"):
        load_mapping(path)
    path.write_text('site = "north"\n[devices."A b"]\nelder = "e1"\nkind = "mat"\nplace = "bed"\n'
                    '[devices."a-b"]\nelder = "e1"\nkind = "mat"\nplace = "chair"\n')  # fmt: skip
    with pytest.raises(MappingError, match="device ids used twice: a-b"):
        load_mapping(path)


def test_translate_and_check_commands(tmp_path: Path) -> None:
    mapping = tmp_path / "home.toml"
    mapping.write_text(MAPPING)
    recorded = tmp_path / "z2m.txt"
    recorded.write_text(
        f"zigbee2mqtt/Bathroom PIR {json.dumps(AQARA_PIR)}\n"
        "zigbee2mqtt/Front door/availability online\n"
        'zigbee2mqtt/Kitchen plug {"state": "ON"}\n'
        f"zigbee2mqtt/Front door {json.dumps(AQARA_CONTACT)}\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["zigbee", "translate", str(mapping), str(recorded),
                                 "--received", str(NOW)])  # fmt: skip
    assert result.exit_code == 1
    assert f"{recorded}:3: unmapped" in result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["topic"].rsplit("/", 1)[1] for x in lines] == [
        "motion", "status", "availability", "event", "status",
    ]  # fmt: skip
    result = runner.invoke(app, ["zigbee", "check", str(mapping)])
    assert result.exit_code == 0
    assert "zigbee2mqtt/Armchair mat -> homecare/v1/north/e1/mat/armchair-mat/" in result.stdout


def test_live_bridge_on_the_mqtt_listener(nats_broker, tmp_path: Path) -> None:
    """Zigbee2MQTT's messages in, contract messages out, over a real MQTT listener (NATS
    subjects hold no spaces: friendly names here have none)."""
    mapping = tmp_path / "home.toml"
    mapping.write_text(MAPPING.replace("Bathroom PIR", "bath_pir").replace("Front door", "front"))
    settings = MqttSettings(url=nats_broker.mqtt_url)
    got: list[tuple[str, bytes]] = []
    seen = threading.Event()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv311)

    def on_message(_c, _u, msg) -> None:
        got.append((msg.topic, bytes(msg.payload)))
        if len(got) >= 3:
            seen.set()

    watcher.on_message = on_message
    watcher.connect(settings.host, settings.port)
    watcher.subscribe("homecare/v1/north/#", qos=1)
    watcher.loop_start()
    dead = tmp_path / "dead.jsonl"
    bridge = Bridge(Adapter(load_mapping(mapping)), settings, settings, dead_letters=dead)
    runner = threading.Thread(target=bridge.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while not bridge.subscribed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bridge.subscribed
        z2m = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="z2m", protocol=mqtt.MQTTv311)
        z2m.connect(settings.host, settings.port)
        z2m.loop_start()
        z2m.publish("zigbee2mqtt/bath_pir", json.dumps(AQARA_PIR), qos=1).wait_for_publish(5)
        z2m.publish("zigbee2mqtt/front", json.dumps(AQARA_CONTACT), qos=1).wait_for_publish(5)
        z2m.publish("zigbee2mqtt/garage_pir", b'{"occupancy": true}', qos=1).wait_for_publish(5)
        z2m.loop_stop()
        z2m.disconnect()
        assert seen.wait(15), got
        deadline = time.monotonic() + 10
        while bridge.counts.dead < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        bridge.stop()
        runner.join(10)
        watcher.loop_stop()
        watcher.disconnect()
    topics = {t for t, _ in got}
    assert "homecare/v1/north/e1/motion/bath_pir/motion" in topics
    assert "homecare/v1/north/e1/door/front/event" in topics
    assert json.loads(dead.read_text().splitlines()[0])["reason"] == "unmapped"

"""Ingest against the real NATS Server and influxd: devices publish MQTT 3.1.1 at QoS 1 to
its MQTT listener, ingest consumes TELEMETRY through its durable consumer; valid traffic
stored, bad input dead-lettered, and ingest refuses to start without TELEMETRY's source."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import nats
import pytest
from support import Publisher, count, frame, settings_for, topic, wait_for
from typer.testing import CliRunner

from cli.main import app
from homecare.influx import InfluxClient
from homecare.jetstream import TELEMETRY_STREAM
from homecare.settings import InfluxSettings
from homecare.status import read_status
from ingest.service import IngestService


@pytest.fixture
def ingest(nats_broker, influx, tmp_path):
    """Ingest running in a thread of the test process, stopped gracefully afterwards."""
    service = IngestService(settings_for(nats_broker, influx, tmp_path))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: service.status_path.exists(), 20, "ingest bound to its consumer")
    yield service
    stop.set()
    thread.join(20)
    assert not thread.is_alive()


@pytest.fixture
def db(influx):
    with InfluxClient(settings_for_db(influx)) as client:
        yield client


def settings_for_db(influx):
    return InfluxSettings(url=influx.url, database="homecare")


def valid_traffic(now: float, elders: int = 3, frames: int = 20):
    for e in range(elders):
        elder, w, b, d = f"e{e}", f"w{e}", f"b{e}", f"d{e}"
        for i in range(frames):
            yield topic(elder, "wearable", w, "frame"), frame(elder, w, now - 60 + i, hr=70 + i)
        for i in range(3):
            yield (
                topic(elder, "bed", b, "reading"),
                json.dumps(
                    {
                        "elder": elder,
                        "device": b,
                        "ts": now - 60 + 10 * i,
                        "presence": True,
                        "hr": 58,
                        "br": 14.0,
                        "movement": 0.1,
                    }
                ),
            )
        yield (
            topic(elder, "door", d, "event"),
            json.dumps(
                {
                    "elder": elder,
                    "device": d,
                    "ts": now - 30,
                    "door": "front",
                    "role": "front",
                    "state": "opened",
                    "seq": 1,
                }
            ),
        )
        yield (
            topic(elder, "wearable", w, "sos"),
            json.dumps({"elder": elder, "device": w, "ts": now - 20, "seq": 7}),
        )
        yield (
            topic(elder, "wearable", w, "ok"),
            json.dumps({"elder": elder, "device": w, "ts": now - 10, "seq": 8}),
        )
        yield (
            topic(elder, "wearable", w, "status"),
            json.dumps(
                {
                    "elder": elder,
                    "device": w,
                    "ts": now - 5,
                    "battery": 80,
                    "firmware": "1.2.3",
                    "rssi": -60,
                    "model": "P1",
                    "vendor": "acme",
                    "placement": "pendant",
                }
            ),
        )
        yield topic(elder, "wearable", w, "availability"), "online"


def test_valid_traffic_is_counted_back_exactly(nats_broker, ingest, db):
    now = time.time()
    pub = Publisher(nats_broker.mqtt_port)
    n = pub.publish(valid_traffic(now))
    pub.wait_acked(n)
    wait_for(
        lambda: count(db, "wearable") == 60 and count(db, "availability") == 3,
        20,
        "all frames stored",
    )
    assert count(db, "bed") == 9
    assert count(db, "door") == 3
    assert count(db, "button", "button='sos'") == 3
    assert count(db, "button", "button='ok'") == 3
    assert count(db, "device_status") == 3
    assert count(db, "dead_letter") == 0
    rows = db.rows("SELECT * FROM wearable WHERE elder='e1' ORDER BY time LIMIT 1")
    assert rows[0]["hr"] == 70
    assert rows[0]["kind"] == "wearable"
    assert rows[0]["mag_mean"] == pytest.approx((0.01**2 + 0.99**2 + 0.05**2) ** 0.5, abs=1e-3)
    # Re-delivery of the same readings overwrites instead of double-counting.
    n2 = pub.publish(valid_traffic(now))
    pub.wait_acked(n + n2)
    wait_for(lambda: ingest.stats.messages >= n + n2, 20, "second delivery processed")
    assert count(db, "wearable") == 60
    assert count(db, "bed") == 9
    pub.close()


def _bad(now: float) -> list[tuple[str, str, bytes]]:
    """(reason, topic, payload) for every bad-input category."""
    w = topic("e9", "wearable", "w9", "frame")
    big = json.dumps({"elder": "e9", "device": "w9", "ts": now, "pad": "x" * 20000}).encode()
    return [
        ("not_json", w, b"\x00\xffnot json{"),
        ("schema", w, json.dumps({"elder": "e9", "device": "w9", "ts": now}).encode()),
        ("out_of_range", w, frame("e9", "w9", now, hr=400)),
        ("out_of_range", w, frame("e9", "w9", now).replace(b"-0.99", b"-99.0")),
        ("timestamp", w, frame("e9", "w9", now + 3600)),
        ("timestamp", w, frame("e9", "w9", now - 8 * 86400)),
        ("id_mismatch", w, frame("e8", "w9", now)),
        ("oversized", w, big),
        ("unknown_stream", topic("e9", "wearable", "w9", "selfie"), frame("e9", "w9", now)),
        ("unknown_stream", topic("e9", "door", "d9", "frame"), frame("e9", "d9", now)),
        ("bad_topic", topic("e9", "toaster", "w9", "frame"), frame("e9", "w9", now)),
        # NATS carries a "." inside a topic level (as "//"); the contract's ids have none.
        # (A space it cannot carry at all: it refuses such a publish and drops the device.)
        ("bad_topic", topic("e.9", "wearable", "w9", "frame"), frame("e9", "w9", now)),
        ("schema", topic("e9", "wearable", "w9", "availability"), b"maybe"),
    ]


@pytest.mark.parametrize("case", range(len(_bad(0))), ids=[c[0] for c in _bad(0)])
def test_bad_input_is_dead_lettered_and_valid_traffic_kept(case, nats_broker, ingest, db):
    now = time.time()
    reason, bad_topic, payload = _bad(now)[case]
    pub = Publisher(nats_broker.mqtt_port)
    good = list(valid_traffic(now, elders=1, frames=5))
    n = pub.publish(good[:3])
    n += pub.publish([(bad_topic, payload)])
    n += pub.publish(good[3:])
    pub.wait_acked(n)
    wait_for(
        lambda: count(db, "dead_letter") == 1 and count(db, "wearable") == 5,
        20,
        "dead letter and frames",
    )
    [dead] = db.rows("SELECT * FROM dead_letter")
    assert dead["reason"] == reason
    assert dead["topic"] == bad_topic.replace("\x00", "?")
    assert dead["size"] == len(payload)
    assert len(dead["payload"]) <= 512
    assert dead["detail"]
    # the writer counts a batch once InfluxDB has it: a moment after the query sees it
    wait_for(lambda: ingest.stats.dead[reason] == 1, 5, f"ingest to count the {reason}")
    assert count(db, "bed") == 3
    security = db.rows("SELECT * FROM security_event")
    if reason == "id_mismatch":
        assert [(r["device"], r["elder"], r["reason"]) for r in security] == [
            ("w9", "e9", "id_mismatch")]
    else:
        assert security == []
    pub.close()


def test_the_status_file_carries_the_source_and_the_backlog(nats_broker, ingest):
    wait_for(lambda: (read_status(ingest.status_path) or {}).get("backlog") == 0, 20,
             "the backlog in the status file")  # fmt: skip
    status = read_status(ingest.status_path)
    assert status is not None
    assert status["connected"] is True
    assert status["source"]["ok"] is True
    assert "TELEMETRY sources $MQTT_msgs" in status["source"]["detail"]
    assert status["source"]["lag"] == 0


def _drop_source(url: str) -> None:
    """TELEMETRY no longer sources ``$MQTT_msgs`` (as a stream recreated by hand would be)."""

    async def drop() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        config = (await js.stream_info(TELEMETRY_STREAM)).config
        config.sources = []
        await js.update_stream(config)
        await nc.close()

    asyncio.run(drop())


def test_ingest_refuses_to_start_when_telemetry_has_no_source(nats_broker, influx, tmp_path):
    """Provisioned out of order, or TELEMETRY recreated by hand: devices' readings would
    never reach it, so ingest says so on one line and exits 1 (after the start-up grace
    the consumer gives a source that is not active yet: 15 s by default, 1 s here)."""
    _drop_source(nats_broker.url)
    env = {"HOMECARE_NATS__URL": nats_broker.url, "HOMECARE_INFLUX__URL": influx.url,
           "HOMECARE_STATE_DIR": str(tmp_path / "state"),
           "HOMECARE_NATS__SOURCE_WAIT_S": "1"}  # fmt: skip
    done = CliRunner().invoke(app, ["ingest", "--log-level", "ERROR"], env=env)
    assert done.exit_code == 1, done.output
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: ingest refuses to start at {nats_broker.url}: "
        "stream TELEMETRY does not source $MQTT_msgs")  # fmt: skip
    assert not (tmp_path / "state" / "ingest-main.json").exists()


def test_a_source_lost_while_running_shows_in_the_status_file(nats_broker, influx, tmp_path,
                                                              caplog):  # fmt: skip
    settings = settings_for(nats_broker, influx, tmp_path)
    settings.nats.source_check_s = 0.5
    service = IngestService(settings)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: service.status_path.exists(), 20, "ingest bound to its consumer")
        _drop_source(nats_broker.url)

        def source() -> dict[str, Any]:
            return (read_status(service.status_path) or {}).get("source") or {}

        wait_for(lambda: source().get("ok") is False, 10, "the broken source in the status")
        assert source()["detail"] == "stream TELEMETRY does not source $MQTT_msgs"
        assert thread.is_alive()  # it keeps storing what the stream still holds
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert any("readings from devices are not reaching TELEMETRY" in r.getMessage()
                   for r in errors)  # fmt: skip
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()

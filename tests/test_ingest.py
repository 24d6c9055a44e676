"""Ingest against real Mosquitto and influxd: valid traffic stored, bad input dead-lettered."""

from __future__ import annotations

import json
import threading
import time

import pytest
from support import Publisher, count, frame, settings_for, topic, wait_for

from homecare.influx import InfluxClient
from ingest.service import IngestService


@pytest.fixture
def ingest(broker, influx, tmp_path):
    """Ingest running in a thread of the test process, stopped gracefully afterwards."""
    settings = settings_for(broker, influx, tmp_path)
    service = IngestService(settings)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: service.stats is not None and thread.is_alive(), 5, "ingest start")
    time.sleep(0.5)  # subscribed
    yield service
    stop.set()
    thread.join(20)
    assert not thread.is_alive()


@pytest.fixture
def db(influx):
    with InfluxClient(settings_for_db(influx)) as client:
        yield client


def settings_for_db(influx):
    from homecare.settings import InfluxSettings

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


def test_valid_traffic_is_counted_back_exactly(broker, ingest, db):
    now = time.time()
    pub = Publisher(broker.port)
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
        ("bad_topic", topic("e 9", "wearable", "w9", "frame"), frame("e9", "w9", now)),
        ("schema", topic("e9", "wearable", "w9", "availability"), b"maybe"),
    ]


@pytest.mark.parametrize("case", range(len(_bad(0))), ids=[c[0] for c in _bad(0)])
def test_bad_input_is_dead_lettered_and_valid_traffic_kept(case, broker, ingest, db):
    now = time.time()
    reason, bad_topic, payload = _bad(now)[case]
    pub = Publisher(broker.port)
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
    assert ingest.stats.dead[reason] == 1
    assert count(db, "bed") == 3
    security = db.rows("SELECT * FROM security_event")
    if reason == "id_mismatch":
        assert [(r["device"], r["elder"], r["reason"]) for r in security] == [
            ("w9", "e9", "id_mismatch")]
    else:
        assert security == []
    pub.close()

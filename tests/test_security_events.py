"""Identity checks: a payload speaking for another elder or device is a security event of
the device that published it, counted per device in InfluxDB (the device-fleet view)."""

from __future__ import annotations

import time

from support import frame, topic

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

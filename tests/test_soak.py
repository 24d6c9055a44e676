"""`homecare bench soak` works: a short soak with a broker and an influxd restart loses nothing.

The real soak runs for minutes (README figures); this one proves the machinery in seconds.
"""

from __future__ import annotations

import pytest

from bench.soak import run

pytestmark = pytest.mark.integration  # bench.soak starts its own nats-server and influxd


def test_a_short_soak_with_restarts_loses_nothing(tmp_path):
    report = run(
        minutes=0.2, elders=10, speed=20, restart_every_s=4, root=tmp_path, log=lambda _: None
    )
    assert report["restarts"][:2] == ["nats-server", "influxd"]
    assert report["ingest_alive"]
    assert report["published_readings"] > 1000
    assert report["stored_in_influxdb"] == report["published_readings"]
    assert report["lost"] == 0
    assert report["ingest_messages"] >= report["published_readings"]
    assert 0 < report["rss_mb_start"] <= report["rss_mb_max"]

"""Retention and rollups against a real influxd holding the simulated week (tests/week.py).

Every rollup is checked against the same aggregate computed here, in numpy, from the raw
points read back; the nights against a plain loop over the raw bed readings. One test
proves that influxd's continuous queries themselves write the rollups (a fresh influxd).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict

import numpy as np
import pytest
from support import wait_for
from typer.testing import CliRunner
from week import rolled_up

from cli.main import app
from homecare import nights, schema
from homecare.influx import InfluxClient, line
from homecare.query import rollup_select
from homecare.schema import HISTORY, RAW
from homecare.settings import InfluxSettings, RetentionSettings
from ingest import rollups

DAY = 86400


@pytest.fixture(scope="module")
def lifecycle(week_influx):
    """The session's week in a database of our own, retention installed, rolled up."""
    server, week = week_influx
    with rolled_up(server, week, "lifecycle") as db:
        yield db, week


def _history(db: InfluxClient, measurement: str) -> dict[tuple, dict]:
    rows = db.rows(f"SELECT * FROM {HISTORY}.{measurement} GROUP BY *")
    return {(r.get("elder"), r.get("role"), r["time"] // 1000): r for r in rows}


def test_install_creates_policies_and_queries_once(lifecycle):
    db, _ = lifecycle
    again = rollups.install(db, RetentionSettings())
    assert again.created == []
    assert again.altered == []
    policies = {r["name"]: r for r in db.rows("SHOW RETENTION POLICIES ON lifecycle")}
    assert policies[RAW]["default"]
    assert policies[RAW]["duration"] == "720h0m0s"
    assert policies[HISTORY]["duration"] == f"{1825 * 24}h0m0s"
    installed = {
        v[0]: v[1]
        for s in db.query("SHOW CONTINUOUS QUERIES")
        if s["name"] == "lifecycle"
        for v in s["values"]
    }
    assert len(installed) == len(schema.ROLLUPS) * len(schema.INTERVALS)
    # The continuous queries run exactly the statements `rollup run` runs.
    sql = rollup_select(schema.ROLLUPS[1], "1d", database="lifecycle")
    assert rollups.canonical(str(sql)) in rollups.canonical(installed["wearable_1d_active"])


def _buckets(ts_s: np.ndarray, size: int) -> np.ndarray:
    return (ts_s // size * size).astype(np.int64)


def test_rollups_match_the_raw_points(lifecycle):
    db, week = lifecycle
    for size, interval in ((3600, "1h"), (DAY, "1d")):
        wearable = _history(db, f"wearable_{interval}")
        bed = _history(db, f"bed_{interval}")
        for elder in week.elders:
            raw = db.rows(
                f"SELECT mag_std, steps, hr, spo2 FROM raw.wearable WHERE elder = '{elder}'"
            )
            t = np.array([r["time"] / 1000 for r in raw])
            b = _buckets(t, size)
            keys = np.unique(b)
            assert sum((elder, None, int(k)) in wearable for k in keys) == len(keys)
            for k in keys:
                got = wearable[(elder, None, int(k))]
                mine = [r for r, bb in zip(raw, b, strict=True) if bb == k]
                std = np.array([r["mag_std"] for r in mine])
                hr = np.array([r["hr"] for r in mine if r["hr"] is not None])
                assert got["worn_s"] == len(mine)
                assert (got["active_s"] or 0) == np.count_nonzero(std >= schema.ACTIVE_G)
                assert got["movement"] == pytest.approx(std.mean(), rel=1e-9)
                assert got["steps"] == sum(r["steps"] for r in mine)
                if len(hr):
                    assert got["hr_mean"] == pytest.approx(hr.mean(), rel=1e-9)
                    assert (got["hr_min"], got["hr_max"]) == (hr.min(), hr.max())
                else:
                    assert got.get("hr_mean") is None
            raw = db.rows(f"SELECT presence, br FROM raw.bed WHERE elder = '{elder}'")
            b = _buckets(np.array([r["time"] / 1000 for r in raw]), size)
            for k in np.unique(b):
                got = bed[(elder, None, int(k))]
                mine = [r for r, bb in zip(raw, b, strict=True) if bb == k]
                br = [r["br"] for r in mine if r["br"] is not None]
                assert got["readings"] == len(mine)
                assert (got["in_bed_readings"] or 0) == sum(r["presence"] for r in mine)
                if br:
                    assert got["br_max"] == max(br)
    doors = _history(db, "door_1d")
    raw = db.rows("SELECT opened, elder, role FROM raw.door WHERE opened = true GROUP BY *")
    counts: dict[tuple, int] = defaultdict(int)
    for r in raw:
        counts[(r["elder"], r["role"], r["time"] // 1000 // DAY * DAY)] += 1
    assert counts
    assert {k: v["opens"] for k, v in doors.items()} == counts


def _nights_by_loop(rows: list[dict], start: float, end: float) -> tuple[float, int] | None:
    """Time in bed and exits in [start, end), one reading at a time."""
    in_bed, exits, was_in, left = 0.0, 0, False, False
    seen = False
    for i, r in enumerate(rows):
        t = r["time"] / 1000
        if not start <= t < end:
            continue
        seen = True
        following = rows[i + 1]["time"] / 1000 if i + 1 < len(rows) else math.inf
        if r["presence"]:
            in_bed += min(following, t + nights.MAX_GAP_S, end) - t
            exits += left
            left, was_in = False, True
        elif was_in:
            left = True
    return (in_bed, exits) if seen else None


def test_nights_match_the_raw_bed_readings(lifecycle):
    db, week = lifecycle
    sleep = _history(db, "sleep_1d")
    full_nights = 0
    for elder in week.elders:
        rows = db.rows(f"SELECT presence FROM raw.bed WHERE elder = '{elder}'")
        for day in nights.nights(week.start, week.end):
            midnight = day * DAY
            expected = _nights_by_loop(rows, midnight + 18 * 3600, midnight + 36 * 3600)
            got = sleep.get((elder, None, midnight))
            if expected is None:
                assert got is None
                continue
            assert (got["in_bed_s"], got["exits"]) == (round(expected[0]), expected[1])
            if midnight + 18 * 3600 >= week.start:
                full_nights += 1
                assert 4 * 3600 < got["in_bed_s"] < 14 * 3600
                assert 18 < got["bedtime_h"] < 26
                assert 4 < got["rise_h"] < 11
    assert full_nights >= 5 * len(week.elders)


def test_write_path_gives_what_into_gives(week_influx):
    """The path for InfluxDB 2.x/3.x (no INTO): same statements, rows written back."""
    server, week = week_influx
    measurements = [r.target.at(i) for r in schema.ROLLUPS for i in schema.INTERVALS]
    measurements += ["sleep_1d", *(m.name for m in schema.ALERT_MEASUREMENTS)]
    with rolled_up(server, week, "lifecycle_w") as db:
        by_into = {m: _history(db, m) for m in dict.fromkeys(measurements)}
        db.query("DROP RETENTION POLICY history ON lifecycle_w")
        assert rollups.install(db, RetentionSettings()).created == ["rp history"]
        written = rollups.run(db, RetentionSettings(), start=week.start, end=week.end, via="write")
        assert written.via == "write"
        for m, rows in by_into.items():
            assert rows, m
            assert _history(db, m) == rows, m
            assert written.written[m] >= len(rows)  # two statements may fill one row


def test_retention_deletes_raw_data_and_keeps_rollups(influx):
    now = time.time() // 3600 * 3600  # influxd's clock: it drops shards by the real time
    with InfluxClient(InfluxSettings(url=influx.url, database="expiry")) as db:
        rollups.install(db, RetentionSettings())
        tags = "site=s,elder=e9,device=w9,kind=wearable"
        ages_h = (120, 72, 1)
        db.write(
            [line("wearable", tags, {"mag_std": 0.2}, int((now - h * 3600) * 1000)) for h in ages_h]
        )
        rollups.run(db, RetentionSettings(), start=now - 6 * DAY, end=now)
        assert len(db.rows("SELECT worn_s FROM history.wearable_1h")) == 3
        changes = rollups.install(db, RetentionSettings(raw="1d"))
        assert changes.altered == ["rp raw"]

        def expired() -> bool:
            return len(db.rows("SELECT mag_std FROM raw.wearable")) == 1

        wait_for(expired, 30, "influxd to drop the shards older than a day")
        assert db.rows("SELECT mag_std FROM raw.wearable")[0]["time"] == (now - 3600) * 1000
        assert len(db.rows("SELECT worn_s FROM history.wearable_1h")) == 3


def test_rollup_commands(influx, monkeypatch):
    monkeypatch.setenv("HOMECARE_INFLUX__URL", influx.url)
    monkeypatch.setenv("HOMECARE_INFLUX__DATABASE", "cli")
    runner = CliRunner()
    first = runner.invoke(app, ["rollup", "install"])
    assert first.exit_code == 0, first.output
    assert "rp raw" in json.loads(first.output)["created"]
    second = runner.invoke(app, ["rollup", "install"])
    assert json.loads(second.output)["created"] == []
    ran = runner.invoke(app, ["rollup", "run", "--since", "3d", "--via", "write"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output)["via"] == "write"
    bad = runner.invoke(app, ["rollup", "run", "--since", "yesterday"])
    assert bad.exit_code != 0
    assert "ISO date" in bad.output


KEPT = {
    None: lambda f: True,
    ("mag_std", ">=", f"{schema.ACTIVE_G:.3f}"): lambda f: f["mag_std"] >= schema.ACTIVE_G,
    ("presence", "=", "true"): lambda f: f["presence"],
    ("opened", "=", "true"): lambda f: f["opened"],
}
"""Each rollup's WHERE as a test on one raw point's fields."""


def _aggregate(fields: list[dict], rollup: schema.Rollup) -> dict[str, float]:
    """A rollup's fields over some raw points' fields (absent: no such data)."""
    reduce = {"count": len, "mean": np.mean, "sum": np.sum, "min": np.min, "max": np.max}
    kept = [f for f in fields if KEPT[rollup.where](f)]
    out = {}
    for alias, fn, src in rollup.aggregates:
        values = np.array([f[src] for f in kept if f.get(src) is not None], dtype=float)
        if len(values):
            out[alias] = float(reduce[fn](values))
    return out


def test_continuous_queries_fire_in_influxd(influx):
    """influxd's own continuous queries, not `rollup run`, write the hourly and daily
    rollups of the open hour and day (resampled every second here; production: minutes),
    at the site's local buckets (UTC+5:30: hours at :30, days at 18:30 UTC), and fold in
    readings that arrive after a first rollup."""
    retention = RetentionSettings(hourly_every="1s", daily_every="1s", utc_offset_h=5.5)
    rng = np.random.default_rng(5)
    now = time.time()
    buckets = {}
    for interval, (size, _) in schema.INTERVALS.items():
        shift = schema.offset_s(size, retention.utc_offset_h)
        buckets[interval] = (size, int((now - shift) // size * size + shift))
    hour, day = buckets["1h"][1], buckets["1d"][1]
    # Every minute of the open hour, and other minutes of the open day, past or future (the
    # daily query covers the whole day; if the hour or day closes meanwhile, the queries
    # still cover it: they recompute the bucket before the open one too).
    times = [hour + 60 * i for i in range(60)]
    times += sorted({day + 60 * int(m) for m in rng.integers(0, 1440, 40)} - set(times))
    raw: dict[tuple[str, str, str], list[tuple[int, dict, bool]]] = defaultdict(list)
    lines: tuple[list[str], list[str]] = ([], [])
    """Written first, and late (every other minute)."""
    for elder in ("e1", "e2"):
        tags = f"site=s,elder={elder},device=w-{elder},kind=wearable"
        for i, t in enumerate(times):
            late = i % 2 == 1
            fields = {
                "mag_std": float(rng.uniform(0, 0.1)),
                "steps": int(rng.integers(0, 4)),
                "hr": int(rng.integers(55, 95)) if rng.random() < 0.8 else None,
                "spo2": int(rng.integers(90, 100)) if rng.random() < 0.5 else None,
            }
            raw[("wearable", elder, "")].append((t, fields, late))
            lines[late].append(line("wearable", tags, fields, t * 1000))
            fields = {
                "presence": bool(rng.random() < 0.6),
                "hr": int(rng.integers(50, 80)),
                "br": round(float(rng.uniform(10, 20)), 2) if rng.random() < 0.7 else None,
                "movement": float(rng.uniform(0, 1)),
            }
            raw[("bed", elder, "")].append((t, fields, late))
            bed_tags = tags.replace("wearable", "bed")
            lines[late].append(line("bed", bed_tags, fields, t * 1000 + 500))
            if rng.random() < 0.3:
                role = str(rng.choice(["front", "fridge"]))
                fields = {"opened": bool(rng.random() < 0.5), "seq": i}
                raw[("door", elder, role)].append((t, fields, late))
                door_tags = f"{tags.replace('wearable', 'door')},door=d-{role},role={role}"
                lines[late].append(line("door", door_tags, fields, t * 1000 + 700))

    def expected(with_late: bool) -> dict[tuple, float]:
        out = {}
        for (source, elder, role), points in raw.items():
            for rollup in (r for r in schema.ROLLUPS if r.source.name == source):
                for interval, (size, start) in buckets.items():
                    mine = [
                        f for t, f, late in points
                        if start <= t < start + size and (with_late or not late)
                    ]  # fmt: skip
                    key = (rollup.target.at(interval), elder, role or None, start * 1000)
                    for name, value in _aggregate(mine, rollup).items():
                        out[(*key, name)] = value
        return out

    first, full = expected(False), expected(True)
    assert full[("door_1d", "e1", "front", day * 1000, "opens")] > 0
    assert 0 < full[("wearable_1h", "e2", None, hour * 1000, "active_s")] < 60
    assert len(full) > 60
    assert first.keys() <= full.keys()
    assert sum(first[k] != full[k] for k in first) > len(full) / 2

    def written(want: dict[tuple, float]) -> dict[tuple, float]:
        got = {}
        for measurement in {k[0] for k in want}:
            for r in db.rows(f"SELECT * FROM {HISTORY}.{measurement} GROUP BY *"):
                key = (measurement, r["elder"], r.get("role"), r["time"])
                for name, value in r.items():
                    if (*key, name) in want and value is not None:
                        got[(*key, name)] = value
        return got

    with InfluxClient(InfluxSettings(url=influx.url, database="cq")) as db:
        with pytest.raises(rollups.RollupError, match="at least every 1h"):
            rollups.install(db, RetentionSettings(hourly_every="90m"))
        refused_before = [v for s in db.query("SHOW DATABASES") for v in s.get("values") or []]
        assert refused_before == []  # nothing created on the server
        rollups.install(db, retention)
        for batch, want in zip(lines, (first, full), strict=True):
            db.write(batch)
            deadline = time.monotonic() + 10
            while written(want) != pytest.approx(want, rel=1e-9) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert written(want) == pytest.approx(want, rel=1e-9)

"""Proactive care against a real influxd: the signs read from daily rollups, the care
dashboard's every panel query on the monthly points, and erasure of visit records."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import numpy as np
import pytest
from care_site import make_register, registry
from test_dashboards import render, targets

from care.policy import VisitPolicy
from care.register import register_path
from care.report import month_bounds, month_report, write_points
from care.rollups import read_days, week_alerts, window
from care.service import refresh_signs
from care.signs import WINDOW_DAYS, assess
from dashboards.boards import CARE_UID
from dashboards.publish import build
from device_sim.decline import BED_HR, FIGURES, FRONT_OPENS, simulate_days
from harness.servers import LocalInflux
from homecare.contract import DoorRole
from homecare.influx import InfluxClient, line
from homecare.schema import HISTORY, Alert, BedRollup, Door, DoorRollup, Sleep, WearableRollup
from homecare.settings import InfluxSettings, RetentionSettings, Settings
from ingest import rollups

SITE = "north"
WHERE = {
    WearableRollup.steps: (WearableRollup.at("1d"), WearableRollup.steps, {}),
    WearableRollup.active_s: (WearableRollup.at("1d"), WearableRollup.active_s, {}),
    WearableRollup.worn_s: (WearableRollup.at("1d"), WearableRollup.worn_s, {}),
    Sleep.exits: (Sleep.name, Sleep.exits, {}),
    Sleep.in_bed_s: (Sleep.name, Sleep.in_bed_s, {}),
    Sleep.covered_s: (Sleep.name, Sleep.covered_s, {}),
    BED_HR: (BedRollup.at("1d"), BedRollup.hr_mean, {}),
    FRONT_OPENS: (DoorRollup.at("1d"), DoorRollup.opens, {Door.role: DoorRole.FRONT.value}),
}
"""Where each simulated daily figure is stored: measurement, field, extra tags."""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LocalInflux]:
    with LocalInflux(tmp_path_factory.mktemp("care") / "influxd") as influxd:
        yield influxd


@pytest.fixture
def db(server, request) -> Iterator[InfluxClient]:
    name = "care_" + request.node.name[5:30].replace("-", "_")
    with InfluxClient(InfluxSettings(url=server.url, database=name)) as client:
        rollups.install(client, RetentionSettings())
        yield client


def _write_days(db: InfluxClient, figures: dict[str, np.ndarray], elders: list[str],
                start: float) -> None:  # fmt: skip
    """The simulated figures as the daily rollups would hold them (no point: no data; a
    day without a front-door opening has no door point)."""
    points: dict[tuple[str, str, str, int], dict[str, float | int]] = {}
    for name in FIGURES:
        measurement, fld, tags = WHERE[name]
        values = figures[name]
        for i, elder in enumerate(elders):
            for d in range(values.shape[1]):
                v = values[i, d]
                if not math.isfinite(v) or (name == FRONT_OPENS and v == 0):
                    continue
                key = (measurement, elder, json.dumps(tags), d)
                points.setdefault(key, {})[fld] = int(v) if name == FRONT_OPENS else float(v)
    lines = []
    for (measurement, elder, tags, d), fields in points.items():
        every = {"site": SITE, "elder": elder, **json.loads(tags)}
        tagset = ",".join(f"{k}={v}" for k, v in sorted(every.items()))
        lines.append(line(measurement, tagset, fields, int((start + d * 86400) * 1000)))
    db.write(lines, rp=HISTORY)


def test_signs_are_read_from_the_daily_rollups(db, tmp_path, wall_clock):
    cohort = simulate_days(elders=8, days=WINDOW_DAYS, seed=3, mix={"sudden_change": 0.25},
                           first_onset=WINDOW_DAYS - 6)  # fmt: skip
    elders = [f"e{i}" for i in range(8)]
    start, _ = window(wall_clock, 0.0)
    _write_days(db, cohort.figures, elders, start)
    days = read_days(db, SITE, [*elders, "nobody"], now=wall_clock, days=WINDOW_DAYS)
    assert days.start == start
    for name in FIGURES:  # what was stored comes back, day by day, elder by elder
        np.testing.assert_allclose(days.figures[name][:8], cohort.figures[name], rtol=1e-9)
        assert np.isnan(days.figures[name][8]).all()
    in_hospital = {elders[lb.elder] for lb in cohort.labels if lb.name == "sudden_change"}
    assert len(in_hospital) == 2
    reg = make_register(tmp_path / "care.db", time.time())
    reg_file = registry()
    try:
        found = assess(days)
        assert in_hospital <= found.flagged()
        # and through the service, for the elders of the registry's site
        result, _ = refresh_signs(db, reg, reg_file, SITE, now=wall_clock)
        assert result.elders == ("anna", "ben", "carl")
        assert reg.signs(SITE) == {}  # none of the registry's elders has figures here
    finally:
        reg.close()


def test_the_weeks_alerts_by_elder_and_kind(db):
    now = time.time()  # alerts are raw points: influxd keeps them 30 days of its own clock
    start, _ = window(now, 0.0, 7)
    lines = [
        line(Alert.name, f"elder=anna,kind=fall,severity=critical,site={SITE}",
             {Alert.id: f"a{i}", Alert.state: "resolved"}, int((start + 3600 * (i + 1)) * 1000))
        for i in range(2)
    ] + [line(Alert.name, f"elder=ben,kind=sos,severity=critical,site={SITE}",
              {Alert.id: "b1", Alert.state: "open"}, int((start - 86400) * 1000))]  # fmt: skip
    db.write(lines)
    assert week_alerts(db, SITE, now=now) == {"anna": {"fall": 2}}  # Ben's was the week before


def test_every_care_panel_query_returns_the_months_figures(db, tmp_path, wall_clock, travel):
    reg = make_register(tmp_path / "care.db", wall_clock)
    try:
        start, _, month = month_bounds(None, wall_clock)
        reg.record(site=SITE, elder="anna", worker="maria", kind="visit", outcome="concern",
                   follow_up=True, at=start + 60)  # fmt: skip
        reg.record(site=SITE, elder="ben", worker="maria", kind="call", outcome="all_well",
                   at=start + 120)  # fmt: skip
        report = month_report(reg, registry(), VisitPolicy(), month=month, now=wall_clock)
        assert write_points(db, report) > 0
    finally:
        reg.close()
    # The falls panel counts the alert copies that `homecare rollup run` keeps in history.
    db.write([line(Alert.name, f"elder=anna,kind={kind},severity=critical,site={SITE}",
                   {Alert.id: f"f{i}", Alert.state: "resolved"}, int((start + 600 * i) * 1000))
              for i, kind in enumerate(("fall", "fall_recovered"))], rp=HISTORY)  # fmt: skip
    dash = json.loads(build()[CARE_UID])
    end_ms = int(wall_clock * 1000) + 60_000
    start_ms = end_ms - 365 * 86400_000
    seen = {}
    for title, target, _ in targets(dash):
        q = render(target["query"], start_ms=start_ms, end_ms=end_ms, variables={"site": SITE})
        series = db.query(q)
        assert series, f"{title}: no data for {q}"
        seen[title] = series
    rates = {s["tags"]["care_group"]: dict(zip(s["columns"], s["values"][-1], strict=True))
             for s in seen["Visit rate by group, latest month"]}  # fmt: skip
    assert rates["alone_high_need"]["rate_pct"] == 100.0
    carl_called = start <= wall_clock - 2 * 86400  # make_register: two days before
    assert rates["everyone"]["elders_contacted"] == 1 + carl_called
    assert rates["everyone"]["elders_in_group"] == 2
    [workers] = seen["Visits per worker, latest month"]
    assert workers["tags"]["worker"] == "maria"
    assert workers["values"][-1][1] == 1  # one visit (and a call or two)
    [follow] = seen["Open follow-ups"]
    assert follow["values"][-1][1] == 1
    nobody = render(dash["panels"][0]["targets"][0]["query"], start_ms=start_ms,
                    end_ms=end_ms, variables={"site": "south-west"})  # fmt: skip
    assert db.query(nobody) == []


def test_forget_erases_the_elders_visit_records(server, tmp_path, wall_clock):
    from privacy.forget import forget

    settings = Settings(_env_file=None, state_dir=tmp_path / "state",  # type: ignore[call-arg]
                        influx=InfluxSettings(url=server.url, database="forget"))  # fmt: skip
    with InfluxClient(settings.influx) as client:
        client.create_database()
    reg = make_register(register_path(settings.state_dir), time.time())
    reg.record(site=SITE, elder="anna", worker="maria", kind="visit", outcome="concern",
               notes="a secret about anna", follow_up=True)  # fmt: skip
    reg.close()
    report = forget(settings, "anna")
    assert report.care == {"contacts": 2, "signs": 0, "notices": 0}
    data = b"".join(p.read_bytes() for p in settings.state_dir.glob("care.db*"))
    assert b"a secret about anna" not in data
    from care.register import Register

    kept = Register(register_path(settings.state_dir))
    try:
        assert kept.history(SITE, "anna") == []
        assert [c.elder for c in kept.history(SITE, "carl")] == ["carl"]
        assert "ben" in kept.signs(SITE)
    finally:
        kept.close()

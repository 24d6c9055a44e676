"""Every dashboard query, with Grafana's macros substituted, against a real influxd holding
a simulated week of three elders (tests/week.py) and its rollups (ingest/rollups.py).

Grafana is not run here: what is checked is what Grafana would send to InfluxDB — each
panel target, template-variable query and annotation query — and what comes back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from week import Gap, rolled_up, write_week

from dashboards.boards import ELDER_UID, SITE_UID
from dashboards.publish import build
from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings

BUILT = {uid: json.loads(text) for uid, text in build().items()}
INTERVALS = [("1m", 60), ("5m", 300), ("10m", 600), ("30m", 1800), ("1h", 3600), ("3h", 10800),
             ("12h", 43200), ("1d", 86400)]  # fmt: skip
SPAN = {"m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> int:
    """``30d`` → seconds."""
    return int(text[:-1]) * SPAN[text[-1]]


def grafana_interval(span_s: float, max_points: int = 1000) -> str:
    """``$__interval`` as Grafana picks it: the range over the points, rounded up."""
    return next((name for name, s in INTERVALS if s >= span_s / max_points), "1d")


def render(query: str, *, start_ms: int, end_ms: int, variables: dict[str, str]) -> str:
    """The query text Grafana sends: its time macros and the variables substituted, viewed
    at ``end_ms``: influxd's ``now()`` is that moment too (the week is stored up to a week
    before the real now, with the content of the week that ends at the tests' clock)."""
    q = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    q = q.replace("now()", f"{end_ms}ms")
    q = q.replace("${__from}", str(start_ms)).replace("${__to}", str(end_ms))
    q = q.replace("$__interval", grafana_interval((end_ms - start_ms) / 1000))
    for name, value in variables.items():
        q = q.replace(f"${{{name}}}", value).replace(f"${name}", value)
    left = re.findall(r"\$\{?\w+", q)
    assert not left, f"unsubstituted {left} in {q}"
    return q


def targets(dash: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(panel title, InfluxDB target, the panel's relative time) of every panel."""
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == "influxdb":
                yield panel["title"], target, panel.get("timeFrom")


@pytest.fixture(scope="module")
def db(week_influx):
    server, week = week_influx
    with rolled_up(server, week, "dashboards") as client:
        yield client, week


def _run(client: InfluxClient, dash: dict[str, Any], variables: dict[str, str], end_ms: int
         ) -> list[tuple[str, dict[str, Any], list[dict[str, Any]], int]]:  # fmt: skip
    """Every target's series, with the start of the range it ran over."""
    default = dash["time"]["from"].removeprefix("now-")
    out = []
    for title, target, time_from in targets(dash):
        start_ms = end_ms - 1000 * _seconds(time_from or default)
        q = render(target["query"], start_ms=start_ms, end_ms=end_ms, variables=variables)
        out.append((f"{title} {target['refId']}", target, client.query(q), start_ms))
    return out


def _values(series: list[dict[str, Any]], column: int = 1) -> list[Any]:
    return [row[column] for s in series for row in s["values"] if row[column] is not None]


def _check_shape(name: str, target: dict[str, Any], series: list[dict[str, Any]],
                 start_ms: int, end_ms: int) -> None:  # fmt: skip
    """Non-empty, inside the range, grouped as the query says, named as it says."""
    query = target["query"]
    assert series, f"{name}: no data for {query}"
    assert _values(series), f"{name}: only nulls for {query}"
    grouped = re.search(r"GROUP BY (.*?)(?: fill\(|$)", query.rsplit(")", 1)[-1] if
                        query.count("FROM (") else query)  # fmt: skip
    tags = re.findall(r'"(\w+)"', grouped.group(1)) if grouped else []
    aliases = re.findall(r'AS "([^"]+)"', query.split(" FROM ")[0])
    for s in series:
        assert set(tags) <= set(s.get("tags") or {}), (name, tags, s.get("tags"))
        for alias in aliases:
            assert alias in s["columns"], (name, alias, s["columns"])
        if "GROUP BY time(" in query or query.startswith('SELECT "'):  # times of readings
            times = [row[0] for row in s["values"]]
            # daily buckets (offset ones for the heatmap) start up to two days early; the
            # baseline band reads 7 days more
            lookback = (9 if "ms - 7d" in query else 2) * 86400_000
            assert all(start_ms - lookback <= t <= end_ms for t in times if t), (name, times[:3])
    if re.search(r"GROUP BY time\(\$__interval\).* fill\((null|0)\)", query):
        assert max(len(s["values"]) for s in series) >= 2, f"{name}: a single point"


def test_every_elder_panel_returns_that_elders_data(db):
    # Whatever the hour and day the week ends at: scripts/test.sh reruns this at fixed
    # instants (--clock); daily buckets at both ends of the range are partial, and how
    # partial depends on the hour.
    client, week = db
    dash = BUILT[ELDER_UID]
    end_ms = int(week.end * 1000) + 60_000
    for elder in week.elders:
        results = _run(client, dash, {"site": week.site, "elder": elder}, end_ms)
        assert len(results) >= 30  # 24 of them draw the activity heatmap
        for name, target, series, start_ms in results:
            _check_shape(name, target, series, start_ms, end_ms)
            for s in series:
                assert (s.get("tags") or {}).get("elder", elder) == elder
        nobody = _run(client, dash, {"site": week.site, "elder": week.absent}, end_ms)
        assert [name for name, _, series, _ in nobody if series] == []


def test_heatmap_has_a_row_per_hour_of_day_with_daily_columns(db):
    client, week = db
    dash = BUILT[ELDER_UID]
    end_ms = int(week.end * 1000) + 60_000
    results = _run(client, dash, {"site": week.site, "elder": week.elders[0]}, end_ms)
    hours = {}
    for _, target, series, _ in results:
        if target["refId"].startswith("H"):
            [s] = series
            hours[s["columns"][1]] = s["values"]
            assert all(t % 86400_000 == 0 for t, _ in s["values"])  # midnights: one per day
    assert sorted(hours) == [f"{h:02d}" for h in range(24)]
    minutes = [v for values in hours.values() for _, v in values if v is not None]
    assert min(minutes) >= 0
    assert max(minutes) <= 60
    night, afternoon = sum(v or 0 for _, v in hours["03"]), sum(v or 0 for _, v in hours["15"])
    assert afternoon > night  # the simulated elders sleep at 3 am


def test_site_board_shows_who_needs_attention(db):
    client, week = db
    dash = BUILT[SITE_UID]
    end_ms = int(week.end * 1000) + 60_000
    results = {name: (target, series, start)
               for name, target, series, start in _run(client, dash, {"site": week.site}, end_ms)}
    for name, (target, series, start) in results.items():
        _check_shape(name, target, series, start, end_ms)
    open_alerts = {s["tags"]["elder"]: s["values"][0][1] for s in results["Elders B"][1]}
    expected = {}
    for alert in week.alerts:
        if alert.state in ("open", "notified", "acknowledged"):
            expected[alert.elder] = expected.get(alert.elder, 0) + 1
    assert open_alerts == expected
    offline = {s["tags"]["elder"]: s["values"][0][1] for s in results["Elders C"][1]}
    assert offline == {week.elders[-1]: 1}
    active = {s["tags"]["elder"] for s in results["Elders A"][1]}
    assert active == set(week.elders)
    elsewhere = _run(client, dash, {"site": "elsewhere"}, end_ms)
    assert [name for name, _, series, _ in elsewhere if series] == []


def test_alerts_board_time_to_acknowledge_and_outcomes(db):
    client, week = db
    dash = BUILT["homecare-alerts"]
    end_ms = int(week.end * 1000) + 60_000
    results = {name: series for name, target, series, start in
               _run(client, dash, {"site": week.site}, end_ms)}  # fmt: skip
    for name, series in results.items():
        assert series, name
    began = {row[1]: row[0] for s in results["Time to acknowledge A"] for row in s["values"]}
    acked = {row[1]: row[0] for s in results["Time to acknowledge B"] for row in s["values"]}
    assert set(acked) <= set(began)  # the join by id finds each acknowledged alert
    delays = sorted((acked[i] - began[i]) / 1000 for i in acked)
    assert delays == pytest.approx(sorted(week.acks))
    outcomes = {s["columns"][1]: s["values"][0][1] for name, series in results.items()
                if name.startswith("Outcomes") for s in series}  # fmt: skip
    assert outcomes == {k.replace("_", " "): n for k, n in week.outcomes.items()}
    [false_alarms] = _values(results["False-alarm share A"])
    [resolved] = _values(results["False-alarm share B"])
    assert (false_alarms, resolved) == (week.outcomes["false_alarm"], week.outcomes.total())
    kinds = {s["tags"]["kind"] for s in results["Alerts by kind A"]}
    assert kinds == {a.kind for a in week.alerts}


def test_fleet_board(db):
    client, week = db
    dash = BUILT["homecare-fleet"]
    end_ms = int(week.end * 1000) + 60_000
    results = {name: (target, series, start)
               for name, target, series, start in _run(client, dash, {"site": week.site}, end_ms)}
    for name, (target, series, start) in results.items():
        _check_shape(name, target, series, start, end_ms)
    devices = 3 * len(week.elders)
    [online] = _values(results["Devices online / offline A"][1])
    [offline] = _values(results["Devices online / offline B"][1])
    assert (online, offline) == (devices - 1, 1)
    firmware = {tuple(row[1:]) for s in results["Firmware versions A"][1] for row in s["values"]}
    assert len(firmware) == 3  # three models, one firmware each
    reasons = {s["tags"]["reason"] for s in results["Dead letters by reason A"][1]}
    assert reasons == {"not_json", "out_of_range", "schema", "id_mismatch"}
    [security] = results["Security events per device A"][1]
    assert security["tags"]["device"] == week.offline_device


@pytest.mark.parametrize("uid", sorted(BUILT))
def test_variables_and_annotations_run(db, uid):
    client, week = db
    dash = BUILT[uid]
    end_ms = int(week.end * 1000) + 60_000
    variables = {"site": week.site, "elder": week.elders[0]}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        values = _values(client.query(render(var["query"], start_ms=0, end_ms=end_ms,
                                             variables=variables)))  # fmt: skip
        assert values == {"site": [week.site], "elder": list(week.elders)}[var["name"]]
    for anno in dash.get("annotations", {}).get("list", []):
        start_ms = end_ms - 1000 * _seconds(dash["time"]["from"].removeprefix("now-"))
        series = client.query(render(anno["target"]["query"], start_ms=start_ms, end_ms=end_ms,
                                     variables=variables))  # fmt: skip
        mine = [a for a in week.alerts if a.elder == week.elders[0]]
        assert len(_values(series)) == len(mine)
        columns = series[0]["columns"]
        assert anno["target"]["textColumn"] in columns
        assert set(anno["target"]["tagsColumn"].split(",")) <= set(columns)


def test_a_gap_in_the_week_holds_nothing_of_that_elder(influx, wall_clock):
    with InfluxClient(InfluxSettings(url=influx.url, database="gap")) as client:
        client.create_database()
        week = write_week(client, elders=2, days=2, gap=Gap(0.5, 1.5, ("e0002",)), end=wall_clock)
        lo, hi = int((week.start + 0.5 * 86400) * 1000), int((week.start + 1.5 * 86400) * 1000)
        inside = f"time >= {lo}ms AND time < {hi}ms"
        for measurement in ("wearable", "bed", "device_status"):
            counts = {s["tags"]["elder"]: s["values"][0][1] for s in client.query(
                f'SELECT count(*) FROM "{measurement}" WHERE {inside} GROUP BY "elder"')}
            assert set(counts) == {"e0001"}, measurement
            after = client.query(f"SELECT count(*) FROM \"{measurement}\" WHERE "
                                 f"\"elder\" = 'e0002' AND time >= {hi}ms")
            assert after, measurement  # the elder comes back after the gap
        assert client.query(f"SELECT * FROM \"wearable\" WHERE \"elder\" = '{week.absent}'") == []


def test_falls_per_elder_per_month(db):
    """The care board counts each elder's falls from the alert history, critical and
    recovered apart (tests/week.py: two critical falls and one got up from)."""
    client, week = db
    dash = BUILT["homecare-care"]
    end_ms = int(week.end * 1000) + 60_000
    [(name, target, series, start)] = [
        r for r in _run(client, dash, {"site": week.site}, end_ms) if r[0].startswith("Falls per")
    ]
    _check_shape(name, target, series, start, end_ms)
    counted = {(s["tags"]["elder"], s["tags"]["kind"]): sum(_values([s])) for s in series}
    expected: dict[tuple[str, str], int] = {}
    for a in week.alerts:
        if a.kind in ("fall", "fall_recovered"):
            expected[(a.elder, a.kind)] = expected.get((a.elder, a.kind), 0) + 1
    assert counted == expected
    assert any(kind == "fall_recovered" for _, kind in counted)

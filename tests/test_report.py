"""The weekly picture against a real influxd holding simulated weeks (tests/week.py): a full
week, a week with a gap, an elder without data, and the rollups read in place of raw data."""

from __future__ import annotations

import statistics
import struct
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner
from week import Gap, rolled_up, write_week

from cli.main import app
from dashboards import report
from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings

DAY = 86400


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _report(server, database: str, elder: str, end: float, out) -> tuple:
    env = {"HOMECARE_INFLUX__URL": server.url, "HOMECARE_INFLUX__DATABASE": database}
    iso = datetime.fromtimestamp(end, UTC).isoformat()
    result = CliRunner().invoke(
        app, ["report", elder, "--days", "7", "--out", str(out), "--end", iso], env=env
    )
    assert result.exit_code == 0, result.output
    [png] = out.glob(f"{elder}-*.png")
    [page] = out.glob(f"{elder}-*.html")
    return result, png, page.read_text()


def test_a_full_week(week_influx, tmp_path):
    server, week = week_influx
    elder = week.elders[0]
    _, png, page = _report(server, "homecare", elder, week.end, tmp_path)
    assert _png_size(png) == (909, 1285)  # one A4 page at 110 dpi
    with InfluxClient(InfluxSettings(url=server.url, database="homecare")) as db:
        picture = report.gather(db, elder, end=week.end)
        lo, hi = picture.days[0].start, picture.days[-1].start + DAY
        front = db.rows(
            f"SELECT count(seq) FROM door WHERE elder = '{elder}' AND role = 'front' AND "
            f"opened = true AND time >= {int(lo * 1000)}ms AND time < {int(hi * 1000)}ms"
        )
    assert all(d.has_data for d in picture.days[1:])
    assert f"Front door: opened {front[0]['count']} times" in page
    for words in ("steps on a typical day", "Sleep: about", "Heart rate:", "<img"):
        assert words in page
    # The elder's alerts of the week, as tests/week.py wrote them: SOS answered and
    # handled at home, a fall cancelled by "I'm OK", a night bed exit ended by a visit.
    rows = report.alert_rows(picture)
    theirs = sorted((a for a in week.alerts if a.elder == elder), key=lambda a: a.ts)
    assert [what for _, what, _ in rows] == [report.KINDS[a.kind] for a in theirs]
    assert {"sos", "fall", "bed_exit"} <= {a.kind for a in theirs}
    done = {a.kind: row[2] for a, row in zip(theirs, rows, strict=True)}
    assert "handled at home" in done["sos"]
    assert "I'm OK" in done["fall"]
    assert "I'm OK" in rows[1][2]
    assert "Answered in 42 seconds by the call centre; handled at home." in page


def test_the_report_reads_rollups_where_they_exist(week_influx):
    server, week = week_influx
    with (
        InfluxClient(InfluxSettings(url=server.url, database="homecare")) as raw,
        rolled_up(server, week, "report") as db,
    ):
        for elder in week.elders:
            assert report.gather(db, elder, end=week.end) == report.gather(raw, elder, end=week.end)
        # Without the raw readings, the days and nights come from the rollups alone.
        db.query("DROP MEASUREMENT wearable; DROP MEASUREMENT bed; DROP MEASUREMENT door")
        elder = week.elders[1]
        picture = report.gather(db, elder, end=week.end)
        assert picture.days == report.gather(raw, elder, end=week.end).days
        assert sum(d.steps is not None and d.in_bed_h is not None for d in picture.days) >= 6


def test_a_week_with_a_gap(week_influx, wall_clock, tmp_path):
    server, _ = week_influx
    with InfluxClient(InfluxSettings(url=server.url, database="gap")) as db:
        db.create_database()
        week = write_week(db, elders=2, gap=Gap(2, 4, ("e0002",)), end=wall_clock)
        picture = report.gather(db, "e0002", end=week.end)
    missing = [picture.day_label(d) for d in picture.days if not d.has_data]
    assert missing  # at least the whole day inside the gap
    _, png, page = _report(server, "gap", "e0002", week.end, tmp_path)
    assert f"No readings on {missing[0]}" in page
    assert _png_size(png) == (909, 1285)


def test_an_elder_without_data_gets_a_clear_page(week_influx, tmp_path):
    server, week = week_influx
    result, png, page = _report(server, "homecare", week.absent, week.end, tmp_path)
    assert "no readings" in result.output
    assert f"We received no readings for {week.absent}" in page
    assert "<img" not in page
    assert _png_size(png) == (909, 1285)


@pytest.mark.parametrize("elder", ["e1' OR elder = 'e2", ""])
def test_a_bad_elder_id_is_refused(week_influx, tmp_path, elder):
    server, _ = week_influx
    env = {"HOMECARE_INFLUX__URL": server.url}
    result = CliRunner().invoke(app, ["report", elder, "--out", str(tmp_path)], env=env)
    assert result.exit_code != 0
    assert "not an elder id" in result.output
    assert not list(tmp_path.iterdir())


def test_their_usual_comes_from_the_weeks_before(week_influx, monkeypatch):
    server, week = week_influx
    monkeypatch.setattr(report, "MIN_USUAL_DAYS", 3)  # the simulated history is one week
    elder = week.elders[0]
    with InfluxClient(InfluxSettings(url=server.url, database="homecare")) as db:
        picture = report.gather(db, elder, days=2, end=week.end)
        lo = picture.days[0].start
        earlier = db.rows(
            f"SELECT sum(steps) FROM wearable WHERE elder = '{elder}' AND "
            f"time >= {int(lo - 28 * DAY) * 1000}ms AND time < {int(lo) * 1000}ms "
            "GROUP BY time(1d) fill(none)"
        )
    assert picture.usual_from_history
    assert picture.usual["steps"] == statistics.median(r["sum"] for r in earlier)
    words = " ".join(report.sentences(picture))
    assert "usual" in words
    assert "no earlier weeks" not in words


def test_falls_got_up_from_are_in_the_week(week_influx):
    """A fall the elder got up from (tests/week.py: the second elder's) is counted and listed
    in words; a fall cancelled with "I'm OK" is listed but not counted."""
    server, week = week_influx
    with InfluxClient(InfluxSettings(url=server.url, database="homecare")) as db:
        second = report.gather(db, week.elders[1], end=week.end)
        first = report.gather(db, week.elders[0], end=week.end)
    words = " ".join(report.sentences(second))
    assert "Falls: 1 this week (1 got up again without help)." in words
    assert "A fall, got up again" in [what for _, what, _ in report.alert_rows(second)]
    assert "Falls:" not in " ".join(report.sentences(first))

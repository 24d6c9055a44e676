"""Personal baselines from three weeks of synthetic history in a real influxd.

Three elders, written straight into InfluxDB as line protocol, one point per minute:
``nap`` is still 13:00-16:00 every afternoon, trips to the toilet for ~5 min at night and
gets up at ~06:30; ``busy`` is never still for long (an evening by the door: still wearable,
door events every 20 min), trips for ~25 min and gets up at ~09:00; ``new`` has three hours
of data. The queries are the production ones (per-minute aggregates, chunks of elders).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detectors.base import Roster
from detectors.baselines import (
    BaselineFile,
    fit_baselines,
    history_from_influx,
    load_baselines,
    load_history,
    read_baselines,
    refit,
    save_baselines,
    save_history,
)
from detectors.bed_exit import BedExitDetector
from detectors.care import CARE_TABLE, Care
from detectors.inactivity import InactivityDetector
from detectors.morning import MorningDetector
from detectors.service import Detect
from harness.servers import LocalInflux
from homecare.influx import InfluxClient, line
from homecare.settings import InfluxSettings, Settings

H = 3600.0
DAY = 86400.0
DAYS = 21
END = 19_700 * DAY  # a midnight, UTC
START = END - DAYS * DAY
L2 = CARE_TABLE[2]  # the default care level


def elder_minutes(name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-minute state of one elder over the history: in bed, moving, steps, door events."""
    t = np.arange(START, END, 60.0)
    day = ((t - START) // DAY).astype(int)
    hour = (t % DAY) / H
    n_days = DAYS
    if name == "nap":
        wake = 6.5 + rng.uniform(-0.25, 0.25, n_days)
        bedtime, trip_min = 22.0, rng.integers(4, 7, n_days)
        still = [(13.0 + rng.uniform(-0.15, 0.15, n_days), 3.0)]
    else:
        wake = 9.0 + rng.uniform(-0.25, 0.25, n_days)
        bedtime, trip_min = 23.5, rng.integers(21, 30, n_days)
        still = [(np.full(n_days, 14.0), 0.5), (np.full(n_days, 18.0), 3.0)]
    trip_at = 2.5 + rng.uniform(-0.5, 0.5, n_days)
    trip_at = np.round(trip_at * 60) / 60  # whole minutes
    in_bed = (hour < wake[day]) | (hour >= bedtime)
    on_trip = (hour >= trip_at[day]) & (hour < trip_at[day] + trip_min[day] / 60)
    in_bed &= ~on_trip
    moving = ~in_bed & ~on_trip
    for start, length in still:
        moving &= ~((hour >= start[day]) & (hour < start[day] + length))
    door = np.zeros(len(t), bool)
    if name == "busy":  # the evening by the door: a door event every 20 minutes
        door = (hour >= 18.0) & (hour < 21.0) & (np.round(hour * 60) % 20 == 5)
    return {"t": t, "in_bed": in_bed, "moving": moving, "door": door}


def lines_for(name: str, m: dict[str, np.ndarray]) -> list[str]:
    tags = f"site=s,elder={name},device={name}-"
    out: list[str] = []
    for t, in_bed, moving, door in zip(
        m["t"].tolist(),
        m["in_bed"].tolist(),
        m["moving"].tolist(),
        m["door"].tolist(),
        strict=True,
    ):
        ms = int(t * 1000)
        std = 0.05 if moving else 0.002
        out.append(
            f"wearable,{tags}w,kind=wearable mag_mean=1.0,mag_std={std},mag_peak=1.1,"
            f"mag_min=0.9,rate=25i,steps={2 if moving else 0}i {ms + 17_000}"
        )
        fields = {"presence": in_bed, "movement": 0.2}
        out.append(line("bed", f"{tags}b,kind=bed", fields, ms + 5_000))
        if door:
            door_tags = f"{tags}d,kind=door,door=front,role=front"
            out.append(line("door", door_tags, {"opened": True, "seq": 1}, ms + 30_000))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """influxd holding the three elders' history; yields (url, per-elder minutes)."""
    rng = np.random.default_rng(7)
    minutes = {name: elder_minutes(name, rng) for name in ("nap", "busy")}
    with LocalInflux(tmp_path_factory.mktemp("influxd")) as server:
        settings = InfluxSettings(url=server.url, database="homecare")
        with InfluxClient(settings) as db:
            db.create_database()
            for name, m in minutes.items():
                lines = lines_for(name, m)
                for i in range(0, len(lines), 50_000):
                    db.write(lines[i : i + 50_000])
            # a new elder: three hours of movement on the last day, nothing else
            db.write(
                [
                    f"wearable,site=s,elder=new,device=new-w,kind=wearable mag_std=0.05,"
                    f"steps=1i,rate=25i {int(t * 1000)}"
                    for t in np.arange(END - 14 * H, END - 11 * H, 60.0)
                ]
            )
        yield settings, minutes


def fitted(history, roster: Roster | None = None):
    care = Care()
    detectors = [InactivityDetector(care=care), BedExitDetector(care=care),
                 MorningDetector(care=care)]  # fmt: skip
    roster = roster or Roster()
    learned = fit_baselines(history, detectors, care, roster)
    return care, detectors, roster, learned


def limits(detectors, care: Care, roster: Roster, elders: list[str]) -> dict[str, np.ndarray]:
    inactivity, bed_exit, morning = detectors
    rows = roster.rows(elders)
    return {
        "inactivity": np.array([inactivity.limit_s(rows, END + h * H) for h in range(24)]).T,
        "bed_exit": bed_exit.limit_s(rows),
        "wake": morning.limit_s(rows),
        "sleep_end": care.sleep_end_s[rows].astype(float),
    }


@pytest.fixture(scope="module")
def history(world):
    settings, _ = world
    with InfluxClient(settings) as db:
        return history_from_influx(db, days=DAYS, end=END, chunk=2)


def test_query_reads_per_minute_aggregates_in_chunks(world, history) -> None:
    _, minutes = world
    assert sorted(history.elders) == ["busy", "nap", "new"]
    assert history.queries == 1 + 2  # SHOW TAG VALUES, then 2 chunks of at most 2 elders
    assert (history.start, history.end) == (START, END)
    wear = history.batch("wearable")
    # only minutes with a sign travel, one row per minute
    assert (wear.column("mag_std") >= 0.02).all()
    for name, m in minutes.items():
        row = history.elders.index(name)
        assert (wear.rows == row).sum() == m["moving"].sum()
        bed = history.batch("bed")
        mine = bed.rows == row
        assert mine.sum() == len(m["t"])  # one bed state per minute
        assert (bed.column("presence")[mine] > 0.5).sum() == m["in_bed"].sum()
        door = history.batch("door")
        assert (door.rows == row).sum() == m["door"].sum()
    assert history.rows_read == sum(len(b) for b in history.batches.values())
    # the cheap path: far fewer rows than the per-minute points stored
    assert history.rows_read < 0.8 * sum(2 * len(m["t"]) for m in minutes.values())


def test_learned_limits_differ_per_elder_within_care_bounds(history) -> None:
    care, detectors, roster, learned = fitted(history)
    got = limits(detectors, care, roster, ["nap", "busy", "new", "unknown"])
    inact = got["inactivity"]
    assert np.all((inact >= L2.inactivity_min_s) & (inact <= L2.inactivity_max_s))
    # the afternoon nap is normal for nap (15:30 is 2.5 h into it), not for busy
    nap, busy = inact[0, 15], inact[1, 15]
    assert nap > 3 * H
    assert busy == L2.inactivity_min_s
    assert inact[0, 10] == L2.inactivity_min_s  # still at 10:00 is unusual for nap
    # busy's evening: the wearable is still but the door moves: door events are signs
    assert inact[1, 19] == L2.inactivity_min_s
    # night trips: ~5 min vs ~25 min
    trip = got["bed_exit"]
    assert L2.bed_exit_min_s <= trip[0] < L2.bed_exit_default_s < trip[1] <= L2.bed_exit_max_s
    # wake times ~06:30 vs ~09:00; the limits are the usual wake time plus the care margin
    usual = detectors[2].usual_wake_s(roster.rows(["nap", "busy"]))
    assert 6.5 * H <= usual[0] <= 6.75 * H
    assert 9 * H <= usual[1] <= 9.25 * H
    wake = got["wake"]
    assert L2.wake_earliest_s <= wake[0] < L2.wake_default_s < wake[1] <= L2.wake_latest_s
    # the sleep window ends before the day starts, on the earliest days too (wake times
    # spread ±15 min: the end lies below the median by 2.33 robust deviations and 15 min)
    end = got["sleep_end"]
    assert 5.5 * H <= end[0] < 6.25 * H - 10 * 60
    assert 8 * H <= end[1] < 8.75 * H - 10 * 60
    assert learned.sleep_end_s[list(learned.elders).index("nap")] == end[0]


def test_new_elder_without_history_keeps_care_defaults(history) -> None:
    care, detectors, roster, learned = fitted(history)
    got = limits(detectors, care, roster, ["new", "unknown"])
    assert (got["inactivity"] == L2.inactivity_default_s).all()
    assert (got["bed_exit"] == L2.bed_exit_default_s).all()
    assert (got["wake"] == L2.wake_default_s).all()
    assert (got["sleep_end"] == 6 * H).all()
    i = list(learned.elders).index("new")
    assert np.isnan(learned.inactivity[i]).all()
    assert learned.inactivity_weight[i] == 0


def test_save_load_into_fresh_detectors_and_refit_is_idempotent(history, tmp_path) -> None:
    care, detectors, roster, learned = fitted(history)
    before = limits(detectors, care, roster, ["nap", "busy", "new"])
    path = tmp_path / "state" / "baselines.npz"
    save_baselines(path, learned)
    assert [p.name for p in path.parent.iterdir()] == ["baselines.npz"]  # no temp file left
    # fresh detectors whose roster already holds someone else: rows differ, limits do not
    care2 = Care()
    fresh = [InactivityDetector(care=care2), BedExitDetector(care=care2),
             MorningDetector(care=care2)]  # fmt: skip
    roster2 = Roster()
    roster2.row("someone-else")
    loaded = load_baselines(path, fresh, care2, roster2)
    assert len(roster2) == 4  # elders in the file got rows
    assert roster2.rows(["nap"])[0] != roster.rows(["nap"])[0]
    after = limits(fresh, care2, roster2, ["nap", "busy", "new"])
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    np.testing.assert_array_equal(loaded.inactivity, learned.inactivity)
    # refitting the same history over the fitted detectors changes nothing
    again = fit_baselines(history, detectors, care, roster)
    for name in ("inactivity", "bed_exit", "wake", "sleep_end_s", "inactivity_weight"):
        np.testing.assert_array_equal(getattr(again, name), getattr(learned, name), err_msg=name)
    np.testing.assert_array_equal(limits(detectors, care, roster, ["nap", "busy"])["wake"],
                                  before["wake"][:2])  # fmt: skip


def test_daily_refit_queries_one_day_and_extends_the_cached_history(world, history, tmp_path):
    settings, _ = world
    with InfluxClient(settings) as db:
        old = history_from_influx(db, days=DAYS - 1, end=END - DAY, chunk=2)
        newer = history_from_influx(db, days=1 + 3 / 24, end=END, chunk=2)
    assert newer.rows_read < old.rows_read / 10
    save_history(tmp_path / "h.npz", old)
    merged = load_history(tmp_path / "h.npz").extend(newer, days=DAYS)
    assert merged.elders == history.elders
    assert merged.end == history.end
    for stream, full in history.batches.items():
        got = merged.batch(stream)
        a, b = np.lexsort((full.ts, full.rows)), np.lexsort((got.ts, got.rows))
        np.testing.assert_array_equal(got.rows[b], full.rows[a], err_msg=stream)
        np.testing.assert_array_equal(got.ts[b], full.ts[a], err_msg=stream)
        for name in full.values:
            np.testing.assert_array_equal(got.column(name)[b], full.column(name)[a])
    # and the fits agree
    np.testing.assert_array_equal(fitted(merged)[3].inactivity, fitted(history)[3].inactivity)


def test_refit_job_writes_the_file_detect_reloads_when_it_changes(world, tmp_path) -> None:
    influx, _ = world
    settings = Settings(state_dir=tmp_path / "state", influx=influx)
    first = refit(settings, days=DAYS - 1, end=END - DAY)
    assert first["elders"] == 3
    assert first["incremental"] == 0.0
    path = settings.state_dir / "baselines.npz"
    detect = Detect(settings)
    watcher = BaselineFile(path, check_every_s=30.0)
    applied = watcher.poll(detect.detectors, detect.care, detect.batcher.elders, now=0.0)
    assert applied is not None
    assert len(detect.batcher.elders) == 3
    assert watcher.poll(detect.detectors, detect.care, detect.batcher.elders, now=60.0) is None
    inactivity = next(d for d in detect.detectors if isinstance(d, InactivityDetector))
    row = detect.batcher.elders.rows(["nap"])
    assert inactivity.limit_s(row, END + 15.5 * H)[0] > 3 * H
    # the next day: only the new day is queried; detect notices the new file
    second = refit(settings, days=DAYS, end=END)
    assert second["incremental"] == 1.0
    assert second["rows_read"] < first["rows_read"] / 10
    os.utime(path, ns=(0, 1))  # a distinct mtime even on a coarse clock
    assert watcher.poll(detect.detectors, detect.care, detect.batcher.elders, now=59.0) is None
    again = watcher.poll(detect.detectors, detect.care, detect.batcher.elders, now=90.0)
    assert again is not None
    assert again.history_end == END
    assert read_baselines(path).history_start == START


def test_a_broken_file_keeps_the_limits_applied(tmp_path: Path, history) -> None:
    _care, _detectors, _roster, learned = fitted(history)
    path = tmp_path / "baselines.npz"
    save_baselines(path, learned)
    care = Care()
    detectors = [InactivityDetector(care=care)]
    roster = Roster()
    watcher = BaselineFile(path, check_every_s=0.0)
    assert watcher.poll(detectors, care, roster, now=0.0) is not None
    kept = detectors[0].learned.copy()
    path.write_bytes(b"not an npz")
    assert watcher.poll(detectors, care, roster, now=1.0) is None
    np.testing.assert_array_equal(detectors[0].learned, kept)
    assert not math.isnan(float(np.nanmax(kept)))


def test_refit_on_a_window_without_data_returns_everyone_to_defaults(world, history) -> None:
    settings, _ = world
    care, detectors, roster, _ = fitted(history)
    with InfluxClient(settings) as db:
        empty = history_from_influx(db, days=1, end=END + 3 * DAY)
    assert sorted(empty.elders) == ["busy", "nap", "new"]
    assert empty.rows_read == 0
    fit_baselines(empty, detectors, care, roster)
    got = limits(detectors, care, roster, ["nap", "busy"])
    assert (got["inactivity"] == L2.inactivity_default_s).all()
    assert (got["bed_exit"] == L2.bed_exit_default_s).all()
    assert (got["wake"] == L2.wake_default_s).all()


def test_days_away_are_not_learned_as_stillness() -> None:
    from detectors.base import ReadingBatch
    from detectors.baselines import History

    t = np.arange(START, END, 60.0)
    home = (t < START + 10 * DAY) | (t >= START + 12 * DAY)  # away two days, no data
    wear = ReadingBatch("wearable", np.zeros(home.sum(), np.int64), t[home],
                        {"mag_std": np.full(home.sum(), 0.05)})  # fmt: skip
    care, detectors, roster, _ = fitted(History(("away",), START, END, {"wearable": wear}))
    assert (limits(detectors, care, roster, ["away"])["inactivity"] == L2.inactivity_min_s).all()


def test_a_fitted_homes_limits_are_learned_from_influx_as_the_replay_learns_them(
    world, tmp_path
) -> None:
    """A simulated home's motion, mat and door events, stored as ingest stores them: the
    refit learns the at-home, off-the-mats limit per hour and the bathroom limit, the same
    as the replay of the home's log (one learning code), and detect applies them."""
    from detectors.bathroom import BathroomDetector
    from device_sim.ambient import ambient_events, write_home_log
    from device_sim.routine import make_profile, plan_day
    from evaluation.home import home_detectors, learn
    from evaluation.homelog import read_home_log

    profile = make_profile(0, 1)
    events = [e for d in range(20_400, 20_410) for e in ambient_events(plan_day(profile, 0, 1, d))
              if e[2] != "appliance"]  # a flush is no device of the contract  # fmt: skip
    events = [(float(round(e[0])), *e[1:]) for e in events]  # the log's whole seconds
    # a mat freed and occupied in the same second (planned days meet at the wake-up) is
    # one point in InfluxDB; the live mat stays occupied (device_sim.ambient.AmbientFeed)
    same = Counter((e[0], e[1]) for e in events)
    events = [e for e in events if same[e[0], e[1]] == 1]
    write_home_log(events, tmp_path / "home.csv", utc_offset_s=profile.utc_offset_s)
    tags = "site=s,elder=home,kind={kind},device={device}"
    lines = []
    for seq, (ts, sensor, kind, place, value) in enumerate(events):
        ms, on = int(ts * 1000), value > 0.5
        if kind == "motion":
            t = tags.format(kind="motion", device=sensor) + f",room={place}"
            lines.append(line("motion", t, {"detected": on, "seq": seq}, ms))
        elif kind == "mat":
            t = tags.format(kind="mat", device=sensor) + f",place={place}"
            lines.append(line("mat", t, {"occupied": on, "seq": seq}, ms))
        else:
            t = tags.format(kind="door", device="d1") + f",door={place},role={place}"
            lines.append(line("door", t, {"opened": on, "seq": seq}, ms))
    influx, _ = world
    homes = InfluxSettings(url=influx.url, database="homes")
    with InfluxClient(homes) as db:
        db.create_database()
        db.write(lines)
    end = (events[-1][0] + 60) // 60 * 60

    # the replay of the same events as a log, learning over the same span
    log = read_home_log(tmp_path / "home.csv")
    dets, care = home_detectors()
    learn(log, dets, care, learn_days=(end - float(log.ts[0])) / DAY)
    replay_ina = next(d for d in dets if isinstance(d, InactivityDetector))
    replay_bath = next(d for d in dets if isinstance(d, BathroomDetector))
    assert replay_ina.home[0]
    assert replay_bath.weight[0] > 0.5

    settings = Settings(state_dir=tmp_path / "state", influx=homes)
    figures = refit(settings, days=11, end=end)
    assert figures["elders"] == 1
    b = read_baselines(settings.state_dir / "baselines.npz")
    assert b.home is not None
    assert b.home_inactivity is not None
    assert b.bathroom is not None
    assert b.home.tolist() == [True]
    np.testing.assert_allclose(b.home_inactivity[0], replay_ina.home_learned[0], atol=2.0)
    assert b.home_inactivity_weight[0] == pytest.approx(replay_ina.home_weight[0], abs=1e-3)
    assert b.bathroom[0] == pytest.approx(replay_bath.learned[0], abs=2.0)
    assert b.bathroom_weight[0] == pytest.approx(replay_bath.weight[0], abs=1e-3)
    # no bed sensor: the bed mat's events teach the wake time, the sleep window's end and
    # the night-trip limit, as the replay learns them
    replay_morning = next(d for d in dets if isinstance(d, MorningDetector))
    replay_exit = next(d for d in dets if isinstance(d, BedExitDetector))
    assert b.wake_weight[0] > 0.5
    assert b.wake[0] == pytest.approx(replay_morning.learned[0], abs=60.0)
    assert b.wake_weight[0] == pytest.approx(replay_morning.weight[0], abs=1e-3)
    assert b.sleep_end_s[0] == pytest.approx(care.sleep_end_s[0], abs=60.0)
    assert b.bed_exit_weight[0] == pytest.approx(replay_exit.weight[0], abs=1e-3)
    assert np.isnan(b.bed_exit[0]) == np.isnan(replay_exit.learned[0])
    # detect applies them: a home, with its learned limits
    detect = Detect(settings)
    assert BaselineFile(settings.state_dir / "baselines.npz").poll(
        detect.detectors, detect.care, detect.batcher.elders, now=0.0) is not None
    row = detect.batcher.elders.rows(["home"])
    inactivity = next(d for d in detect.detectors if isinstance(d, InactivityDetector))
    bathroom = next(d for d in detect.detectors if isinstance(d, BathroomDetector))
    assert inactivity.home[row].all()
    np.testing.assert_allclose(inactivity.home_learned[row][0], b.home_inactivity[0])
    assert bathroom.learned[row][0] == pytest.approx(float(b.bathroom[0]))

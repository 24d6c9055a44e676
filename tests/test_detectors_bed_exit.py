"""Bed exit at night: personal limit learned from past trips, care-bounded, fake clock."""

from __future__ import annotations

import numpy as np

from detectors.base import DOOR_ROLES, ReadingBatch
from detectors.bed_exit import BedExitDetector, BedExitSettings, night_trips
from detectors.care import CARE_TABLE, Care

H = 3600.0
DAY = 86400.0
T0 = 20 * DAY


def bed(rows, ts, presence) -> ReadingBatch:
    rows = np.asarray(rows)
    return ReadingBatch(
        "bed",
        rows,
        np.broadcast_to(np.asarray(ts, float), len(rows)),
        {"presence": np.broadcast_to(presence, len(rows)).astype(float)},
    )


def leave(det: BedExitDetector, rows, t: float) -> None:
    det.update(bed(rows, t - 30, 1))
    det.update(bed(rows, t, 0))


def test_new_elders_use_the_care_default_fires_just_after() -> None:
    care = Care()
    rows = np.arange(80)
    care.set_care_levels(rows, rows % 4 + 1)
    det = BedExitDetector(care=care)
    t = T0 + 2 * H
    leave(det, rows, t)
    fired: dict[int, float] = {}
    for k in (4, 3, 2, 1):  # shortest limit first
        lim = CARE_TABLE[k].bed_exit_default_s
        assert all(d.row % 4 + 1 != k for d in det.tick(t + lim))  # not at the limit
        fired.update({d.row: lim for d in det.tick(t + lim + 1)})
    assert fired == {r: CARE_TABLE[r % 4 + 1].bed_exit_default_s for r in range(80)}


def test_return_and_daytime_do_not_fire() -> None:
    det = BedExitDetector()
    leave(det, [0, 1], T0 + 3 * H)
    det.update(bed([0], T0 + 3 * H + 600, 1))
    leave(det, [2], T0 + 14 * H)  # afternoon nap over
    assert [d.row for d in det.tick(T0 + 8 * H)] == [1]


def learn(trips_min: dict[int, float], care: Care, nights: int = 30) -> BedExitDetector:
    """Bed readings over many nights: each row leaves at 03:00 for its trip length."""
    rows, ts, pres = [], [], []
    rng = np.random.default_rng(0)
    for row, minutes in trips_min.items():
        for n in range(nights):
            out = T0 - n * DAY + 3 * H
            length = minutes * 60 * rng.uniform(0.7, 1.0)
            rows += [row] * 4
            ts += [out - 60, out, out + length, out + length + 60]
            pres += [1, 0, 1, 1]
    rows, ts, pres = np.array(rows), np.array(ts), np.array(pres, float)
    s = BedExitSettings()
    r, _start, dur = night_trips(rows, ts, pres, care, s.max_trip_s)
    assert len(r) == nights * len(trips_min)
    det = BedExitDetector(s, care)
    det.fit(r, dur)
    return det


def test_learned_limit_follows_own_trips_within_care_bounds() -> None:
    care = Care()  # level 2: 10-60 min, default 30
    det = learn({0: 12.0, 1: 3.0, 2: 80.0}, care)
    lim = det.limit_s(np.array([0, 1, 2, 3]))
    # 12 min trips: 95 % ≈ 12 min × 1.5 = 18 min, shrunk 30/40 towards 30 min
    assert 17 * 60 < lim[0] < 25 * 60
    assert lim[1] == CARE_TABLE[2].bed_exit_min_s
    assert lim[2] == CARE_TABLE[2].bed_exit_max_s
    assert lim[3] == CARE_TABLE[2].bed_exit_default_s  # no history
    # a higher care level tightens the same history
    care.set_care_levels(np.array([2]), np.array([4]))
    assert det.limit_s(np.array([2]))[0] == CARE_TABLE[4].bed_exit_max_s
    t = T0 + DAY + 2 * H
    leave(det, [0], t)
    assert det.tick(t + lim[0] - 0.01) == []
    assert [d.row for d in det.tick(t + lim[0] + 1)] == [0]


def test_night_trips_skip_day_and_unreturned_exits() -> None:
    care = Care()
    ts = np.array(
        [2 * H, 2 * H + 60, 2 * H + 600, 13 * H, 13 * H + 60, 13 * H + 90, 23 * H, 23.5 * H]
    )
    pres = np.array([1, 0, 1, 1, 0, 1, 1, 0], float)
    _r, start, dur = night_trips(np.zeros(8, np.int64), ts, pres, care, 3 * H)
    assert start.tolist() == [2 * H + 60]
    assert dur.tolist() == [540.0]


def test_the_kitchen_at_dawn_is_the_day_starting_not_a_trip() -> None:
    # An early riser out of bed at 05:20, before a 06:00 sleep window ends, never came
    # "back": a bed-exit warning every early morning. The fridge door ends the wait; a
    # trip that stops at the bathroom door is still one (its limit is reached at 05:50).
    det = BedExitDetector()
    leave(det, [0, 1], T0 + 5.33 * H)
    door = lambda row, role: ReadingBatch(  # noqa: E731
        "door", np.array([row]), np.array([T0 + 5.5 * H]),
        {"opened": np.array([1.0]), "role": np.array([float(role)])},
    )  # fmt: skip
    det.update(door(0, DOOR_ROLES.index("fridge")))
    det.update(door(1, DOOR_ROLES.index("bathroom")))
    found = [d for t in np.arange(T0 + 5.4 * H, T0 + 7 * H, 30.0) for d in det.tick(t)]
    assert [d.row for d in found] == [1]

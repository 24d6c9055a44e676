"""Not up in the morning: usual wake time learned, care margin and bounds, fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import ReadingBatch
from detectors.care import CARE_TABLE, Care
from detectors.morning import MorningDetector, MorningSettings, wake_times

H = 3600.0
DAY = 86400.0
T0 = 30 * DAY


def bed(rows, ts, presence=1) -> ReadingBatch:
    rows = np.asarray(rows)
    return ReadingBatch(
        "bed",
        rows,
        np.broadcast_to(np.asarray(ts, float), len(rows)),
        {"presence": np.broadcast_to(presence, len(rows)).astype(float)},
    )


def in_bed_until(det: MorningDetector, rows, t_end: float, t_start: float) -> None:
    """Bed presence readings every 30 s from t_start to t_end (one batch each)."""
    for t in np.arange(t_start, t_end + 1, 30.0):
        det.update(bed(rows, t))


def test_default_limit_per_care_level_fires_just_after_once_a_day() -> None:
    care = Care()
    rows = np.arange(40)
    care.set_care_levels(rows, rows % 4 + 1)
    det = MorningDetector(care=care)
    fired: dict[int, float] = {}
    t = T0 + 8 * H
    while t < T0 + 10.5 * H:
        det.update(bed(rows, t))
        for d in det.tick(t):
            assert d.kind == "not_up"
            fired[d.row] = t
        t += 30.0
    for r in rows:
        lim = CARE_TABLE[int(r % 4 + 1)].wake_default_s
        assert lim < fired[int(r)] - T0 <= lim + 30.0
    assert fired[0] > fired[3]  # level 1 waits longer than level 4


def test_up_early_or_short_toilet_trip() -> None:
    det = MorningDetector()
    rows = [0, 1]
    det.update(bed(rows, T0 + 5 * H))
    # row 0 is up 05:00-06:00 (long enough), row 1 only 10 minutes; both back in bed
    det.update(bed([0, 1], T0 + 5 * H + 30, 0))
    det.update(bed([1], T0 + 5 * H + 630, 1))
    det.update(bed([0], T0 + 6 * H, 1))
    in_bed_until(det, rows, T0 + 10 * H, T0 + 6 * H + 30)
    assert [d.row for d in det.tick(T0 + 10 * H)] == [1]


def test_silent_bed_sensor_is_not_in_bed() -> None:
    det = MorningDetector()
    det.update(bed([0], T0 + 2 * H))
    assert det.tick(T0 + 10 * H) == []


def history(wake_h: dict[int, float], days: int = 14) -> tuple[np.ndarray, ...]:
    rows, ts, pres = [], [], []
    rng = np.random.default_rng(1)
    for row, h in wake_h.items():
        for n in range(1, days + 1):
            day = T0 - n * DAY
            wake = day + (h + rng.uniform(-0.25, 0.25)) * H
            rows += [row] * 5
            ts += [day - 2 * H, wake - 30, wake, wake + 2 * H, day + 22 * H]
            pres += [1, 1, 0, 0, 1]
    return np.array(rows), np.array(ts), np.array(pres, float)


def test_learned_wake_time_moves_the_limit() -> None:
    care = Care()  # level 2: margin 1.5 h, default 09:30, bounds 06:00-11:00
    rows, ts, pres = history({0: 6.0, 1: 11.0})
    r, _day, local = wake_times(rows, ts, pres, care)
    assert len(r) == 28
    assert np.all(np.abs(local[r == 0] - 6 * H) <= 0.25 * H)
    det = MorningDetector(MorningSettings(), care)
    det.fit(r, local)
    lim = det.limit_s(np.array([0, 1, 2]))
    # early riser: ~06:15 + 1.5 h shrunk 14/21 towards 09:30 -> about 08:25
    assert 8 * H < lim[0] < 8.75 * H
    # late riser (~11:15): never before their usual time + 14/21 of the margin (the level's
    # 11:00 latest moves out to their usual time + the margin)
    usual = float(det.learned[1])
    assert lim[1] == pytest.approx(usual + 14 / 21 * 1.5 * H, rel=1e-6)
    assert lim[1] > CARE_TABLE[2].wake_latest_s
    assert lim[2] == CARE_TABLE[2].wake_default_s
    in_bed_until(det, [0], T0 + lim[0], T0 + lim[0] - 60)
    assert det.tick(T0 + lim[0]) == []
    assert [d.row for d in det.tick(T0 + lim[0] + 1)] == [0]


def test_a_night_outing_before_dawn_is_not_getting_up() -> None:
    # Row 0 wandered out 05:00-05:45 (in the sleep window) and went back to bed; it was
    # taken as up for the day and its late morning in bed never reported. Row 1 rose at
    # 05:30 for good and naps in bed from 09:00: up, no warning.
    det = MorningDetector()
    found = []
    for t in np.arange(T0 + 1 * H, T0 + 12 * H, 30.0):
        local = t - T0
        out0 = 5 * H <= local < 5.75 * H
        out1 = 5.5 * H <= local < 9 * H
        det.update(bed([0, 1], t, presence=np.array([not out0, not out1])))
        found += det.tick(t)
    assert [(d.kind, d.row) for d in found] == [("not_up", 0)]
    assert found[0].ts - T0 == CARE_TABLE[2].wake_default_s + 30


def test_an_elder_first_seen_in_bed_after_the_limit_is_napping() -> None:
    """A detector that first sees an elder in bed at 13:00 (detect started then, without
    its saved state) did not see them stay in bed through the morning: no warning. One
    that saw them in bed from 07:00 warns at the limit."""
    napping = MorningDetector()
    in_bed_until(napping, [0], T0 + 14 * H, T0 + 13 * H)
    assert napping.tick(T0 + 14 * H) == []
    stayed = MorningDetector()
    in_bed_until(stayed, [0], T0 + 14 * H, T0 + 7 * H)
    assert [d.row for d in stayed.tick(T0 + 14 * H)] == [0]

"""Inactivity: signs of activity, personal limits learned per hour, bed rules, fake clock."""

from __future__ import annotations

import numpy as np

from detectors.base import ReadingBatch
from detectors.care import CARE_TABLE, Care
from detectors.inactivity import (
    InactivityDetector,
    InactivitySettings,
    activity_signs,
    gaps_from_signs,
    hourly_longest,
)

H = 3600.0
DAY = 86400.0
T0 = 40 * DAY


def wearable(rows, ts, std=0.2, steps=0.0) -> ReadingBatch:
    rows = np.asarray(rows)
    n = len(rows)
    return ReadingBatch(
        "wearable",
        rows,
        np.broadcast_to(np.asarray(ts, float), n),
        {
            "mag_std": np.broadcast_to(std, n).astype(float),
            "steps": np.broadcast_to(steps, n).astype(float),
        },
    )


def bed(rows, ts, presence=1.0, movement=0.0) -> ReadingBatch:
    rows = np.asarray(rows)
    n = len(rows)
    return ReadingBatch(
        "bed",
        rows,
        np.full(n, float(ts)),
        {"presence": np.full(n, presence), "movement": np.full(n, movement)},
    )


def test_signs_of_activity() -> None:
    s = InactivitySettings()
    w = wearable(
        [0, 1, 2, 3],
        0.0,
        std=np.array([0.001, 0.05, 0.001, np.nan]),
        steps=np.array([0, 0, 2, np.nan]),
    )
    assert activity_signs(w, s).tolist() == [False, True, True, False]
    assert activity_signs(bed([0, 1], 0.0, presence=0.0), s).tolist() == [False, False]
    door = ReadingBatch("door", np.array([0]), np.array([0.0]), {"opened": np.array([0.0])})
    assert activity_signs(door, s).tolist() == [True]


def test_care_default_fires_just_after_for_every_level() -> None:
    care = Care()
    rows = np.arange(100)
    care.set_care_levels(rows, rows % 4 + 1)
    det = InactivityDetector(care=care)
    det.update(wearable(rows, T0))
    still = wearable(rows, T0 + 60, std=0.001)  # data keeps coming, no movement
    det.update(still)
    fired: dict[int, float] = {}
    for k in (4, 3, 2, 1):
        lim = CARE_TABLE[k].inactivity_default_s
        assert all(d.row % 4 + 1 != k for d in det.tick(T0 + lim))
        for d in det.tick(T0 + lim + 1):
            fired[d.row] = lim
            assert (d.kind, d.severity, d.evidence["limit_s"]) == ("inactivity", "warning", lim)
    assert fired == {r: CARE_TABLE[r % 4 + 1].inactivity_default_s for r in range(100)}
    assert det.tick(T0 + 20 * H) == []  # once per gap
    det.update(wearable([5], T0 + 20 * H, steps=1.0))  # a sign re-arms
    assert [d.row for d in det.tick(T0 + 20 * H + 4 * H + 1)] == [5]


def test_one_noisy_still_frame_is_not_activity_and_doors_are() -> None:
    det = InactivityDetector()
    det.update(wearable([0, 1], T0))
    det.update(wearable([0, 1], T0 + 100, std=0.005))
    door = ReadingBatch("door", np.array([1]), np.array([T0 + 2 * H]), {"opened": np.array([1])})
    det.update(door)
    assert [d.row for d in det.tick(T0 + 4 * H + 1)] == [0]


def test_in_bed_is_not_inactivity_but_a_motionless_bed_is() -> None:
    det = InactivityDetector()  # level 2: 4 h awake, 3 h without bed movement
    det.update(wearable([0, 1, 2], T0))
    det.update(bed([0, 1, 2], T0 + 10, movement=0.5))
    t = T0 + 10
    while t < T0 + 3 * H + 10:  # rows 0, 1 in bed, row 0 turns over each 30 min
        t += 30
        moving = 0.5 if (t - T0) % 1800 < 30 else 0.0
        det.update(bed([0], t, movement=moving))
        det.update(bed([1], t, movement=0.0))
    # row 2's bed sensor fell silent: not in bed, the awake clock ran from its last reading
    assert det.tick(t) == []
    det.update(bed([0], t + 30, movement=0.0))
    det.update(bed([1], t + 30, movement=0.0))
    found = det.tick(t + 30)
    assert [(d.row, d.evidence["in_bed"]) for d in found] == [(1, 1.0)]
    assert det.tick(t + 30) == []
    assert [d.row for d in det.tick(T0 + 10 + 4 * H + 1)] == [2]


def history(still: dict[int, tuple[float, float]], days: int = 21):
    """Signs every minute, except each row's daily still stretch (start hour, length h)."""
    rows, ts = [], []
    minutes = np.arange(0, days * DAY, 60.0) + T0 - days * DAY
    for row, (start, length) in still.items():
        hour = (minutes % DAY) / H
        keep = ~((hour >= start) & (hour < start + length))
        rows.append(np.full(keep.sum(), row))
        ts.append(minutes[keep])
    return np.concatenate(rows), np.concatenate(ts)


def test_hourly_longest_measures_ongoing_stillness() -> None:
    rows = np.array([0, 0])
    start = np.array([13 * H, 16 * H])
    length = np.array([2.5 * H, 60.0])
    _r, hour, longest = hourly_longest(rows, start, length, np.zeros(1), 300.0)
    assert hour.tolist() == [13, 14, 15, 16]
    assert longest.tolist() == [H, 2 * H, 2.5 * H, 300.0]


def test_learned_limit_lets_a_usual_nap_pass_and_catches_an_unusual_one() -> None:
    care = Care()
    rows, ts = history({0: (13.0, 2.5), 1: (3.0, 0.0)})
    det = InactivityDetector(care=care)
    det.fit(*gaps_from_signs(rows, ts))
    nap_end = T0 + 15.5 * H - 60
    lim = det.limit_s(np.array([0, 1, 2]), nap_end)
    assert lim[0] > 2.5 * H  # the napper's usual 2.5 h at 15:30 is within their limit
    # never still: the care minimum, which is the default (learning never tightens it)
    assert lim[1] == CARE_TABLE[2].inactivity_min_s == CARE_TABLE[2].inactivity_default_s
    assert lim[2] == CARE_TABLE[2].inactivity_default_s  # no history
    morning = det.limit_s(np.array([0]), T0 + 10 * H)
    assert morning[0] == CARE_TABLE[2].inactivity_min_s  # still at 10:00 is unusual for them
    # run time: both still from 13:00
    det.update(wearable([0, 1], T0 + 13 * H - 60))
    det.update(wearable([0, 1], T0 + 13 * H, std=0.001))
    assert det.tick(nap_end) == []  # 2.5 h still: within both limits
    assert det.tick(T0 + 13 * H - 60 + lim[1]) == []
    assert 1 in [d.row for d in det.tick(T0 + 13 * H - 60 + lim[1] + 1)]
    # a higher care level tightens the same learned limit, within its bounds
    care.set_care_levels(np.array([0]), np.array([4]))
    tight = det.limit_s(np.array([0]), nap_end)[0]
    assert CARE_TABLE[4].inactivity_min_s <= tight < lim[0]
    assert tight <= CARE_TABLE[4].inactivity_max_s


def test_one_batch_equals_separate_batches() -> None:
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 20, 400)
    ts = T0 + np.sort(rng.uniform(0, 10 * H, 400))
    std = rng.choice([0.001, 0.1], 400, p=[0.9, 0.1])

    def run(together: bool) -> list:
        det = InactivityDetector()
        out = []
        parts = [slice(None)] if together else [slice(i, i + 1) for i in range(400)]
        for p in parts:
            det.update(wearable(rows[p], ts[p], std=std[p]))
        for t in np.arange(T0, T0 + 16 * H, 600.0):
            out += det.tick(t)
        return out

    got = run(True)
    assert got == run(False)
    assert len(got) > 0


def posture(rows, ts, g, hr=80.0, std=0.006, steps=0.0) -> ReadingBatch:
    """Wearable frames with a mean acceleration ``g`` (the posture) and a heart rate."""
    rows = np.asarray(rows)
    n = len(rows)
    g = np.broadcast_to(np.asarray(g, float), (n, 3))
    col = lambda v: np.broadcast_to(np.asarray(v, float), n).copy()  # noqa: E731
    return ReadingBatch(
        "wearable", rows, col(ts),
        {"mag_std": col(std), "steps": col(steps), "hr": col(hr),
         "gx": g[:, 0].copy(), "gy": g[:, 1].copy(), "gz": g[:, 2].copy()},
    )  # fmt: skip


def test_lying_on_the_floor_is_reported_after_the_care_limit_not_hours() -> None:
    # A long lie after a slow collapse (no impact for the fall detector) showed no sign of
    # activity for 20-60 min, far below every gap limit (1.5-6 h): it went unreported.
    # Rows: 0 on the floor; 1 lying in bed; 2 the device on the floor, no heart rate;
    # 3 lying, but the bed sensor silent; 4 worn upside down (upright reads +y), on the floor.
    det = InactivityDetector()
    rows = np.arange(5)
    up = np.array([[0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0]], float)
    for t in range(60):  # walking: upright is learned, whatever the orientation
        det.update(posture(rows, T0 + t, up, std=0.16, steps=2.0))
    found = []
    for t in range(60, 30 * 60):
        hr = np.array([80.0, 60.0, np.nan, 80.0, 80.0])
        det.update(posture(rows, T0 + t, [0.0, 0.05, 1.0], hr=hr))
        if t % 10 == 0:
            det.update(bed([0, 1, 2, 4], T0 + t, presence=np.array([0.0, 1.0, 0.0, 0.0])))
        if t % 30 == 0:
            found += det.tick(T0 + t)
    lim = CARE_TABLE[2].lying_s
    assert sorted(d.row for d in found) == [0, 4]
    for d in found:
        assert d.severity.value == "critical"
        assert d.evidence["lying"] == 1.0
        assert lim < d.ts - (T0 + 59) <= lim + 31  # from the last upright frame
    # standing up re-arms it
    det.update(posture(rows, T0 + 1900, up, std=0.16, steps=2.0))
    assert not det.fired_lying[[0, 4]].any()


def test_a_lie_out_of_bed_counts_from_leaving_the_bed() -> None:
    # Rolled out of bed after hours lying in it: the lie on the floor starts when the bed
    # empties, not at the last upright frame before bedtime (it fired at once).
    det = InactivityDetector()
    det.update(posture([0], T0, [0, -1, 0], std=0.16, steps=2.0))
    found = []
    for t in range(1, 3 * 3600, 10):
        det.update(posture([0], T0 + t, [0.0, 0.0, 1.0], hr=60.0))
        det.update(bed([0], T0 + t, presence=float(t < 2 * 3600)))  # out of bed at 2 h
        found += det.tick(T0 + t)
    assert [d.evidence["lying"] for d in found] == [1.0]
    assert CARE_TABLE[2].lying_s < found[0].ts - (T0 + 2 * 3600) <= CARE_TABLE[2].lying_s + 20

"""Vital signs: absolute ranges per care level, own-baseline deviations, hysteresis."""

from __future__ import annotations

import numpy as np

from detectors.base import ReadingBatch, Severity
from detectors.care import Care
from detectors.vitals import VitalsDetector, VitalsSettings

FAST = VitalsSettings(warm_s=600.0, tau_s=3600.0, learn_every_s=1)


def frames(rows, t, hr=np.nan, spo2=np.nan, std=0.01, steps=0.0) -> ReadingBatch:
    rows = np.asarray(rows)
    n = len(rows)
    col = lambda v: np.broadcast_to(np.asarray(v, float), n)  # noqa: E731
    return ReadingBatch(
        "wearable",
        rows,
        col(t),
        {"hr": col(hr), "spo2": col(spo2), "mag_std": col(std), "steps": col(steps)},
    )


def run(det: VitalsDetector, rows, values: np.ndarray, t0: float = 0.0, **kw) -> list:
    """Feed a series (seconds × rows) at 1 Hz; all detections."""
    return [
        d
        for i, v in enumerate(values)
        for d in det.update(
            frames(
                rows,
                t0 + i,
                **{k: (w[i] if isinstance(w, np.ndarray) and w.ndim else w) for k, w in kw.items()},
                hr=v,
            )
        )
    ]


def test_sustained_tachycardia_fires_after_min_samples_and_sustain() -> None:
    det = VitalsDetector()  # 10 samples and 30 s at 1 Hz
    rows = np.arange(200)
    hr = np.full((60, 200), 72.0)
    hr[10:, ::2] = 140.0  # even rows from t=10
    found = run(det, rows, hr)
    assert sorted(d.row for d in found) == rows[::2].tolist()
    assert {(d.kind, d.severity, d.ts) for d in found} == {("tachycardia", Severity.CRITICAL, 40.0)}
    assert found[0].evidence["value"] == 140.0
    assert found[0].evidence["limit"] == 125.0


def test_single_noisy_samples_and_short_bursts_do_not_alarm() -> None:
    det = VitalsDetector()
    rng = np.random.default_rng(0)
    hr = 70 + rng.normal(0, 2, (600, 50))
    hr[rng.random((600, 50)) < 0.05] = 190.0  # 5 % spikes
    hr[100:125, 3] = 35.0  # 25 s of bradycardia: not sustained 30 s
    assert run(det, np.arange(50), hr) == []


def test_hovering_at_the_limit_alarms_once() -> None:
    det = VitalsDetector()
    # 127 / 123 alternate: above 125 then between the exit (120) and the limit
    hr = np.where(np.arange(300) % 2 == 0, 127.0, 123.0)[:, None]
    found = run(det, [0], hr)
    assert len(found) == 1
    # back to 110 for 10 samples re-arms; 130 again alarms again
    later = np.r_[np.full(10, 110.0), np.full(40, 130.0)][:, None]
    assert len(run(det, [0], later, t0=300)) == 1


def test_care_level_tightens_the_range() -> None:
    care = Care()
    care.set_care_levels(np.arange(4), np.array([1, 2, 3, 4]))
    det = VitalsDetector(care=care)
    found = run(det, np.arange(5), np.full((60, 5), 122.0))
    assert sorted(d.row for d in found) == [2, 3]  # levels 3, 4: limit 120; row 4 new: level 2


def test_low_spo2_and_breathing_from_the_bed() -> None:
    det = VitalsDetector()
    spo2 = [d for t in range(60) for d in det.update(frames([0, 1], t, spo2=[85.0, 95.0]))]
    assert [(d.kind, d.row, d.ts) for d in spo2] == [("low_spo2", 0, 30.0)]
    found = []
    for i in range(6):
        bed = ReadingBatch(
            "bed",
            np.array([0, 1]),
            np.full(2, i * 20.0),
            {"br": np.array([6.0, 14.0]), "hr": np.array([60.0, np.nan])},
        )
        found += det.update(bed)
    assert [(d.kind, d.row, d.ts) for d in found] == [("breathing", 0, 40.0)]


def test_baseline_deviation_warns_at_rest_only_and_is_not_learned() -> None:
    det = VitalsDetector(FAST)
    rng = np.random.default_rng(1)
    rows = np.arange(3)
    warm = 60 + rng.normal(0, 2, (900, 3))
    assert run(det, rows, warm) == []
    assert abs(det.mean[0, 0] - 60) < 1
    assert 1 < np.sqrt(det.var[0, 0]) < 3
    # 95 bpm: inside the absolute range, far above a 60 ± 2 baseline
    high = np.full((360, 3), 95.0)
    high[:, 2] = 60 + rng.normal(0, 2, 360)
    high[:60, 2] = 95.0  # row 2: raised for a minute only (bending), no deviation
    walking = np.zeros((360, 3))
    walking[:, 1] = 1  # row 1 walks: effort, not a deviation
    found = run(det, rows, high, t0=900, steps=walking)
    assert [(d.kind, d.row, d.severity) for d in found] == [("tachycardia", 0, Severity.WARNING)]
    assert found[0].evidence["z"] > 10
    assert abs(det.mean[0, 0] - 60) < 1  # the flagged stretch did not become normal


def test_new_elder_gets_no_baseline_check_before_warm_up() -> None:
    det = VitalsDetector(FAST)
    hr = np.r_[np.full(300, 60.0), np.full(120, 95.0)][:, None]
    assert run(det, [0], hr) == []


def test_one_batch_equals_separate_batches() -> None:
    rng = np.random.default_rng(7)
    n = 30
    start, length = rng.integers(0, 60, n), rng.integers(5, 60, n)
    t = np.arange(120)[:, None]
    hr = np.where((t >= start) & (t < start + length), 130.0, 70.0)
    hr[rng.random((120, n)) < 0.05] = 30.0  # spikes
    together = run(VitalsDetector(), np.arange(n), hr)
    det = VitalsDetector()
    apart = [
        d
        for i in range(120)
        for r in range(n)
        for d in det.update(frames([r], float(i), hr=hr[i, r]))
    ]
    assert together == sorted(apart, key=lambda d: (d.ts, d.row))
    assert 0 < len(together) < n
    # repeated rows in one batch are processed in order
    det = VitalsDetector()
    rows = np.repeat(np.arange(n), 120)
    ts = np.tile(np.arange(120.0), n)
    order = np.argsort(ts, kind="stable")
    batch = frames(rows[order], ts[order], hr=hr.T.ravel()[order])
    assert det.update(batch) == together


def bed_readings(row: int, t0: float, hr: np.ndarray, presence: float = 1.0) -> list[ReadingBatch]:
    """Bed readings every 10 s from ``t0``, one per value of ``hr``."""
    return [
        ReadingBatch(
            "bed",
            np.array([row]),
            np.array([t0 + 10.0 * k]),
            {"presence": np.array([presence]), "hr": np.array([h])},
        )
        for k, h in enumerate(hr)
    ]


def test_bed_heart_rate_is_judged_at_rest_only_once_settled_in_bed() -> None:
    # A heart still racing from the walk to bed is no deviation from the sleeping baseline
    # (these were false tachycardia warnings on every night trip); a raised heart rate
    # after settle_s in bed still is. (A short deviation_sustain_s: the settling alone.)
    det = VitalsDetector(FAST.model_copy(update={"deviation_sustain_s": 30.0}))
    rng = np.random.default_rng(3)
    feed = bed_readings(0, 0.0, 58 + rng.normal(0, 1.5, 360))  # an hour asleep: baseline
    feed += bed_readings(0, 3600.0, np.full(6, np.nan), presence=0.0)  # a trip out of bed
    back = 3660.0
    hr = np.r_[np.linspace(85, 60, 24), 58 + rng.normal(0, 1.5, 36)]  # settles in 4 min
    feed += bed_readings(0, back, hr)
    assert [d for b in feed for d in det.update(b)] == []
    late = bed_readings(0, back + 600.0, np.full(40, 85.0))  # settled, then raised 6 min
    found = [d for b in late for d in det.update(b)]
    assert [(d.kind, d.severity) for d in found] == [("tachycardia", Severity.WARNING)]

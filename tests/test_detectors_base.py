"""The shared detector protocol, batches and helpers; every detector conforms."""

from __future__ import annotations

import doctest
import importlib
import itertools

import numpy as np
import pytest

from detectors.base import (
    AccelBatch,
    BatchStream,
    Detector,
    Hysteresis,
    ReadingBatch,
    dispatch,
    group_quantile,
    tick_all,
    waves,
)
from detectors.bed_exit import BedExitDetector
from detectors.care import CARE_TABLE, Care
from detectors.device_health import DeviceHealthDetector
from detectors.fall import FallDetector
from detectors.inactivity import InactivityDetector
from detectors.morning import MorningDetector
from detectors.sos import SosDetector
from detectors.vitals import VitalsDetector
from detectors.wandering import WanderingDetector
from homecare.frames import frame_stats

MODULES = [
    "base",
    "care",
    "sos",
    "inactivity",
    "wandering",
    "bed_exit",
    "morning",
    "vitals",
    "device_health",
    "fall",
]
DETECTORS = [
    FallDetector,
    SosDetector,
    InactivityDetector,
    WanderingDetector,
    BedExitDetector,
    MorningDetector,
    VitalsDetector,
    DeviceHealthDetector,
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests_run_and_pass(name: str) -> None:
    module = importlib.import_module(f"detectors.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("cls", DETECTORS)
def test_every_detector_follows_the_protocol(cls: type) -> None:
    det = cls()
    assert isinstance(det, Detector)
    assert det.streams
    assert det.streams <= set(BatchStream)
    assert det.tick(0.0) == []  # nothing seen: nothing fires
    assert det.state_bytes() >= 0
    assert (cls.__module__.rsplit(".", 1)[1]) in MODULES


def test_dispatch_routes_by_stream_and_tick_all_collects() -> None:
    sos, fall, inact = SosDetector(), FallDetector(), InactivityDetector()
    press = ReadingBatch(
        "button", np.array([2]), np.array([5.0]), {"button": np.array([0]), "seq": np.array([1])}
    )
    found = dispatch([sos, fall, inact], press)
    assert [(d.kind, d.row) for d in found] == [("sos", 2)]
    door = ReadingBatch("door", np.array([0]), np.array([0.0]), {"opened": np.array([1])})
    assert dispatch([sos, fall, inact], door) == []
    fired = tick_all([sos, fall, inact], 4 * 3600.0 + 1)
    assert [(d.kind, d.row) for d in fired] == [("inactivity", 0)]


def test_reading_batch_checks_lengths_and_converts_records() -> None:
    with pytest.raises(ValueError, match="column"):
        ReadingBatch("bed", np.array([0, 1]), np.array([0.0, 1.0]), {"hr": np.array([60.0])})
    with pytest.raises(ValueError, match="one entry"):
        ReadingBatch("bed", np.array([0, 1]), np.array([0.0]), {})
    b = ReadingBatch.from_records(
        "button",
        [0, 1],
        [1.0, 2.0],
        [{"button": "ok", "seq": 3, "firmware": "x"}, {"button": "sos", "seq": None}],
    )
    assert b.column("button").tolist() == [1.0, 0.0]
    assert np.isnan(b.column("seq")[1])
    assert "firmware" not in b.values
    assert np.isnan(b.column("absent")).all()
    assert b.keys() is b.rows


def test_waves_split_repeated_rows_in_order() -> None:
    assert waves(np.array([3, 1, 2])) is None
    parts = waves(np.array([3, 1, 3, 3, 1]))
    assert parts is not None
    assert [p.tolist() for p in parts] == [[0, 1], [2, 4], [3]]


def test_group_quantile_matches_numpy_per_row() -> None:
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 20, 500)
    values = rng.exponential(1.0, 500)
    q, counts = group_quantile(rows, values, 0.9, 25)
    for r in range(25):
        mine = values[rows == r]
        assert counts[r] == len(mine)
        if len(mine):
            assert q[r] == np.quantile(mine, 0.9, method="lower")
        else:
            assert np.isnan(q[r])


def test_frame_stats_match_a_float64_reference() -> None:
    rng = np.random.default_rng(4)
    accel = (rng.normal(0, [[0.002], [0.3]], (2, 50))[..., None] + [0, 0, 1]).astype(np.float32)
    stats = frame_stats(accel)
    mag = np.linalg.norm(accel.astype(np.float64), axis=2)
    np.testing.assert_allclose(stats["mag_std"], mag.std(1), atol=2e-5)
    np.testing.assert_allclose(stats["mag_mean"], mag.mean(1), atol=1e-6)
    np.testing.assert_allclose(stats["mag_peak"], mag.max(1), atol=1e-6)
    np.testing.assert_allclose(stats["mag_min"], mag.min(1), atol=1e-6)


def test_hysteresis_needs_consecutive_samples_and_rearms_once_calm() -> None:
    h = Hysteresis(1, min_samples=3, sustain_s=0.0)
    h.grow(2)
    rows = np.array([0, 1])
    fired: list[tuple[float, int]] = []
    # row 0: above, above, gap (between), above -> fires on the 3rd above sample;
    # row 1: above, calm, above, above: the calm sample resets
    seq = [([1, 1], [0, 0]), ([1, 0], [0, 1]), ([0, 1], [0, 0]), ([1, 1], [0, 0])]
    for t, (up, down) in enumerate(seq):
        idx, new = h.step(
            rows, np.full(2, float(t)), np.array(up, bool)[:, None], np.array(down, bool)[:, None]
        )
        fired += [(float(t), int(rows[i])) for i in idx[new[:, 0]]]
    assert fired == [(3.0, 0)]
    # row 0 stays active through more highs; three calm samples re-arm it
    for t in range(4, 7):
        h.step(rows[:1], np.array([float(t)]), np.array([[True]]), np.array([[False]]))
    assert h.active[0, 0]
    for t in range(7, 10):
        h.step(rows[:1], np.array([float(t)]), np.array([[False]]), np.array([[True]]))
    assert not h.active[0, 0]


def test_care_table_tightens_with_level() -> None:
    lv = [CARE_TABLE[k] for k in (1, 2, 3, 4)]
    for a, b in itertools.pairwise(lv):
        assert b.inactivity_default_s < a.inactivity_default_s
        assert b.wander_return_s < a.wander_return_s
        assert b.bed_exit_default_s < a.bed_exit_default_s
        assert b.wake_default_s < a.wake_default_s
        assert b.hr_high <= a.hr_high
        assert b.not_worn_s < a.not_worn_s
    care = Care()
    with pytest.raises(ValueError, match="1 to 4"):
        care.set_care_levels(np.array([0]), np.array([5]))
    care.set_care_levels(np.array([0, 3]), np.array([4, 1]))
    assert care.limit("hr_high", np.array([0, 1, 2, 3])).tolist() == [120, 125, 125, 130]


def test_care_sleep_window_wraps_midnight_and_follows_utc_offset() -> None:
    care = Care()
    care.set_utc_offsets(np.array([1]), np.array([-5 * 3600.0]))
    care.set_sleep_windows(np.array([2]), np.array([13 * 3600.0]), np.array([15 * 3600.0]))
    rows = np.array([0, 1, 2])
    at = lambda h: care.in_sleep_window(rows, h * 3600.0).tolist()  # noqa: E731
    assert at(21.99) == [False, False, False]
    assert at(22.0) == [True, False, False]
    assert at(3.0) == [True, True, False]  # 22:00 local for row 1
    assert at(5.99) == [True, True, False]
    assert at(6.0) == [False, True, False]
    assert at(14.0) == [False, False, True]
    assert care.local_day(rows, 2 * 3600.0).tolist() == [0, -1, 0]


def test_accel_batch_still_validates() -> None:
    with pytest.raises(ValueError, match="frames"):
        AccelBatch(np.array([0]), np.array([0.0]), np.zeros((1, 50), np.float32), 50.0)

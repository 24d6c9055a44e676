"""SOS: every press once, at once, for many elders; re-deliveries dropped."""

from __future__ import annotations

import numpy as np

from detectors.base import ReadingBatch, Severity
from detectors.sos import SosDetector, SosSettings


def presses(rows, ts, seq, button=0, devices=None) -> ReadingBatch:
    n = len(rows)
    return ReadingBatch(
        "button",
        np.asarray(rows),
        np.asarray(ts, float),
        {"button": np.full(n, button), "seq": np.asarray(seq)},
        None if devices is None else np.asarray(devices),
    )


def test_many_elders_press_at_once() -> None:
    det = SosDetector()
    rows = np.arange(500)
    found = det.update(presses(rows, np.full(500, 100.0), rows % 7))
    assert [d.row for d in found] == rows.tolist()
    assert {d.severity for d in found} == {Severity.CRITICAL}
    assert {d.kind for d in found} == {"sos"}
    assert [d.evidence["seq"] for d in found[:8]] == [0, 1, 2, 3, 4, 5, 6, 0]
    assert all(d.ts == 100.0 for d in found)


def test_redelivery_is_dropped_a_new_seq_is_not() -> None:
    det = SosDetector()
    assert len(det.update(presses([0, 0], [10.0, 10.0], [5, 5]))) == 1  # twice in one batch
    assert det.update(presses([0], [10.0], [5])) == []  # broker delivers again
    assert det.update(presses([0], [70.0], [5])) == []  # device republished, new ts
    assert len(det.update(presses([0], [70.0], [6]))) == 1


def test_same_seq_on_another_device_or_after_a_reset_fires() -> None:
    det = SosDetector(SosSettings(dedupe_s=600))
    # two devices of one elder, both seq 1
    found = det.update(presses([0, 0], [10.0, 10.0], [1, 1], devices=[7, 8]))
    assert [d.device for d in found] == [7, 8]
    assert det.update(presses([0], [610.0], [1], devices=[7])) == []  # within the window
    assert len(det.update(presses([0], [611.0], [1], devices=[8]))) == 1  # counter reset


def test_ok_button_and_missing_seq() -> None:
    det = SosDetector()
    assert det.update(presses([0], [1.0], [1], button=1)) == []
    batch = ReadingBatch(
        "button",
        np.array([0, 0]),
        np.array([1.0, 1.0]),
        {"button": np.array([0, 0]), "seq": np.array([np.nan, np.nan])},
    )
    assert len(det.update(batch)) == 2  # no seq: cannot be told apart, both reported


def test_one_batch_equals_separate_batches() -> None:
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 30, 200)
    seq = rng.integers(0, 4, 200)
    ts = np.sort(rng.uniform(0, 2000, 200))
    together = SosDetector().update(presses(rows, ts, seq))
    det = SosDetector()
    apart = [
        d
        for i in range(200)
        for d in det.update(presses(rows[i : i + 1], ts[i : i + 1], seq[i : i + 1]))
    ]
    assert together == sorted(apart, key=lambda d: (d.ts, d.row))
    assert 0 < len(together) < 200

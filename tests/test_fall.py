"""The fall detector on synthetic motions: every stage, every look-alike, many rows at once."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import detectors.fall
import device_sim.motions
import evaluation.replay
import evaluation.replay_eval
from detectors.base import AccelBatch, Detection
from detectors.fall import FallDetector, FallSettings, confirms, resample
from detectors.fall_model import Placement
from device_sim.motions import MOTIONS, WRIST_MOTIONS, motion, random_rotation

SEEDS = 50
RATES = (20.0, 25.0, 50.0, 100.0)
FALLS = [n for n in MOTIONS if n.startswith("fall_")]
LOOK_ALIKES = [n for n in MOTIONS if not MOTIONS[n](np.random.default_rng(0))[1]["expect_fall"]
               and n not in WRIST_MOTIONS]  # fmt: skip  (the wrist's: tests/test_fall_placement.py)


def run(
    traces: list[np.ndarray], rate: float, settings: FallSettings | None = None
) -> list[tuple[Detection, float]]:
    """Feed traces as rows of one detector, 1-second frames; (detection, emission time).
    The simulated motions are of a pendant's or belt's wearer: the rows are worn at the chest."""
    det = FallDetector(settings)
    det.place(np.arange(len(traces)), Placement.CHEST)
    n = max(1, round(rate))
    frames = [len(x) // n for x in traces]
    out: list[tuple[Detection, float]] = []
    for k in range(max(frames)):
        rows = np.array([i for i, f in enumerate(frames) if f > k])
        accel = np.stack([traces[i][k * n : (k + 1) * n] for i in rows])
        batch = AccelBatch(rows, np.full(len(rows), k * n / rate), accel, rate)
        out += [(d, (k + 1) * n / rate) for d in det.update(batch)]
    return out


def generate(name: str, seeds: int = SEEDS) -> list[tuple[float, np.ndarray, dict]]:
    """One trace per seed, with a random orientation and a rate drawn from RATES."""
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, len(name)])
        rate = float(rng.choice(RATES))
        _, xyz, info = motion(name, rng, rate=rate, orientation="random")
        out.append((rate, xyz, info))
    return out


def detect_each(cases: list[tuple[float, np.ndarray, dict]], settings: FallSettings | None = None):
    """Per case: its detections and emission times, rows of one rate run together."""
    result: list[list[tuple[Detection, float]]] = [[] for _ in cases]
    for rate in {c[0] for c in cases}:
        idx = [i for i, c in enumerate(cases) if c[0] == rate]
        for d, when in run([cases[i][1] for i in idx], rate, settings):
            result[idx[d.row]].append((d, when))
    return result


@pytest.mark.parametrize("name", FALLS)
def test_falls_are_detected_at_the_impact_within_the_delay_bound(name):
    settings = FallSettings()
    cases = generate(name)
    found = detect_each(cases)
    hits = sum(bool(f) for f in found)
    assert hits >= 0.98 * len(cases)
    for (_, _, info), dets in zip(cases, found, strict=True):
        for d, when in dets:
            assert d.kind == "fall"
            assert d.severity == "critical"
            assert abs(d.ts - info["impact_t"]) <= 0.5
            assert when - d.ts <= settings.still_window_s + 5.0
            assert d.evidence["posture_deg"] >= settings.posture_deg
            assert d.evidence["peak_g"] >= settings.impact_g
            assert d.evidence["freefall_g"] <= settings.freefall_g


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_look_alikes_do_not_raise_a_fall(name):
    found = detect_each(generate(name))
    assert sum(bool(f) for f in found) == 0


@pytest.mark.parametrize(
    ("name", "relaxed", "stage"),
    [
        # with the other stages switched off the look-alike is taken for a fall, and the
        # evidence shows the stage that rejects it by default
        ("sit_hard", {"posture_deg": 0.001}, lambda e: e["posture_deg"] < 45),
        ("collapse_into_chair", {"posture_deg": 0.001}, lambda e: e["posture_deg"] < 45),
        ("jump", {"posture_deg": 0.001, "drop_s": 10.0}, lambda e: e["posture_deg"] < 45),
        ("device_dropped", {"impact_g": 1.05, "freefall_g": 2.0, "drop_s": 10.0,
                            "offbody_g": 0.0, "posture_deg": 0.001},
         lambda e: e["peak_g"] < 1.4 and e["activity_g"] < 0.004),
        ("device_thrown", {"offbody_g": 0.0, "drop_s": 10.0, "freefall_g": 2.0,
                           "posture_deg": 0.001},
         lambda e: e["activity_g"] < 0.004),
        ("lie_down", {"impact_g": 1.05, "freefall_g": 1.0}, lambda e: e["peak_g"] < 1.4),
    ],
)  # fmt: skip
def test_each_look_alike_is_rejected_by_its_stage(name, relaxed, stage):
    cases = generate(name, 20)
    assert not any(detect_each(cases))
    evidence = [d.evidence for dets in detect_each(cases, FallSettings(**relaxed)) for d, _ in dets]
    assert len(evidence) >= 3
    assert all(stage(e) for e in evidence)


def test_stillness_stage_rejects_moving_on():
    """A fall followed by getting up and walking away is no alarm: a recovered fall."""
    rng = np.random.default_rng(5)
    _, fall, info = motion("fall_forward", rng, rate=50)
    _, walk, _ = motion("walk", rng, rate=50)
    impact = round(info["impact_t"] * 50)
    trace = np.concatenate([fall[: impact + 150], walk[50:1000]])  # up after 3 s, walks
    assert [(d.kind, d.severity.value) for d, _ in run([trace], 50.0)] == [
        ("fall_recovered", "warning")
    ]
    assert [d.kind for d, _ in run([fall], 50.0)] == ["fall"]


def test_slow_collapse_without_impact_is_left_to_the_inactivity_detector():
    """Documented limitation: no impact, no fall from this detector."""
    assert sum(bool(f) for f in detect_each(generate("slow_collapse", 20))) == 0


def test_confirms_needs_every_stage():
    s = FallSettings()
    good = {
        "peak_g": 3.0, "freefall_g": 0.4, "flight_s": 0.0, "posture_deg": 90.0,
        "still_fraction": 1.0, "activity_g": 0.01,
    }  # fmt: skip
    bad = {
        "peak_g": 1.2, "freefall_g": 0.95, "flight_s": 0.3, "posture_deg": 20.0,
        "still_fraction": 0.3, "activity_g": 0.001,
    }  # fmt: skip
    arr = {k: np.array([v]) for k, v in good.items()}
    assert confirms(arr, s).tolist() == [True]
    for key, value in bad.items():
        one = {**arr, key: np.array([value])}
        assert confirms(one, s).tolist() == [False], key


def test_orientation_does_not_change_the_result():
    _, xyz, _ = motion("fall_sideways", np.random.default_rng(11), rate=50)
    base = run([xyz], 50.0)
    assert len(base) == 1
    for seed in range(5):
        rot = random_rotation(np.random.default_rng(seed)).astype(np.float32)
        turned = run([xyz @ rot.T], 50.0)
        assert len(turned) == 1
        assert turned[0][0].ts == pytest.approx(base[0][0].ts)
        for key, value in base[0][0].evidence.items():
            assert turned[0][0].evidence[key] == pytest.approx(value, abs=1e-2, rel=1e-3)


def test_many_rows_together_equal_rows_alone():
    names = ["fall_forward", "sit_hard", "walk", "fall_out_of_bed", "jump", "fall_backward"]
    traces = [motion(n, np.random.default_rng(i), rate=50, orientation="random")[1]
              for i, n in enumerate(names * 3)]  # fmt: skip
    together = sorted((d.row, d.ts, tuple(d.evidence.items())) for d, _ in run(traces, 50.0))
    alone = sorted(
        (i, d.ts, tuple(d.evidence.items()))
        for i, x in enumerate(traces)
        for d, _ in run([x], 50.0)
    )
    assert together == alone
    assert len(together) == 9


def test_a_row_may_appear_several_times_in_one_batch():
    _, xyz, _ = motion("fall_backward", np.random.default_rng(2), rate=50)
    one = [d for d, _ in run([xyz], 50.0)]
    det = FallDetector()
    det.place(np.array([0]), Placement.CHEST)
    frames = xyz[: len(xyz) // 50 * 50].reshape(-1, 50, 3)
    got: list[Detection] = []
    for k in range(0, len(frames), 4):  # four consecutive frames of row 0 per batch
        chunk = frames[k : k + 4]
        batch = AccelBatch(np.zeros(len(chunk), np.int64), k + np.arange(len(chunk), dtype=float),
                           chunk, 50.0)  # fmt: skip
        got += det.update(batch)
    assert got == one


def test_state_stays_small_and_grows_with_rows():
    det = FallDetector()
    frames = np.tile(np.float32([0, 0, 1]), (1000, 50, 1))
    det.update(AccelBatch(np.arange(1000), np.zeros(1000), frames, 50.0))
    assert det.state_bytes() / len(det.pending) <= 16 * 1024
    det.update(AccelBatch(np.array([4999]), np.ones(1), frames[:1], 50.0))
    assert len(det.pending) >= 5000


def test_resample_averages_integer_ratios_and_interpolates_others():
    x = np.arange(200, dtype=np.float32).reshape(2, 100, 1).repeat(3, axis=2)
    down, offset = resample(x, 100.0, 50.0)
    assert down.shape == (2, 50, 3)
    assert offset == 0.0
    assert down[0, :3, 0].tolist() == [0.5, 2.5, 4.5]
    up, offset = resample(x[:, :20], 20.0, 50.0)
    assert up.shape == (2, 50, 3)
    assert offset == pytest.approx(-0.05)
    assert np.all(np.diff(up[0, :, 0]) >= 0)
    same, _ = resample(x, 50.0, 50.0)
    assert same is x


def test_a_gap_clears_the_history():
    """After a long gap the posture before an impact is not taken from stale samples."""
    det = FallDetector()
    lying = np.tile(np.float32([1, 0, 0]), (1, 50, 1))
    for k in range(6):
        det.update(AccelBatch(np.array([0]), np.array([float(k)]), lying, 50.0))
    assert det.filled[0] > 0
    det.update(AccelBatch(np.array([0]), np.array([100.0]), lying, 50.0))
    assert det.filled[0] == 50


def test_the_history_read_is_every_rows_own_last_samples(monkeypatch):
    """Frames are kept by reference and copied into the history ring only when read, when
    the log outgrows two rings' worth, or before a snapshot: whatever the mix of rows,
    frame lengths (some longer than the ring), rows gone quiet and snapshots, a row's
    history read back is exactly the last samples it sent."""
    from detectors.snapshot import freeze, thaw

    rng = np.random.default_rng(11)
    copies: list[int] = []  # rows copied into the ring while frames came in (quiet, no impact)
    write = FallDetector._write
    monkeypatch.setattr(FallDetector, "_write", lambda d, *a: (copies.append(1), write(d, *a)))
    det = FallDetector()
    h = det.hist_len
    rows_n = 40
    det.place(np.arange(rows_n), Placement.WRIST)  # every row known from the start
    sent: list[list[np.ndarray]] = [[] for _ in range(rows_n)]
    clock = np.zeros(rows_n)  # each row's own time: contiguous, never a gap
    pressed = 0
    for step in range(400):
        quiet = np.arange(rows_n) >= 30  # rows 30+ send rarely: their frames stay needed
        talk = np.flatnonzero(rng.random(rows_n) < np.where(quiet, 0.01, 0.7))
        if not len(talk):
            continue
        n = int(rng.choice([1, 7, 50, 50, 50, h + 30]))
        rng.shuffle(talk)
        accel = (np.float32([0, 0, 1]) + 0.05 * rng.normal(size=(len(talk), n, 3))).astype(
            np.float32
        )
        before = len(copies)
        det.update(AccelBatch(talk, clock[talk].copy(), accel, 50.0))
        pressed += len(copies) > before  # the log outgrew its budget: quiet rows copied
        assert det._logged <= 2 * h * len(det.pos) + accel.shape[0] * n
        clock[talk] += n / 50.0
        for i, r in enumerate(talk):
            sent[r].append(accel[i])
        if step % 53 == 52:  # a snapshot: the ring alone is the state
            fresh = FallDetector()
            thaw({"d": fresh}, freeze({"d": det}))
            assert not fresh._log
            det = fresh
        if step % 9 == 0:
            look = rng.choice(rows_n, size=5, replace=False)
            got = det._history(look, np.zeros((5, 1, 3), np.float32))[:, :h]
            for i, r in enumerate(look):
                mine = np.concatenate(sent[r])[-h:] if sent[r] else np.zeros((0, 3))
                assert det.filled[r] == len(mine)
                np.testing.assert_array_equal(got[i, h - len(mine) :], mine)
    assert pressed > 10


@pytest.mark.parametrize(
    "module", [detectors.fall, evaluation.replay, evaluation.replay_eval, device_sim.motions]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0

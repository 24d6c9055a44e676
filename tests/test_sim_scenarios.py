"""Labelled scenarios: each injects what it claims, labels are reproducible and fit routines."""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter

import numpy as np
import pytest

from detectors.base import AccelBatch
from detectors.fall import FallDetector
from device_sim.homes import SimConfig, Simulation
from device_sim.routine import IN_BED, Activity, day_of, make_profile, plan_day
from device_sim.scenarios import (
    CATALOGUE,
    DEFAULT_MIX,
    Scenario,
    accel_windows,
    apply,
    count_expected,
    iter_streams,
    plan_scenarios,
    read_labels,
    score,
    write_labels,
)
from homecare.contract import PAYLOADS, DeviceKind, Stream, Topic, check_ids

SEED = 4
START = 19723 * 86400.0  # 2024-01-01 00:00 UTC
MOTION_NAMES = [n for n, s in CATALOGUE.items() if s.kind in ("fall", "none")]


def _sim(elders: int = 12, start: float = START) -> Simulation:
    return Simulation(SimConfig(elders=elders, seed=SEED, start=start))


@pytest.fixture(scope="module")
def plan() -> list[Scenario]:
    """A week of the default mix for 12 elders (only labels: nothing is stepped)."""
    return plan_scenarios(_sim(), seed=9, days=7)


def _one(name: str) -> Scenario:
    """The first ``name`` scenario of a week planned with only that kind (half a day each)."""
    found = [s for s in plan_scenarios(_sim(), seed=9, days=7, mix={name: 0.5})
             if s.name == name]
    assert len(found) > 10, f"{name} finds too few places in the routines"
    return found[0]


def _run(sc: Scenario, before: float = 30.0, after: float = 30.0,
         until: float | None = None) -> tuple[Simulation, list[tuple[Topic, dict]]]:
    """Simulate the scenario's elder (and the others) from before its start to its end."""
    t0 = float(int(sc.start - before))
    sim = _sim(start=t0)
    apply(sim, [sc])
    end = sc.end + after if until is None else until
    msgs: list[tuple[Topic, bytes]] = []
    t = t0
    while t < end:
        msgs += sim.step(t)
        t += 1.0
    ctx = {"now": end + 1}
    parsed = []
    for topic, payload in msgs:
        model = PAYLOADS[topic.stream].model_validate_json(payload, context=ctx)
        check_ids(topic, model)
        if topic.elder == sc.elder:
            parsed.append((topic, json.loads(payload)))
    return sim, parsed


def _of(msgs: list[tuple[Topic, dict]], stream: Stream) -> list[dict]:
    return [p for t, p in msgs if t.stream == stream]


def _day(sc: Scenario):
    profile = make_profile(SEED, sc.index)
    return plan_day(profile, SEED, sc.index, day_of(profile, SEED, sc.index, sc.start))


def _segment(sc: Scenario, ts: float):
    profile = make_profile(SEED, sc.index)
    return plan_day(profile, SEED, sc.index, day_of(profile, SEED, sc.index, ts)).at(ts)


# -- labels ---------------------------------------------------------------------------


@pytest.mark.slow
def test_labels_are_deterministic_from_the_seed_and_cover_every_kind(plan, tmp_path):
    assert plan == plan_scenarios(_sim(), seed=9, days=7)
    assert plan != plan_scenarios(_sim(), seed=10, days=7)
    assert [s.id for s in plan] == [f"s{k:06d}" for k in range(len(plan))]
    assert all(s.start <= s.known <= s.end for s in plan)
    assert all(a.start <= b.start for a, b in itertools.pairwise(plan))
    per_elder: dict[int, list[Scenario]] = {}
    for s in plan:
        per_elder.setdefault(s.index, []).append(s)
    for scenarios in per_elder.values():  # never two at once for one elder
        assert all(a.end < b.start for a, b in itertools.pairwise(scenarios))
    kinds = Counter(s.kind for s in plan)
    assert kinds["none"] > 12 * 7 * 2  # several look-alikes per elder-day
    assert kinds["fall"] >= 3
    csv_path, json_path = write_labels(tmp_path / "run" / "labels", plan)
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(plan)
    assert rows[0]["id"] == plan[0].id
    assert float(rows[0]["known"]) == plan[0].known
    assert read_labels(json_path) == plan


def test_default_mix_yields_enough_events_for_a_cohort_month():
    expected = count_expected(100, 30)
    assert expected["fall"] >= 250
    assert expected["none"] >= 100 * 30 * 3
    for kind in ("sos", "inactivity", "wandering", "bed_exit", "not_up", "tachycardia",
                 "bradycardia", "low_spo2", "device_offline", "battery_low", "not_worn"):
        assert 80 <= expected[kind] <= 150, kind
    # every scenario but the recovered fall, kept out so the cohort's figures stay comparable
    assert set(DEFAULT_MIX) == set(CATALOGUE) - {"recovered_fall"}
    with pytest.raises(ValueError, match="unknown scenarios"):
        plan_scenarios(_sim(2), days=1, mix={"fall_upwards": 1.0})


@pytest.mark.slow
def test_planned_times_fit_each_routine():
    plan = plan_scenarios(_sim(), seed=12, days=7, mix=dict.fromkeys(CATALOGUE, 0.4))
    assert {s.name for s in plan} == set(CATALOGUE)
    for sc in plan:
        seg = _segment(sc, sc.known)
        if sc.kind == "fall" and sc.name != "fall_out_of_bed":
            assert seg.activity in (Activity.WALK, Activity.STAND), sc
            assert seg.worn
            assert not seg.out
        elif sc.name == "fall_out_of_bed":
            assert seg.activity in IN_BED, sc
            assert seg.worn, sc
        elif sc.name in ("sit_hard", "collapse_into_chair", "sit_hard_bed"):
            assert abs(_segment(sc, sc.known + 1).start - sc.known) < 0.05, sc
            assert _segment(sc, sc.known + 1).activity == Activity.SIT
        elif sc.name in ("stumble", "stairs_down"):
            assert seg.activity == Activity.WALK, sc
            assert seg.worn, sc
            if sc.name == "stairs_down":  # the whole flight inside one walk
                assert seg.end >= sc.start + 34, sc
        elif sc.name in ("wandering", "bed_exit"):
            start = _segment(sc, sc.start)
            assert start.activity == Activity.SLEEP, sc
            assert start.label == "asleep", sc
            assert sc.start - start.start >= 1800
            assert start.end - sc.start >= 1800
            # deep in the night, as documented: 2 h before waking (after it, getting up is
            # up for the day, and both detectors rightly stay quiet)
            assert _day(sc).end - sc.start >= 7200, sc
        elif sc.name == "not_up":
            profile = make_profile(SEED, sc.index)
            day = plan_day(profile, SEED, sc.index, day_of(profile, SEED, sc.index, sc.start))
            assert 0 <= sc.start - day.start < 1  # the usual wake-up
        elif sc.kind in ("tachycardia", "bradycardia", "low_spo2"):
            assert _segment(sc, sc.start).activity in (Activity.SIT, *IN_BED), sc
        elif sc.name in ("not_worn", "battery_low", "sos"):  # while up with it on
            assert _segment(sc, sc.start).activity not in IN_BED, sc
            assert _segment(sc, sc.start).worn, sc
            if sc.name == "not_worn":  # and the elder stays up all along, not asleep
                bedtime = next(s.start for s in _day(sc).segments if s.label == "in bed awake")
                assert sc.end <= bedtime, sc


# -- what each scenario injects -------------------------------------------------------


@pytest.mark.parametrize("name", ["fall_forward", "fall_sideways", "fall_backward"])
def test_a_fall_dips_hits_the_floor_and_the_elder_lies_there(name):
    plan = plan_scenarios(_sim(), seed=21, days=10, mix={name: 0.3})
    sc = min((s for s in plan if s.name == name), key=lambda s: s.end - s.start)
    _, msgs = _run(sc)
    frames = _of(msgs, Stream.FRAME)
    ts = np.array([f["ts"] for f in frames])
    acc = np.concatenate([np.array(f["accel"]) for f in frames])
    t = np.repeat(ts, 50) + np.tile(np.arange(50) / 50, len(ts))
    mag = np.linalg.norm(acc, axis=1)
    near = (t > sc.known - 1.0) & (t < sc.known + 0.5)
    assert mag[near].min() < 0.6  # free-fall dip
    assert mag[near].max() >= 2.0  # impact
    assert mag[(t > sc.known + 2) & (t < sc.end - 1)].std() < 0.05  # lying still
    lying = acc[(t > sc.known + 40) & (t < sc.end - 1)].mean(axis=0)
    assert abs(lying[1]) < 0.5  # not upright: on the floor
    beds = [r for r in _of(msgs, Stream.READING) if sc.known < r["ts"] < sc.end]
    assert beds
    assert not any(r["presence"] for r in beds)
    assert not [d for d in _of(msgs, Stream.EVENT) if sc.known < d["ts"] < sc.end]
    assert 120 <= sc.end - sc.known - 25 <= 600 + 30  # a long lie of 2-10 min


def test_wandering_opens_the_front_door_in_the_night_and_stays_out():
    sc = _one("wandering")
    _, msgs = _run(sc, until=sc.known + 600)
    doors = [(d["role"], d["state"], d["ts"]) for d in _of(msgs, Stream.EVENT)
             if d["ts"] >= sc.start]
    assert doors[0][:2] == ("bedroom", "opened")
    assert ("front", "opened", sc.known) in doors
    assert all(d[0] in ("bedroom", "front") for d in doors)
    hour = (sc.known % 86400) / 3600
    assert hour < 6 or hour > 21  # the sleep window
    beds = [r for r in _of(msgs, Stream.READING) if r["ts"] > sc.start + 2]
    assert beds
    assert not any(r["presence"] for r in beds)
    statuses = [s for s in _of(msgs, Stream.STATUS) if s["device"].startswith("w")
                and s["ts"] > sc.known]
    assert all(s["rssi"] <= -85 for s in statuses)  # out of the home


def test_bed_exit_leaves_the_bed_empty_and_the_elder_on_the_bathroom_floor():
    sc = _one("bed_exit")
    _, msgs = _run(sc, until=sc.start + 900)
    doors = [(d["role"], d["state"]) for d in _of(msgs, Stream.EVENT) if d["ts"] >= sc.start]
    assert doors == [("bedroom", "opened"), ("bedroom", "closed"), ("bathroom", "opened"),
                     ("bathroom", "closed")]
    before = [r for r in _of(msgs, Stream.READING) if r["ts"] < sc.start]
    after = [r for r in _of(msgs, Stream.READING) if r["ts"] > sc.start + 1]
    assert all(r["presence"] for r in before)
    assert after
    assert not any(r["presence"] for r in after)
    frames = [f for f in _of(msgs, Stream.FRAME) if f["ts"] > sc.start + 60]
    for f in frames:  # worn at night: lying still, no steps
        assert np.array(f["accel"]).std(axis=0).max() < 0.03
        assert f["steps"] == 0


@pytest.mark.slow
def test_not_up_keeps_the_elder_in_bed_past_the_usual_wake_up():
    sc = _one("not_up")
    _, msgs = _run(sc, before=60, until=sc.start + 1800)
    after = [r for r in _of(msgs, Stream.READING) if r["ts"] >= sc.start]
    assert after
    assert all(r["presence"] for r in after)
    assert not [d for d in _of(msgs, Stream.EVENT) if d["ts"] >= sc.start]
    assert _segment(sc, sc.start + 1200).activity not in IN_BED  # the routine would be up


@pytest.mark.parametrize("name", ["tachycardia", "bradycardia", "low_spo2"])
def test_vital_sign_episodes_reach_their_targets(name):
    plan = plan_scenarios(_sim(), seed=5, days=10, mix={name: 0.2})
    sc = next(s for s in plan if s.device.startswith("w"))
    _, msgs = _run(sc, until=sc.known + 120)
    frames = [f for f in _of(msgs, Stream.FRAME) if f["ts"] >= sc.known]
    before = [f for f in _of(msgs, Stream.FRAME) if f["ts"] < sc.start]
    assert len(frames) >= 100
    hr = np.array([f["hr"] for f in frames])
    spo2 = np.array([f["spo2"] for f in frames])
    if name == "tachycardia":
        assert hr.min() > 120
        assert abs(hr.mean() - sc.params["hr"]) < 5
    elif name == "bradycardia":
        assert hr.max() < 45
    else:
        assert spo2.max() < 90
        assert abs(spo2.mean() - sc.params["spo2"]) <= 1
        assert min(f["spo2"] for f in before) >= 93
    assert 50 <= np.mean([f["hr"] for f in before]) <= 100


def test_bed_sees_a_heart_episode_at_night():
    plan = plan_scenarios(_sim(), seed=6, days=15, mix={"tachycardia": 0.3})
    sc = next(s for s in plan if s.device.startswith("b"))
    _, msgs = _run(sc, until=sc.known + 300)
    beds = [r for r in _of(msgs, Stream.READING) if r["ts"] > sc.known and r["presence"]]
    assert beds
    assert min(r["hr"] for r in beds) > 120


def test_offline_silences_the_device_until_the_end():
    sc = _one("device_offline")
    t0 = float(int(sc.start - 400))
    sim = _sim(start=t0)
    apply(sim, [sc])
    window = [m for t in np.arange(t0, sc.start + 700) for m in sim.step(float(t))]
    later = [m for t in np.arange(sc.end - 5, sc.end + 700) for m in sim.step(float(t))]
    mine = [json.loads(p)["ts"] for t, p in window if t.device == sc.device]
    assert mine
    assert max(mine) < sc.start
    assert sc.start < sc.known <= sc.start + 300  # the first missed status report
    assert [t for t, p in later if t.device == sc.device and t.stream == Stream.STATUS]
    others = {t.device for t, p in window if t.elder == sc.elder and
              json.loads(p)["ts"] > sc.start}
    assert others
    assert sc.device not in others


def test_a_silent_bed_is_known_from_its_first_missed_reading():
    # A bed sensor reads every 10 s: its silence is evident long before its next status
    # report (the label's known time was that report, so offline came "too early").
    plan = plan_scenarios(_sim(), seed=9, days=7, mix={"device_offline": 1.0})
    sc = next(s for s in plan if s.device.startswith("b"))
    t0 = float(int(sc.start - 60))
    sim = _sim(start=t0)
    reads = [json.loads(p)["ts"] for t in np.arange(t0, sc.start + 60)
             for topic, p in sim.step(float(t)) if topic.device == sc.device
             and topic.stream == Stream.READING]
    assert sc.known == min(t for t in reads if t >= sc.start)  # without the silence
    assert sc.known - sc.start < sim.config.bed_period_s


@pytest.mark.slow
def test_battery_drains_below_15_percent_then_is_recharged():
    sc = _one("battery_low")
    t0 = float(int(sc.start - 5))
    sim = _sim(elders=sc.index + 1, start=t0)
    apply(sim, [sc])
    for t in np.arange(t0, int(sc.known) - 400):  # hours of draining
        sim.step(float(t))
    msgs = [m for t in np.arange(int(sc.known) - 400, sc.known + 400) for m in sim.step(float(t))]
    frames = [json.loads(p) for t, p in msgs if t.stream == Stream.FRAME and t.elder == sc.elder]
    early = [f["battery"] for f in frames if f["ts"] < sc.known - 60]
    late = [f["battery"] for f in frames if f["ts"] > sc.known + 60]
    assert early
    assert min(early) > 15
    assert late
    assert max(late) < 15
    after = [m for t in np.arange(sc.end - 2, sc.end + 600) for m in sim.step(float(t))]
    status = [json.loads(p) for t, p in after if t.device == sc.device and
              t.stream == Stream.STATUS]
    assert status
    assert status[0]["battery"] >= 60


def test_not_worn_sends_still_frames_without_vital_signs():
    sc = _one("not_worn")
    _, msgs = _run(sc, until=sc.start + 120)
    frames = [f for f in _of(msgs, Stream.FRAME) if f["ts"] >= sc.start + 1]
    assert len(frames) >= 110
    for f in frames:
        assert "hr" not in f
        assert "spo2" not in f
        assert f["steps"] == 0
        assert np.array(f["accel"]).std(axis=0).max() < 0.004  # sensor noise only
    seg = _segment(sc, sc.start + 60)
    assert seg.activity not in IN_BED
    assert not seg.out


def test_sos_is_pressed_at_the_labelled_time():
    sc = _one("sos")
    _, msgs = _run(sc, before=5, after=5)
    assert [p["ts"] for p in _of(msgs, Stream.SOS)] == [sc.start]


# -- the fast path and the fall detector ----------------------------------------------


def test_accel_windows_carry_the_same_motion_as_the_simulation():
    plan = plan_scenarios(_sim(), seed=3, days=5, mix={"fall_backward": 0.2, "stumble": 0.5})
    sc = min((s for s in plan if s.name == "fall_backward"), key=lambda s: s.end)
    (window,) = accel_windows(_sim(), [sc], before_s=10, after_s=20)
    _, msgs = _run(sc, before=10, until=sc.start + 60)
    frames = {f["ts"]: np.array(f["accel"]) for f in _of(msgs, Stream.FRAME)}
    inside = [k for k, ts in enumerate(window.ts) if sc.start + 1 <= ts < sc.known + 10]
    assert len(inside) >= 12
    for k in inside:
        np.testing.assert_allclose(window.accel[k], frames[window.ts[k]], atol=6e-4)
    assert window.ts[0] <= sc.start - 9
    assert window.ts[-1] >= sc.start + 50


def test_accel_windows_carry_the_bed_sensors_readings_as_the_simulation_sends_them():
    sc = _one("fall_out_of_bed")
    (window,) = accel_windows(_sim(), [sc], before_s=40, after_s=30)
    _, msgs = _run(sc, before=40, until=sc.start + 60)
    sent = {p["ts"]: p["presence"] for t, p in msgs
            if t.kind == DeviceKind.BED and t.elder == sc.elder and t.stream == Stream.READING}
    said = dict(zip(window.bed_ts.tolist(), window.bed_presence.tolist(), strict=True))
    shared = [ts for ts in said if ts in sent]
    assert len(shared) >= 5
    assert all(said[ts] == sent[ts] for ts in shared)
    # in bed before the fall, on the floor after it
    assert all(said[ts] for ts in said if ts < sc.start)
    assert not any(said[ts] for ts in said if ts > sc.known + 1)


@pytest.mark.slow
def test_fall_detector_finds_the_injected_falls_and_not_the_look_alikes():
    sim = _sim(elders=20)
    mix = {n: DEFAULT_MIX[n] * (8 if CATALOGUE[n].kind == "fall" else 1) for n in MOTION_NAMES}
    plan = plan_scenarios(sim, seed=8, days=3, mix=mix)
    windows = accel_windows(sim, plan)
    assert {w.scenario.name for w in windows} == set(MOTION_NAMES)
    det = FallDetector()
    hits: Counter[int] = Counter()
    for k in range(max(len(w.ts) for w in windows)):  # one detector row per window
        rows = np.array([j for j, w in enumerate(windows) if k < len(w.ts)])
        batch = AccelBatch(rows, np.array([windows[j].ts[k] for j in rows]),
                           np.stack([windows[j].accel[k] for j in rows]), 50.0)
        for d in det.update(batch):
            sc = windows[d.row].scenario
            assert abs(d.ts - sc.known) < 1.0 or sc.kind != "fall"
            hits[d.row] += 1
    falls = [j for j, w in enumerate(windows) if w.scenario.kind == "fall"]
    others = [j for j, w in enumerate(windows) if w.scenario.kind != "fall"]
    assert len(falls) >= 25
    assert len(others) >= 200
    assert sum(hits[j] > 0 for j in falls) / len(falls) >= 0.95
    assert sum(hits[j] > 0 for j in others) / len(others) <= 0.01


@pytest.mark.slow
def test_fast_streams_match_the_simulation_second_for_second():
    start = START + 6.5 * 3600  # the wake-up hours: every kind of message
    mix = {"sos": 8.0, "fall_forward": 4.0, "tachycardia": 8.0, "not_worn": 8.0, "bend": 8.0,
           "not_up": 8.0}
    plan = plan_scenarios(_sim(8, start), seed=2, days=0.1, mix=mix)
    assert len({s.name for s in plan}) >= 4
    chunks = list(iter_streams(_sim(8, start), plan, 0.1, chunk_s=1000))
    assert [c.t0 for c in chunks] == [start + k * 1000 for k in range(len(chunks))]
    sim = _sim(8, start)
    apply(sim, plan)
    got: dict[Stream, set] = {s: set() for s in Stream}
    hr: dict[tuple[int, float], int] = {}
    for k in range(8640):
        for topic, payload in sim.step(start + k):
            p = json.loads(payload)
            i = int(topic.elder[1:]) - 1
            key: tuple = (i, p["ts"])
            if topic.stream == Stream.FRAME:
                hr[key] = p.get("hr", -1)
            elif topic.stream == Stream.READING:
                key = (i, p["ts"], p["presence"])
            elif topic.stream == Stream.EVENT:
                key = (i, p["ts"], p["role"], p["state"])
            elif topic.stream == Stream.STATUS:
                key = (i, "wbd".index(p["device"][0]), p["ts"])
            got[topic.stream].add(key)

    def cols(stream: str, *names: str) -> set:
        return set(zip(*[np.concatenate([getattr(c, stream)[n] for c in chunks]).tolist()
                         for n in names], strict=True))

    assert cols("wearable", "elder", "ts") == got[Stream.FRAME]
    assert cols("bed", "elder", "ts", "presence") == got[Stream.READING]
    doors = {(e, round(t, 3), r, s) for e, t, r, s in cols("doors", "elder", "ts", "role",
                                                            "state")}
    assert doors == got[Stream.EVENT]
    assert cols("status", "elder", "kind", "ts") == got[Stream.STATUS]
    assert cols("buttons", "elder", "ts") == got[Stream.SOS]
    fast_hr = {(e, t): h for e, t, h in cols("wearable", "elder", "ts", "hr")}
    diff = np.array([fast_hr[k] - v for k, v in hr.items()])
    assert np.abs(diff).mean() < 3  # the same model, its own noise
    assert np.percentile(np.abs(diff), 99) <= 8
    tachy = [s for s in plan if s.name == "tachycardia" and s.device.startswith("w")]
    assert tachy
    during = [h for sc in tachy for (e, t), h in fast_hr.items()
              if e == sc.index and sc.known <= t < sc.end]
    assert len(during) > 100
    assert min(during) > 120


@pytest.mark.slow  # plans a week of 12 elders first
def test_score_counts_hits_misses_and_false_alarms(plan):
    falls = [s for s in plan if s.kind == "fall"]
    look = next(s for s in plan if s.kind == "none")
    detections = [("fall", s.elder, s.known + 0.3) for s in falls[1:]]
    detections += [("fall", look.elder, look.known)]  # a look-alike raised a fall
    detections += [("inactivity", falls[0].elder, falls[0].end)]  # allowed during a fall
    detections += [("fall", look.elder, max(s.end for s in plan) + 5000.0)]  # nothing there
    result = score(plan, detections)
    assert result["fall"]["events"] == len(falls)
    assert result["fall"]["detected"] == len(falls) - 1
    assert result["fall"]["recall"] == pytest.approx((len(falls) - 1) / len(falls))
    assert result["fall"]["look_alike_alarms"] == 1
    assert result["fall"]["false_alarms"] == 2  # the look-alike, and the one after all
    assert "inactivity" not in result or result["inactivity"]["false_alarms"] == 0


@pytest.mark.slow
def test_fast_streams_carry_the_mag_std_that_ingest_computes_live():
    # The fast path used to hand detectors the spread of the acceleration *vector* as
    # ``mag_std``: √3 × what frame_stats computes from the same frames for a still body,
    # so sitting (0.021 vs 0.012 g) counted as movement for the inactivity detector.
    from homecare.frames import frame_stats

    start = START + 7 * 3600
    plan = plan_scenarios(_sim(4, start), seed=2, days=0.05, mix={"fall_forward": 20.0})
    fast = {}
    for c in iter_streams(_sim(4, start), plan, 0.05, chunk_s=1000):
        w = c.wearable
        keys = zip(w["elder"].tolist(), w["ts"].tolist(), strict=True)
        fast.update(zip(keys, w["mag_std"].tolist(), strict=True))
    sim = _sim(4, start)
    apply(sim, plan)
    ratio = []
    for k in range(int(0.05 * 86400)):
        for topic, payload in sim.step(start + k):
            if topic.stream == Stream.FRAME:
                p = json.loads(payload)
                live = frame_stats(np.array([p["accel"]], np.float32))["mag_std"][0]
                ratio.append(fast[(int(topic.elder[1:]) - 1, p["ts"])] / max(live, 1e-4))
    ratio = np.array(ratio)
    assert len(ratio) > 5000
    assert 0.9 < np.median(ratio) < 1.1
    assert np.percentile(ratio, 10) > 0.75
    assert np.percentile(ratio, 90) < 1.3

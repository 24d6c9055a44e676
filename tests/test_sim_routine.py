"""The simulated routines and signals: determinism, consistency, physics, the wire contract."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from device_sim import Activity, OkPress, SimConfig, Simulation, SosPress
from device_sim.encode import accel_json
from device_sim.homes import Motion
from device_sim.routine import IN_BED, Day, Segment, day_of, make_profile, plan_day
from homecare.contract import (
    PAYLOADS,
    DoorRole,
    Stream,
    Topic,
    WearableFrame,
    check_ids,
)

SEED = 11
DAY = 19723  # 2024-01-01
NOON = DAY * 86400.0 + 12 * 3600.0


def _plans(elders: int = 40, days: int = 3) -> list[tuple[int, Day]]:
    out = []
    for i in range(elders):
        profile = make_profile(SEED, i)
        out += [(i, plan_day(profile, SEED, i, DAY + d)) for d in range(days)]
    return out


def _find(pred, elders: int = 60) -> tuple[int, Segment]:
    """The first (elder, segment) of day DAY matching pred."""
    for i in range(elders):
        for seg in plan_day(make_profile(SEED, i), SEED, i, DAY).segments:
            if pred(make_profile(SEED, i), seg):
                return i, seg
    raise AssertionError("no such segment in the simulated population")


def _run(sim: Simulation, t0: float, seconds: int) -> list[tuple[Topic, bytes]]:
    msgs: list[tuple[Topic, bytes]] = []
    for k in range(seconds):
        msgs += sim.step(t0 + k)
    return msgs


def _frames(msgs, elder: str) -> list[dict]:
    return [json.loads(p) for t, p in msgs if t.stream == Stream.FRAME and t.elder == elder]


# -- routine --------------------------------------------------------------------------


def test_days_are_contiguous_and_chain_from_wake_to_wake():
    for i, day in _plans():
        segs = day.segments
        assert segs[0].start == day.start
        assert segs[-1].end == day.end
        assert all(a.end == b.start for a, b in itertools.pairwise(segs))
        assert all(s.end > s.start for s in segs)
        assert segs[0].activity == Activity.IN_BED
        assert segs[-1].activity == Activity.SLEEP
        nxt = plan_day(make_profile(SEED, i), SEED, i, day.day + 1)
        assert nxt.start == day.end
        local_wake_h = (day.start % 86400) / 3600
        assert 5.0 <= local_wake_h <= 9.75
        assert sum(s.end - s.start for s in segs if s.activity == Activity.SLEEP) > 5 * 3600


def test_plans_are_deterministic_and_vary_by_seed_elder_and_day():
    a = plan_day(make_profile(SEED, 3), SEED, 3, DAY)
    assert a == plan_day(make_profile(SEED, 3), SEED, 3, DAY)
    assert a != plan_day(make_profile(SEED + 1, 3), SEED + 1, 3, DAY)
    assert a.segments != plan_day(make_profile(SEED, 4), SEED, 4, DAY).segments
    b = plan_day(make_profile(SEED, 3), SEED, 3, DAY + 1)
    assert a.start % 86400 != b.start % 86400  # wake time varies a little per day


def test_doors_open_then_close_within_seconds():
    for _, day in _plans():
        by_role: dict[DoorRole, list] = {}
        for action in day.doors:
            by_role.setdefault(action.role, []).append(action)
        for actions in by_role.values():
            states = [a.state for a in actions]
            assert states == ["opened", "closed"] * (len(states) // 2)
            for opened, closed in zip(actions[::2], actions[1::2], strict=True):
                assert 2.0 <= closed.ts - opened.ts <= 8.0


def test_bathroom_door_around_every_toilet_visit_including_at_night():
    night_trips = 0
    for _, day in _plans():
        bath = [a.ts for a in day.doors if a.role == DoorRole.BATHROOM and a.state == "opened"]
        bedroom = [a.ts for a in day.doors if a.role == DoorRole.BEDROOM]
        for seg in day.segments:
            if seg.label != "toilet":
                continue
            before = [ts for ts in bath if seg.start - 900 <= ts <= seg.start]
            after = [ts for ts in bath if seg.end <= ts <= seg.end + 500]
            assert before, f"no bathroom door before toilet at {seg.start}"
            assert after, f"no bathroom door after toilet at {seg.end}"
            hour = (seg.start % 86400) / 3600
            if hour < 4.5:  # a night trip: out of the bedroom and back
                night_trips += 1
                assert any(seg.start - 300 <= ts <= seg.start for ts in bedroom)
                assert any(seg.end <= ts <= seg.end + 900 for ts in bedroom)
    assert night_trips > 10


def test_outings_pass_the_front_door_and_nothing_else_happens_while_out():
    outings = 0
    for _, day in _plans():
        front = [a for a in day.doors if a.role == DoorRole.FRONT]
        segs = day.segments
        for k, seg in enumerate(segs):
            if seg.out and not segs[k - 1].out:  # leaving
                outings += 1
                assert any(a.state == "opened" and seg.start - 5 <= a.ts <= seg.start
                           for a in front)
                back = next(s for s in segs[k:] if not s.out)
                assert any(a.state == "opened" and back.start - 5 <= a.ts <= back.start
                           for a in front)
                inside = [a for a in day.doors if seg.start + 10 < a.ts < back.start - 5]
                assert inside == [], "doors at home moved while the elder was out"
            if seg.out:
                assert seg.activity not in IN_BED
    assert outings > 20


def test_wearable_worn_24_7_or_charged_at_night():
    for i, day in _plans(elders=30, days=1):
        profile = make_profile(SEED, i)
        asleep = [s for s in day.segments if s.label == "asleep"]  # the night, not naps
        walks = [s for s in day.segments if s.activity == Activity.WALK and s.label == "potter"]
        assert all(s.worn for s in walks)
        assert asleep
        assert all(s.worn == profile.wears_at_night for s in asleep)


# -- simulation -----------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes():
    def run(seed: int) -> list[tuple[Topic, bytes]]:
        return _run(Simulation(SimConfig(elders=8, seed=seed, start=NOON)), NOON, 30)

    a, b = run(5), run(5)
    assert a == b
    assert len(a) > 8 * 30 * 0.5
    assert a != run(6)


def test_every_payload_validates_and_matches_its_topic():
    start = DAY * 86400.0 + 7 * 3600.0  # wake-up hour: every kind of message
    sim = Simulation(SimConfig(elders=30, seed=SEED, start=start, site="north", rate=25))
    sim.inject(0, start + 3.5, SosPress())
    sim.inject(0, start + 9.0, OkPress())
    sim.inject(0, start + 12.0, SosPress())
    msgs = _run(sim, start, 600)
    ctx = {"now": start + 600}
    seen: set[Stream] = set()
    for topic, payload in msgs:
        parsed = Topic.parse(str(topic))
        assert parsed == topic
        model = PAYLOADS[topic.stream].model_validate_json(payload, context=ctx)
        check_ids(topic, model)
        assert start <= model.ts < start + 600
        seen.add(topic.stream)
    assert seen == {Stream.FRAME, Stream.READING, Stream.EVENT, Stream.STATUS, Stream.SOS,
                    Stream.OK}
    buttons = [(t.stream, json.loads(p)) for t, p in msgs if t.stream in (Stream.SOS, Stream.OK)]
    assert [(s, b["seq"], b["ts"]) for s, b in buttons] == [
        (Stream.SOS, 0, start + 3.5), (Stream.OK, 1, start + 9.0), (Stream.SOS, 2, start + 12.0)]
    statuses = [t.device for t, _ in msgs if t.stream == Stream.STATUS]
    assert sorted(set(statuses)) == sorted(d.device for e in sim.elders for d in e.devices)
    assert all(statuses.count(d) == 2 for d in set(statuses))  # every 300 s


def test_frames_only_while_worn_one_per_second():
    start = DAY * 86400.0 + 2 * 3600.0  # 02:00: night chargers' wearables are on the charger
    sim = Simulation(SimConfig(elders=20, seed=SEED, start=start))
    msgs = _run(sim, start, 20)
    for e in sim.elders:
        frames = _frames(msgs, e.elder)
        worn = sim.day(e.index).at(start).worn
        assert len(frames) == (20 if worn else 0)
        assert [f["ts"] for f in frames] == [start + k for k in range(len(frames))]
        assert all(len(f["accel"]) == 50 for f in frames)
    assert any(e.profile.wears_at_night for e in sim.elders)
    assert not all(e.profile.wears_at_night for e in sim.elders)


def test_bed_presence_follows_the_routine():
    for hour in (3.0, 7.0, 12.0, 22.5):
        start = DAY * 86400.0 + hour * 3600.0
        sim = Simulation(SimConfig(elders=25, seed=SEED, start=start, bed_period_s=10))
        msgs = _run(sim, start, 120)
        readings = [json.loads(p) for t, p in msgs if t.stream == Stream.READING]
        assert len(readings) == 25 * 12
        for r in readings:
            i = int(r["elder"][1:]) - 1
            profile = sim.elders[i].profile
            seg = plan_day(profile, SEED, i, day_of(profile, SEED, i, r["ts"])).at(r["ts"])
            assert r["presence"] == (seg.activity in IN_BED and not seg.out), (hour, r, seg)
            if r["presence"]:
                assert 6 <= r["br"] <= 40
                assert r["hr"] is not None
                assert 0 <= r["movement"] <= 1
            else:
                assert r["br"] is None
                assert r["hr"] is None
        if hour == 3.0:
            assert sum(r["presence"] for r in readings) > len(readings) * 0.8


def test_out_of_home_no_bed_no_doors_but_wearable_keeps_walking():
    i, seg = _find(lambda p, s: s.out and s.activity == Activity.WALK and s.end - s.start > 200)
    sim = Simulation(SimConfig(elders=i + 1, seed=SEED, start=seg.start + 30))
    msgs = [m for m in _run(sim, seg.start + 30, 120) if m[0].elder == f"e{i + 1:04d}"]
    readings = [json.loads(p) for t, p in msgs if t.stream == Stream.READING]
    assert readings
    assert not any(r["presence"] for r in readings)
    assert not [t for t, _ in msgs if t.stream == Stream.EVENT]
    frames = _frames(msgs, f"e{i + 1:04d}")
    assert len(frames) == 120
    assert sum(f["steps"] for f in frames) > 120 * 1.7


def _dominant_hz(frames: list[dict], axis: int, rate: int) -> float:
    signal = np.array([s[axis] for f in frames for s in f["accel"]])
    spectrum = np.abs(np.fft.rfft(signal - signal.mean()))
    freqs = np.fft.rfftfreq(len(signal), 1.0 / rate)
    return float(freqs[np.argmax(spectrum)])


def test_gait_at_1_8_to_2_hz_and_upright():
    i, seg = _find(lambda p, s: s.activity == Activity.WALK and s.worn and s.end - s.start > 45)
    sim = Simulation(SimConfig(elders=i + 1, seed=SEED, start=seg.start + 1))
    frames = _frames(_run(sim, seg.start + 1, 40), f"e{i + 1:04d}")
    assert len(frames) == 40
    peak = _dominant_hz(frames, axis=1, rate=50)
    assert 1.8 <= seg.gait_hz <= 2.0
    assert 1.78 <= peak <= 2.02
    assert abs(peak - seg.gait_hz) <= 0.03  # FFT resolution over 40 s: 0.025 Hz
    y = np.array([s[1] for f in frames for s in f["accel"]])
    assert -1.05 < y.mean() < -0.95
    assert 1.6 * 40 <= sum(f["steps"] for f in frames) <= 2.0 * 40 + 1


def test_lying_in_bed_puts_gravity_off_the_body_axis():
    i, seg = _find(lambda p, s: p.wears_at_night and s.activity == Activity.SLEEP
                   and s.end - s.start > 120)
    sim = Simulation(SimConfig(elders=i + 1, seed=SEED, start=seg.start + 1))
    frames = _frames(_run(sim, seg.start + 1, 30), f"e{i + 1:04d}")
    acc = np.array([s for f in frames for s in f["accel"]])
    mean = acc.mean(axis=0)
    assert abs(mean[1]) < 0.3  # not upright
    assert max(abs(mean[0]), abs(mean[2])) > 0.85  # on the back (z) or a side (x)
    assert 0.95 < np.linalg.norm(mean) < 1.05
    assert acc.std(axis=0).max() < 0.02  # asleep: still


def test_heart_rate_higher_walking_than_asleep():
    i, walk = _find(lambda p, s: p.wears_at_night and s.out and s.activity == Activity.WALK
                    and s.end - s.start > 400)
    profile = make_profile(SEED, i)
    sleep = next(s for s in plan_day(profile, SEED, i, DAY).segments
                 if s.activity == Activity.SLEEP and s.end - s.start > 600)
    elder = f"e{i + 1:04d}"

    def mean_hr(seg: Segment) -> float:
        sim = Simulation(SimConfig(elders=i + 1, seed=SEED, start=seg.start))
        frames = _frames(_run(sim, seg.start, 300), elder)
        return float(np.mean([f["hr"] for f in frames[150:]]))  # after the 25 s lag settles

    walking, asleep = mean_hr(walk), mean_hr(sleep)
    assert walking > asleep + 15
    assert profile.rest_hr - 15 < asleep < profile.rest_hr


def test_injected_motion_replaces_samples_and_holds_the_elder_on_the_floor():
    start = NOON
    sim = Simulation(SimConfig(elders=3, seed=SEED, start=start))
    spike = np.zeros((25, 3))
    spike[:, 2] = 5.0
    sim.inject(1, start + 2.5, Motion(spike, hold_s=60))
    msgs = _run(sim, start, 30)
    frames = _frames(msgs, "e0002")
    assert len(frames) == 30
    z = np.array([s[2] for f in frames for s in f["accel"]])
    assert np.all(z[125:150] == 5.0)
    assert np.all(z[150:] < 2.0)
    later = np.array([s for f in frames[10:] for s in f["accel"]]).mean(axis=0)
    assert later[2] > 0.85  # lying on the back on the floor
    readings = [json.loads(p) for t, p in msgs if t.stream == Stream.READING and t.elder == "e0002"]
    assert readings[-1]["presence"] is False


def test_fast_accel_json_is_exact_json():
    rng = np.random.default_rng(0)
    accel = rng.normal(0, 3, (40, 50, 3))
    accel[0, 0] = (15.996, -16.5, 0.0)
    for row, text in zip(accel, accel_json(accel), strict=True):
        parsed = np.array(json.loads(text))
        expected = np.clip(np.round(row, 3), -16, 16)
        assert parsed.shape == (50, 3)
        np.testing.assert_allclose(parsed, expected, atol=0.0051)
    frame = b'{"elder":"e1","device":"w1","ts":1.0,"rate":50,"accel":' + text + b"}"
    WearableFrame.model_validate_json(frame, context={"now": 1.0})


@pytest.mark.parametrize("rate", [25, 100])
def test_rate_is_configurable(rate):
    sim = Simulation(SimConfig(elders=5, seed=1, start=NOON, rate=rate))
    frames = [json.loads(p) for t, p in sim.step(NOON) if t.stream == Stream.FRAME]
    assert frames
    assert all(f["rate"] == rate and len(f["accel"]) == rate for f in frames)
    with pytest.raises(ValueError, match="rate"):
        SimConfig(rate=120)

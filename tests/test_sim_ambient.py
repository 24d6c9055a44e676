"""A fitted home's motion sensors and mats in the live simulator: the same events as
``homecare sim-home`` renders from the routine, as contract messages, and none in homes
that are not fitted."""

from __future__ import annotations

import json

import pytest

from device_sim import SimConfig, Simulation
from device_sim.ambient import AmbientFeed, ambient_events, fitted
from device_sim.routine import make_profile, plan_day
from homecare.contract import PAYLOADS, DeviceKind, Stream, check_ids

DAY = 19723


def _run(sim: Simulation, seconds: int) -> list:
    out = []
    while seconds > 0:
        out += sim.step(sim.clock, min(600.0, seconds))
        seconds -= 600
    return out


@pytest.mark.parametrize(("share", "homes"), [(0.0, []), (0.5, [1, 3]), (1.0, [0, 1, 2, 3]),
                                               (0.25, [3])])
def test_a_share_of_the_homes_is_fitted_evenly(share, homes):
    assert [i for i in range(4) if fitted(i, share)] == homes
    sim = Simulation(SimConfig(elders=4, seed=1, start=DAY * 86400.0, ambient=share))
    assert [e.index for e in sim.elders if e.ambient] == homes
    for e in sim.elders:
        kinds = [d.kind for d in e.devices]
        assert kinds[:3] == [DeviceKind.WEARABLE, DeviceKind.BED, DeviceKind.DOOR]
        assert kinds.count(DeviceKind.MOTION) == (6 if e.index in homes else 0)
        assert kinds.count(DeviceKind.MAT) == (2 if e.index in homes else 0)


def test_out_of_range_share_is_refused():
    with pytest.raises(ValueError, match="ambient share"):
        SimConfig(ambient=1.5)


def test_motion_and_mats_follow_the_routine_as_sim_home_renders_it():
    """Across the wake-up that divides two planned days: every event sim-home logs (minus
    a bed mat's free-then-occupied in the same second) arrives as a valid message."""
    profile = make_profile(5, 0)
    day = plan_day(profile, 5, 0, DAY)
    start = day.end - 1800.0  # the night's last half hour, then the morning
    sim = Simulation(SimConfig(elders=1, seed=5, start=start, rate=25, ambient=1.0))
    msgs = _run(sim, 5400)
    got = []
    statuses = set()
    for topic, payload in msgs:
        if topic.kind not in (DeviceKind.MOTION, DeviceKind.MAT):
            continue
        model = PAYLOADS[topic.stream].model_validate_json(payload, context={"now": start + 5400})
        check_ids(topic, model)
        if topic.stream is Stream.STATUS:
            statuses.add(topic.device)
            continue
        body = json.loads(payload)
        got.append((body["ts"], topic.device, body["state"]))
    assert len(statuses) == 8  # every sensor reports its status in 90 min
    expected = [e for d in (day, plan_day(profile, 5, 0, DAY + 1)) for e in ambient_events(d)
                if e[2] in ("motion", "mat") and start <= e[0] < start + 5400]
    boundary = [e for e in expected if e[1] == "bed-mat" and e[0] == day.end]
    assert [e[4] for e in boundary] == [0.0, 1.0]  # sim-home's log: free, occupied
    expected = [e for e in expected if e not in boundary]
    assert len(got) == len(expected) > 10
    places = {"bed-mat": "bed", "chair-mat": "chair"}
    for (ts, device, state), (ets, sensor, _, _, value) in zip(got, expected, strict=True):
        assert ts == pytest.approx(ets, abs=1e-3)
        assert device.endswith(places.get(sensor, sensor.removeprefix("pir-")))
        assert (state in ("detected", "occupied")) == (value > 0.5)
    assert [ts for ts, *_ in got] == sorted(ts for ts, *_ in got)


def test_a_feed_seeks_into_a_day_and_keeps_a_sensors_state():
    profile = make_profile(5, 0)
    day = plan_day(profile, 5, 0, DAY)
    middle = (day.start + day.end) / 2
    feed = AmbientFeed(lambda n: plan_day(profile, 5, 0, n), DAY, middle)
    events = feed.until(day.end + 3600.0)
    assert events
    assert all(middle <= e[0] < day.end + 3600.0 for e in events)
    last: dict[str, float] = {}
    for _, sensor, _, _, value in events:
        assert last.get(sensor) != value  # no repeated state
        last[sensor] = value

"""Recovered falls: a fall the wearer gets up from is recorded (``fall_recovered``, how long
they were down), told to the family and never the critical alarm; lying still stays it."""

from __future__ import annotations

import numpy as np
import pytest
from support import constant_model

from detectors.base import AccelBatch
from detectors.fall import RECOVERED, FallDetector
from detectors.fall_model import FallModels, Placement
from device_sim.motions import motion
from device_sim.scenarios import CATALOGUE
from escalation.ladder import EscalationPolicy
from escalation.messages import what_happened
from escalation.registry import Registry
from evaluation.replay import Trace, replay
from evaluation.replay_eval import get_up
from homecare.contract import Alert


def _kinds(name: str, seeds: range, placement: Placement = Placement.WAIST) -> list[list[str]]:
    """Per seed, the kinds the detector reports on motion ``name`` (any orientation)."""
    traces = [Trace(str(k), motion(name, np.random.default_rng(k), orientation="random")[1], 50.0)
              for k in seeds]  # fmt: skip
    events = replay(traces, placement=placement)
    return [[e["kind"] for e in events if e["file"] == str(k)] for k in seeds]


def test_a_recovered_fall_is_recorded_once_and_is_no_alarm():
    rng = np.random.default_rng(11)
    _, xyz, info = motion("recovered_fall", rng, rate=50)
    det = FallDetector()
    det.place(np.array([0]), Placement.CHEST)
    found = []
    for k in range(len(xyz) // 50):
        frame = xyz[None, k * 50 : (k + 1) * 50]
        found += det.update(AccelBatch(np.array([0]), np.array([float(k)]), frame, 50.0))
    assert [(d.kind, d.severity.value) for d in found] == [(RECOVERED, "warning")]
    [d] = found
    assert abs(d.ts - info["impact_t"]) < 0.5
    # down from the impact until upright: the simulated time down, within a frame or two
    assert info["down_s"] - 1 <= d.evidence["down_s"] <= info["down_s"] + 3


@pytest.mark.parametrize("placement", [Placement.WAIST, Placement.CHEST, Placement.UNKNOWN])
def test_getting_up_or_lying_still_decide_the_kind(placement):
    recovered = _kinds("recovered_fall", range(8), placement)
    assert sum(k == [RECOVERED] for k in recovered) >= 7
    assert not any("fall" in k for k in recovered)  # never the critical alarm
    still = _kinds("fall_sideways", range(4), placement)
    assert all(k == ["fall"] for k in still)


def test_look_alikes_are_no_recovered_fall():
    for name in ("bend", "sit_hard", "stumble", "jump", "collapse_into_chair", "stairs_down"):
        assert not any(RECOVERED in k for k in _kinds(name, range(5))), name


def test_a_recording_cut_before_lying_still_gets_up():
    """The evaluation's --cut-after turns a fall that ends on the floor into one got up from."""
    _, xyz, _ = motion("fall_backward", np.random.default_rng(4), rate=50)
    up = get_up(xyz, 50.0, 3.0, np.random.default_rng(0))
    [event] = replay([Trace("cut", up, 50.0)], hold_end_s=15, placement=Placement.WAIST)
    assert event["kind"] == RECOVERED
    assert 2.0 <= event["down_s"] <= 6.0


def test_on_the_wrist_a_recognised_fall_got_up_from_stays_the_alarm():
    """The wrist's model decides; a fall it recognises is the critical alarm even when the
    arm comes back to its posture before (the arm's posture is weak evidence of getting up:
    docs/falls.md), and the wearer's "I'm OK" cancels it. Unrecognised: nothing."""
    models = FallModels({Placement.WRIST: constant_model(0.9)})
    falls = [motion("wrist_fall_forward", np.random.default_rng(k), orientation="random")[1]
             for k in range(4)]  # fmt: skip
    traces = [Trace(f"down{k}", xyz, 50.0) for k, xyz in enumerate(falls)]
    traces += [Trace(f"up{k}", get_up(xyz, 50.0, 3.0, np.random.default_rng(k)), 50.0)
               for k, xyz in enumerate(falls)]  # fmt: skip
    events = replay(traces, hold_end_s=15, placement=Placement.WRIST, models=models)
    assert [(e["file"], e["kind"]) for e in events] == [(t.name, "fall") for t in traces]
    none = replay(traces, hold_end_s=15, placement=Placement.WRIST,
                  models=FallModels({Placement.WRIST: constant_model(0.1)}))  # fmt: skip
    assert none == []


def test_the_family_is_told_without_the_call_centre():
    reg = Registry.model_validate({
        "provider": {"call_centre": "arc"},
        "contacts": [
            {"id": "arc", "name": "ARC", "role": "call_centre",
             "channels": [{"kind": "call_centre", "address": "https://arc/alarm"}]},
            {"id": "f1", "name": "Ann", "role": "family",
             "channels": [{"kind": "email", "address": "ann@example.org"}]},
        ],
        "elders": [{"id": "e1", "display_name": "Bo", "site": "s", "address": "1 Lane",
                    "contacts": ["f1"]}],
    })  # fmt: skip
    policy = EscalationPolicy(secret=b"k")
    alert = Alert(
        id="a1",
        site="s",
        elder="e1",
        kind=RECOVERED,
        severity="warning",
        ts=990.0,
        updated=990.0,
        evidence={"down_s": 600.0},
    )
    opening = policy.opening(reg, alert, now=1000.0)
    told = []
    for i in range(4):
        rung = policy.rung(reg, alert, i, opening.start_at, now=1000.0 + 3600 * i,
                           told=frozenset())  # fmt: skip
        told += [d.note.recipient.id for d in rung.decided]
    assert told == ["f1"]
    words = what_happened(alert, "Bo")
    assert words == "Bo had a fall and got up again after being down for about 10 minutes"


def test_the_simulator_has_a_recovered_fall_scenario():
    assert CATALOGUE["recovered_fall"].kind == RECOVERED

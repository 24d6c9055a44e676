"""The fall detector's bed gate: a fall-like movement while the bed sensor says "in bed"
(turning over, lying down quickly) waits for the bed sensor's next word; still in bed it is
no fall, out of bed it is reported, and a silent bed sensor never hides a fall."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from detectors.base import AccelBatch, BatchStream, Detection, ReadingBatch
from detectors.fall import FallDetector
from detectors.fall_model import Placement
from detectors.service import Detect
from detectors.snapshot import freeze, thaw
from device_sim.motions import motion, random_rotation
from device_sim.signals import to_device_frame
from evaluation.replay import Trace, replay
from homecare.edge import RawMessage
from homecare.settings import DetectSettings, Settings
from homecare.thresholds import FallSettings

RATE = 50


def _fall(name: str = "fall_backward", seed: int = 3) -> tuple[np.ndarray, float]:
    _, xyz, info = motion(name, np.random.default_rng(seed), rate=RATE)
    return xyz[: len(xyz) // RATE * RATE].reshape(-1, RATE, 3), float(info["impact_t"])


def _bed(det: FallDetector, t: float, presence: bool, held: float = np.nan) -> list[Detection]:
    return det.update(ReadingBatch(
        BatchStream.BED, np.array([0]), np.array([t]),
        {"presence": np.array([float(presence)]), "held": np.array([held])},
    ))  # fmt: skip


def _run(
    bed: dict[int, bool], *, det: FallDetector | None = None, name: str = "fall_backward"
) -> tuple[list[Detection], FallDetector, float]:
    """Feed a fall second by second; ``bed``: second → the bed sensor's reading then."""
    frames, impact = _fall(name)
    det = det or FallDetector()
    det.place(np.array([0]), Placement.WAIST)
    found: list[Detection] = []
    for k, frame in enumerate(frames):
        if k in bed:
            found += _bed(det, float(k), bed[k])
        found += det.update(AccelBatch(np.array([0]), np.array([float(k)]), frame[None], RATE))
    return found, det, impact


def test_without_a_bed_sensor_the_fall_is_reported_at_once():
    found, det, impact = _run({})
    assert [d.kind for d in found] == ["fall"]
    assert "in_bed_before" not in found[0].evidence
    assert det.tick(impact + 1000) == []


def test_a_fall_still_in_bed_after_is_a_movement_in_bed():
    _frames, impact = _fall()
    before, after = int(impact) - 5, int(impact) + 4
    found, det, _ = _run({before: True, after: True})
    assert found == []
    assert det.held == {}
    assert det.tick(impact + 1000) == []


def test_a_fall_out_of_bed_is_reported_when_the_bed_says_so():
    _, impact = _fall()
    found, det, _ = _run({int(impact) - 5: True})  # in bed before; the bed not heard since
    assert found == []  # waiting for the bed's word
    [(kind, ts, evidence)] = det.held.values()
    assert kind == "fall"
    assert abs(ts - impact) < 0.5
    assert evidence["in_bed_before"] == 1
    [d] = _bed(det, impact + 20, False)  # out of bed: fallen from it
    assert (d.kind, d.severity.value, d.evidence["bed_silent"]) == ("fall", "critical", 0.0)
    assert abs(d.ts - impact) < 0.5
    assert det.held == {}
    assert det.tick(impact + 1000) == []


def test_a_reading_out_of_bed_inside_the_window_reports_the_fall_on_time():
    _, impact = _fall()
    found, det, _ = _run({int(impact) - 5: True, int(impact) + 3: False})
    assert [d.kind for d in found] == ["fall"]
    assert det.held == {}


def test_a_silent_bed_sensor_never_hides_a_fall():
    _, impact = _fall()
    found, det, _ = _run({int(impact) - 5: True})
    assert found == []
    wait = FallSettings().bed_wait_s
    [(_, held_ts, _)] = det.held.values()
    assert abs(held_ts - impact) < 0.5
    assert det.tick(held_ts + wait - 0.5) == []
    [d] = det.tick(held_ts + wait)
    assert (d.kind, d.evidence["bed_silent"]) == ("fall", 1.0)
    assert det.tick(impact + 1000) == []


def test_an_old_in_bed_reading_or_a_mat_event_does_not_hold_the_fall():
    _, impact = _fall()
    # in bed by a reading older than bed_fresh_s: no longer known to be in bed
    found, _, _ = _run({int(impact) - 5: True}, det=FallDetector(FallSettings(bed_fresh_s=3)))
    assert [d.kind for d in found] == ["fall"]
    found, _, _ = _run({int(impact) - 5: True}, det=FallDetector(FallSettings(bed_fresh_s=8)))
    assert found == []
    # a bed mat's event ("held": its state lasts until the next) is not the bed sensor's word
    frames, impact = _fall()
    det = FallDetector()
    det.place(np.array([0]), Placement.WAIST)
    found = []
    for k, frame in enumerate(frames):
        if k == int(impact) - 5:
            found += _bed(det, float(k), True, held=1.0)
        found += det.update(AccelBatch(np.array([0]), np.array([float(k)]), frame[None], RATE))
    assert [d.kind for d in found] == ["fall"]


def test_a_held_fall_survives_a_snapshot():
    _, impact = _fall()
    _, det, _ = _run({int(impact) - 5: True})
    assert det.held
    fresh = FallDetector()
    thaw({"fall": fresh}, freeze({"fall": det}))
    [d] = _bed(fresh, impact + 20, False)
    assert d.kind == "fall"
    assert d.evidence["in_bed_before"] == 1


def test_a_fall_after_walking_is_never_held_whatever_the_bed_says():
    # a bed sensor slow to notice that its elder got up still says "in bed" after the fall
    _, impact = _fall("fall_sideways")
    found, det, _ = _run({int(impact) - 5: True, int(impact) + 3: True}, name="fall_sideways")
    assert [d.kind for d in found] == ["fall"]
    assert det.held == {}


@pytest.mark.parametrize("in_bed", [False, True])
def test_replay_gives_a_trace_recorded_in_bed_a_bed_sensor(in_bed):
    # the lab's "turning in bed" is, to a belt, a fall; a bed sensor tells them apart
    xyz = _fall("fall_backward", 5)[0].reshape(-1, 3)
    mask = np.ones(len(xyz), bool) if in_bed else None
    events = replay([Trace("t.csv", xyz, float(RATE), mask)], hold_end_s=30,
                    placement=Placement.WAIST)  # fmt: skip
    assert [e["kind"] for e in events] == ([] if in_bed else ["fall"])


def test_wear_days_from_recordings_count_a_turn_in_bed_only_without_a_bed_sensor(tmp_path):
    from evaluation.wear import recorded_day

    # "D14" stands for the lab's turning in bed, which a belt reads as a fall (here the
    # simulator's roll off a bed: lying quiet, an impact, a quarter turn, lying still)
    lines = ["file,subject,code,label"]
    for person in range(2):
        for code, name in (("D14", "fall_out_of_bed"), ("D01", "sit_hard")):
            t, xyz, _ = motion(name, np.random.default_rng([person, len(name)]), rate=RATE)
            file = f"{code}_P{person}.csv"
            rows = "\n".join(f"{ti:.3f},{a:.4f},{b:.4f},{c:.4f}"
                             for ti, (a, b, c) in zip(t, xyz, strict=True))  # fmt: skip
            (tmp_path / file).write_text("t,ax,ay,az\n" + rows + "\n")
            lines.append(f"{file},P{person},{code},adl")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    bare = recorded_day(tmp_path, labels, Placement.WAIST)
    watched = recorded_day(tmp_path, labels, Placement.WAIST, in_bed={"D14"})
    assert (bare["false_alarms"], bare["in_bed"]) == (2, [])
    assert (watched["false_alarms"], watched["in_bed"]) == (0, ["D14"])
    assert watched["per_wearer_day"] == 0.0


def _elder_messages(now: float, after: bool | None) -> tuple[list[RawMessage], float]:
    """A roll off the bed (lying quiet, an impact, lying still) as 1 s frames stamped up to
    ``now``, the bed saying "in bed" every 10 s before it and, after it, ``after`` (None:
    the bed falls silent); the impact's time."""
    _, xyz, info = motion("fall_out_of_bed", np.random.default_rng([0, 15]), rate=RATE)
    accel = to_device_frame(xyz).astype(np.float32)
    n = len(accel) // RATE
    t0 = float(int(now)) - n
    impact = t0 + float(info["impact_t"])
    out = []
    for k in range(n):
        ts = t0 + k
        body = {"elder": "e1", "device": "w1", "ts": ts, "rate": RATE,
                "accel": accel[k * RATE : (k + 1) * RATE].tolist()}  # fmt: skip
        out.append(RawMessage("homecare/v1/s/e1/wearable/w1/frame", json.dumps(body).encode(), ts))
        in_bed = ts < impact or after
        if k % 10 == 0 and (ts < impact or after is not None):
            bed = {"elder": "e1", "device": "b1", "ts": ts, "presence": bool(in_bed),
                   "movement": 0.1} | ({"hr": 60, "br": 14.0} if in_bed else {})  # fmt: skip
            out.append(RawMessage("homecare/v1/s/e1/bed/b1/reading", json.dumps(bed).encode(), ts))
    return out, impact


@pytest.mark.parametrize(("after", "alerted"), [(True, False), (False, True), (None, True)])
def test_the_detect_pipeline_asks_the_bed_before_it_alerts(after, alerted):
    # decoded, batched and dispatched as the service does: the bed's readings reach the
    # fall detector beside the frames; a silent bed releases the fall on detect's tick
    messages, impact = _elder_messages(time.time(), after)
    detect = Detect(Settings(detect=DetectSettings(clock="data")))
    alerts = []
    for m in messages:
        alerts += detect.handle([m])
    if after is None:  # the bed never spoke again: another elder's press moves time on
        late = impact + FallSettings().bed_wait_s + 5
        sos = {"elder": "e9", "device": "w9", "ts": late, "seq": 1}
        topic = "homecare/v1/s/e9/wearable/w9/sos"
        alerts += detect.handle([RawMessage(topic, json.dumps(sos).encode(), late)])
    falls = [a for a in alerts if a.kind == "fall" and a.elder == "e1"]
    assert len(falls) == int(alerted)
    if falls:
        assert abs(falls[0].ts - impact) < 1.0
    if after is None:  # held, then released by the tick: the evidence says why it was late
        assert falls[0].evidence["bed_silent"] == 1


def _walked(name: str, seed: int, *, walk: bool = True) -> np.ndarray:
    """``name`` by a belt worn the same (random) way throughout, after half a minute of
    walking (``walk``) or without."""
    turn = random_rotation(np.random.default_rng(seed))
    parts = [motion("walk", np.random.default_rng([seed, 1]), rate=RATE, orientation=turn)[1]]
    parts = parts if walk else []
    parts.append(motion(name, np.random.default_rng([seed, 2]), rate=RATE, orientation=turn)[1])
    xyz = np.concatenate(parts)
    return xyz[: len(xyz) // RATE * RATE].reshape(-1, RATE, 3)


def _feed(
    frames: np.ndarray, placement: Placement = Placement.WAIST, bed: dict[int, bool] | None = None
) -> list[Detection]:
    det = FallDetector()
    det.place(np.array([0]), placement)
    found: list[Detection] = []
    for k, frame in enumerate(frames):
        if k in (bed or {}):
            found += _bed(det, float(k), (bed or {})[k])
        found += det.update(AccelBatch(np.array([0]), np.array([float(k)]), frame[None], RATE))
    return found + det.tick(float(len(frames) + 100))


SOFT, HARD = 1, 2
"""Seeds of the simulator's roll off a bed: landing soft (as a turn onto a mattress does),
and hard."""


def test_a_soft_landing_from_lying_is_a_turn_in_bed_once_the_belt_has_seen_its_wearer_walk():
    s = FallSettings()
    alone = _feed(_walked("fall_out_of_bed", SOFT, walk=False))
    # never seen walking: judged as before (no upright to call the posture lying)
    assert [d.kind for d in alone] == ["fall"]
    assert "lying_deg" not in alone[0].evidence
    assert alone[0].evidence["peak_g"] < s.lying_impact_g
    assert alone[0].evidence["freefall_g"] > s.lying_freefall_g
    # after walking, the belt knows upright: lying quiet before, landed soft, no bed sensor
    assert _feed(_walked("fall_out_of_bed", SOFT)) == []


def test_a_hard_landing_from_lying_is_a_fall_out_of_bed():
    found = _feed(_walked("fall_out_of_bed", HARD))
    assert [d.kind for d in found] == ["fall"]
    assert found[0].evidence["lying_deg"] >= FallSettings().lying_deg
    assert found[0].evidence["peak_g"] >= FallSettings().lying_impact_g


def test_a_bed_sensor_still_decides_a_soft_fall_from_lying():
    frames = _walked("fall_out_of_bed", SOFT)
    impact = len(_walked("walk", SOFT, walk=False)) + 5  # the roll starts 5-8 s in
    in_bed_then_out = {impact - 10: True, impact + 12: False}
    assert [d.kind for d in _feed(frames, bed=in_bed_then_out)] == ["fall"]
    assert _feed(frames, bed={impact - 10: True, impact + 12: True}) == []


def test_a_fall_while_walking_and_an_unknown_placement_are_judged_as_before():
    walking = _feed(_walked("fall_forward", SOFT))
    assert [d.kind for d in walking] == ["fall"]
    assert walking[0].evidence["lying_deg"] < FallSettings().lying_deg
    # a pendant is on the torso too; a wearable worn who knows where (perhaps a watch,
    # whose "upright" says nothing of the body) is judged the most careful way
    assert _feed(_walked("fall_out_of_bed", SOFT), Placement.CHEST) == []
    unknown = _feed(_walked("fall_out_of_bed", SOFT), Placement.UNKNOWN)
    assert [d.kind for d in unknown] == ["fall"]
    assert unknown[0].evidence["lying_deg"] >= FallSettings().lying_deg


def test_wear_days_from_recordings_judge_each_person_by_their_own_models(tmp_path):
    from detectors.fall_model import FallModels
    from evaluation.wear import recorded_day

    # two people's everyday trials (the simulator's roll off a bed, lying quiet: the rules
    # call it a fall, the wrist model does not), each judged by the models given for them
    lines = ["file,subject,code,label"]
    for person in range(2):
        t, xyz, _ = motion("fall_out_of_bed", np.random.default_rng([2 * person, 9]), rate=RATE)
        rows = "\n".join(f"{ti:.3f},{a:.4f},{b:.4f},{c:.4f}"
                         for ti, (a, b, c) in zip(t, xyz, strict=True))  # fmt: skip
        (tmp_path / f"D14_P{person}.csv").write_text("t,ax,ay,az\n" + rows + "\n")
        lines.append(f"D14_P{person}.csv,P{person},D14,adl")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    shipped = FallModels.load()
    rules_only = FallModels({})
    assert recorded_day(tmp_path, labels, Placement.WRIST)["false_alarms"] == 0
    mixed = recorded_day(tmp_path, labels, Placement.WRIST,
                         models_by_subject={"P0": rules_only, "P1": shipped})  # fmt: skip
    assert (mixed["false_alarms"], mixed["models"]) == (1, "out of fold")
    assert [a["file"] for a in mixed["alarms"]] == ["P0@50"]
    with pytest.raises(ValueError, match="P1"):
        recorded_day(tmp_path, labels, Placement.WRIST, models_by_subject={"P0": shipped})

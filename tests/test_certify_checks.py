"""The conformance checks on hand-written traffic: branches the simulated devices never take.

No broker here: each case is a list of messages as the kit's observer records them
(data, not a stand-in for a server), judged by the real checks.
"""

from __future__ import annotations

import json

import pytest
from support import frame, topic

from certify.checks import Analysis, CheckResult, run_checks
from certify.kit import CertifyOptions, Evidence
from certify.observer import Observed
from homecare.contract import DeviceKind

T0 = 1_800_000_000.0


def _judge(kind: DeviceKind, device: str, messages: list[Observed], *,
           end: float | None = None) -> dict[str, CheckResult]:
    options = CertifyOptions(device=device, kind=kind, duration_s=0)
    last = max((m.received for m in messages), default=T0)
    ev = Evidence(options, "mqtt://test", "non-interactive", T0, end or last + 1, messages)
    return {c.id: c for c in run_checks(ev)}


def _frames(n: int, *, scale: float = 1.0, lag: float = 0.05, step: float = 1.0,
            kind: str = "wearable") -> list[Observed]:
    out = []
    for k in range(n):
        data = json.loads(frame("e1", "w1", T0 + k * step))
        data["accel"] = [[x * scale for x in row] for row in data["accel"]]
        out.append(Observed(topic("e1", kind, "w1", "frame"), json.dumps(data).encode(), 1,
                            False, T0 + k * step + 1 + lag))
    return out


def test_samples_in_milli_g_are_named_as_such() -> None:
    verdict = _judge(DeviceKind.WEARABLE, "w1", _frames(5, scale=1000.0))["accel_units"]
    assert verdict.status == "fail"
    assert "milli-g" in verdict.summary
    assert "1000" in verdict.fix


def test_a_clock_behind_is_caught_by_the_median_delay() -> None:
    verdict = _judge(DeviceKind.WEARABLE, "w1", _frames(5, lag=10.0))["clock_skew"]
    assert verdict.status == "fail"
    assert "behind" in verdict.summary


def test_timestamps_going_back_are_listed() -> None:
    frames = _frames(4)
    frames[2], frames[3] = frames[3], frames[2]  # the kit received ts 3 before ts 2
    verdict = _judge(DeviceKind.WEARABLE, "w1", frames)["timestamps"]
    assert verdict.status == "fail"
    assert "back in time" in verdict.summary


def test_frames_at_the_wrong_spacing_break_the_cadence() -> None:
    verdict = _judge(DeviceKind.WEARABLE, "w1", _frames(6, step=0.8))["cadence"]
    assert verdict.status == "fail"
    assert "not 1 s after" in verdict.summary


def test_nothing_seen_says_so() -> None:
    verdicts = _judge(DeviceKind.DOOR, "d1", [])
    assert verdicts["topic_scheme"].status == "fail"
    assert "no message naming device d1" in verdicts["topic_scheme"].summary
    assert verdicts["status"].status == "skipped"


def test_a_topic_of_another_kind_is_refused() -> None:
    verdict = _judge(DeviceKind.BED, "w1", _frames(2))["topic_scheme"]
    assert verdict.status == "fail"
    assert "certified as bed" in verdict.summary


@pytest.mark.parametrize(("gap", "status"), [(10.0, "pass"), (40.0, "fail")])
def test_status_must_come_at_its_declared_interval(gap: float, status: str) -> None:
    reports = [
        Observed(topic("e1", "door", "d1", "status"), json.dumps(
            {"elder": "e1", "device": "d1", "ts": T0 + k * gap, "battery": 80, "firmware": "1",
             "rssi": -60, "interval_s": 10}).encode(), 1, False, T0 + k * gap + 0.5)
        for k in range(3)
    ]
    verdict = _judge(DeviceKind.DOOR, "d1", reports)["status"]
    assert verdict.status == status, verdict.summary
    if status == "fail":
        assert "overdue" in verdict.summary


def test_bed_readings_too_far_apart_break_the_cadence() -> None:
    readings = [
        Observed(topic("e1", "bed", "b1", "reading"), json.dumps(
            {"elder": "e1", "device": "b1", "ts": T0 + k * 60, "presence": False,
             "movement": 0.0}).encode(), 1, False, T0 + k * 60 + 0.5)
        for k in range(3)
    ]
    verdict = _judge(DeviceKind.BED, "b1", readings)["cadence"]
    assert verdict.status == "fail"
    assert "60.0 s apart" in verdict.summary


def test_analysis_learns_site_and_elder_from_the_topics() -> None:
    options = CertifyOptions(device="w1", kind=DeviceKind.WEARABLE)
    analysis = Analysis(Evidence(options, "mqtt://test", "x", T0, T0 + 5, _frames(2)))
    assert (analysis.site, analysis.elder) == ("t", "e1")
    assert analysis.expected("sos") == "homecare/v1/t/e1/wearable/w1/sos"


def test_garbage_is_judged_not_crashed_on() -> None:
    where = topic("e1", "wearable", "w1", "frame")
    junk = [b"not json", b"[1, 2]", b'{"elder": "e1", "device": "w1", "ts": "soon"}',
            json.dumps({"elder": "e1", "device": "w1", "ts": T0, "rate": [50],
                        "accel": 3}).encode(),
            b"\xff\xfe"]
    messages = _frames(3) + [Observed(where, p, 1, False, T0 + 5) for p in junk]
    verdicts = _judge(DeviceKind.WEARABLE, "w1", messages)
    assert verdicts["payload_schema"].status == "fail"
    assert verdicts["payload_schema"].summary.startswith("5 of 8 payloads break the contract")
    assert verdicts["cadence"].status == "pass"


@pytest.mark.parametrize(
    ("kind", "stream", "good", "bad"),
    [
        ("motion", "motion", {"room": "bathroom", "state": "detected"},
         {"room": "garage", "state": "detected"}),
        ("mat", "occupancy", {"place": "chair", "state": "occupied"},
         {"place": "chair", "state": "sitting"}),
    ],
)  # fmt: skip
def test_motion_sensors_and_mats_are_judged_by_their_streams(
    kind: str, stream: str, good: dict[str, str], bad: dict[str, str]
) -> None:
    def event(k: int, fields: dict[str, str]) -> Observed:
        data = {"elder": "e1", "device": "m1", "ts": T0 + k, "seq": k, **fields}
        return Observed(topic("e1", kind, "m1", stream), json.dumps(data).encode(), 1, False,
                        T0 + k + 0.3)  # fmt: skip

    verdicts = _judge(DeviceKind(kind), "m1", [event(k, good) for k in range(3)] + [event(3, bad)])
    assert verdicts["topic_scheme"].status == "pass"
    assert verdicts["payload_schema"].status == "fail"
    assert verdicts["payload_schema"].summary.startswith("1 of 4 payloads break the contract")
    assert "cadence" not in verdicts  # events come when something happens
    misplaced = Observed(topic("e1", kind, "m1", "reading"), b"{}", 1, False, T0 + 1)
    wrong = _judge(DeviceKind(kind), "m1", [event(0, good), misplaced])
    assert wrong["topic_scheme"].status == "fail"

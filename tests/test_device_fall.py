"""Falls the wearable detects itself: the contract's ``fall`` event, stored by ingest,
alerted like an SOS that "I'm OK" can cancel, and judged by the certification kit."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from support import frame, topic

from certify.checks import run_checks
from certify.kit import CertifyOptions, Evidence, Stage
from certify.observer import Observed
from certify.prompts import StepKind
from detectors.batches import Batcher
from detectors.sos import SosDetector
from homecare.alerts import CANCELLABLE
from homecare.consumer import RawMessage
from homecare.contract import (
    EVENT_STREAMS,
    STREAMS,
    DeviceKind,
    FallEvent,
    SosEvent,
    Stream,
    Topic,
    json_schemas,
)
from homecare.settings import ContractSettings
from ingest.points import Converter

T0 = 1_800_000_000.0


def _event(seq: int, *, ts: float = T0, **extra: object) -> bytes:
    return json.dumps({"elder": "e1", "device": "w1", "ts": ts, "seq": seq, **extra}).encode()


def test_the_contract_has_a_wearables_fall_event() -> None:
    assert Stream.FALL in STREAMS[DeviceKind.WEARABLE]
    assert Stream.FALL not in STREAMS[DeviceKind.BED]
    assert Stream.FALL in EVENT_STREAMS  # buffered while offline, like SOS
    ev = FallEvent.model_validate_json(_event(3, confidence=0.8), context={"now": T0})
    assert (ev.seq, ev.confidence, ev.cancelled) == (3, 0.8, False)
    with pytest.raises(ValidationError):
        FallEvent.model_validate_json(_event(3, confidence=1.5), context={"now": T0})
    schema = json_schemas()["fall"]
    assert {"confidence", "cancelled", "seq"} <= schema["properties"].keys()
    assert schema["x-kinds"] == ["wearable"]


def test_ingest_stores_a_device_fall_with_its_confidence() -> None:
    out = Converter(ContractSettings()).convert(
        [RawMessage(topic("e1", "wearable", "w1", "fall"), _event(4, confidence=0.9), T0)],
        now=T0,
    )
    [line] = out.lines
    assert line.startswith("button,")
    assert "button=fall" in line
    assert "confidence=0.9" in line
    assert "cancelled=false" in line


def _built(*payloads: bytes) -> list:
    where = Topic.parse(topic("e1", "wearable", "w1", "fall"))
    decoded = [(where, FallEvent.model_validate_json(p, context={"now": T0})) for p in payloads]
    return Batcher().build(decoded).batches


def test_a_device_fall_is_a_cancellable_critical_fall_once_per_seq() -> None:
    det = SosDetector()
    [batch] = _built(_event(5, confidence=0.7), _event(5, confidence=0.7))  # delivered twice
    [d] = det.update(batch)
    assert d.kind == "fall"
    assert d.kind in CANCELLABLE  # "I'm OK" in the grace window cancels it
    assert d.severity.value == "critical"
    assert d.evidence == {"seq": 5.0, "device_detected": 1.0, "device_confidence": 0.7}
    # an SOS press with the same seq is another event, not a duplicate of the fall
    press = SosEvent.model_validate_json(_event(5), context={"now": T0})
    [sos] = Batcher().build([(Topic.parse(topic("e1", "wearable", "w1", "sos")), press)]).batches
    assert [x.kind for x in det.update(sos)] == ["sos"]
    # cancelled on the device: stored, not alerted
    [batch] = _built(_event(6, cancelled=True))
    assert det.update(batch) == []


def _session(events: list[Observed], stages: list[Stage]) -> dict:
    options = CertifyOptions(device="w1", kind=DeviceKind.WEARABLE, duration_s=0)
    frames = [Observed(topic("e1", "wearable", "w1", "frame"), frame("e1", "w1", T0 + k), 1,
                       False, T0 + k + 1.05) for k in range(3)]  # fmt: skip
    ev = Evidence(options, "mqtt://test", "non-interactive", T0, T0 + 200,
                  sorted(frames + events, key=lambda m: m.received))  # fmt: skip
    ev.stages.extend(stages)
    return {c.id: c for c in run_checks(ev)}


def _fall_msg(seq: int, at: float, **extra: object) -> Observed:
    return Observed(topic("e1", "wearable", "w1", "fall"), _event(seq, ts=at, **extra), 1,
                    False, at + 0.1)  # fmt: skip


def test_the_kit_checks_the_devices_own_fall_events() -> None:
    stages = [Stage(StepKind.FALL, "fall_forward", T0 + 10, T0 + 40),
              Stage(StepKind.LOOKALIKE, "sit_hard", T0 + 60, T0 + 90)]  # fmt: skip
    none = _session([], stages)["device_fall"]
    assert none.status == "pass"  # no claim to check: not an incomplete certificate
    assert "does not detect falls itself" in none.summary
    good = _session([_fall_msg(1, T0 + 25, confidence=0.9)], stages)["device_fall"]
    assert good.status == "pass", good.summary
    late_and_false = _session([_fall_msg(1, T0 + 80)], stages)["device_fall"]
    assert late_and_false.status == "fail"
    assert "1 of 1 staged falls without a fall event, 1 look-alikes" in late_and_false.summary
    broken = _session([_fall_msg(1, T0 + 25, confidence=7)], stages)["device_fall"]
    assert broken.status == "fail"
    assert "break the contract" in broken.summary

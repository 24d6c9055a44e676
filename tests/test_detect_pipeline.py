"""The detection pipeline without servers: raw messages in, alerts out (care levels, OK cancel)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from detectors.service import Detect
from detectors.snapshot import SnapshotMismatch, freeze, thaw
from device_sim.motions import motion
from device_sim.signals import to_device_frame
from homecare import contract
from homecare.edge import RawMessage
from homecare.settings import DetectSettings, Settings
from ingest.points import Converter


def frame(elder: str, ts: float, hr: int) -> RawMessage:
    payload = {"elder": elder, "device": f"w-{elder}", "ts": ts, "rate": 25,
               "accel": [[0.0, -1.0, 0.02]] * 25, "hr": hr}
    return RawMessage(f"homecare/v1/s/{elder}/wearable/w-{elder}/frame",
                      json.dumps(payload).encode(), ts)


def test_care_level_tightens_the_heart_rate_limit(travel):
    # every detector sees the minute, whatever the hour: only the heart-rate limit speaks
    settings = Settings(detect=DetectSettings(care_levels={"e4": 4, "e1": 1}))
    detect = Detect(settings)
    t0 = travel - 120
    alerts = []
    for k in range(60):
        alerts += detect.handle([frame("e4", t0 + k, 122), frame("e1", t0 + k, 122)])
    assert [(a.elder, a.kind, a.severity) for a in alerts] == [("e4", "tachycardia", "critical")]
    assert alerts[0].evidence["limit"] == 120.0


def test_bad_messages_are_counted_not_fatal():
    detect = Detect(Settings())
    alerts = detect.handle([RawMessage("homecare/v1/s/e1/wearable/w1/frame", b"{", time.time())])
    assert alerts == []
    assert detect.stats.undecodable == 1


def test_care_levels_are_one_to_four():
    with pytest.raises(ValidationError):
        DetectSettings(care_levels={"e1": 5})


def _mixed_traffic(now: float) -> list[RawMessage]:
    """Frames of two rates, an SOS, a bed reading and an availability change."""
    bed = {"elder": "e2", "device": "b2", "ts": now, "presence": True, "movement": 0.1}
    sos = {"elder": "e2", "device": "w2", "ts": now, "seq": 1}
    fast = json.loads(frame("e2", now, 80).payload) | {"rate": 50, "accel": [[0, 0, 1]] * 50}
    return [
        *(frame("e1", now - 10 + k, 70) for k in range(10)),
        RawMessage("homecare/v1/s/e2/wearable/w-e2/frame", json.dumps(fast).encode(), now),
        RawMessage("homecare/v1/s/e2/bed/b2/reading", json.dumps(bed).encode(), now),
        RawMessage("homecare/v1/s/e2/wearable/w2/sos", json.dumps(sos).encode(), now),
        RawMessage("homecare/v1/s/e2/bed/b2/availability", b"offline", now),
    ]


@pytest.mark.parametrize("process", ["ingest", "detect"])
def test_a_message_is_parsed_and_validated_once_per_process(process, monkeypatch):
    """Spies, not mocks (the real functions run and their results are used): they count
    every JSON parse and every payload validation while ingest's converter or detect's
    pipeline handles a batch. One of each per JSON message, none for availability."""
    now = time.time()
    messages = _mixed_traffic(now)
    calls: Counter[str] = Counter()

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return counted

    monkeypatch.setattr(orjson, "loads", spy("parse", orjson.loads))
    monkeypatch.setattr(json, "loads", spy("parse", json.loads))
    for model in contract.PAYLOADS.values():
        for method in ("model_validate", "model_validate_json"):
            real = getattr(model, method)  # bound to the model: called without cls
            monkeypatch.setattr(model, method, classmethod(
                lambda _cls, *a, _real=real, **k: spy("validate", _real)(*a, **k)))
    if process == "ingest":
        points = Converter(Settings().contract).convert(messages, now=now)
        assert sum(points.stored.values()) == len(messages)
        assert not points.dead
    else:
        detect = Detect(Settings())
        detect.handle(messages, received=now)
        assert detect.stats.undecodable == 0
    json_messages = len(messages) - 1
    assert calls == {"parse": json_messages, "validate": json_messages}


# the state a restart resumes ----------------------------------------------------------------
def _fall_messages(now: float) -> tuple[list[RawMessage], int]:
    """A forward fall as 1 s wearable frames (50 Hz) stamped up to ``now``; its impact frame."""
    _, xyz, info = motion("fall_forward", np.random.default_rng(7), rate=50)
    accel = to_device_frame(xyz).astype(np.float32)
    n = len(accel) // 50
    t0 = float(int(now)) - n
    out = []
    for k in range(n):
        body = {"elder": "e1", "device": "w1", "ts": t0 + k, "rate": 50,
                "accel": accel[k * 50 : (k + 1) * 50].tolist()}  # fmt: skip
        out.append(RawMessage("homecare/v1/s/e1/wearable/w1/frame", json.dumps(body).encode(),
                              t0 + k, seq=k + 1))  # fmt: skip
    return out, int(info["impact_t"])


def _data_clock() -> Settings:
    return Settings(detect=DetectSettings(clock="data"))


def test_a_fall_in_progress_is_resumed_from_the_frozen_state():
    frames, impact = _fall_messages(time.time())
    live = Detect(_data_clock())
    for m in frames[: impact + 3]:
        assert live.handle([m]) == []
    blob = live.freeze(seq=impact + 3)
    resumed, forgetful = Detect(_data_clock()), Detect(_data_clock())
    assert resumed.thaw(blob)["seq"] == impact + 3
    assert all(d.care is resumed.care for d in resumed.detectors if hasattr(d, "care"))
    out = {"live": [], "resumed": [], "forgetful": []}
    for m in frames[impact + 3 :]:
        for name, detect in (("live", live), ("resumed", resumed), ("forgetful", forgetful)):
            out[name] += [(a.kind, a.id, a.ts) for a in detect.handle([m])]
    assert [k for k, _, _ in out["live"]] == ["fall"]
    assert out["resumed"] == out["live"]  # the same alert, the same id
    assert out["forgetful"] == []  # without the state the impact is gone


def test_a_state_from_other_settings_or_code_is_refused_untouched():
    frames, impact = _fall_messages(time.time())
    live = Detect(_data_clock())
    live.handle(frames[: impact + 3])
    blob = live.freeze(seq=1)
    other = Detect(Settings(detect=DetectSettings(clock="data"),
                            detectors={"fall": {"still_window_s": 5.0}}))  # fmt: skip
    with pytest.raises(SnapshotMismatch, match="other detector settings"):
        other.thaw(blob)
    assert len(other.batcher.elders) == 0  # nothing was written
    fresh = Detect(_data_clock())
    fall = fresh.detectors[0]
    fall.pending = fall.pending.astype(np.int8)  # as if the code's state had changed
    with pytest.raises(SnapshotMismatch, match=r"detectors\[0\]\.pending: saved bool"):
        fresh.thaw(blob)
    assert len(fresh.batcher.elders) == 0  # nothing was written


def test_the_snapshot_walks_objects_generically():
    class Ring:
        _SCRATCH = ("buffer",)

        def __init__(self) -> None:
            self.values = np.zeros((0, 3), np.float32)
            self.names: list[str] = []
            self.buffer = np.empty(0)
            self.when: tuple[float, ...] = ()

    class Holder:
        def __init__(self, shared: Ring) -> None:
            self.a, self.b = shared, shared
            self.by_key: dict[int, str] = {}

    live = Holder(Ring())
    live.a.values = np.arange(6, dtype=np.float32).reshape(2, 3)
    live.a.names, live.a.when, live.a.buffer = ["x", "y"], (1.0, float("inf")), np.ones(9)
    live.by_key = {3: "three"}
    blob = freeze({"holder": live, "clock": 12.5}, meta={"seq": 7})
    fresh = Holder(Ring())
    meta, values = thaw({"holder": fresh, "clock": 0.0}, blob)
    assert meta == {"seq": 7}
    assert values["clock"] == 12.5
    assert fresh.a is fresh.b
    assert fresh.a.values.tolist() == live.a.values.tolist()
    assert fresh.a.names == ["x", "y"]
    assert fresh.a.when == (1.0, float("inf"))
    assert fresh.by_key == {3: "three"}
    assert len(fresh.a.buffer) == 0  # scratch is not state
    unshared = Holder(Ring())
    unshared.b = Ring()
    with pytest.raises(SnapshotMismatch, match=r"holder\.b: saved as shared"):
        thaw({"holder": unshared, "clock": 0.0}, blob)
    with pytest.raises(SnapshotMismatch, match="not a snapshot"):
        thaw({"holder": fresh}, b"garbage")

"""The detection pipeline without servers: raw messages in, alerts out (care levels, OK cancel)."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import ValidationError

from detectors.service import Detect
from homecare.edge import RawMessage
from homecare.settings import DetectSettings, Settings


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

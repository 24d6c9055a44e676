"""The detection pipeline without servers: raw messages in, alerts out (care levels, OK cancel)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from detectors.service import Detect
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

"""The wire contract: topics, payload models, and the JSON Schema vendors build against."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli.main import app
from homecare import contract
from homecare.contract import ContractError, DeviceKind, Stream, Topic

NOW = 1_800_000_000.0


def sample(stream: Stream) -> dict:
    base = {"elder": "e1", "device": "d1", "ts": NOW - 1}
    return (
        base
        | {
            Stream.FRAME: {
                "rate": 25,
                "accel": [[0.0, -1.0, 0.1]] * 25,
                "hr": 72,
                "spo2": 97,
                "steps": 1,
                "battery": 55.5,
            },
            Stream.SOS: {"seq": 1},
            Stream.OK: {"seq": 2},
            Stream.READING: {"presence": True, "hr": 60, "br": 14.5, "movement": 0.2},
            Stream.EVENT: {"door": "front1", "role": "front", "state": "opened", "seq": 3},
            Stream.STATUS: {"battery": 90, "firmware": "2.1.0", "rssi": -70, "model": "B1"},
            Stream.MOTION: {"room": "bathroom", "state": "detected", "seq": 4},
            Stream.OCCUPANCY: {"place": "chair", "state": "occupied", "seq": 5},
            Stream.FALL: {"seq": 4, "confidence": 0.92, "cancelled": False},
        }[stream]
    )


def test_topic_round_trip_and_sibling():
    t = Topic.parse("homecare/v1/north/e1/bed/b7/reading")
    assert (t.site, t.elder, t.kind, t.device, t.stream) == (
        "north",
        "e1",
        DeviceKind.BED,
        "b7",
        Stream.READING,
    )
    assert str(t) == "homecare/v1/north/e1/bed/b7/reading"
    assert str(t.sibling(Stream.STATUS)).endswith("/b7/status")


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("homecare/v2/s/e/bed/b/reading", "bad_topic"),
        ("homecare/v1/s/e/bed/b", "bad_topic"),
        ("homecare/v1/s/e+1/bed/b/reading", "bad_topic"),
        ("homecare/v1/s/e/fridge/b/reading", "bad_topic"),
        ("homecare/v1/s/e/bed/b/frame", "unknown_stream"),
        ("homecare/v1/s/e/bed/b/x", "unknown_stream"),
    ],
)
def test_bad_topics_name_their_reason(topic, reason):
    with pytest.raises(ContractError) as err:
        Topic.parse(topic)
    assert err.value.reason == reason


@pytest.mark.parametrize("stream", list(contract.PAYLOADS))
def test_every_sample_is_valid_for_pydantic_and_json_schema(stream):
    data = sample(stream)
    contract.PAYLOADS[stream].model_validate(data, context={"now": NOW})
    jsonschema.validate(data, contract.json_schemas()[str(stream)])


@pytest.mark.parametrize(
    ("stream", "field", "value"),
    [
        (Stream.FRAME, "hr", 300),
        (Stream.FRAME, "spo2", 40),
        (Stream.FRAME, "rate", 10),
        (Stream.FRAME, "accel", [[0.0, 0.0, 17.0]] * 25),
        (Stream.FRAME, "accel", [[0.0, 1.0]] * 25),
        (Stream.FRAME, "accel", [[0.0, 0.0, 1.0]] * 24),
        (Stream.READING, "br", 2),
        (Stream.READING, "movement", 1.5),
        (Stream.EVENT, "role", "garage"),
        (Stream.STATUS, "rssi", 5),
    ],
)
def test_out_of_range_values_are_refused(stream, field, value):
    with pytest.raises(ValidationError):
        contract.PAYLOADS[stream].model_validate(
            sample(stream) | {field: value}, context={"now": NOW}
        )


def test_timestamp_window_is_configurable():
    model = contract.PAYLOADS[Stream.SOS]
    late = sample(Stream.SOS) | {"ts": NOW - 8 * 86400}
    with pytest.raises(ValidationError, match="in the past"):
        model.model_validate(late, context={"now": NOW})
    model.model_validate(late, context={"now": NOW, "max_past_s": 30 * 86400})
    early = sample(Stream.SOS) | {"ts": NOW + 301}
    with pytest.raises(ValidationError, match="in the future"):
        model.model_validate(early, context={"now": NOW})
    # Without a context the receiver's clock applies.
    model.model_validate(sample(Stream.SOS) | {"ts": time.time()})


def test_payload_ids_must_match_topic():
    topic = Topic.parse("homecare/v1/s/e1/wearable/d1/sos")
    ok = contract.SosEvent.model_validate(sample(Stream.SOS), context={"now": NOW})
    contract.check_ids(topic, ok)
    other = contract.SosEvent.model_validate(
        sample(Stream.SOS) | {"elder": "e2"}, context={"now": NOW}
    )
    with pytest.raises(ContractError) as err:
        contract.check_ids(topic, other)
    assert err.value.reason == "id_mismatch"


def test_contract_export_writes_schemas_and_topics(tmp_path):
    result = CliRunner().invoke(app, ["contract", "export", str(tmp_path / "contract")])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "contract").iterdir())
    expected = [f"{s}.schema.json" for s in [*contract.PAYLOADS, "alert"]] + ["topics.json"]
    assert files == sorted(expected)
    topics = json.loads((tmp_path / "contract" / "topics.json").read_text())
    assert topics["pattern"] == "homecare/v1/<site>/<elder>/<kind>/<device>/<stream>"
    frame_schema = json.loads((tmp_path / "contract" / "frame.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(frame_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sample(Stream.FRAME) | {"hr": 400}, frame_schema)

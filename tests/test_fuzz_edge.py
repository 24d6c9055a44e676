"""Hostile input at the edge (hypothesis): the topic parser and every payload model.

Nothing but a ContractError with a known reason ever escapes decoding; a batch of
anything is stored or dead-lettered message by message; and whatever converts is
accepted by a real influxd, so a reading is never refused after it was acknowledged.
Thousands of generated cases per run; examples are batches to keep CI time low.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.servers import LocalInflux
from homecare import contract
from homecare.contract import ContractError, DeviceKind, DoorRole, Room, Stream, Topic
from homecare.edge import Edge, RawMessage
from homecare.influx import InfluxClient
from homecare.settings import ContractSettings, InfluxSettings
from ingest.points import Converter

EDGE = Edge(ContractSettings())
NOW = time.time()
REASONS = {
    "oversized", "bad_topic", "unknown_stream", "not_json", "schema", "out_of_range",
    "timestamp", "id_mismatch",
}  # fmt: skip

good_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
ids = st.one_of(good_ids, st.text(max_size=70))
topics = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda site, elder, kind, device, stream: "/".join(
            ["homecare", "v1", site, elder, kind, device, stream]
        ),
        ids,
        ids,
        st.one_of(st.sampled_from(list(DeviceKind)), st.text(max_size=10)),
        ids,
        st.one_of(st.sampled_from(list(Stream)), st.text(max_size=10)),
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=60) | st.dictionaries(st.text(max_size=10), inner, max_size=8)
    ),
    max_leaves=40,
)


def near_valid(stream: Stream) -> st.SearchStrategy[bytes]:
    """Payloads with the right keys and wild values: they reach every field validator."""
    keys = [k for k in contract.PAYLOADS[stream].model_fields if k not in ("elder", "device", "ts")]
    return st.fixed_dictionaries(
        {
            "elder": st.just("e1"),
            "device": st.just("d1"),
            "ts": st.one_of(st.floats(allow_nan=False), st.just(NOW), st.text(max_size=5)),
        },
        optional=dict.fromkeys(keys, json_values),
    ).map(lambda d: json.dumps(d).encode())


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    *(near_valid(s) for s in contract.PAYLOADS),
)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
@given(st.one_of(topics, st.builds("/".join, st.lists(st.text(max_size=12), max_size=9))))
def test_topic_parser_accepts_exactly_the_scheme(text):
    reason = None
    try:
        topic = Topic.parse(text)
    except ContractError as exc:
        reason = exc.reason
    else:
        assert str(topic) == text
        assert topic.stream in contract.STREAMS[topic.kind]
    assert reason in {None, "bad_topic", "unknown_stream"}


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(st.tuples(topics, payloads), min_size=1, max_size=8))
def test_anything_is_decoded_or_dead_lettered_with_its_reason(db, batch):
    messages = [RawMessage(t, p, NOW) for t, p in batch]
    reasons: Counter[str] = Counter()
    for msg in messages:
        try:
            EDGE.decode(msg, EDGE.context(NOW))
        except ContractError as exc:
            reasons[exc.reason] += 1
    assert set(reasons) <= REASONS
    points = Converter(ContractSettings()).convert(messages, now=NOW)
    assert points.dead == reasons
    assert sum(points.stored.values()) == len(batch) - reasons.total()
    db.write(points.lines)  # dead letters carry hostile text: InfluxDB must take it


# Payloads shaped like each model, ids matching their topic (mostly), values around
# and beyond every limit: most pass validation and reach storage.
def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` four times in five, else ``bad``: most messages should pass every check."""
    return st.integers(0, 4).flatmap(lambda k: bad if k == 0 else good)


def _num(low: float, high: float) -> st.SearchStrategy[float]:
    span = high - low
    return mostly(st.floats(low, high), st.floats(low - span / 4, high + span / 4))


def _int(low: int, high: int) -> st.SearchStrategy[int]:
    return mostly(st.integers(low, high), st.integers(low - 5, high + 5))


seqs = mostly(
    st.integers(0, 1000), st.integers(-5, 2**64 + 5) | st.sampled_from([2**63 - 1, 2**63])
)
texts = st.text(max_size=70) | st.sampled_from(['"', "\\", "a\\", "x\ny", "ü ,=\t'"])
accel_rows = st.lists(st.tuples(*[_num(-16, 16)] * 3), min_size=1, max_size=3)


def _frame(draw: st.DrawFn) -> dict[str, Any]:
    rate = draw(mostly(st.sampled_from([25, 50, 100]), _int(25, 100)))
    rows = draw(accel_rows)
    n = rate + draw(mostly(st.just(0), st.sampled_from([-1, 1])))
    return {
        "rate": rate,
        "accel": [list(rows[i % len(rows)]) for i in range(max(n, 0))],
        "hr": draw(st.none() | _int(20, 250)),
        "spo2": draw(st.none() | _int(50, 100)),
        "steps": draw(st.none() | _int(0, 10)),
        "battery": draw(st.none() | _num(0, 100)),
    }


FIELDS: dict[Stream, Any] = {
    Stream.FRAME: _frame,
    Stream.SOS: lambda draw: {"seq": draw(seqs)},
    Stream.OK: lambda draw: {"seq": draw(seqs)},
    Stream.READING: lambda draw: {
        "presence": draw(st.booleans()),
        "hr": draw(st.none() | _int(20, 250)),
        "br": draw(st.none() | _num(4, 60)),
        "movement": draw(_num(0, 1)),
    },
    Stream.EVENT: lambda draw: {
        "door": draw(mostly(good_ids, st.text(max_size=5))),
        "role": draw(mostly(st.sampled_from(list(DoorRole)), st.text(max_size=8))),
        "state": draw(mostly(st.sampled_from(["opened", "closed"]), st.just("ajar"))),
        "seq": draw(seqs),
    },
    Stream.STATUS: lambda draw: {
        "battery": draw(_num(0, 100)),
        "firmware": draw(texts),
        "rssi": draw(_int(-130, 0)),
        "model": draw(st.none() | texts),
        "vendor": draw(st.none() | texts),
        "placement": draw(mostly(st.sampled_from([None, "pendant", "belt", "door", "wrist"]),
                                 texts)),
        "interval_s": draw(_int(10, 86400)),
        "room": draw(st.none() | mostly(st.sampled_from(list(Room)), st.text(max_size=8))),
    },
    Stream.MOTION: lambda draw: {
        "room": draw(mostly(st.sampled_from(list(Room)), st.text(max_size=8))),
        "state": draw(mostly(st.sampled_from(["detected", "cleared"]), st.just("maybe"))),
        "seq": draw(seqs),
    },
    Stream.OCCUPANCY: lambda draw: {
        "place": draw(mostly(st.sampled_from(["bed", "chair"]), st.just("sofa"))),
        "state": draw(mostly(st.sampled_from(["occupied", "free"]), st.just("sat"))),
        "seq": draw(seqs),
    },
    Stream.FALL: lambda draw: {
        "seq": draw(seqs),
        "confidence": draw(st.none() | _num(0, 1)),
        "cancelled": draw(mostly(st.booleans(), st.just("yes"))),
    },
}
KIND_OF = {s: next(k for k in DeviceKind if s in contract.STREAMS[k]) for s in Stream}


@st.composite
def device_messages(draw: st.DrawFn) -> RawMessage:
    """One message of any stream from a plausible device, availability included."""
    stream = draw(st.sampled_from(list(Stream)))
    elder, device = draw(good_ids), draw(good_ids)
    topic = str(Topic(draw(good_ids), elder, KIND_OF[stream], device, stream))
    if stream is Stream.AVAILABILITY:
        valid = st.sampled_from([b"online", b"offline", b" online\n"])
        payload = draw(mostly(valid, st.sampled_from([b"0", b"Online", b""]) | st.binary()))
        return RawMessage(topic, payload, NOW)
    data = {
        "elder": draw(mostly(st.just(elder), good_ids)),
        "device": draw(mostly(st.just(device), good_ids)),
        "ts": NOW + draw(mostly(st.floats(-7 * 86400 + 1, 299), st.floats(-8 * 86400, 600))),
        **FIELDS[stream](draw),
    }
    return RawMessage(topic, json.dumps(data).encode(), NOW)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxClient]:
    with (
        LocalInflux(tmp_path_factory.mktemp("fuzz") / "influxd") as server,
        InfluxClient(InfluxSettings(url=server.url)) as client,
    ):
        client.create_database()
        yield client


@settings(max_examples=400, deadline=None)
@given(batch=st.lists(device_messages(), min_size=1, max_size=8))
def test_every_payload_model_is_stored_or_dead_lettered_and_influxdb_takes_it(db, batch):
    points = Converter(ContractSettings(), store_raw_accel=True).convert(batch, now=NOW)
    assert sum(points.stored.values()) + points.dead.total() == len(batch)
    assert set(points.dead) <= REASONS
    # InfluxDB refuses the whole request (400) if any line is malformed or out of range.
    db.write(points.lines)


@pytest.mark.slow
def test_the_generated_cases_reach_every_stream_and_both_outcomes():
    """The strategy above must exercise storage of every stream, not only rejections."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(msg=device_messages())
    def collect(msg: RawMessage) -> None:
        points = Converter(ContractSettings()).convert([msg], now=NOW)
        seen.update(f"stored:{s}" for s in points.stored)
        seen.update("dead" for _ in points.dead.elements())

    collect()
    assert {f"stored:{s}" for s in Stream} | {"dead"} <= set(seen)

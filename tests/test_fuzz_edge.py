"""Hostile input at the edge (hypothesis): nothing but a ContractError ever escapes decoding,
and a batch of anything is stored or dead-lettered, message by message."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from homecare import contract
from homecare.contract import ContractError, DeviceKind, Stream
from homecare.edge import Edge, RawMessage
from homecare.settings import ContractSettings
from ingest.points import Converter

EDGE = Edge(ContractSettings())
NOW = time.time()

ids = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.text(max_size=70))
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


@settings(max_examples=3000, deadline=None)
@given(topic=topics, payload=payloads)
def test_decoding_raises_nothing_but_contract_errors(topic, payload):
    reason = None
    try:
        EDGE.decode(RawMessage(topic, payload, NOW), EDGE.context(NOW))
    except ContractError as exc:
        reason = exc.reason
    assert reason in {
        None,
        "oversized",
        "bad_topic",
        "unknown_stream",
        "not_json",
        "schema",
        "out_of_range",
        "timestamp",
        "id_mismatch",
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(topics, payloads), min_size=1, max_size=20))
def test_a_batch_of_anything_is_stored_or_dead_lettered(batch):
    points = Converter(ContractSettings()).convert(
        [RawMessage(t, p, NOW) for t, p in batch], now=NOW
    )
    assert sum(points.stored.values()) + sum(points.dead.values()) == len(batch)
    assert "internal_error" not in points.dead

"""Validation at the edge: a raw MQTT message becomes a checked payload, or a reason.

Ingest, the detectors and the certification kit all decode the consumer's messages
(:class:`~homecare.consumer.RawMessage`) here, each once per process, so a message is
judged the same way everywhere. A message fails with a
:class:`~homecare.contract.ContractError` whose ``reason`` is its dead-letter
category: ``oversized``, ``bad_topic``, ``unknown_stream``, ``not_json``, ``schema``,
``out_of_range``, ``timestamp``, ``id_mismatch`` or ``unknown_device`` (a device that
``homecare devices`` never provisioned there, when ``ContractSettings.registry`` names its
registry: the broker lets a gateway publish for a whole site, the registry says which
devices exist).

>>> edge = Edge(ContractSettings())
>>> sos = b'{"elder": "e1", "device": "w1", "ts": 1, "seq": 1}'
>>> msg = RawMessage("homecare/v1/s/e1/wearable/w1/sos", sos, 2.0)
>>> edge.decode(msg, edge.context(now=2.0)).payload.seq
1
>>> try:
...     edge.decode(msg._replace(payload=b"{"), edge.context(now=2.0))
... except ContractError as exc:
...     print(exc)
homecare/v1/s/e1/wearable/w1/sos: not_json: unexpected end of data: line 1 column 2 (char 1)
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import orjson
from pydantic import ValidationError

from homecare import contract
from homecare.consumer import RawMessage
from homecare.contract import ContractError, Payload, Stream, Topic
from homecare.settings import ContractSettings

__all__ = [
    "RANGE_ERRORS", "Decoded", "DeviceRegistry", "Edge", "RawMessage", "classify", "parse_topic",
]
"""``RawMessage`` is the consumer's, named here too: it is what the edge takes."""

RANGE_ERRORS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number",
     "out_of_range"}
)  # fmt: skip


class Decoded(NamedTuple):
    """A message that passed: its topic, and its payload (``bool`` for availability)."""

    topic: Topic
    payload: Payload | bool


parse_topic = lru_cache(maxsize=262_144)(Topic.parse)
"""Topic.parse, once per distinct topic (a device has a handful)."""


def classify(error: ValidationError) -> tuple[str, str]:
    """Dead-letter reason and a one-line detail for a payload that failed validation."""
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    detail = f"{where}: {first['msg']} (got {repr(first.get('input'))[:60]})"
    if kind == "timestamp_window":
        return "timestamp", detail
    if kind in RANGE_ERRORS:
        return "out_of_range", detail
    return "schema", detail


class DeviceRegistry:
    """The provisioned devices (``devices.json``), re-read when the file changes (checked
    at most every ``check_s``), so a device provisioned or revoked counts at once."""

    def __init__(self, path: Path, *, check_s: float = 5.0) -> None:
        self.path = path
        self.check_s = check_s
        self._devices: dict[str, tuple[str, str, str]] = {}
        self._mtime = -1.0
        self._checked = -float("inf")

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_s:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            mtime, data = 0.0, {}
        self._mtime = mtime
        devices = data.get("devices", {})
        self._devices = {d: (v["site"], v["elder"], v["kind"]) for d, v in devices.items()}

    def knows(self, topic: Topic) -> bool:
        """Whether the topic's device is provisioned, at this site, elder and kind."""
        self._refresh()
        return self._devices.get(topic.device) == (topic.site, topic.elder, str(topic.kind))


class Edge:
    """Decodes messages against the contract with the receiver's limits."""

    def __init__(self, limits: ContractSettings) -> None:
        self.limits = limits
        self.registry = DeviceRegistry(limits.registry) if limits.registry else None

    def context(self, now: float | None = None) -> dict[str, float]:
        """Validation context for a batch: the receiver's clock and its time window."""
        return {
            "now": time.time() if now is None else now,
            "max_future_s": self.limits.max_future_s,
            "max_past_s": self.limits.max_past_s,
        }

    def decode(self, msg: RawMessage, ctx: dict[str, float]) -> Decoded:
        if len(msg.payload) > self.limits.max_payload_bytes:
            raise ContractError(
                "oversized", f"{len(msg.payload)} bytes > {self.limits.max_payload_bytes}",
                topic=msg.topic,
            )
        topic = parse_topic(msg.topic)
        if self.registry is not None and not self.registry.knows(topic):
            raise ContractError(
                "unknown_device", f"{topic.device} is not provisioned as {topic.site}/"
                f"{topic.elder}/{topic.kind}", topic=msg.topic,
            )  # fmt: skip
        if topic.stream is Stream.AVAILABILITY:
            return Decoded(topic, contract.parse_availability(msg.payload))
        try:
            data = orjson.loads(msg.payload)
        except orjson.JSONDecodeError as exc:
            raise ContractError("not_json", str(exc)[:200], topic=msg.topic) from None
        try:
            payload = contract.PAYLOADS[topic.stream].model_validate(data, context=ctx)
        except ValidationError as exc:
            raise ContractError(*classify(exc), topic=msg.topic) from None
        contract.check_ids(topic, payload)
        return Decoded(topic, payload)

"""Deliberately faulty devices: the simulator's devices with one classic vendor mistake each.

Each :class:`Faulty` names the device kind it is, the checks it must fail (and only
those) and a phrase the failing check's explanation must contain, so the kit is
tested for rejecting each for the right reason. Every fault is a small hook on the
reference device's wire output (:class:`~certify.reference.Fault`).

>>> sorted(FAULTY)  # doctest: +NORMALIZE_WHITESPACE
['clock_ahead', 'dropped_frames', 'id_mismatch', 'mat_on_the_sofa', 'meters_per_s2',
 'motion_without_room', 'no_last_will', 'online_not_retained', 'oversized', 'qos0_events',
 'wrong_topic']
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import orjson

from certify.reference import Fault
from homecare.contract import TOPIC_ROOT, DeviceKind, Stream, Topic

G = 9.80665


@dataclass(frozen=True)
class MetersPerSecond2(Fault):
    """Accelerometer samples in m/s² instead of g (a raw driver value passed through)."""

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        if topic.stream is not Stream.FRAME:
            return payload
        data = orjson.loads(payload)
        data["accel"] = np.round(np.asarray(data["accel"]) * G, 3).tolist()
        return orjson.dumps(data)


@dataclass(frozen=True)
class ClockAhead(Fault):
    """The device's clock runs 30 s ahead (no NTP): every ``ts`` is 30 s in the future."""

    offset_s: float = 30.0

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        if topic.stream is Stream.AVAILABILITY:
            return payload
        data = orjson.loads(payload)
        data["ts"] = round(data["ts"] + self.offset_s, 3)
        return orjson.dumps(data)


@dataclass(frozen=True)
class DroppedFrames(Fault):
    """One frame in ten never leaves the device (a full radio buffer, silently discarded)."""

    every: int = 10

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        if topic.stream is not Stream.FRAME:
            return payload
        second = int(orjson.loads(payload)["ts"])
        return None if second % self.every == self.every - 1 else payload


@dataclass(frozen=True)
class WrongTopic(Fault):
    """Publishes without the contract version: ``homecare/<site>/...`` not ``homecare/v1/``."""

    def topic(self, topic: Topic) -> str:
        return str(topic).replace(f"{TOPIC_ROOT}/", "homecare/", 1)


@dataclass(frozen=True)
class IdMismatch(Fault):
    """Puts its hardware serial in the payload's ``device`` instead of the topic's id."""

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        if topic.stream is Stream.AVAILABILITY:
            return payload
        data = orjson.loads(payload)
        data["device"] = f"SN-{topic.device}"
        return orjson.dumps(data)


@dataclass(frozen=True)
class Oversized(Fault):
    """100 Hz frames written pretty-printed with every float digit: over 8 KiB each."""

    rate: int = 100

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        if topic.stream is not Stream.FRAME:
            return payload
        data = orjson.loads(payload)
        data["accel"] = np.asarray(data["accel"], dtype=np.float32).astype(float).tolist()
        return json.dumps(data, indent=2).encode()


@dataclass(frozen=True)
class MotionWithoutRoom(Fault):
    """A motion sensor that leaves its room out of each event (the room lives only in the
    vendor's app), so no one can tell the bathroom's motion from the kitchen's."""

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        if topic.stream is not Stream.MOTION:
            return payload
        data = orjson.loads(payload)
        del data["room"]
        return orjson.dumps(data)


@dataclass(frozen=True)
class MatOnTheSofa(Fault):
    """A pressure mat that names its own place (``sofa``) instead of the contract's bed or
    chair: the detectors could not tell a night in bed from an afternoon seated."""

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        if topic.stream is not Stream.OCCUPANCY:
            return payload
        data = orjson.loads(payload)
        data["place"] = "sofa"
        return orjson.dumps(data)


@dataclass(frozen=True)
class Faulty:
    """A faulty device, the checks it must fail and the phrase that explains it."""

    fault: Fault
    kind: DeviceKind
    fails: frozenset[str]
    explanation: dict[str, str]
    """Check id → a phrase its summary must contain."""
    falls: int = 0
    """Staged falls to ask for in CI (only where the fault is about fall detection)."""


FAULTY: dict[str, Faulty] = {
    "meters_per_s2": Faulty(
        MetersPerSecond2("meters_per_s2"), DeviceKind.WEARABLE,
        frozenset({"accel_units", "payload_schema", "fall_test"}),
        {"accel_units": "m/s²", "payload_schema": "accel", "fall_test": "missed"}, falls=1,
    ),
    "no_last_will": Faulty(
        Fault("no_last_will", will=False), DeviceKind.DOOR, frozenset({"availability"}),
        {"availability": "last will"},
    ),
    "clock_ahead": Faulty(
        ClockAhead("clock_ahead"), DeviceKind.BED, frozenset({"clock_skew"}),
        {"clock_skew": "ahead"},
    ),
    "dropped_frames": Faulty(
        DroppedFrames("dropped_frames"), DeviceKind.WEARABLE, frozenset({"cadence"}),
        {"cadence": "missing"},
    ),
    "wrong_topic": Faulty(
        WrongTopic("wrong_topic"), DeviceKind.BED, frozenset({"topic_scheme"}),
        {"topic_scheme": "homecare/v1/"},
    ),
    "id_mismatch": Faulty(
        IdMismatch("id_mismatch"), DeviceKind.DOOR, frozenset({"payload_ids"}),
        {"payload_ids": "SN-"},
    ),
    "oversized": Faulty(
        Oversized("oversized"), DeviceKind.WEARABLE, frozenset({"payload_size"}),
        {"payload_size": "8192"},
    ),
    "online_not_retained": Faulty(
        Fault("online_not_retained", retain_online=False), DeviceKind.DOOR,
        frozenset({"availability"}), {"availability": "'online' is not retained"},
    ),
    "qos0_events": Faulty(
        Fault("qos0_events", event_qos=0), DeviceKind.DOOR, frozenset({"qos", "outage"}),
        {"qos": "QoS 0", "outage": "lost"},
    ),
    "motion_without_room": Faulty(
        MotionWithoutRoom("motion_without_room"), DeviceKind.MOTION,
        frozenset({"payload_schema"}), {"payload_schema": "room"},
    ),
    "mat_on_the_sofa": Faulty(
        MatOnTheSofa("mat_on_the_sofa"), DeviceKind.MAT, frozenset({"payload_schema"}),
        {"payload_schema": "place"},
    ),
}
"""Every faulty device by name (``homecare certify --simulate NAME``)."""

"""The wire contract: MQTT topics and the payload of every stream.

Devices, the simulator, ingest, the detectors and the certification kit all import
this one module, so a payload is defined exactly once. `homecare contract export`
turns it into JSON Schema for device vendors.

Topic scheme (version 1)::

    homecare/v1/<site>/<elder>/<kind>/<device>/<stream>

``kind`` is ``wearable``, ``bed``, ``door``, ``motion`` (a passive infrared sensor in a
room) or ``mat`` (a bed or chair pressure mat); ``stream`` is one of
:data:`STREAMS` and must be allowed for the kind. Every id is 1-64 characters of
``[A-Za-z0-9_-]``. ``availability`` carries the plain text ``online`` or
``offline``, retained, and is also the device's MQTT last will. Every other
stream carries one JSON object whose ``elder`` and ``device`` must equal the
ids in its topic.

>>> topic = Topic.parse("homecare/v1/north/e0001/wearable/w0001/frame")
>>> topic.elder, topic.kind, topic.stream
('e0001', <DeviceKind.WEARABLE: 'wearable'>, <Stream.FRAME: 'frame'>)
>>> str(topic.sibling(Stream.AVAILABILITY))
'homecare/v1/north/e0001/wearable/w0001/availability'
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from homecare.errors import DataError

__all__ = [
    "CONTRACT_VERSION",
    "EVENT_STREAMS",
    "ID_PATTERN",
    "MAT_PLACES",
    "MAX_FUTURE_S",
    "MAX_G",
    "MAX_PAST_S",
    "MAX_PAYLOAD_BYTES",
    "OFFLINE",
    "ONLINE",
    "PAYLOADS",
    "QOS",
    "ROOMS",
    "STREAMS",
    "TOPIC_ROOT",
    "AccelSamples",
    "Alert",
    "AlertState",
    "BedReading",
    "ContractError",
    "DeviceKind",
    "DeviceStatus",
    "DoorEvent",
    "DoorRole",
    "FallEvent",
    "HeartRate",
    "Id",
    "MatEvent",
    "MotionEvent",
    "OkEvent",
    "Payload",
    "Percent",
    "Room",
    "Seq",
    "Severity",
    "SosEvent",
    "Stream",
    "Topic",
    "WearableFrame",
    "alert_subscription",
    "alert_topic",
    "check_ids",
    "command_topic",
    "json_schemas",
    "parse_availability",
    "subscription",
    "topic_scheme",
]

CONTRACT_VERSION = "1"
TOPIC_ROOT = "homecare/v1"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

MAX_FUTURE_S = 300.0
"""Default: a timestamp more than 5 minutes ahead of the receiver's clock is refused."""
MAX_PAST_S = 7 * 86400.0
"""Default: a timestamp older than 7 days is refused (devices buffer at most that long)."""
MAX_PAYLOAD_BYTES = 8192
"""Default payload size limit; a 100 Hz frame written plainly stays under 5 KiB."""

ONLINE = "online"
OFFLINE = "offline"


class DeviceKind(StrEnum):
    WEARABLE = "wearable"
    BED = "bed"
    DOOR = "door"
    MOTION = "motion"
    MAT = "mat"


class Stream(StrEnum):
    FRAME = "frame"
    SOS = "sos"
    OK = "ok"
    READING = "reading"
    EVENT = "event"
    STATUS = "status"
    AVAILABILITY = "availability"
    MOTION = "motion"
    OCCUPANCY = "occupancy"
    FALL = "fall"


STREAMS: dict[DeviceKind, frozenset[Stream]] = {
    DeviceKind.WEARABLE: frozenset(
        {Stream.FRAME, Stream.SOS, Stream.OK, Stream.STATUS, Stream.AVAILABILITY, Stream.FALL}
    ),
    DeviceKind.BED: frozenset({Stream.READING, Stream.STATUS, Stream.AVAILABILITY}),
    DeviceKind.DOOR: frozenset({Stream.EVENT, Stream.STATUS, Stream.AVAILABILITY}),
    DeviceKind.MOTION: frozenset({Stream.MOTION, Stream.STATUS, Stream.AVAILABILITY}),
    DeviceKind.MAT: frozenset({Stream.OCCUPANCY, Stream.STATUS, Stream.AVAILABILITY}),
}

EVENT_STREAMS = frozenset(
    {Stream.SOS, Stream.OK, Stream.EVENT, Stream.MOTION, Stream.OCCUPANCY, Stream.FALL}
)
"""Streams a device must buffer while offline and publish at QoS 1 (every stream should)."""
QOS = 1
"""Every stream is published at QoS 1: ingest acknowledges only what it has stored."""


class ContractError(DataError):
    """A message breaks the contract; ``reason`` is the dead-letter category, ``topic`` the
    message's topic where it is known."""

    def __init__(self, reason: str, detail: str, *, topic: str | None = None) -> None:
        super().__init__(f"{topic[:200]}: {reason}: {detail}" if topic else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.topic = topic


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    elder: str
    kind: DeviceKind
    device: str
    stream: Stream

    def __str__(self) -> str:
        return f"{TOPIC_ROOT}/{self.site}/{self.elder}/{self.kind}/{self.device}/{self.stream}"

    def sibling(self, stream: Stream) -> Topic:
        """The same device's topic for another stream."""
        return Topic(self.site, self.elder, self.kind, self.device, stream)

    @classmethod
    def parse(cls, topic: str) -> Topic:
        """Parse and check a topic, or raise :class:`ContractError`."""
        parts = topic.split("/")
        if len(parts) != 7 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
            raise ContractError(
                "bad_topic", f"expected {TOPIC_ROOT}/site/elder/kind/device/stream", topic=topic
            )
        site, elder, kind, device, stream = parts[2:]
        for name, value in (("site", site), ("elder", elder), ("device", device)):
            if not _ID_RE.match(value):
                raise ContractError(
                    "bad_topic", f"{name} id {value[:70]!r} is not {ID_PATTERN}", topic=topic
                )
        try:
            device_kind = DeviceKind(kind)
        except ValueError:
            raise ContractError(
                "bad_topic", f"unknown device kind {kind[:40]!r}", topic=topic
            ) from None
        try:
            device_stream = Stream(stream)
        except ValueError:
            raise ContractError(
                "unknown_stream", f"unknown stream {stream[:40]!r}", topic=topic
            ) from None
        if device_stream not in STREAMS[device_kind]:
            raise ContractError("unknown_stream", f"a {kind} has no {stream} stream", topic=topic)
        return cls(site, elder, device_kind, device, device_stream)


def subscription(site: str = "+", elder: str = "+") -> str:
    """The wildcard subscription for every device stream of a site or an elder."""
    return f"{TOPIC_ROOT}/{site}/{elder}/+/+/+"


Id = Annotated[str, Field(pattern=ID_PATTERN, description="Pseudonymous id, as in the topic.")]
Percent = Annotated[float, Field(ge=0, le=100, description="Percent.")]
HeartRate = Annotated[int, Field(ge=20, le=250, description="Heart rate, beats per minute.")]
MAX_G = 16.0
Seq = Annotated[
    int,
    # InfluxDB stores integers as int64: a larger counter would be refused after ingest.
    Field(ge=0, le=2**63 - 1, description="Event counter of the device, for de-duplication."),
]


def _samples(value: Any) -> npt.NDArray[np.float32]:
    """N×3 float32 samples in g; numpy checks them, ~2x faster than validating 150 floats."""
    try:
        samples = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("accel must be a list of [x, y, z] numbers") from None
    if samples.ndim != 2 or samples.shape[1] != 3:
        raise ValueError(f"accel must be N×3, got shape {samples.shape}")
    peak = float(np.abs(samples).max(initial=0.0))
    if not peak <= MAX_G:  # also catches NaN
        raise PydanticCustomError(
            "out_of_range", "accel out of range: |{peak}| g > 16 g", {"peak": round(peak, 3)}
        )
    return samples


AccelSamples = Annotated[
    npt.NDArray[np.float32],
    PlainValidator(_samples),
    PlainSerializer(lambda a: a.tolist(), return_type=list),
    WithJsonSchema(
        {
            "type": "array",
            "items": {
                "type": "array",
                "minItems": 3,
                "maxItems": 3,
                "items": {"type": "number", "minimum": -MAX_G, "maximum": MAX_G},
            },
            "description": "Samples as [x, y, z] in g (±16 g).",
        }
    ),
]


class Payload(BaseModel):
    """Fields every JSON payload carries; ``ts`` is checked against the receiver's clock.

    The receiver passes ``context={"now": ..., "max_future_s": ..., "max_past_s": ...}``
    to ``model_validate_json``; without a context the defaults and the local clock apply.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    stream: ClassVar[Stream]

    elder: Id
    device: Id
    ts: float = Field(
        description="Unix time in seconds (UTC) of the reading or event, or of a frame's "
        "first sample. Must lie within 5 minutes ahead and 7 days behind the receiver's "
        "clock (configurable by the receiver)."
    )

    @field_validator("ts")
    @classmethod
    def _ts_in_window(cls, ts: float, info: ValidationInfo) -> float:
        ctx: dict[str, Any] = info.context or {}
        now = ctx.get("now") or time.time()
        if not math.isfinite(ts):
            raise ValueError("timestamp is not a finite number")
        if ts > now + ctx.get("max_future_s", MAX_FUTURE_S):
            raise PydanticCustomError(
                "timestamp_window", "timestamp is {s} s in the future", {"s": round(ts - now)}
            )
        if ts < now - ctx.get("max_past_s", MAX_PAST_S):
            raise PydanticCustomError(
                "timestamp_window", "timestamp is {s} s in the past", {"s": round(now - ts)}
            )
        return ts


class WearableFrame(Payload):
    """One second of a wearable's accelerometer, with the vital signs it measured."""

    stream = Stream.FRAME

    rate: int = Field(ge=25, le=100, description="Sample rate, Hz; ``accel`` holds this many rows.")
    accel: AccelSamples = Field(
        description="Accelerometer samples of this second, N×3 (x, y, z) in g, N = rate.",
    )
    hr: HeartRate | None = None
    spo2: int | None = Field(None, ge=50, le=100, description="Blood oxygen saturation, %.")
    steps: int | None = Field(None, ge=0, le=10, description="Steps taken during this second.")
    battery: Percent | None = None

    @model_validator(mode="after")
    def _one_second_of_samples(self) -> WearableFrame:
        if len(self.accel) != self.rate:
            raise ValueError(f"accel has {len(self.accel)} samples, rate says {self.rate}")
        return self


class SosEvent(Payload):
    """The one-touch emergency button was pressed."""

    stream = Stream.SOS
    seq: Seq


class FallEvent(Payload):
    """The wearable detected a fall itself (many watches and pendants do). Handled as an
    SOS press that the wearer's "I'm OK" can still cancel within the grace window; one the
    wearer already cancelled on the device is stored, not alerted."""

    stream = Stream.FALL
    seq: Seq
    confidence: float | None = Field(
        None, ge=0, le=1, description="The device's confidence that this was a fall, 0-1."
    )
    cancelled: bool = Field(
        False, description="The wearer cancelled the alarm on the device before it was sent."
    )


class OkEvent(Payload):
    """The wearer pressed "I'm OK", cancelling a pending fall alert."""

    stream = Stream.OK
    seq: Seq


class BedReading(Payload):
    """A bed sensor's reading, every 10-30 s."""

    stream = Stream.READING

    presence: bool = Field(description="Someone is in the bed.")
    hr: HeartRate | None = None
    br: float | None = Field(None, ge=4, le=60, description="Breathing rate, breaths per minute.")
    movement: float = Field(ge=0, le=1, description="Movement level, 0 (still) to 1 (restless).")


class DoorRole(StrEnum):
    FRONT = "front"
    BATHROOM = "bathroom"
    BEDROOM = "bedroom"
    FRIDGE = "fridge"
    CUPBOARD = "cupboard"
    CABINET = "cabinet"
    MEDICINE = "medicine"


class Room(StrEnum):
    """Rooms a motion sensor watches (and a device's status may name)."""

    BATHROOM = "bathroom"
    KITCHEN = "kitchen"
    BEDROOM = "bedroom"
    LIVING_ROOM = "living_room"
    ENTRANCE = "entrance"
    HALL = "hall"
    DINING = "dining"
    OTHER = "other"


ROOMS: tuple[str, ...] = tuple(r.value for r in Room)
MAT_PLACES: tuple[str, ...] = ("bed", "chair")


class DoorEvent(Payload):
    """A door, the fridge, a cupboard, a cabinet or a medicine box opened or closed."""

    stream = Stream.EVENT

    door: Id
    role: DoorRole
    state: Literal["opened", "closed"]
    seq: Seq


class MotionEvent(Payload):
    """A passive infrared sensor saw motion in its room (``detected``), or saw none for
    its own timeout since (``cleared``)."""

    stream = Stream.MOTION

    room: Room
    state: Literal["detected", "cleared"]
    seq: Seq


class MatEvent(Payload):
    """A pressure mat under a mattress or on a chair became occupied or free."""

    stream = Stream.OCCUPANCY

    place: Literal["bed", "chair"] = Field(description="Where the mat lies.")
    state: Literal["occupied", "free"]
    seq: Seq


class DeviceStatus(Payload):
    """Periodic health report of any device (every 5 minutes by default)."""

    stream = Stream.STATUS

    battery: Percent
    firmware: str = Field(max_length=32, description="Firmware version.")
    rssi: int = Field(ge=-130, le=0, description="Signal strength, dBm.")
    model: str | None = Field(None, max_length=64, description="Device model.")
    vendor: str | None = Field(None, max_length=64, description="Device vendor.")
    placement: (
        Literal[
            "wrist", "chest", "waist", "pendant", "belt", "unknown", "bed", "door", "wall", "chair"
        ]
        | None
    ) = Field(
        None,
        description="Where the device is worn or mounted. A wearable: wrist (a band or "
        "watch), chest (a pendant; ``pendant`` means the same), waist (a belt clip; "
        "``belt`` means the same) or unknown; absent counts as unknown, and the fall "
        "detector then applies its most careful decision and the device desk is told. "
        "A home sensor: bed, door, wall or chair.",
    )
    room: Room | None = Field(None, description="The room it is in, as registered.")
    interval_s: int = Field(300, ge=10, le=86400, description="Declared status interval, s.")


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertState(StrEnum):
    """An alert's lifecycle: open (a grace window may run) → notified → acknowledged →
    resolved, or cancelled (the wearer pressed "I'm OK", or the condition cleared)."""

    OPEN = "open"
    CANCELLED = "cancelled"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(BaseModel):
    """An alert as the platform publishes it (QoS 1, retained, on :func:`alert_topic`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id = Field(description="Stable id: the same condition always gets the same id.")
    site: Id
    elder: Id
    device: Id | None = Field(None, description="The device whose data raised it, if one.")
    kind: str = Field(max_length=40, description="fall, sos, inactivity, tachycardia, …")
    severity: Severity
    ts: float = Field(description="When the condition started (Unix seconds, UTC).")
    evidence: dict[str, float] = Field(
        default_factory=dict, description="The numbers that triggered it, with their units."
    )
    state: AlertState = AlertState.OPEN
    updated: float = Field(description="When the state last changed (Unix seconds, UTC).")


def alert_topic(site: str, elder: str, alert_id: str) -> str:
    """Alerts live under the elder, one level short of device topics (ingest skips them)."""
    return f"{TOPIC_ROOT}/{site}/{elder}/alert/{alert_id}"


def alert_subscription(site: str = "+", elder: str = "+") -> str:
    return f"{TOPIC_ROOT}/{site}/{elder}/alert/+"


def command_topic(site: str, elder: str, device: str) -> str:
    """Commands to one device; like alerts, one level short of device topics (ingest skips)."""
    return f"{TOPIC_ROOT}/{site}/{elder}/command/{device}"


PAYLOADS: dict[Stream, type[Payload]] = {
    model.stream: model
    for model in (
        WearableFrame,
        SosEvent,
        OkEvent,
        BedReading,
        DoorEvent,
        DeviceStatus,
        MotionEvent,
        MatEvent,
        FallEvent,
    )
}


def parse_availability(payload: bytes) -> bool:
    """``True`` for ``online``, ``False`` for ``offline``; anything else breaks the contract."""
    text = payload.strip().decode("ascii", "replace")
    if text == ONLINE:
        return True
    if text == OFFLINE:
        return False
    raise ContractError("schema", f"availability must be {ONLINE!r} or {OFFLINE!r}")


def check_ids(topic: Topic, payload: Payload) -> None:
    """Refuse a payload whose ids differ from its topic's (a device speaking for another)."""
    if payload.elder != topic.elder or payload.device != topic.device:
        raise ContractError(
            "id_mismatch",
            f"payload says elder={payload.elder} device={payload.device}, "
            f"topic says elder={topic.elder} device={topic.device}",
            topic=str(topic),
        )


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every JSON payload, keyed by stream, and of published alerts."""
    schemas: dict[str, dict[str, Any]] = {}
    for stream, model in PAYLOADS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://homecare.invalid/contract/v{CONTRACT_VERSION}/{stream}.json"
        schema["x-topic"] = f"{TOPIC_ROOT}/<site>/<elder>/<kind>/<device>/{stream}"
        schema["x-kinds"] = sorted(k.value for k, s in STREAMS.items() if stream in s)
        schema["x-qos"] = QOS
        schema["x-buffer-while-offline"] = stream in EVENT_STREAMS
        schemas[str(stream)] = schema
    alert = Alert.model_json_schema()
    alert["$id"] = f"https://homecare.invalid/contract/v{CONTRACT_VERSION}/alert.json"
    alert["x-topic"] = f"{TOPIC_ROOT}/<site>/<elder>/alert/<id>"
    alert["x-qos"] = QOS
    alert["x-retained"] = True
    schemas["alert"] = alert
    return schemas


def topic_scheme() -> dict[str, Any]:
    """The topic scheme as data, for the contract export."""
    return {
        "version": CONTRACT_VERSION,
        "pattern": f"{TOPIC_ROOT}/<site>/<elder>/<kind>/<device>/<stream>",
        "command": command_topic("<site>", "<elder>", "<device>"),
        "id_pattern": ID_PATTERN,
        "streams": {str(k): sorted(str(s) for s in v) for k, v in STREAMS.items()},
        "availability": {
            "payload": [ONLINE, OFFLINE],
            "retained": True,
            "last_will": OFFLINE,
            "qos": 1,
        },
        "qos": QOS,
        "buffered_while_offline": sorted(str(s) for s in EVENT_STREAMS),
        "limits": {
            "max_payload_bytes": MAX_PAYLOAD_BYTES,
            "max_future_s": MAX_FUTURE_S,
            "max_past_s": MAX_PAST_S,
        },
    }

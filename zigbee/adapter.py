"""Zigbee2MQTT messages → the wire contract, from a home's mapping file.

Zigbee2MQTT publishes each device's whole state as one JSON object on
``<base>/<friendly name>`` (default base ``zigbee2mqtt``) whenever anything changes or the
device reports, e.g. a PIR sensor ``{"occupancy": true, "battery": 100,
"linkquality": 120}``, a door contact ``{"contact": false, "battery": 91, ...}``
(``false``: the magnet is away, the door is open), and its availability on
``<base>/<friendly name>/availability`` (``{"state": "online"}``, or the legacy plain
``online``/``offline``). :class:`Adapter` turns them into contract messages:

* ``occupancy`` of a ``motion`` device → a ``motion`` event (``detected``/``cleared``) in its
  room; of a ``mat`` → an ``occupancy`` event (``occupied``/``free``), as are ``presence``
  or a pressed ``contact`` (mats built on a contact); ``contact`` of a ``door`` → a door
  ``event`` (``opened`` when contact is false). Only a change is an event: Zigbee2MQTT
  repeats the whole state in every message (a battery report repeats ``contact``), so the
  adapter keeps each device's last state, and the first message of a device is an event.
* ``battery`` (%) → a ``status`` at most every ``status_every_s`` per device, with the
  mapping's firmware/model/vendor, the room, and ``rssi`` estimated from ``linkquality``
  (LQI 0-255 → -100..-30 dBm, linear: Zigbee2MQTT publishes no RSSI for most devices).
* availability → the contract's retained ``online``/``offline``.

Times: the payload's ``last_seen`` when Zigbee2MQTT adds it (``advanced.last_seen``:
ISO 8601 or epoch ms), else when the adapter received the message. Event ``seq`` is the
event time in milliseconds (unique and rising per device, across adapter restarts).

Unmapped friendly names, malformed JSON, a missing or mistyped field, or a payload the
contract refuses are dead-lettered (:class:`DeadLetter`, with a reason) and the adapter
carries on.

>>> from zigbee.mapping import Mapping
>>> mapping = Mapping.model_validate({"site": "north", "devices": {
...     "Bathroom PIR": {"elder": "e1", "kind": "motion", "room": "bathroom"}}})
>>> adapter = Adapter(mapping)
>>> out, dead = adapter.translate("zigbee2mqtt/Bathroom PIR",
...                               b'{"occupancy": true, "battery": 97, "linkquality": 102}',
...                               received=1_800_000_000.0)
>>> [m.topic.rsplit("/", 3)[1:] for m in out]
[['motion', 'bathroom-pir', 'motion'], ['motion', 'bathroom-pir', 'status']]
>>> adapter.translate("zigbee2mqtt/Hall lamp", b'{"state": "ON"}', received=0.0)[1][0].reason
'unmapped'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from homecare.contract import (
    OFFLINE,
    ONLINE,
    PAYLOADS,
    DeviceKind,
    Payload,
    Stream,
    Topic,
)
from zigbee.mapping import Mapping, ZigbeeDevice

__all__ = ["Adapter", "DeadLetter", "Message", "lqi_to_rssi"]

MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class Message:
    """A contract message to publish (QoS 1; ``retain`` for availability)."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A Zigbee2MQTT message that could not become a contract message, and why."""

    topic: str
    reason: str
    detail: str
    payload: bytes = b""

    def as_dict(self) -> dict[str, str]:
        return {
            "topic": self.topic[:200],
            "reason": self.reason,
            "detail": self.detail[:MAX_DETAIL],
            "payload": self.payload[:200].decode("utf-8", "replace"),
        }


def lqi_to_rssi(lqi: float) -> int:
    """An RSSI estimate (dBm) from a Zigbee link quality (0-255), linear.

    >>> lqi_to_rssi(0), lqi_to_rssi(255), lqi_to_rssi(120)
    (-100, -30, -67)
    """
    lqi = min(max(lqi, 0.0), 255.0)
    return round(-100 + lqi * 70 / 255)


@dataclass(slots=True)
class _Seen:
    state: bool | None = None
    status_ts: float = -math.inf


@dataclass(slots=True)
class Adapter:
    """Translate one home's Zigbee2MQTT messages; keeps each device's last state."""

    mapping: Mapping
    status_every_s: float = 300.0
    seen: dict[str, _Seen] = field(default_factory=dict)

    def subscription(self) -> str:
        """What to subscribe to on the Zigbee2MQTT broker."""
        return f"{self.mapping.base_topic}/#"

    def translate(
        self, topic: str, payload: bytes, *, received: float
    ) -> tuple[list[Message], list[DeadLetter]]:
        """The contract messages for one Zigbee2MQTT message, or why there are none."""
        base = self.mapping.base_topic + "/"
        if not topic.startswith(base):
            return [], [DeadLetter(topic, "bad_topic", f"not under {base}", payload)]
        name = topic[len(base) :]
        if name.startswith("bridge/"):
            return [], []  # the bridge's own state, logs and responses: not a device
        availability = name.endswith("/availability")
        if availability:
            name = name[: -len("/availability")]
        device = self.mapping.devices.get(name)
        if device is None:
            if name.endswith(("/set", "/get")):
                return [], []  # commands to devices, not from them
            return [], [DeadLetter(topic, "unmapped", f"no device {name[:80]!r} in the mapping",
                                   payload)]  # fmt: skip
        try:
            if availability:
                return [self._availability(device, payload)], []
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise _Refused("schema", "payload is not a JSON object")
            return self._state(name, device, data, received), []
        except json.JSONDecodeError as exc:
            return [], [DeadLetter(topic, "bad_json", str(exc), payload)]
        except UnicodeDecodeError as exc:
            return [], [DeadLetter(topic, "bad_json", str(exc), payload)]
        except _Refused as exc:
            return [], [DeadLetter(topic, exc.reason, exc.detail, payload)]

    def _availability(self, device: ZigbeeDevice, payload: bytes) -> Message:
        text = payload.decode("utf-8").strip()
        state: Any = text
        if text.startswith("{"):  # {"state": "online"}; the legacy payload is the word
            decoded = json.loads(text)
            state = decoded.get("state") if isinstance(decoded, dict) else None
        if state not in (ONLINE, OFFLINE):
            raise _Refused("schema", f"availability must be online or offline, got {state!r}")
        return Message(str(self._topic(device, Stream.AVAILABILITY)), state.encode(), retain=True)

    def _topic(self, device: ZigbeeDevice, stream: Stream) -> Topic:
        return Topic(self.mapping.site, device.elder, device.kind, device.device, stream)

    def _state(
        self, name: str, device: ZigbeeDevice, data: dict[str, Any], received: float
    ) -> list[Message]:
        ts = _last_seen(data.get("last_seen"), received)
        seen = self.seen.setdefault(name, _Seen())
        out: list[Message] = []
        state = self._reading(device, data)
        if state is not None and state != seen.state:
            seen.state = state
            out.append(self._event(device, state, ts))
        battery = data.get("battery")
        if battery is not None and ts - seen.status_ts >= self.status_every_s:
            out.append(self._status(device, battery, data.get("linkquality"), ts))
            seen.status_ts = ts
        if state is None and battery is None and not out:
            known = ", ".join(sorted(data)[:8])
            raise _Refused("schema", f"no field this {device.kind} maps (got {known or 'none'})")
        return out

    def _reading(self, device: ZigbeeDevice, data: dict[str, Any]) -> bool | None:
        """The device's on/off state in this payload (None: not in it)."""
        fields = {
            DeviceKind.MOTION: ("occupancy",),
            DeviceKind.MAT: ("occupancy", "presence", "contact"),
            DeviceKind.DOOR: ("contact",),
        }[device.kind]
        if device.field is not None:
            fields = (device.field,)
        for name in fields:
            if name in data:
                value = data[name]
                if not isinstance(value, bool):
                    raise _Refused("schema", f"{name} must be true or false, got {value!r:.40}")
                if device.kind is DeviceKind.DOOR:
                    return not value  # contact false: the magnet is away, open
                return value != device.invert
        return None

    def _event(self, device: ZigbeeDevice, on: bool, ts: float) -> Message:
        common: dict[str, Any] = {"elder": device.elder, "device": device.device, "ts": ts,
                                  "seq": int(ts * 1000)}  # fmt: skip
        match device.kind:
            case DeviceKind.MOTION:
                stream = Stream.MOTION
                body = {"room": device.room, "state": "detected" if on else "cleared"}
            case DeviceKind.MAT:
                stream = Stream.OCCUPANCY
                body = {"place": device.place, "state": "occupied" if on else "free"}
            case _:
                stream = Stream.EVENT
                body = {"door": device.device, "role": device.role,
                        "state": "opened" if on else "closed"}  # fmt: skip
        return self._checked(device, stream, common | body, ts)

    def _status(self, device: ZigbeeDevice, battery: Any, lqi: Any, ts: float) -> Message:
        if isinstance(battery, bool) or not isinstance(battery, int | float):
            raise _Refused("schema", f"battery must be a number, got {battery!r:.40}")
        if lqi is not None and (isinstance(lqi, bool) or not isinstance(lqi, int | float)):
            raise _Refused("schema", f"linkquality must be a number, got {lqi!r:.40}")
        placement = {DeviceKind.MOTION: "wall", DeviceKind.DOOR: "door"}.get(device.kind)
        body = {
            "elder": device.elder, "device": device.device, "ts": ts, "battery": battery,
            "firmware": device.firmware, "rssi": lqi_to_rssi(float(lqi or 0)),
            "model": device.model, "vendor": device.vendor, "room": device.room,
            "placement": placement if device.kind is not DeviceKind.MAT else device.place,
            "interval_s": device.interval_s,
        }  # fmt: skip
        return self._checked(device, Stream.STATUS, body, ts)

    def _checked(
        self, device: ZigbeeDevice, stream: Stream, body: dict[str, Any], ts: float
    ) -> Message:
        model: type[Payload] = PAYLOADS[stream]
        try:
            payload = model.model_validate(body, context={"now": ts})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise _Refused("schema", f"{stream}: {where}: {first['msg']}") from None
        data = payload.model_dump(mode="json", exclude_none=True)
        return Message(str(self._topic(device, stream)), json.dumps(data).encode())


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _last_seen(value: Any, received: float) -> float:
    """Zigbee2MQTT's ``last_seen`` (ISO 8601 or epoch ms) in Unix seconds, else ``received``."""
    if value is None:
        return received
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise _Refused("schema", f"last_seen is neither ISO 8601 nor epoch ms: {value!r:.40}")

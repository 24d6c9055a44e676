"""A home's Zigbee2MQTT mapping file: which friendly name is which elder's which device.

TOML, one table per Zigbee2MQTT friendly name (exactly as in Zigbee2MQTT's
``configuration.yaml``)::

    site = "north"
    base_topic = "zigbee2mqtt"          # Zigbee2MQTT's mqtt.base_topic (the default)

    [devices."Bathroom PIR"]
    elder = "e0001"
    kind = "motion"                     # motion, door or mat
    room = "bathroom"                   # a motion sensor's room (and any device's, optional)

    [devices."Front door"]
    elder = "e0001"
    kind = "door"
    role = "front"                      # front, bathroom, bedroom, fridge, cupboard,
                                        #   cabinet or medicine

    [devices."Armchair mat"]
    elder = "e0001"
    kind = "mat"
    place = "chair"                     # bed or chair
    # field = "contact"                 # which field says occupied (default: occupancy,
    # invert = true                     #   presence, contact); invert if it reads backwards

Optional per device: ``device`` (the contract's device id; default: the friendly name in
lower case, other characters as ``-``), ``firmware``, ``model``, ``vendor``, ``interval_s``
(how often it reports its battery, for the status check; default 3600).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from homecare.contract import ID_PATTERN, DeviceKind, DoorRole, Room
from homecare.errors import ConfigError

__all__ = ["Mapping", "MappingError", "ZigbeeDevice", "load_mapping"]

_NOT_ID = re.compile(r"[^a-z0-9_-]+")


class MappingError(ConfigError):
    """A mapping file that cannot be used; the message says where."""


class ZigbeeDevice(BaseModel):
    """One mapped Zigbee device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    elder: str = Field(pattern=ID_PATTERN)
    kind: Literal[DeviceKind.MOTION, DeviceKind.DOOR, DeviceKind.MAT]
    device: str = Field("", pattern=r"^$|" + ID_PATTERN)
    room: Room | None = None
    role: DoorRole | None = None
    place: Literal["bed", "chair"] | None = None
    field: Literal["occupancy", "presence", "contact"] | None = None
    invert: bool = False
    firmware: str = Field("zigbee2mqtt", max_length=32)
    model: str | None = Field(None, max_length=64)
    vendor: str | None = Field(None, max_length=64)
    interval_s: int = Field(3600, ge=10, le=86400)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        needs = {DeviceKind.MOTION: "room", DeviceKind.DOOR: "role", DeviceKind.MAT: "place"}
        wanted = needs[self.kind]
        if getattr(self, wanted) is None:
            raise ValueError(f"a {self.kind} needs {wanted}")
        return self


class Mapping(BaseModel):
    """A home's mapping: its site, Zigbee2MQTT's base topic and the devices by friendly name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str = Field(pattern=ID_PATTERN)
    base_topic: str = Field("zigbee2mqtt", min_length=1)
    devices: dict[str, ZigbeeDevice]

    @model_validator(mode="after")
    def _ids(self) -> Self:
        named: dict[str, ZigbeeDevice] = {}
        for name, device in self.devices.items():
            if not device.device:
                slug = _NOT_ID.sub("-", name.lower()).strip("-")[:64]
                if not slug:
                    raise ValueError(f"{name!r}: give it a device id (device = ...)")
                device = device.model_copy(update={"device": slug})
            named[name] = device
        ids = [d.device for d in named.values()]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"device ids used twice: {', '.join(dup)}")
        object.__setattr__(self, "devices", named)
        return self


def load_mapping(path: Path | str) -> Mapping:
    """Read and check a mapping file, or raise :class:`MappingError` saying what is wrong."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{path}: {exc}") from exc
    try:
        return Mapping.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise MappingError(f"{path}: {problems}") from None

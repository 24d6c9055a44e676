"""Turn a batch of raw messages (devices' MQTT publishes, read from TELEMETRY) into
InfluxDB points, or dead letters with a reason.

This is the edge: every message is checked against the wire contract
(:mod:`homecare.contract`) here, once. Accelerometer frames are reduced to per-second
activity statistics for the whole batch at once with numpy
(:func:`homecare.frames.frame_columns`, as the detectors have them).

Where each reading is stored, and under which names: :mod:`homecare.schema`.

Point timestamps come from the payload (ms), so a re-delivered reading overwrites itself.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from homecare import contract
from homecare.contract import ContractError, Stream, Topic
from homecare.edge import Edge, RawMessage, parse_topic
from homecare.frames import frame_columns
from homecare.influx import FieldValue, escape_tag, line
from homecare.schema import (
    Accel,
    Availability,
    Bed,
    Button,
    DeadLetter,
    DeviceStatus,
    Door,
    Mat,
    Motion,
    SecurityEvent,
    Wearable,
)
from homecare.settings import ContractSettings

log = logging.getLogger(__name__)

DEAD_PAYLOAD_BYTES = 512
_PRINTABLE = {c: "?" for c in range(32) if c != 9} | {127: "?"}


@dataclass(slots=True)
class Points:
    """The outcome of one batch: lines to write and what they count."""

    lines: list[str] = field(default_factory=list)
    stored: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    readings: int = 0
    """Accelerometer samples and other readings carried by the stored messages."""


@lru_cache(maxsize=262_144)
def _tags(topic: Topic) -> str:
    """The line-protocol tag set of a device topic."""
    site, elder, device, kind = Wearable.tags  # every reading's tags: its device topic
    return f"{site}={topic.site},{elder}={topic.elder},{device}={topic.device},{kind}={topic.kind}"


class Converter:
    """Validates messages against the contract and formats InfluxDB lines for a batch."""

    def __init__(
        self,
        limits: ContractSettings,
        *,
        store_raw_accel: bool = False,
        source: str = "",
        last_dead_ms: int = 0,
    ) -> None:
        self.edge = Edge(limits)
        self.store_raw_accel = store_raw_accel
        # Dead letters are told apart by time within one process; across processes
        # (bound to one durable consumer) by the ``ingest`` tag, so none overwrites another's.
        self._source = f",{DeadLetter.ingest}={escape_tag(source)}" if source else ""
        self.last_dead_ms = last_dead_ms
        """The newest dead letter's time; a restart resumes after it (a flood runs ahead)."""

    def convert(self, messages: list[RawMessage], now: float | None = None) -> Points:
        ctx = self.edge.context(now)
        out = Points()
        frames: list[tuple[str, contract.WearableFrame]] = []
        for msg in messages:
            try:
                topic, payload = self.edge.decode(msg, ctx)
                tags = _tags(topic)
                if isinstance(payload, contract.WearableFrame):
                    frames.append((tags, payload))
                    continue
                out.lines.append(self._line(payload, tags, msg))
            except ContractError as exc:
                self._dead(out, msg, exc.reason, exc.detail)
                continue
            except Exception as exc:
                log.exception("unexpected failure on a message from %s", msg.topic[:200])
                self._dead(out, msg, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
                continue
            out.stored[Stream.AVAILABILITY if isinstance(payload, bool) else payload.stream] += 1
            out.readings += 1
        if frames:
            self._frames(out, frames)
        return out

    def _line(self, payload: contract.Payload | bool, tags: str, msg: RawMessage) -> str:
        if isinstance(payload, bool):
            return line(Availability.name, tags, {Availability.online: payload},
                        int(msg.received * 1000))  # fmt: skip
        ts = int(payload.ts * 1000)
        match payload:
            case contract.BedReading():
                fields = {
                    Bed.presence: payload.presence,
                    Bed.hr: payload.hr,
                    Bed.br: payload.br,
                    Bed.movement: payload.movement,
                }
                return line(Bed.name, tags, fields, ts)
            case contract.DoorEvent():
                door_tags = f"{tags},{Door.door}={payload.door},{Door.role}={payload.role}"
                fields = {Door.opened: payload.state == "opened", Door.seq: payload.seq}
                return line(Door.name, door_tags, fields, ts)
            case contract.MotionEvent():
                motion_tags = f"{tags},{Motion.room}={payload.room}"
                fields = {Motion.detected: payload.state == "detected", Motion.seq: payload.seq}
                return line(Motion.name, motion_tags, fields, ts)
            case contract.MatEvent():
                mat_tags = f"{tags},{Mat.place}={payload.place}"
                fields = {Mat.occupied: payload.state == "occupied", Mat.seq: payload.seq}
                return line(Mat.name, mat_tags, fields, ts)
            case contract.SosEvent() | contract.OkEvent():
                button_tags = f"{tags},{Button.button}={payload.stream}"
                return line(Button.name, button_tags, {Button.seq: payload.seq}, ts)
            case contract.FallEvent():
                button_tags = f"{tags},{Button.button}={payload.stream}"
                fields = {Button.seq: payload.seq, Button.confidence: payload.confidence,
                          Button.cancelled: payload.cancelled}  # fmt: skip
                return line(Button.name, button_tags, fields, ts)
            case contract.DeviceStatus():
                # The status payload's attributes are stored under the same names.
                fields = {name: getattr(payload, name) for name in DeviceStatus.fields}
                return line(DeviceStatus.name, tags, fields, ts)
        raise AssertionError(f"no storage for {type(payload).__name__}")  # pragma: no cover

    def _frames(self, out: Points, frames: list[tuple[str, contract.WearableFrame]]) -> None:
        """Per-second activity statistics for every frame of the batch, one numpy pass per rate."""
        for group in frame_columns(frames):
            rate = group.rate
            stats = np.round(
                np.stack([group.stats[k].astype(np.float64) for k in Wearable.STATS], axis=1), 4
            ).tolist()
            times = (group.ts * 1000).astype(np.int64).tolist()
            # Names bound once per group: the loop below runs once per frame.
            mean_, std_, peak_, min_ = Wearable.STATS
            name_, rate_, battery_ = Wearable.name, Wearable.rate, Wearable.battery
            counted = (Wearable.hr, Wearable.spo2, Wearable.steps)
            for frame, tags, (mean, std, peak, low), ts in zip(
                group.frames, group.keys, stats, times, strict=True
            ):
                # The hot path: one f-string per frame rather than the generic line().
                vitals = "".join(
                    f",{name}={value}i"
                    for name, value in zip(
                        counted, (frame.hr, frame.spo2, frame.steps), strict=True
                    )
                    if value is not None
                )
                if frame.battery is not None:
                    vitals += f",{battery_}={float(frame.battery)!r}"
                out.lines.append(
                    f"{name_},{tags} {mean_}={mean!r},{std_}={std!r},{peak_}={peak!r},"
                    f"{min_}={low!r},{rate_}={rate}i{vitals} {ts}"
                )
                if self.store_raw_accel:
                    step = 1000.0 / rate
                    a = Accel
                    out.lines.extend(
                        f"{a.name},{tags} {a.x}={x},{a.y}={y},{a.z}={z} {ts + round(i * step)}"
                        for i, (x, y, z) in enumerate(frame.accel.tolist())
                    )
            out.stored[Stream.FRAME] += len(group.frames)
            out.readings += len(group.frames) * rate

    def _dead(self, out: Points, msg: RawMessage, reason: str, detail: str) -> None:
        out.dead[reason] += 1
        try:
            topic: Topic | None = parse_topic(msg.topic)
        except ContractError:
            topic = None
        payload = msg.payload[:DEAD_PAYLOAD_BYTES].decode("utf-8", "replace").translate(_PRINTABLE)
        # Distinct timestamps, so dead letters received in the same millisecond all stay.
        ts = max(int(msg.received * 1000), self.last_dead_ms + 1)
        self.last_dead_ms = ts
        d = DeadLetter
        fields: dict[str, FieldValue] = {d.topic: msg.topic[:300].translate(_PRINTABLE),
                  d.device: topic.device if topic else "", d.detail: detail,
                  d.payload: payload, d.size: len(msg.payload)}  # fmt: skip
        out.lines.append(line(d.name, f"{d.reason}={reason}{self._source}", fields, ts))
        if reason == "id_mismatch" and topic is not None:
            # A device speaking for another elder or device: a security event of the
            # device whose credentials published it (its topic), for the device fleet.
            out.lines.append(
                line(
                    SecurityEvent.name,
                    f"{_tags(topic)},{SecurityEvent.reason}={reason}{self._source}",
                    {SecurityEvent.detail: detail},
                    ts,
                )
            )

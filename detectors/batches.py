"""Decoded messages → the columnar batches detectors consume, with stable rows for ids.

One pass over the messages sorts them by stream; each stream then becomes one batch
for all elders at once (frames through :func:`homecare.frames.frame_columns`, as ingest
has them). Rows are elders (from :attr:`Batcher.elders`); device-keyed
batches also carry device rows (:attr:`Batcher.devices`).

>>> from homecare.contract import Topic, SosEvent
>>> batcher = Batcher()
>>> topic = Topic.parse("homecare/v1/s/e7/wearable/w7/sos")
>>> press = SosEvent.model_validate({"elder": "e7", "device": "w7", "ts": 5.0, "seq": 2},
...                                 context={"now": 6.0})
>>> out = batcher.build([(topic, press)])
>>> [(str(b.stream), b.rows.tolist(), b.column("seq").tolist()) for b in out.batches]
[('button', [0], [2.0])]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from detectors.base import (
    BUTTONS,
    DOOR_ROLES,
    MAT_PLACES,
    ROOMS,
    AccelBatch,
    Batch,
    BatchStream,
    ReadingBatch,
    Roster,
)
from detectors.fall_model import placement_code
from homecare import contract
from homecare.contract import Payload, Topic
from homecare.frames import frame_columns
from homecare.schema import Button


@dataclass(slots=True)
class Built:
    batches: list[Batch] = field(default_factory=list)
    ok_presses: list[tuple[str, float]] = field(default_factory=list)
    """(elder, ts) of each "I'm OK" press: they cancel alerts in their grace window."""
    latest_ts: float = float("-inf")


_NAN = float("nan")


class Batcher:
    def __init__(self) -> None:
        self.elders = Roster()
        self.devices = Roster()
        self.site: dict[str, str] = {}
        """Each elder's site, from their topics."""
        self.wearable: dict[str, str] = {}
        """Each elder's wearable, from its frames."""

    def _reading(
        self, stream: str, items: list[tuple[Topic, Payload]], columns: dict[str, list[float]]
    ) -> ReadingBatch:
        return ReadingBatch(
            stream,
            self.elders.rows(t.elder for t, _ in items),
            np.fromiter((p.ts for _, p in items), np.float64, len(items)),
            {name: np.asarray(values, np.float64) for name, values in columns.items()},
            self.devices.rows(t.device for t, _ in items),
        )

    def build(
        self, decoded: Iterable[tuple[Topic, Payload | bool]], *, received: float | None = None
    ) -> Built:
        """Batches for every stream present; availability takes the receive time."""
        out = Built()
        by_stream: dict[str, list[tuple[Topic, Payload]]] = {}
        availability: list[tuple[Topic, bool]] = []
        for topic, payload in decoded:
            self.site[topic.elder] = topic.site
            if isinstance(payload, bool):
                availability.append((topic, payload))
                continue
            by_stream.setdefault(payload.stream, []).append((topic, payload))
            out.latest_ts = max(out.latest_ts, payload.ts)
        frames = by_stream.pop(contract.Stream.FRAME, [])
        if frames:
            out.batches.extend(self._frames(frames))
        for stream, items in by_stream.items():
            out.batches.append(self._other(stream, items, out))
            if stream == contract.Stream.OCCUPANCY:
                beds = [(t, p) for t, p in items if getattr(p, "place", None) == "bed"]
                if beds:  # a bed mat stands in for a bed sensor: the bed detectors read it
                    out.batches.append(self._bed_mats(beds))
        if availability:
            at = received if received is not None else max(out.latest_ts, 0.0)
            out.batches.append(
                ReadingBatch(
                    BatchStream.AVAILABILITY,
                    self.elders.rows(t.elder for t, _ in availability),
                    np.full(len(availability), at),
                    {"online": np.array([float(online) for _, online in availability])},
                    self.devices.rows(t.device for t, _ in availability),
                )
            )
        return out

    def _frames(self, frames: list[tuple[Topic, Payload]]) -> list[Batch]:
        batches: list[Batch] = []
        pairs: list[tuple[Topic, contract.WearableFrame]] = []
        for topic, frame in frames:
            assert isinstance(frame, contract.WearableFrame)
            self.wearable[topic.elder] = topic.device
            pairs.append((topic, frame))
        for group in frame_columns(pairs):
            rows = self.elders.rows(t.elder for t in group.keys)
            batches.append(AccelBatch(rows, group.ts, group.accel, float(group.rate)))
            columns: dict[str, np.ndarray] = dict(group.stats)
            # the mean acceleration: gravity's direction, the posture (lying on the floor)
            gravity = group.gravity()
            columns.update(gx=gravity[:, 0], gy=gravity[:, 1], gz=gravity[:, 2])
            columns.update(group.vitals())
            batches.append(
                ReadingBatch(
                    BatchStream.WEARABLE,
                    rows,
                    group.ts,
                    columns,
                    self.devices.rows(t.device for t in group.keys),
                )
            )
        return batches

    def _bed_mats(self, items: list[tuple[Topic, Payload]]) -> ReadingBatch:
        """Bed mats' events as bed readings: presence, no movement, held until the next."""
        occupied = [float(getattr(p, "state", "") == "occupied") for _, p in items]
        columns = {"presence": occupied, "movement": [_NAN] * len(items),
                   "held": [1.0] * len(items)}  # fmt: skip
        return self._reading(BatchStream.BED, items, columns)

    def _other(self, stream: str, items: list[tuple[Topic, Payload]], out: Built) -> ReadingBatch:
        columns: dict[str, list[float]]
        match stream:
            case contract.Stream.READING:
                columns = {"presence": [], "hr": [], "br": [], "movement": []}
                name = BatchStream.BED
            case contract.Stream.EVENT:
                columns = {"opened": [], "role": [], "seq": []}
                name = BatchStream.DOOR
            case contract.Stream.SOS | contract.Stream.OK | contract.Stream.FALL:
                columns = {Button.button: [], "seq": [], "confidence": [], "cancelled": []}
                name = BatchStream.BUTTON
            case contract.Stream.MOTION:
                columns = {"detected": [], "room": [], "seq": []}
                name = BatchStream.MOTION
            case contract.Stream.OCCUPANCY:
                columns = {"occupied": [], "place": [], "seq": []}
                name = BatchStream.MAT
            case _:
                columns = {"battery": [], "interval_s": [], "placement": []}
                name = BatchStream.STATUS
        for topic, p in items:
            match p:
                case contract.BedReading():
                    columns["presence"].append(float(p.presence))
                    columns["hr"].append(_NAN if p.hr is None else p.hr)
                    columns["br"].append(_NAN if p.br is None else p.br)
                    columns["movement"].append(p.movement)
                case contract.DoorEvent():
                    columns["opened"].append(float(p.state == "opened"))
                    columns["role"].append(DOOR_ROLES.index(p.role))
                    columns["seq"].append(p.seq)
                case contract.MotionEvent():
                    columns["detected"].append(float(p.state == "detected"))
                    columns["room"].append(ROOMS.index(p.room))
                    columns["seq"].append(p.seq)
                case contract.MatEvent():
                    columns["occupied"].append(float(p.state == "occupied"))
                    columns["place"].append(MAT_PLACES.index(p.place))
                    columns["seq"].append(p.seq)
                case contract.SosEvent() | contract.OkEvent() | contract.FallEvent():
                    columns[Button.button].append(BUTTONS.index(p.stream))
                    columns["seq"].append(p.seq)
                    confidence, cancelled = _NAN, _NAN
                    if isinstance(p, contract.FallEvent):
                        confidence = _NAN if p.confidence is None else p.confidence
                        cancelled = float(p.cancelled)
                    columns["confidence"].append(confidence)
                    columns["cancelled"].append(cancelled)
                    if isinstance(p, contract.OkEvent):
                        out.ok_presses.append((topic.elder, p.ts))
                case contract.DeviceStatus():
                    columns["battery"].append(p.battery)
                    columns["interval_s"].append(p.interval_s)
                    # where a wearable is worn (Placement code); NaN: not a wearable
                    wearable = topic.kind == contract.DeviceKind.WEARABLE
                    code = float(placement_code(p.placement)) if wearable else _NAN
                    columns["placement"].append(code)
        return self._reading(name, items, columns)

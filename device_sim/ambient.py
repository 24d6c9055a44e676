"""A simulated home's ambient sensors, driven by the same routine as every other device.

The planned day (:func:`device_sim.routine.plan_day`) says, second by second, what the
elder does and where (its segments' activities and labels, its door actions). This
module turns it into what a home fitted with ambient sensors would log:

* a bed mat occupied while in bed (asleep or awake in it), merged across segments;
* a chair mat occupied while sitting at home in the armchair (``sit``, a nap in the
  armchair), not at the table nor on the toilet;
* motion sensors (PIR) in the bathroom, kitchen, hall, living room and bedroom:
  ``detected`` when the elder moves (walks or stands) in the room, ``cleared`` when they
  leave it or sit down; nothing while out of the house;
* the door contacts of the routine (front, bathroom, bedroom, fridge) and the toilet's
  flush (an appliance in the bathroom, 10 s after each visit to the toilet).

Events are ``(ts, sensor, kind, place, value)`` tuples, the rows of the documented home
log (:mod:`evaluation.homelog`; :func:`write_home_log` writes the CSV), so a simulated
home can be replayed and evaluated like a real one (``homecare sim-home``).

>>> from device_sim.routine import make_profile, plan_day
>>> day = plan_day(make_profile(seed=7, index=0), seed=7, index=0, day=19723)
>>> events = ambient_events(day)
>>> sorted({(k, p) for _, _, k, p, _ in events})[:4]
[('appliance', 'bathroom'), ('contact', 'bathroom'), ('contact', 'bedroom'), ('contact', 'fridge')]
>>> [v for t, s, k, p, v in events if s == "bed-mat"][:2]
[1.0, 0.0]
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from device_sim.routine import IN_BED, Activity, Day, Segment

__all__ = [
    "AMBIENT_MATS",
    "AMBIENT_ROOMS",
    "STREAM_OF",
    "AmbientFeed",
    "Event",
    "ambient_device",
    "ambient_events",
    "ambient_payload",
    "fitted",
    "room_of",
    "write_home_log",
]

Event = tuple[float, str, str, str, float]

_BATHROOM = ("bathroom", "toilet", "wash", "dress")
_KITCHEN = ("kitchen", "prepare", "serve", "clear table")
_HALL = ("to ", "from ", "out of bedroom", "back home", "back to bed")
_CHAIR = ("sit", "nap in armchair")
_WORDS = {"motion": ("cleared", "detected"), "contact": ("closed", "opened"),
          "mat": ("free", "occupied"), "appliance": ("off", "on")}  # fmt: skip


def room_of(segment: Segment) -> str | None:
    """The room a segment happens in (None: out of the house)."""
    if segment.out:
        return None
    label = segment.label
    if segment.activity in IN_BED or label in ("wake up", "lie down", "after nap"):
        return "bedroom"
    if label.startswith(_HALL):
        return "hall"
    if any(word in label for word in _BATHROOM):
        return "bathroom"
    if any(word in label for word in _KITCHEN):
        return "kitchen"
    if label.startswith("eat"):
        return "dining"
    return "living_room"


def _intervals(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Touching or overlapping spans merged."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + 1.0:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def ambient_events(day: Day) -> list[Event]:
    """The day's ambient sensor events, in time order."""
    events: list[Event] = []

    def on_off(spans: Iterable[tuple[float, float]], sensor: str, kind: str, place: str) -> None:
        for start, end in _intervals(spans):
            events.append((start, sensor, kind, place, 1.0))
            events.append((end, sensor, kind, place, 0.0))

    segs = day.segments
    on_off(((s.start, s.end) for s in segs if s.activity in IN_BED and not s.out),
           "bed-mat", "mat", "bed")  # fmt: skip
    on_off(((s.start, s.end) for s in segs if s.activity is Activity.SIT and not s.out
            and s.label.startswith(_CHAIR)), "chair-mat", "mat", "chair")  # fmt: skip
    moving = (Activity.WALK, Activity.STAND)
    by_room: dict[str, list[tuple[float, float]]] = {}
    for s in segs:
        room = room_of(s)
        if room is not None and s.activity in moving:
            by_room.setdefault(room, []).append((s.start, s.end))
    for room, spans in by_room.items():
        on_off(spans, f"pir-{room}", "motion", room)
    for s in segs:
        if s.label == "toilet" and not s.out:
            events.append((s.end + 10.0, "flush", "appliance", "bathroom", 1.0))
            events.append((s.end + 20.0, "flush", "appliance", "bathroom", 0.0))
    for d in day.doors:
        events.append((d.ts, f"door-{d.role}", "contact", str(d.role),
                       1.0 if d.state == "opened" else 0.0))  # fmt: skip
    events.sort(key=lambda e: e[0])
    return events


def write_home_log(events: Iterable[Event], path: Path, *, utc_offset_s: float = 0.0) -> int:
    """Write events as the documented home-log CSV (local ISO times); returns the rows."""
    rows = 0
    with path.open("w", encoding="utf-8") as f:
        f.write("timestamp,sensor,kind,place,value\n")
        for ts, sensor, kind, place, value in events:
            local = datetime.fromtimestamp(ts + utc_offset_s, UTC).replace(tzinfo=None)
            word = _WORDS[kind][int(value > 0.5)]
            f.write(f"{local.isoformat(timespec='seconds')},{sensor},{kind},{place},{word}\n")
            rows += 1
    return rows


AMBIENT_ROOMS: tuple[str, ...] = ("bathroom", "kitchen", "hall", "living_room", "dining",
                                  "bedroom")
"""The rooms :func:`room_of` can name: a fitted home has a motion sensor in each."""
AMBIENT_MATS: tuple[str, ...] = ("bed", "chair")
_ON = {"motion": "detected", "mat": "occupied"}
_OFF = {"motion": "cleared", "mat": "free"}


def fitted(index: int, share: float) -> bool:
    """Whether home ``index`` has ambient sensors when ``share`` of the homes do, spread
    evenly (0.5: every second home; 1: all)."""
    return math.floor((index + 1) * share + 1e-9) > math.floor(index * share + 1e-9)


def ambient_device(kind: str, place: str, number: str) -> str:
    """A fitted home's motion sensor or mat id: ``pir0001-kitchen``, ``mat0001-bed``."""
    return f"{'pir' if kind == 'motion' else 'mat'}{number}-{place}"


class AmbientFeed:
    """One fitted home's motion and mat events, in time order, for the live simulator.

    The same :func:`ambient_events` as ``homecare sim-home`` (one way to render a day),
    taken day after day as the clock moves on. A mat occupied across the wake-up that
    divides two planned days stays occupied (no ``free`` and ``occupied`` in the same
    second), and an event that repeats the sensor's state is not sent.
    """

    def __init__(self, plan: Callable[[int], Day], day: int, t: float) -> None:
        self._plan = plan
        self._state: dict[str, float] = {}
        self._load(day, t, pending={})

    def _load(self, number: int, t: float, pending: dict[str, Event]) -> None:
        self.day = self._plan(number)
        events = [e for e in ambient_events(self.day) if e[2] in _ON]
        carried: dict[str, Event] = {}
        keep: list[Event] = []
        for e in events:
            ts, sensor, _, _, value = e
            if value < 0.5 and ts >= self.day.end - 0.5:
                carried[sensor] = e  # decided when the next day shows what follows
            elif value > 0.5 and ts <= self.day.start + 0.5 and sensor in pending:
                del pending[sensor]  # still on across the day boundary
            else:
                keep.append(e)
        keep[:0] = pending.values()
        self._events = keep
        self._carried = carried
        self._pos = bisect.bisect_left([e[0] for e in keep], t)

    @property
    def next_ts(self) -> float:
        """When the next event is due (the day's end while none is left)."""
        return self._events[self._pos][0] if self._pos < len(self._events) else self.day.end

    def until(self, end: float) -> list[Event]:
        """The events before ``end``, consumed."""
        out: list[Event] = []
        while self.next_ts < end:
            if self._pos >= len(self._events):
                self._load(self.day.day + 1, self.day.end, dict(self._carried))
                continue
            event = self._events[self._pos]
            self._pos += 1
            if self._state.get(event[1]) != event[4]:
                self._state[event[1]] = event[4]
                out.append(event)
        return out


def ambient_payload(elder: str, device: str, event: Event, seq: int) -> dict[str, object]:
    """The contract's payload (a :class:`~homecare.contract.MotionEvent` or
    :class:`~homecare.contract.MatEvent`) of one ambient event."""
    ts, _, kind, place, value = event
    state = _ON[kind] if value > 0.5 else _OFF[kind]
    where = "room" if kind == "motion" else "place"
    return {"elder": elder, "device": device, "ts": round(ts, 3), where: place,
            "state": state, "seq": seq}


STREAM_OF = {"motion": "motion", "mat": "occupancy"}
"""The contract stream each ambient kind publishes on."""

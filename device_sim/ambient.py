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

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from device_sim.routine import IN_BED, Activity, Day, Segment

__all__ = ["Event", "ambient_events", "room_of", "write_home_log"]

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

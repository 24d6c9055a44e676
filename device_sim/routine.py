"""Daily routines of simulated elders: what each one is doing, second by second.

A routine is planned per elder and per *day*, where a day runs from one morning's
wake-up to the next (so the night, with its bathroom trips, belongs to the evening
before). Every plan is a pure function of ``(seed, elder index, day number)``, so a
simulation started at any hour reproduces the same lives, and a day is planned only
when an elder reaches it (the cost is spread over the elders' wake-up times).

Times are unix seconds; "local" clock times use ``utc_offset_s`` (0 = UTC).

>>> profile = make_profile(seed=7, index=0)
>>> day = plan_day(profile, seed=7, index=0, day=19723)
>>> day.segments[0].activity is Activity.IN_BED, day.segments[-1].end == day.end
(True, True)
>>> sorted({d.role.value for d in day.doors}) >= ["bathroom", "bedroom", "fridge"]
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, NamedTuple

from homecare.contract import DoorRole

DAY_S = 86400.0


class Activity(IntEnum):
    """What the elder's body is doing; drives every device."""

    SLEEP = 0
    IN_BED = 1
    SIT = 2
    STAND = 3
    WALK = 4
    LIE_FLOOR = 5
    """Only through an injected motion (after a fall); never planned."""


class Posture(IntEnum):
    """Where gravity points in the wearable's frame (see :mod:`device_sim.signals`)."""

    UPRIGHT = 0
    SEATED = 1
    SUPINE = 2
    LEFT_SIDE = 3
    RIGHT_SIDE = 4
    PRONE = 5


IN_BED = frozenset({Activity.SLEEP, Activity.IN_BED})


@dataclass(frozen=True, slots=True)
class Profile:
    """An elder's habits, drawn once from the seed; every day varies around them."""

    wake_h: float
    bed_h: float
    night_trips: float
    """Mean number of night bathroom trips."""
    nap_p: float
    nap_in_bed: bool
    outing_p: float
    wears_at_night: bool
    """``True``: worn 24/7 and charged during the morning wash; else charged at night."""
    step_hz: float
    rest_hr: float
    spo2: int
    br: float
    """Breathing rate asleep, breaths per minute."""
    placement: Literal["pendant", "belt"]
    utc_offset_s: float = 0.0


class Segment(NamedTuple):
    """A stretch of one activity; ``worn`` says whether the wearable is on the body."""

    start: float
    end: float
    activity: Activity
    posture: Posture
    out: bool = False
    worn: bool = True
    gait_hz: float = 0.0
    label: str = ""


class DoorAction(NamedTuple):
    """A door opening or closing at ``ts``."""

    ts: float
    role: DoorRole
    state: Literal["opened", "closed"]


@dataclass(frozen=True, slots=True)
class Day:
    """One elder's plan from wake-up (``start``) to the next wake-up (``end``)."""

    day: int
    start: float
    end: float
    segments: list[Segment]
    doors: list[DoorAction] = field(default_factory=list)

    def at(self, ts: float) -> Segment:
        """The segment covering ``ts`` (for tests and debugging; the simulation walks them)."""
        for seg in self.segments:
            if seg.start <= ts < seg.end:
                return seg
        raise ValueError(f"{ts} is outside day {self.day} [{self.start}, {self.end})")


def daytime(start: float, hour: int = 10) -> float:
    """The UTC offset that makes ``start`` ``hour``:00 local time for simulated elders.

    Wearables charge at night, so the traffic depends on the elders' clock: benchmarks
    and tests that need everyone up and wearing their pendant set ``utc_offset_s`` to
    this, whatever the hour where they run.

    >>> daytime(0.0)  # midnight UTC: 10:00 local is UTC+10
    36000.0
    >>> (86400 * 3 + 3600 * 14 + daytime(86400 * 3 + 3600 * 14)) % 86400 / 3600
    10.0
    """
    return (hour * 3600.0 - start) % DAY_S


def _rng(seed: int, index: int, day: int, salt: int) -> random.Random:
    # Python's Random is stable across versions for random()/uniform()/gauss() given an int.
    return random.Random(((seed * 1_000_003 + index) * 1_000_033 + day) * 7 + salt)


def make_profile(seed: int, index: int, utc_offset_s: float = 0.0) -> Profile:
    """Draw elder ``index``'s habits from the simulation seed."""
    r = _rng(seed, index, -1, 0)
    return Profile(
        wake_h=r.uniform(6.0, 8.5),
        bed_h=r.uniform(21.0, 23.5),
        night_trips=r.uniform(0.3, 2.5),
        nap_p=r.uniform(0.1, 0.8),
        nap_in_bed=r.random() < 0.5,
        outing_p=r.uniform(0.3, 0.9),
        wears_at_night=r.random() < 0.4,
        step_hz=r.uniform(1.82, 1.98),
        rest_hr=r.uniform(58.0, 80.0),
        spo2=r.choice((95, 96, 96, 97, 97, 98)),
        br=r.uniform(12.0, 17.0),
        placement="pendant" if r.random() < 0.7 else "belt",
        utc_offset_s=utc_offset_s,
    )


def _wake_time(profile: Profile, seed: int, index: int, day: int) -> float:
    """Unix time elder ``index`` wakes on local day ``day`` (days since 1970-01-01)."""
    r = _rng(seed, index, day, 1)
    hours = min(max(profile.wake_h + r.gauss(0.0, 0.3), 5.0), 9.75)
    return day * DAY_S + hours * 3600.0 - profile.utc_offset_s


def day_of(profile: Profile, seed: int, index: int, ts: float) -> int:
    """The day number whose plan covers ``ts`` (before the morning wake-up: yesterday's)."""
    day = math.floor((ts + profile.utc_offset_s) / DAY_S)
    return day if ts >= _wake_time(profile, seed, index, day) else day - 1


class _Planner:
    """Builds one day's segments and door actions with a cursor; private to plan_day."""

    def __init__(self, profile: Profile, r: random.Random, start: float) -> None:
        self.p = profile
        self.r = r
        self.c = start
        self.segments: list[Segment] = []
        self.doors: list[DoorAction] = []
        self.out = False
        self.worn = True
        self.last_bathroom = start

    def add(self, activity: Activity, seconds: float, label: str = "",
            posture: Posture | None = None) -> None:
        if seconds <= 0:
            return
        if posture is None:
            posture = {Activity.SIT: Posture.SEATED}.get(activity, Posture.UPRIGHT)
            if activity in IN_BED:
                posture = self.r.choice(
                    (Posture.SUPINE, Posture.SUPINE, Posture.LEFT_SIDE, Posture.RIGHT_SIDE)
                )
        hz = 0.0
        if activity is Activity.WALK:
            hz = min(max(self.p.step_hz + self.r.uniform(-0.03, 0.03), 1.8), 2.0)
        end = self.c + seconds
        self.segments.append(
            Segment(self.c, end, activity, posture, self.out, self.worn, hz, label)
        )
        self.c = end

    def door(self, role: DoorRole, after_s: float = 0.0) -> None:
        """Open ``role`` at cursor + after_s and close it a few seconds later."""
        ts = self.c + after_s
        self.doors.append(DoorAction(ts, role, "opened"))
        self.doors.append(DoorAction(ts + self.r.uniform(2.5, 7.0), role, "closed"))

    def walk(self, lo: float, hi: float, label: str = "walk") -> None:
        self.add(Activity.WALK, self.r.uniform(lo, hi), label)

    def bathroom(self, wash: bool = False) -> None:
        self.walk(8, 25, "to bathroom")
        self.door(DoorRole.BATHROOM, -1.0)
        if wash:
            self.add(Activity.STAND, self.r.uniform(240, 600), "wash")
            self.add(Activity.SIT, self.r.uniform(60, 240), "toilet")
            self.add(Activity.STAND, self.r.uniform(120, 420), "dress")
        else:
            self.add(Activity.STAND, self.r.uniform(10, 40), "bathroom")
            self.add(Activity.SIT, self.r.uniform(60, 240), "toilet")
            self.add(Activity.STAND, self.r.uniform(20, 90), "wash hands")
        self.door(DoorRole.BATHROOM)
        self.walk(8, 25, "from bathroom")
        self.last_bathroom = self.c

    def meal(self, name: str) -> None:
        self.walk(10, 40, f"to kitchen ({name})")
        self.door(DoorRole.FRIDGE)
        self.add(Activity.STAND, self.r.uniform(300, 900), f"prepare {name}")
        if self.r.random() < 0.5:
            self.door(DoorRole.FRIDGE)
        self.add(Activity.STAND, self.r.uniform(20, 60), f"serve {name}")
        self.walk(5, 15, "to table")
        self.add(Activity.SIT, self.r.uniform(900, 2100), f"eat {name}")
        self.add(Activity.STAND, self.r.uniform(60, 300), "clear table")

    def outing(self) -> None:
        self.walk(10, 25, "to front door")
        self.door(DoorRole.FRONT, -1.0)
        self.out = True
        self.walk(300, 1200, "out walking")
        for _ in range(self.r.randint(1, 3)):
            self.add(Activity.STAND, self.r.uniform(60, 300), "out standing")
            if self.r.random() < 0.6:
                self.add(Activity.SIT, self.r.uniform(300, 2400), "out sitting")
            self.walk(120, 900, "out walking")
        self.out = False
        self.door(DoorRole.FRONT, -1.0)
        self.walk(10, 25, "back home")

    def nap(self) -> None:
        if self.p.nap_in_bed:
            self.walk(8, 20, "to bedroom")
            self.door(DoorRole.BEDROOM, -1.0)
            self.add(Activity.IN_BED, self.r.uniform(60, 300), "lie down")
            self.add(Activity.SLEEP, self.r.uniform(1200, 5400), "nap")
            self.add(Activity.IN_BED, self.r.uniform(60, 300), "after nap")
            self.door(DoorRole.BEDROOM)
            self.walk(8, 20, "from bedroom")
        else:
            self.add(Activity.SIT, self.r.uniform(1200, 3600), "nap in armchair")

    def fill(self, until: float) -> None:
        """Ordinary home life (sitting, pottering, bathroom every 2-4 h) until ``until``."""
        while self.c < until - 60:
            if self.c - self.last_bathroom > self.r.uniform(7200, 14400):
                self.bathroom()
                continue
            left = until - self.c
            pick = self.r.random()
            if pick < 0.55:
                self.add(Activity.SIT, min(self.r.uniform(600, 2700), left), "sit")
            elif pick < 0.75:
                self.add(Activity.STAND, min(self.r.uniform(60, 300), left), "stand")
            else:
                self.walk(20, min(180, max(left, 21)), "potter")
        if self.c < until:
            self.add(Activity.SIT, until - self.c, "sit")

    def night(self, until: float) -> None:
        """Asleep until ``until`` with Poisson-many bathroom trips."""
        trips = _poisson(self.r, self.p.night_trips)
        span = until - self.c
        times = sorted(self.c + self.r.uniform(0.1, 0.85) * span for _ in range(trips))
        for when in times:
            if when - self.c < 1200:
                continue
            self.add(Activity.SLEEP, when - self.c, "asleep")
            self.add(Activity.IN_BED, self.r.uniform(30, 180), "awake at night")
            self.door(DoorRole.BEDROOM, 5.0)
            self.walk(8, 20, "to bedroom door")
            self.bathroom()
            self.door(DoorRole.BEDROOM, -2.0)
            self.walk(5, 15, "back to bed")
            self.add(Activity.IN_BED, self.r.uniform(60, 600), "back in bed")
        self.add(Activity.SLEEP, until - self.c, "asleep")


def _poisson(r: random.Random, mean: float) -> int:
    limit, k, prod = math.exp(-mean), 0, r.random()
    while prod > limit:
        k += 1
        prod *= r.random()
    return k


def plan_day(profile: Profile, seed: int, index: int, day: int) -> Day:
    """Plan elder ``index``'s day ``day``: from that morning's wake-up to the next one."""
    start = _wake_time(profile, seed, index, day)
    end = _wake_time(profile, seed, index, day + 1)
    midnight = day * DAY_S - profile.utc_offset_s
    r = _rng(seed, index, day, 2)
    pl = _Planner(profile, r, start)

    def clock(hours: float, jitter_min: float = 20.0) -> float:
        return midnight + hours * 3600.0 + r.gauss(0.0, jitter_min * 60.0)

    pl.worn = profile.wears_at_night  # else the wearable is still on its charger
    pl.add(Activity.IN_BED, r.uniform(120, 600), "wake up")
    pl.door(DoorRole.BEDROOM, 3.0)
    pl.walk(8, 20, "out of bedroom")
    if profile.wears_at_night:
        pl.worn = False  # taken off for the morning wash, charged meanwhile
        pl.bathroom(wash=True)
        pl.worn = True
    else:
        pl.bathroom(wash=True)
        pl.worn = True  # put on after dressing
    pl.meal("breakfast")

    bed = clock(profile.bed_h, 15.0)
    bed = min(max(bed, pl.c + 6 * 3600.0), end - 5 * 3600.0)
    nap = r.random() < profile.nap_p
    outing = r.random() < profile.outing_p
    morning_outing = outing and r.random() < 0.4
    if morning_outing:
        pl.fill(clock(10.0, 30.0))
        pl.outing()
    pl.fill(clock(12.5, 25.0))
    pl.meal("lunch")
    if nap:
        pl.fill(pl.c + r.uniform(300, 1800))
        pl.nap()
    if outing and not morning_outing:
        pl.fill(clock(15.5, 40.0))
        pl.outing()
    pl.fill(clock(18.25, 30.0))
    pl.meal("dinner")
    pl.fill(bed - 1200.0)
    pl.bathroom(wash=True)
    pl.walk(8, 20, "to bedroom")
    pl.door(DoorRole.BEDROOM, -1.0)
    if not profile.wears_at_night:
        pl.worn = False  # taken off and put on the charger
    pl.add(Activity.IN_BED, r.uniform(300, 1500), "in bed awake")
    if pl.c < end - 3600:
        pl.night(end)
    else:  # an overlong day: sleep whatever is left
        pl.add(Activity.SLEEP, end - pl.c, "asleep")
    segments = [s for s in pl.segments if s.start < end]
    last = segments[-1]
    if last.end != end:
        segments[-1] = last._replace(end=end)
    doors = sorted((d for d in pl.doors if d.ts < end), key=lambda d: d.ts)
    return Day(day, start, end, segments, doors)

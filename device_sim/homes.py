"""Simulated homes: elders living their routines, and the messages their devices send.

Each elder has three devices: a wearable (``w0001``: a frame every second, SOS/OK
buttons), a bed sensor (``b0001``: a reading every ``bed_period_s``) and a door hub
(``d0001``: front, bathroom, bedroom and fridge contacts); a share of the homes
(``SimConfig.ambient``) also has a motion sensor per room (``pir0001-kitchen``) and bed
and chair mats (``mat0001-bed``), whose events :mod:`device_sim.ambient` renders from the
same routine as ``homecare sim-home``. Every device reports its status every
``status_period_s``. All elders advance together: :func:`timeline` says
what every elder does in a stretch of seconds (numpy arrays elder × second: the routine,
then the injected events on top), :class:`Body` steps heart rate and battery over it,
and :class:`Simulation` renders it as messages, frames generated and JSON-encoded for
all elders at once; only the few elders whose activity changes or who have a door event
in the stretch are walked one by one. The fast path of an evaluation
(:func:`device_sim.scenarios.iter_streams`) renders the same timeline as decoded columns.

While the wearable is off the body (charging at night, or during the morning wash
for elders who wear it 24/7) it publishes **no frames**, only its status. While an
elder is out, the bed reports absence and the doors stay shut except the front door.

Injected events (:meth:`Simulation.inject`) change this for one elder: a
:class:`Motion` (a fall and a long lie on the floor), :class:`Away` (wandering out at
night, lying on the bathroom floor, staying in bed), :class:`Vitals` (heart rate, SpO2,
breathing), :class:`OffBody` (the wearable left on a table), :class:`Battery` (a drain),
:class:`Silence` (a device goes dead) and the SOS / OK buttons. ``device_sim.scenarios``
builds labelled ones.

Timestamps are simulated unix seconds; run a past window (e.g. the last 24 h) to
go faster than real time without ever stamping the future.

>>> sim = Simulation(SimConfig(elders=2, seed=1, start=1_700_000_000.0))
>>> msgs = sim.step(1_700_000_000.0)
>>> sorted({str(topic.stream) for topic, _ in msgs}) >= ["frame"]
True
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from device_sim import ambient, encode, signals
from device_sim.routine import (
    IN_BED,
    Activity,
    Day,
    Posture,
    Profile,
    day_of,
    make_profile,
    plan_day,
)
from homecare.contract import DeviceKind, DoorRole, Stream, Topic

STATUS_PERIOD_S = 300
INF = math.inf


@dataclass(frozen=True)
class SimConfig:
    """What to simulate; ``start`` defaults to 24 hours ago (a past window, never the future)."""

    elders: int = 20
    seed: int = 0
    site: str = "demo"
    start: float = field(default_factory=lambda: float(math.floor(time.time() - 86400)))
    rate: int = 50
    bed_period_s: int = 10
    status_period_s: int = STATUS_PERIOD_S
    utc_offset_s: float = 0.0
    ambient: float = 0.0
    """Share of the homes fitted with a motion sensor per room and a bed and a chair mat
    (:mod:`device_sim.ambient`), spread evenly: 0 none, 0.5 every second home, 1 all."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f"ambient share {self.ambient} is outside 0-1")
        if not 25 <= self.rate <= 100:
            raise ValueError(f"rate {self.rate} Hz is outside the contract's 25-100 Hz")
        if not 10 <= self.bed_period_s <= 30:
            raise ValueError(f"bed_period_s {self.bed_period_s} is outside 10-30 s")
        if self.elders < 1:
            raise ValueError("elders must be at least 1")


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One simulated device: its id, its topics and what its status reports."""

    kind: DeviceKind
    device: str
    elder: str
    site: str
    model: str
    vendor: str
    firmware: str
    placement: Literal["pendant", "belt", "bed", "door", "wall", "chair"]
    room: str | None = None

    def topic(self, stream: Stream) -> Topic:
        return Topic(self.site, self.elder, self.kind, self.device, stream)

    @property
    def availability(self) -> Topic:
        return self.topic(Stream.AVAILABILITY)


@dataclass(frozen=True, slots=True)
class SimElder:
    """A simulated elder (pseudonymous id ``e0001``), their three devices and, in a fitted
    home, its motion sensors and mats (``ambient``)."""

    index: int
    elder: str
    profile: Profile
    wearable: SimDevice
    bed: SimDevice
    door: SimDevice
    ambient: tuple[SimDevice, ...] = ()

    @property
    def devices(self) -> tuple[SimDevice, ...]:
        """Wearable, bed sensor and door hub first (status indexes them 0-2), then the
        home's ambient sensors."""
        return (self.wearable, self.bed, self.door, *self.ambient)


@dataclass(frozen=True, slots=True)
class SosPress:
    """The wearer presses the emergency button."""


@dataclass(frozen=True, slots=True)
class OkPress:
    """The wearer presses "I'm OK"."""


@dataclass(frozen=True)
class Motion:
    """Replace the wearable's samples from ``at_ts`` with ``accel`` (m×3 g at the sim's rate).

    With ``hold_s`` > 0 the elder then lies still in ``then`` posture (on the floor:
    no bed presence, no doors) before the routine resumes — a fall and a long lie.
    """

    accel: np.ndarray
    then: Posture = Posture.SUPINE
    hold_s: float = 0.0


@dataclass(frozen=True)
class Away:
    """For ``duration_s`` the elder does ``activity`` instead of the routine.

    Wandering out at night (``out=True``), lying on the bathroom floor, staying in bed
    in the morning: the routine's doors stay shut, the bed sees ``activity`` (present
    only for in-bed activities at home); ``doors`` open at the given offsets (seconds)
    and close a few seconds later. ``worn`` None keeps the routine's.
    """

    duration_s: float
    activity: Activity
    posture: Posture = Posture.UPRIGHT
    out: bool = False
    worn: bool | None = None
    doors: tuple[tuple[float, DoorRole], ...] = ()


@dataclass(frozen=True)
class Vitals:
    """For ``duration_s`` heart rate (wearable and bed), SpO2 and breathing follow these.

    ``hr`` is approached with an 8 s time constant; ``spo2`` reads ±1 around its value;
    ``br`` replaces the breathing rate the bed sees. None keeps the body's own.
    """

    duration_s: float
    hr: float | None = None
    spo2: int | None = None
    br: float | None = None


@dataclass(frozen=True)
class OffBody:
    """The wearable lies on a table for ``duration_s``: still frames, no heart rate or SpO2."""

    duration_s: float


@dataclass(frozen=True)
class Battery:
    """The wearable's battery jumps to ``level`` % and drains ``drain_per_h`` for a while.

    No charging happens meanwhile (the elder forgot the charger); it never drops below 1 %.
    """

    level: float
    drain_per_h: float
    duration_s: float


@dataclass(frozen=True)
class Silence:
    """The elder's ``kind`` device publishes nothing for ``duration_s`` (dead, unplugged)."""

    kind: DeviceKind
    duration_s: float = INF


SimEvent = SosPress | OkPress | Motion | Away | Vitals | OffBody | Battery | Silence
_KIND_INDEX = {DeviceKind.WEARABLE: 0, DeviceKind.BED: 1, DeviceKind.DOOR: 2}


# -- what every elder does, second by second: one timeline for both renderers -----------


def motion_stats(at: float, samples: np.ndarray, rate: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-second spread, mean and magnitude spread of a motion, from ``floor(at)`` on."""
    lead = round((at - math.floor(at)) * rate)
    n = math.ceil((lead + len(samples)) / rate)
    padded = np.full((n * rate, 3), np.nan, np.float32)
    padded[lead: lead + len(samples)] = samples
    sec = padded.reshape(n, rate, 3)
    mean = np.nanmean(sec, axis=1)
    spread = np.sqrt(np.nanmean(((sec - mean[:, None]) ** 2).sum(axis=2), axis=1))
    return spread, mean, np.nanstd(np.linalg.norm(sec, axis=2), axis=1)


@dataclass
class Held:
    """An injected motion (``samples`` at ``rate`` from ``at``), then lying still in
    ``then`` posture until ``until``."""

    at: float
    until: float
    then: Posture
    samples: np.ndarray
    rate: int

    @cached_property
    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-second spread, mean and magnitude spread (:func:`motion_stats`)."""
        return motion_stats(self.at, self.samples, self.rate)


@dataclass
class Injected:
    """One elder's injected events as intervals ``(from, until, ...)`` in seconds."""

    held: list[Held] = field(default_factory=list)
    away: list[tuple[float, float, Away]] = field(default_factory=list)
    vit: list[tuple[float, float, Vitals]] = field(default_factory=list)
    off: list[tuple[float, float]] = field(default_factory=list)
    batt: list[tuple[float, float, float, float]] = field(default_factory=list)
    silent: list[tuple[float, float, int]] = field(default_factory=list)
    buttons: list[tuple[float, str]] = field(default_factory=list)
    doors: list[tuple[float, str, str]] = field(default_factory=list)
    first: float = INF
    """The second the earliest event begins in: nothing to do before it."""

    def add(self, at: float, event: SimEvent, rate: int) -> None:
        """File ``event`` (happening at ``at``) under its interval."""
        self.first = min(self.first, math.floor(at))
        if isinstance(event, Motion):
            done = at + len(event.accel) / rate
            self.held.append(Held(at, done + event.hold_s, event.then, event.accel, rate))
        elif isinstance(event, Away):
            self.away.append((at, at + event.duration_s, event))
            for off, role in event.doors:
                self.doors += [(at + off, role.value, "opened"),
                               (at + off + 4.0, role.value, "closed")]
        elif isinstance(event, Vitals):
            self.vit.append((at, at + event.duration_s, event))
        elif isinstance(event, OffBody):
            self.off.append((at, at + event.duration_s))
        elif isinstance(event, Battery):
            self.batt.append((at, at + event.duration_s, event.level, event.drain_per_h))
        elif isinstance(event, Silence):
            self.silent.append((at, at + event.duration_s, _KIND_INDEX[event.kind]))
        else:
            self.buttons.append((at, "sos" if isinstance(event, SosPress) else "ok"))

    def _intervals(self) -> Iterator[tuple[str, Any, float, float]]:
        for name in ("away", "vit", "off", "batt", "silent"):
            for item in getattr(self, name):
                yield name, item, item[0], item[1]
        for held in self.held:
            yield "held", held, held.at, held.until
        for name in ("buttons", "doors"):
            for item in getattr(self, name):
                yield name, item, item[0], item[0] + 1.0

    def by_chunk(self, start: float, chunk_s: int, end: float) -> dict[int, Injected]:
        """The same events filed under every chunk they touch, so a chunk sees only its own."""
        out: dict[int, Injected] = {}
        for name, item, a, b in self._intervals():
            first = int((math.floor(a) - start) // chunk_s)
            last = int((math.ceil(min(b, end)) - 1 - start) // chunk_s)
            for j in range(max(first, 0), last + 1):
                getattr(out.setdefault(j, Injected()), name).append(item)
        return out

    def within(self, t: float, c: int) -> Injected:
        """The events touching seconds ``t .. t + c - 1``; those over before ``t`` are
        dropped from this one (a simulation steps forward only)."""
        now, keep = Injected(), Injected()
        if t + c <= self.first:
            return now
        for name, item, a, b in self._intervals():
            if max(b, math.floor(a) + 1.0) <= t:
                continue  # over
            getattr(keep, name).append(item)
            keep.first = min(keep.first, math.floor(a))
            if math.floor(a - t) < c:
                getattr(now, name).append(item)
                now.first = min(now.first, math.floor(a))
        self.__dict__.update(keep.__dict__)
        return now


def _span(t: float, c: int, a: float, b: float) -> slice:
    """Seconds ``t + k`` from the one holding ``a`` up to ``b`` (as injections apply)."""
    lo = int(np.clip(math.floor(a - t), 0, c))
    hi = int(np.clip(math.ceil(b - t), 0, c))
    return slice(lo, max(lo, hi))


@dataclass
class Timeline:
    """What every elder does in seconds ``t, t + 1, ..., t + c - 1``: arrays elder × second,
    and the door and button events in them (time order). The simulation renders it as
    messages, :func:`device_sim.scenarios.iter_streams` as decoded columns.

    ``src`` changes where the posture's source changes (a routine segment, an injected
    override): where a renderer draws a new tilt. ``hr_t``, ``spo2_t``, ``br_t`` are
    injected vital-sign targets, ``reset`` a battery level set, ``drain`` an injected drain
    (%/h); NaN: none. With ``stats``, ``spread``/``mean``/``mag_sd`` hold a motion's
    per-second statistics (NaN elsewhere); ``motions`` lists ``(elder, held)`` for samples.
    """

    t: float
    c: int
    act: np.ndarray
    post: np.ndarray
    out: np.ndarray
    worn: np.ndarray
    gait: np.ndarray
    src: np.ndarray
    held: np.ndarray
    away: np.ndarray
    off: np.ndarray
    silent: np.ndarray
    hr_t: np.ndarray
    spo2_t: np.ndarray
    br_t: np.ndarray
    reset: np.ndarray
    drain: np.ndarray
    spread: np.ndarray
    mean: np.ndarray
    mag_sd: np.ndarray
    motions: list[tuple[int, Held]] = field(default_factory=list)
    doors: list[tuple[int, float, str, str]] = field(default_factory=list)
    buttons: list[tuple[int, float, str]] = field(default_factory=list)

    @classmethod
    def empty(cls, t: float, n: int, c: int, stats: bool) -> Timeline:
        m = (n, c) if stats else (0, c)
        return cls(
            t, c, np.zeros((n, c), np.int64), np.zeros((n, c), np.int64),
            np.zeros((n, c), bool), np.zeros((n, c), bool), np.zeros((n, c)),
            np.zeros((n, c), np.int64), np.zeros((n, c), bool), np.zeros((n, c), bool),
            np.zeros((n, c), bool), np.zeros((n, c, 3), bool), np.full((n, c), np.nan),
            np.full((n, c), np.nan), np.full((n, c), np.nan), np.full((n, c), np.nan),
            np.full((n, c), np.nan), np.full(m, np.nan), np.full((*m, 3), np.nan),
            np.full(m, np.nan),
        )  # fmt: skip


class Routines:
    """Each elder's planned days, walked chunk by chunk; an elder whose segment spans a
    whole chunk with no door in it is filled without a walk."""

    def __init__(self, elders: list[SimElder], seed: int) -> None:
        n = len(elders)
        self.elders, self.seed = elders, seed
        self.days: list[Day | None] = [None] * n
        self._ends: list[list[float]] = [[] for _ in range(n)]  # segment ends of each day
        self._door_ts: list[list[float]] = [[] for _ in range(n)]
        self.start = np.full(n, INF)  # the current segment (INF: walk first)
        self.end = np.full(n, -INF)
        self.next_door = np.full(n, -INF)
        self.act = np.zeros(n, np.int64)
        self.post = np.zeros(n, np.int64)
        self.out = np.zeros(n, bool)
        self.worn = np.zeros(n, bool)
        self.gait = np.zeros(n)
        self.src = np.zeros(n, np.int64)

    def day(self, i: int, t: float) -> Day:
        """Elder ``i``'s plan covering ``t``."""
        day = self.days[i]
        if day is None or not day.start <= t < day.end:
            p = self.elders[i].profile
            day = self._plan(i, day_of(p, self.seed, i, t))
        return day

    def _plan(self, i: int, number: int) -> Day:
        day = self.days[i] = plan_day(self.elders[i].profile, self.seed, i, number)
        self._ends[i] = [s.end for s in day.segments]
        self._door_ts[i] = [d.ts for d in day.doors]
        return day

    def fill(self, tl: Timeline) -> None:
        """The routine into ``tl``; its doors into ``tl.doors`` (unsorted)."""
        t, c = tl.t, tl.c
        stable = (self.start <= t) & (self.end >= t + c) & (self.next_door >= t + c)
        rows = np.flatnonzero(stable)
        for name in ("act", "post", "out", "worn", "gait", "src"):
            getattr(tl, name)[rows] = getattr(self, name)[rows, None]
        for i in np.flatnonzero(~stable).tolist():
            self._walk(i, tl)

    def _walk(self, i: int, tl: Timeline) -> None:
        t, c = tl.t, tl.c
        last = t + c - 1
        day = self.day(i, t)
        while True:
            for k in range(bisect.bisect_right(self._ends[i], t), len(day.segments)):
                s = day.segments[k]
                if s.start >= t + c:
                    break
                if s.end > t:
                    sl = slice(max(0, math.ceil(s.start - t)), min(c, math.ceil(s.end - t)))
                    tl.act[i, sl], tl.post[i, sl], tl.out[i, sl] = s.activity, s.posture, s.out
                    tl.worn[i, sl], tl.gait[i, sl] = s.worn, s.gait_hz
                    tl.src[i, sl] = day.day * 4096 + k
                    if s.start <= last < s.end:
                        self.start[i], self.end[i] = s.start, s.end
                        self.act[i], self.post[i], self.out[i] = s.activity, s.posture, s.out
                        self.worn[i], self.gait[i] = s.worn, s.gait_hz
                        self.src[i] = day.day * 4096 + k
            door_ts = self._door_ts[i]
            lo, hi = bisect.bisect_left(door_ts, t), bisect.bisect_left(door_ts, t + c)
            tl.doors += [(i, d.ts, d.role.value, d.state) for d in day.doors[lo:hi]]
            if day.end >= t + c:
                break
            day = self._plan(i, day.day + 1)
        self.next_door[i] = door_ts[hi] if hi < len(door_ts) else INF


def timeline(routines: Routines, injected: Mapping[int, Injected], t: float, c: int,
             step_hz: np.ndarray, *, stats: bool = False) -> Timeline:
    """Seconds ``t .. t + c - 1`` of every elder: the routine, then each elder's injected
    events (``injected``: those touching the chunk) on top."""
    tl = Timeline.empty(t, len(routines.elders), c, stats)
    routines.fill(tl)
    for i, o in injected.items():
        for a, b, ev in o.away:
            sl = _span(t, c, a, b)
            tl.away[i, sl] = True
            tl.act[i, sl], tl.post[i, sl], tl.out[i, sl] = ev.activity, ev.posture, ev.out
            tl.gait[i, sl] = step_hz[i] if ev.activity == Activity.WALK else 0.0
            tl.src[i, sl] = -2 - 2 * round(a * 1000)
            if ev.worn is not None:
                tl.worn[i, sl] = ev.worn
        for h in o.held:
            sl = _span(t, c, h.at, h.until)
            tl.held[i, sl] = True
            tl.act[i, sl], tl.post[i, sl], tl.out[i, sl] = Activity.LIE_FLOOR, h.then, False
            tl.src[i, sl] = -1 - 2 * round(h.at * 1000)
            tl.motions.append((i, h))
            if stats:
                sp, mu, ms = h.stats
                ks = np.arange(len(sp)) + math.floor(h.at - t)
                ok = (ks >= 0) & (ks < c)
                tl.spread[i, ks[ok]] = sp[ok]
                tl.mag_sd[i, ks[ok]] = ms[ok]
                tl.mean[i, ks[ok]] = mu[ok]
        for a, b in o.off:
            tl.off[i, _span(t, c, a, b)] = True
        for a, b, kind in o.silent:
            tl.silent[i, _span(t, c, a, b), kind] = True
        for a, b, vit in o.vit:
            sl = _span(t, c, a, b)
            tl.hr_t[i, sl] = np.nan if vit.hr is None else vit.hr
            tl.spo2_t[i, sl] = np.nan if vit.spo2 is None else vit.spo2
            tl.br_t[i, sl] = np.nan if vit.br is None else vit.br
        for a, b, level, per_h in o.batt:
            if 0 <= math.floor(a - t) < c:
                tl.reset[i, math.floor(a - t)] = level
            tl.drain[i, _span(t, c, a, b)] = per_h
    # routine doors stay shut while on the floor or away; a dead hub sends nothing
    doors = []
    for i, ts, role, state in tl.doors:
        k = math.floor(ts - t)
        if not (tl.held[i, k] or tl.away[i, k] or tl.silent[i, k, 2]):
            doors.append((i, ts, role, state))
    for i, o in injected.items():
        for ts, role, state in o.doors:
            if t <= ts < t + c and not tl.silent[i, math.floor(ts - t), 2]:
                doors.append((i, ts, role, state))
        for ts, stream in o.buttons:
            if t <= ts < t + c and not tl.silent[i, math.floor(ts - t), 0]:
                tl.buttons.append((i, ts, stream))
    tl.doors = sorted(doors, key=lambda d: (d[1], d[0]))
    tl.buttons.sort(key=lambda b: (b[1], b[0]))
    return tl


class Body:
    """Heart rate and battery of every elder: first-order dynamics stepped over a chunk."""

    def __init__(self, hr: np.ndarray, battery: np.ndarray, rest_hr: np.ndarray,
                 night_charge: np.ndarray) -> None:
        self.hr, self.battery = hr, battery
        self.rest_hr, self.night_charge = rest_hr, night_charge

    def advance(self, rng: np.random.Generator, tl: Timeline) -> tuple[np.ndarray, np.ndarray]:
        """Heart rate (bpm) and battery (%) of every elder at each second of ``tl``."""
        n, c = tl.act.shape
        target = self.rest_hr[:, None] + signals.HR_OFFSET[tl.act] + 4.0 * tl.out
        alpha = np.full((n, c), signals.HR_ALPHA)
        episode = ~np.isnan(tl.hr_t)  # an injected episode: an 8 s time constant
        target[episode], alpha[episode] = tl.hr_t[episode], 1.0 - math.exp(-1.0 / 8.0)
        noise = rng.normal(0.0, 0.4, (n, c))
        # 24/7 wearers drain slowly and dock fast during the morning wash, so a month-long
        # run has no low battery or dead wearable unless one is injected.
        rate_h = np.where(self.night_charge, 2.5, 0.7)[:, None]
        charge = np.where(self.night_charge, 30.0, 150.0)[:, None]
        delta = np.where(tl.worn, -rate_h, charge) / 3600.0
        floor = np.zeros((n, c))
        draining = ~np.isnan(tl.drain)
        delta[draining], floor[draining] = -tl.drain[draining] / 3600.0, 1.0
        hr_out = np.empty((c, n))  # time-major: each step reads contiguous rows
        batt_out = np.empty((c, n))
        target, alpha, noise, delta, floor = (x.T.copy() for x in (target, alpha, noise,
                                                                    delta, floor))
        reset_at = set(np.nonzero(~np.isnan(tl.reset))[1].tolist())
        hr, battery = self.hr, self.battery
        for k in range(c):
            hr += (target[k] - hr) * alpha[k] + noise[k]
            hr_out[k] = hr
            if k in reset_at:
                battery = np.where(np.isnan(tl.reset[:, k]), battery, tl.reset[:, k])
            battery += delta[k]
            np.minimum(battery, 100.0, out=battery)
            np.maximum(battery, floor[k], out=battery)
            batt_out[k] = battery
        self.battery = battery
        return hr_out.T, batt_out.T


def _devices(site: str, index: int, profile: Profile) -> tuple[str, SimDevice, SimDevice,
                                                                 SimDevice]:
    num = f"{index + 1:04d}"
    elder = f"e{num}"
    wearable = SimDevice(DeviceKind.WEARABLE, f"w{num}", elder, site, "CarePendant 2",
                         "Acme Care", "2.4.1", profile.placement)
    bed = SimDevice(DeviceKind.BED, f"b{num}", elder, site, "SleepPad S", "Nordic Rest",
                    "1.9.0", "bed")
    door = SimDevice(DeviceKind.DOOR, f"d{num}", elder, site, "DoorHub 4", "Acme Care",
                     "3.0.2", "door")
    return elder, wearable, bed, door


def _ambient_devices(site: str, index: int, elder: str) -> tuple[SimDevice, ...]:
    num = f"{index + 1:04d}"
    pirs = tuple(SimDevice(DeviceKind.MOTION, ambient.ambient_device("motion", room, num), elder,
                           site, "Motion P1", "Acme Care", "1.2.0", "wall", room)
                 for room in ambient.AMBIENT_ROOMS)
    mats = tuple(SimDevice(DeviceKind.MAT, ambient.ambient_device("mat", place, num), elder, site,
                           "PressureMat 2", "Nordic Rest", "1.0.4", place,  # type: ignore[arg-type]
                           "bedroom" if place == "bed" else "living_room")
                 for place in ambient.AMBIENT_MATS)
    return pirs + mats


class Simulation:
    """Every elder of a simulated site, stepped through simulated time.

    Call :meth:`step` with consecutive windows (``step(t)``, ``step(t + 1)``, ...);
    a jump forward re-seeks every routine (state such as heart rate carries over).
    The same config and the same calls give the same bytes. What each elder does comes
    from :func:`timeline` (the routine, then the injected events), the same as the fast
    path's (:func:`device_sim.scenarios.iter_streams`); this class renders it as the
    devices' messages, with accelerometer samples.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        n = config.elders
        self._rng = np.random.default_rng([config.seed, 0x51])
        self.elders: list[SimElder] = []
        for i in range(n):
            profile = make_profile(config.seed, i, config.utc_offset_s)
            elder, wearable, bed, door = _devices(config.site, i, profile)
            fit = _ambient_devices(config.site, i, elder) if ambient.fitted(i, config.ambient) \
                else ()
            self.elders.append(SimElder(i, elder, profile, wearable, bed, door, fit))
        profiles = [e.profile for e in self.elders]
        self._spo2 = np.array([p.spo2 for p in profiles])
        self._br = np.array([p.br for p in profiles])
        self._step_hz = np.array([p.step_hz for p in profiles])
        rest_hr = np.array([p.rest_hr for p in profiles])
        night_charge = np.array([not p.wears_at_night for p in profiles])
        self._phase = self._rng.uniform(0, 2 * signals.TWO_PI, n)
        battery = self._rng.uniform(60.0, 100.0, n)
        self._door_battery = self._rng.uniform(40.0, 100.0, n)
        self._rssi_base = self._rng.integers(-80, -50, (n, 3))
        self._body = Body(rest_hr.copy(), battery, rest_hr, night_charge)
        self._routines = Routines(self.elders, config.seed)
        # Periodic reports: phase offsets drawn once per device.
        self._bed_offset = self._rng.integers(0, config.bed_period_s, n)
        self._status_offset = self._rng.integers(0, config.status_period_s, (n, 3))
        self._next_bed = np.zeros(n, dtype=np.int64)
        self._next_status = np.zeros((n, 3), dtype=np.int64)
        self._injected: dict[int, Injected] = {}
        self._seq = np.zeros((n, 3), dtype=np.int64)
        # rendering state: the tilted gravity of each elder's current posture source
        self._src = np.full(n, np.iinfo(np.int64).min)
        self._grav = np.zeros((n, 3))
        self._was_off = np.zeros(n, bool)
        self._off_grav = np.zeros((n, 3))
        self._frame_head = [
            f'{{"elder":"{e.elder}","device":"{e.wearable.device}","ts":'.encode()
            for e in self.elders
        ]
        self._frame_topics = [e.wearable.topic(Stream.FRAME) for e in self.elders]
        self._bed_topics = [e.bed.topic(Stream.READING) for e in self.elders]
        self._door_topics = [e.door.topic(Stream.EVENT) for e in self.elders]
        self._status_topics = [[d.topic(Stream.STATUS) for d in e.devices] for e in self.elders]
        self._clock = float(config.start)
        # fitted homes: their own draws (the other devices' bytes stay as without them)
        amb_rng = np.random.default_rng([config.seed, 0xA3])
        self._fitted = [e.index for e in self.elders if e.ambient]
        self._amb_devices = {(e.index, d.room if d.kind == DeviceKind.MOTION else d.placement): d
                             for e in self.elders for d in e.ambient}
        self._amb_list = [(e.index, d) for e in self.elders for d in e.ambient]
        self._amb_status_offset = amb_rng.integers(0, config.status_period_s, len(self._amb_list))
        self._amb_battery = amb_rng.uniform(40.0, 100.0, len(self._amb_list))
        self._amb_next_status = np.zeros(len(self._amb_list), dtype=np.int64)
        self._amb_seq: dict[str, int] = {}
        self._feeds: dict[int, ambient.AmbientFeed] = {}
        self._sensed_queue: dict[int, list[ambient.Event]] = {}
        self._amb_state: dict[tuple[int, str], float] = {}
        self._next_amb = np.full(len(self.elders), INF)
        self._seek_reports()

    def _seek_reports(self) -> None:
        """The next bed reading and status report of every device, from the clock on."""
        base = math.ceil(self._clock)
        self._next_bed = base + (self._bed_offset - base) % self.config.bed_period_s
        self._next_status = base + (self._status_offset - base) % self.config.status_period_s
        period = self.config.status_period_s
        self._amb_next_status = base + (self._amb_status_offset - base) % period
        for i in self._fitted:
            p, seed = self.elders[i].profile, self.config.seed

            def plan(number: int, p: Profile = p, seed: int = seed, i: int = i) -> Day:
                return plan_day(p, seed, i, number)

            feed = ambient.AmbientFeed(plan, day_of(p, seed, i, self._clock), self._clock)
            self._feeds[i] = feed
            self._next_amb[i] = self._next_ambient(i)

    # -- state --------------------------------------------------------------------

    @property
    def clock(self) -> float:
        """The next simulated second :meth:`step` will generate."""
        return self._clock

    def next_bed_reading(self, elder: int, after: float) -> float:
        """When elder ``elder``'s bed sensor next reads at or after ``after``."""
        period = self.config.bed_period_s
        base = math.ceil(after)
        return float(base + (int(self._bed_offset[elder]) - base) % period)

    def next_status(self, elder: int, kind: DeviceKind, after: float) -> float:
        """When elder ``elder``'s ``kind`` device next reports its status at or after ``after``."""
        period = self.config.status_period_s
        base = math.ceil(after)
        return float(base + (int(self._status_offset[elder, _KIND_INDEX[kind]]) - base) % period)

    def initial_state(self) -> dict[str, np.ndarray]:
        """Copies of the per-elder draws a fast re-creation of this run needs.

        ``bed_offset`` (n,) and ``status_offset`` (n, 3): report phases, seconds;
        ``battery`` and ``door_battery`` (n,): percent now; ``hr`` (n,): bpm now.
        """
        return {"bed_offset": self._bed_offset.copy(), "status_offset": self._status_offset.copy(),
                "battery": self._body.battery.copy(), "door_battery": self._door_battery.copy(),
                "hr": self._body.hr.copy()}

    def day(self, elder: int) -> Day:
        """The routine elder ``elder`` is following now (for tests and scenarios)."""
        return self._routines.day(elder, self._clock)

    # -- injection ----------------------------------------------------------------

    def inject(self, elder: int, at_ts: float, event: SimEvent) -> None:
        """Schedule ``event`` for elder index ``elder`` at simulated time ``at_ts``."""
        if not 0 <= elder < len(self.elders):
            raise IndexError(f"no elder index {elder} (have {len(self.elders)})")
        if isinstance(event, Motion) and (event.accel.ndim != 2 or event.accel.shape[1] != 3):
            raise ValueError(f"motion accel must be m×3, got {event.accel.shape}")
        duration = getattr(event, "duration_s", 0.0)
        if not duration >= 0:
            raise ValueError(f"duration_s must be >= 0, got {duration}")
        self._injected.setdefault(elder, Injected()).add(at_ts, event, self.config.rate)

    def sense(self, elder: int, event: ambient.Event) -> None:
        """Make one of a fitted home's motion sensors or mats report ``event`` (``(ts, sensor,
        kind, place, value)`` as :func:`device_sim.ambient.ambient_events` gives them), on
        top of the routine: the certification kit walks past its reference sensor so."""
        if elder not in self._feeds:
            raise ValueError(f"elder index {elder}'s home has no ambient sensors")
        if (elder, event[3]) not in self._amb_devices:
            raise ValueError(f"no {event[2]} sensor at {event[3]!r} in elder {elder}'s home")
        queue = self._sensed_queue.setdefault(elder, [])
        bisect.insort(queue, event, key=lambda e: e[0])
        self._next_amb[elder] = self._next_ambient(elder)

    def _next_ambient(self, i: int) -> float:
        queue = self._sensed_queue.get(i)
        return min(self._feeds[i].next_ts, queue[0][0] if queue else INF)

    # -- generation ---------------------------------------------------------------

    def step(self, t: float, dt: float = 1.0) -> list[tuple[Topic, bytes]]:
        """Every message of every device stamped within ``[t, t + dt)``, in time order.

        Frames are generated per whole second of the grid that starts at
        ``config.start``; ``t`` must not go back before :attr:`clock`.
        """
        if t < self._clock - 1e-6:
            raise ValueError(f"step({t}) goes back before the simulation clock {self._clock}")
        if t > self._clock + 1e-6:
            self._clock = self.config.start + math.ceil(t - self.config.start - 1e-6)
            self._routines.start[:] = INF  # re-seek every routine
            self._seek_reports()
        c = math.ceil(t + dt - 1e-6 - self._clock)
        out: list[tuple[Topic, bytes]] = []
        if c <= 0:
            return out
        t0 = self._clock
        now = {i: o.within(t0, c) for i, o in self._injected.items() if o.first < t0 + c}
        tl = timeline(self._routines, {i: o for i, o in now.items() if o.first < INF}, t0, c,
                      self._step_hz)
        hr, battery = self._body.advance(self._rng, tl)
        buttons = iter(tl.buttons)
        doors = iter(tl.doors)
        sensed = iter(self._ambient_due(tl))
        button, door, seen = next(buttons, None), next(doors, None), next(sensed, None)
        for k in range(c):
            end = tl.t + k + 1.0
            while seen is not None and seen[1][0] < end:
                self._sensed(*seen, out)
                seen = next(sensed, None)
            while button is not None and button[1] < end:
                self._button(*button, out)
                button = next(buttons, None)
            while door is not None and door[1] < end:
                self._door(*door, out)
                door = next(doors, None)
            self._frames(tl, k, hr[:, k], battery[:, k], out)
            self._bed(tl, k, hr[:, k], out)
            self._status(tl, k, battery[:, k], out)
            if self._amb_list:
                self._ambient_status(tl, k, out)
        self._clock += c
        return out

    def _button(self, i: int, ts: float, stream: str, out: list[tuple[Topic, bytes]]) -> None:
        elder = self.elders[i]
        seq = int(self._seq[i, 0])
        self._seq[i, 0] += 1
        payload = {"elder": elder.elder, "device": elder.wearable.device,
                   "ts": round(ts, 3), "seq": seq}
        out.append((elder.wearable.topic(Stream(stream)), encode.dumps(payload)))

    def _door(self, i: int, ts: float, role: str, state: str,
              out: list[tuple[Topic, bytes]]) -> None:
        elder = self.elders[i]
        seq = int(self._seq[i, 2])
        self._seq[i, 2] += 1
        payload = {"elder": elder.elder, "device": elder.door.device, "ts": round(ts, 3),
                   "door": role, "role": role, "state": state, "seq": seq}
        out.append((self._door_topics[i], encode.dumps(payload)))

    def _ambient_due(self, tl: Timeline) -> list[tuple[int, ambient.Event]]:
        """The fitted homes' motion and mat events in the chunk, in time order. While the
        elder lies on the floor or is away (injected), the routine's sensors do not turn on
        (they still clear), as the routine's doors stay shut."""
        end = tl.t + tl.c
        due: list[tuple[int, ambient.Event]] = []
        for i in np.flatnonzero(self._next_amb < end).tolist():
            mine: list[ambient.Event] = []
            for e in self._feeds[i].until(end):
                k = min(max(math.floor(e[0] - tl.t), 0), tl.c - 1)
                if not (e[4] > 0.5 and (tl.held[i, k] or tl.away[i, k])):
                    mine.append(e)
            queue = self._sensed_queue.get(i, [])
            while queue and queue[0][0] < end:
                mine.append(queue.pop(0))
            mine.sort(key=lambda e: e[0])
            for e in mine:  # a sensor reports a change of state, never the same state again
                if self._amb_state.get((i, e[1])) != e[4]:
                    self._amb_state[i, e[1]] = e[4]
                    due.append((i, e))
            self._next_amb[i] = self._next_ambient(i)
        due.sort(key=lambda d: (d[1][0], d[0]))
        return due

    def _sensed(self, i: int, event: ambient.Event, out: list[tuple[Topic, bytes]]) -> None:
        device = self._amb_devices[i, event[3]]
        seq = self._amb_seq.get(device.device, 0)
        self._amb_seq[device.device] = seq + 1
        payload = ambient.ambient_payload(device.elder, device.device, event, seq)
        out.append((device.topic(Stream(ambient.STREAM_OF[event[2]])), encode.dumps(payload)))

    def _ambient_status(self, tl: Timeline, k: int, out: list[tuple[Topic, bytes]]) -> None:
        cfg = self.config
        end = tl.t + k + 1.0
        due = np.flatnonzero(self._amb_next_status < end)
        if not len(due):
            return
        at = self._amb_next_status.copy()
        self._amb_next_status[due] += cfg.status_period_s
        for j in due.tolist():
            i, device = self._amb_list[j]
            ts = float(at[j])
            drained = 0.2 * (ts - cfg.start) / 86400.0
            level = round(max(float(self._amb_battery[j]) - drained, 1.0), 1)
            rssi = int(self._rssi_base[i, 2]) + (j % 7) - 3
            payload = {"elder": device.elder, "device": device.device, "ts": ts,
                       "battery": level, "firmware": device.firmware, "rssi": rssi,
                       "model": device.model, "vendor": device.vendor,
                       "placement": device.placement, "room": device.room,
                       "interval_s": cfg.status_period_s}
            out.append((device.topic(Stream.STATUS), encode.dumps(payload)))

    def _frames(self, tl: Timeline, k: int, hr_k: np.ndarray, battery: np.ndarray,
                out: list[tuple[Topic, bytes]]) -> None:
        cfg = self.config
        s = tl.t + k
        changed = np.flatnonzero(tl.src[:, k] != self._src)
        if len(changed):  # a new posture: a new small tilt of the wearable
            self._grav[changed] = signals.tilted(tl.post[changed, k], self._rng)
            self._src[changed] = tl.src[changed, k]
        off = tl.off[:, k]  # lying on a table: sends, but nothing of a body
        started = np.flatnonzero(off & ~self._was_off)
        if len(started):
            supine = np.full(len(started), Posture.SUPINE)
            self._off_grav[started] = signals.tilted(supine, self._rng, spread=0.3)
        self._was_off = off
        sending = np.flatnonzero((tl.worn[:, k] | tl.held[:, k] | off) & (battery > 0.0)
                                 & ~tl.silent[:, k, 0])
        act = tl.act[sending, k]
        accel, phase, steps = signals.accel_second(
            self._rng, cfg.rate, self._grav[sending], act, tl.gait[sending, k],
            self._phase[sending],
        )
        self._phase[sending] = phase
        if tl.motions:
            self._apply_motions(s, tl.motions, sending, accel)
        spo2 = signals.spo2(self._rng, self._spo2[sending], act)
        hr = np.clip(np.rint(hr_k[sending]), 20, 250).astype(np.int64)
        target = tl.spo2_t[sending, k]
        vit = np.flatnonzero(~np.isnan(target))
        if vit.size:
            low = target[vit] + self._rng.integers(-1, 2, vit.size)
            spo2[vit] = np.clip(low, 50, 100).astype(spo2.dtype)
        off_rows = off[sending]
        if off_rows.any():
            still = self._off_grav[sending[off_rows]][:, None, :]
            accel[off_rows] = still + self._rng.normal(0.0, 0.0015, (off_rows.sum(), cfg.rate, 3))
        bodies = encode.accel_json(accel)
        ts = repr(float(s)).encode()
        head = self._frame_head
        topics = self._frame_topics
        tail_fmt = b',"rate":%d,"accel":%s,"hr":%d,"spo2":%d,"steps":%d,"battery":%.1f}'
        rate = cfg.rate
        for j, (i, body, h, o, st, b) in enumerate(zip(
            sending.tolist(), bodies, hr.tolist(), spo2.tolist(), steps.tolist(),
            battery[sending].tolist(), strict=True,
        )):
            if off_rows[j]:  # no skin contact: no heart rate, no SpO2, no steps
                out.append((topics[i], head[i] + ts + b',"rate":%d,"accel":%s,"steps":0,'
                            b'"battery":%.1f}' % (rate, body, b)))
                continue
            out.append((topics[i], head[i] + ts + tail_fmt % (rate, body, h, o, st, b)))

    def _apply_motions(self, s: float, motions: list[tuple[int, Held]], sending: np.ndarray,
                       accel: np.ndarray) -> None:
        rate = self.config.rate
        row = {i: r for r, i in enumerate(sending.tolist())}
        for i, held in motions:
            first = round((s - held.at) * rate)  # motion sample at this frame's sample 0
            lo = max(0, -first)
            hi = min(rate, len(held.samples) - first)
            if i in row and lo < hi:
                accel[row[i], lo:hi] = held.samples[first + lo : first + hi]

    def _bed(self, tl: Timeline, k: int, hr_k: np.ndarray,
             out: list[tuple[Topic, bytes]]) -> None:
        end = tl.t + k + 1.0
        if not (self._next_bed < end).any():
            return
        reads = np.flatnonzero(self._next_bed < end)
        at = self._next_bed.copy()
        self._next_bed[reads] += self.config.bed_period_s
        due = reads[~tl.silent[reads, k, 1]]
        a = tl.act[due, k]
        present = np.isin(a, list(IN_BED)) & ~tl.out[due, k] & ~tl.held[due, k]
        br = tl.br_t[due, k]
        base_br = np.where(np.isnan(br), self._br[due], br)
        hr, br, movement = signals.bed_vitals(self._rng, hr_k[due], base_br, a)
        for j, i in enumerate(due.tolist()):
            elder = self.elders[i]
            payload: dict[str, object] = {"elder": elder.elder, "device": elder.bed.device,
                                          "ts": float(at[i]), "presence": bool(present[j])}
            if present[j]:
                payload.update(hr=int(hr[j]), br=float(br[j]), movement=float(movement[j]))
            else:
                payload.update(hr=None, br=None, movement=0.0)
            out.append((self._bed_topics[i], encode.dumps(payload)))

    def _status(self, tl: Timeline, k: int, battery: np.ndarray,
                out: list[tuple[Topic, bytes]]) -> None:
        cfg = self.config
        end = tl.t + k + 1.0
        if not (self._next_status < end).any():
            return
        due_i, due_k = np.nonzero(self._next_status < end)
        at = self._next_status.copy()
        self._next_status[due_i, due_k] += cfg.status_period_s
        rssi = self._rssi_base[due_i, due_k] + self._rng.integers(-3, 4, len(due_i))
        for i, kind, r in zip(due_i.tolist(), due_k.tolist(), rssi.tolist(), strict=True):
            elder = self.elders[i]
            device = elder.devices[kind]
            ts = float(at[i, kind])
            if (kind == 0 and battery[i] <= 0.0) or tl.silent[i, k, kind]:
                continue  # a flat or dead device says nothing
            if kind == 0:
                level = round(float(battery[i]), 1)
                if tl.out[i, k]:
                    r = min(r, -85)  # far from the home's access point: on the cellular link
            elif kind == 1:
                level = 100.0  # mains powered
            else:
                drained = 0.5 * (ts - cfg.start) / 86400.0
                level = round(max(float(self._door_battery[i]) - drained, 1.0), 1)
            payload = {"elder": elder.elder, "device": device.device, "ts": ts,
                       "battery": level, "firmware": device.firmware, "rssi": int(r),
                       "model": device.model, "vendor": device.vendor,
                       "placement": device.placement,
                       "interval_s": cfg.status_period_s}
            out.append((self._status_topics[i][kind], encode.dumps(payload)))

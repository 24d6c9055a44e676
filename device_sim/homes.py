"""Simulated homes: elders living their routines, and the messages their devices send.

Each elder has three devices: a wearable (``w0001``: a frame every second, SOS/OK
buttons), a bed sensor (``b0001``: a reading every ``bed_period_s``) and a door hub
(``d0001``: front, bathroom, bedroom and fridge contacts). Every device reports its
status every ``status_period_s``. All elders advance together: per second, the
state of everyone is a handful of numpy arrays and frames are generated and
JSON-encoded for all of them at once; only the few elders whose activity changes
or who have a door event that second are touched one by one.

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
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from device_sim import encode, signals
from device_sim.routine import (
    IN_BED,
    Activity,
    Day,
    DoorAction,
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

    def __post_init__(self) -> None:
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
    placement: Literal["pendant", "belt", "bed", "door"]

    def topic(self, stream: Stream) -> Topic:
        return Topic(self.site, self.elder, self.kind, self.device, stream)

    @property
    def availability(self) -> Topic:
        return self.topic(Stream.AVAILABILITY)


@dataclass(frozen=True, slots=True)
class SimElder:
    """A simulated elder (pseudonymous id ``e0001``) and their three devices."""

    index: int
    elder: str
    profile: Profile
    wearable: SimDevice
    bed: SimDevice
    door: SimDevice

    @property
    def devices(self) -> tuple[SimDevice, SimDevice, SimDevice]:
        return (self.wearable, self.bed, self.door)


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


class Simulation:
    """Every elder of a simulated site, stepped through simulated time.

    Call :meth:`step` with consecutive windows (``step(t)``, ``step(t + 1)``, ...);
    a jump forward re-seeks every routine (state such as heart rate carries over).
    The same config and the same calls give the same bytes.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        n = config.elders
        self._rng = np.random.default_rng([config.seed, 0x51])
        self.elders: list[SimElder] = []
        for i in range(n):
            profile = make_profile(config.seed, i, config.utc_offset_s)
            elder, wearable, bed, door = _devices(config.site, i, profile)
            self.elders.append(SimElder(i, elder, profile, wearable, bed, door))
        profiles = [e.profile for e in self.elders]
        self._rest_hr = np.array([p.rest_hr for p in profiles])
        self._spo2 = np.array([p.spo2 for p in profiles])
        self._br = np.array([p.br for p in profiles])
        self._night_charge = np.array([not p.wears_at_night for p in profiles])
        self._hr = self._rest_hr.copy()
        self._phase = self._rng.uniform(0, 2 * signals.TWO_PI, n)
        self._battery = self._rng.uniform(60.0, 100.0, n)
        self._door_battery = self._rng.uniform(40.0, 100.0, n)
        self._rssi_base = self._rng.integers(-80, -50, (n, 3))
        # Current segment of each elder, as arrays.
        self._seg_end = np.zeros(n)
        self._act = np.zeros(n, dtype=np.int64)
        self._posture = np.zeros(n, dtype=np.int64)
        self._grav = np.zeros((n, 3))
        self._out = np.zeros(n, dtype=bool)
        self._worn = np.zeros(n, dtype=bool)
        self._gait_hz = np.zeros(n)
        self._days: list[Day] = []
        self._seg_idx: list[int] = []
        self._door_idx: list[int] = []
        self._next_door = np.full(n, INF)
        # Periodic reports: phase offsets drawn once per device.
        self._bed_offset = self._rng.integers(0, config.bed_period_s, n)
        self._status_offset = self._rng.integers(0, config.status_period_s, (n, 3))
        self._next_bed = np.zeros(n)
        self._next_status = np.zeros((n, 3))
        # Injected events and motions.
        self._pending: list[list[tuple[float, int, SimEvent]]] = [[] for _ in range(n)]
        self._next_inject = np.full(n, INF)
        self._inject_count = 0
        self._motion: dict[int, tuple[float, np.ndarray]] = {}
        self._hold_until = np.full(n, -INF)
        self._hold_grav = np.zeros((n, 3))
        self._seq = np.zeros((n, 3), dtype=np.int64)
        # Injected overrides of the routine, each active until its time (-inf: none).
        self._away_until = np.full(n, -INF)
        self._away_act = np.zeros(n, dtype=np.int64)
        self._away_grav = np.zeros((n, 3))
        self._away_out = np.zeros(n, dtype=bool)
        self._away_worn = np.full(n, -1, dtype=np.int64)  # -1: as the routine says
        self._away_gait = np.zeros(n)
        self._extra_doors: list[list[DoorAction]] = [[] for _ in range(n)]
        self._next_extra_door = np.full(n, INF)
        self._vit_until = np.full(n, -INF)
        self._vit = np.full((n, 3), np.nan)  # hr, spo2, br targets
        self._off_until = np.full(n, -INF)
        self._off_grav = np.zeros((n, 3))
        self._batt_until = np.full(n, -INF)
        self._batt_drain = np.zeros(n)
        self._silent_until = np.full((n, 3), -INF)
        self._out_now = self._out
        self._worn_now = self._worn
        self._frame_head = [
            f'{{"elder":"{e.elder}","device":"{e.wearable.device}","ts":'.encode()
            for e in self.elders
        ]
        self._frame_topics = [e.wearable.topic(Stream.FRAME) for e in self.elders]
        self._bed_topics = [e.bed.topic(Stream.READING) for e in self.elders]
        self._door_topics = [e.door.topic(Stream.EVENT) for e in self.elders]
        self._status_topics = [[d.topic(Stream.STATUS) for d in e.devices] for e in self.elders]
        self._clock = float(config.start)
        self._seek(self._clock)

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
                "battery": self._battery.copy(), "door_battery": self._door_battery.copy(),
                "hr": self._hr.copy()}

    def day(self, elder: int) -> Day:
        """The routine elder ``elder`` is following now (for tests and scenarios)."""
        return self._days[elder]

    def _seek(self, t: float) -> None:
        cfg = self.config
        self._days, self._seg_idx, self._door_idx = [], [], []
        for e in self.elders:
            day = plan_day(e.profile, cfg.seed, e.index, day_of(e.profile, cfg.seed, e.index, t))
            k = bisect.bisect_right([s.start for s in day.segments], t) - 1
            d = bisect.bisect_left([a.ts for a in day.doors], t)
            self._days.append(day)
            self._seg_idx.append(k)
            self._door_idx.append(d)
            self._next_door[e.index] = day.doors[d].ts if d < len(day.doors) else INF
            self._enter(e.index, k)
        base = math.ceil(t)
        self._next_bed = base + (self._bed_offset - base) % cfg.bed_period_s
        self._next_status = base + (self._status_offset - base) % cfg.status_period_s

    def _enter(self, i: int, k: int) -> None:
        seg = self._days[i].segments[k]
        self._seg_idx[i] = k
        self._seg_end[i] = seg.end
        self._act[i] = seg.activity
        self._posture[i] = seg.posture
        self._grav[i] = signals.tilted(np.array([seg.posture]), self._rng)[0]
        self._out[i] = seg.out
        self._worn[i] = seg.worn
        self._gait_hz[i] = seg.gait_hz

    def _advance(self, i: int, s: float) -> None:
        cfg = self.config
        k = self._seg_idx[i] + 1
        day = self._days[i]
        while True:
            if k >= len(day.segments):
                day = plan_day(self.elders[i].profile, cfg.seed, i, day.day + 1)
                self._days[i] = day
                self._door_idx[i] = 0
                self._next_door[i] = day.doors[0].ts if day.doors else INF
                k = 0
            if day.segments[k].end > s:
                break
            k += 1
        self._enter(i, k)

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
        self._inject_count += 1
        queue = self._pending[elder]
        bisect.insort(queue, (at_ts, self._inject_count, event), key=lambda x: x[:2])
        self._next_inject[elder] = queue[0][0]

    # -- generation ---------------------------------------------------------------

    def step(self, t: float, dt: float = 1.0) -> list[tuple[Topic, bytes]]:
        """Every message of every device stamped within ``[t, t + dt)``, in time order.

        Frames are generated per whole second of the grid that starts at
        ``config.start``; ``t`` must not go back before :attr:`clock`.
        """
        if t < self._clock - 1e-6:
            raise ValueError(f"step({t}) goes back before the simulation clock {self._clock}")
        if t > self._clock + 1e-6:
            grid = self.config.start + math.ceil(t - self.config.start - 1e-6)
            self._clock = grid
            self._seek(grid)
        out: list[tuple[Topic, bytes]] = []
        while self._clock < t + dt - 1e-6:
            self._second(self._clock, out)
            self._clock += 1.0
        return out

    def _second(self, s: float, out: list[tuple[Topic, bytes]]) -> None:
        end = s + 1.0
        for i in np.flatnonzero(self._seg_end <= s).tolist():
            self._advance(i, s)
        for i in np.flatnonzero(self._next_inject < end).tolist():
            self._fire_injections(i, end, out)
        held = self._hold_until > s
        away = self._away_until > s
        for i in np.flatnonzero(self._next_door < end).tolist():
            self._doors(i, end, bool(held[i] or away[i]), out)
        for i in np.flatnonzero(self._next_extra_door < end).tolist():
            self._injected_doors(i, end, out)
        act = self._act.copy()
        grav = self._grav
        self._out_now, self._worn_now = self._out, self._worn
        if away.any():
            grav = grav.copy()
            act[away] = self._away_act[away]
            grav[away] = self._away_grav[away]
            self._out_now = np.where(away, self._away_out, self._out)
            keep = self._away_worn < 0
            self._worn_now = np.where(away & ~keep, self._away_worn == 1, self._worn)
        if held.any():
            act[held] = Activity.LIE_FLOOR
            grav = grav.copy()
            grav[held] = self._hold_grav[held]
        self._vitals(act, s)
        self._frames(s, act, grav, held, out, away)
        if (self._next_bed < end).any():
            self._bed(end, act, held, out)
        if (self._next_status < end).any():
            self._status(end, out)

    def _fire_injections(self, i: int, end: float, out: list[tuple[Topic, bytes]]) -> None:
        elder = self.elders[i]
        queue = self._pending[i]
        while queue and queue[0][0] < end:
            ts, _, event = queue.pop(0)
            if isinstance(event, Motion):
                self._motion[i] = (ts, event.accel)
                done = ts + len(event.accel) / self.config.rate
                # Held from the first sample: frames flow even if the routine had it off.
                self._hold_until[i] = done + event.hold_s
                self._hold_grav[i] = signals.tilted(np.array([event.then]), self._rng)[0]
                continue
            if not isinstance(event, SosPress | OkPress):
                self._override(i, ts, event)
                continue
            if self._silent_until[i, 0] > ts:
                continue
            stream = Stream.SOS if isinstance(event, SosPress) else Stream.OK
            seq = int(self._seq[i, 0])
            self._seq[i, 0] += 1
            payload = {"elder": elder.elder, "device": elder.wearable.device,
                       "ts": round(ts, 3), "seq": seq}
            out.append((elder.wearable.topic(stream), encode.dumps(payload)))
        self._next_inject[i] = queue[0][0] if queue else INF

    def _override(self, i: int, ts: float, event: SimEvent) -> None:
        """Start an injected override of elder ``i``'s routine or devices at ``ts``."""
        if isinstance(event, Away):
            self._away_until[i] = ts + event.duration_s
            self._away_act[i] = event.activity
            self._away_grav[i] = signals.tilted(np.array([event.posture]), self._rng)[0]
            self._away_out[i] = event.out
            self._away_worn[i] = -1 if event.worn is None else int(event.worn)
            self._away_gait[i] = self.elders[i].profile.step_hz
            for offset, role in event.doors:
                opened = ts + offset
                self._extra_doors[i] += [DoorAction(opened, role, "opened"),
                                         DoorAction(opened + 4.0, role, "closed")]
            self._extra_doors[i].sort(key=lambda d: d.ts)
            if self._extra_doors[i]:
                self._next_extra_door[i] = self._extra_doors[i][0].ts
        elif isinstance(event, Vitals):
            self._vit_until[i] = ts + event.duration_s
            self._vit[i] = [np.nan if v is None else float(v)
                            for v in (event.hr, event.spo2, event.br)]
        elif isinstance(event, OffBody):
            self._off_until[i] = ts + event.duration_s
            g = signals.tilted(np.array([Posture.SUPINE]), self._rng, spread=0.3)[0]
            self._off_grav[i] = g
        elif isinstance(event, Battery):
            self._battery[i] = event.level
            self._batt_until[i] = ts + event.duration_s
            self._batt_drain[i] = event.drain_per_h
        elif isinstance(event, Silence):
            self._silent_until[i, _KIND_INDEX[event.kind]] = ts + event.duration_s

    def _injected_doors(self, i: int, end: float, out: list[tuple[Topic, bytes]]) -> None:
        elder = self.elders[i]
        queue = self._extra_doors[i]
        while queue and queue[0].ts < end:
            action = queue.pop(0)
            if self._silent_until[i, 2] > action.ts:
                continue
            seq = int(self._seq[i, 2])
            self._seq[i, 2] += 1
            payload = {"elder": elder.elder, "device": elder.door.device,
                       "ts": round(action.ts, 3), "door": action.role.value,
                       "role": action.role.value, "state": action.state, "seq": seq}
            out.append((self._door_topics[i], encode.dumps(payload)))
        self._next_extra_door[i] = queue[0].ts if queue else INF

    def _doors(self, i: int, end: float, held: bool, out: list[tuple[Topic, bytes]]) -> None:
        elder = self.elders[i]
        day = self._days[i]
        d = self._door_idx[i]
        while d < len(day.doors) and day.doors[d].ts < end:
            action = day.doors[d]
            d += 1
            if held or self._silent_until[i, 2] > action.ts:  # on the floor, or a dead hub
                continue
            seq = int(self._seq[i, 2])
            self._seq[i, 2] += 1
            payload = {"elder": elder.elder, "device": elder.door.device,
                       "ts": round(action.ts, 3), "door": action.role.value,
                       "role": action.role.value, "state": action.state, "seq": seq}
            out.append((self._door_topics[i], encode.dumps(payload)))
        self._door_idx[i] = d
        self._next_door[i] = day.doors[d].ts if d < len(day.doors) else INF

    def _vitals(self, act: np.ndarray, s: float) -> None:
        hr = signals.heart_rate(self._rng, self._hr, self._rest_hr, act, self._out_now)
        vit = np.flatnonzero((self._vit_until > s) & ~np.isnan(self._vit[:, 0]))
        if vit.size:  # an injected episode: towards its target with an 8 s time constant
            old = self._hr[vit]
            hr[vit] = (old + (self._vit[vit, 0] - old) * (1.0 - math.exp(-1.0 / 8.0))
                       + self._rng.normal(0.0, 0.4, vit.size))
        self._hr = hr
        on_body = self._worn_now
        # 24/7 wearers drain slowly and dock fast during the morning wash, so a month-long
        # run has no low battery or dead wearable unless one is injected.
        rate_h = np.where(self._night_charge, 2.5, 0.7)
        before = self._battery
        self._battery = np.where(
            on_body,
            np.maximum(self._battery - rate_h / 3600.0, 0.0),
            np.minimum(self._battery + np.where(self._night_charge, 30.0, 150.0) / 3600.0, 100.0),
        )
        drain = self._batt_until > s
        if drain.any():
            self._battery[drain] = np.maximum(before[drain] - self._batt_drain[drain] / 3600.0,
                                              1.0)
        self._door_battery = np.maximum(self._door_battery - 0.5 / 86400.0, 1.0)

    def _frames(self, s: float, act: np.ndarray, grav: np.ndarray, held: np.ndarray,
                out: list[tuple[Topic, bytes]], away: np.ndarray) -> None:
        cfg = self.config
        off = self._off_until > s  # lying on a table: sends, but nothing of a body
        sending = np.flatnonzero((self._worn_now | held | off) & (self._battery > 0.0)
                                 & ~(self._silent_until[:, 0] > s))
        gait = self._gait_hz
        if away.any():
            gait = np.where(away, self._away_gait, gait)
        accel, phase, steps = signals.accel_second(
            self._rng, cfg.rate, grav[sending], act[sending], gait[sending],
            self._phase[sending],
        )
        self._phase[sending] = phase
        if self._motion:
            self._apply_motions(s, sending, accel)
        spo2 = signals.spo2(self._rng, self._spo2[sending], act[sending])
        hr = np.clip(np.rint(self._hr[sending]), 20, 250).astype(np.int64)
        target = self._vit[sending, 1]
        vit = np.flatnonzero((self._vit_until[sending] > s) & ~np.isnan(target))
        if vit.size:
            low = target[vit] + self._rng.integers(-1, 2, vit.size)
            spo2[vit] = np.clip(low, 50, 100).astype(spo2.dtype)
        bodies = encode.accel_json(accel)
        ts = repr(float(s)).encode()
        head = self._frame_head
        topics = self._frame_topics
        tail_fmt = b',"rate":%d,"accel":%s,"hr":%d,"spo2":%d,"steps":%d,"battery":%.1f}'
        rate = cfg.rate
        off_rows = off[sending]
        if off_rows.any():
            still = self._off_grav[sending[off_rows]][:, None, :]
            accel[off_rows] = still + self._rng.normal(0.0, 0.0015, (off_rows.sum(), rate, 3))
            bodies = encode.accel_json(accel)
        for k, (i, body, h, o, st, b) in enumerate(zip(
            sending.tolist(), bodies, hr.tolist(), spo2.tolist(), steps.tolist(),
            self._battery[sending].tolist(), strict=True,
        )):
            if off_rows[k]:  # no skin contact: no heart rate, no SpO2, no steps
                out.append((topics[i], head[i] + ts + b',"rate":%d,"accel":%s,"steps":0,'
                            b'"battery":%.1f}' % (rate, body, b)))
                continue
            out.append((topics[i], head[i] + ts + tail_fmt % (rate, body, h, o, st, b)))

    def _apply_motions(self, s: float, sending: np.ndarray, accel: np.ndarray) -> None:
        rate = self.config.rate
        row = {int(i): r for r, i in enumerate(sending.tolist()) if int(i) in self._motion}
        for i, (start, samples) in list(self._motion.items()):
            first = round((s - start) * rate)  # motion sample at this frame's sample 0
            if first >= len(samples):
                del self._motion[i]
                continue
            if i not in row:
                continue
            lo = max(0, -first)
            hi = min(rate, len(samples) - first)
            if lo < hi:
                accel[row[i], lo:hi] = samples[first + lo : first + hi]

    def _bed(self, end: float, act: np.ndarray, held: np.ndarray,
             out: list[tuple[Topic, bytes]]) -> None:
        due = np.flatnonzero(self._next_bed < end)
        ts = self._next_bed[due]
        self._next_bed[due] += self.config.bed_period_s
        a = act[due]
        present = np.isin(a, list(IN_BED)) & ~self._out_now[due] & ~held[due]
        base_br = self._br[due]
        episode = (self._vit_until[due] > end - 1.0) & ~np.isnan(self._vit[due, 2])
        if episode.any():
            base_br = np.where(episode, self._vit[due, 2], base_br)
        hr, br, movement = signals.bed_vitals(self._rng, self._hr[due], base_br, a)
        for j, i in enumerate(due.tolist()):
            elder = self.elders[i]
            if self._silent_until[i, 1] > ts[j]:
                continue
            payload: dict[str, object] = {"elder": elder.elder, "device": elder.bed.device,
                                          "ts": float(ts[j]), "presence": bool(present[j])}
            if present[j]:
                payload.update(hr=int(hr[j]), br=float(br[j]), movement=float(movement[j]))
            else:
                payload.update(hr=None, br=None, movement=0.0)
            out.append((self._bed_topics[i], encode.dumps(payload)))

    def _status(self, end: float, out: list[tuple[Topic, bytes]]) -> None:
        due_i, due_k = np.nonzero(self._next_status < end)
        rssi = self._rssi_base[due_i, due_k] + self._rng.integers(-3, 4, len(due_i))
        for i, k, r in zip(due_i.tolist(), due_k.tolist(), rssi.tolist(), strict=True):
            elder = self.elders[i]
            device = elder.devices[k]
            ts = float(self._next_status[i, k])
            self._next_status[i, k] += self.config.status_period_s
            if (k == 0 and self._battery[i] <= 0.0) or self._silent_until[i, k] > ts:
                continue  # a flat or dead device says nothing
            if k == 0:
                battery = round(float(self._battery[i]), 1)
                if self._out_now[i]:
                    r = min(r, -85)  # far from the home's access point: on the cellular link
            elif k == 1:
                battery = 100.0  # mains powered
            else:
                battery = round(float(self._door_battery[i]), 1)
            payload = {"elder": elder.elder, "device": device.device, "ts": ts,
                       "battery": battery, "firmware": device.firmware, "rssi": int(r),
                       "model": device.model, "vendor": device.vendor,
                       "placement": device.placement,
                       "interval_s": self.config.status_period_s}
            out.append((self._status_topics[i][k], encode.dumps(payload)))

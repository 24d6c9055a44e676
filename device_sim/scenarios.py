"""Labelled scenarios injected into a simulation: falls, look-alikes, vital signs, faults.

A :class:`Scenario` is one event with its ground truth: which elder and device, the
detector ``kind`` that should fire (``"none"`` for look-alikes and near-falls), the
``name`` of what happened (``fall_forward``, ``sit_hard``, ...), when it starts, when a
detector could first know (the impact of a fall, the front door opening, the first
missed status report) and when it ends. :func:`plan_scenarios` draws them at times
that fit each elder's routine (falls while walking or standing, look-alikes while up,
wandering and bed exits in the sleep window, staying in bed at the usual wake-up),
never two at once for one elder; :func:`apply` injects them; :func:`write_labels`
writes the ground truth beside a run.

Motions come from :mod:`device_sim.motions` (free-fall dip 0.2-0.6 g, impact 2.5-7 g,
look-alikes 1.5-3.5 g), drawn anew for every event from the scenario's own ``seed``,
turned into the wearable's frame and tilted up to 15° at random, so a detector cannot
be tuned to one template. A fall is followed by a long lie on the floor (2-10 min: no
bed presence, no doors).

Generating a month of a cohort second by second is slow (about 1.3 ms a simulated
second for 100 elders: an hour for 30 days, before any broker), so an evaluation takes
the fast path instead: :func:`accel_windows` builds only the wearable frames around each
injected motion, as the simulation would send them, for the fall detector; and
:func:`iter_streams` yields every other stream hour by hour (frames reduced to their
vital signs, battery, steps and per-second movement and posture; bed readings; doors;
statuses; buttons), sent in the same seconds as the simulation would send them.
:func:`score` matches detections to the labels.

>>> from device_sim.homes import SimConfig, Simulation
>>> sim = Simulation(SimConfig(elders=4, seed=3, start=19723 * 86400.0))
>>> plan = plan_scenarios(sim, seed=5, days=2, mix={"fall_forward": 0.5, "sit_hard": 1.0})
>>> sorted({s.kind for s in plan}), plan == plan_scenarios(sim, 5, 2, {"fall_forward": 0.5,
...                                                                 "sit_hard": 1.0})
(['fall', 'none'], True)
>>> all(s.start <= s.known <= s.end for s in plan)
True
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device_sim import signals
from device_sim.homes import (
    Away,
    Battery,
    Body,
    Injected,
    Motion,
    OffBody,
    Routines,
    Silence,
    SimEvent,
    Simulation,
    SosPress,
    Vitals,
    timeline,
)
from device_sim.motions import MOTIONS, motion
from device_sim.routine import IN_BED, Activity, Day, Posture, Segment, day_of, plan_day
from homecare.contract import DeviceKind, DoorRole
from homecare.schema import Wearable

__all__ = [
    "CATALOGUE",
    "DEFAULT_MIX",
    "AccelWindow",
    "Scenario",
    "Spec",
    "Streams",
    "accel_windows",
    "apply",
    "count_expected",
    "events",
    "iter_streams",
    "plan_scenarios",
    "read_labels",
    "score",
    "write_labels",
]

Floats = npt.NDArray[np.float32]
LABEL_FIELDS = ("id", "name", "kind", "elder", "device", "start", "known", "end", "allowed")
MARGIN_S = 120.0
"""Quiet time kept between two scenarios of one elder, before and after."""


# -- ground truth ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One injected event and its ground truth (times in simulated unix seconds).

    ``known`` is the earliest time the evidence exists (a detector's own dwell time
    comes on top); ``allowed`` lists other detector kinds that may rightly fire during
    ``[start, end]`` (a fall's long lie may also raise ``inactivity``).
    """

    id: str
    name: str
    kind: str
    elder: str
    index: int
    device: str
    start: float
    known: float
    end: float
    seed: int
    params: dict[str, float] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()

    def label(self) -> dict[str, Any]:
        """The label as a flat dict (what :func:`write_labels` writes)."""
        return {"id": self.id, "name": self.name, "kind": self.kind, "elder": self.elder,
                "device": self.device, "start": self.start, "known": self.known,
                "end": self.end, "allowed": " ".join(self.allowed)}


@dataclass(frozen=True)
class Spec:
    """A scenario type: the detector it should raise and where it fits in a day."""

    name: str
    kind: str
    where: str
    """Name of the window finder in :data:`_WHERE` (when in a routine it may happen)."""
    device: DeviceKind
    """The device that usually carries the evidence (a label names the actual one)."""
    allowed: tuple[str, ...] = ()


_FALLS = ("fall_forward", "fall_backward", "fall_sideways", "fall_out_of_bed")
_LOOK_ALIKES = ("sit_hard", "sit_hard_bed", "collapse_into_chair", "lie_down", "bend",
                "stumble", "stairs_down", "jump", "device_dropped", "device_thrown")
_MOTION_WHERE = {
    "fall_forward": "walking", "fall_backward": "upright", "fall_sideways": "walking",
    "fall_out_of_bed": "in_bed_worn", "long_lie": "upright", "sit_hard": "sit_start",
    "sit_hard_bed": "sit_start", "collapse_into_chair": "sit_start", "lie_down": "bed_start",
    "bend": "standing", "stumble": "walking", "stairs_down": "long_walk", "jump": "standing",
    "device_dropped": "upright", "device_thrown": "standing", "recovered_fall": "walking",
}
_ON_THE_FLOOR = ("inactivity", "tachycardia", "bed_exit")
"""What lying on the floor rightly raises: no sign of activity, a heart rate 15 bpm above
rest (:data:`device_sim.signals.HR_OFFSET`) judged at rest against a resting baseline, and,
at night, out of bed too long."""
CATALOGUE: dict[str, Spec] = {
    **{n: Spec(n, "fall", _MOTION_WHERE[n], DeviceKind.WEARABLE, (*_ON_THE_FLOOR, "sos"))
       for n in _FALLS},
    "long_lie": Spec("long_lie", "inactivity", "upright", DeviceKind.WEARABLE,
                     ("fall", "tachycardia", "bed_exit")),
    # a fall got up from: recorded and the family told, no alarm (not in DEFAULT_MIX: the
    # cohort's figures stay comparable; add it with --mix or plan_scenarios(mix=...))
    "recovered_fall": Spec("recovered_fall", "fall_recovered", "walking", DeviceKind.WEARABLE),
    **{n: Spec(n, "none", _MOTION_WHERE[n], DeviceKind.WEARABLE) for n in _LOOK_ALIKES},
    "sos": Spec("sos", "sos", "up_worn", DeviceKind.WEARABLE),
    "wandering": Spec("wandering", "wandering", "asleep", DeviceKind.DOOR,
                      ("bed_exit", "inactivity")),
    "bed_exit": Spec("bed_exit", "bed_exit", "asleep", DeviceKind.BED, _ON_THE_FLOOR),
    "not_up": Spec("not_up", "not_up", "wake", DeviceKind.BED, ("inactivity",)),
    "tachycardia": Spec("tachycardia", "tachycardia", "resting", DeviceKind.WEARABLE),
    "bradycardia": Spec("bradycardia", "bradycardia", "resting", DeviceKind.WEARABLE),
    "low_spo2": Spec("low_spo2", "low_spo2", "resting_worn", DeviceKind.WEARABLE,
                     ("tachycardia", "breathing")),  # it breathes 22-30 a minute
    # a silent wearable or door hub takes the signs of activity with it
    "device_offline": Spec("device_offline", "device_offline", "any", DeviceKind.WEARABLE,
                           ("not_worn", "battery_low", "inactivity")),
    "battery_low": Spec("battery_low", "battery_low", "up_worn", DeviceKind.WEARABLE),
    "not_worn": Spec("not_worn", "not_worn", "up_home", DeviceKind.WEARABLE, ("inactivity",)),
}
"""Every scenario by name; ``kind`` is the detector that should fire (``none``: none)."""

DEFAULT_MIX: dict[str, float] = {
    # falls: 3 per elder-month
    "fall_forward": 0.03, "fall_backward": 0.03, "fall_sideways": 0.025,
    "fall_out_of_bed": 0.015,
    # look-alikes and near-falls: 4 per elder-day
    "sit_hard": 0.8, "sit_hard_bed": 0.3, "collapse_into_chair": 0.2, "lie_down": 0.3,
    "bend": 0.9, "stumble": 0.5, "stairs_down": 0.4, "jump": 0.1, "device_dropped": 0.25,
    "device_thrown": 0.25,
    # everything else: about one per elder-month each
    **dict.fromkeys(("long_lie", "sos", "wandering", "bed_exit", "not_up", "tachycardia",
                     "bradycardia", "low_spo2", "device_offline", "battery_low", "not_worn"),
                    1 / 30),
}
"""Expected events per elder-day of each scenario (Poisson)."""

# Drawn ranges, in one place so an evaluation can be re-run with others.
FALL_LIE_S = (120.0, 600.0)
LONG_LIE_S = (1200.0, 3600.0)
WANDER_S = (1800.0, 5400.0)
BED_EXIT_S = (2400.0, 5400.0)
NOT_UP_S = (3 * 3600.0, 5 * 3600.0)
EPISODE_S = (600.0, 1800.0)
TACHY_BPM = (130.0, 165.0)
BRADY_BPM = (32.0, 40.0)
LOW_SPO2 = (80, 87)
OFFLINE_S = (2 * 3600.0, 8 * 3600.0)
NOT_WORN_S = (5400.0, 3 * 3600.0)
"""Off the body longer than the not-worn limit of the usual care levels (2: 1 h; 1: 2 h), so
that a detector keeping to its limit can find it; shorter breaks are no event."""
BATTERY_LOW_PCT = 15.0


# -- where in a routine ---------------------------------------------------------------

Window = tuple[float, float]


def _spans(day: Day, pred: Callable[[Segment], bool], lo: float = 0.0, hi: float = 0.0,
           min_s: float = 0.0) -> list[Window]:
    """Ranges of action times inside segments matching ``pred`` (``lo``/``hi`` trimmed)."""
    return [(s.start + lo, s.end - hi) for s in day.segments
            if pred(s) and s.end - s.start >= min_s and s.end - hi >= s.start + lo]


def _starts(day: Day, pred: Callable[[Segment], bool]) -> list[Window]:
    """Start times of matching segments (the moment the elder sits, lies down...)."""
    segs = day.segments
    return [(s.start, s.start) for k, s in enumerate(segs)
            if k > 0 and pred(s) and s.end - s.start > 60 and segs[k - 1].activity
            in (Activity.WALK, Activity.STAND) and segs[k - 1].worn]


def _home_worn(s: Segment) -> bool:
    return s.worn and not s.out


def _sleep_window(day: Day) -> list[Window]:
    """Deep in the night's sleep (not naps): an hour after falling asleep, 2 h before waking.

    Each stretch of sleep also keeps 30 min from its own ends (a night trip). Nearer the
    wake-up an elder getting up is up for the day, not wandering or on a night trip, and a
    detector rightly cannot tell the two apart.
    """
    asleep = [s for s in day.segments if s.activity == Activity.SLEEP and s.label == "asleep"]
    if not asleep:
        return []
    first, last = asleep[0].start + 3600.0, day.end - 7200.0
    return [(max(lo, first), min(hi, last)) for lo, hi in _spans(
        day, lambda s: s.activity == Activity.SLEEP and s.label == "asleep", lo=1800.0,
        hi=1800.0) if max(lo, first) <= min(hi, last)]


def _before_bed(day: Day, windows: list[Window], up_s: float) -> list[Window]:
    """``windows`` cut to end ``up_s`` before the night's bedtime: the elder stays up after."""
    bed = next((s.start for s in day.segments if s.label == "in bed awake"), day.end)
    return [(lo, min(hi, bed - up_s)) for lo, hi in windows if lo <= bed - up_s]


_WHERE: dict[str, Callable[[Day], list[Window]]] = {
    "walking": lambda d: _spans(d, lambda s: s.activity == Activity.WALK and _home_worn(s),
                                lo=8.0, hi=2.0, min_s=15.0),
    "long_walk": lambda d: _spans(d, lambda s: s.activity == Activity.WALK and _home_worn(s),
                                  lo=2.0, hi=36.0, min_s=45.0),  # 20-30 s of stairs inside
    "upright": lambda d: _spans(d, lambda s: s.activity in (Activity.WALK, Activity.STAND)
                                and _home_worn(s), lo=8.0, hi=2.0, min_s=15.0),
    "standing": lambda d: _spans(d, lambda s: s.activity == Activity.STAND and _home_worn(s),
                                 lo=8.0, hi=5.0, min_s=20.0),
    "in_bed_worn": lambda d: _spans(d, lambda s: s.activity in IN_BED and _home_worn(s),
                                    lo=60.0, hi=30.0, min_s=300.0),
    "sit_start": lambda d: _starts(d, lambda s: s.activity == Activity.SIT and _home_worn(s)),
    "bed_start": lambda d: _starts(d, lambda s: s.activity in IN_BED and _home_worn(s)),
    "up_worn": lambda d: _spans(d, lambda s: s.activity not in IN_BED and s.worn, lo=10.0,
                                hi=10.0),
    "up_home": lambda d: _before_bed(d, _spans(
        d, lambda s: s.activity in (Activity.SIT, Activity.STAND) and _home_worn(s), lo=5.0,
        hi=5.0, min_s=60.0), NOT_WORN_S[1]),
    "resting": lambda d: _spans(d, lambda s: s.activity in (Activity.SIT, *IN_BED)
                                and not s.out, lo=30.0, hi=30.0, min_s=300.0),
    "resting_worn": lambda d: _spans(d, lambda s: s.activity in (Activity.SIT, *IN_BED)
                                     and _home_worn(s), lo=30.0, hi=30.0, min_s=300.0),
    "asleep": _sleep_window,
    "wake": lambda d: [(d.start, d.start)],
    "any": lambda d: [(d.start, d.end)],
}


def _pick(rng: np.random.Generator, windows: list[Window]) -> float | None:
    """A time drawn from ``windows``, weighted by length (points count as 60 s)."""
    if not windows:
        return None
    w = np.array([max(hi - lo, 0.0) + 60.0 for lo, hi in windows])
    lo, hi = windows[int(rng.choice(len(windows), p=w / w.sum()))]
    return float(lo + rng.random() * (hi - lo))


# -- building the events --------------------------------------------------------------


def _tilt(rng: np.random.Generator, max_deg: float) -> npt.NDArray[np.float64]:
    """A rotation by up to ``max_deg`` about a random axis (how the device sits on a body)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    a = np.radians(rng.uniform(0.0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.asarray(np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k), dtype=np.float64)


def _motion_timing(name: str, seed: int) -> tuple[float, float]:
    """(action time, length) of motion ``name`` drawn from ``seed``, without rendering it.

    The action is the impact, or else the first moment the trunk turns 20° (a collapse,
    lying down, bending); :func:`motion` with the same seed draws the same parameters.
    """
    timeline, info = MOTIONS[name](np.random.default_rng(seed))
    length = len(timeline.t) / 500.0
    if info.get("impact_t") is not None:
        return float(info["impact_t"]), length
    up = timeline.up
    turned = np.flatnonzero(up @ up[0] < math.cos(math.radians(20.0)))
    return (float(timeline.t[turned[0]]) if turned.size else 1.0), length


def _motion_samples(name: str, seed: int, rate: int) -> Floats:
    """The motion's samples in the wearable's frame, tilted as this elder wears it."""
    rng = np.random.default_rng(seed)
    _, xyz, _ = motion(name, rng, rate=rate)
    rot = _tilt(np.random.default_rng([seed, 1]), 15.0) @ signals.TRUNK_Z_UP_TO_DEVICE
    return (xyz.astype(np.float64) @ rot.T).astype(np.float32)


def _nearest_posture(vec: npt.NDArray[np.float64]) -> Posture:
    return Posture(int(np.argmax(signals.GRAVITY @ (vec / (np.linalg.norm(vec) + 1e-9)))))


def events(sc: Scenario, rate: int = 50) -> list[tuple[float, SimEvent]]:
    """The simulation events that make scenario ``sc`` happen, as ``(at_ts, event)``."""
    p = sc.params
    if sc.name in MOTIONS or sc.name == "long_lie":
        name = "slow_collapse" if sc.name == "long_lie" else sc.name
        samples = _motion_samples(name, sc.seed, rate)
        then = _nearest_posture(samples[-rate:].mean(axis=0))
        return [(sc.start, Motion(samples, then=then, hold_s=p.get("hold_s", 0.0)))]
    if sc.name == "sos":
        return [(sc.start, SosPress())]
    if sc.name == "wandering":
        d = sc.end - sc.start
        doors: tuple[tuple[float, DoorRole], ...] = (
                 (5.0, DoorRole.BEDROOM), (p["front_s"], DoorRole.FRONT),
                 (d - 40.0, DoorRole.FRONT), (d - 10.0, DoorRole.BEDROOM))
        return [(sc.start, Away(d, Activity.WALK, out=True, doors=doors))]
    if sc.name == "bed_exit":
        walk = p["walk_s"]
        doors = ((5.0, DoorRole.BEDROOM), (walk - 3.0, DoorRole.BATHROOM))
        return [(sc.start, Away(walk, Activity.WALK, doors=doors)),
                (sc.start + walk, Away(sc.end - sc.start - walk, Activity.LIE_FLOOR,
                                       Posture(int(p["posture"]))))]
    if sc.name == "not_up":
        worn = bool(p["worn"])
        return [(sc.start, Away(sc.end - sc.start, Activity.IN_BED, Posture.SUPINE, worn=worn))]
    if sc.kind in ("tachycardia", "bradycardia", "low_spo2"):
        spo2 = int(p["spo2"]) if "spo2" in p else None
        return [(sc.start, Vitals(sc.end - sc.start, hr=p.get("hr"), spo2=spo2,
                                  br=p.get("br")))]
    if sc.name == "device_offline":
        kind = (DeviceKind.WEARABLE, DeviceKind.BED, DeviceKind.DOOR)[int(p["device_kind"])]
        return [(sc.start, Silence(kind, sc.end - sc.start))]
    if sc.name == "battery_low":
        return [(sc.start, Battery(p["level"], p["drain_per_h"], sc.end - sc.start)),
                (sc.end, Battery(p["recharged"], 0.0, 0.0))]
    if sc.name == "not_worn":
        return [(sc.start, OffBody(sc.end - sc.start))]
    raise ValueError(f"no events for scenario {sc.name!r}")


def _draw(spec: Spec, sim: Simulation, i: int, day: Day, rng: np.random.Generator
          ) -> tuple[float, float, float, str, dict[str, float]] | None:
    """Time and parameters of one ``spec`` event for elder ``i`` on ``day``, or None.

    Returns ``(start, known, end, device, params)``.
    """
    elder = sim.elders[i]
    rate = sim.config.rate
    at = _pick(rng, _WHERE[spec.where](day))
    if at is None:
        return None
    params: dict[str, float] = {}
    device = elder.wearable.device
    if spec.name in MOTIONS or spec.name == "long_lie":
        seed = int(rng.integers(2**31))
        params["motion_seed"] = seed
        name = "slow_collapse" if spec.name == "long_lie" else spec.name
        action, length = _motion_timing(name, seed)
        start = round((at - action) * rate) / rate  # on the sample grid
        known = start + action
        end = start + length
        if spec.kind == "fall":
            params["hold_s"] = round(float(rng.uniform(*FALL_LIE_S)))
        elif spec.name == "long_lie":
            params["hold_s"] = round(float(rng.uniform(*LONG_LIE_S)))
            known = start + action + 7.0  # settled on the floor
        end += params.get("hold_s", 0.0)
        return start, known, end, device, params
    start = float(math.ceil(at))
    if spec.name == "sos":
        return start, start, start + 1.0, device, params
    if spec.name == "wandering":
        params["front_s"] = float(round(rng.uniform(25.0, 90.0)))
        end = start + round(float(rng.uniform(*WANDER_S)))
        return start, start + params["front_s"], end, elder.door.device, params
    if spec.name == "bed_exit":
        params["walk_s"] = float(round(rng.uniform(15.0, 40.0)))
        params["posture"] = float(rng.choice([Posture.SUPINE, Posture.LEFT_SIDE,
                                              Posture.RIGHT_SIDE, Posture.PRONE]))
        return start, start, start + round(float(rng.uniform(*BED_EXIT_S))), elder.bed.device, \
            params
    if spec.name == "not_up":
        params["worn"] = float(elder.profile.wears_at_night)
        return start, start, start + round(float(rng.uniform(*NOT_UP_S))), elder.bed.device, \
            params
    if spec.kind in ("tachycardia", "bradycardia", "low_spo2"):
        end = start + round(float(rng.uniform(*EPISODE_S)))
        if spec.kind == "low_spo2":
            params["spo2"] = float(rng.integers(LOW_SPO2[0], LOW_SPO2[1] + 1))
            params["br"] = round(float(rng.uniform(22.0, 30.0)), 1)
        else:
            bpm = TACHY_BPM if spec.kind == "tachycardia" else BRADY_BPM
            params["hr"] = round(float(rng.uniform(*bpm)))
        seg = day.at(start)
        if not seg.worn:
            device = elder.bed.device  # on the charger: only the bed sees the heart
        return start, start + 30.0, end, device, params  # 30 s: 4 time constants
    if spec.name == "device_offline":
        k = int(rng.choice(3, p=[0.5, 0.25, 0.25]))
        params["device_kind"] = float(k)
        kind = (DeviceKind.WEARABLE, DeviceKind.BED, DeviceKind.DOOR)[k]
        end = start + round(float(rng.uniform(*OFFLINE_S)))
        # the first message missed: a bed reads every few seconds, the others report status
        known = (sim.next_bed_reading(i, start) if kind == DeviceKind.BED
                 else sim.next_status(i, kind, start))
        return start, known, end, elder.devices[k].device, params
    if spec.name == "battery_low":
        level = round(float(rng.uniform(18.0, 25.0)), 1)
        drain = round(float(rng.uniform(3.0, 6.0)), 2)
        params.update(level=level, drain_per_h=drain,
                      recharged=round(float(rng.uniform(60.0, 95.0)), 1))
        known = start + round((level - BATTERY_LOW_PCT) / drain * 3600.0)
        end = start + round((level - 8.0) / drain * 3600.0)
        return start, known, end, device, params
    if spec.name == "not_worn":
        return start, start, start + round(float(rng.uniform(*NOT_WORN_S))), device, params
    raise ValueError(f"cannot place scenario {spec.name!r}")


# -- planning -------------------------------------------------------------------------


def plan_scenarios(sim: Simulation, seed: int | np.random.Generator = 0, days: float = 1.0,
                   mix: Mapping[str, float] | None = None) -> list[Scenario]:
    """Draw scenarios for every elder of ``sim`` over ``days`` from its start, by ``mix``.

    ``mix`` maps scenario names (:data:`CATALOGUE`) to expected events per elder-day
    (default :data:`DEFAULT_MIX`); counts are Poisson. Times follow each elder's routine
    and never overlap for one elder (:data:`MARGIN_S` apart); an event that finds no
    place is left out, so the result may hold a few fewer than expected. Long events are
    placed first. The same simulation config, seed, days and mix give the same list.
    """
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(CATALOGUE)
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(CATALOGUE)}")
    if days <= 0:
        raise ValueError("days must be positive")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([seed, 0x5C])
    cfg = sim.config
    t0, t1 = cfg.start, cfg.start + days * 86400.0
    order = sorted((n for n, r in mix.items() if r > 0), key=lambda n: (-_typical_s(n), n))
    out: list[Scenario] = []
    for e in sim.elders:
        first = day_of(e.profile, cfg.seed, e.index, t0)
        last = day_of(e.profile, cfg.seed, e.index, t1)
        plans = [plan_day(e.profile, cfg.seed, e.index, d) for d in range(first, last + 1)]
        busy: list[Window] = []
        for name in order:
            spec = CATALOGUE[name]
            for _ in range(int(rng.poisson(mix[name] * days))):
                for _attempt in range(8):
                    day = plans[int(rng.integers(len(plans)))]
                    drawn = _draw(spec, sim, e.index, day, rng)
                    if drawn is None:
                        continue
                    start, known, end, device, params = drawn
                    if start < t0 + MARGIN_S or end > t1 - MARGIN_S:
                        continue
                    if any(start - MARGIN_S < b and a < end + MARGIN_S for a, b in busy):
                        continue
                    busy.append((start, end))
                    out.append(Scenario("", name, spec.kind, e.elder, e.index, device,
                                        start, known, end, int(params.pop("motion_seed", 0)),
                                        params, spec.allowed))
                    break
    out.sort(key=lambda s: (s.start, s.index))
    return [_with_id(s, k) for k, s in enumerate(out)]


def _with_id(sc: Scenario, k: int) -> Scenario:
    return Scenario(f"s{k:06d}", sc.name, sc.kind, sc.elder, sc.index, sc.device, sc.start,
                    sc.known, sc.end, sc.seed, sc.params, sc.allowed)


def _typical_s(name: str) -> float:
    """Rough length of a scenario, to place the long ones first."""
    return {"device_offline": OFFLINE_S[1], "not_up": NOT_UP_S[1], "battery_low": 4 * 3600.0,
            "wandering": WANDER_S[1], "bed_exit": BED_EXIT_S[1], "not_worn": NOT_WORN_S[1],
            "long_lie": LONG_LIE_S[1], "tachycardia": EPISODE_S[1], "bradycardia": EPISODE_S[1],
            "low_spo2": EPISODE_S[1]}.get(name, FALL_LIE_S[1] if name in _FALLS else 40.0)


def count_expected(elders: int, days: float, mix: Mapping[str, float] | None = None
                   ) -> dict[str, float]:
    """Expected number of labelled events per detector kind for a cohort (before placing)."""
    out: dict[str, float] = {}
    for name, rate in (DEFAULT_MIX if mix is None else mix).items():
        kind = CATALOGUE[name].kind
        out[kind] = out.get(kind, 0.0) + rate * elders * days
    return out


def apply(sim: Simulation, scenarios: Iterable[Scenario]) -> int:
    """Inject every scenario's events into ``sim``; returns how many events were injected.

    Call before stepping past the first scenario. Motion samples are rendered here
    (about 3 ms and 20 KB each at 50 Hz).
    """
    n = 0
    for sc in scenarios:
        for at, event in events(sc, sim.config.rate):
            sim.inject(sc.index, at, event)
            n += 1
    return n


# -- labels ---------------------------------------------------------------------------


def write_labels(path: str | Path, scenarios: Iterable[Scenario]) -> tuple[Path, Path]:
    """Write the ground truth as ``<path>.csv`` and ``<path>.json``; returns both paths.

    The CSV has :data:`LABEL_FIELDS` (``allowed`` space-separated); the JSON is a list of
    objects with the same fields plus ``index``, ``seed`` and the drawn ``params``.
    """
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".csv", ".json") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    rows = list(scenarios)
    csv_path, json_path = base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_FIELDS)
        writer.writeheader()
        writer.writerows(sc.label() for sc in rows)
    json_path.write_text(json.dumps([asdict(sc) for sc in rows], indent=1) + "\n")
    return csv_path, json_path


def read_labels(path: str | Path) -> list[Scenario]:
    """Read scenarios back from the JSON written by :func:`write_labels`."""
    data = json.loads(Path(path).read_text())
    return [Scenario(**{**d, "allowed": tuple(d["allowed"])}) for d in data]


# -- the fast path: accelerometer windows ---------------------------------------------


@dataclass(frozen=True)
class AccelWindow:
    """The wearable frames around one motion scenario, as the simulation would send them.

    ``ts[k]`` is frame k's first sample time (whole simulated seconds) and ``accel[k]``
    its ``rate`` samples (g). ``bed_ts`` are the home's bed sensor readings in the window
    (at its phase, every ``bed_period_s``) and ``bed_presence`` what each said.
    """

    scenario: Scenario
    ts: npt.NDArray[np.float64]
    accel: Floats
    rate: int
    bed_ts: npt.NDArray[np.float64]
    bed_presence: npt.NDArray[np.bool_]


def accel_windows(sim: Simulation, scenarios: Iterable[Scenario], *, before_s: float = 20.0,
                  after_s: float = 30.0, seed: int = 0) -> list[AccelWindow]:
    """Wearable frames from ``before_s`` before each motion scenario to ``after_s`` after it.

    Only scenarios with a motion (falls, ``long_lie``, look-alikes) get a window; the
    window ends ``after_s`` after the motion's samples, inside any long lie. The routine's
    own signal surrounds the motion (as :class:`Simulation` makes it, from the same
    plans and :mod:`device_sim.signals`); frames are sent while the routine has the
    wearable on, and always from the motion on. About 4 ms a window at 50 Hz.
    """
    cfg = sim.config
    rate = cfg.rate
    rng = np.random.default_rng([cfg.seed, seed, 0xACC])
    bed_offset = sim.initial_state()["bed_offset"]
    out: list[AccelWindow] = []
    for sc in scenarios:
        if not (sc.name in MOTIONS or sc.name == "long_lie"):
            continue
        (at, mot), = events(sc, rate)
        assert isinstance(mot, Motion)
        first = math.floor(at) - math.ceil(before_s)
        motion_end = at + len(mot.accel) / rate
        last = math.ceil(min(motion_end + after_s, motion_end + mot.hold_s + after_s))
        secs = np.arange(first, last, dtype=np.float64)
        profile = sim.elders[sc.index].profile
        act = np.zeros(len(secs), np.int64)
        post = np.zeros(len(secs), np.int64)
        worn = np.zeros(len(secs), bool)
        gait = np.zeros(len(secs))
        day: Day | None = None
        for k, s in enumerate(secs.tolist()):
            if day is None or not day.start <= s < day.end:
                day = plan_day(profile, cfg.seed, sc.index, day_of(profile, cfg.seed,
                                                                     sc.index, s))
            seg = day.at(s)
            act[k], post[k], worn[k], gait[k] = seg.activity, seg.posture, seg.worn, seg.gait_hz
        grav = signals.tilted(post, rng, spread=0.0)
        held = (secs + 1 > at) & (secs < motion_end + mot.hold_s)  # as Simulation holds
        act[held] = Activity.LIE_FLOOR
        grav[held] = signals.tilted(np.array([mot.then]), rng)[0]
        phase = rng.uniform(0, 2 * signals.TWO_PI) + signals.TWO_PI * np.cumsum(gait)
        accel, _, _ = signals.accel_second(rng, rate, grav, act, gait, phase - signals.TWO_PI
                                           * gait)
        flat = accel.reshape(-1, 3)
        offset = round((at - first) * rate)
        flat[offset: offset + len(mot.accel)] = mot.accel[: len(flat) - offset]
        sent = worn | held
        reads = (secs.astype(np.int64) - int(bed_offset[sc.index])) % cfg.bed_period_s == 0
        out.append(AccelWindow(sc, secs[sent], accel[sent], rate, secs[reads],
                               np.isin(act[reads], list(IN_BED))))  # fmt: skip
    return out


# -- the fast path: per-second streams for every detector -----------------------------

_WALK_ACTIVITY_G = math.sqrt(
    (signals.WALK_BOUNCE_G**2 + 0.06**2 + signals.WALK_SWING_G**2 + signals.WALK_SWAY_G**2) / 2
    + 3 * signals.NOISE_G[Activity.WALK] ** 2)
ACTIVITY_G = np.sqrt(3.0) * signals.NOISE_G
ACTIVITY_G[Activity.WALK] = _WALK_ACTIVITY_G
"""Spread of the acceleration vector within a second (g), per activity, as the sim makes it."""
OFF_BODY_ACTIVITY_G = math.sqrt(3.0) * 0.0015
MAG_STD_G = signals.NOISE_G.copy()
MAG_STD_G[Activity.WALK] = math.sqrt(
    (signals.WALK_BOUNCE_G**2 + 0.06**2) / 2 + signals.NOISE_G[Activity.WALK] ** 2)
"""Spread of the acceleration *magnitude* within a second (g), per activity: the ``mag_std``
that :func:`homecare.frames.frame_stats` computes live. Only noise along gravity (and the
walking bounce, which is along it) moves the magnitude, so it is about ``1/√3`` of the
vector's spread for still activities; a detector thresholding ``mag_std`` must see this."""
OFF_BODY_MAG_STD_G = 0.0015
ROLES = np.array([r.value for r in DoorRole])


@dataclass(frozen=True)
class Streams:
    """Every elder's messages stamped in ``[t0, t1)``, decoded into columns.

    Each attribute maps column names to equally long arrays, in time order; ``elder``
    is the elder's index in the simulation.

    * ``wearable``: a row per frame sent: ``elder, ts, hr, spo2`` (-1: no skin contact),
      ``steps, battery, activity_g`` (the spread of the acceleration vector within the
      second, g: the stillness measure of the fall detector), ``mag_std`` (the spread of
      its magnitude, g, as :func:`homecare.frames.frame_stats` has it live) and ``gx, gy,
      gz`` (its mean, g: the posture). Samples themselves come from :func:`accel_windows`.
    * ``bed``: ``elder, ts, presence, hr`` (-1 absent), ``br`` (NaN absent), ``movement``.
    * ``doors``: ``elder, ts, role, state`` (strings, as in :class:`DoorEvent`).
    * ``status``: ``elder, kind`` (0 wearable, 1 bed, 2 door), ``ts, battery``.
    * ``buttons``: ``elder, ts, stream`` (``"sos"`` or ``"ok"``).
    """

    t0: float
    t1: float
    wearable: dict[str, np.ndarray]
    bed: dict[str, np.ndarray]
    doors: dict[str, np.ndarray]
    status: dict[str, np.ndarray]
    buttons: dict[str, np.ndarray]


def _overrides(sim: Simulation, scenarios: Iterable[Scenario]) -> list[Injected]:
    rate = sim.config.rate
    out = [Injected() for _ in sim.elders]
    for sc in scenarios:
        for at, ev in events(sc, rate):
            out[sc.index].add(at, ev, rate)
    return out


def iter_streams(sim: Simulation, scenarios: Iterable[Scenario], days: float, *,
                 chunk_s: int = 3600, seed: int = 0) -> Iterator[Streams]:
    """Yield :class:`Streams` chunk by chunk over ``days`` from ``sim``'s start.

    A fast stand-in for stepping ``sim`` with the scenarios applied (pass a fresh,
    unstepped simulation; it is only read), derived from the same simulator: the same
    :func:`~device_sim.homes.timeline` (routine and injected events, second by second),
    the same heart-rate and battery dynamics (:class:`~device_sim.homes.Body`) and the
    same report phases, so frames are sent in the same seconds, the bed sees the same
    presence, the same doors move and statuses come at the same times; only the random
    draws are its own. Instead of samples a frame carries its second's spread and mean. About 4 s a
    simulated day for 100 elders with the default mix (stepping: about 2 min).
    """
    cfg = sim.config
    if cfg.start != math.floor(cfg.start) or sim.clock != cfg.start:
        raise ValueError("iter_streams needs a fresh simulation starting on a whole second")
    n = len(sim.elders)
    rng = np.random.default_rng([cfg.seed, seed, 0x57])
    state = sim.initial_state()
    end = cfg.start + days * 86400.0
    ov = [o.by_chunk(cfg.start, int(chunk_s), end) for o in _overrides(sim, scenarios)]
    routines = Routines(sim.elders, cfg.seed)
    step_hz = np.array([e.profile.step_hz for e in sim.elders])
    base_spo2 = np.array([e.profile.spo2 for e in sim.elders])
    base_br = np.array([e.profile.br for e in sim.elders])
    rest = np.array([e.profile.rest_hr for e in sim.elders])
    night_charge = np.array([not e.profile.wears_at_night for e in sim.elders])
    body = Body(state["hr"].copy(), state["battery"].copy(), rest, night_charge)
    phase = rng.uniform(0.0, 2.0, n)
    t = cfg.start
    chunk = 0
    while t < end - 1e-9:
        c = int(min(chunk_s, math.ceil(end - t)))
        secs = t + np.arange(c)
        injected = {i: o[chunk] for i, o in enumerate(ov) if chunk in o}
        tl = timeline(routines, injected, t, c, step_hz, stats=True)
        act, post, worn, held, off, silent = tl.act, tl.post, tl.worn, tl.held, tl.off, tl.silent
        spread, mean, mag_sd = tl.spread, tl.mean, tl.mag_sd
        hr_out, batt_out = body.advance(rng, tl)
        # wearable frames
        sending = (worn | held | off) & (batt_out > 0.0) & ~silent[:, :, 0]
        walking = act == Activity.WALK
        cum = phase[:, None] + np.cumsum(np.where(walking, tl.gait, 0.0), axis=1)
        steps = np.diff(np.floor(cum), axis=1, prepend=np.floor(phase)[:, None])
        phase = cum[:, -1] % 2.0
        spo2 = np.clip(base_spo2[:, None] + rng.integers(-1, 2, (n, c))
                       - (act == Activity.SLEEP), 94, 99)
        low = ~np.isnan(tl.spo2_t)
        spo2[low] = np.clip(tl.spo2_t[low] + rng.integers(-1, 2, int(low.sum())), 50, 100)
        wobble = rng.uniform(0.9, 1.1, (n, c))
        activity = ACTIVITY_G[act] * wobble
        magnitude = MAG_STD_G[act] * wobble
        grav = signals.GRAVITY[post]
        moving = ~np.isnan(spread)
        activity[moving], grav[moving] = spread[moving], mean[moving]
        magnitude[moving] = mag_sd[moving]
        activity[off] = OFF_BODY_ACTIVITY_G
        magnitude[off] = OFF_BODY_MAG_STD_G
        grav[off] = (0.0, 0.0, 1.0)
        hr_int = np.clip(np.rint(hr_out), 20, 250)
        hr_int[off], spo2[off], steps[off] = -1, -1, 0
        ei, ki = np.nonzero(sending.T)[::-1]  # time order, then elder
        wearable = {"elder": ei, "ts": secs[ki], "hr": hr_int[ei, ki].astype(np.int64),
                    "spo2": spo2[ei, ki].astype(np.int64), "steps": steps[ei, ki].astype(np.int64),
                    "battery": np.round(batt_out[ei, ki], 1),
                    "activity_g": activity[ei, ki].astype(np.float32),
                    Wearable.mag_std: magnitude[ei, ki].astype(np.float32),
                    **{f"g{ax}": grav[ei, ki, j].astype(np.float32) for j, ax in enumerate("xyz")}}
        bed = _bed_rows(sim, state["bed_offset"], t, c, act, tl.out, held, silent, hr_out,
                        np.where(np.isnan(tl.br_t), base_br[:, None], tl.br_t), rng)
        status = _status_rows(sim, state, t, c, batt_out, silent)
        doors, buttons = tl.doors, tl.buttons
        yield Streams(
            t, t + c, wearable, bed,
            {"elder": np.array([d[0] for d in doors], np.int64),
             "ts": np.array([d[1] for d in doors]),
             "role": np.array([d[2] for d in doors], dtype=str),
             "state": np.array([d[3] for d in doors], dtype=str)},
            status,
            {"elder": np.array([b[0] for b in buttons], np.int64),
             "ts": np.array([b[1] for b in buttons]),
             "stream": np.array([b[2] for b in buttons], dtype=str)},
        )
        t += c
        chunk += 1


def _bed_rows(sim: Simulation, offsets: np.ndarray, t: float, c: int, act: np.ndarray,
              out: np.ndarray, held: np.ndarray, silent: np.ndarray, hr: np.ndarray,
              br: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bed readings every ``bed_period_s`` at each bed's phase, as :class:`Simulation`."""
    period = sim.config.bed_period_s
    first = (offsets - int(t)) % period  # first reading's second in the chunk
    ks = first[:, None] + np.arange(0, c, period)[None, :]
    ei = np.repeat(np.arange(len(offsets)), ks.shape[1])
    ki = ks.ravel()
    keep = ki < c
    ei, ki = ei[keep], ki[keep]
    keep = ~silent[ei, ki, 1]
    ei, ki = ei[keep], ki[keep]
    order = np.lexsort((ei, ki))
    ei, ki = ei[order], ki[order]
    a = act[ei, ki]
    present = np.isin(a, list(IN_BED)) & ~out[ei, ki] & ~held[ei, ki]
    bed_hr, breath, movement = signals.bed_vitals(rng, hr[ei, ki], br[ei, ki], a)
    return {"elder": ei, "ts": t + ki.astype(np.float64), "presence": present,
            "hr": np.where(present, bed_hr, -1).astype(np.int64),
            "br": np.where(present, breath, np.nan),
            "movement": np.where(present, movement, 0.0)}


def _status_rows(sim: Simulation, state: dict[str, np.ndarray], t: float, c: int,
                 battery: np.ndarray, silent: np.ndarray) -> dict[str, np.ndarray]:
    """Status reports every ``status_period_s`` at each device's phase."""
    period = sim.config.status_period_s
    offsets = state["status_offset"]
    first = (offsets - int(t)) % period  # (n, 3)
    steps = np.arange(0, c, period)
    ks = first[:, :, None] + steps[None, None, :]
    ei, kind, j = np.nonzero(ks < c)
    ki = ks[ei, kind, j]
    flat = (kind == 0) & (battery[ei, ki] <= 0.0)
    keep = ~silent[ei, ki, kind] & ~flat
    ei, kind, ki = ei[keep], kind[keep], ki[keep]
    order = np.lexsort((kind, ei, ki))
    ei, kind, ki = ei[order], kind[order], ki[order]
    ts = t + ki.astype(np.float64)
    door = np.maximum(state["door_battery"][ei] - 0.5 * (ts - sim.config.start) / 86400.0, 1.0)
    level = np.where(kind == 0, battery[ei, ki], np.where(kind == 1, 100.0, door))
    return {"elder": ei, "kind": kind.astype(np.int64), "ts": ts, "battery": np.round(level, 1)}


# -- scoring --------------------------------------------------------------------------

GRACE_S = 900.0
"""A detection may come this long after a scenario's end (staleness checks, dwell times)."""
EARLY_S = 5.0
"""... or this long before its ``known`` time (clock rounding, frame boundaries)."""


def score(scenarios: Iterable[Scenario], detections: Iterable[tuple[str, str, float]], *,
          grace_s: float = GRACE_S, early_s: float = EARLY_S) -> dict[str, dict[str, float]]:
    """Recall and false alarms per detector kind, from ``(kind, elder, ts)`` detections.

    A scenario counts as detected when a detection of its ``kind`` for its elder lies in
    ``[known - early_s, end + grace_s]``. A detection that matches no scenario of its
    elder by kind (or by ``allowed`` within ``[start - early_s, end + grace_s]``) is a
    false alarm of its kind; one during a look-alike (``kind="none"``) also counts in
    ``look_alike_alarms``. Returns ``{kind: {"events", "detected", "recall",
    "false_alarms", "look_alike_alarms"}}``.
    """
    by_elder: dict[str, list[Scenario]] = {}
    for sc in scenarios:
        by_elder.setdefault(sc.elder, []).append(sc)
    hit: set[str] = set()
    out: dict[str, dict[str, float]] = {}

    def row(kind: str) -> dict[str, float]:
        return out.setdefault(kind, {"events": 0, "detected": 0, "recall": math.nan,
                                     "false_alarms": 0, "look_alike_alarms": 0})

    for kind, elder, ts in detections:
        matched, during_look_alike = False, False
        for sc in by_elder.get(elder, ()):
            if sc.kind == kind and sc.known - early_s <= ts <= sc.end + grace_s:
                hit.add(sc.id)
                matched = True
            elif kind in sc.allowed and sc.start - early_s <= ts <= sc.end + grace_s:
                matched = True
            elif sc.kind == "none" and sc.start - early_s <= ts <= sc.end + grace_s:
                during_look_alike = True
        if not matched:
            row(kind)["false_alarms"] += 1
            row(kind)["look_alike_alarms"] += during_look_alike
    for scs in by_elder.values():
        for sc in scs:
            if sc.kind != "none":
                r = row(sc.kind)
                r["events"] += 1
                r["detected"] += sc.id in hit
    for r in out.values():
        r["recall"] = r["detected"] / r["events"] if r["events"] else math.nan
    return out

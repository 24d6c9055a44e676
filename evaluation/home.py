"""A real home's log through the routine detectors: ``homecare replay events`` and
``homecare evaluate --home``.

The log (:mod:`evaluation.homelog`) is replayed on its own clock: its local times are the
detectors' local times (UTC offset 0), and the detectors see what the live service would
hand them, minute by minute, ``tick`` at each minute's end:

* contacts → ``door`` events (role: front, fridge, cupboard, …);
* motion sensors and appliances → ``motion`` events (detected/cleared, room);
* a chair mat → ``mat`` events (occupied/free);
* a bed mat → ``bed`` readings of presence, ``held`` (its state holds until the next
  event, where a bed sensor's readings are fresh for two minutes), with no ``movement``
  (a mat cannot tell it): what ``detect``'s batcher makes of a bed mat's events.

**Learned from the first days** (``learn_days``, default 7): the bed detectors' baselines
as the daily refit learns them (:func:`detectors.baselines.fit_baselines`: the usual wake
time and the end of the sleep window, the night-trip limit), the home inactivity limit per
local hour (:func:`detectors.inactivity.home_gaps`) and the bathroom limit
(:func:`detectors.bathroom.bathroom_visits`), from the signs of
:func:`detectors.baselines.home_signs`: the same code as the refit from InfluxDB. Nothing
else is set from the home: care level 2 (the default), the default 22:00 start of the sleep window.

**Evaluation.** False alarms: every alert after the learning days on the log as it is
(its days are ordinary days: nobody collapsed), per detector and per day. Detection delay:
``cuts`` copies of the log cut at random times after the learning days (every sensor
silent from then on, mats and motion turned off at the cut: :meth:`HomeLog.cut`), drawn
while the elder is at home (the last event before the cut is not the front door: out of
the house, a collapse would not be at home); all copies run side by side as rows of the
same detectors. The delay is from the cut to the copy's first alert of any kind; none
within ``horizon_s`` (12 h) is a miss.

>>> day, h = 86400.0, 3600.0
>>> events = []
>>> for t in np.arange(3) * day:  # in bed to 07:00, then the kitchen every 20 min
...     events += [(t, "bed", "mat", "bed", 1.0), (t + 7 * h, "bed", "mat", "bed", 0.0)]
...     events += [(t + 7 * h + 1200 * k, "pir", "motion", "kitchen", 1.0) for k in range(51)]
>>> log = HomeLog.of("demo", events)
>>> replay_home(log, learn_days=1, after_s=0)
[]
>>> [(a["kind"], a["local_time"]) for a in replay_home(log.cut(2 * day + 12 * h), learn_days=1)]
[('inactivity', '1970-01-03T13:11:00')]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import (
    DOOR_ROLES,
    MAT_PLACES,
    ROOMS,
    BatchStream,
    Detection,
    Detector,
    ReadingBatch,
    Roster,
    dispatch,
    tick_all,
)
from detectors.baselines import History, fit_baselines
from detectors.bathroom import BathroomDetector
from detectors.bed_exit import BedExitDetector
from detectors.care import DAY_S, Care
from detectors.inactivity import InactivityDetector
from detectors.morning import MorningDetector
from detectors.wandering import WanderingDetector
from evaluation.homelog import HomeLog
from homecare.thresholds import DetectorSettings

__all__ = ["HomeReport", "evaluate_home", "home_batches", "home_detectors", "replay_home"]

H = 3600.0
STEP_S = 60.0
FRONT = DOOR_ROLES.index("front")
CHAIR = MAT_PLACES.index("chair")


def home_detectors(thresholds: DetectorSettings | None = None) -> tuple[list[Any], Care]:
    """The routine detectors of a home, sharing one care table."""
    th = thresholds or DetectorSettings()
    care = Care(th.care)
    dets: list[Any] = [
        InactivityDetector(th.inactivity, care),
        WanderingDetector(th.wandering, care),
        BedExitDetector(th.bed_exit, care),
        MorningDetector(th.morning, care),
        BathroomDetector(th.bathroom, care),
    ]
    return dets, care


def home_batches(logs: Sequence[HomeLog]) -> dict[str, ReadingBatch]:
    """Every log's events as the detectors' batches, row *i* for ``logs[i]``, in time order."""
    parts: dict[str, list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], dict[str, Any]]]]
    parts = defaultdict(list)
    for row, log in enumerate(logs):
        contact = log.kind == "contact"
        if contact.any():
            role = np.array([DOOR_ROLES.index(str(p)) for p in log.place[contact]], np.float64)
            n = int(contact.sum())
            seq = np.arange(n, dtype=np.float64)
            parts[BatchStream.DOOR].append(
                (np.full(n, row, np.int64), log.ts[contact],
                 {"opened": log.value[contact], "role": role, "seq": seq})
            )  # fmt: skip
        motion = (log.kind == "motion") | (log.kind == "appliance")
        if motion.any():
            room = np.array([ROOMS.index(str(p)) for p in log.place[motion]], np.float64)
            parts[BatchStream.MOTION].append(
                (np.full(int(motion.sum()), row, np.int64), log.ts[motion],
                 {"detected": log.value[motion], "room": room})
            )  # fmt: skip
        chair = (log.kind == "mat") & (log.place != "bed")
        if chair.any():
            parts[BatchStream.MAT].append(
                (np.full(int(chair.sum()), row, np.int64), log.ts[chair],
                 {"occupied": log.value[chair], "place": np.full(int(chair.sum()), float(CHAIR))})
            )  # fmt: skip
        bed = (log.kind == "mat") & (log.place == "bed")
        if bed.any():
            n = int(bed.sum())
            parts[BatchStream.BED].append(
                (np.full(n, row, np.int64), log.ts[bed],
                 {"presence": log.value[bed], "movement": np.full(n, np.nan),
                  "held": np.ones(n)})
            )  # fmt: skip
    batches: dict[str, ReadingBatch] = {}
    for stream, got in parts.items():
        rows = np.concatenate([g[0] for g in got])
        ts = np.concatenate([g[1] for g in got])
        order = np.argsort(ts, kind="stable")
        values = {k: np.concatenate([g[2][k] for g in got])[order] for k in got[0][2]}
        batches[stream] = ReadingBatch(stream, rows[order], ts[order], values)
    return batches


def _history(log: HomeLog, end: float) -> History:
    """The log before ``end`` as the daily refit reads it from InfluxDB, where ingest
    stores a bed mat's events as ``mat`` points (place ``bed``), not as bed readings."""
    batches = home_batches([log])
    bed = batches.pop(BatchStream.BED, None)
    if bed is not None:
        mat = batches.get(BatchStream.MAT)
        place = np.full(len(bed), float(MAT_PLACES.index("bed")))
        rows, ts = np.r_[bed.rows], np.r_[bed.ts]
        occupied, places = bed.column("presence"), place
        if mat is not None:
            rows, ts = np.r_[mat.rows, rows], np.r_[mat.ts, ts]
            occupied = np.r_[mat.column("occupied"), occupied]
            places = np.r_[mat.column("place"), place]
        order = np.argsort(ts, kind="stable")
        batches[BatchStream.MAT] = ReadingBatch(
            BatchStream.MAT, rows[order], ts[order],
            {"occupied": occupied[order], "place": places[order]},
        )  # fmt: skip
    kept: dict[str, ReadingBatch] = {}
    for stream, b in batches.items():
        keep = b.ts < end
        kept[stream] = ReadingBatch(
            stream, b.rows[keep], b.ts[keep], {k: np.asarray(v)[keep] for k, v in b.values.items()}
        )
    start = float(log.ts[0]) if len(log) else end
    return History(("home",), start, end, kept)


def learn(log: HomeLog, dets: Sequence[Any], care: Care, *, learn_days: float) -> float:
    """Fit every detector's baselines on the log's first ``learn_days`` (row 0), the home
    limits included, as the daily refit learns them from InfluxDB
    (:func:`detectors.baselines.fit_baselines`); returns the end of the learning days."""
    start = float(log.ts[0]) if len(log) else 0.0
    end = start + learn_days * DAY_S
    fit_baselines(_history(log, end), dets, care, Roster())
    return end


_LEARNED = {
    InactivityDetector: ("learned", "weight", "home", "home_learned", "home_weight"),
    BedExitDetector: ("learned", "weight"),
    MorningDetector: ("learned", "weight"),
    BathroomDetector: ("learned", "weight"),
}


def _spread(dets: Sequence[Any], care: Care, n: int) -> None:
    """Give rows 1..n-1 row 0's baselines (the copies of one home share them)."""
    rows = np.arange(n)
    care.ensure(n)
    for name in ("sleep_start_s", "sleep_end_s", "level", "utc_offset_s"):
        getattr(care, name)[1:n] = getattr(care, name)[0]
    for det in dets:
        det.reserve(rows)
        for name in _LEARNED.get(type(det), ()):
            arr = getattr(det, name)
            arr[1:n] = arr[0]


def run(
    batches: dict[str, ReadingBatch], dets: Sequence[Detector[Any]], start: float, end: float
) -> list[Detection]:
    """Minute by minute from ``start`` to ``end``: each stream's entries of the minute,
    then ``tick`` at its end."""
    edges = np.arange(math.floor(start / STEP_S) * STEP_S, end + STEP_S, STEP_S)
    cuts = {s: np.searchsorted(b.ts, edges) for s, b in batches.items()}
    found: list[Detection] = []
    for k in range(len(edges) - 1):
        for stream, b in batches.items():
            lo, hi = cuts[stream][k], cuts[stream][k + 1]
            if hi > lo:
                part = ReadingBatch(
                    stream, b.rows[lo:hi], b.ts[lo:hi],
                    {name: np.asarray(v)[lo:hi] for name, v in b.values.items()},
                )  # fmt: skip
                found += dispatch(dets, part)
        found += tick_all(dets, float(edges[k + 1]))
    return found


def _alert(d: Detection) -> dict[str, Any]:
    local = datetime.fromtimestamp(d.ts, UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    return {"kind": d.kind, "severity": d.severity.value, "local_time": local, **d.evidence}


def replay_home(
    log: HomeLog,
    *,
    learn_days: float = 7.0,
    thresholds: DetectorSettings | None = None,
    after_s: float = 12 * H,
) -> list[dict[str, Any]]:
    """Replay one log with baselines learned from its first days; its alerts, in time order.
    The clock runs on ``after_s`` past the last event, so a silence at the end is judged."""
    if len(log) == 0:
        return []
    dets, care = home_detectors(thresholds)
    learn_end = learn(log, dets, care, learn_days=learn_days)
    found = run(home_batches([log]), dets, float(log.ts[0]),
                float(log.ts[-1]) + after_s)  # fmt: skip
    return [{**_alert(d), "learning": d.ts < learn_end} for d in sorted(found, key=lambda d: d.ts)]


@dataclass(frozen=True, slots=True)
class HomeReport:
    """What ``evaluate --home`` reports (as :meth:`as_dict`)."""

    log: str
    days: float
    learn_days: float
    judged_days: float
    false_alarms: dict[str, int]
    cuts: int
    delays_s: list[float]
    horizon_s: float
    by_kind: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        d = np.array(self.delays_s)
        found = d[np.isfinite(d)]
        total = sum(self.false_alarms.values())
        per_day = total / self.judged_days if self.judged_days > 0 else math.nan

        def share(limit: float) -> float:
            return round(float((d <= limit).mean()), 3) if len(d) else math.nan

        def q(p: float) -> float | None:
            if not len(d):
                return None
            v = float(np.quantile(np.where(np.isfinite(d), d, np.inf), p, method="lower"))
            return round(v / 60, 1) if math.isfinite(v) else None

        return {
            "log": self.log,
            "days": round(self.days, 2),
            "learn_days": self.learn_days,
            "judged_days": round(self.judged_days, 2),
            "false_alarms": self.false_alarms,
            "false_alarms_per_day": round(per_day, 3),
            "false_alarms_per_day_by_detector": {
                k: round(v / self.judged_days, 3) for k, v in self.false_alarms.items()
            },
            "cuts": self.cuts,
            "detected": len(found),
            "delay_median_min": q(0.5),
            "delay_p95_min": q(0.95),
            "within_2h": share(2 * H),
            "within_4h": share(4 * H),
            "horizon_h": self.horizon_s / H,
            "first_alert_by_detector": self.by_kind,
        }


def _at_home(log: HomeLog, t: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Whether the last sign before each time is not the front door (as the detectors see
    it: a motion sensor clearing is no sign)."""
    ambient = (log.kind == "motion") | (log.kind == "appliance")
    signs = ~(ambient & (log.value < 0.5))
    ts = log.ts[signs]
    front = ((log.kind == "contact") & (log.place == "front"))[signs]
    i = np.searchsorted(ts, t) - 1
    home: npt.NDArray[np.bool_] = (i >= 0) & ~front[np.maximum(i, 0)]
    return home


def evaluate_home(
    log: HomeLog,
    *,
    learn_days: float = 7.0,
    cuts: int = 200,
    seed: int = 0,
    horizon_s: float = 12 * H,
    thresholds: DetectorSettings | None = None,
) -> HomeReport:
    """False alarms on the log as it is, and the delay on ``cuts`` cut copies."""
    if len(log) < 2:
        raise ValueError(f"{log.name}: too few events to evaluate")
    first, last = float(log.ts[0]), float(log.ts[-1])
    learn_end = first + learn_days * DAY_S
    if learn_end >= last - horizon_s:
        raise ValueError(
            f"{log.name}: {(last - first) / DAY_S:.1f} days leave none to judge after "
            f"{learn_days} learning days and a {horizon_s / H:.0f} h horizon"
        )
    rng = np.random.default_rng(seed)
    at: list[float] = []
    while len(at) < cuts:
        t = rng.uniform(learn_end, last - horizon_s, 4 * cuts)
        at += t[_at_home(log, t)].tolist()
    cut_at = np.sort(np.array(at[:cuts]))
    logs = [log, *(log.cut(float(t)) for t in cut_at)]
    dets, care = home_detectors(thresholds)
    learn(log, dets, care, learn_days=learn_days)
    _spread(dets, care, len(logs))
    found = run(home_batches(logs), dets, first, last)
    false_alarms: dict[str, int] = defaultdict(int)
    first_alert = np.full(len(logs), np.inf)
    kind_of: dict[int, str] = {}
    for d in found:
        if d.row == 0:
            if d.ts >= learn_end:
                false_alarms[d.kind] += 1
            continue
        t = cut_at[d.row - 1]
        if t <= d.ts < first_alert[d.row]:
            first_alert[d.row] = d.ts
            kind_of[d.row] = d.kind
    delays = first_alert[1:] - cut_at
    delays[delays > horizon_s] = np.inf
    by_kind: dict[str, int] = defaultdict(int)
    for row, kind in kind_of.items():
        if np.isfinite(delays[row - 1]):
            by_kind[kind] += 1
    return HomeReport(
        log.name,
        (last - first) / DAY_S,
        learn_days,
        (last - learn_end) / DAY_S,
        {k: false_alarms.get(k, 0) for k in sorted({d.kind for d in dets} | set(false_alarms))},
        cuts,
        delays.tolist(),
        horizon_s,
        dict(sorted(by_kind.items())),
    )


def summary(report: dict[str, Any]) -> str:
    """The report in a few lines."""
    fa = ", ".join(f"{k} {v}" for k, v in report["false_alarms_per_day_by_detector"].items())
    return "\n".join([
        f"{report['log']}: {report['days']} days, baselines from the first "
        f"{report['learn_days']}, {report['judged_days']} days judged",
        f"false alarms per day: {report['false_alarms_per_day']} ({fa})",
        f"{report['cuts']} cut copies: detected {report['detected']}, delay median "
        f"{report['delay_median_min']} min, p95 {report['delay_p95_min']} min, within 2 h "
        f"{report['within_2h']:.0%}, within 4 h {report['within_4h']:.0%}",
    ])  # fmt: skip

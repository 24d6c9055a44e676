"""Personal baselines learned from history in InfluxDB, refitted daily, applied by ``detect``.

Four detectors learn a personal limit from each elder's past (their ``fit`` methods):
inactivity (how long they usually go without a sign of activity, per local hour; in a
home with motion sensors or mats also how long at home off the mats), bed exit (how long
their night trips usually take), not up in the morning (their usual wake time) and too
long in the bathroom (the silence after their past visits; :func:`home_signs` and
:func:`fit_home_limits`, the same code the replay of a home log learns with). Fitting
10,000 elders takes minutes of CPU, so it runs apart from detection: a daily
``homecare baselines fit`` (cron or a compose loop) reads the last ``days`` of history
(:func:`history_from_influx`), fits (:func:`fit_baselines`) and writes
``<state_dir>/baselines.npz`` atomically (:func:`save_baselines`); the long-running
``homecare detect`` polls the file's mtime (:class:`BaselineFile`) and applies it
(:func:`load_baselines`) between batches, in milliseconds.

**Queries** (:func:`history_from_influx`): per group of ``chunk`` elders, one HTTP request
of five InfluxQL statements over ``[end - days, end)``, aligned to whole minutes:

* ``wearable``: per minute ``max(mag_std)`` and ``max(steps)``, filtered in a subquery to
  the minutes that hold a sign (``max(mag_std) >= move_g OR max(steps) > 0``: the rule of
  :func:`~detectors.inactivity.activity_signs`, pushed down so still minutes never travel);
* ``bed``: per minute ``mode(presence)`` (the majority state; ``fill(none)``, so a silent
  sensor stays silent, as at run time);
* ``door``: every event as stored (``seq``, ``opened``, by ``role``; a few dozen a day);
* ``motion`` and ``mat``: every event as stored (``detected`` by ``room``, ``occupied`` by
  ``place``; a fitted home's few hundred a day).

Elders are chosen with ``elder = '…' OR …`` (the tag index answers it; no regex), and when
none are given they come from one ``SHOW TAG VALUES``. Cost per elder and day of history:
InfluxDB reads every stored point (86,400 wearable, 2,880-8,640 bed) but returns at most
1,440 bed rows, the wearable minutes with a sign (typically 200-800) and the door events:
~2-3k rows, ~60-85k for 28 days (~1-2 MB of JSON). The scan, not the transfer, dominates:
~2.5 M points per elder for 28 days. :meth:`History.extend` therefore lets a daily refit
query only the new day and keep the older 27 from its own cache (:func:`save_history`).
Fitting then costs ~25 ms per elder (the inactivity quantile regression; the rest is numpy).

The arrays are the same ones the detectors see live (:class:`~detectors.base.ReadingBatch`),
so the sign, trip and wake rules are the detectors' own functions, at one-minute
resolution. Learned limits stay clipped to the care level's bounds at run time; an elder
with no history keeps the care-level defaults; ``fit`` resets the limits of every elder
in the history first, so a refit depends only on the history (and is idempotent).

>>> from detectors.care import Care
>>> care, roster = Care(), Roster()
>>> dets = [MorningDetector(care=care)]
>>> days = np.arange(14) * DAY_S
>>> up = days + 6.5 * H  # out of bed at 06:30 every day, back at 22:00
>>> bed = ReadingBatch("bed", np.zeros(28, np.int64), np.sort(np.r_[up, days + 22 * H]),
...                    {"presence": np.tile([0.0, 1.0], 14)})
>>> history = History(("e1",), 0.0, 14 * DAY_S, {"bed": bed})
>>> learned = fit_baselines(history, dets, care, roster)
>>> float(dets[0].usual_wake_s(np.array([0]))[0]) / H, float(learned.sleep_end_s[0]) / H
(6.5, 6.25)
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from detectors.base import (
    DOOR_ROLES,
    MAT_PLACES,
    ROOMS,
    BatchStream,
    Bools,
    ReadingBatch,
    Roster,
    Rows,
    Times,
    group_quantile,
)
from detectors.bathroom import BathroomDetector, bathroom_signs, bathroom_visits
from detectors.bed_exit import BedExitDetector, night_trips
from detectors.care import DAY_S, Care
from detectors.inactivity import (
    InactivityDetector,
    InactivitySettings,
    activity_signs,
    gaps_from_signs,
    home_gaps,
)
from detectors.morning import MorningDetector, wake_times
from homecare import query as q
from homecare.influx import InfluxClient
from homecare.schema import ELDER, Bed, Door, Mat, Motion, Wearable
from homecare.settings import Settings

__all__ = [
    "BaselineFile",
    "Baselines",
    "FitSettings",
    "History",
    "apply_baselines",
    "baselines_path",
    "bed_presence",
    "fit_baselines",
    "fit_home_limits",
    "history_from_influx",
    "home_signs",
    "list_elders",
    "load_baselines",
    "load_history",
    "read_baselines",
    "refit",
    "save_baselines",
    "save_history",
]

log = logging.getLogger(__name__)

H = 3600.0
BIN_S = 60
"""Resolution of the history: one row per elder and minute (signs, bed state)."""
FORMAT = 1
"""Version of the ``.npz`` layouts; a file of another version is refused."""
_STREAMS = (BatchStream.WEARABLE, BatchStream.BED, BatchStream.DOOR, BatchStream.MOTION,
            BatchStream.MAT)  # fmt: skip
_FRONT = DOOR_ROLES.index("front")
_BED_MAT = MAT_PLACES.index("bed")


@dataclass(frozen=True, slots=True)
class FitSettings:
    """How the history becomes baselines beyond each detector's own settings."""

    max_gap_s: float = 12 * H
    """Gaps without any sign longer than this are absences or outages, not stillness: they
    are left out of the inactivity fit (above every care level's maximum anyway)."""
    sleep_end_quantile: float = 0.1
    """The sleep window ends at this early quantile of the wake times, less
    ``sleep_end_margin_s``: getting up for the day after it is not a night trip on most
    days. (Ending it at the usual — 0.9 — wake time would make every earlier getting-up a
    night trip, and a bed-exit warning once it outlasts the trip limit.)"""
    sleep_end_z: float = 2.33
    """… and never later than the median wake time less this many robust standard
    deviations (1.4826 × the median absolute deviation): with 2-4 weeks of history the 0.1
    quantile is the second or third earliest day, and about one morning in 25-30 still
    came earlier than it less the margin, a bed-exit false alarm once the trip limit
    passes (measured on the simulated cohort with 14 days fitted: 0.9 per elder-month).
    2.33 puts about 1 % of normally spread mornings before the end; the median and the
    deviation are robust to a single exceptional day."""
    sleep_end_margin_s: float = 15 * 60.0
    earliest_sleep_end_s: float = 4 * H
    """The learned sleep window never ends before this (local)."""


@dataclass(frozen=True, slots=True)
class History:
    """What the fits need, for ``elders`` over ``[start, end)``: one
    :class:`ReadingBatch` per stream (``wearable`` sign minutes with ``mag_std``/``steps``,
    ``bed`` minutes with ``presence``, ``door`` events), rows indexing ``elders``.

    ``queries`` and ``rows_read`` count what InfluxDB was asked and answered."""

    elders: tuple[str, ...]
    start: float
    end: float
    batches: dict[str, ReadingBatch] = field(default_factory=dict)
    queries: int = 0
    rows_read: int = 0

    def batch(self, stream: str) -> ReadingBatch:
        """The stream's batch, empty if the history has none."""
        found = self.batches.get(stream)
        if found is None:
            return ReadingBatch(stream, np.zeros(0, np.int64), np.zeros(0), {})
        return found

    def extend(self, newer: History, *, days: float) -> History:
        """This history with ``newer`` appended (from ``newer.start`` on it wins) and
        everything before ``newer.end - days`` dropped: a daily refit queries one day."""
        elders = list(self.elders)
        index = {e: i for i, e in enumerate(elders)}
        for e in newer.elders:
            if e not in index:
                index[e] = len(elders)
                elders.append(e)
        remap = np.array([index[e] for e in newer.elders], np.int64)
        keep_from = newer.end - days * DAY_S
        batches: dict[str, ReadingBatch] = {}
        for stream in _STREAMS:
            old, new = self.batch(stream), newer.batch(stream)
            keep = (old.ts >= keep_from) & (old.ts < newer.start)
            names = sorted(set(old.values) | set(new.values))
            batches[stream] = ReadingBatch(
                stream,
                np.r_[old.rows[keep], remap[new.rows]].astype(np.int64),
                np.r_[old.ts[keep], new.ts],
                {n: np.r_[old.column(n)[keep], new.column(n)] for n in names},
            )
        return History(
            tuple(elders),
            max(min(self.start, newer.start), keep_from),
            newer.end,
            batches,
            self.queries + newer.queries,
            self.rows_read + newer.rows_read,
        )


def list_elders(db: InfluxClient) -> list[str]:
    """Every elder with wearable, bed, door, motion or mat data (one ``SHOW TAG VALUES``):
    a home with ambient sensors only is an elder too."""
    found: set[str] = set()
    measurements = [Wearable.name, Bed.name, Door.name, Motion.name, Mat.name]
    for series in db.query(q.show_tag_values(measurements, ELDER)):
        found.update(str(v[1]) for v in series.get("values", []))
    return sorted(found)


def _statements(elders: Sequence[str], start_ms: int, end_ms: int, move_g: float) -> str:
    w, minute = Wearable, q.time(f"{BIN_S}s")
    who = q.any_of(ELDER, elders)
    per_minute = (
        q.select(w.name, q.call("max", w.mag_std, alias=w.mag_std),
                 q.call("max", w.steps, alias=w.steps))
        .between(start_ms, end_ms)
        .where(who)
        .group_by(minute, ELDER)
        .fill("none")
    )  # fmt: skip
    moved = f"({q.compare(w.mag_std, '>=', move_g)} OR {q.compare(w.steps, '>', 0)})"
    statements = (
        q.select(per_minute, q.field(w.mag_std), q.field(w.steps)).where(moved).group_by(ELDER),
        q.select(Bed.name, q.call("mode", Bed.presence, alias=Bed.presence))
        .between(start_ms, end_ms)
        .where(who)
        .group_by(minute, ELDER)
        .fill("none"),
        q.select(Door.name, q.field(Door.seq), q.field(Door.opened))
        .between(start_ms, end_ms)
        .where(who)
        .group_by(ELDER, Door.role),
        q.select(Motion.name, q.field(Motion.detected))
        .between(start_ms, end_ms)
        .where(who)
        .group_by(ELDER, Motion.room),
        q.select(Mat.name, q.field(Mat.occupied))
        .between(start_ms, end_ms)
        .where(who)
        .group_by(ELDER, Mat.place),
    )
    return ";".join(str(statement) for statement in statements)


def _value(v: Any) -> float:
    return np.nan if v is None else float(v)


_TAG_INDEX: dict[str, tuple[str, ...]] = {
    Door.role: DOOR_ROLES, Motion.room: ROOMS, Mat.place: MAT_PLACES,
}


def _index(names: Sequence[str], value: Any) -> float:
    return float(names.index(str(value))) if str(value) in names else np.nan


def history_from_influx(
    db: InfluxClient,
    *,
    days: float = 28,
    end: float | None = None,
    elders: list[str] | None = None,
    chunk: int = 25,
    settings: InactivitySettings | None = None,
) -> History:
    """Read ``days`` of history before ``end`` (default now, both cut to whole minutes) for
    ``elders`` (default: all in the database), ``chunk`` elders per request.

    ``chunk`` bounds one answer at ~``chunk`` × 3k rows per day of history (25 elders and
    28 days: ~2 M rows, ~50 MB of JSON); ``settings`` gives the wearable movement
    threshold pushed down to InfluxDB (use the inactivity detector's)."""
    s = settings or InactivitySettings()
    end_s = (time.time() if end is None else end) // BIN_S * BIN_S
    start_s = (end_s - days * DAY_S) // BIN_S * BIN_S
    ids = list_elders(db) if elders is None else list(dict.fromkeys(elders))
    queries = int(elders is None)
    index = {e: i for i, e in enumerate(ids)}
    parts: dict[str, list[tuple[list[int], list[float], dict[str, list[float]]]]] = {
        k: [] for k in _STREAMS
    }
    rows_read = 0
    for lo in range(0, len(ids), chunk):
        text = _statements(ids[lo : lo + chunk], int(start_s * 1000), int(end_s * 1000), s.move_g)
        queries += 1
        for series in db.query(text):
            stream = series["name"]
            row = index[(series.get("tags") or {})[ELDER]]
            cols = series["columns"]
            values = series["values"]
            rows_read += len(values)
            named = {c: [_value(v[i]) for v in values] for i, c in enumerate(cols) if i > 0}
            tags = series.get("tags") or {}
            for tag, labels in _TAG_INDEX.items():  # a place tag as the detectors' index
                if tag in tags:
                    named[tag] = [_index(labels, tags[tag])] * len(values)
            parts[stream].append(([row] * len(values), [v[0] / 1000 for v in values], named))
    batches: dict[str, ReadingBatch] = {}
    for stream, got in parts.items():
        if not got:
            continue
        names = sorted({n for _, _, named in got for n in named})
        batches[stream] = ReadingBatch(
            stream,
            np.fromiter((r for rows, _, _ in got for r in rows), np.int64),
            np.fromiter((t for _, ts, _ in got for t in ts), np.float64),
            {n: np.array([v for _, _, named in got for v in named[n]], np.float64) for n in names},
        )
    return History(tuple(ids), float(start_s), float(end_s), batches, queries, rows_read)


@dataclass(frozen=True, slots=True)
class Baselines:
    """Learned per-elder arrays (row *i* is ``elders[i]``; NaN where nothing was learned):
    the inactivity limit per local hour, the bed-exit limit, the usual wake time, each with
    its weight against the care default, and the learned end of the sleep window."""

    elders: tuple[str, ...]
    inactivity: npt.NDArray[np.float32]
    inactivity_weight: npt.NDArray[np.float32]
    bed_exit: npt.NDArray[np.float32]
    bed_exit_weight: npt.NDArray[np.float32]
    wake: npt.NDArray[np.float32]
    wake_weight: npt.NDArray[np.float32]
    sleep_end_s: npt.NDArray[np.float64]
    utc_offset_s: npt.NDArray[np.float32]
    """The offsets the local hours were learned in (detect should use the same)."""
    fitted_at: float
    history_start: float
    history_end: float
    home: npt.NDArray[np.bool_] | None = None
    """Fitted homes (motion or mat history); with their learned at-home, off-the-mats
    limit per local hour and the bathroom limit (None: a file from before them)."""
    home_inactivity: npt.NDArray[np.float32] | None = None
    home_inactivity_weight: npt.NDArray[np.float32] | None = None
    bathroom: npt.NDArray[np.float32] | None = None
    bathroom_weight: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self.elders)


D = TypeVar("D")


def _find(detectors: Iterable[object], cls: type[D]) -> D | None:
    return next((d for d in detectors if isinstance(d, cls)), None)


def _bed_signs(bed: ReadingBatch, rows: Rows, s: InactivitySettings) -> tuple[Rows, Times]:
    """In-bed readings and getting out of bed (the first reading without presence after
    one with), as the inactivity detector counts them live."""
    order = np.lexsort((bed.ts, rows))
    r, t = rows[order], bed.ts[order]
    p = bed.column(Bed.presence)[order] > 0.5
    sign = activity_signs(ReadingBatch(BatchStream.BED, r, t, {Bed.presence: p}), s)
    sign |= ~p & np.r_[False, p[:-1] & (r[1:] == r[:-1])]
    return r[sign], t[sign]


def bed_presence(history: History) -> tuple[Rows, Times, npt.NDArray[np.float64]]:
    """Bed presence over time (history rows, ts, presence 0/1, any order) for the bed
    detectors' fits: the bed sensor's minutes and a bed mat's occupied/free events, as
    detect's batcher hands both to them live (a home with a bed mat and no bed sensor
    learns its wake times and night trips too). A mat's state holds until its next event,
    so each bed mat's last state is repeated at the history's end: the stretch out of bed
    that began with its last event lasts to the end, as a bed sensor's minutes would."""
    bed, mat = history.batch(BatchStream.BED), history.batch(BatchStream.MAT)
    on_bed = np.flatnonzero(mat.column(Mat.place) == _BED_MAT)
    order = on_bed[np.lexsort((mat.ts[on_bed], mat.rows[on_bed]))]
    r, t, p = mat.rows[order], mat.ts[order], mat.column(Mat.occupied)[order]
    last = np.flatnonzero(np.r_[r[1:] != r[:-1], True])[: len(r)]
    last = last[t[last] < history.end]
    return (
        np.r_[bed.rows, r, r[last]].astype(np.int64),
        np.r_[bed.ts, t, np.full(len(last), history.end)],
        np.r_[bed.column(Bed.presence), p, p[last]],
    )


def home_signs(
    batches: dict[str, ReadingBatch] | History, rows_of: Rows
) -> tuple[Rows, Times, Bools, Bools, Bools] | None:
    """A fitted home's signs of life, in time order per row: (row, ts, a mat or the bed
    occupied after it, the front door, in the bathroom). Motion detected (a PIR clearing,
    its timeout, is no sign), every door or contact event, every change of a mat or of the
    bed's presence; ``rows_of`` maps the batches' rows. None when no home has ambient
    sensors (no motion and no mat events): the home limits are then not learned.

    The replay of a home log (:func:`evaluation.home.learn`) and the daily refit from
    InfluxDB learn from these the same way (:func:`fit_home_limits`)."""
    get = batches.batch if isinstance(batches, History) else (
        lambda k: batches.get(k) or ReadingBatch(k, np.zeros(0, np.int64), np.zeros(0), {}))
    motion, mat = get(BatchStream.MOTION), get(BatchStream.MAT)
    if not len(motion) and not len(mat):
        return None
    door, bed = get(BatchStream.DOOR), get(BatchStream.BED)
    parts: list[tuple[Any, ...]] = []  # rows, ts, mat key (-1: none), occupied, front, bathroom
    detected = motion.column("detected") > 0.5
    parts.append((motion.rows[detected], motion.ts[detected], -1, detected[detected],
                  np.zeros(int(detected.sum()), bool), bathroom_signs(motion)[detected]))
    parts.append((door.rows, door.ts, -1, np.zeros(len(door), bool),
                  door.column("role") == _FRONT, bathroom_signs(door)))
    place = np.nan_to_num(mat.column("place"), nan=len(MAT_PLACES)).astype(np.int64)
    parts.append((mat.rows, mat.ts, place, mat.column("occupied") > 0.5,
                  np.zeros(len(mat), bool), np.zeros(len(mat), bool)))
    if len(bed):  # the bed's presence where it changes (a sensor repeats it every few s)
        order = np.lexsort((bed.ts, bed.rows))
        r, t, p = bed.rows[order], bed.ts[order], bed.column(Bed.presence)[order] > 0.5
        change = np.r_[True, (r[1:] != r[:-1]) | (p[1:] != p[:-1])]
        parts.append((r[change], t[change], len(MAT_PLACES) + 1, p[change],
                      np.zeros(int(change.sum()), bool), np.zeros(int(change.sum()), bool)))
    rows = np.concatenate([rows_of[pt[0]] for pt in parts])
    ts = np.concatenate([pt[1] for pt in parts])
    key = np.concatenate([np.broadcast_to(np.asarray(pt[2]), len(pt[0])) for pt in parts])
    occ = np.concatenate([np.asarray(pt[3], bool) for pt in parts])
    front = np.concatenate([np.asarray(pt[4], bool) for pt in parts])
    bath = np.concatenate([np.asarray(pt[5], bool) for pt in parts])
    order = np.lexsort((ts, rows))
    rows, ts, key, occ, front, bath = (a[order] for a in (rows, ts, key, occ, front, bath))
    # each mat's state after every sign (its last event in the row), any of them occupied
    idx = np.arange(len(ts))
    first = np.maximum.accumulate(np.where(np.r_[True, rows[1:] != rows[:-1]], idx, 0))
    on_mat = np.zeros(len(ts), bool)
    for k in np.unique(key[key >= 0]).tolist():
        last = np.maximum.accumulate(np.where(key == k, idx, -1))
        mine = last >= first
        on_mat[mine] |= occ[last[mine]]
    return rows, ts, on_mat, front, bath


def fit_home_limits(
    signs: tuple[Rows, Times, Bools, Bools, Bools] | None,
    inactivity: InactivityDetector | None,
    bathroom: BathroomDetector | None,
) -> None:
    """Learn the home limits from :func:`home_signs`: the inactivity detector's at-home,
    off-the-mats silence per local hour (:func:`~detectors.inactivity.home_gaps`) and the
    bathroom detector's limit (:func:`~detectors.bathroom.bathroom_visits`)."""
    if signs is None:
        return
    rows, ts, on_mat, front, bath = signs
    if inactivity is not None:
        inactivity.fit_home(*home_gaps(rows, ts, on_mat, front))
    if bathroom is not None:
        bathroom.fit(*bathroom_visits(rows, ts, bath, on_mat))


def fit_baselines(
    history: History,
    detectors: Iterable[object],
    care: Care,
    roster: Roster,
    *,
    settings: FitSettings | None = None,
) -> Baselines:
    """Fit the inactivity, bed-exit and morning detectors among ``detectors`` (those absent
    are skipped) on ``history``, set the learned sleep windows in ``care``, and return what
    was learned. Elders get rows in ``roster``; every elder of the history is re-learned
    from scratch (no data: back to the care defaults). ``care`` must be the detectors'."""
    fs = settings or FitSettings()
    dets = list(detectors)
    inactivity = _find(dets, InactivityDetector)
    bed_exit = _find(dets, BedExitDetector)
    morning = _find(dets, MorningDetector)
    bathroom = _find(dets, BathroomDetector)
    for det in (inactivity, bed_exit, morning, bathroom):
        if det is not None and det.care is not care:
            raise ValueError(f"{type(det).__name__} does not share the care table given")
    rows_of = roster.rows(history.elders)
    n = len(rows_of)
    care.ensure(int(rows_of.max(initial=-1)) + 1)
    bed = history.batch(BatchStream.BED)
    # the bed detectors' presence: the bed sensor's and a bed mat's (the inactivity fit
    # keeps the bed sensor's alone: a home's mats are learned by fit_home_limits)
    presence_rows, bed_ts, bed_p = bed_presence(history)
    bed_rows = rows_of[presence_rows]
    sleep_end = np.full(n, np.nan)

    if morning is not None:
        morning.reserve(rows_of)
        morning.learned[rows_of], morning.weight[rows_of] = np.nan, 0.0
        # (wake_times fails on no readings at all)
        if len(bed_ts):
            wr, _day, local = wake_times(bed_rows, bed_ts, bed_p, care, morning.settings)
        else:
            wr, local = np.zeros(0, np.int64), np.zeros(0)
        morning.fit(wr, local)
        # history-local rows of the wake times, for the early quantile
        local_row = np.full(int(rows_of.max(initial=-1)) + 1, -1, np.int64)
        local_row[rows_of] = np.arange(n)
        lr = local_row[wr]
        early, counts = group_quantile(lr, local, fs.sleep_end_quantile, n)
        median, _ = group_quantile(lr, local, 0.5, n)
        spread, _ = group_quantile(lr, np.abs(local - median[lr]), 0.5, n)
        early = np.fmin(early, median - fs.sleep_end_z * 1.4826 * spread)
        has = counts > 0
        end_s = np.maximum(early[has] - fs.sleep_end_margin_s, fs.earliest_sleep_end_s)
        sleep_end[has] = np.round(end_s)  # whole seconds: the care table holds float32
        if has.any():
            r = rows_of[has]
            care.set_sleep_windows(r, care.sleep_start_s[r], sleep_end[has])

    if bed_exit is not None:  # after the sleep windows: trips are out of bed inside them
        bed_exit.reserve(rows_of)
        bed_exit.learned[rows_of], bed_exit.weight[rows_of] = np.nan, 0.0
        if len(bed_ts):
            tr, _start, duration = night_trips(
                bed_rows, bed_ts, bed_p, care, bed_exit.settings.max_trip_s
            )
            bed_exit.fit(tr, duration)

    if inactivity is not None:
        inactivity.reserve(rows_of)
        inactivity.learned[rows_of], inactivity.weight[rows_of] = np.nan, 0.0
        s = inactivity.settings
        in_bed_rows, in_bed_ts = _bed_signs(bed, rows_of[bed.rows], s)
        sign_rows, sign_ts = [in_bed_rows], [in_bed_ts]
        for stream in (BatchStream.WEARABLE, BatchStream.DOOR):
            b = history.batch(stream)
            sign = activity_signs(b, s)
            sign_rows.append(rows_of[b.rows[sign]])
            sign_ts.append(b.ts[sign])
        gr, gs, gl = gaps_from_signs(np.concatenate(sign_rows), np.concatenate(sign_ts))
        ok = gl <= fs.max_gap_s
        inactivity.fit(gr[ok], gs[ok], gl[ok])
        inactivity.home[rows_of] = False
        inactivity.home_learned[rows_of], inactivity.home_weight[rows_of] = np.nan, 0.0
    if bathroom is not None:
        bathroom.reserve(rows_of)
        bathroom.learned[rows_of], bathroom.weight[rows_of] = np.nan, 0.0
    fit_home_limits(home_signs(history, rows_of), inactivity, bathroom)

    return _collect(history, rows_of, inactivity, bed_exit, morning, care, sleep_end, bathroom)


def _collect(
    history: History,
    rows: Rows,
    inactivity: InactivityDetector | None,
    bed_exit: BedExitDetector | None,
    morning: MorningDetector | None,
    care: Care,
    sleep_end: npt.NDArray[np.float64],
    bathroom: BathroomDetector | None = None,
) -> Baselines:
    n = len(rows)

    def take(det: Any, name: str, shape: tuple[int, ...] = ()) -> npt.NDArray[np.float32]:
        if det is None:
            return np.full((n, *shape), np.nan if not name.endswith("weight") else 0.0,
                           np.float32)
        return np.array(getattr(det, name)[rows], np.float32)

    return Baselines(
        history.elders,
        take(inactivity, "learned", (24,)),
        take(inactivity, "weight"),
        take(bed_exit, "learned"),
        take(bed_exit, "weight"),
        take(morning, "learned"),
        take(morning, "weight"),
        sleep_end,
        np.array(care.utc_offset_s[rows], np.float32),
        time.time(),
        history.start,
        history.end,
        take(inactivity, "home").astype(bool) if inactivity is not None else np.zeros(n, bool),
        take(inactivity, "home_learned", (24,)),
        take(inactivity, "home_weight"),
        take(bathroom, "learned"),
        take(bathroom, "weight"),
    )


def _atomic_savez(path: Path, arrays: dict[str, Any], *, compress: bool = False) -> None:
    """Write an ``.npz`` beside ``path`` and rename it over: a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_baselines(path: Path | str, baselines: Baselines) -> None:
    """Write the baselines atomically (``detect`` may be reading the previous file)."""
    b = baselines
    _atomic_savez(
        Path(path),
        {
            "format": np.array(FORMAT),
            "elders": np.array(b.elders, dtype=np.str_),
            "inactivity": b.inactivity,
            "inactivity_weight": b.inactivity_weight,
            "bed_exit": b.bed_exit,
            "bed_exit_weight": b.bed_exit_weight,
            "wake": b.wake,
            "wake_weight": b.wake_weight,
            "sleep_end_s": b.sleep_end_s,
            "utc_offset_s": b.utc_offset_s,
            "times": np.array([b.fitted_at, b.history_start, b.history_end]),
            **{name: getattr(b, name) for name in _HOME_ARRAYS if getattr(b, name) is not None},
        },
    )


_HOME_ARRAYS = ("home", "home_inactivity", "home_inactivity_weight", "bathroom",
                "bathroom_weight")  # fmt: skip


def read_baselines(path: Path | str) -> Baselines:
    """The baselines in a file written by :func:`save_baselines`."""
    with np.load(Path(path), allow_pickle=False) as z:
        if int(z["format"]) != FORMAT:
            raise ValueError(f"{path}: baselines format {int(z['format'])}, expected {FORMAT}")
        fitted_at, start, end = (float(x) for x in z["times"])
        return Baselines(
            tuple(str(e) for e in z["elders"]),
            z["inactivity"],
            z["inactivity_weight"],
            z["bed_exit"],
            z["bed_exit_weight"],
            z["wake"],
            z["wake_weight"],
            z["sleep_end_s"],
            z["utc_offset_s"],
            fitted_at,
            start,
            end,
            *(z[name] if name in z.files else None for name in _HOME_ARRAYS),
        )


def apply_baselines(
    baselines: Baselines, detectors: Iterable[object], care: Care, roster: Roster
) -> Rows:
    """Put learned limits into the detectors and sleep windows into ``care``; elders not
    yet in ``roster`` get rows. Returns the rows set."""
    b = baselines
    rows = roster.rows(b.elders)
    if len(rows) == 0:
        return rows
    care.ensure(int(rows.max()) + 1)
    dets = list(detectors)
    pairs: list[tuple[Any, npt.NDArray[np.float32], npt.NDArray[np.float32]]] = [
        (_find(dets, InactivityDetector), b.inactivity, b.inactivity_weight),
        (_find(dets, BedExitDetector), b.bed_exit, b.bed_exit_weight),
        (_find(dets, MorningDetector), b.wake, b.wake_weight),
    ]
    if b.bathroom is not None and b.bathroom_weight is not None:
        pairs.append((_find(dets, BathroomDetector), b.bathroom, b.bathroom_weight))
    for det, learned, weight in pairs:
        if det is not None:
            det.reserve(rows)
            det.learned[rows] = learned
            det.weight[rows] = weight
    inactivity = _find(dets, InactivityDetector)
    if inactivity is not None and b.home is not None and b.home_inactivity is not None \
            and b.home_inactivity_weight is not None:
        inactivity.home[rows] |= b.home  # a home stays one (its live events say so too)
        inactivity.home_learned[rows] = b.home_inactivity
        inactivity.home_weight[rows] = b.home_inactivity_weight
    has = ~np.isnan(b.sleep_end_s)
    if has.any():
        r = rows[has]
        care.set_sleep_windows(r, care.sleep_start_s[r], b.sleep_end_s[has])
    moved = np.abs(care.utc_offset_s[rows] - b.utc_offset_s) > 60
    if moved.any():
        log.warning(
            "%d elders' UTC offsets differ from those their baselines were learned in "
            "(e.g. %s); refit with the same care plan",
            int(moved.sum()),
            b.elders[int(np.flatnonzero(moved)[0])],
        )
    return rows


def load_baselines(
    path: Path | str, detectors: Iterable[object], care: Care, roster: Roster
) -> Baselines:
    """Read a baselines file and apply it (:func:`apply_baselines`)."""
    b = read_baselines(path)
    apply_baselines(b, detectors, care, roster)
    return b


class BaselineFile:
    """The baselines file as ``detect`` sees it: reloaded when its mtime or size changes.

    :meth:`poll` costs one ``stat`` at most every ``check_every_s``; a file that cannot be
    read is logged once and the limits already applied stay."""

    def __init__(self, path: Path | str, *, check_every_s: float = 30.0) -> None:
        self.path = Path(path)
        self.check_every_s = check_every_s
        self._seen: tuple[int, int] | None = None
        self._next = 0.0

    def poll(
        self, detectors: Iterable[object], care: Care, roster: Roster, *, now: float | None = None
    ) -> Baselines | None:
        """Apply the file if it changed since the last call; what was applied, or None."""
        t = time.monotonic() if now is None else now
        if t < self._next:
            return None
        self._next = t + self.check_every_s
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._seen:
            return None
        self._seen = stamp
        try:
            b = load_baselines(self.path, detectors, care, roster)
        except Exception as exc:  # a bad file must not stop detection: keep the limits
            log.warning("baselines in %s not applied: %s", self.path, exc)
            return None
        log.info("applied baselines of %d elders from %s", len(b), self.path)
        return b


def save_history(path: Path | str, history: History) -> None:
    """Cache a history (atomically), so tomorrow's refit queries only one new day."""
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT),
        "elders": np.array(history.elders, dtype=np.str_),
        "span": np.array([history.start, history.end]),
    }
    for stream, b in history.batches.items():
        arrays[f"{stream}.rows"] = b.rows
        arrays[f"{stream}.ts"] = b.ts
        for name, column in b.values.items():
            arrays[f"{stream}.{name}"] = np.asarray(column, np.float64)
    _atomic_savez(Path(path), arrays, compress=True)


def load_history(path: Path | str) -> History:
    """A history cached by :func:`save_history`."""
    with np.load(Path(path), allow_pickle=False) as z:
        if int(z["format"]) != FORMAT:
            raise ValueError(f"{path}: history format {int(z['format'])}, expected {FORMAT}")
        batches: dict[str, ReadingBatch] = {}
        for stream in _STREAMS:
            if f"{stream}.rows" not in z:
                continue
            prefix = f"{stream}."
            values = {
                k[len(prefix) :]: z[k]
                for k in z.files
                if k.startswith(prefix) and k not in (f"{stream}.rows", f"{stream}.ts")
            }
            batches[stream] = ReadingBatch(stream, z[f"{stream}.rows"], z[f"{stream}.ts"], values)
        start, end = (float(x) for x in z["span"])
        return History(tuple(str(e) for e in z["elders"]), start, end, batches)


def baselines_path(settings: Settings) -> Path:
    """Where ``homecare baselines fit`` writes and ``detect`` reads: under ``state_dir``."""
    return settings.state_dir / "baselines.npz"


def refit(
    settings: Settings,
    *,
    days: float = 28,
    end: float | None = None,
    path: Path | None = None,
    cached: bool = True,
    overlap_s: float = 3 * H,
    chunk: int = 25,
) -> dict[str, float]:
    """The daily job: history from InfluxDB (only what the cache beside ``path`` lacks,
    plus ``overlap_s`` for late data), fit fresh detectors, write ``path`` atomically.
    Returns figures for the log."""
    out = path or baselines_path(settings)
    cache = out.with_name(out.stem + ".history.npz")
    end_s = (time.time() if end is None else end) // BIN_S * BIN_S
    old: History | None = None
    if cached and cache.exists():
        try:
            old = load_history(cache)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("history cache %s ignored: %s", cache, exc)
        if old is not None and not end_s - days * DAY_S < old.end <= end_s:
            old = None  # too old to help, or from the future (a replay): query it all
    t0 = time.perf_counter()
    th = settings.detectors
    care = Care(th.care)
    detectors = [
        InactivityDetector(th.inactivity, care),
        BedExitDetector(th.bed_exit, care),
        MorningDetector(th.morning, care),
        BathroomDetector(th.bathroom, care),
    ]
    with InfluxClient(settings.influx) as db:
        query_days = days if old is None else (end_s - old.end + overlap_s) / DAY_S
        history = history_from_influx(
            db,
            days=min(query_days, days),
            end=end_s,
            chunk=chunk,
            settings=th.inactivity,
        )
    if old is not None:
        history = old.extend(history, days=days)
    t1 = time.perf_counter()
    if cached:
        save_history(cache, history)
    baselines = fit_baselines(history, detectors, care, Roster())
    save_baselines(out, baselines)
    t2 = time.perf_counter()
    return {
        "elders": len(baselines),
        "queries": history.queries,
        "rows_read": history.rows_read,
        "query_s": round(t1 - t0, 3),
        "fit_s": round(t2 - t1, 3),
        "incremental": float(old is not None),
    }

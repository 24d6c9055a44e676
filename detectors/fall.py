"""Fall detection for many wearables at once: impact, posture change, then lying still.

A fall is confirmed by four stages, each with its own threshold in :class:`FallSettings`:

1. **Impact** — the magnitude of acceleration, averaged over ``impact_window_s`` (0.2 s),
   reaches ``impact_g``. Averaging over 0.2 s measures the momentum lost at impact rather
   than the sharpness of one sample, so it reads the same at 20 Hz and 100 Hz, and the
   sharp spikes of a device hitting a table or a hand slapping a mattress do not count.
   Raw peaks of such impacts are typically 2–8 g.
2. **Free-fall dip** — before the impact, the magnitude (0.1 s average) dips below
   ``freefall_g``: the body accelerates towards the floor. Reported as evidence; a dip
   longer than ``drop_s`` below ``drop_g`` means the *device* flew through the air on its
   own (dropped or thrown), since a falling body is never in true free fall that long.
3. **Posture change** — the angle between the gravity direction before the fall
   (``pre_window_s`` ending ``pre_gap_s`` before the impact) and while lying afterwards is
   at least ``posture_deg``. Only the angle between two measured directions is used, so the
   sensor may be worn in any orientation.
4. **Lying still** — in the ``still_window_s`` after ``settle_s`` past the last impact, at
   least ``still_fraction`` of the samples lie in stretches whose activity (the spread of
   the acceleration vector, orientation-free) is at most ``still_g``; but mean activity
   above ``offbody_g``: a body on the floor breathes and trembles, a device on a table does
   not.

**Where the wearable is worn** decides who judges these scores (:func:`decide`): each row
has a :class:`~detectors.fall_model.Placement` (from the wearable's status reports,
:meth:`FallDetector.place`); a placement with a model (the wrist's) is decided by its
learned second stage, which scores the stages above together with the impact's shape
(``_SHAPE``: orientation-free statistics of the 4 s before to 1 s after the impact,
computed when the stages are scored) — a waist or chest one by the rules, an unknown one
by the rules or any model. The rules' stage scores stay in every alert's evidence, with
``rules`` (whether they alone confirm it), ``model_score`` and ``placement``.

**Got up again**: a candidate with a fall's impact and dip, lying just after the impact
(``turn_deg``) and upright again (within ``upright_deg`` of the posture before) at the
stillness window's end is a *recovered* fall (:func:`recovered`): kind ``fall_recovered``,
severity warning, evidence ``down_s``: recorded and the family told, never the critical
alarm (on the wrist, whose model decides, a fall the model recognises stays critical).

**In bed**: turning over in bed, or lying down on it quickly, can look like a fall to a belt
or a pendant (an impact, a quarter turn, then lying still). Where the elder's bed sensor
said "in bed" shortly before the impact (within ``bed_fresh_s``) and the wearer lay quiet
just before it (``pre_std_g`` at most ``bed_still_g``: never after walking, so a bed sensor
slow to notice that its elder got up cannot hide a fall on the way), the fall waits for the
bed sensor's next reading after the impact: still in bed, it was a movement in bed and is
not reported; out of bed (fallen from it), it is reported at once; no reading within
``bed_wait_s`` of the impact, it is reported then (:meth:`FallDetector.tick`): a silent
bed sensor never hides a fall. Elders without a bed sensor are not delayed. A bed mat's
events (``held``) are left out: a lost "free" event would hide a fall from the bed.

**Lying before, no bed sensor**: a belt or a pendant learns its wearer's upright while they
walk (:meth:`FallDetector._walking`). A candidate whose posture before the impact was at
least ``lying_deg`` from it, the wearer quiet (``bed_still_g``), and no bed sensor saying
"in bed", was a turn in bed or lying down on it unless it landed hard or dropped
(``lying_impact_g``, ``lying_freefall_g``: a fall to the floor); it is not reported
(evidence ``lying_deg``). A wearer never seen walking (or a device whose frames are too
short to hold a step's peak and dip), on the wrist or of unknown placement, is judged
as before.

Sitting down hard, jumping, stumbling and stairs fail the posture change or the stillness;
lying down in bed fails the impact; a dropped or thrown device fails the free-flight or the
off-body test. Any new impact restarts the stillness window, so the detection comes at
most ``settle_s + still_window_s`` plus one frame after the last impact.

Assumptions: acceleration in g including gravity; frames of a row arrive in time order and
roughly contiguous (a gap over ``max_gap_s`` clears that row's history). Input at any rate
is resampled to ``rate_hz`` (box average for integer down-sampling, linear interpolation
otherwise, one input sample late).

Warm-up: none beyond the history: the posture before an impact needs ``pre_gap_s +
pre_window_s`` seconds of history; earlier, the first samples stand in for it.

Cost: per frame, one squared magnitude and a maximum per row (the gate); the heavy stages
run only for rows whose raw magnitude reached ``impact_g`` or that await stillness. Each
row's last ``history_s`` seconds (a ring, float32, about 4 KB a row at 50 Hz) are what
those stages read before an impact, yet almost no row is ever read: frames are kept by
reference (:class:`_Logged`) and copied into the ring only for a row that is read, or
whose frames are still within its history when the log outgrows two rings' worth (a
device gone quiet), or before the state is saved (:meth:`FallDetector.settle`). Copying
every frame into the ring was a quarter of the detector's time, the frames' own memory
traffic.

>>> import numpy as np
>>> from device_sim.motions import motion
>>> t, xyz, info = motion("fall_forward", np.random.default_rng(7), rate=50)
>>> det = FallDetector()
>>> frames = xyz[: len(xyz) // 50 * 50].reshape(-1, 50, 3)
>>> found = [d for i, f in enumerate(frames)
...          for d in det.update(AccelBatch(np.array([0]), np.array([float(i)]), f[None], 50.0))]
>>> [(d.kind, d.severity.value, abs(d.ts - info["impact_t"]) < 0.5) for d in found]
[('fall', 'critical', True)]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import (
    AccelBatch,
    BatchStream,
    Detection,
    Floats,
    ReadingBatch,
    Rows,
    RowState,
    Severity,
    waves,
)
from detectors.fall_model import FallModels, Placement
from homecare.thresholds import FallSettings

__all__ = [
    "RECOVERED", "FallDetector", "FallSettings", "confirms", "decide", "recovered", "resample",
]  # fmt: skip

RECOVERED = "fall_recovered"
"""The kind of a fall the wearer got up from (the fall's outcome ``recovered``; evidence
``down_s``: seconds from the impact until upright again): not an alarm but a fall on
record, for the family and the care monitor."""

_EPS = 1e-6


def confirms(
    evidence: dict[str, npt.NDArray[np.float64]], s: FallSettings
) -> npt.NDArray[np.bool_]:
    """Decide from the stage scores (arrays, one entry per candidate) which are falls."""
    return (
        (evidence["peak_g"] >= s.impact_g)
        & (evidence["freefall_g"] <= s.freefall_g)
        & (evidence["flight_s"] < s.drop_s)
        & (evidence["posture_deg"] >= s.posture_deg)
        & (evidence["still_fraction"] >= s.still_fraction)
        & (evidence["activity_g"] >= s.offbody_g)
    )


def decide(
    evidence: dict[str, npt.NDArray[np.float64]],
    placement: npt.NDArray[np.int8],
    models: FallModels,
    s: FallSettings,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Which candidates are falls, and each one's model score (NaN: decided by the rules).

    A placement with a model decides by its score (a device in free flight or not worn
    never counts); one without decides by the rules. An unknown placement is decided the
    most careful way: a fall if the rules or its own model (``fall-unknown``) say so, or,
    without one, the rules or any placement's model.
    """
    rules = confirms(evidence, s)
    worn = (evidence["flight_s"] < s.drop_s) & (evidence["activity_g"] >= s.offbody_g)
    ok = rules.copy()
    score = np.full(len(rules), np.nan)
    unknown = placement == Placement.UNKNOWN
    asks_all = Placement.UNKNOWN not in models.by_placement
    for p, model in models.by_placement.items():
        decides = (placement == p) & (p != Placement.UNKNOWN)
        careful = unknown & (asks_all or p == Placement.UNKNOWN)
        mine = np.flatnonzero(decides | careful)
        if not len(mine):
            continue
        got = model.score({k: v[mine] for k, v in evidence.items()})
        yes = worn[mine] & (got >= model.threshold)
        own = decides[mine]
        ok[mine[own]] = yes[own]
        ok[mine[~own]] |= yes[~own]
        score[mine] = np.fmax(score[mine], got)
    return ok, score


def recovered(
    features: dict[str, npt.NDArray[np.float64]],
    up_t: npt.NDArray[np.float64],
    score: npt.NDArray[np.float64],
    need: npt.NDArray[np.float64],
    s: FallSettings,
) -> npt.NDArray[np.bool_]:
    """Which candidates are falls the wearer got up from: an impact with the dip of a fall
    (worn, not flying), lying just after it (``turn_deg``: the posture half a second to a
    second after the impact turned at least ``posture_deg`` from before), then upright
    again (within ``upright_deg`` of before) from ``up_t`` to the stillness window's end
    (finite: up at the end). Where the placement's own model
    decides (the wrist, on which the arm's turn says little) its score must reach ``need``
    (that model's threshold; NaN elsewhere) too."""
    return (
        (features["peak_g"] >= s.impact_g)
        & (features["freefall_g"] <= s.freefall_g)
        & (features["flight_s"] < s.drop_s)
        & (features["activity_g"] >= s.offbody_g)
        & (features["turn_deg"] >= s.posture_deg)
        & np.isfinite(up_t)
        & (np.isnan(need) | (score >= need))
    )


def resample(
    accel: Floats, rate: float, to: float, prev: Floats | None = None
) -> tuple[Floats, float]:
    """Frames×samples×3 at ``rate`` → at ``to``; returns the frames and their time offset.

    Integer down-sampling averages blocks (as an accelerometer's own filter would); any
    other ratio interpolates linearly from ``prev`` (each frame's preceding sample, or the
    first sample), so the output starts one input sample before the frame (offset < 0).
    """
    frames, n, _ = accel.shape
    if math.isclose(rate, to):
        return accel, 0.0
    factor = rate / to
    if factor > 1 and math.isclose(factor, round(factor)) and n % round(factor) == 0:
        k = round(factor)
        out = accel.reshape(frames, n // k, k, 3).mean(axis=2, dtype=np.float32)
        return out, 0.0
    m = max(1, round(n * to / rate))
    first = accel[:, :1] if prev is None else prev[:, None, :].astype(np.float32)
    ext = np.concatenate([first, accel], axis=1)  # index 0 is one sample before the frame
    pos = np.arange(m) * (rate / to)
    i0 = np.minimum(pos.astype(np.int64), n - 1)
    frac = (pos - i0).astype(np.float32)[None, :, None]
    out = ext[:, i0] * (1 - frac) + ext[:, i0 + 1] * frac
    return out.astype(np.float32), -1.0 / rate


def _box(x: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """Trailing mean over ``k`` samples along the last axis (the first k-1 use fewer)."""
    c = np.cumsum(x, axis=-1, dtype=np.float64)
    out = c.copy()
    out[..., k:] -= c[..., :-k]
    div = np.minimum(np.arange(1, x.shape[-1] + 1), k)
    return (out / div).astype(np.float32)


_SEGMENTS = ((-3.0, -2.0), (-2.0, -1.0), (-1.0, -0.5), (-0.5, 0.0), (0.0, 0.5), (0.5, 1.0))
"""Spans (s from the impact) described by their magnitude mean, spread (orientation-free:
the root of the acceleration vector's total variance) and turn from the span before."""


def _angle_deg(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + _EPS)
    deg: npt.NDArray[np.float64] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return deg


def _one_run(rows: Rows) -> bool:
    """Whether ``rows`` are consecutive and ascending (a slice can stand for them)."""
    n = len(rows)
    return bool(n) and int(rows[-1]) - int(rows[0]) == n - 1 and bool((np.diff(rows) == 1).all())


class _Logged:
    """The frames of one wave, by reference, until no row needs them for its history:
    ``start[i]`` is how many samples row ``rows[i]`` had before them (its ring position)."""

    __slots__ = ("block", "frames", "rows", "start", "where")

    def __init__(self, rows: Rows, frames: Floats, start: npt.NDArray[np.int64]) -> None:
        self.rows, self.frames, self.start = rows, frames, start
        self.block = _one_run(rows)  # the usual batch: a row is found by subtraction
        self.where: npt.NDArray[np.intp] | None = None  # else row → index, made when first asked

    @property
    def samples(self) -> int:
        return int(self.frames.shape[0] * self.frames.shape[1])

    def find(self, rows: Rows) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Where the ``rows`` (unique) are in this wave: (indices here, indices in ``rows``)."""
        if self.block:
            at = (rows - int(self.rows[0])).astype(np.intp)
            there = np.flatnonzero((at >= 0) & (at < len(self.rows)))
            return at[there], there
        if self.where is None:
            self.where = np.full(int(self.rows.max()) + 1, -1, np.intp)
            self.where[self.rows] = np.arange(len(self.rows))
        at = np.where(rows < len(self.where), self.where[np.minimum(rows, len(self.where) - 1)], -1)
        there = np.flatnonzero(at >= 0)
        return at[there], there


class FallDetector(RowState):
    """Confirms falls of many wearables from their accelerometer frames (see module doc)."""

    kind: ClassVar[str] = "fall"
    streams: ClassVar[frozenset[str]] = frozenset(
        {AccelBatch.stream, BatchStream.STATUS, BatchStream.BED}
    )
    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {
        "ring": 0.0, "pos": 0, "filled": 0, "last_end": -np.inf, "prev": 0.0, "tail2": 1.0,
        "pending": False, "unscored": False, "last_impact": 0.0, "impact_t": 0.0,
        "win_start": 0.0, "win_end": 0.0, "peak_g": 0.0, "freefall_g": 0.0, "flight_s": 0.0,
        "pre_vec": 0.0, "acc_n": 0.0, "acc_vec": 0.0, "acc_still": 0.0, "acc_act": 0.0,
        "shape": 0.0, "placement": 0, "kept_peak": 0.0, "up_t": np.inf,
        "bed_t": -np.inf, "in_bed": False, "bed_before": False, "up_vec": 0.0, "gait_s": 0.0,
    }  # fmt: skip
    _SHAPE: ClassVar[tuple[str, ...]] = (
        "raw_peak_g", "pre_mean_g", "pre_std_g", "impact_std_g", "post_std_g", "jerk_gps",
        "above2_s", "turn_deg", "energy_g", "min_g", "dip_lead_s", "pre_busy_s",
        *(f"{stat}_{i}" for i in range(len(_SEGMENTS)) for stat in ("mean", "spread")),
        *(f"swing_{i}" for i in range(1, len(_SEGMENTS))),
    )  # fmt: skip
    """The second stage's features of the impact's shape, kept per row in ``shape``."""
    _SCRATCH: ClassVar[tuple[str, ...]] = ("_sq", "_mag2", "models", "_log", "_logged")
    """Buffers reused between batches, the models (configuration) and the frames not yet
    in the ring (written there by :meth:`settle`, which a snapshot asks for first): not
    state (:mod:`detectors.snapshot` skips them)."""

    def __init__(
        self,
        settings: FallSettings | None = None,
        models: FallModels | None = None,
        *,
        candidates: bool = False,
    ) -> None:
        """``models``: the second stage per placement (default: the shipped ones).
        ``candidates``: report every decided candidate (kind ``fall_candidate``, with its
        features and ``fall`` 1/0) instead of falls only, for training."""
        s = self.settings = settings or FallSettings()
        self.models = models if models is not None else FallModels.load()
        self.candidates = candidates
        self.rate = s.rate_hz
        self.hist_len = math.ceil(s.history_s * s.rate_hz) + 1
        self.k_impact = max(1, round(s.impact_window_s * s.rate_hz))
        self.k_freefall = max(1, round(0.1 * s.rate_hz))
        # history ring of working-rate samples, one row per wearable
        self.ring = np.zeros((0, self.hist_len, 3), np.float32)
        self.pos = np.zeros(0, np.int64)  # samples so far; the next one's place: pos % hist_len
        self.filled = np.zeros(0, np.int64)  # valid samples in the ring
        self.last_end = np.full(0, -np.inf)  # end time of the row's last frame
        self.prev = np.zeros((0, 3), np.float32)  # last input sample, for interpolation
        self.tail2 = np.ones((0, self.k_impact - 1), np.float32)  # last |a|² for the impact
        self._sq = np.empty((0, 0, 3), np.float32)  # scratch, reused between batches
        self._mag2 = np.empty((0, 0), np.float32)
        self._log: deque[_Logged] = deque()  # frames not yet copied into the ring, oldest first
        self._logged = 0  # samples in the log
        # the pending candidate: impact time, stillness window and the stage scores so far
        self.pending = np.zeros(0, bool)
        self.unscored = np.zeros(0, bool)  # pending, stages not yet scored
        self.last_impact = np.zeros(0)
        self.impact_t = np.zeros(0)
        self.win_start = np.zeros(0)
        self.win_end = np.zeros(0)
        self.peak_g = np.zeros(0)
        self.freefall_g = np.zeros(0)
        self.flight_s = np.zeros(0)
        self.pre_vec = np.zeros((0, 3))
        self.acc_n = np.zeros(0)
        self.acc_vec = np.zeros((0, 3))
        self.acc_still = np.zeros(0)
        self.acc_act = np.zeros(0)
        self.shape = np.zeros((0, len(self._SHAPE)))
        self.placement = np.zeros(0, np.int8)  # Placement code, from status reports
        self.kept_peak = np.zeros(0)  # impact of the scored candidate a new impact follows
        self.up_t = np.full(0, np.inf)  # when the wearer was upright again in the window
        # the bed sensor: its last reading (time, presence), whether it said "in bed" just
        # before the pending candidate's first impact, and the falls waiting for its word
        self.bed_t = np.full(0, -np.inf)
        self.in_bed = np.zeros(0, bool)
        self.bed_before = np.zeros(0, bool)
        self.held: dict[int, tuple[str, float, dict[str, float]]] = {}
        """Row → (kind, impact time, evidence) of a fall decided while in bed."""
        # the wearer's upright, learned while walking (shorter than 0.5: not yet known),
        # and the seconds of walking in a row so far
        self.up_vec = np.zeros((0, 3))
        self.gait_s = np.zeros(0)

    def tick(self, now: float) -> list[Detection]:
        """A fall is decided when its stillness window ends; on time alone only one that
        waited in bed for a bed reading that did not come (reported, late)."""
        if not self.held:
            return []
        wait = self.settings.bed_wait_s
        due = [row for row, (_, ts, _) in self.held.items() if ts + wait <= now]
        return self._release(np.array(due, np.int64), waited=True)

    def _release(self, rows: Rows, *, waited: bool) -> list[Detection]:
        """Report the held falls of ``rows`` (out of bed, or the bed sensor silent)."""
        found = []
        for row in rows.tolist():
            kind, ts, evidence = self.held.pop(row)
            evidence = evidence | {"bed_silent": float(waited)}
            severity = Severity.CRITICAL if kind == self.kind else Severity.WARNING
            found.append(Detection(kind, row, ts, severity, evidence))
        return found

    def _bed(self, batch: ReadingBatch) -> list[Detection]:
        """A bed sensor's readings (not a mat's held events): who is in bed, and the
        word that held falls wait for."""
        fresh = batch.column("held") != 1
        presence = batch.column("presence")
        fresh &= ~np.isnan(presence)
        if not fresh.any():
            return []
        rows, ts, there = batch.rows[fresh], batch.ts[fresh], presence[fresh] > 0.5
        top = int(rows.max()) + 1
        if top > len(self.pending):
            self._grow(top)
        # a held fall (rare) is judged by the first reading after its impact
        found: list[Detection] = []
        if self.held:
            waiting = np.flatnonzero(np.isin(rows, np.fromiter(self.held, np.int64)))
            for row, t, inside in zip(rows[waiting].tolist(), ts[waiting].tolist(),
                                      there[waiting].tolist(), strict=True):  # fmt: skip
                held = self.held.get(row)
                if held is None or t <= held[1]:
                    continue
                if inside:  # still in bed: a movement in bed
                    del self.held[row]
                else:  # out of bed after the impact: fallen from it
                    found += self._release(np.array([row]), waited=False)
        # a row may have several readings, in time order: its last one is the word
        _, first_of_reversed = np.unique(rows[::-1], return_index=True)
        last = len(rows) - 1 - first_of_reversed
        rows, ts, there = rows[last], ts[last], there[last]
        newer = ts >= self.bed_t[rows]
        self.bed_t[rows[newer]] = ts[newer]
        self.in_bed[rows[newer]] = there[newer]
        return found

    def place(self, rows: Rows, placement: npt.NDArray[np.integer] | int) -> None:
        """Set where the wearables of ``rows`` are worn (:class:`Placement` codes)."""
        if len(rows) == 0:
            return
        top = int(np.max(rows)) + 1
        if top > len(self.pending):
            self._grow(top)
        self.placement[rows] = placement

    def update(self, batch: AccelBatch | ReadingBatch) -> list[Detection]:
        if isinstance(batch, ReadingBatch):
            if batch.stream == BatchStream.BED:
                return self._bed(batch)
            # status reports: a wearable's placement (NaN for beds and doors)
            if "placement" in batch.values:
                code = batch.column("placement")
                known = ~np.isnan(code)
                self.place(batch.rows[known], code[known].astype(np.int8))
            return []
        if len(batch.rows) == 0:
            return []
        top = int(batch.rows.max()) + 1
        if top > len(self.pending):
            self._grow(top)
        # a row may appear several times: process its k-th frame in the k-th wave
        parts = waves(batch.rows)
        if parts is None:
            found = self._wave(batch.rows, batch.ts, batch.accel, batch.rate)
        else:
            found = []
            for sel in parts:
                found += self._wave(batch.rows[sel], batch.ts[sel], batch.accel[sel], batch.rate)
        found.sort(key=lambda d: (d.ts, d.row))
        return found

    def _wave(
        self, rows: Rows, ts: npt.NDArray[np.float64], accel: Floats, rate: float
    ) -> list[Detection]:
        s = self.settings
        n_in = accel.shape[1]
        gap = ts - self.last_end[rows] > s.max_gap_s
        if gap.any():
            self.filled[rows[gap]] = 0
            self.prev[rows[gap]] = accel[gap, 0]
            self.gait_s[rows[gap]] = 0.0
        frames, offset = resample(accel, rate, self.rate, self.prev[rows])
        self.prev[rows] = accel[:, -1]
        self.last_end[rows] = ts + n_in / rate
        t0 = ts + offset
        n = frames.shape[1]
        if frames.dtype != np.float32:
            frames = frames.astype(np.float32)

        # the cheap gate: a raw sample at the impact level; then the exact impact test
        if self._sq.shape != frames.shape:
            self._sq = np.empty_like(frames)
            self._mag2 = np.empty(frames.shape[:2], np.float32)
        sq = np.multiply(frames, frames, out=self._sq)
        mag2 = np.add(sq[..., 0], sq[..., 1], out=self._mag2)
        mag2 += sq[..., 2]
        peak2 = mag2.max(axis=1)
        sel = np.flatnonzero(peak2 >= s.impact_g**2)
        if len(sel):
            self._impacts(rows[sel], t0[sel], mag2[sel])
        self._walking(rows, frames, peak2, mag2)
        # score the fall stages once the stillness window of an impact begins
        sel = np.flatnonzero(self.unscored[rows])
        if len(sel):
            sel = sel[t0[sel] + n / self.rate > self.win_start[rows[sel]]]
        if len(sel):
            self._score(rows[sel], t0[sel], frames[sel])
        found: list[Detection] = []
        sel = np.flatnonzero(self.pending[rows])
        if len(sel):
            found = self._stillness(rows[sel], t0[sel], frames[sel], mag2[sel])
        self._remember(rows, frames)
        k = self.k_impact - 1
        if n >= k:
            self.tail2[rows] = mag2[:, n - k :]
        elif k:
            self.tail2[rows] = np.concatenate([self.tail2[rows, n:], mag2], axis=1)
        return found

    def _walking(self, rows: Rows, frames: Floats, peak2: Floats, mag2: Floats) -> None:
        """Learn each wearer's upright: the mean direction of gravity while walking
        (``gait_s`` seconds in a row whose magnitude swings ``gait_g`` above and below 1 g
        every second, as steps do; never while lying, turning in bed or sitting down).

        An average of unit vectors, one more every ``gait_s`` seconds of walking, weighted
        to follow about ``upright_learn_s`` of it: trusted once its length reaches 0.5,
        i.e. after about that much walking (over the day, not in one go) in one steady
        direction, never from the few seconds of a fall's own tumble. On a belt or a
        pendant it tells that the wearer was lying before an impact. Cheap for every row
        and frame: the dips are looked for only where the peak was high."""
        s = self.settings
        dt = frames.shape[1] / self.rate
        walked = np.zeros(len(rows))
        high = np.flatnonzero(peak2 >= (1 + s.gait_g) ** 2)
        if len(high):
            dips = mag2[high].min(axis=1) <= (1 - s.gait_g) ** 2
            high = high[dips]
            walked[high] = self.gait_s[rows[high]] + dt
        self.gait_s[rows] = walked
        learn = high[np.floor(walked[high] / s.gait_s) > np.floor((walked[high] - dt) / s.gait_s)]
        if not len(learn):
            return
        mean = frames[learn].mean(axis=1, dtype=np.float64)
        unit = mean / (np.linalg.norm(mean, axis=1, keepdims=True) + _EPS)
        r = rows[learn]
        self.up_vec[r] += min(1.0, s.gait_s / s.upright_learn_s) * (unit - self.up_vec[r])

    def _history(self, rows: Rows, frames: Floats, keep: int | None = None) -> Floats:
        """The last ``keep`` history samples (oldest first; edge-padded where not yet filled)
        followed by the frames."""
        self._catch_up(rows)
        h = self.hist_len
        keep = h if keep is None else keep
        start = h - self.filled[rows]
        idx = (self.pos[rows, None] + np.maximum(np.arange(h - keep, h), start[:, None])) % h
        hist = self.ring[rows[:, None], idx]
        x = np.concatenate([hist, frames], axis=1)
        empty = self.filled[rows] == 0
        if empty.any():
            x[empty, :keep] = frames[empty, :1]
        return x

    def _impacts(self, rows: Rows, t0: npt.NDArray[np.float64], mag2: Floats) -> None:
        """Find impacts: the mean magnitude over the impact window reaches impact_g.

        An impact (re)starts the row's candidate: its stillness window begins ``settle_s``
        after the last impact; the stages are scored when that window begins.
        """
        s = self.settings
        k = self.k_impact
        tail2 = self.tail2[rows]
        tail2[self.filled[rows] < k - 1] = 1.0
        mag = np.sqrt(np.concatenate([tail2, mag2], axis=1))
        c = np.cumsum(mag, axis=1)
        window = c[:, k - 1 :] - np.concatenate([np.zeros((len(rows), 1), c.dtype), c[:, :-k]], 1)
        crossed = window >= k * s.impact_g
        hit = crossed.any(axis=1)
        if not hit.any():
            return
        rows, t0, crossed = rows[hit], t0[hit], crossed[hit]
        last = crossed.shape[1] - 1 - np.argmax(crossed[:, ::-1], axis=1)  # sample in frame
        self.last_impact[rows] = t0 + last / self.rate
        # a candidate already scored keeps its scores unless a stronger impact follows
        scored = self.pending[rows] & ~self.unscored[rows]
        self.kept_peak[rows] = np.where(
            scored, self.peak_g[rows], np.where(self.pending[rows], self.kept_peak[rows], 0.0)
        )
        self.win_start[rows] = self.last_impact[rows] + s.settle_s
        self.win_end[rows] = self.win_start[rows] + s.still_window_s
        # in bed just before the candidate's first impact, by the bed sensor's last word
        first = ~self.pending[rows]
        fresh = self.last_impact[rows] - self.bed_t[rows] <= s.bed_fresh_s
        self.bed_before[rows] = np.where(first, self.in_bed[rows] & fresh, self.bed_before[rows])
        self.pending[rows] = True
        self.unscored[rows] = True
        for name in ("acc_n", "acc_vec", "acc_still", "acc_act"):
            getattr(self, name)[rows] = 0
        self.up_t[rows] = np.inf

    def _score(self, rows: Rows, t0: npt.NDArray[np.float64], frames: Floats) -> None:
        """Score impact, free-fall dip, free flight and posture before, from the history;
        a weaker impact after a scored one only restarts the stillness window (the hand
        landing after the body, moving on the floor)."""
        s = self.settings
        r = self.rate
        x = self._history(rows, frames)
        t_of = t0 - self.hist_len / r  # time of sample 0 of x
        last = np.round((self.last_impact[rows] - t_of) * r).astype(np.int64)
        mag = np.sqrt(np.einsum("fnk,fnk->fn", x, x))
        smooth = _box(mag, self.k_impact)
        ar = np.arange(len(rows))
        back = round(s.impact_lookback_s * r)
        look = np.clip(last[:, None] + np.arange(-back, 1), 0, x.shape[1] - 1)
        peak_at = look[ar, np.argmax(smooth[ar[:, None], look], axis=1)]
        self.unscored[rows] = False
        stronger = smooth[ar, peak_at] >= self.kept_peak[rows]
        if not stronger.all():
            rows, t_of, x, mag, smooth = (v[stronger] for v in (rows, t_of, x, mag, smooth))
            peak_at, ar = peak_at[stronger], np.arange(len(rows))
        impact = np.clip(peak_at - self.k_impact // 2, 0, None)  # centre of the window
        # free-fall dip and free flight in the second before the impact
        ff = _box(mag, self.k_freefall)
        dip = np.clip(impact[:, None] + np.arange(-round(s.freefall_window_s * r), 1), 0, None)
        # posture before: mean direction in the pre-window
        cs = np.cumsum(x, axis=1, dtype=np.float64)
        hi = np.clip(impact - round(s.pre_gap_s * r), 1, None)
        lo = np.clip(hi - round(s.pre_window_s * r), 0, None)
        below = np.where((lo > 0)[:, None], cs[ar, np.maximum(lo - 1, 0)], 0)
        self.pre_vec[rows] = (cs[ar, hi - 1] - below) / (hi - lo)[:, None]
        self.impact_t[rows] = t_of + impact / r
        self.peak_g[rows] = smooth[ar, peak_at]
        self.freefall_g[rows] = ff[ar[:, None], dip].min(axis=1)
        self.flight_s[rows] = (mag[ar[:, None], dip] < s.drop_g).sum(axis=1) / r
        self.shape[rows] = self._shape(x, mag, impact, self.pre_vec[rows])

    def _shape(
        self,
        x: Floats,
        mag: Floats,
        impact: npt.NDArray[np.int64],
        pre_vec: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """The impact's shape (``_SHAPE``), orientation-free, around sample ``impact``:
        one gather of the 5 s around it (4 s before to 1 s after), then views of it."""
        r = self.rate
        lo, hi = round(-4.0 * r), round(1.0 * r)
        ar = np.arange(len(impact))[:, None]
        idx = np.clip(impact[:, None] + np.arange(lo, hi + 1), 0, x.shape[1] - 1)
        xw, mw = x[ar, idx], mag[ar, idx]

        def span(a: float, b: float) -> slice:
            return slice(round(a * r) - lo, round(b * r) - lo + 1)

        pre = mw[:, span(-2.5, -0.5)].astype(np.float64)
        near = span(-0.5, 0.5)
        post = mw[:, span(0.5, 1.0)].astype(np.float64)
        d = np.diff(xw[:, near], axis=1)
        jerk = np.sqrt(np.einsum("fnk,fnk->fn", d, d)).max(axis=1) * r
        after = xw[:, span(0.5, 1.0)].mean(axis=1, dtype=np.float64)
        lead = mw[:, span(-1.0, 0.0)].astype(np.float64)
        dip = _box(mw, max(1, round(0.1 * r)))[:, span(-1.0, 0.0)]
        return np.stack(
            [
                mw[:, near].max(axis=1),
                pre.mean(axis=1),
                pre.std(axis=1),
                mw[:, near].std(axis=1, dtype=np.float64),
                post.std(axis=1),
                jerk,
                (mw[:, span(-2.0, 1.0)] > 2.0).sum(axis=1) / r,
                _angle_deg(pre_vec, after),
                np.abs(lead - 1.0).mean(axis=1),
                lead.min(axis=1),
                (dip.shape[1] - 1 - np.argmin(dip, axis=1)) / r,
                (np.abs(mw[:, span(-4.0, -1.0)] - 1.0) > 0.3).sum(axis=1) / r,
                *self._segments(xw, mw, span),
            ],
            axis=1,
        )

    @staticmethod
    def _segments(
        xw: Floats, mw: Floats, span: Callable[[float, float], slice]
    ) -> list[npt.NDArray[np.float64]]:
        """Per span of ``_SEGMENTS``: magnitude mean and spread, then the turns between
        consecutive spans; all spans at once from running sums (few numpy calls: this runs
        for every scored candidate)."""
        cuts = [span(a, b) for a, b in _SEGMENTS]
        lo = np.array([c.start for c in cuts])
        hi = np.array([c.stop for c in cuts])
        x64 = xw.astype(np.float64)
        zero = np.zeros((len(xw), 1))
        cs_x = np.concatenate([zero[:, :, None].repeat(3, 2), np.cumsum(x64, axis=1)], axis=1)
        cs_q = np.concatenate([zero, np.cumsum((x64 * x64).sum(-1), axis=1)], axis=1)
        cs_m = np.concatenate([zero, np.cumsum(mw, axis=1, dtype=np.float64)], axis=1)
        count = (hi - lo).astype(np.float64)
        mean = (cs_x[:, hi] - cs_x[:, lo]) / count[None, :, None]  # rows × spans × 3
        var = (cs_q[:, hi] - cs_q[:, lo]) / count - (mean**2).sum(-1)
        spread = np.sqrt(np.maximum(var, 0))
        mag = (cs_m[:, hi] - cs_m[:, lo]) / count
        turn = _angle_deg(mean[:, :-1], mean[:, 1:])
        out = [v for i in range(len(cuts)) for v in (mag[:, i], spread[:, i])]
        return out + [turn[:, i] for i in range(len(cuts) - 1)]

    def _stillness(
        self, rows: Rows, t0: npt.NDArray[np.float64], frames: Floats, mag2: Floats
    ) -> list[Detection]:
        """Accumulate the stillness window of pending rows; decide those whose window ended."""
        s = self.settings
        n = frames.shape[1]
        t = t0[:, None] + np.arange(n) / self.rate
        inside = (t >= self.win_start[rows, None]) & (t < self.win_end[rows, None])
        cnt = inside.sum(axis=1).astype(np.float64)
        w = inside.astype(np.float32)
        vec = np.einsum("fn,fnk->fk", w, frames, dtype=np.float64)
        sq = (w * mag2).sum(axis=1, dtype=np.float64)
        safe = np.maximum(cnt, 1)
        act = np.sqrt(np.maximum(sq / safe - (vec**2).sum(axis=1) / safe**2, 0))
        self.acc_n[rows] += cnt
        self.acc_vec[rows] += vec
        self.acc_still[rows] += np.where(act <= s.still_g, cnt, 0)
        self.acc_act[rows] += act * cnt
        # upright again: this frame's part of the window leans little from the posture
        # before; ``up_t`` is when the current upright stretch began (inf: not upright now)
        seen = cnt > 0
        up = seen & (_angle_deg(self.pre_vec[rows], vec / safe[:, None]) < s.upright_deg)
        first_in = np.argmax(inside, axis=1) / self.rate
        self.up_t[rows] = np.where(
            up, np.minimum(self.up_t[rows], t0 + first_in), np.where(seen, np.inf, self.up_t[rows])
        )
        done = t0 + n / self.rate >= self.win_end[rows]
        if not done.any():
            return []
        rows = rows[done]
        self.pending[rows] = False
        got = np.maximum(self.acc_n[rows], 1)
        evidence = {
            "peak_g": self.peak_g[rows],
            "freefall_g": self.freefall_g[rows],
            "flight_s": self.flight_s[rows],
            "posture_deg": _angle_deg(self.pre_vec[rows], self.acc_vec[rows] / got[:, None]),
            "still_fraction": np.where(self.acc_n[rows] > 0, self.acc_still[rows] / got, 0),
            "activity_g": self.acc_act[rows] / got,
        }
        shape = self.shape[rows]
        features = evidence | {name: shape[:, j] for j, name in enumerate(self._SHAPE)}
        placement = self.placement[rows]
        ok, score = decide(features, placement, self.models, s)
        need = np.full(len(rows), np.nan)
        for p, model in self.models.by_placement.items():
            if p != Placement.UNKNOWN:  # an unknown placement's posture is the rules' to judge
                need[placement == p] = model.threshold
        got_up = recovered(features, self.up_t[rows], score, need, s)
        # upright at the window's end is not lying still, where the rules judge posture
        ok &= ~(got_up & np.isnan(need))
        got_up &= ~ok
        # a belt or pendant lying quiet before, where no bed sensor said "in bed": a turn
        # in bed or lying down on it, unless it landed hard (dropped to the floor)
        known = np.einsum("rk,rk->r", self.up_vec[rows], self.up_vec[rows]) >= 0.25
        lying = np.where(known, _angle_deg(self.pre_vec[rows], self.up_vec[rows]), np.nan)
        soft = (
            np.isin(placement, (Placement.WAIST, Placement.CHEST))
            & (lying >= s.lying_deg)
            & (features["pre_std_g"] <= s.bed_still_g)
            & (evidence["peak_g"] < s.lying_impact_g)
            & (evidence["freefall_g"] > s.lying_freefall_g)
            & ~self.bed_before[rows]
        )
        ok &= ~soft
        got_up &= ~soft
        # the rules' stages stay the explanation; the score says what the model made of them
        evidence["rules"] = confirms(evidence, s).astype(np.float64)
        evidence["model_score"] = score
        evidence["placement"] = placement.astype(np.float64)
        evidence["turn_deg"] = features["turn_deg"]
        evidence["lying_deg"] = lying
        evidence["down_s"] = np.where(got_up, self.up_t[rows] - self.impact_t[rows], np.nan)
        if self.candidates:
            evidence = features | evidence | {"fall": ok.astype(np.float64)}
            chosen = np.arange(len(rows))
        else:
            chosen = np.flatnonzero(ok | got_up)
            # in bed and lying quiet before the impact: the bed's reading after it decides
            # (one who got up and walked is never held, whatever a slow bed sensor says)
            quiet = features["pre_std_g"][chosen] <= s.bed_still_g
            in_bed = self.bed_before[rows[chosen]] & quiet
            if in_bed.any():
                said = self.bed_t[rows[chosen]] > self.impact_t[rows[chosen]]
                stays = in_bed & said & self.in_bed[rows[chosen]]
                wait = in_bed & ~said
                for i in chosen[wait].tolist():
                    row = int(rows[i])
                    if row in self.held:
                        continue  # a later impact of the same movement: the first waits
                    kind = self.kind if ok[i] else RECOVERED
                    self.held[row] = (kind, float(self.impact_t[row]), {
                        k: round(float(v[i]), 4) for k, v in evidence.items()
                        if not np.isnan(v[i])
                    } | {"in_bed_before": 1.0})  # fmt: skip
                chosen = chosen[~(stays | wait)]
        return [
            Detection(
                kind="fall_candidate" if self.candidates else self.kind if ok[i] else RECOVERED,
                row=int(rows[i]),
                ts=float(self.impact_t[rows[i]]),
                severity=Severity.CRITICAL if ok[i] or self.candidates else Severity.WARNING,
                evidence={
                    k: round(float(v[i]), 4) for k, v in evidence.items() if not np.isnan(v[i])
                },
            )
            for i in chosen
        ]

    def _remember(self, rows: Rows, frames: Floats) -> None:
        """Log the frames as the rows' newest history; let go of the oldest logged frames
        that no row needs, copying a row's into the ring only when the log holds more than
        two rings' worth (a device gone quiet keeps its last frames)."""
        h = self.hist_len
        n = frames.shape[1]
        start = self.pos[rows]
        self._log.append(_Logged(rows.copy(), frames, start))
        self._logged += len(rows) * n
        self.pos[rows] = start + n
        self.filled[rows] = np.minimum(self.filled[rows] + n, h)
        budget = 2 * h * len(self.pos)
        while self._log:
            old = self._log[0]
            if self._logged <= budget and self._needed(old).any():
                break
            self._keep(old)
            self._log.popleft()
            self._logged -= old.samples

    def _needed(self, old: _Logged) -> npt.NDArray[np.bool_]:
        """Which of ``old``'s rows still have some of its samples among their last
        ``hist_len``."""
        needed: npt.NDArray[np.bool_] = (
            self.pos[old.rows] - old.start < self.hist_len + old.frames.shape[1]
        )
        return needed

    def _keep(self, old: _Logged) -> None:
        """Copy ``old``'s frames of the rows that still need them into the ring."""
        need = np.flatnonzero(self._needed(old))
        if len(need):
            self._write(old.rows[need], old.frames[need], old.start[need])

    def _catch_up(self, rows: Rows) -> None:
        """Copy the logged frames of ``rows`` (unique) into the ring, oldest first."""
        for old in self._log:
            at, there = old.find(rows)
            if len(at):
                self._write(rows[there], old.frames[at], old.start[at])

    def settle(self) -> None:
        """Copy every frame still within its row's history into the ring and empty the
        log: the ring alone is then the state (a snapshot asks for this first)."""
        for old in self._log:
            self._keep(old)
        self._log.clear()
        self._logged = 0

    def _write(self, rows: Rows, frames: Floats, start: npt.NDArray[np.int64]) -> None:
        """Frames into the ring at their rows' places. Logged frames are written oldest
        first, so a sample older than its row's last ``hist_len`` that lands on a newer
        one's place is overwritten by it before the ring is read."""
        h = self.hist_len
        n = frames.shape[1]
        if n > h:  # only the last h samples have places of their own
            frames, start, n = frames[:, n - h :], start + (n - h), h
        at = start % h
        if at.min() != at.max():
            self.ring[rows[:, None], (start[:, None] + np.arange(n)) % h] = frames
            return
        p = int(at[0])
        r: Rows | slice = rows
        if _one_run(rows):  # the usual batch: block copies
            r = slice(int(rows[0]), int(rows[-1]) + 1)
        first = min(n, h - p)
        self.ring[r, p : p + first] = frames[:, :first]
        if first < n:
            self.ring[r, : n - first] = frames[:, first:]

"""Inactivity: no sign of life for longer than is usual for this elder at this hour.

**Signs of activity** (:func:`activity_signs`, the same rule at run time and for learning):
wearable movement (``mag_std`` at least ``move_g``) or steps, any door event, any bed
reading with someone in bed, and getting out of bed. Being in bed counts as a sign: bed
presence is rest, not inactivity of concern. Instead, while the elder is in bed (a bed
reading with presence within ``bed_fresh_s``) a separate, care-level limit applies: no
*bed movement* (``movement`` at least ``bed_move``) for ``in_bed_still_s`` (2-4 h; a
sleeper turns over every 20-30 minutes). A silent bed sensor does not count as in bed.

**Lying out of bed.** A long lie after a collapse that the fall detector could not confirm
(no impact) must not wait hours for the gap rule: a body (a frame with a heart rate) whose
trunk is at least ``lying_deg`` from upright, while the bed sensor reports nobody in bed,
for the care level's ``lying_s`` (20 min at level 1 down to 5 at level 4) → an
``inactivity`` detection (critical, evidence ``lying``). Upright is learned per row from
the wearable's mean gravity direction while walking (steps: the trunk is upright), so the
device may be worn in any orientation; the posture needs the frames' mean acceleration
(``gx``, ``gy``, ``gz``): without it, or before the first walk, the rule stays silent, as
it does when the bed sensor is silent (lying in a bed it cannot see is no lie). Lying on
a sofa looks the same; the care level's limit is the trade-off.

**Personal limit.** For every hour of the local day, the gap is compared with a limit
learned from the elder's history (:meth:`InactivityDetector.fit`, refitted daily):

1. the gaps between consecutive signs give, per observed local hour, the longest
   stillness ongoing in that hour (the statistic the run-time check measures);
2. a linear quantile regression (scikit-learn ``QuantileRegressor``, pinball loss, HiGHS)
   of its log on ``harmonics`` daily sine/cosine pairs gives the ``quantile`` (0.95)
   curve over the day, times ``margin``.

Why this model: stillness lengths are heavy-tailed, so a Gaussian (or a Gaussian mixture)
misplaces the tail the alarm depends on, and a quantile is what an alarm threshold is.
An empirical per-hour quantile of 2-4 weeks is ~14-28 points per hour, too few for a
95 % quantile; the harmonic curve pools all hours into 7 parameters and stays smooth,
while the pinball loss keeps one exceptional day from moving it much. Cost: ~25 ms per
elder per refit of 4 weeks (10,000 elders: ~4-5 min of one core a day); the run-time check is one
gather. With little history the learned log-limit is shrunk towards the care-level
default (weight ``days / (days + prior_days)``), and it is always clipped to the care
level's ``inactivity_min_s``-``inactivity_max_s``; an elder with no fit uses the default.

**Homes with ambient sensors** (motion sensors, contacts on cupboards and the fridge, bed
and chair pressure mats: the ``motion`` and ``mat`` streams): every motion, contact and mat
event is a sign of life, in any room. Once a row has shown one, its gap timer runs only
while the elder is *at home and off the mats*: sitting on an occupied chair mat (or
lying on the bed) is rest, not inactivity, and after the front door the elder may be out
(the timer waits for the next sign inside; at night the wandering detector watches the
door). Gaps measured that way are short (one goes from room to room), so these rows get
their own limit per local hour, learned the same way from the gaps the timer would have
measured (:func:`home_gaps`, :meth:`InactivityDetector.fit_home`) and clipped to the care
level's ``home_inactivity_min_s``-``home_inactivity_max_s`` (1.5-3 h at level 2). A
bed reading without a ``movement`` value (a bed mat) cannot show stillness, so the
in-bed rule leaves it alone. Not judged: a collapse while sitting (the chair mat stays
occupied), or right after coming in (the front door was the last sign).

Assumptions: signs of one row arrive roughly in time order; ``tick`` is called every few
seconds. Warm-up: until the first sign the clock starts at the first data of any kind.

Cost per 1 s wearable batch of 10,000 rows: a comparison and a scatter-maximum (~0.15 ms),
~0.8 ms with the posture columns (a gather, three dot products, two scatters); ``tick``:
~30 vector operations over all rows.
State: 24 learned limits + 13 numbers per row (~200 bytes).

>>> det = InactivityDetector()
>>> move = {"mag_std": np.array([0.2, 0.2]), "steps": np.array([1.0, 0.0])}
>>> det.update(ReadingBatch("wearable", np.array([0, 1]), np.array([0.0, 0.0]), move))
[]
>>> det.tick(4 * 3600.0)  # care level 2 default: 4 h
[]
>>> [(d.kind, d.row, d.severity.value) for d in det.tick(4 * 3600.0 + 1)]
[('inactivity', 0, 'warning'), ('inactivity', 1, 'warning')]
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import (
    DOOR_ROLES,
    BatchStream,
    Bools,
    Detection,
    ReadingBatch,
    Rows,
    Severity,
    Times,
    overdue,
)
from detectors.care import Care, CareRows, shrunk
from homecare.schema import Wearable
from homecare.thresholds import InactivitySettings

__all__ = [
    "InactivityDetector",
    "InactivitySettings",
    "activity_signs",
    "gaps_from_signs",
    "home_gaps",
    "hourly_longest",
]

H = 3600.0
FRONT = DOOR_ROLES.index("front")


def activity_signs(batch: ReadingBatch, s: InactivitySettings | None = None) -> Bools:
    """Which entries of a batch are signs of activity (see the module doc).

    For a ``bed`` batch, getting out of bed is not visible from one reading alone; the
    detector adds it from its state, and :func:`gaps_from_signs` sees it as the last
    in-bed reading."""
    s = s or InactivitySettings()
    match batch.stream:
        case BatchStream.WEARABLE:
            return (batch.column(Wearable.mag_std) >= s.move_g) | (batch.column("steps") > 0)
        case BatchStream.DOOR:
            return np.ones(len(batch), bool)
        case BatchStream.BED:
            return batch.column("presence") > 0.5
        case BatchStream.MOTION:  # cleared (a PIR's timeout, an appliance off) is no sign
            return batch.column("detected") > 0.5
        case BatchStream.MAT:
            return np.ones(len(batch), bool)
    return np.zeros(len(batch), bool)


def home_gaps(rows: Rows, ts: Times, on_mat: Bools, front: Bools) -> tuple[Rows, Times, Times]:
    """The gaps the home timer measures (row, start, length), from each row's signs of
    life in time order: ``on_mat[i]`` whether a mat (bed or chair) is occupied after sign
    *i*, ``front[i]`` whether it was the front door. A gap counts when it starts off
    every mat and not at the front door (the elder may have gone out)."""
    order = np.lexsort((ts, rows))
    r, t, m, f = rows[order], ts[order], on_mat[order], front[order]
    same = r[1:] == r[:-1]
    armed = same & ~m[:-1] & ~f[:-1]
    return r[1:][armed], t[:-1][armed], (t[1:] - t[:-1])[armed]


def gaps_from_signs(rows: Rows, ts: Times) -> tuple[Rows, Times, Times]:
    """Gaps (row, start, length) between consecutive signs of each row, in any order in."""
    order = np.lexsort((ts, rows))
    r, t = rows[order], ts[order]
    same = r[1:] == r[:-1]
    return r[1:][same], t[:-1][same], (t[1:] - t[:-1])[same]


def hourly_longest(
    rows: Rows, start: Times, length: Times, utc_offset_s: npt.NDArray[np.floating], floor_s: float
) -> tuple[Rows, npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Per observed local hour of each row: (row, hour of day, longest stillness ongoing in
    it). ``gaps`` must tile each row's observed span (as from :func:`gaps_from_signs`);
    ``utc_offset_s`` is indexed by row. Hours whose gaps are all short get ``floor_s``."""
    if len(rows) == 0:
        return rows, np.zeros(0, np.int64), np.zeros(0)
    off = utc_offset_s[rows]
    a = start + off
    b = a + length
    first = np.floor(a / H).astype(np.int64)
    last = np.floor(np.nextafter(b, -np.inf) / H).astype(np.int64)
    n = np.maximum(last - first + 1, 1)
    rep = np.repeat(np.arange(len(rows)), n)
    slot = first[rep] + (np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n))
    ongoing = np.minimum(b[rep], (slot + 1) * H) - a[rep]
    value = np.maximum(ongoing, floor_s)
    key_row = rows[rep]
    # maximum per (row, absolute hour slot)
    order = np.lexsort((value, slot, key_row))
    kr, ks, kv = key_row[order], slot[order], value[order]
    end = np.r_[(kr[1:] != kr[:-1]) | (ks[1:] != ks[:-1]), True]
    return kr[end], np.mod(ks[end], 24), kv[end]


def _features(hour: npt.ArrayLike, harmonics: int) -> npt.NDArray[np.float64]:
    angle = 2 * np.pi * (np.asarray(hour, np.float64) + 0.5) / 24
    k = np.arange(1, harmonics + 1)
    return np.concatenate([np.sin(angle[:, None] * k), np.cos(angle[:, None] * k)], axis=1)


class InactivityDetector(CareRows):
    """Warns when an elder shows no sign of activity for longer than their own limit."""

    kind: ClassVar[str] = "inactivity"
    streams: ClassVar[frozenset[str]] = frozenset(
        {BatchStream.WEARABLE, BatchStream.DOOR, BatchStream.BED, BatchStream.MOTION,
         BatchStream.MAT}
    )  # fmt: skip
    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {
        "last_active": np.nan, "in_bed": False, "bed_ts": -np.inf, "bed_move_ts": np.nan,
        "fired": False, "fired_bed": False, "learned": np.nan, "weight": 0.0,
        "upright": np.nan, "upright_ts": np.nan, "lying_ts": np.nan, "fired_lying": False,
        "occupied_ts": -np.inf, "home": False, "on_mat": False, "front_ts": -np.inf,
        "inside_ts": -np.inf,
        "home_learned": np.nan, "home_weight": 0.0,
    }  # fmt: skip

    def __init__(
        self, settings: InactivitySettings | None = None, care: Care | None = None
    ) -> None:
        self.settings = settings or InactivitySettings()
        self.care = care or Care()
        self.last_active = np.zeros(0)  # time of the last sign (NaN: no data yet)
        self.in_bed = np.zeros(0, bool)  # last bed reading had presence
        self.bed_ts = np.zeros(0)  # time of that reading
        self.bed_move_ts = np.zeros(0)  # last bed movement (or getting into bed)
        self.fired = np.zeros(0, bool)  # warned for the current gap
        self.fired_bed = np.zeros(0, bool)  # warned for the current still stretch in bed
        self.learned = np.zeros((0, 24), np.float32)  # personal limit per local hour, s
        self.weight = np.zeros(0, np.float32)  # its weight against the care default
        self.upright = np.zeros((0, 3))  # unit gravity direction while walking
        self.upright_ts = np.zeros(0)  # last frame not lying on a body
        self.lying_ts = np.zeros(0)  # last frame lying on a body
        self.fired_lying = np.zeros(0, bool)  # warned for the current lie
        self.occupied_ts = np.zeros(0)  # last bed reading with presence
        self.home = np.zeros(0, bool)  # has ambient sensors (a motion or mat event seen)
        self.on_mat = np.zeros(0, bool)  # a chair (or bed) mat occupied
        self.front_ts = np.zeros(0)  # last front-door event
        self.inside_ts = np.zeros(0)  # last other sign: later than the front door = home
        self.home_learned = np.zeros((0, 24), np.float32)  # home limit per local hour, s
        self.home_weight = np.zeros(0, np.float32)  # its weight against the care default
        self.n = 0  # rows seen

    def update(self, batch: ReadingBatch) -> list[Detection]:
        if len(batch) == 0 or batch.stream not in self.streams:
            return []
        rows, ts = batch.rows, batch.ts
        self.reserve(rows)
        # the clock of a row with no sign yet starts at its first data of any kind
        fresh = np.isnan(self.last_active[rows])
        if fresh.any():
            np.fmin.at(self.last_active, rows[fresh], ts[fresh])
        sign = activity_signs(batch, self.settings)
        if batch.stream in (BatchStream.MOTION, BatchStream.MAT, BatchStream.DOOR):
            self._home(batch, sign)
        if batch.stream == BatchStream.BED:
            presence = batch.column("presence") > 0.5
            movement = batch.column("movement")
            # a mat reports no movement: it cannot show stillness, so it never looks still
            moved = (movement >= self.settings.bed_move) | np.isnan(movement)
            sign |= ~presence & self.in_bed[rows]  # getting out of bed
            entered = presence & ~self.in_bed[rows]
            np.fmax.at(self.occupied_ts, rows[presence], ts[presence])
            self.in_bed[rows] = presence
            # a bed mat's state is held until it changes: fresh for ever
            held = batch.column("held") > 0.5
            self.bed_ts[rows] = np.where(held, np.inf, ts)
            stirred = presence & (moved | entered)
            if stirred.any():
                np.fmax.at(self.bed_move_ts, rows[stirred], ts[stirred])
                self.fired_bed[rows[stirred]] = False
            if held.any():  # a mat cannot show stillness: no still timer while on it
                self.bed_move_ts[rows[held & presence]] = np.inf
                self.bed_move_ts[rows[held & ~presence]] = ts[held & ~presence]
        if batch.stream == BatchStream.WEARABLE and "gx" in batch.values:
            self._posture(batch)
        if sign.all():
            np.maximum.at(self.last_active, rows, ts)
            self.fired[rows] = False
        elif sign.any():
            np.maximum.at(self.last_active, rows[sign], ts[sign])
            self.fired[rows[sign]] = False
        return []

    def _home(self, batch: ReadingBatch, sign: Bools) -> None:
        """Ambient state: home rows, the chair mat, and the times of the last front-door
        event and of the last sign inside (by time, whatever order streams come in)."""
        rows, ts = batch.rows, batch.ts
        if batch.stream != BatchStream.DOOR:
            self.home[rows] = True
        front = np.zeros(len(rows), bool)
        if batch.stream == BatchStream.DOOR:
            front = batch.column("role") == FRONT
        np.fmax.at(self.front_ts, rows[front], ts[front])
        inside = sign & ~front
        np.fmax.at(self.inside_ts, rows[inside], ts[inside])
        if batch.stream == BatchStream.MAT:  # each row's last entry decides
            last = np.zeros(len(rows), bool)
            last[len(rows) - 1 - np.unique(rows[::-1], return_index=True)[1]] = True
            self.on_mat[rows[last]] = batch.column("occupied")[last] > 0.5

    def away(self, n: int) -> Bools:
        """Rows whose last sign was the front door: maybe out (the timer waits)."""
        away: Bools = self.front_ts[:n] >= self.inside_ts[:n]
        return away

    def _posture(self, batch: ReadingBatch) -> None:
        """Learn upright from walking frames; note the last lying and not-lying frame."""
        rows, ts = batch.rows, batch.ts
        g = np.column_stack([batch.column(c) for c in ("gx", "gy", "gz")])
        g /= np.sqrt(np.einsum("ij,ij->i", g, g))[:, None] + 1e-9
        walking = np.flatnonzero((batch.column("steps") > 0) & ~np.isnan(g[:, 0]))
        if len(walking):  # an EWMA per row (of a row's walking frames in a batch, one counts)
            r = rows[walking]
            old = self.upright[r]
            w = np.where(np.isnan(old[:, :1]), 1.0, self.settings.upright_weight)
            new = np.where(np.isnan(old), 0.0, old) * (1 - w) + g[walking] * w
            self.upright[r] = new / (np.sqrt(np.einsum("ij,ij->i", new, new))[:, None] + 1e-9)
        cos = np.einsum("ij,ij->i", g, self.upright[rows])  # NaN: posture or upright unknown
        limit = np.cos(np.radians(self.settings.lying_deg))
        lying = (batch.column("hr") > 0) & (cos <= limit)  # on a body: a heart rate
        up = cos > limit  # a dropped heart rate or an unknown posture changes nothing
        np.fmax.at(self.lying_ts, rows[lying], ts[lying])
        np.fmax.at(self.upright_ts, rows[up], ts[up])
        self.fired_lying[rows[up]] = False

    def limit_s(self, rows: Rows, now: float) -> npt.NDArray[np.float64]:
        """Each row's current daytime limit: learned for this local hour, shrunk towards
        the care-level default, clipped to the care level's bounds."""
        care = self.care
        hour = (care.local_s(rows, now) // H).astype(np.int64)
        limit = care.learned_limit("inactivity", rows, self.learned[rows, hour], self.weight[rows])
        home = self.home[rows]
        if home.any():  # off the mats at home: the home limit
            h, hr = rows[home], hour[home]
            lo = care.limit("home_inactivity_min_s", h)
            mix = shrunk(lo, self.home_learned[h, hr], self.home_weight[h])
            limit[home] = np.clip(mix, lo, care.limit("home_inactivity_max_s", h))
        return limit

    def tick(self, now: float) -> list[Detection]:
        """Three timers, each fired once per wait: no sign of activity (out of bed), no
        bed movement (in bed), lying out of bed."""
        n, s, care = self.n, self.settings, self.care
        if n == 0:
            return []
        in_bed = self.in_bed[:n] & (now - self.bed_ts[:n] <= s.bed_fresh_s)
        # only rows past their care level's lowest limit need their personal limit
        floor = care.limit("inactivity_min_s", np.arange(n))
        home = self.home[:n]
        floor = np.where(home, care.limit("home_inactivity_min_s", np.arange(n)), floor)
        gaps = overdue(
            self.last_active[:n], self.fired[:n], now, lambda r: self.limit_s(r, now),
            where=~in_bed & ~(home & (self.on_mat[:n] | self.away(n))), floor=floor,
        )  # fmt: skip
        still = overdue(
            self.bed_move_ts[:n], self.fired_bed[:n], now,
            lambda r: care.limit("in_bed_still_s", r), where=in_bed,
        )  # fmt: skip
        lying, upright = self.lying_ts[:n], self.upright_ts[:n]
        lies = overdue(
            # from the last upright frame (within a frame of lying down) or leaving the bed
            np.maximum(upright, self.occupied_ts[:n]), self.fired_lying[:n], now,
            lambda r: care.limit("lying_s", r),
            where=(lying > upright)  # NaN (never lying, or never upright) compares False
            & (now - lying <= s.bed_fresh_s)  # on a body, still streaming
            & ~self.in_bed[:n] & (now - self.bed_ts[:n] <= s.bed_fresh_s),  # a bed says empty
        )  # fmt: skip
        found = [
            self._detection(int(r), now, float(w), float(lim), bed, lying=lie)
            for (rows, waited, limit), bed, lie in ((gaps, 0.0, False), (still, 1.0, False),
                                                    (lies, 0.0, True))
            for r, w, lim in zip(rows, waited, limit, strict=True)
        ]  # fmt: skip
        found.sort(key=lambda d: d.row)
        return found

    def _detection(
        self, row: int, now: float, gap: float, limit: float, bed: float, *, lying: bool = False
    ) -> Detection:
        hour = float(self.care.local_s(np.array([row]), now)[0] // H)
        evidence = {"gap_s": round(float(gap), 1), "limit_s": round(float(limit), 1),
                    "in_bed": bed, "local_hour": hour, "lying": float(lying)}  # fmt: skip
        severity = Severity.CRITICAL if lying else Severity.WARNING
        return Detection(self.kind, row, now, severity, evidence)

    def fit(
        self,
        rows: Rows,
        gap_start: Times,
        gap_len: Times,
    ) -> None:
        """Learn each row's limit per local hour from its gaps between signs (as from
        :func:`gaps_from_signs` over 2-4 weeks of history). Rows not in the input keep
        their limits; rows with fewer than ``min_hours`` observed hours get none."""
        if len(rows) == 0:
            return
        self.reserve(rows)
        self.care.ensure(self.n)
        self._fit_curves(rows, gap_start, gap_len, self.learned, self.weight)

    def fit_home(self, rows: Rows, gap_start: Times, gap_len: Times) -> None:
        """Learn the home limit per local hour from the gaps of :func:`home_gaps` (at
        home, off the mats), as :meth:`fit` does; marks the rows as homes."""
        if len(rows) == 0:
            return
        self.reserve(rows)
        self.care.ensure(self.n)
        self.home[rows] = True
        self._fit_curves(rows, gap_start, gap_len, self.home_learned, self.home_weight)

    def _fit_curves(
        self,
        rows: Rows,
        gap_start: Times,
        gap_len: Times,
        learned: npt.NDArray[np.float32],
        weights: npt.NDArray[np.float32],
    ) -> None:
        s = self.settings
        r, hour, longest = hourly_longest(
            rows, gap_start, gap_len, self.care.utc_offset_s, s.min_gap_s
        )
        from sklearn.linear_model import QuantileRegressor

        counts = np.bincount(r, minlength=self.n)
        bounds = np.r_[0, np.cumsum(counts)]
        grid = _features(np.arange(24), s.harmonics)
        for row in np.flatnonzero(counts):  # offline, once a day: one small fit per elder
            lo, hi = bounds[row], bounds[row + 1]
            if hi - lo < s.min_hours:
                learned[row] = np.nan
                weights[row] = 0.0
                continue
            y = np.log(longest[lo:hi])
            model = QuantileRegressor(quantile=s.quantile, alpha=0.0, solver="highs")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # HiGHS may note a degenerate problem
                model.fit(_features(hour[lo:hi], s.harmonics), y)
            learned[row] = np.exp(model.predict(grid)) * s.margin
            days = (hi - lo) / 24
            weights[row] = days / (days + s.prior_days)

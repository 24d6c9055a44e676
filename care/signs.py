"""Signs of decline: an elder's week against their own previous four weeks.

Input is :class:`Days`: daily figures of a site's elders (elder × day, ``NaN`` where there
is no data), the rollups' fields as :func:`care.rollups.read_days` reads them from
InfluxDB (or :func:`device_sim.decline.simulate_days` makes them). :func:`features`
turns them into what a worker understands (steps, active hours, times up at night,
outings, hours in bed, resting pulse, hours the wearable was not worn, hours the bed
sensor was silent), and :func:`assess` compares, for every elder at once:

- **level**: the week's median against the baseline's median, in units of the
  baseline's own spread (scikit-learn's :class:`~sklearn.preprocessing.RobustScaler`:
  median and interquartile range, fitted with every elder as a column, NaN-aware), and
  as a change in the feature's units. A sign needs both: a change large for *this*
  elder and large enough to matter (a 3-step drop is not a sign, however regular).
- **trend**: the Theil–Sen slope (median of every pairwise slope, vectorised over
  elders) over the last 21 days: a decline still under way reaches the list before
  the week's median has moved far; it counts when the change it projects over two
  weeks passes the same two tests.

- **drift** (:func:`drift`), daily: each day of the last two weeks against the elder's
  own median and MAD over up to eight weeks before them, the signs' daily z combined
  (weighted Stouffer, capped) and matched to a course rising linearly from 0 to today
  (Σ zₜ·t / √Σ t²): a frailty course moves every sign a little, more each day, long
  before a week's median has moved far.

Each sign carries its numbers (:class:`Sign`): the week's value, the baseline's, the
change and the robust z. Scoring (for the ranking) is separate from deciding.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> steps = rng.normal(3000, 300, (2, 35)); steps[1, 28:] *= 0.5
>>> days = Days(("anna", "ben"), 0.0, {"steps": steps})
>>> [(s.elder, s.sign) for s in assess(days).signs]
[('ben', 'activity')]
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.preprocessing import RobustScaler

from device_sim.decline import (
    ACTIVE_S,
    BED_HR,
    COVERED_S,
    EXITS,
    FRONT_OPENS,
    IN_BED_S,
    NIGHT_S,
    STEPS,
    WORN_S,
)

Floats = npt.NDArray[np.float64]

BASELINE_DAYS = 28
WEEK_DAYS = 7
TREND_DAYS = 21
WINDOW_DAYS = BASELINE_DAYS + WEEK_DAYS
MIN_BASELINE = 14
"""Days with data the baseline needs, or the feature says nothing about the elder."""
MIN_WEEK = 3
IQR_SIGMA = 1.349
"""The interquartile range of a normal distribution, in σ."""
MEDIAN_SE = 1.2533
"""The standard error of a median, in σ/√n."""
TREND_SE = 1.1 * 14 / np.sqrt(TREND_DAYS * (TREND_DAYS**2 - 1) / 12)
"""The standard error of a two-week change projected by the Theil–Sen slope over
:data:`TREND_DAYS` days, in σ (least squares' ×1.1 for Theil–Sen's efficiency)."""
Z_ALONE = 7.0
"""One sign this strong flags the elder by itself."""
Z_TOGETHER = 6.0
"""Every sign's best positive z, summed over √(signs with data): flags at this."""
Z_REPORT = 2.0
"""A sign of a flagged elder is reported (a reason) from this z."""
Z_CAP = 8.0
"""No one sign counts for more than this in the sum (a dead sensor is one sign)."""
HISTORY_DAYS = 70
"""Days of figures :func:`assess` reads: the drift's baseline and its recent days."""
RECENT_DAYS = 14
"""The drift's recent days; the baseline is up to eight weeks before them."""
DRIFT_SIGNS = ("activity", "night", "out", "bed", "pulse")
"""Signs the daily drift combines (not the data's own: unworn, offline)."""
MAD_SIGMA = 1.4826
"""The median absolute deviation of a normal distribution, in σ."""
DAY_CLIP = 3.0
"""One day's z of one feature counts at most this much (a wild day is one day)."""
DRIFT_BASELINE = 28
"""Days with data the drift's baseline needs: a MAD of three weeks is too rough to
sum two weeks of small daily z against."""
DRIFT_WEIGHTS = {"activity": 1.0, "night": 1.0, "out": 0.7, "bed": 1.5, "pulse": 1.5}
"""Each sign's weight in the day's combined z: how far a frailty course moves it in
units of its own daily noise (time in bed and the resting pulse most; outings, a
count of a few a day, least: the signs' mean z two weeks into the simulated declines)."""
DRIFT_CAP = 1.25
"""A day's combined z counts at most this (a cold of three days is no frailty course)."""
RAMP_DAYS = (10, 12, 14)
"""Lengths of the course the drift's matched filter tries (the best counts)."""
DRIFT_H = 2.75
"""The drift flags at this score (tuned with ``homecare care evaluate`` on seeds 0–2)."""
COVERED_ENOUGH = 0.5
"""A night counts when the bed sensor covered at least this share of it."""


@dataclass(frozen=True, slots=True)
class Feature:
    """One daily figure and what makes its change a sign."""

    name: str
    sign: str
    """The sign it feeds (``activity``, ``night``…): the reason a worker reads."""
    worse: int
    """+1: higher is worse; −1: lower is worse."""
    min_change: float
    """Least change that matters, in the feature's units (absolute)."""
    min_rel: float = 0.0
    """… and as a share of the baseline (0: none)."""
    z: float = 3.0
    unit: str = ""
    count: bool = False
    """A count of events (Poisson: its spread is at least √mean, whatever the IQR)."""


FEATURES: tuple[Feature, ...] = (
    Feature("steps", "activity", -1, 150, 0.15, unit="steps"),
    Feature("active_h", "activity", -1, 0.2, 0.15, unit="h"),
    Feature("night_up", "night", +1, 0.5, 0.0, unit="times", count=True),
    Feature("outings", "out", -1, 0.5, 0.2, unit="door openings", count=True),
    Feature("in_bed_h", "bed", +1, 0.5, 0.06, unit="h"),
    Feature("resting_hr", "pulse", +1, 2.0, 0.0, unit="bpm"),
    Feature("not_worn_h", "unworn", +1, 1.5, 0.0, unit="h"),
    Feature("offline_h", "offline", +1, 1.5, 0.0, unit="h"),
)
BY_NAME = {f.name: f for f in FEATURES}
SIGNS = tuple(dict.fromkeys(f.sign for f in FEATURES))


@dataclass(frozen=True)
class Days:
    """Daily figures of elders: ``figures[name]`` is elder × day; day 0 starts at ``start``
    (Unix s, the site's midnight). Names are the rollups' (:data:`device_sim.decline.FIGURES`)
    or already :data:`FEATURES` names."""

    elders: tuple[str, ...]
    start: float
    figures: Mapping[str, Floats]

    @property
    def days(self) -> int:
        return next(iter(self.figures.values())).shape[1] if self.figures else 0


def _nan(shape: tuple[int, int]) -> Floats:
    return np.full(shape, np.nan)


def features(days: Days) -> dict[str, Floats]:
    """The care features (elder × day) from the rollups' daily figures; names already
    features pass through. An elder with no data of a device all window keeps NaN
    (no wearable is not "never worn")."""
    f = days.figures
    shape = (len(days.elders), days.days)
    out: dict[str, Floats] = {k: np.asarray(v, float) for k, v in f.items() if k in BY_NAME}
    if STEPS in f:
        out["steps"] = np.asarray(f[STEPS], float)
    if ACTIVE_S in f:
        out["active_h"] = np.asarray(f[ACTIVE_S], float) / 3600
    if WORN_S in f:
        worn = np.asarray(f[WORN_S], float)
        has = np.isfinite(worn).any(axis=1, keepdims=True)
        out["not_worn_h"] = np.where(has, 24 - np.nan_to_num(worn, nan=0.0) / 3600, np.nan)
    if COVERED_S in f:
        covered = np.asarray(f[COVERED_S], float)
        has = np.isfinite(covered).any(axis=1, keepdims=True)
        silent = (NIGHT_S - np.nan_to_num(covered, nan=0.0)) / 3600
        out["offline_h"] = np.where(has, silent, np.nan)
        good = np.nan_to_num(covered, nan=0.0) >= COVERED_ENOUGH * NIGHT_S
    else:
        good = np.ones(shape, bool)
    if EXITS in f:
        out["night_up"] = np.where(good, np.asarray(f[EXITS], float), np.nan)
    if IN_BED_S in f:
        out["in_bed_h"] = np.where(good, np.asarray(f[IN_BED_S], float) / 3600, np.nan)
    if FRONT_OPENS in f:
        out["outings"] = np.asarray(f[FRONT_OPENS], float)
    if BED_HR in f:
        out["resting_hr"] = np.asarray(f[BED_HR], float)
    return out


def theil_sen(y: Floats) -> Floats:
    """Slope per day of each row (Theil–Sen: the median of all pairwise slopes), NaN-aware.

    >>> theil_sen(np.array([[1.0, 2.0, 3.0, 40.0, 5.0], [5.0, np.nan, 3.0, 2.0, 1.0]]))
    array([ 1., -1.])
    """
    d = y.shape[1]
    i, j = np.triu_indices(d, k=1)
    slopes = (y[:, j] - y[:, i]) / (j - i)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN slope
        out: Floats = np.nanmedian(slopes, axis=1)
    return out


@dataclass(frozen=True, slots=True)
class Sign:
    """One sign of one elder, with its evidence."""

    elder: str
    sign: str
    feature: str
    week: float
    """The week's median."""
    baseline: float
    """The four weeks' median."""
    change: float
    """``week − baseline``, or the trend's projected change over two weeks (``how``)."""
    z: float
    """The change in units of its standard error (σ from the baseline's interquartile
    range), signed so that positive is worse."""
    how: str = "level"
    """``level``: the week's median moved; ``trend``: a decline under way; ``drift``:
    day after day a little worse (the daily ramp; ``week`` is the run's median, ``z``
    the feature's own ramp score over the run)."""

    @property
    def rel(self) -> float:
        return self.change / abs(self.baseline) if self.baseline else 0.0

    def evidence(self) -> dict[str, float]:
        return {"week": round(self.week, 2), "baseline": round(self.baseline, 2),
                "change": round(self.change, 2), "z": round(self.z, 2)}  # fmt: skip


@dataclass
class Assessment:
    """The signs of every elder in a window: ``signs`` (fired), and per-elder scores."""

    elders: tuple[str, ...]
    start: float
    signs: list[Sign] = field(default_factory=list)
    score: dict[str, float] = field(default_factory=dict)

    def flagged(self) -> set[str]:
        return {s.elder for s in self.signs}

    def of(self, elder: str) -> list[Sign]:
        return [s for s in self.signs if s.elder == elder]


def _robust(base: Floats) -> tuple[Floats, Floats]:
    """Per-row median and interquartile range (elders are the scaler's columns)."""
    scaler = RobustScaler(quantile_range=(25.0, 75.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN elder
        scaler.fit(base.T)
    centre = np.asarray(scaler.center_, float)
    scale = np.asarray(scaler.scale_, float)
    return centre, scale


def _level_and_trend(
    spec: Feature, values: Floats
) -> tuple[Floats, Floats, Floats, list[tuple[str, Floats, Floats]]]:
    """(ok, week value, baseline value, [(how, change, z)]) of one feature, every elder."""
    x = values[:, -WINDOW_DAYS:]
    base, week = x[:, :BASELINE_DAYS], x[:, BASELINE_DAYS:]
    n_base = np.isfinite(base).sum(axis=1)
    n_week = np.isfinite(week).sum(axis=1)
    ok = (n_base >= MIN_BASELINE) & (n_week >= MIN_WEEK)
    centre, iqr = _robust(base)
    # A day's spread (σ from the IQR), floored: an elder as regular as clockwork still
    # varies by a quarter of the least change that matters.
    sigma = np.maximum(iqr / IQR_SIGMA, spec.min_change / 4)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if spec.count:  # counts: means, and a Poisson spread at least
            centre = np.nanmean(base, axis=1)
            now = np.nanmean(week, axis=1)
            sigma = np.maximum(sigma, np.sqrt(np.maximum(centre, 0.5)))
            spread = sigma * np.sqrt(1 / n_week + 1 / n_base)
        else:  # the spread of a median of n days is about 1.25 σ / √n
            now = np.nanmedian(week, axis=1)
            spread = MEDIAN_SE * sigma * np.sqrt(1 / n_week + 1 / n_base)
        change = now - centre
        trend = theil_sen(x[:, -TREND_DAYS:]) * 14
        tests = []
        for how, delta, se in (("level", change, spread), ("trend", trend, TREND_SE * sigma)):
            z = np.where(ok, spec.worse * delta / se, np.nan)
            if how == "trend":  # a trend counts once the week has begun to move too
                z = np.where(spec.worse * change > 0, z, np.nan)
            tests.append((how, delta, z))
    return ok, now, centre, tests


@dataclass(frozen=True)
class Drift:
    """The daily drift of every elder (see :func:`drift`)."""

    score: Floats
    """Each elder's ramp score (the best over :data:`RAMP_DAYS`; 0 without data)."""
    run: npt.NDArray[np.int64]
    """Days of the ramp that scored best (the course's days so far)."""
    features: dict[str, tuple[Floats, Floats, Floats]]
    """Feature → (the run's median, the baseline's median, the run's z: its daily z
    weighted by the ramp, positive is worse)."""


def _daily_z(spec: Feature, values: Floats) -> tuple[Floats, Floats]:
    """(elder × recent day z, baseline centre) of one feature: each day against the
    elder's own median and MAD over up to eight weeks before the recent days (at
    least :data:`DRIFT_BASELINE` days with data)."""
    x = values[:, -HISTORY_DAYS:]
    base, recent = x[:, :-RECENT_DAYS], x[:, -RECENT_DAYS:]
    ok = np.isfinite(base).sum(axis=1) >= DRIFT_BASELINE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN elder
        if spec.count:
            centre = np.nanmean(base, axis=1)
            sigma = np.maximum(np.nanstd(base, axis=1), np.sqrt(np.maximum(centre, 0.5)))
        else:
            centre = np.nanmedian(base, axis=1)
            mad = np.nanmedian(np.abs(base - centre[:, None]), axis=1) * MAD_SIGMA
            sigma = np.maximum(mad, spec.min_change / 4)
    z = np.clip(spec.worse * (recent - centre[:, None]) / sigma[:, None], -DAY_CLIP, DAY_CLIP)
    return np.where(ok[:, None], z, np.nan), centre


def _ramp(z: Floats, days: int) -> Floats:
    """Each row's last ``days`` days against a course rising linearly to today: the
    matched filter Σ zₜ·t / √Σ t² (t = 1…days), days without data left out."""
    x = z[:, -days:]
    w = np.arange(1, days + 1, dtype=np.float64)[None, :]
    seen = np.isfinite(x)
    norm = np.sqrt((np.where(seen, w, 0.0) ** 2).sum(axis=1))
    total = np.where(seen, x * w, 0.0).sum(axis=1)
    out: Floats = np.where(norm > 0, total / np.maximum(norm, 1e-9), np.nan)
    return out


def drift(feats: Mapping[str, Floats]) -> Drift:
    """The daily drift of each elder over the last :data:`RECENT_DAYS` days, every
    elder at once: a frailty course moves every sign a little, more each day.

    Each day, each feature's z against the elder's own robust baseline; a sign's z is
    its features' mean (steps and active hours are one sign), and the day's combined z
    is the signs' weighted Stouffer sum (:data:`DRIFT_WEIGHTS`) over those with data
    that day, capped at :data:`DRIFT_CAP` (a cold of three days is no frailty course).
    The score is the matched filter of a course rising linearly from 0 over the last
    L days (the best of :data:`RAMP_DAYS`): today's day counts most, the first least;
    a stable elder's score is about N(0, 1)."""
    n = next(iter(feats.values())).shape[0] if feats else 0
    per_sign: dict[str, list[Floats]] = {s: [] for s in DRIFT_SIGNS}
    zs: dict[str, tuple[Floats, Floats]] = {}
    for name, values in feats.items():
        spec = BY_NAME[name]
        if spec.sign in per_sign and values.shape[1] > RECENT_DAYS:
            zs[name] = _daily_z(spec, values)
            per_sign[spec.sign].append(zs[name][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a sign without data that day
        signs = [(np.nanmean(np.stack(v), axis=0), DRIFT_WEIGHTS[s])
                 for s, v in per_sign.items() if v]  # fmt: skip
    if not signs:
        return Drift(np.zeros(n), np.zeros(n, np.int64), {})
    by_sign = np.stack([z for z, _ in signs])
    weight = np.array([w for _, w in signs])[:, None, None]
    seen = np.isfinite(by_sign)
    total = np.where(seen, weight * by_sign, 0.0).sum(axis=0)
    norm = np.sqrt(np.where(seen, weight**2, 0.0).sum(axis=0))
    day = np.clip(total / np.maximum(norm, 1e-9), -DRIFT_CAP, DRIFT_CAP)
    combined = np.where(norm > 0, day, np.nan)
    ramps = np.stack([_ramp(combined, d) for d in RAMP_DAYS])  # ramp lengths × elders
    best = np.nanargmax(np.where(np.isfinite(ramps), ramps, -np.inf), axis=0)
    score = np.nan_to_num(np.take_along_axis(ramps, best[None, :], axis=0)[0], nan=0.0)
    run = np.asarray(RAMP_DAYS, np.int64)[best]
    in_run = np.arange(RECENT_DAYS)[None, :] >= RECENT_DAYS - run[:, None]
    out: dict[str, tuple[Floats, Floats, Floats]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, (z, centre) in zs.items():
            recent = feats[name][:, -RECENT_DAYS:]
            now = np.nanmedian(np.where(in_run, recent, np.nan), axis=1)
            each = np.stack([_ramp(z, d) for d in RAMP_DAYS])
            z_run = np.take_along_axis(each, best[None, :], axis=0)[0]
            out[name] = (now, centre, z_run)
    return Drift(score, run, out)


def assess(days: Days, *, z_scale: float = 1.0) -> Assessment:
    """The signs of the last :data:`WEEK_DAYS` days of ``days`` against the
    :data:`BASELINE_DAYS` before them (earlier days are ignored).

    Deciding: an elder is flagged when one sign is strong (z ≥ :data:`Z_ALONE`) or the
    signs together are (Stouffer's sum of each sign's best positive z over √ the signs
    with data ≥ :data:`Z_TOGETHER`: a frailty course moves many a little), and at least
    one sign's change is large enough to matter (two, when together); the signs reported
    are those with z ≥ :data:`Z_REPORT` whose change matters. Or when the daily drift's
    score reaches :data:`DRIFT_H`, with the signs whose run moved enough to matter, or
    else the one that moved the worse way most (``how="drift"``). ``days`` may hold up
    to :data:`HISTORY_DAYS` days (the drift's baseline). ``z_scale`` multiplies the
    thresholds (the evaluation's knob)."""
    if days.days < WINDOW_DAYS:
        raise ValueError(f"signs need {WINDOW_DAYS} days of figures, not {days.days}")
    feats = features(days)
    out = Assessment(days.elders, days.start + (days.days - WINDOW_DAYS) * 86400.0)
    n = len(days.elders)
    best = {sign: np.full(n, np.nan) for sign in SIGNS}
    level_sum = {sign: np.zeros(n) for sign in SIGNS}
    level_n = {sign: np.zeros(n) for sign in SIGNS}
    candidates: dict[tuple[int, str], Sign] = {}
    for name, values in feats.items():
        spec = BY_NAME[name]
        _, now, centre, tests = _level_and_trend(spec, values)
        for how, delta, z in tests:
            best[spec.sign] = np.fmax(best[spec.sign], np.minimum(z, Z_CAP))
            if how == "level":
                seen = np.isfinite(z)
                level_sum[spec.sign] += np.where(seen, np.clip(z, -Z_CAP, Z_CAP), 0.0)
                level_n[spec.sign] += seen
            worse = spec.worse * delta
            big = (worse >= spec.min_change) & (worse >= spec.min_rel * np.abs(centre))
            for i in np.flatnonzero(big & (np.nan_to_num(z) >= Z_REPORT * z_scale)):
                key = (int(i), spec.sign)
                sign = Sign(days.elders[i], spec.sign, name, float(now[i]), float(centre[i]),
                            float(delta[i]), float(z[i]), how)  # fmt: skip
                if key not in candidates or sign.z > candidates[key].z:
                    candidates[key] = sign
    z_all = np.stack([best[s] for s in SIGNS])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        strongest = np.nanmax(z_all, axis=0)
    # Stouffer over signs of each sign's mean level z, signed: ordinary ups and downs
    # cancel out, a decline moves every sign the same way.
    per_sign = np.stack([np.where(level_n[s] > 0, level_sum[s] / np.maximum(level_n[s], 1), np.nan)
                         for s in SIGNS])  # fmt: skip
    counted = np.isfinite(per_sign).sum(axis=0)
    together = np.nansum(per_sign, axis=0) / np.sqrt(np.maximum(counted, 1))
    reported = np.zeros(n, int)
    for k, _ in candidates:
        reported[k] += 1
    flag = (np.nan_to_num(strongest) >= Z_ALONE * z_scale) | (
        (together >= Z_TOGETHER * z_scale) & (reported >= 2)
    )
    chosen = {key: sign for key, sign in candidates.items() if flag[key[0]]}
    # The daily drift: past its threshold, with the signs whose run moved enough to
    # matter as its reasons, or else the one that moved the worse way most (the
    # course's first days are small in every sign; together they are not).
    found = drift(feats)
    drifting = found.score >= DRIFT_H * z_scale
    names = list(found.features)
    if names:
        # (now, centre, z) × feature × elder
        runs = np.stack([found.features[k] for k in names], axis=1)
        worse = np.array([BY_NAME[k].worse for k in names])[:, None] * (runs[0] - runs[1])
        rel = np.array([[BY_NAME[k].min_change, BY_NAME[k].min_rel] for k in names])
        big = (worse >= rel[:, :1]) & (worse >= rel[:, 1:] * np.abs(runs[1]))
        z = np.where(worse > 0, np.nan_to_num(runs[2], nan=-np.inf), -np.inf)
        strong = big & (z >= Z_REPORT * z_scale)
        lead = np.zeros_like(strong)
        lead[np.argmax(z, axis=0), np.arange(n)] = True
        report = drifting & (strong | (lead & ~strong.any(axis=0) & np.isfinite(z)))
        for f, i in zip(*np.nonzero(report), strict=True):
            key = (int(i), BY_NAME[names[f]].sign)
            median, base, z_run = (float(v) for v in runs[:, f, i])
            sign = Sign(days.elders[i], key[1], names[f], median, base, median - base, z_run,
                        "drift")  # fmt: skip
            if key not in chosen or sign.z > chosen[key].z:
                chosen[key] = sign
    for _, sign in sorted(chosen.items(), key=lambda kv: (kv[0][0], SIGNS.index(kv[0][1]))):
        out.signs.append(sign)
    score = np.fmax(together, found.score / DRIFT_H * Z_TOGETHER)
    out.score = {e: float(score[i]) if out.of(e) else 0.0 for i, e in enumerate(days.elders)}
    return out

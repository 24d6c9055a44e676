"""Slow changes of an elder's days, as their daily rollups would show them: labelled decline.

A second-by-second simulation of a month of a cohort takes an hour (see
:mod:`device_sim.scenarios`); what proactive care looks at is the elder's *days*: steps,
active and worn hours, nights (time in bed, times up), front-door openings, resting heart
rate and how much of the night the bed sensor covered. :func:`simulate_days` draws those
daily figures for a cohort directly, with an elder's own habits, day-to-day noise, a
quieter Sunday, colds of a few days, days the wearable stays on the table and the odd
dead bed sensor: the ordinary life of a *stable* elder. On top, labelled scenarios:

``gradual_decline``
    A frailty course over weeks: slower, shorter walks, fewer outings, more night trips,
    longer in bed and a resting pulse a few beats higher, reaching their full size
    ``ramp_days`` after the onset.
``sudden_change``
    A hospital stay: from the onset the home is empty for 3–10 days (no wearable, the bed
    empty, no doors), then the elder comes home weaker and recovers part of it.

Figures are in the units of the rollups (:mod:`homecare.schema`), keyed by
:data:`FIGURES`; ``NaN`` is "no such data" (no frame that day, no night covered).

>>> cohort = simulate_days(elders=20, days=70, seed=1, mix={"gradual_decline": 0.2})
>>> cohort.figures["steps"].shape, sorted({s.name for s in cohort.labels})
((20, 70), ['gradual_decline', 'stable'])
>>> cohort == simulate_days(elders=20, days=70, seed=1, mix={"gradual_decline": 0.2})
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from homecare.schema import BedRollup, Sleep, WearableRollup

Floats = npt.NDArray[np.float64]

STEPS = WearableRollup.steps
ACTIVE_S = WearableRollup.active_s
WORN_S = WearableRollup.worn_s
EXITS = Sleep.exits
IN_BED_S = Sleep.in_bed_s
COVERED_S = Sleep.covered_s
FRONT_OPENS = "front_opens"
"""Front-door openings of the day (``door_1d`` opens of role ``front``)."""
BED_HR = "bed_" + BedRollup.hr_mean
"""Mean heart rate the bed sensor measured (``bed_1d`` hr_mean): the resting pulse."""
FIGURES = (STEPS, ACTIVE_S, WORN_S, EXITS, IN_BED_S, COVERED_S, FRONT_OPENS, BED_HR)
NIGHT_S = 18 * 3600.0
"""The night window of ``sleep_1d`` (18:00 to 12:00)."""

SCENARIOS = ("gradual_decline", "sudden_change")
DEFAULT_MIX = {"gradual_decline": 0.1, "sudden_change": 0.1}
"""Share of the cohort in each scenario; the rest are stable."""


@dataclass(frozen=True, slots=True)
class DeclineLabel:
    """The ground truth of one elder: ``stable``, or a scenario from day ``onset``."""

    elder: int
    name: str
    onset: int = -1
    """Day index the change starts (−1: stable)."""


@dataclass(eq=False)
class DailyCohort:
    """Daily figures (elder × day) and each elder's label."""

    figures: dict[str, Floats]
    labels: list[DeclineLabel]
    days: int
    meta: dict[str, float] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DailyCohort):
            return NotImplemented
        return self.labels == other.labels and all(
            np.array_equal(v, other.figures[k], equal_nan=True) for k, v in self.figures.items()
        )


def _effect_gradual(days: int, onset: int, ramp: int) -> Floats:
    """0 before the onset, rising linearly to 1 at ``onset + ramp``."""
    t = np.arange(days, dtype=np.float64)
    return np.clip((t - onset) / ramp, 0.0, 1.0)


def simulate_days(
    *,
    elders: int,
    days: int,
    seed: int = 0,
    mix: Mapping[str, float] | None = None,
    first_onset: int = 35,
    ramp_days: int = 21,
) -> DailyCohort:
    """``elders`` × ``days`` of daily figures; scenario onsets fall at or after
    ``first_onset`` (so four weeks of the elder's own normal precede them)."""
    rng = np.random.default_rng(seed)
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown decline scenarios {sorted(unknown)} (known: {SCENARIOS})")
    n, d = elders, days
    shape = (n, d)
    # Each elder's own habits.
    steps0 = rng.lognormal(np.log(3500), 0.5, n)[:, None]
    active0 = np.clip(rng.normal(3.5, 1.0, n), 1.0, 7.0)[:, None] * 3600
    worn0 = np.clip(rng.normal(14, 2, n), 8, 23)[:, None] * 3600
    exits0 = rng.uniform(0.3, 2.5, n)[:, None]
    bed0 = np.clip(rng.normal(8.8, 0.8, n), 6.5, 11)[:, None] * 3600
    out0 = rng.uniform(1.0, 5.0, n)[:, None]
    hr0 = np.clip(rng.normal(62, 6, n), 48, 85)[:, None]
    weekday = (np.arange(d) % 7)[None, :]
    sunday = np.where(weekday == 6, 0.85, 1.0)
    # Ordinary life: noise, colds of 2–4 days (about one a season), table days, dead sensor.
    ill = np.zeros(shape)
    for i in range(n):
        for start in np.flatnonzero(rng.random(d) < 1 / 90):
            ill[i, start : start + rng.integers(2, 5)] = 1.0
    noise = rng.lognormal(0.0, 0.25, shape)
    steps = steps0 * sunday * noise * (1 - 0.35 * ill)
    active = active0 * sunday * noise**0.8 * (1 - 0.3 * ill)
    worn = np.clip(worn0 * rng.normal(1, 0.08, shape), 0, 86_400)
    exits = rng.poisson(exits0 * (1 + 0.5 * ill), shape).astype(np.float64)
    in_bed = bed0 + rng.normal(0, 1800, shape) + 3600 * ill
    opens = rng.poisson(2 * out0 * sunday * (1 - 0.5 * ill), shape).astype(np.float64)
    hr = hr0 + rng.normal(0, 2.0, shape) + 4 * ill
    covered = np.full(shape, NIGHT_S) - rng.exponential(600, shape)
    # Scenarios on top.
    order = rng.permutation(n)
    labels = [DeclineLabel(i, "stable") for i in range(n)]
    k = 0
    for name, share in mix.items():
        count = round(share * n)
        for i in order[k : k + count]:
            onset = int(rng.integers(first_onset, max(first_onset + 1, d - 14)))
            labels[i] = DeclineLabel(int(i), name, onset)
            if name == "gradual_decline":
                e = _effect_gradual(d, onset, ramp_days)
                size = rng.uniform(0.7, 1.3)
                steps[i] *= 1 - 0.5 * size * e
                active[i] *= 1 - 0.45 * size * e
                opens[i] = rng.poisson(np.maximum(opens[i] * (1 - 0.6 * size * e), 0.0))
                exits[i] += rng.poisson(2.5 * size * e)
                in_bed[i] += 1.5 * 3600 * size * e
                hr[i] += 6 * size * e
            else:
                stay = int(rng.integers(3, 11))
                away = slice(onset, onset + stay)
                steps[i, away] = np.nan
                active[i, away] = np.nan
                worn[i, away] = np.nan
                opens[i, away] = 0.0
                exits[i, away] = 0.0
                in_bed[i, away] = 0.0
                hr[i, away] = np.nan
                after = _effect_gradual(d, onset + stay + 21, 1)  # 1 back home, 0 recovered
                weak = np.where(np.arange(d) >= onset + stay, 1.0 - 0.5 * after, 0.0)
                steps[i] *= 1 - 0.55 * weak
                active[i] *= 1 - 0.5 * weak
                opens[i] = np.where(weak > 0, rng.poisson(opens[i] * 0.5), opens[i])
                exits[i] += rng.poisson(2.0 * weak)
                in_bed[i] += 2 * 3600 * weak
                hr[i] += 7 * weak
        k += count
    # Missing data of ordinary life: the wearable on the table all day, a dead bed sensor.
    table = rng.random(shape) < 0.03
    worn[table] = np.nan
    steps[table] = np.nan
    active[table] = np.nan
    dead = rng.random(shape) < 0.02
    covered[dead] = rng.uniform(0, 3 * 3600, int(dead.sum()))
    figures = {
        STEPS: np.round(steps),
        ACTIVE_S: np.clip(active, 0, None),
        WORN_S: worn,
        EXITS: exits,
        IN_BED_S: np.clip(in_bed, 0, NIGHT_S),
        COVERED_S: np.clip(covered, 0, NIGHT_S),
        FRONT_OPENS: opens,
        BED_HR: hr,
    }
    return DailyCohort(figures, labels, d, {"ramp_days": float(ramp_days)})

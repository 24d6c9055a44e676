"""Signs of decline on simulated cohorts (device_sim/decline.py) and on hand-made days."""

from __future__ import annotations

import numpy as np
import pytest

from care.evaluate import evaluate
from care.signs import (
    BY_NAME,
    DRIFT_H,
    HISTORY_DAYS,
    RAMP_DAYS,
    WINDOW_DAYS,
    Z_REPORT,
    Days,
    assess,
    drift,
    features,
    theil_sen,
)
from device_sim.decline import FRONT_OPENS, IN_BED_S, STEPS, WORN_S, simulate_days


def _flat(n: int, value: float, noise: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(value, noise, (n, WINDOW_DAYS))


def test_each_sign_carries_its_numbers():
    steps = _flat(3, 4000, 300)
    steps[1, -7:] *= 0.5  # walks half as much this week
    bed = _flat(3, 8.5 * 3600, 900, seed=1)
    bed[2, -7:] += 3 * 3600  # three hours longer in bed
    result = assess(Days(("a", "b", "c"), 0.0, {STEPS: steps, IN_BED_S: bed}))
    assert result.flagged() == {"b", "c"}
    [walk] = result.of("b")
    assert (walk.sign, walk.feature, walk.how) == ("activity", "steps", "level")
    assert walk.week == pytest.approx(2000, rel=0.15)
    assert walk.baseline == pytest.approx(4000, rel=0.05)
    assert walk.rel == pytest.approx(-0.5, abs=0.08)
    assert walk.z > 4
    [sleep] = result.of("c")
    assert sleep.sign == "bed"
    assert sleep.change == pytest.approx(3.0, abs=0.5)
    assert result.score["a"] == 0.0 < result.score["b"]


def test_a_small_or_noisy_change_is_no_sign():
    steps = _flat(2, 4000, 1500)
    steps[0, -7:] -= 200  # 5 %: within an ordinary week
    assert assess(Days(("a", "b"), 0.0, {STEPS: steps})).signs == []


def test_missing_days_are_no_data_not_zero():
    steps = _flat(2, 4000, 300)
    steps[0, -7:-2] = np.nan  # the wearable on the table five days: too few days to judge
    steps[1, :20] = np.nan  # a new elder: a baseline of eight days says nothing
    assert assess(Days(("a", "b"), 0.0, {STEPS: steps})).signs == []


def test_an_elder_without_a_wearable_is_not_never_wearing_it():
    worn = np.full((2, WINDOW_DAYS), 14 * 3600.0)
    worn[1] = np.nan
    f = features(Days(("a", "b"), 0.0, {WORN_S: worn}))
    assert np.isnan(f["not_worn_h"][1]).all()
    assert f["not_worn_h"][0] == pytest.approx(np.full(WINDOW_DAYS, 10.0))


def test_fewer_outings_is_a_sign():
    # Ten weeks, as the refresh reads them: the daily drift needs four weeks of baseline.
    opens = np.random.default_rng(2).poisson(6.0, (4, HISTORY_DAYS)).astype(float)
    opens[3, -7:] = np.random.default_rng(3).poisson(1.0, 7)
    result = assess(Days(("a", "b", "c", "d"), 0.0, {FRONT_OPENS: opens}))
    assert [s.sign for s in result.of("d")] == ["out"]
    assert result.flagged() == {"d"}


def test_theil_sen_ignores_an_outlier_and_gaps():
    y = np.arange(21, dtype=float)[None, :] * 2.0
    y[0, 5] = 500.0
    y[0, 9] = np.nan
    assert theil_sen(y)[0] == pytest.approx(2.0)


def test_too_short_a_window_is_refused():
    with pytest.raises(ValueError, match="35 days"):
        assess(Days(("a",), 0.0, {STEPS: np.ones((1, 20))}))


def test_simulated_decline_moves_the_figures_the_right_way():
    cohort = simulate_days(elders=40, days=84, seed=4, mix={"gradual_decline": 0.5})
    declining = [lb for lb in cohort.labels if lb.name == "gradual_decline" and lb.onset < 56]
    assert declining
    steps = cohort.figures[STEPS]
    before = [np.nanmedian(steps[lb.elder, lb.onset - 14 : lb.onset]) for lb in declining]
    after = [np.nanmedian(steps[lb.elder, lb.onset + 21 : lb.onset + 35]) for lb in declining]
    assert np.median(np.array(after) / np.array(before)) < 0.7


@pytest.mark.slow
def test_signs_on_a_simulated_cohort():
    # The targets, measured on a small cohort (the README's figures come from
    # `homecare care evaluate`, 400 elders): hospital stays are all caught within two
    # weeks, most gradual declines too (a run every second day), few stable elders are
    # flagged in a month.
    result = evaluate(elders=160, days=98, seed=7, every=2)
    hit, of = result.detected["sudden_change"]
    assert of >= 8
    assert hit == of
    assert result.stable_month_rate <= 0.08
    hit, of = result.detected["gradual_decline"]
    assert of >= 8
    assert hit >= 0.75 * of


def test_a_decline_two_weeks_old_is_flagged_by_its_daily_drift_and_stable_elders_are_not():
    # Onsets on day 56 of 70: two weeks into a frailty course (two thirds of its size),
    # eight weeks of the elder's own normal before it.
    cohort = simulate_days(elders=60, days=70, seed=3, mix={"gradual_decline": 0.5},
                           first_onset=56)  # fmt: skip
    names = tuple(f"e{i}" for i in range(60))
    result = assess(Days(names, 0.0, cohort.figures))
    declining = {names[lb.elder] for lb in cohort.labels if lb.name == "gradual_decline"}
    stable = set(names) - declining
    assert len(declining & result.flagged()) >= 0.8 * len(declining)
    assert len(stable & result.flagged()) <= 1
    drifted = [s for s in result.signs if s.how == "drift"]
    assert drifted
    for s in drifted:  # each reason keeps its numbers, and points the worse way
        assert s.z > 0
        assert BY_NAME[s.feature].worse * s.change > 0
        assert s.change == pytest.approx(s.week - s.baseline)
        if s.z < Z_REPORT:  # no sign passed alone: only the one that moved most is named
            assert [x.sign for x in result.of(s.elder) if x.how == "drift"] == [s.sign]


def test_the_drift_adds_up_small_days_and_forgets_a_cold():
    rng = np.random.default_rng(5)
    bed = rng.normal(8.5, 0.5, (3, 70))
    bed[1, -14:] += np.linspace(0.1, 1.2, 14)  # a little longer in bed, day after day
    bed[2, -4:-1] += 2.5  # a three-day cold, still on
    found = drift({"in_bed_h": bed})
    assert found.score[1] >= DRIFT_H > found.score[2]
    assert found.score[0] < DRIFT_H
    assert found.run[1] in RAMP_DAYS
    now, centre, z = found.features["in_bed_h"]
    assert now[1] - centre[1] > 0.4
    assert z[1] > 2


def test_a_drift_too_small_to_matter_in_any_one_sign_names_the_one_that_moved_most():
    # Two weeks of a course in three signs at once, none of whose change matters alone
    # (+0.4 h in bed at most, +1.2 bpm, −360 steps): the drift flags the elder with one
    # reason, the sign that moved the worse way most, and its numbers.
    rng = np.random.default_rng(3)
    course = np.r_[np.zeros(56), np.arange(1, 15) / 14]
    figures = {
        STEPS: rng.normal(3000, 300, (2, 70)) - np.array([[0.0], [360.0]]) * course,
        "in_bed_h": rng.normal(8.5, 0.3, (2, 70)) + np.array([[0.0], [0.36]]) * course,
        "resting_hr": rng.normal(62, 1, (2, 70)) + np.array([[0.0], [1.2]]) * course,
    }
    result = assess(Days(("a", "b"), 0.0, figures))
    assert drift(features(Days(("a", "b"), 0.0, figures))).score[1] >= DRIFT_H
    [sign] = result.signs
    assert (sign.elder, sign.feature, sign.how) == ("b", "in_bed_h", "drift")
    assert 0 < sign.change < BY_NAME["in_bed_h"].min_change
    assert sign.z >= Z_REPORT

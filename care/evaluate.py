"""How well the signs find decline: ``homecare care evaluate`` on simulated cohorts.

A cohort of :func:`device_sim.decline.simulate_days` (stable elders, gradual declines
and hospital stays, labelled) is assessed as the daily refresh would: every day, the
last :data:`~care.signs.HISTORY_DAYS` days (the week against the four before it, and
the daily drift of the last two weeks against up to eight before them). Measured:

- **detected within 14 days**: of the declines, the share whose elder is flagged by a
  run at most 14 days after the onset (the run's last day counted);
- **stable flagged in a month**: of the stable elders, the share flagged at least once
  by the runs of 28 days (averaged over the months simulated).

Targets (issue 18): every decline (gradual and hospital stay) within 14 days, at most
5 % of stable elders a month. The 14 days count from the labelled onset day, whose
figures are still unchanged (the course rises from 0 on that day): the run at the end
of day ``onset + 13`` is the last that counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from care.signs import HISTORY_DAYS, WINDOW_DAYS, Days, assess
from device_sim.decline import DEFAULT_MIX, SCENARIOS, simulate_days

DETECT_WITHIN_DAYS = 14
MONTH_RUNS = 4
TARGET_DETECTED = 1.0
TARGET_STABLE_FLAGGED = 0.05


@dataclass
class Evaluation:
    elders: int
    days: int
    detected: dict[str, tuple[int, int]]
    """Scenario → (detected within 14 days, of how many)."""
    delays: dict[str, list[int]]
    stable_month_rate: float
    stable: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "elders": self.elders,
            "days": self.days,
            "detected_within_14d": {
                k: {"detected": a, "of": b, "share": round(a / b, 3) if b else None}
                for k, (a, b) in self.detected.items()
            },
            "median_delay_days": {
                k: float(np.median(v)) if v else None for k, v in self.delays.items()
            },
            "stable_elders": self.stable,
            "stable_flagged_per_month": round(self.stable_month_rate, 4),
            "targets_met": self.met(),
        }

    def met(self) -> bool:
        return all(b == 0 or a / b >= TARGET_DETECTED for a, b in self.detected.values()) and (
            self.stable_month_rate <= TARGET_STABLE_FLAGGED
        )


def evaluate(*, elders: int = 400, days: int = 126, seed: int = 0, every: int = 1) -> Evaluation:
    """Simulate, assess every ``every`` days (as the daily refresh does), and score."""
    cohort = simulate_days(elders=elders, days=days, seed=seed, mix=DEFAULT_MIX)
    names = tuple(f"e{i:04d}" for i in range(elders))
    ends = list(range(WINDOW_DAYS, days + 1, every))
    flagged = np.zeros((elders, len(ends)), bool)
    for k, end in enumerate(ends):
        window = {n: v[:, max(0, end - HISTORY_DAYS) : end] for n, v in cohort.figures.items()}
        result = assess(Days(names, 0.0, window))
        for e in result.flagged():
            flagged[names.index(e), k] = True
    detected = dict.fromkeys(SCENARIOS, (0, 0))
    delays: dict[str, list[int]] = {s: [] for s in SCENARIOS}
    for label in cohort.labels:
        if label.name == "stable":
            continue
        after = [(end, flagged[label.elder, k]) for k, end in enumerate(ends) if end > label.onset]
        if not after or after[0][0] - label.onset > DETECT_WITHIN_DAYS:
            continue  # no run early enough to judge (the onset near the end)
        first = next((end - label.onset for end, hit in after if hit), None)
        ok, n = detected[label.name]
        detected[label.name] = (ok + (first is not None and first <= DETECT_WITHIN_DAYS), n + 1)
        if first is not None:
            delays[label.name].append(first)
    stable = [lb.elder for lb in cohort.labels if lb.name == "stable"]
    month = max(1, 28 // every)
    rates = [
        float(flagged[stable, m : m + month].any(axis=1).mean())
        for m in range(0, len(ends) - month + 1, month)
    ]
    return Evaluation(elders, days, detected, delays, float(np.mean(rates)), len(stable))

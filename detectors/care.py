"""Care-level limits and the per-elder profile every detector reads them through.

The ability assessment puts each elder on a care level from 1 (independent) to 4
(dependent). A higher level means tighter limits: shorter inactivity before a
warning, a shorter wait for a night-time return, narrower vital-sign ranges. The
levels are a table (:data:`CARE_TABLE`) of :class:`CareLimits`; learned personal limits
are always clipped to their level's bounds, and an elder with no history gets the
level's default. :class:`Care` holds, per row, the care level, the UTC offset (for
local clock times) and the sleep window; detectors share one instance and read limits
for a whole batch with one gather (:meth:`Care.limit`).

Assumptions: one care level per elder, changed rarely (after an assessment); an elder
whose level is not set yet is treated as ``default_level``.

Cost: five numbers per row (17 bytes); a limit lookup is two gathers.

>>> care = Care()
>>> care.set_care_levels(np.array([0, 1]), np.array([1, 4]))
>>> care.limit("wander_return_s", np.array([0, 1, 2])).tolist()  # row 2: default level 2
[1800.0, 600.0, 1200.0]
>>> care.set_utc_offsets(np.array([1]), np.array([3600.0]))
>>> care.in_sleep_window(np.array([0, 1]), np.array([21.5 * 3600, 21.5 * 3600])).tolist()
[False, True]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from detectors.base import Bools, Rows, RowState, Times, grow

__all__ = ["CARE_TABLE", "DAY_S", "Care", "CareLimits"]

DAY_S = 86400.0
H = 3600.0
M = 60.0


class CareLimits(BaseModel):
    """The limits of one care level (seconds, beats or breaths per minute, %)."""

    model_config = ConfigDict(frozen=True)

    inactivity_default_s: float = Field(gt=0, description="Inactivity limit with no history.")
    inactivity_min_s: float = Field(gt=0, description="A learned inactivity limit, at least.")
    inactivity_max_s: float = Field(gt=0, description="A learned inactivity limit, at most.")
    in_bed_still_s: float = Field(gt=0, description="In bed without any bed movement, at most.")
    wander_return_s: float = Field(gt=0, description="Out of the front door at night, at most.")
    bed_exit_default_s: float = Field(gt=0, description="Night out-of-bed limit, no history.")
    bed_exit_min_s: float = Field(gt=0, description="A learned out-of-bed limit, at least.")
    bed_exit_max_s: float = Field(gt=0, description="A learned out-of-bed limit, at most.")
    wake_margin_s: float = Field(ge=0, description="Added to the learned usual wake time.")
    wake_default_s: float = Field(gt=0, le=DAY_S, description="Not-up limit (local), no history.")
    wake_earliest_s: float = Field(gt=0, le=DAY_S, description="Not-up limit, at the earliest.")
    wake_latest_s: float = Field(gt=0, le=DAY_S, description="Not-up limit, at the latest.")
    hr_high: float = Field(gt=0, description="Heart rate above this: tachycardia.")
    hr_low: float = Field(gt=0, description="Heart rate below this: bradycardia.")
    spo2_low: float = Field(gt=0, le=100, description="SpO2 below this: low oxygen.")
    br_high: float = Field(gt=0, description="Breathing rate above this.")
    br_low: float = Field(gt=0, description="Breathing rate below this.")
    deviation_z: float = Field(gt=0, description="Deviation from the own baseline, in SDs.")
    not_worn_s: float = Field(gt=0, description="Up but the wearable not worn, at most.")
    lying_s: float = Field(gt=0, description="Lying out of bed (on the floor), at most.")


# A learned inactivity limit may relax the care level's default (an elder who dozes in
# the armchair every afternoon) but never tighten it: measured on the simulated cohort,
# per-hour limits learned below the default raised 2.5 false alarms per elder-month, and a
# lie on the floor is caught sooner by the lying rule anyway.
CARE_TABLE: dict[int, CareLimits] = {
    1: CareLimits(
        inactivity_default_s=5 * H, inactivity_min_s=5 * H, inactivity_max_s=8 * H,
        in_bed_still_s=4 * H, wander_return_s=30 * M, bed_exit_default_s=45 * M,
        bed_exit_min_s=15 * M, bed_exit_max_s=90 * M, wake_margin_s=2 * H,
        wake_default_s=10 * H, wake_earliest_s=6 * H, wake_latest_s=12 * H,
        hr_high=130, hr_low=40, spo2_low=88, br_high=30, br_low=8, deviation_z=4.0,
        not_worn_s=2 * H, lying_s=20 * M,
    ),
    2: CareLimits(
        inactivity_default_s=4 * H, inactivity_min_s=4 * H, inactivity_max_s=6 * H,
        in_bed_still_s=3 * H, wander_return_s=20 * M, bed_exit_default_s=30 * M,
        bed_exit_min_s=10 * M, bed_exit_max_s=60 * M, wake_margin_s=1.5 * H,
        wake_default_s=9.5 * H, wake_earliest_s=6 * H, wake_latest_s=11 * H,
        hr_high=125, hr_low=40, spo2_low=88, br_high=28, br_low=8, deviation_z=3.5,
        not_worn_s=1 * H, lying_s=15 * M,
    ),
    3: CareLimits(
        inactivity_default_s=3 * H, inactivity_min_s=3 * H, inactivity_max_s=4 * H,
        in_bed_still_s=2.5 * H, wander_return_s=15 * M, bed_exit_default_s=20 * M,
        bed_exit_min_s=10 * M, bed_exit_max_s=40 * M, wake_margin_s=1 * H,
        wake_default_s=9 * H, wake_earliest_s=6 * H, wake_latest_s=10.5 * H,
        hr_high=120, hr_low=45, spo2_low=90, br_high=26, br_low=9, deviation_z=3.0,
        not_worn_s=45 * M, lying_s=10 * M,
    ),
    4: CareLimits(
        inactivity_default_s=2 * H, inactivity_min_s=2 * H, inactivity_max_s=3 * H,
        in_bed_still_s=2 * H, wander_return_s=10 * M, bed_exit_default_s=15 * M,
        bed_exit_min_s=5 * M, bed_exit_max_s=30 * M, wake_margin_s=45 * M,
        wake_default_s=8.5 * H, wake_earliest_s=6 * H, wake_latest_s=10 * H,
        hr_high=120, hr_low=45, spo2_low=90, br_high=25, br_low=10, deviation_z=3.0,
        not_worn_s=30 * M, lying_s=5 * M,
    ),
}  # fmt: skip


class Care:
    """Care level, UTC offset and sleep window per row, and per-level limits by name.

    ``sleep_start_s``/``sleep_end_s`` are local seconds after midnight; the window may wrap
    midnight (22:00–06:00 by default). Set them per elder from the care plan, or from the
    learned wake time (:func:`detectors.morning.wake_times`).
    """

    _ROW_ARRAYS: ClassVar[tuple[str, ...]] = (
        "level", "utc_offset_s", "sleep_start_s", "sleep_end_s", "explicit",
    )  # fmt: skip

    def __init__(
        self,
        table: dict[int, CareLimits] | None = None,
        *,
        default_level: int = 2,
        sleep_start_s: float = 22 * H,
        sleep_end_s: float = 6 * H,
    ) -> None:
        self.table = dict(CARE_TABLE if table is None else table)
        if sorted(self.table) != [1, 2, 3, 4] or default_level not in self.table:
            raise ValueError("the care table needs levels 1-4 and the default among them")
        self.default_level = default_level
        self.default_sleep = (sleep_start_s, sleep_end_s)
        # one column per limit, indexed by level (index 0 unused)
        names = list(CareLimits.model_fields)
        self._columns = {
            n: np.array([np.nan] + [getattr(self.table[k], n) for k in (1, 2, 3, 4)]) for n in names
        }
        self.level = np.zeros(0, np.int8)
        self.utc_offset_s = np.zeros(0, np.float32)
        self.sleep_start_s = np.zeros(0, np.float32)
        self.sleep_end_s = np.zeros(0, np.float32)
        self.explicit = np.zeros(0, bool)  # level set from an assessment

    def ensure(self, rows: int) -> None:
        """Make room for ``rows`` rows; new rows get the defaults."""
        if rows <= len(self.level):
            return
        fills = {
            "level": self.default_level,
            "sleep_start_s": self.default_sleep[0],
            "sleep_end_s": self.default_sleep[1],
        }
        for name in self._ROW_ARRAYS:
            setattr(self, name, grow(getattr(self, name), rows, fills.get(name, 0)))

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in self._ROW_ARRAYS)

    def set_care_levels(self, rows: Rows, levels: npt.ArrayLike) -> None:
        """Set the care level (1-4) of rows, from the ability assessment."""
        lv = np.asarray(levels, np.int8)
        if len(lv) and (lv.min() < 1 or lv.max() > 4):
            raise ValueError("care levels are 1 to 4")
        self.ensure(int(np.max(rows, initial=-1)) + 1)
        self.level[rows] = lv
        self.explicit[rows] = True

    def set_utc_offsets(self, rows: Rows, offsets_s: npt.ArrayLike) -> None:
        """Set each elder's UTC offset (seconds east of UTC) for local clock times."""
        self.ensure(int(np.max(rows, initial=-1)) + 1)
        self.utc_offset_s[rows] = offsets_s

    def set_sleep_windows(self, rows: Rows, start_s: npt.ArrayLike, end_s: npt.ArrayLike) -> None:
        """Set each elder's sleep window, local seconds after midnight (may wrap)."""
        self.ensure(int(np.max(rows, initial=-1)) + 1)
        self.sleep_start_s[rows] = np.mod(start_s, DAY_S)
        self.sleep_end_s[rows] = np.mod(end_s, DAY_S)

    def column(self, name: str) -> npt.NDArray[np.float64]:
        """The limit ``name`` per level (index 0 unused): ``column(name)[level[rows]]`` is
        :meth:`limit` for a detector that reads several limits of one batch."""
        return self._columns[name]

    def limit(self, name: str, rows: Rows) -> npt.NDArray[np.float64]:
        """The care-level limit ``name`` (a :class:`CareLimits` field) for each row."""
        self.ensure(int(np.max(rows, initial=-1)) + 1)
        return self._columns[name][self.level[rows]]

    def local_s(self, rows: Rows, ts: Times | float) -> npt.NDArray[np.float64]:
        """Local seconds after midnight at ``ts`` (unix seconds) for each row."""
        self.ensure(int(np.max(rows, initial=-1)) + 1)
        return np.mod(ts + self.utc_offset_s[rows], DAY_S)

    def local_day(self, rows: Rows, ts: Times | float) -> npt.NDArray[np.int64]:
        """The local calendar day number at ``ts`` for each row."""
        self.ensure(int(np.max(rows, initial=-1)) + 1)
        return np.floor((ts + self.utc_offset_s[rows]) / DAY_S).astype(np.int64)

    def in_sleep_window(self, rows: Rows, ts: Times | float) -> Bools:
        """Whether ``ts`` lies in each row's sleep window."""
        t = self.local_s(rows, ts)
        start, end = self.sleep_start_s[rows], self.sleep_end_s[rows]
        return np.where(start <= end, (t >= start) & (t < end), (t >= start) | (t < end))


class CareRows(RowState):
    """Row state of a detector that reads care-level limits: it grows with the care table."""

    care: Care
    n: int = 0
    """Rows the arrays hold."""

    def reserve(self, rows: Rows) -> None:
        """Grow every row array, and the shared care table, to hold ``rows``."""
        if len(rows) == 0:
            return
        top = int(rows.max()) + 1
        if top > self.n:
            self._grow(top)
            self.care.ensure(top)
            self.n = top

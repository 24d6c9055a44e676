"""Care-level limits and the per-elder profile every detector reads them through.

The ability assessment puts each elder on a care level from 1 (independent) to 4
(dependent). A higher level means tighter limits: shorter inactivity before a
warning, a shorter wait for a night-time return, narrower vital-sign ranges. The
levels are a table (:data:`CARE_TABLE`) of :class:`CareLimits`; learned personal limits
are always clipped to their level's bounds, and an elder with no history gets the
level's default. The numbers, and where they come from, are data:
``detectors/care_levels.toml`` (``HOMECARE_DETECTORS__CARE_TABLE`` replaces it), read and
checked by :class:`homecare.thresholds.CareTable`. :class:`Care` holds, per row, the
care level, the UTC offset (for local clock times) and the sleep window; detectors share
one instance and read limits for a whole batch with one gather (:meth:`Care.limit`).

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

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import Bools, Rows, RowState, Times, grow
from homecare.thresholds import DAY_S, CareLimits, CareTable

__all__ = [
    "CARE_TABLE", "CARE_TABLE_FILE", "DAY_S", "Care", "CareLimits", "CareRows", "CareTable",
    "shrunk",
]  # fmt: skip

H = 3600.0
M = 60.0


CARE_TABLE_FILE = Path(__file__).with_name("care_levels.toml")
"""The shipped table, with its sources: one line per limit, its values for levels 1-4."""
CARE_TABLE: CareTable = CareTable.from_toml(CARE_TABLE_FILE)
"""The limits per care level, read and checked (:class:`CareTable`) once at import.

A learned inactivity limit may relax the care level's default (an elder who dozes in
the armchair every afternoon) but never tighten it: measured on the simulated cohort,
per-hour limits learned below the default raised 2.5 false alarms per elder-month, and a
lie on the floor is caught sooner by the lying rule anyway."""


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
        table: CareTable | Mapping[int, CareLimits] | None = None,
        *,
        default_level: int = 2,
        sleep_start_s: float = 22 * H,
        sleep_end_s: float = 6 * H,
    ) -> None:
        table = CARE_TABLE if table is None else table
        self.table = table if isinstance(table, CareTable) else CareTable.model_validate(table)
        if default_level not in self.table.root:
            raise ValueError(f"default care level {default_level} is not in the table")
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

    def learned_limit(
        self, name: str, rows: Rows, learned: npt.NDArray[np.floating],
        weight: npt.NDArray[np.floating],
    ) -> npt.NDArray[np.float64]:  # fmt: skip
        """A detector's duration limit ``name`` for each row: the learned one shrunk
        towards the care level's ``<name>_default_s`` (:func:`shrunk`), clipped to the
        level's ``<name>_min_s`` and ``<name>_max_s``."""
        mix = shrunk(self.limit(f"{name}_default_s", rows), learned, weight)
        return np.clip(mix, self.limit(f"{name}_min_s", rows), self.limit(f"{name}_max_s", rows))

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


def shrunk(
    default: npt.NDArray[np.float64],
    learned: npt.NDArray[np.floating],
    weight: npt.NDArray[np.floating],
) -> npt.NDArray[np.float64]:
    """A learned duration limit shrunk towards the care-level default: their geometric
    mean weighted by ``weight`` (0: the default; NaN learned: nothing learned), since
    duration limits scale multiplicatively. The caller clips it to the level's bounds.

    >>> shrunk(np.array([100.0, 100.0]), np.array([400.0, np.nan]), np.array([0.5, 0.9]))
    array([200., 100.])
    """
    learned = np.asarray(learned, np.float64)
    w = np.where(np.isnan(learned), 0.0, weight)
    mix = default.copy()
    some = w > 0
    if some.any():
        ws = w[some]
        mix[some] = np.exp(ws * np.log(learned[some]) + (1 - ws) * np.log(default[some]))
    return mix

"""The one protocol every detector follows, and the batches they consume.

A detector holds the state of many elders (or devices) in numpy arrays, one row
each, and consumes a *batch* — readings of many rows at once — in one call. It
returns :class:`Detection` objects: scoring and deciding happen inside the
detector, the alert lifecycle (ids, grace windows, escalation) happens elsewhere.
Rows are small integers handed out by :class:`Roster`; a detector grows its arrays
when it first sees a higher row.

Two kinds of batch exist: :class:`AccelBatch` (raw accelerometer frames, for the fall
detector) and :class:`ReadingBatch` (one scalar reading or event per entry, columns by
name, for every other detector). A detector names the streams it consumes in
``streams``; :func:`dispatch` hands each batch to those that want it, and :func:`tick_all`
lets time pass for detectors that fire because nothing happened (inactivity, offline).

>>> roster = Roster()
>>> roster.rows(["e1", "e2", "e1"]).tolist()
[0, 1, 0]
>>> len(roster)
2
>>> b = ReadingBatch.from_records("door", np.array([1]), np.array([60.0]),
...                               [{"opened": True, "role": "front", "seq": 4}])
>>> {k: v.tolist() for k, v in b.values.items()}
{'opened': [1.0], 'role': [0.0], 'seq': [4.0]}
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from homecare.contract import MAT_PLACES, ROOMS, DoorRole, Severity
from homecare.schema import (
    Accel,
    Availability,
    Bed,
    Button,
    DeviceStatus,
    Door,
    Mat,
    Motion,
    Wearable,
)  # fmt: skip

Floats = npt.NDArray[np.float32]
Times = npt.NDArray[np.float64]
Rows = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

__all__ = [
    "BATHROOM",
    "BUTTONS",
    "DOOR_ROLES",
    "MAT_PLACES",
    "ROOMS",
    "AccelBatch",
    "Batch",
    "BatchStream",
    "Bools",
    "Detection",
    "Detector",
    "Floats",
    "Hysteresis",
    "ReadingBatch",
    "Roster",
    "RowState",
    "Rows",
    "Severity",
    "Times",
    "dispatch",
    "fit_quantile",
    "group_quantile",
    "grow",
    "tick_all",
    "warning_detections",
    "waves",
]
"""``Severity`` is the contract's, named here too: every detection carries one."""


class BatchStream(StrEnum):
    """Batch streams; the reading streams are named as their InfluxDB measurements."""

    ACCEL = Accel.name
    WEARABLE = Wearable.name
    BED = Bed.name
    DOOR = Door.name
    BUTTON = Button.name
    STATUS = DeviceStatus.name
    AVAILABILITY = Availability.name
    MOTION = Motion.name
    """Ambient signs of life: a passive infrared sensor or an appliance in a room."""
    MAT = Mat.name
    """A pressure mat (bed or chair): occupied or free."""


DOOR_ROLES: tuple[str, ...] = tuple(r.value for r in DoorRole)
"""Door role codes in a ``door`` batch's ``role`` column (index into this tuple); contacts
on cupboards, cabinets and a medicine box are doors too (signs of life inside)."""
BATHROOM = ROOMS.index("bathroom")
"""Room codes in a ``motion`` batch's ``room`` column index the contract's :data:`ROOMS`;
mat place codes in a ``mat`` batch's ``place`` column its :data:`MAT_PLACES`."""
BUTTONS: tuple[str, ...] = ("sos", "ok", "fall")
"""Button codes in a ``button`` batch's ``button`` column (``fall``: the wearable's own
fall detection, with ``confidence`` and ``cancelled`` columns, NaN for the others)."""
_CODES: dict[str, tuple[str, ...]] = {
    Door.role: DOOR_ROLES, Button.button: BUTTONS, Motion.room: ROOMS, Mat.place: MAT_PLACES,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Detection:
    """A detector's finding: what, for which elder row, when, and the numbers behind it.

    ``device`` is the device row (from the device roster) when the finding is about one
    device (a button, a battery, a silent sensor), else -1.
    """

    kind: str
    row: int
    ts: float
    severity: Severity
    evidence: dict[str, float] = field(default_factory=dict)
    device: int = -1


@dataclass(frozen=True, slots=True)
class AccelBatch:
    """Accelerometer frames of many wearables, all at one sample ``rate``.

    ``accel[i]`` holds frame *i*'s samples (N×3, g) starting at ``ts[i]``; a row may
    appear several times in one batch, in time order.
    """

    stream: ClassVar[str] = BatchStream.ACCEL

    rows: Rows
    ts: Times
    accel: Floats
    rate: float

    def __post_init__(self) -> None:
        if self.accel.ndim != 3 or self.accel.shape[2] != 3:
            raise ValueError(f"accel must be frames×samples×3, got {self.accel.shape}")
        if not (len(self.rows) == len(self.ts) == len(self.accel)):
            raise ValueError("rows, ts and accel must have one entry per frame")


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Scalar readings or events of many rows, one entry each, columns in ``values``.

    ``stream`` is a :class:`BatchStream` (the InfluxDB measurement); ``rows`` are elder
    rows, ``devices`` (optional) device rows from a second roster, for the detectors that
    key on devices. A row may appear several times, in time order. Columns are numbers
    with NaN for "not reported"; flags are 0/1, door roles and buttons are codes
    (:data:`DOOR_ROLES`, :data:`BUTTONS`). Columns a detector reads, per stream:

    * ``wearable`` (one per 1 s frame): ``mag_mean``, ``mag_std``, ``mag_peak``, ``mag_min``
      (g, see :func:`frame_stats`), ``gx``, ``gy``, ``gz`` (the frame's mean acceleration,
      g: the posture; live only, not stored), ``hr``, ``spo2``, ``steps``, ``battery``
    * ``bed``: ``presence``, ``hr``, ``br``, ``movement``, ``held`` (1: a bed mat's event,
      whose state holds until the next; a bed sensor's readings are fresh for a while)
    * ``door``: ``opened``, ``role``, ``seq``;  ``button``: ``button``, ``seq``,
      ``confidence``, ``cancelled`` (the last two for a device-detected fall)
    * ``device_status``: ``battery``, ``interval_s``, ``placement`` (a wearable's
      :class:`~detectors.fall_model.Placement` code, NaN for others);
      ``availability``: ``online``
    * ``motion``: ``detected`` (1 detected or an appliance on, 0 cleared/off), ``room``
      (:data:`ROOMS`);  ``mat``: ``occupied``, ``place`` (:data:`MAT_PLACES`)
    """

    stream: str
    rows: Rows
    ts: Times
    values: Mapping[str, npt.NDArray[Any]]
    devices: Rows | None = None

    def __post_init__(self) -> None:
        n = len(self.rows)
        if len(self.ts) != n or (self.devices is not None and len(self.devices) != n):
            raise ValueError("rows, ts and devices must have one entry per reading")
        for name, column in self.values.items():
            if len(column) != n:
                raise ValueError(f"column {name!r} has {len(column)} entries, rows {n}")

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> npt.NDArray[np.float64]:
        """A column as float64, all NaN if the batch does not carry it."""
        column = self.values.get(name)
        if column is None:
            return np.full(len(self.rows), np.nan)
        return np.asarray(column, dtype=np.float64)

    def keys(self) -> Rows:
        """Device rows where given, otherwise elder rows: the key of per-device state."""
        return self.rows if self.devices is None else self.devices

    @classmethod
    def from_records(
        cls,
        stream: str,
        rows: Rows,
        ts: Times,
        records: Sequence[Mapping[str, Any]],
        devices: Rows | None = None,
    ) -> ReadingBatch:
        """Columns from records such as InfluxDB query rows (None → NaN, bool → 0/1,
        door role and button names → codes); text fields other than those are dropped."""
        names = {k for r in records for k, v in r.items() if not isinstance(v, str) or k in _CODES}
        values: dict[str, npt.NDArray[Any]] = {}
        for name in sorted(names):
            codes = _CODES.get(name)
            raw = [r.get(name) for r in records]
            if codes is not None:
                raw = [codes.index(v) if isinstance(v, str) and v in codes else v for v in raw]
            values[name] = np.array(
                [np.nan if v is None or isinstance(v, str) else float(v) for v in raw], np.float64
            )
        return cls(stream, np.asarray(rows, np.int64), np.asarray(ts, np.float64), values, devices)


Batch = AccelBatch | ReadingBatch
B_contra = TypeVar("B_contra", bound=AccelBatch | ReadingBatch, contravariant=True)


@runtime_checkable
class Detector(Protocol[B_contra]):
    """What every detector module exports (one per module).

    ``update`` consumes a batch of one of its ``streams`` for many rows; ``tick`` lets
    time pass (``now`` in the same clock as the batches' ``ts``) and reports what fires
    because nothing arrived. Both return detections in time order, each reported once.
    """

    kind: ClassVar[str]
    streams: ClassVar[frozenset[str]]

    def update(self, batch: B_contra) -> list[Detection]:
        """Consume a batch for many rows; return what it detected, in time order."""
        ...

    def tick(self, now: float) -> list[Detection]:
        """Report what fires because time passed without data (empty for most)."""
        ...

    def state_bytes(self) -> int:
        """Memory held by the detector's per-row state, for the benchmark."""
        ...


def dispatch(detectors: Iterable[Detector[Any]], batch: Batch) -> list[Detection]:
    """Hand ``batch`` to every detector that consumes its stream; their detections."""
    found: list[Detection] = []
    for detector in detectors:
        if batch.stream in detector.streams:
            found += detector.update(batch)
    return found


def tick_all(detectors: Iterable[Detector[Any]], now: float) -> list[Detection]:
    """Let time pass for every detector."""
    found: list[Detection] = []
    for detector in detectors:
        found += detector.tick(now)
    return found


class Roster:
    """Stable small-integer rows for ids (elders or devices), so state can live in arrays."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []

    def row(self, key: str) -> int:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._ids)
            self._ids.append(key)
        return row

    def rows(self, keys: Iterable[str]) -> Rows:
        return np.fromiter((self.row(k) for k in keys), dtype=np.int64)

    def key(self, row: int) -> str:
        return self._ids[row]

    def __len__(self) -> int:
        return len(self._ids)


def grow(array: np.ndarray, rows: int, fill: float | int | bool = 0) -> np.ndarray:
    """Return ``array`` with at least ``rows`` rows (doubling), new rows set to ``fill``."""
    if rows <= len(array):
        return array
    size = max(rows, 2 * len(array), 16)
    out = np.full((size, *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


class RowState:
    """Per-row numpy arrays named in ``_ROW_ARRAYS`` (with their fill for new rows),
    grown together; a base for detectors, so their state stays plain attributes."""

    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {}

    def _grow(self, rows: int) -> None:
        for name, fill in self._ROW_ARRAYS.items():
            setattr(self, name, grow(getattr(self, name), rows, fill))

    def state_bytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self._ROW_ARRAYS)


def waves(rows: Rows) -> list[npt.NDArray[np.intp]] | None:
    """``None`` when every row appears once (the usual case, checked in O(n)); otherwise
    index arrays, the k-th holding each row's k-th entry, to process in order."""
    n = len(rows)
    if n < 2:
        return None
    mark = np.empty(int(rows.max()) + 1, np.intp)
    idx = np.arange(n)
    mark[rows] = idx
    if (mark[rows] == idx).all():
        return None
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
    first = np.maximum.accumulate(np.where(starts, idx, 0))
    wave = np.empty(n, np.intp)
    wave[order] = idx - first
    return [np.flatnonzero(wave == w) for w in range(int(wave.max()) + 1)]


def overdue(
    since: Times,
    fired: Bools,
    now: float,
    limit: Callable[[Rows], npt.NDArray[np.float64]],
    *,
    where: Bools | None = None,
    floor: npt.NDArray[np.float64] | None = None,
) -> tuple[Rows, Times, npt.NDArray[np.float64]]:
    """The timer "out since t, fire once past a limit", for every row at once.

    ``since[r]`` is when row r's wait began (NaN: not waiting) and ``fired[r]`` whether it
    was reported in this wait; the caller re-arms it (``fired[r] = False``) when a new
    wait begins. ``limit`` gives the limit of candidate rows (asked only for rows that
    are waiting, not yet reported, in ``where`` and, if ``floor`` is given, past their
    floor: a cheap lower bound of the limit). Returns the rows past their limit, in row
    order, with their time waited and limit, and marks them reported.

    >>> since, fired = np.array([0.0, np.nan, 50.0]), np.zeros(3, bool)
    >>> rows, waited, lim = overdue(since, fired, 100.0, lambda r: np.full(len(r), 60.0))
    >>> rows.tolist(), waited.tolist(), fired.tolist()
    ([0], [100.0], [True, False, False])
    >>> overdue(since, fired, 200.0, lambda r: np.full(len(r), 60.0))[0].tolist()  # once
    [2]
    """
    waited = now - since
    due = ~fired & (~np.isnan(waited) if floor is None else waited > floor)
    if where is not None:
        due &= where
    rows = np.flatnonzero(due)
    if len(rows) == 0:
        return rows, np.zeros(0), np.zeros(0)
    lim = limit(rows)
    over = waited[rows] > lim
    rows = rows[over]
    fired[rows] = True
    return rows, waited[rows], lim[over]


def group_quantile(
    rows: Rows, values: npt.NDArray[np.floating[Any]], q: float, n_rows: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The ``q`` quantile (lower, no interpolation) of ``values`` per row, NaN where a
    row has none, and the count per row; one sort for all rows."""
    counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
    out = np.full(n_rows, np.nan)
    if len(rows) == 0:
        return out, counts
    order = np.lexsort((values, rows))
    start = np.r_[0, np.cumsum(counts)[:-1]]
    has = counts > 0
    pick = start[has] + np.floor(q * (counts[has] - 1)).astype(np.int64)
    out[has] = np.asarray(values, np.float64)[order][pick]
    return out, counts


def warning_detections(
    kind: str,
    rows: Rows,
    now: float,
    evidence: Mapping[str, npt.ArrayLike],
    *,
    exact: Collection[str] = (),
) -> list[Detection]:
    """One warning of ``kind`` at ``now`` per row, as the timers of :func:`overdue` (and
    the daily checks) report them: ``evidence[name][i]`` is row i's number, rounded to
    0.1 unless its name is in ``exact`` (a timestamp, a flag).

    >>> found = warning_detections("bed_exit", np.array([3]), 9.0,
    ...                            {"out_s": [1801.04], "limit_s": [1800.0]})
    >>> [(d.row, d.evidence) for d in found]
    [(3, {'out_s': 1801.0, 'limit_s': 1800.0})]
    """
    columns = {name: np.asarray(v, np.float64) for name, v in evidence.items()}

    def number(name: str, i: int) -> float:
        value = float(columns[name][i])
        return value if name in exact else round(value, 1)

    return [
        Detection(kind, int(r), now, Severity.WARNING, {name: number(name, i) for name in columns})
        for i, r in enumerate(rows)
    ]


def fit_quantile(
    learned: npt.NDArray[np.floating[Any]],
    weight: npt.NDArray[np.floating[Any]],
    rows: Rows,
    values: npt.NDArray[np.floating[Any]],
    *,
    quantile: float,
    prior: float,
    floor: float = -np.inf,
    margin: float = 1.0,
) -> None:
    """Learn a personal limit per row from its past values (as the bed-exit, bathroom and
    morning fits do): their ``quantile`` (at least ``floor``) times ``margin`` into
    ``learned`` and ``count / (count + prior)`` into ``weight``, the limit's weight against
    the care default; rows absent from ``values`` keep theirs. The arrays must already
    hold every row (the detector's ``reserve``).

    >>> learned, weight = np.full(2, np.nan, np.float32), np.zeros(2, np.float32)
    >>> fit_quantile(learned, weight, np.array([1, 1, 1]), np.array([60.0, 600.0, 300.0]),
    ...              quantile=0.5, prior=3.0, margin=2.0)
    >>> learned.tolist(), weight.tolist()
    ([nan, 600.0], [0.0, 0.5])
    """
    if len(rows) == 0:
        return
    q, counts = group_quantile(rows, values, quantile, len(learned))
    has = np.flatnonzero(counts > 0)
    learned[has] = np.maximum(q[has], floor) * margin
    weight[has] = counts[has] / (counts[has] + prior)


class Hysteresis:
    """Debounced conditions for many rows: ``width`` conditions per row.

    A condition *enters* after at least ``min_samples`` consecutive samples beyond its
    enter threshold spanning at least ``sustain_s`` (one for all, or one per condition); it
    re-arms only after ``min_samples`` consecutive samples inside its exit threshold.
    Samples in between hold both counts; missing samples change nothing. So a single
    noisy sample never alarms, and a value hovering at the threshold alarms once, not on
    every crossing.
    """

    def __init__(
        self, width: int, min_samples: int, sustain_s: float | npt.ArrayLike = 0.0
    ) -> None:
        self.width = width
        self.min_samples = min_samples
        self.sustain_s = np.asarray(sustain_s, np.float64)  # scalar or (width,)
        self.count = np.zeros((0, width), np.int32)  # consecutive samples beyond enter
        self.calm = np.zeros((0, width), np.int32)  # consecutive samples inside exit
        self.since = np.zeros((0, width))  # time of the first sample beyond enter
        self.active = np.zeros((0, width), bool)  # condition entered, not yet re-armed
        self.busy = np.zeros(0, bool)  # any count or active on the row: worth a look

    def grow(self, rows: int) -> None:
        for name in ("count", "calm", "since", "active", "busy"):
            setattr(self, name, grow(getattr(self, name), rows))

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in ("count", "calm", "since", "active", "busy"))

    def step(
        self, rows: Rows, ts: Times, enter: Bools, exit_: Bools
    ) -> tuple[npt.NDArray[np.intp], Bools]:
        """One sample per row (rows unique); ``enter``/``exit_`` are n×width masks (both
        False for a missing sample). Returns the indices (into ``rows``) looked at and
        which conditions just entered for them (a looked×width mask)."""
        look = np.flatnonzero(enter.any(axis=1) | self.busy[rows])
        if len(look) == 0:
            return look, np.zeros((0, self.width), bool)
        r, t, up, down = rows[look], ts[look], enter[look], exit_[look]
        count, calm, since, active = self.count[r], self.calm[r], self.since[r], self.active[r]
        since = np.where(up & (count == 0), t[:, None], since)
        count = np.where(up, count + 1, np.where(down, 0, count))
        calm = np.where(down, calm + 1, np.where(up, 0, calm))
        active &= ~(calm >= self.min_samples)
        new = ~active & (count >= self.min_samples) & (t[:, None] - since >= self.sustain_s)
        active |= new
        self.count[r], self.calm[r], self.since[r], self.active[r] = count, calm, since, active
        self.busy[r] = ((count > 0) | active).any(axis=1)
        return look, new

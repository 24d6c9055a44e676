"""A home's ambient-sensor log, read from a file: the documented CSV or the ADL datasets' TSV.

**CSV** (header required, one row per sensor event, in any order)::

    timestamp,sensor,kind,place,value
    2024-03-01T07:02:11,pir-bath,motion,bathroom,detected
    2024-03-01T07:04:30,pir-bath,motion,bathroom,cleared
    2024-03-01T07:05:02,fridge,contact,fridge,opened
    2024-03-01T07:05:09,fridge,contact,fridge,closed
    2024-03-01T07:20:00,chair-mat,mat,chair,occupied

* ``timestamp``: ISO 8601 (without an offset it is the home's local clock, which is the
  clock the detectors then judge hours by) or Unix seconds;
* ``sensor``: any name (one sensor's events pair up by it);
* ``kind``: ``motion`` (a passive infrared sensor: ``detected``/``cleared``), ``contact`` (a
  door, cupboard, fridge or medicine-box contact: ``opened``/``closed``), ``mat`` (a
  pressure mat: ``occupied``/``free``) or ``appliance`` (a flush, a kettle, a cooker:
  ``on``/``off``); ``1``/``0`` are accepted for every kind;
* ``place``: for ``motion`` and ``appliance`` the room (:data:`detectors.base.ROOMS`), for
  ``contact`` its role (:data:`detectors.base.DOOR_ROLES`: ``front`` is the way out), for
  ``mat`` ``bed`` or ``chair``.

**TSV** of the public ADL datasets (Ordóñez et al., *Sensors* 2013): two header lines,
then ``Start time``, ``End time``, ``Location``, ``Type``, ``Place`` separated by tabs, one
row per activation; each row becomes an "on" event at its start and an "off" at its end.
PIR → ``motion`` in ``Place``; Magnetic → ``contact`` (``Maindoor`` is ``front``, the
others their location: ``fridge``, ``cupboard``, ``cabinet``); Pressure → ``mat``
(``Bed`` → ``bed``, ``Seat`` → ``chair``); Flush and Electric → ``appliance`` in ``Place``.

A malformed row is reported (:class:`LogError`, naming the file and line) and left out;
the rest is read.

>>> import io
>>> text = "timestamp,sensor,kind,place,value\\n1000,pir,motion,kitchen,detected\\nx,y\\n"
>>> log = read_home_log(io.StringIO(text), name="home.csv")
>>> len(log), str(log.kind[0]), str(log.place[0])
(1, 'motion', 'kitchen')
>>> print(log.errors[0])
home.csv:3: expected 5 columns timestamp,sensor,kind,place,value, got 2
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from detectors.base import DOOR_ROLES, MAT_PLACES, ROOMS
from homecare.errors import DataError

__all__ = ["KINDS", "HomeLog", "LogError", "read_home_log"]

KINDS = ("motion", "contact", "mat", "appliance")
"""Sensor kinds of a home log."""
_VALUES: dict[str, dict[str, float]] = {
    "motion": {"detected": 1.0, "cleared": 0.0},
    "contact": {"opened": 1.0, "closed": 0.0, "open": 1.0},
    "mat": {"occupied": 1.0, "free": 0.0},
    "appliance": {"on": 1.0, "off": 0.0},
}
_PLACES: dict[str, tuple[str, ...]] = {
    "motion": ROOMS,
    "appliance": ROOMS,
    "contact": DOOR_ROLES,
    "mat": MAT_PLACES,
}
HEADER = ("timestamp", "sensor", "kind", "place", "value")
_TABS = re.compile(r"\t+")
_ORDONEZ_KIND = {"pir": "motion", "magnetic": "contact", "pressure": "mat"}
_ORDONEZ_PLACE = {"maindoor": "front", "seat": "chair", "living": "living_room"}


class LogError(DataError):
    """A row (or file) that cannot be read; the message names the file and line."""

    def __init__(self, path: str, line: int | None, detail: str) -> None:
        super().__init__(f"{path}:{line}: {detail}" if line is not None else f"{path}: {detail}")
        self.path, self.line, self.detail = path, line, detail


@dataclass(frozen=True, slots=True)
class HomeLog:
    """Sensor events in time order: ``ts`` (seconds on the log's own clock: a timestamp
    without an offset is read as if it were UTC, so local hours stay the log's), and per
    event the sensor name, kind, place and value (1 on, 0 off); rows left out in
    ``errors``."""

    name: str
    ts: npt.NDArray[np.float64]
    sensor: npt.NDArray[np.str_]
    kind: npt.NDArray[np.str_]
    place: npt.NDArray[np.str_]
    value: npt.NDArray[np.float64]
    errors: list[LogError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def of(
        cls,
        name: str,
        events: Iterable[tuple[float, str, str, str, float]],
        errors: list[LogError] | None = None,
    ) -> HomeLog:
        """A log from ``(ts, sensor, kind, place, value)`` tuples in any order."""
        rows = sorted(events, key=lambda e: e[0])
        return cls(
            name,
            np.array([e[0] for e in rows], np.float64),
            np.array([e[1] for e in rows], np.str_),
            np.array([e[2] for e in rows], np.str_),
            np.array([e[3] for e in rows], np.str_),
            np.array([e[4] for e in rows], np.float64),
            errors or [],
        )

    def cut(self, at: float) -> HomeLog:
        """The log as if every sensor fell silent at ``at`` (a collapse): events before it,
        and every sensor still on (a mat occupied, motion, an open door) turned off at
        ``at``: the person left the chair or bed and nothing moved after."""
        keep = self.ts < at
        last: dict[str, tuple[str, str, float]] = {}
        for s, k, p, v in zip(
            self.sensor[keep], self.kind[keep], self.place[keep], self.value[keep], strict=True
        ):
            last[str(s)] = (str(k), str(p), float(v))
        ends = [(at, s, k, p, 0.0) for s, (k, p, v) in last.items() if v > 0.5]
        kept = zip(
            self.ts[keep].tolist(),
            self.sensor[keep].tolist(),
            self.kind[keep].tolist(),
            self.place[keep].tolist(),
            self.value[keep].tolist(),
            strict=True,
        )
        return HomeLog.of(self.name, [*kept, *ends])


def _timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    # with an offset, the wall clock of that moment: hours are judged as the home lived them
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return moment.timestamp()


def _csv_rows(
    path: str, lines: list[str]
) -> tuple[list[tuple[float, str, str, str, float]], list[LogError]]:
    events: list[tuple[float, str, str, str, float]] = []
    errors: list[LogError] = []
    reader = csv.reader(lines)
    head = next(reader, [])
    if tuple(c.strip().lower() for c in head) != HEADER:
        return [], [
            LogError(path, 1, f"header must be {','.join(HEADER)}, got {','.join(head)[:60]!r}")
        ]
    for number, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(HEADER):
            errors.append(
                LogError(path, number, f"expected 5 columns {','.join(HEADER)}, got {len(row)}")
            )
            continue
        stamp, sensor, kind, place, value = (c.strip() for c in row)
        try:
            events.append(_event(stamp, sensor, kind.lower(), place.lower(), value.lower()))
        except ValueError as exc:
            errors.append(LogError(path, number, str(exc)))
    return events, errors


def _event(
    stamp: str, sensor: str, kind: str, place: str, value: str
) -> tuple[float, str, str, str, float]:
    try:
        ts = _timestamp(stamp)
    except ValueError:
        raise ValueError(
            f"timestamp is neither ISO 8601 nor Unix seconds: {stamp[:30]!r}"
        ) from None
    if not np.isfinite(ts):
        raise ValueError("timestamp is not finite")
    if not sensor:
        raise ValueError("sensor name is empty")
    if kind not in _VALUES:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind[:30]!r}")
    if place not in _PLACES[kind]:
        raise ValueError(
            f"a {kind}'s place must be one of {', '.join(_PLACES[kind])}, got {place[:30]!r}"
        )
    if value in ("1", "0"):
        v = float(value)
    elif value in _VALUES[kind]:
        v = _VALUES[kind][value]
    else:
        names = "/".join(k for k in _VALUES[kind] if k != "open")
        raise ValueError(f"a {kind}'s value must be {names} or 1/0, got {value[:30]!r}")
    return ts, sensor, kind, place, v


def _ordonez_rows(
    path: str, lines: list[str]
) -> tuple[list[tuple[float, str, str, str, float]], list[LogError]]:
    events: list[tuple[float, str, str, str, float]] = []
    errors: list[LogError] = []
    for number, line in enumerate(lines, start=1):
        if number <= 2 or not line.strip():
            continue
        cells = [c.strip() for c in _TABS.split(line.strip())]
        if len(cells) != 5:
            errors.append(
                LogError(
                    path,
                    number,
                    f"expected 5 tab-separated columns (start, end, location, "
                    f"type, place), got {len(cells)}",
                )
            )
            continue
        start, end, location, kind, place = cells
        name = location.lower()
        k = _ORDONEZ_KIND.get(
            kind.lower(), "appliance" if kind.lower() in ("flush", "electric") else ""
        )
        if not k:
            errors.append(LogError(path, number, f"unknown sensor type {kind[:30]!r}"))
            continue
        where = name if k in ("contact", "mat") else place.lower()
        where = _ORDONEZ_PLACE.get(where, where)
        try:
            on = _event(start.replace(" ", "T"), name, k, where, "1")
            off = _event(end.replace(" ", "T"), name, k, where, "0")
        except ValueError as exc:
            errors.append(LogError(path, number, str(exc)))
            continue
        if off[0] < on[0]:
            errors.append(LogError(path, number, "end time is before start time"))
            continue
        events += [on, off]
    return events, errors


def read_home_log(source: str | Path | TextIO, *, name: str | None = None) -> HomeLog:
    """Read a home log (CSV or the ADL datasets' TSV, told apart by the first line)."""
    label = name or (str(source) if not isinstance(source, io.TextIOBase | TextIO) else "<log>")
    if isinstance(source, str | Path):
        try:
            text = Path(source).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            return HomeLog.of(label, [], [LogError(label, None, f"cannot read: {exc}")])
    else:
        text = source.read()
    lines = text.splitlines()
    if lines and "\t" in lines[0] and lines[0].lower().startswith("start time"):
        events, errors = _ordonez_rows(label, lines)
    else:
        events, errors = _csv_rows(label, lines)
    return HomeLog.of(label, events, errors)

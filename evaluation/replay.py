"""Replay recorded accelerometer traces through the fall detector, many files at once.

A trace is a CSV file (plain or ``.gz``) with the header ``t,ax,ay,az``: time in
seconds and acceleration in g (or m/s² with ``units="ms2"``). Traces are grouped by
sample rate and each group runs as one batch of the detector, one row per trace and one
1-second frame per call, so thousands of files cost one process and a few hundred calls.
A malformed file is reported as a :class:`TraceError` naming the file and line and is
left out; the others still run.

``hold_end_s`` extends each trace by the posture held over its last second (its mean plus
``hold_noise_g`` of noise per axis, like a body breathing on the floor), for lab
recordings that stop while the wearer is still lying there.

A trace recorded in bed (``Trace.in_bed``, per sample) is watched by a bed sensor too: a
reading every :data:`BED_PERIOD_S` seconds saying whether the wearer is in bed, as a home's
bed sensor would send, so the detector's bed gate is judged with it.

>>> import numpy as np
>>> from device_sim.motions import motion
>>> t, xyz, _ = motion("fall_backward", np.random.default_rng(3), rate=50)
>>> events = replay([Trace("lab.csv", xyz, 50.0)], hold_end_s=15)
>>> [(e["file"], e["kind"]) for e in events]
[('lab.csv', 'fall')]
"""

from __future__ import annotations

import gzip
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detectors.base import AccelBatch, BatchStream, Floats, ReadingBatch
from detectors.fall import FallDetector, FallSettings
from detectors.fall_model import FallModels, Placement
from homecare.errors import DataError

__all__ = [
    "Trace", "TraceError", "hold_end", "read_trace", "replay", "replay_files", "replay_judged",
]  # fmt: skip

G = 9.80665
BED_PERIOD_S = 10
"""A bed sensor's reading interval in the replay (the simulator's and the kit's)."""
HEADER = ("t", "ax", "ay", "az")
Units = Literal["g", "ms2"]


class TraceError(DataError):
    """A trace file that cannot be replayed; the message names the file and line."""

    def __init__(self, path: str, line: int | None, detail: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {detail}")
        self.path, self.line, self.detail = path, line, detail


@dataclass(frozen=True, slots=True)
class Trace:
    """One recording: its name, samples (n×3, g) and sample rate (Hz)."""

    name: str
    xyz: Floats
    rate: float
    in_bed: npt.NDArray[np.bool_] | None = None
    """Per sample, whether a bed sensor sees the wearer in bed (None: no bed sensor)."""


def _bad_line(path: str, lines: Sequence[str]) -> TraceError:
    """Find the first line that is not four numbers (only called once parsing failed)."""
    for i, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != 4:
            return TraceError(path, i, f"expected 4 values t,ax,ay,az, got {len(cells)}")
        for name, cell in zip(HEADER, cells, strict=True):
            try:
                float(cell)
            except ValueError:
                return TraceError(path, i, f"{name} is not a number: {cell.strip()[:30]!r}")
    return TraceError(path, None, "could not parse the samples")


def read_trace(path: str | Path, units: Units = "g", rate: float | None = None) -> Trace:
    """Read and check one trace; the rate comes from ``t`` unless given: the median
    spacing, or the mean one where samples came in bursts (median under half the mean)."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise TraceError(name, None, f"cannot read: {exc}") from exc
    head, _, body = text.partition("\n")
    if tuple(c.strip().lower() for c in head.split(",")) != HEADER:
        raise TraceError(name, 1, f"header must be t,ax,ay,az, got {head.strip()[:60]!r}")
    try:
        data = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        raise _bad_line(name, body.split("\n")) from None
    if data.shape[0] < 2:
        raise TraceError(name, None, "fewer than 2 samples")
    if data.shape[1] != 4:
        raise _bad_line(name, body.split("\n"))
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise TraceError(name, int(np.argmax(bad)) + 2, "value is not finite")
    dt = np.diff(data[:, 0])
    if (dt <= 0).any():
        raise TraceError(name, int(np.argmax(dt <= 0)) + 3, "t must increase")
    fs = rate if rate is not None else 1.0 / float(np.median(dt))
    mean_dt = float(data[-1, 0] - data[0, 0]) / (len(data) - 1)
    if rate is None and fs * mean_dt > 2.0:
        # delivered in bursts (a watch sends a few samples at a time, stamped on
        # arrival): sampled evenly in truth, at the mean rate
        fs = 1.0 / mean_dt
    if not 1.0 <= fs <= 2000.0:
        raise TraceError(name, None, f"implausible sample rate {fs:.3g} Hz")
    xyz = data[:, 1:].astype(np.float32)
    if units == "ms2":
        xyz /= np.float32(G)
    return Trace(name, xyz, round(fs, 3))


def hold_end(
    xyz: Floats, rate: float, seconds: float, rng: np.random.Generator, noise_g: float = 0.01
) -> Floats:
    """Extend a trace by the mean of its last second plus per-axis noise, for ``seconds``."""
    if seconds <= 0:
        return xyz
    last = xyz[-max(1, round(rate)) :].mean(axis=0)
    n = round(seconds * rate)
    tail = last + noise_g * rng.standard_normal((n, 3))
    return np.concatenate([xyz, tail.astype(np.float32)])


def replay(
    traces: Sequence[Trace],
    *,
    settings: FallSettings | None = None,
    hold_end_s: float = 0.0,
    hold_noise_g: float = 0.01,
    seed: int = 0,
    placement: Placement = Placement.UNKNOWN,
    models: FallModels | None = None,
    candidates: bool = False,
) -> list[dict[str, Any]]:
    """Run every trace through a fall detector; one event dict per detection, by file then time.

    Traces of one rate share one detector, one row each, fed 1-second frames; a final
    partial second is dropped. Every trace is worn at ``placement``; ``models`` (default:
    the shipped ones) and ``candidates`` are the detector's.
    """
    rng = np.random.default_rng(seed)
    groups: dict[float, list[int]] = defaultdict(list)
    for i, tr in enumerate(traces):
        groups[tr.rate].append(i)
    events: list[tuple[int, float, dict[str, Any]]] = []
    for rate, members in groups.items():
        n = max(1, round(rate))
        data = [hold_end(traces[i].xyz, rate, hold_end_s, rng, hold_noise_g) for i in members]
        frames = [len(d) // n for d in data]
        detector = FallDetector(settings, models, candidates=candidates)
        detector.place(np.arange(len(members)), int(placement))
        by_len = np.argsort(frames)[::-1]  # longest first: active rows stay a prefix
        lengths = np.asarray(frames)[by_len]
        width = max(frames, default=0)
        stacked = np.zeros((len(members), width * n, 3), np.float32)
        # a bed sensor's word per row and frame (-1: none), its readings BED_PERIOD_S apart
        bed = np.full((len(members), width), -1, np.int8)
        for row, j in enumerate(by_len):
            stacked[row, : frames[j] * n] = data[j][: frames[j] * n]
            mask = traces[members[j]].in_bed
            if mask is not None:
                held = np.concatenate([mask, np.full(len(data[j]) - len(mask), mask[-1])])
                said = held[: frames[j] * n : n].astype(np.int8)
                reads = np.arange(frames[j]) % BED_PERIOD_S == row % BED_PERIOD_S
                bed[row, : frames[j]] = np.where(reads, said, -1)
        frame_s = n / rate
        for k in range(width):
            active = int((lengths > k).sum())  # rows still running: a prefix
            rows = np.arange(active)
            found = []
            reads = np.flatnonzero(bed[:active, k] >= 0)
            if len(reads):
                found += detector.update(ReadingBatch(
                    BatchStream.BED, reads, np.full(len(reads), k * frame_s),
                    {"presence": bed[reads, k].astype(np.float64)},
                ))  # fmt: skip
            batch = AccelBatch(
                rows=rows,
                ts=np.full(active, k * frame_s),
                accel=stacked[:active, k * n : (k + 1) * n],
                rate=rate,
            )
            found += detector.update(batch)
            if k == width - 1:
                found += detector.tick(float("inf"))  # held falls the bed never answered
            for d in found:
                i = members[by_len[d.row]]
                t = round(max(d.ts, 0.0), 3)
                events.append(
                    (i, t, {"file": traces[i].name, "kind": d.kind, "t": t, **d.evidence})
                )
    events.sort(key=lambda e: (e[0], e[1]))
    return [e[2] for e in events]


def replay_judged(
    traces: Sequence[Trace],
    judges: Sequence[FallModels],
    *,
    settings: FallSettings | None = None,
    hold_end_s: float = 0.0,
    placement: Placement = Placement.UNKNOWN,
) -> list[dict[str, Any]]:
    """:func:`replay` with each trace judged by its own models (``judges[i]`` for
    ``traces[i]``: e.g. those of the cross-validation fold that never saw its person); one
    replay per set of models, the events then in trace order and time."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, models in enumerate(judges):
        groups[id(models)].append(i)
    order = {tr.name: i for i, tr in enumerate(traces)}
    events: list[dict[str, Any]] = []
    for members in groups.values():
        events += replay(
            [traces[i] for i in members], settings=settings, hold_end_s=hold_end_s,
            placement=placement, models=judges[members[0]],
        )  # fmt: skip
    events.sort(key=lambda e: (order[e["file"]], e["t"]))
    return events


def replay_files(
    paths: Iterable[str | Path],
    *,
    units: Units = "g",
    rate: float | None = None,
    settings: FallSettings | None = None,
    hold_end_s: float = 0.0,
    seed: int = 0,
    placement: Placement = Placement.UNKNOWN,
) -> tuple[list[dict[str, Any]], list[TraceError]]:
    """Read and replay files; returns the events and the errors of files left out."""
    traces: list[Trace] = []
    errors: list[TraceError] = []
    for path in paths:
        try:
            traces.append(read_trace(path, units, rate))
        except TraceError as exc:
            errors.append(exc)
    events = replay(
        traces, settings=settings, hold_end_s=hold_end_s, seed=seed, placement=placement
    )
    return events, errors

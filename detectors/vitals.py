"""Vital signs: outside safe ranges (critical), or far from the elder's own baseline (warning).

Signals: the wearable's heart rate and SpO2, the bed's heart rate and breathing rate, each
with its own state (two sensors of one heart differ in bias and noise). Per signal, four
conditions, each debounced by :class:`~detectors.base.Hysteresis`:

* **absolute** (critical): heart rate above the care level's ``hr_high`` (tachycardia) or
  below ``hr_low`` (bradycardia), SpO2 below ``spo2_low`` (low_spo2), breathing rate above
  ``br_high`` or below ``br_low`` (breathing); re-armed once back inside by ``exit_margin``;
* **baseline** (warning, same kinds): at rest, the value is ``deviation_z`` (care level)
  standard deviations *and* at least ``min_delta`` away from the elder's own exponentially
  weighted mean; re-armed once back within ``exit_z`` × ``deviation_z``.

A condition enters after ``min_samples`` consecutive samples beyond it spanning at least
``sustain_s`` (10 samples and 30 s for the 1 Hz wearable, 3 and 30 s for the bed), so one
noisy sample never alarms; a baseline deviation must last ``deviation_sustain_s`` (5 min):
a heart rate raised for a minute by bending or climbing is effort, not a changed baseline.
The baseline (mean and variance, time constant ``tau_s``) learns only from resting samples
that trigger nothing, so a tachycardia never becomes normal (river's filter idea). Heart
rate rises with effort: the wearable's heart rate is judged against the baseline only at
rest (``mag_std`` below ``rest_g`` and no steps); in-bed readings are at rest once the
elder has lain in bed for ``settle_s`` (a heart still racing from the walk to bed is no
deviation either).

Assumptions: readings in time order per row; NaN means not measured. Warm-up: the baseline
check starts after ``warm_s`` seconds of resting data (absolute ranges apply from the
first sample); before that an elder has the care-level ranges only.

Cost per 1 s wearable batch of 10,000 rows: ~0.6 ms (two signals, ~25 vector operations
each; the debouncing looks only at rows with something beyond a threshold). State: per
signal 3 float64 + the debouncer (4 conditions): ~400 bytes per row for the four.

>>> rng = np.random.default_rng(1)
>>> det = VitalsDetector()
>>> hr = np.r_[70 + rng.normal(0, 2, 20), 170.0, 70 + rng.normal(0, 2, 20), np.full(40, 140.0)]
>>> found = [d for t, x in enumerate(hr) for d in det.update(ReadingBatch(
...     "wearable", np.array([0]), np.array([float(t)]), {"hr": np.array([x])}))]
>>> [(d.kind, d.severity.value, d.ts) for d in found]  # the lone 170 bpm does not alarm
[('tachycardia', 'critical', 71.0)]
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from detectors.base import (
    BatchStream,
    Detection,
    Hysteresis,
    ReadingBatch,
    Rows,
    Severity,
    Times,
    grow,
    waves,
)
from detectors.care import Care
from homecare.schema import Wearable
from homecare.thresholds import VitalsSettings

__all__ = ["SIGNALS", "VitalsDetector", "VitalsSettings"]

_EPS = 1e-6
F64 = npt.NDArray[np.float64]


class Signal(NamedTuple):
    """One vital sign of one stream: where it is read and how it is judged."""

    stream: str
    column: str
    high: str | None  # care limit above which it is critical, and the kind
    low: str | None
    high_kind: str
    low_kind: str
    dev_high: bool  # a rise from the baseline matters


SIGNALS: tuple[Signal, ...] = (
    Signal(BatchStream.WEARABLE, "hr", "hr_high", "hr_low", "tachycardia", "bradycardia", True),
    Signal(BatchStream.WEARABLE, "spo2", None, "spo2_low", "", "low_spo2", False),
    Signal(BatchStream.BED, "hr", "hr_high", "hr_low", "tachycardia", "bradycardia", True),
    Signal(BatchStream.BED, "br", "br_high", "br_low", "breathing", "breathing", True),
)
CONDITIONS = ("high", "low", "dev_high", "dev_low")


class VitalsDetector:
    """Critical vital signs and sustained deviations from the own baseline (module doc)."""

    kind: ClassVar[str] = "vitals"
    streams: ClassVar[frozenset[str]] = frozenset({BatchStream.WEARABLE, BatchStream.BED})
    _ROW_ARRAYS: ClassVar[tuple[str, ...]] = ("mean", "var", "acc", "last")

    def __init__(self, settings: VitalsSettings | None = None, care: Care | None = None) -> None:
        self.settings = s = settings or VitalsSettings()
        self.care = care or Care()
        k = len(SIGNALS)
        # baseline per row and signal: mean, variance, resting seconds seen, last update
        self.mean = np.zeros((k, 0))
        self.var = np.zeros((k, 0))
        self.acc = np.zeros((k, 0))
        self.last = np.zeros((k, 0))
        self.moved = np.zeros(0)  # per row: last wearable second with movement or steps
        self.bed_since = np.zeros(0)  # per row: first reading of the current stay in bed
        self.hyst = [
            Hysteresis(
                len(CONDITIONS),
                s.wearable_min_samples if sig.stream == BatchStream.WEARABLE else s.bed_min_samples,
                [s.sustain_s, s.sustain_s, s.deviation_sustain_s, s.deviation_sustain_s],
            )
            for sig in SIGNALS
        ]
        self.n = 0

    def _see(self, rows: Rows) -> None:
        top = int(rows.max()) + 1
        if top <= self.n:
            return
        for name in self._ROW_ARRAYS:
            setattr(self, name, grow(getattr(self, name).T, top, np.nan if name == "last" else 0).T)
        for h in self.hyst:
            h.grow(top)
        self.moved = grow(self.moved, top, -np.inf)
        self.bed_since = grow(self.bed_since, top, np.nan)
        self.care.ensure(top)
        self.n = top

    def state_bytes(self) -> int:
        own = int(sum(getattr(self, n).nbytes for n in self._ROW_ARRAYS))
        own += self.moved.nbytes + self.bed_since.nbytes
        return own + sum(h.nbytes() for h in self.hyst)

    def tick(self, now: float) -> list[Detection]:
        """Vital signs are judged when they arrive; time alone changes nothing."""
        return []

    def update(self, batch: ReadingBatch) -> list[Detection]:
        if len(batch) == 0 or batch.stream not in self.streams:
            return []
        self._see(batch.rows)
        found: list[Detection] = []
        if batch.stream == BatchStream.WEARABLE:
            # no movement statistics: taken as rest (NaN compares False)
            rest = ~(batch.column(Wearable.mag_std) >= self.settings.rest_g)
            rest &= ~(batch.column("steps") > 0)
            np.maximum.at(self.moved, batch.rows[~rest], batch.ts[~rest])
            rest &= batch.ts - self.moved[batch.rows] >= self.settings.settle_s
        else:
            presence = ~(batch.column("presence") <= 0.5)  # no presence column: in bed
            rest = np.ones(len(batch), bool)
        for part in waves(batch.rows) or [np.arange(len(batch))]:
            rows, ts = batch.rows[part], batch.ts[part]
            if batch.stream == BatchStream.BED:
                # in order per row: a stay in bed starts at its first reading with presence
                p = presence[part]
                since = np.where(p, np.fmin(self.bed_since[rows], ts), np.nan)
                self.bed_since[rows] = since
                rest[part] = p & (ts - since >= self.settings.settle_s)
            level = self.care.level[rows]
            learn = rest[part]
            if batch.stream == BatchStream.WEARABLE and self.settings.learn_every_s > 1:
                # a 3-day baseline needs no 1 Hz feed: each row learns every k-th second,
                # staggered over rows so the cost is spread evenly
                k = self.settings.learn_every_s
                learn = learn & ((rows + np.floor(ts).astype(np.int64)) % k == 0)
            for k, sig in enumerate(SIGNALS):
                if sig.stream == batch.stream and sig.column in batch.values:
                    x = np.asarray(batch.values[sig.column][part], np.float64)
                    found += self._signal(k, sig, rows, ts, x, rest[part], learn, level)
        found.sort(key=lambda d: (d.ts, d.row))
        return found

    def _signal(
        self,
        k: int,
        sig: Signal,
        rows: Rows,
        ts: Times,
        x: F64,
        rest: npt.NDArray[np.bool_],
        learnable: npt.NDArray[np.bool_],
        level: npt.NDArray[np.int8],
    ) -> list[Detection]:
        s, care, h = self.settings, self.care, self.hyst[k]
        valid = ~np.isnan(x)
        if not valid.all():
            sel = np.flatnonzero(valid)
            rows, ts, x, rest, learnable = rows[sel], ts[sel], x[sel], rest[sel], learnable[sel]
            level = level[sel]
        if len(rows) == 0:
            return []
        mean, var, acc = self.mean[k, rows], self.var[k, rows], self.acc[k, rows]
        hi = care.column(sig.high)[level] if sig.high else None
        lo = care.column(sig.low)[level] if sig.low else None
        z = care.column("deviation_z")[level]
        sd = np.sqrt(var)
        band = np.maximum(z * sd, s.min_delta[sig.column])
        judge = rest & (acc >= s.warm_s)
        dev = x - mean
        e_hi = x > hi if hi is not None else np.zeros(len(x), bool)
        e_lo = x < lo if lo is not None else np.zeros(len(x), bool)
        e_dh = judge & (dev > band) if sig.dev_high else np.zeros(len(x), bool)
        e_dl = judge & (-dev > band)
        busy = h.busy[rows]
        # learn the baseline from resting samples that raise nothing, on rows not alarming
        learn = np.flatnonzero(learnable & ~e_hi & ~e_lo & ~busy & (~judge | (np.abs(dev) <= band)))
        if len(learn):
            self._learn(k, rows[learn], ts[learn], x[learn], mean[learn], var[learn], acc[learn])
        look = np.flatnonzero(e_hi | e_lo | e_dh | e_dl | busy)
        if len(look) == 0:
            return []
        margin = s.exit_margin[sig.column]
        xl, dl, bl = x[look], np.abs(dev[look]), s.exit_z * band[look]
        inside_dev = dl <= bl
        enter = np.column_stack([e_hi[look], e_lo[look], e_dh[look], e_dl[look]])
        exit_ = np.column_stack(
            [
                xl < hi[look] - margin if hi is not None else np.ones(len(look), bool),
                xl > lo[look] + margin if lo is not None else np.ones(len(look), bool),
                inside_dev | ~rest[look],
                inside_dev | ~rest[look],
            ]
        )
        idx, new = h.step(rows[look], ts[look], enter, exit_)
        found: list[Detection] = []
        for i, c in zip(*np.nonzero(new), strict=True):
            j = look[idx[i]]
            row = int(rows[j])
            critical = c < 2
            kind = sig.high_kind if c % 2 == 0 else sig.low_kind
            evidence = {"value": float(x[j]), "mean": round(float(mean[j]), 2),
                        "sd": round(float(sd[j]), 2), "signal": float(k)}  # fmt: skip
            if critical:
                evidence["limit"] = float((hi if c == 0 else lo)[j])  # type: ignore[index]
            else:
                evidence["z"] = round(float(dev[j] / (sd[j] + _EPS)), 2)
            severity = Severity.CRITICAL if critical else Severity.WARNING
            found.append(Detection(kind, row, float(ts[j]), severity, evidence))
        return found

    def _learn(self, k: int, rows: Rows, ts: Times, x: F64, mean: F64, var: F64, acc: F64) -> None:
        """Time-weighted EWMA of mean and variance; a running mean until ``tau_s`` is seen."""
        s = self.settings
        last = self.last[k, rows]
        dt = np.where(np.isnan(last), 1.0, np.clip(ts - last, 0.0, s.max_step_s))
        acc = acc + dt
        alpha = dt / np.minimum(acc, s.tau_s)
        diff = x - mean
        inc = alpha * diff
        self.mean[k, rows] = mean + inc
        self.var[k, rows] = (1 - alpha) * (var + diff * inc)
        self.acc[k, rows] = acc
        self.last[k, rows] = ts

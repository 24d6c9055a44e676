"""Peers for ``homecare bench detect``: what our batched fall detector is measured against.

* :class:`NaiveFall` — the same four fall stages as :class:`detectors.fall.FallDetector`
  (impact, free-fall dip, posture change, lying still; the thresholds of
  :class:`~detectors.fall.FallSettings`), written the straightforward way: one Python
  object per elder and a plain loop over samples, no numpy on the hot path. It is the
  honest naive baseline: what a first implementation would look like, with running sums
  and bounded deques rather than anything quadratic.
* :func:`hst_rate` — River's ``HalfSpaceTrees`` scoring the magnitude stream sample by
  sample, the way River's anomaly detectors are meant to be used (``score_one`` then
  ``learn_one`` on ``{"mag": x}``).

Both consume plain Python floats prepared beforehand, so only the detection is timed.

>>> import numpy as np
>>> from device_sim.motions import motion
>>> t, xyz, info = motion("fall_forward", np.random.default_rng(7), rate=50)
>>> det = NaiveFall()
>>> found = [d for i, (x, y, z) in enumerate(xyz.tolist()) if (d := det.step(x, y, z, i / 50))]
>>> [(d.kind, abs(d.ts - info["impact_t"]) < 0.5) for d in found]
[('fall', True)]
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from detectors.fall import FallSettings

__all__ = ["NaiveFall", "NaiveFound", "hst_rate", "naive_rate"]


@dataclass(frozen=True, slots=True)
class NaiveFound:
    """A fall confirmed by :class:`NaiveFall`, with the stage scores behind it."""

    kind: str
    ts: float
    evidence: dict[str, float] = field(default_factory=dict)


class NaiveFall:
    """The fall stages of one elder, one sample at a time (see module doc).

    Frames are the ``frame_len`` samples between calls with ``t`` on a frame boundary;
    the stillness activity is taken per frame, as the batched detector does.
    """

    def __init__(self, settings: FallSettings | None = None, frame_len: int = 50) -> None:
        s = settings or FallSettings()
        self.rate = s.rate_hz
        self.dt = 1.0 / s.rate_hz
        self.frame_len = frame_len
        self.impact_g, self.freefall_g, self.drop_g = s.impact_g, s.freefall_g, s.drop_g
        self.drop_s, self.posture_deg, self.offbody_g = s.drop_s, s.posture_deg, s.offbody_g
        self.still_g, self.still_fraction = s.still_g, s.still_fraction
        self.settle_s, self.still_window_s = s.settle_s, s.still_window_s
        self.k_imp = max(1, round(s.impact_window_s * s.rate_hz))
        self.k_ff = max(1, round(0.1 * s.rate_hz))
        self.back = round(s.impact_lookback_s * s.rate_hz)
        self.dip = round(s.freefall_window_s * s.rate_hz)
        self.pre_gap = round(s.pre_gap_s * s.rate_hz)
        self.pre_win = round(s.pre_window_s * s.rate_hz)
        h = math.ceil(s.history_s * s.rate_hz) + 1
        self.xyz: deque[tuple[float, float, float]] = deque(maxlen=h)
        self.mag: deque[float] = deque(maxlen=h)
        self.smooth: deque[float] = deque(maxlen=h)  # impact-window mean per sample
        self.ff: deque[float] = deque(maxlen=h)  # free-fall-window mean per sample
        self.w_imp: deque[float] = deque()
        self.w_ff: deque[float] = deque()
        self.s_imp = 0.0
        self.s_ff = 0.0
        self.n = 0
        self.pending = False
        self.unscored = False
        self.last_impact = self.win_start = self.win_end = 0.0
        self.impact_t = self.peak = self.dip_g = self.flight = 0.0
        self.pre = (0.0, 0.0, 1.0)
        self._reset_window()

    def _reset_window(self) -> None:
        self.acc_n = 0
        self.acc_x = self.acc_y = self.acc_z = 0.0
        self.acc_still = self.acc_act = 0.0
        self.f_n = 0
        self.f_x = self.f_y = self.f_z = self.f_2 = 0.0

    def step(self, x: float, y: float, z: float, t: float) -> NaiveFound | None:
        """Consume one sample at time ``t``; a fall when its stillness window ends."""
        m2 = x * x + y * y + z * z
        m = math.sqrt(m2)
        self.w_imp.append(m)
        self.s_imp += m
        if len(self.w_imp) > self.k_imp:
            self.s_imp -= self.w_imp.popleft()
        self.w_ff.append(m)
        self.s_ff += m
        if len(self.w_ff) > self.k_ff:
            self.s_ff -= self.w_ff.popleft()
        self.xyz.append((x, y, z))
        self.mag.append(m)
        smooth = self.s_imp / len(self.w_imp)
        self.smooth.append(smooth)
        self.ff.append(self.s_ff / len(self.w_ff))
        self.n += 1
        found = None
        if smooth >= self.impact_g:
            self.last_impact = t
            self.win_start = t + self.settle_s
            self.win_end = self.win_start + self.still_window_s
            self.pending = self.unscored = True
            self._reset_window()
        if self.unscored and t + self.dt > self.win_start:
            self._score(t)
        if self.pending and self.win_start <= t < self.win_end:
            self.acc_n += 1
            self.acc_x += x
            self.acc_y += y
            self.acc_z += z
            self.f_n += 1
            self.f_x += x
            self.f_y += y
            self.f_z += z
            self.f_2 += m2
        if self.n % self.frame_len == 0:  # a frame ends: its share of the stillness window
            self._frame_activity()
            if self.pending and t + self.dt >= self.win_end:
                found = self._decide()
        return found

    def _frame_activity(self) -> None:
        c = self.f_n
        if c:
            mean2 = (self.f_x * self.f_x + self.f_y * self.f_y + self.f_z * self.f_z) / (c * c)
            act = math.sqrt(max(self.f_2 / c - mean2, 0.0))
            if act <= self.still_g:
                self.acc_still += c
            self.acc_act += act * c
        self.f_n = 0
        self.f_x = self.f_y = self.f_z = self.f_2 = 0.0

    def _score(self, t: float) -> None:
        """Peak, dip, flight and posture before, looked up in the history deques."""
        smooth, mag, ff, xyz = list(self.smooth), list(self.mag), list(self.ff), list(self.xyz)
        last = len(smooth) - 1 - round((t - self.last_impact) * self.rate)
        peak_at, peak = last, -1.0
        for i in range(max(last - self.back, 0), last + 1):
            if smooth[i] >= peak:  # the latest of equal maxima, like a reversed argmax
                peak_at, peak = i, smooth[i]
        impact = max(peak_at - self.k_imp // 2, 0)
        lo_dip = max(impact - self.dip, 0)
        self.dip_g = min(ff[lo_dip : impact + 1])
        self.flight = sum(1 for v in mag[lo_dip : impact + 1] if v < self.drop_g) / self.rate
        hi = max(impact - self.pre_gap, 1)
        lo = max(hi - self.pre_win, 0)
        sx = sy = sz = 0.0
        for x, y, z in xyz[lo:hi]:
            sx += x
            sy += y
            sz += z
        k = hi - lo
        self.pre = (sx / k, sy / k, sz / k)
        self.peak = peak
        self.impact_t = t - (len(smooth) - 1 - impact) / self.rate
        self.unscored = False

    def _decide(self) -> NaiveFound | None:
        self.pending = False
        n = max(self.acc_n, 1)
        ax, ay, az = self.acc_x / n, self.acc_y / n, self.acc_z / n
        px, py, pz = self.pre
        norm = math.sqrt(ax * ax + ay * ay + az * az) * math.sqrt(px * px + py * py + pz * pz)
        cos = (ax * px + ay * py + az * pz) / (norm + 1e-6)
        angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
        still = self.acc_still / n if self.acc_n else 0.0
        act = self.acc_act / n
        evidence = {"peak_g": self.peak, "freefall_g": self.dip_g, "flight_s": self.flight,
                    "posture_deg": angle, "still_fraction": still, "activity_g": act}  # fmt: skip
        ok = (
            self.peak >= self.impact_g
            and self.dip_g <= self.freefall_g
            and self.flight < self.drop_s
            and angle >= self.posture_deg
            and still >= self.still_fraction
            and act >= self.offbody_g
        )
        return NaiveFound("fall", self.impact_t, evidence) if ok else None


def naive_rate(
    streams: Sequence[Sequence[tuple[float, float, float]]], t0: float, rate: float = 50.0
) -> tuple[float, float, int]:
    """Run :class:`NaiveFall` over each elder's samples (all streams of equal length,
    interleaved second by second as a live feed would be); return (samples/s, seconds
    taken, falls found)."""
    dets = [NaiveFall(frame_len=round(rate)) for _ in streams]
    per = round(rate)
    total = len(streams[0])
    found = 0
    dt = 1.0 / rate
    began = time.perf_counter()
    for start in range(0, total, per):
        for det, samples in zip(dets, streams, strict=True):
            t = t0 + start * dt
            for x, y, z in samples[start : start + per]:
                if det.step(x, y, z, t) is not None:
                    found += 1
                t += dt
    took = time.perf_counter() - began
    return len(streams) * total / took, took, found


def hst_rate(streams: Sequence[Sequence[float]], seed: int = 0) -> tuple[float, float, float]:
    """River's HalfSpaceTrees, one model per elder, scoring then learning each magnitude
    (limits 0–4 g); return (samples/s, seconds taken, highest score seen)."""
    from river.anomaly import HalfSpaceTrees

    limits: dict[Hashable, tuple[float, float]] = {"mag": (0.0, 4.0)}
    models = [HalfSpaceTrees(seed=seed + k, limits=limits) for k in range(len(streams))]
    total = len(streams[0])
    top = 0.0
    began = time.perf_counter()
    for start in range(0, total, 50):
        for model, mags in zip(models, streams, strict=True):
            for m in mags[start : start + 50]:
                x = {"mag": m}
                # river ships py.typed, but these two methods are unannotated.
                score = model.score_one(x)  # type: ignore[no-untyped-call]
                model.learn_one(x)  # type: ignore[no-untyped-call]
                if score > top:
                    top = score
    took = time.perf_counter() - began
    return len(streams) * total / took, took, top

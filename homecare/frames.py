"""Accelerometer frames as columns: what ingest stores and detectors read, computed one way.

Ingest and detect both turn a batch of validated :class:`~homecare.contract.WearableFrame`
into columns — grouped by sample rate, the samples stacked, per-second activity
statistics in one numpy pass — with :func:`frame_columns`; ingest formats the group's
rows as points, detect hands them to the detectors.

>>> still = np.tile(np.float32([0.0, -1.0, 0.0]), (2, 50, 1))
>>> {k: v.round(3).tolist() for k, v in frame_stats(still).items()}
{'mag_mean': [1.0, 1.0], 'mag_std': [0.0, 0.0], 'mag_peak': [1.0, 1.0], 'mag_min': [1.0, 1.0]}
>>> def frame(ts: float, rate: int, hr: int | None = None) -> WearableFrame:
...     upright = [[0.0, 0.0, 1.0]] * rate
...     data = {"elder": "e1", "device": "w1", "ts": ts, "rate": rate, "accel": upright, "hr": hr}
...     return WearableFrame.model_validate(data, context={"now": 3.0})
>>> groups = frame_columns([("a", frame(1, 50, 70)), ("b", frame(1, 25)), ("c", frame(2, 50))])
>>> [(g.rate, g.keys, g.accel.shape, g.ts.tolist()) for g in groups]
[(50, ['a', 'c'], (2, 50, 3), [1.0, 2.0]), (25, ['b'], (1, 25, 3), [1.0])]
>>> groups[0].vitals()["hr"].tolist(), groups[0].gravity().tolist()
([70.0, nan], [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from homecare.contract import WearableFrame
from homecare.schema import Wearable

__all__ = ["VITALS", "Floats", "FrameGroup", "frame_columns", "frame_stats"]

Floats = npt.NDArray[np.float32]
K = TypeVar("K")
VITALS = ("hr", "spo2", "steps", "battery")
"""The vital signs a frame may carry besides its samples."""
_NAN = float("nan")


def frame_stats(accel: Floats) -> dict[str, Floats]:
    """Per-frame magnitude statistics (g) of frames×samples×3, as ingest stores them:
    the ``mag_*`` columns of a ``wearable`` batch. One pass for the magnitudes; the
    spread from E[|a|²] - E[|a|]² (float64 sums: off by < 1e-5 g for a still device)."""
    frames, n, _ = accel.shape
    flat = accel.reshape(-1, 3)
    mag2 = np.einsum("ni,ni->n", flat, flat).reshape(frames, n)
    mean = np.sqrt(mag2).mean(1, dtype=np.float64)
    var = np.maximum(mag2.mean(1, dtype=np.float64) - mean * mean, 0.0)
    return {
        Wearable.mag_mean: mean.astype(np.float32),
        Wearable.mag_std: np.sqrt(var).astype(np.float32),
        Wearable.mag_peak: np.sqrt(mag2.max(1)),
        Wearable.mag_min: np.sqrt(mag2.min(1)),
    }


@dataclass(frozen=True, slots=True)
class FrameGroup(Generic[K]):
    """The frames of one sample rate, in the order they came, with their columns.

    ``keys`` are what the caller paired with each frame (its line-protocol tags for
    ingest, its topic for detect)."""

    rate: int
    keys: list[K]
    frames: list[WearableFrame]
    ts: npt.NDArray[np.float64]
    """Each frame's first sample (Unix seconds)."""
    accel: Floats
    """frames × rate × 3 samples, in g."""
    stats: dict[str, Floats]
    """:func:`frame_stats` of ``accel``."""

    def gravity(self) -> npt.NDArray[np.float64]:
        """Each frame's mean acceleration (frames × 3): gravity's direction, the posture."""
        mean: npt.NDArray[np.float64] = self.accel.mean(axis=1, dtype=np.float64)
        return mean

    def vitals(self) -> dict[str, npt.NDArray[np.float64]]:
        """:data:`VITALS` as float columns, NaN where a frame carries none."""
        return {
            name: np.array(
                [_NAN if (v := getattr(f, name)) is None else v for f in self.frames], np.float64
            )
            for name in VITALS
        }


def frame_columns(items: Sequence[tuple[K, WearableFrame]]) -> list[FrameGroup[K]]:
    """Group ``(key, frame)`` pairs by sample rate and compute each group's columns."""
    by_rate: dict[int, tuple[list[K], list[WearableFrame]]] = {}
    for key, frame in items:
        keys, frames = by_rate.setdefault(frame.rate, ([], []))
        keys.append(key)
        frames.append(frame)
    groups = []
    for rate, (keys, frames) in by_rate.items():
        accel = np.stack([f.accel for f in frames])
        ts = np.fromiter((f.ts for f in frames), np.float64, len(frames))
        groups.append(FrameGroup(rate, keys, frames, ts, accel, frame_stats(accel)))
    return groups

"""Per-second activity statistics of accelerometer frames: what ingest stores and detectors read.

>>> import numpy as np
>>> still = np.tile(np.float32([0.0, -1.0, 0.0]), (2, 50, 1))
>>> {k: v.round(3).tolist() for k, v in frame_stats(still).items()}
{'mag_mean': [1.0, 1.0], 'mag_std': [0.0, 0.0], 'mag_peak': [1.0, 1.0], 'mag_min': [1.0, 1.0]}
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from homecare.schema import Wearable

__all__ = ["Floats", "frame_stats"]

Floats = npt.NDArray[np.float32]


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

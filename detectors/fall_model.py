"""The fall detector's learned second stage: placements, features and tree models.

A wearable is worn on the wrist, at the chest (a pendant), at the waist (a belt clip), or
no one said (``unknown``). Each impact candidate of the first stage is described by
:data:`FEATURES`, all orientation-free (magnitudes, the angle between two gravity
directions, the norm of the jerk vector), and scored by a gradient-boosted tree ensemble
trained for its placement (``homecare evaluate train-fall``).

A model file is a plain ``.npz`` of arrays (the trees' children, features, thresholds and
leaf values; the feature names; the decision threshold), loaded with
``allow_pickle=False``: a file from an untrusted place can hold wrong numbers, never
code. Scoring walks every tree for every candidate at once, in numpy, without
scikit-learn.

>>> m = TreeModel.from_arrays(
...     features=("peak_g",), base=0.0, rate=1.0, threshold=0.5,
...     left=np.array([[1, -1, -1]]), right=np.array([[2, -1, -1]]),
...     feature=np.array([[0, 0, 0]]), split=np.array([[2.0, 0, 0]]),
...     value=np.array([[0.0, -3.0, 3.0]]))
>>> m.score({"peak_g": np.array([1.5, 2.5])}).round(3).tolist()
[0.047, 0.953]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from homecare.errors import DataError

__all__ = [
    "FEATURES",
    "MODEL_DIR",
    "FallModels",
    "ModelError",
    "Placement",
    "TreeModel",
    "placement_code",
]

MODEL_DIR = Path(__file__).with_name("models")
"""The shipped models: ``fall-<placement>.npz`` with its card ``fall-<placement>.md``."""

FEATURES: tuple[str, ...] = (
    "peak_g",  # impact: 0.2 s mean magnitude at its largest
    "raw_peak_g",  # the largest single-sample magnitude within ±0.5 s
    "freefall_g",  # 0.1 s mean magnitude at its lowest in the second before
    "flight_s",  # time below drop_g in that second
    "pre_mean_g",  # magnitude mean and spread 2.5–0.5 s before the impact
    "pre_std_g",
    "impact_std_g",  # spread within ±0.5 s
    "post_std_g",  # spread 0.5–1 s after
    "jerk_gps",  # largest |Δa|·rate within ±0.5 s, g/s
    "above2_s",  # time above 2 g from 2 s before to 1 s after
    "turn_deg",  # gravity direction before vs 0.5–1 s after
    "energy_g",  # mean |magnitude − 1 g| in the second before
    "min_g",  # the smallest magnitude in that second
    "dip_lead_s",  # from the deepest dip (0.1 s mean) to the impact
    "pre_busy_s",  # time 4–1 s before with |magnitude − 1 g| over 0.3 g (walking, jogging)
    # six spans from 3 s before to 1 s after: magnitude mean, spread; turn between spans
    *(f"{stat}_{i}" for i in range(6) for stat in ("mean", "spread")),
    *(f"swing_{i}" for i in range(1, 6)),
    "posture_deg",  # gravity direction before vs the stillness window
    "still_fraction",  # the stillness window: share of still samples
    "activity_g",  # and its mean activity
)
"""Candidate features, in the order a model's ``feature`` indices refer to."""


class Placement(IntEnum):
    """Where a wearable is worn; the code the fall detector keeps per row."""

    UNKNOWN = 0
    WRIST = 1
    CHEST = 2
    WAIST = 3


_ALIASES = {"pendant": Placement.CHEST, "belt": Placement.WAIST, "hip": Placement.WAIST}


def placement_code(name: str | None) -> Placement:
    """The placement of a status report's or registry's word (``pendant`` is chest,
    ``belt`` waist; none or anything else unknown)."""
    if name is None:
        return Placement.UNKNOWN
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    try:
        return Placement[key.upper()]
    except KeyError:
        return Placement.UNKNOWN


class ModelError(DataError):
    """A model file that cannot be used (missing arrays, wrong shapes, unknown features)."""


Ints = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TreeModel:
    """A binary gradient-boosted tree ensemble as arrays (trees × nodes, padded with -1).

    ``score`` is the probability of a fall: ``sigmoid(base + rate · Σ leaf values)``.
    """

    features: tuple[str, ...]
    base: float
    rate: float
    threshold: float
    left: Ints
    right: Ints
    feature: Ints
    split: F64
    value: F64
    card: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        *,
        features: tuple[str, ...],
        base: float,
        rate: float,
        threshold: float,
        left: Ints,
        right: Ints,
        feature: Ints,
        split: F64,
        value: F64,
    ) -> TreeModel:
        arrays = [np.asarray(a) for a in (left, right, feature, split, value)]
        shape = arrays[0].shape
        if len(shape) != 2 or any(a.shape != shape for a in arrays):
            raise ModelError("tree arrays must all be trees × nodes")
        unknown = set(features) - set(FEATURES)
        if unknown:
            raise ModelError(f"model uses unknown features {sorted(unknown)}")
        left, right, feat = (a.astype(np.int64) for a in arrays[:3])
        inner = left >= 0
        n_nodes = shape[1]
        if (left >= n_nodes).any() or (right >= n_nodes).any() or (inner != (right >= 0)).any():
            raise ModelError("tree children out of range")
        if ((feat < 0) | (feat >= len(features)))[inner].any():
            raise ModelError("tree feature index out of range")
        if not (0.0 <= threshold <= 1.0):
            raise ModelError(f"threshold {threshold} is not a probability")
        return cls(
            tuple(features), float(base), float(rate), float(threshold),
            left, right, feat, arrays[3].astype(np.float64), arrays[4].astype(np.float64),
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> TreeModel:
        """Read a model file (no pickle: object arrays are refused)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                names = tuple(str(n) for n in z["features"])
                return cls.from_arrays(
                    features=names,
                    base=float(z["base"]),
                    rate=float(z["rate"]),
                    threshold=float(z["threshold"]),
                    left=z["left"],
                    right=z["right"],
                    feature=z["feature"],
                    split=z["split"],
                    value=z["value"],
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not a fall model: {exc}") from exc

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            features=np.array(self.features, dtype=np.str_),
            base=np.float64(self.base),
            rate=np.float64(self.rate),
            threshold=np.float64(self.threshold),
            left=self.left.astype(np.int16),
            right=self.right.astype(np.int16),
            feature=self.feature.astype(np.int8),
            split=self.split.astype(np.float32),
            value=self.value.astype(np.float32),
        )

    def raw(self, x: F64) -> F64:
        """Log-odds for candidates × features (columns in ``self.features`` order)."""
        n = len(x)
        trees = len(self.left)
        node = np.zeros((trees, n), np.int64)
        t = np.arange(trees)[:, None]
        cols = np.arange(n)[None, :]
        for _ in range(self.left.shape[1]):  # depth is far less; stops when all are leaves
            left = self.left[t, node]
            inner = left >= 0
            if not inner.any():
                break
            go_left = x[cols, np.maximum(self.feature[t, node], 0)] <= self.split[t, node]
            node = np.where(inner, np.where(go_left, left, self.right[t, node]), node)
        total: F64 = self.base + self.rate * self.value[t, node].sum(axis=0)
        return total

    def score(self, columns: dict[str, F64]) -> F64:
        """Probability of a fall for candidates given as named columns."""
        x = np.stack([np.asarray(columns[f], np.float64) for f in self.features], axis=1)
        x = np.nan_to_num(x, nan=0.0)
        prob: F64 = 1.0 / (1.0 + np.exp(-self.raw(x)))
        return prob


@dataclass(frozen=True, slots=True)
class FallModels:
    """One model per placement (those without one decide by the rules)."""

    by_placement: dict[Placement, TreeModel] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path = MODEL_DIR) -> FallModels:
        """The models ``fall-<placement>.npz`` found in ``folder``."""
        found: dict[Placement, TreeModel] = {}
        for p in Placement:
            path = folder / f"fall-{p.name.lower()}.npz"
            if path.is_file():
                found[p] = TreeModel.load(path)
        return cls(found)

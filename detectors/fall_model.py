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
    _complete: tuple[int, Ints, F64, F64] = field(init=False, repr=False, compare=False)
    """Every tree as a complete binary tree of one depth (a shallower leaf repeated below
    itself): feature and threshold per inner node, value per leaf, walked by arithmetic."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_complete", self._completed())

    def _completed(self) -> tuple[int, Ints, F64, F64]:
        def depth(t: int, node: int) -> int:
            if self.left[t, node] < 0:
                return 0
            return 1 + max(depth(t, int(self.left[t, node])), depth(t, int(self.right[t, node])))

        trees = len(self.left)
        d = max((depth(t, 0) for t in range(trees)), default=0)
        inner, leaves = 2**d - 1, 2**d
        feat = np.zeros((trees, max(inner, 1)), np.int64)
        split = np.full((trees, max(inner, 1)), np.inf)  # +inf: always to the left
        value = np.zeros((trees, leaves))
        for t in range(trees):
            stack = [(0, 0, 0)]  # (node in the tree, position at its level, level)
            while stack:
                node, pos, level = stack.pop()
                if self.left[t, node] < 0:  # a leaf: fill every leaf below its position
                    span = 2 ** (d - level)
                    value[t, pos * span : (pos + 1) * span] = self.value[t, node]
                    continue
                k = 2**level - 1 + pos
                feat[t, k], split[t, k] = self.feature[t, node], self.split[t, node]
                stack.append((int(self.left[t, node]), 2 * pos, level + 1))
                stack.append((int(self.right[t, node]), 2 * pos + 1, level + 1))
        return d, feat, split, value

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
        """Log-odds for candidates × features (columns in ``self.features`` order): every
        tree for every candidate at once, one level per step (left when ``x <= split``)."""
        d, feat, split, value = self._complete
        n, trees = len(x), len(feat)
        inner = feat.shape[1]
        flat_x = np.ascontiguousarray(x, np.float64).ravel()
        flat_feat, flat_split = feat.ravel(), split.ravel()
        at_tree = np.arange(trees) * inner  # flat offsets: one gather per level
        at_row = (np.arange(n) * x.shape[1])[:, None]
        node = np.zeros((n, trees), np.int64)  # position within the current level
        for level in range(d):
            k = at_tree + (2**level - 1) + node
            f = flat_feat.take(k)
            node = 2 * node + (flat_x.take(at_row + f) > flat_split.take(k))
        leaves = value.shape[1]
        total: F64 = self.base + self.rate * value.ravel().take(
            np.arange(trees) * leaves + node
        ).sum(axis=1)
        return total

    def score(self, columns: dict[str, F64]) -> F64:
        """Probability of a fall for candidates given as named columns."""
        x = np.stack([np.asarray(columns[f], np.float64) for f in self.features], axis=1)
        x = np.nan_to_num(x, nan=0.0)
        prob: F64 = 1.0 / (1.0 + np.exp(-self.raw(x)))
        return prob


@dataclass(frozen=True, slots=True)
class FallModels:
    """One model per placement (those without one decide by the rules; ``unknown``'s
    decides with them: :func:`detectors.fall.decide`)."""

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

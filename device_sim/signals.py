"""Body signals of many elders at once, one second at a time, as numpy arrays.

Wearable frame convention (a pendant or a belt clip, worn upright on the trunk): a
resting accelerometer reads +1 g on the axis pointing *up*, and

* ``y`` runs along the body, head to feet: standing or walking reads ``(0, -1, 0)``;
* ``z`` points out of the chest: lying on the back reads ``(0, 0, +1)``, face down
  ``(0, 0, -1)``; sitting (trunk reclined about 22°) reads ``(0, -0.93, 0.37)``;
* ``x`` points to the wearer's right: lying on the left side reads ``(+1, 0, 0)``.

Walking adds a vertical bounce on ``y`` at the step frequency (1.8-2.0 Hz, its
dominant spectral peak), a fore-aft swing on ``z`` and a lateral sway on ``x`` at
half the step frequency (one stride). Nothing loops over samples: a second of
``n`` elders is one ``(n, rate, 3)`` array.

>>> rng = np.random.default_rng(0)
>>> grav = np.repeat(GRAVITY[[Posture.UPRIGHT]], 2, axis=0)
>>> act = np.array([Activity.STAND, Activity.WALK])
>>> a, phase, steps = accel_second(rng, 50, grav, act, np.array([0.0, 1.9]), np.zeros(2))
>>> a.shape, steps.tolist()
((2, 50, 3), [0, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from device_sim.routine import Activity, Posture

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Codes = npt.NDArray[np.integer[Any]]
"""Per-elder :class:`Activity` or :class:`Posture` codes."""

TWO_PI = 2.0 * np.pi

_AT_REST = {
    Posture.UPRIGHT: (0.0, -1.0, 0.0),
    Posture.SEATED: (0.0, -0.927, 0.375),
    Posture.SUPINE: (0.0, 0.0, 1.0),
    Posture.LEFT_SIDE: (1.0, 0.0, 0.0),
    Posture.RIGHT_SIDE: (-1.0, 0.0, 0.0),
    Posture.PRONE: (0.0, 0.0, -1.0),
}
GRAVITY: F64 = np.array([_AT_REST[p] for p in Posture])
"""Accelerometer reading at rest per :class:`Posture` code, g."""

TRUNK_Z_UP_TO_DEVICE: F64 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation from a body frame with z up along the trunk (``device_sim.motions``) to ours."""


def to_device_frame(xyz: F64) -> F64:
    """m×3 samples in the trunk-z-up body frame → this simulator's device frame."""
    return xyz @ TRUNK_Z_UP_TO_DEVICE.T


_NOISE = {Activity.SLEEP: 0.004, Activity.IN_BED: 0.01, Activity.SIT: 0.012,
          Activity.STAND: 0.02, Activity.WALK: 0.035, Activity.LIE_FLOOR: 0.006}
NOISE_G: F64 = np.array([_NOISE[a] for a in Activity])
"""Sensor noise plus small body movements, per :class:`Activity` code, g (1 sigma)."""

_HR = {Activity.SLEEP: -8.0, Activity.IN_BED: -4.0, Activity.SIT: 0.0,
       Activity.STAND: 6.0, Activity.WALK: 22.0, Activity.LIE_FLOOR: 15.0}
HR_OFFSET: F64 = np.array([_HR[a] for a in Activity])
"""Heart rate above the elder's resting rate, per :class:`Activity` code, bpm."""

HR_ALPHA: float = 1.0 - np.exp(-1.0 / 25.0)
"""Heart rate follows its target with a 25 s time constant."""

WALK_BOUNCE_G = 0.22
WALK_SWING_G = 0.09
WALK_SWAY_G = 0.05


def tilted(posture: Codes, rng: np.random.Generator, spread: float = 0.06) -> F64:
    """Gravity vectors for ``posture`` codes, each tilted a little at random (unit length)."""
    g: F64 = GRAVITY[posture] + rng.normal(0.0, spread, (len(posture), 3))
    unit: F64 = g / np.linalg.norm(g, axis=1, keepdims=True)
    return unit


def accel_second(
    rng: np.random.Generator,
    rate: int,
    grav: F64,
    activity: Codes,
    gait_hz: F64,
    phase: F64,
) -> tuple[F32, F64, npt.NDArray[np.int64]]:
    """One second of accelerometer samples for every elder.

    Returns ``(accel (n, rate, 3) in g, gait phase after the second, steps taken)``;
    the phase (radians, kept modulo 4π so the half-frequency sway stays continuous)
    carries the gait across seconds, and a step is counted at each 2π it crosses.
    """
    n = len(activity)
    out = rng.standard_normal((n, rate, 3), dtype=np.float32)
    out *= NOISE_G[activity].astype(np.float32)[:, None, None]
    out += grav.astype(np.float32)[:, None, :]
    new_phase = phase.copy()
    steps = np.zeros(n, dtype=np.int64)
    walkers = np.flatnonzero(activity == Activity.WALK)
    if walkers.size:
        t = np.arange(rate) / rate
        ph = phase[walkers, None] + TWO_PI * gait_hz[walkers, None] * t
        out[walkers, :, 1] += WALK_BOUNCE_G * np.sin(ph) + 0.06 * np.sin(2.0 * ph + 0.6)
        out[walkers, :, 2] += WALK_SWING_G * np.cos(ph)
        out[walkers, :, 0] += WALK_SWAY_G * np.sin(0.5 * ph)
        end = phase[walkers] + TWO_PI * gait_hz[walkers]
        steps[walkers] = np.floor(end / TWO_PI) - np.floor(phase[walkers] / TWO_PI)
        new_phase[walkers] = np.mod(end, 2.0 * TWO_PI)
    return out, new_phase, steps


def heart_rate(
    rng: np.random.Generator, hr: F64, rest_hr: F64, activity: Codes,
    out: npt.NDArray[np.bool_ | np.float64],
) -> F64:
    """Next second's heart rate: a lag towards rest + activity offset (+4 outdoors)."""
    target: F64 = rest_hr + HR_OFFSET[activity] + 4.0 * out
    return hr + (target - hr) * HR_ALPHA + rng.normal(0.0, 0.4, len(hr))


def spo2(
    rng: np.random.Generator, base: npt.NDArray[np.int64], activity: Codes
) -> npt.NDArray[np.int64]:
    """Integer SpO2 around each elder's baseline, a point lower asleep, within 94-99 %."""
    asleep = activity == Activity.SLEEP
    value: npt.NDArray[np.int64] = base + rng.integers(-1, 2, len(base)) - asleep
    return np.clip(value, 94, 99)


def bed_vitals(
    rng: np.random.Generator, hr: F64, br: F64, activity: Codes
) -> tuple[F64, F64, F64]:
    """What a bed sensor measures of people in bed: (hr, breathing rate, movement 0-1)."""
    n = len(hr)
    asleep = activity == Activity.SLEEP
    bed_hr: F64 = np.clip(np.rint(hr + rng.normal(0.0, 1.5, n)), 30, 200)
    breath = np.clip(br + np.where(asleep, 0.0, 2.5) + rng.normal(0.0, 0.7, n), 6.0, 40.0)
    turning = rng.random(n) < 0.03
    movement: F64 = np.where(
        asleep,
        np.where(turning, rng.uniform(0.3, 0.7, n), rng.uniform(0.0, 0.08, n)),
        rng.uniform(0.1, 0.45, n),
    )
    return bed_hr, np.round(breath, 1), np.round(movement, 2)

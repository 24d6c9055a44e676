"""Labelled synthetic accelerometer traces (g) of falls and the movements that look like them.

Each generator builds a trace at 500 Hz from a few physical parts, then averages it down
to the requested rate, as a device's own filter would:

- the *up* direction in the body frame (standing: along the trunk; lying: across it),
  turned smoothly through each change of posture;
- vertical acceleration along it: gait (steps at 1.8–2 Hz), free-fall dips towards
  0.2–0.6 g for a few hundred ms, impacts of 2–8 g lasting 0.1–0.25 s for a body (fall
  biomechanics: Bourke et al. 2007, Kangas et al. 2008), 1.5–3 g for sitting down hard,
  stumbling or stairs; true free flight (≈0 g) and millisecond spikes for a device;
- micro-motion (a body breathing and trembling, ~5–10 mg) or sensor noise alone (~1.5 mg,
  a device lying on a table).

Elders and events vary through the ``np.random.Generator`` passed in. ``orientation``
turns the whole trace: ``None`` keeps the body frame (z along the trunk), ``"random"`` a
uniformly random rotation, or a 3×3 matrix. ``info`` says what happened: ``label``
(``fall``, ``adl`` or ``device``), ``expect_fall`` (what an impact-and-posture detector
should say), ``impact_t`` (seconds, or ``None``) and the drawn parameters.

>>> t, xyz, info = motion("sit_hard", np.random.default_rng(1), rate=50)
>>> xyz.shape[1], info["label"], info["expect_fall"], round(float(t[1] - t[0]), 3)
(3, 'adl', False, 0.02)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["JUDGED_ONLY", "MOTIONS", "WRIST_MOTIONS", "motion", "random_rotation"]

FS = 500.0
"""Internal rate (Hz) before averaging down to the device rate."""

Array = npt.NDArray[np.float64]
Info = dict[str, Any]
UP = np.array([0.0, 0.0, 1.0])


def random_rotation(rng: np.random.Generator) -> Array:
    """A uniformly random rotation matrix (random unit quaternion)."""
    w, x, y, z = (q := rng.standard_normal(4)) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _tilt(deg: float, azimuth: float) -> Array:
    """The up direction tilted ``deg`` from the trunk axis towards ``azimuth`` (radians)."""
    a = np.radians(deg)
    return np.array([np.sin(a) * np.cos(azimuth), np.sin(a) * np.sin(azimuth), np.cos(a)])


class _Timeline:
    """A trace under construction at :data:`FS`: up direction, vertical and extra terms."""

    def __init__(self, seconds: float, rng: np.random.Generator) -> None:
        self.rng = rng
        self.t = np.arange(round(seconds * FS)) / FS
        self.up = np.tile(UP, (len(self.t), 1))
        self.vert = np.zeros(len(self.t))
        self.extra = np.zeros((len(self.t), 3))
        self.micro = np.full(len(self.t), 0.006)  # body micro-motion, g per axis
        self.free = np.zeros(len(self.t), bool)  # device in free flight: reads 0 g

    def _span(self, t0: float, t1: float | None = None) -> slice:
        i0 = int(np.clip(round(t0 * FS), 0, len(self.t)))
        i1 = len(self.t) if t1 is None else int(np.clip(round(t1 * FS), 0, len(self.t)))
        return slice(i0, i1)

    def posture(self, t0: float, t1: float, to: Array) -> None:
        """Turn the up direction from its value at ``t0`` to ``to`` by ``t1``, then hold."""
        i0 = int(np.clip(round(t0 * FS), 0, len(self.t) - 1))
        start = self.up[i0].copy()
        target = to / np.linalg.norm(to)
        span = self._span(t0, t1)
        x = np.clip((self.t[span] - t0) / max(t1 - t0, 1e-3), 0, 1)
        s = x * x * (3 - 2 * x)  # smoothstep
        omega = np.arccos(np.clip(start @ target, -1, 1))
        if omega < 1e-6:
            path = np.tile(target, (len(s), 1))
        elif abs(omega - np.pi) < 1e-3:
            mid = np.cross(start, [1.0, 0.0, 0.0] if abs(start[0]) < 0.9 else [0.0, 1.0, 0.0])
            mid /= np.linalg.norm(mid)
            path = np.where(s[:, None] < 0.5, start + (mid - start) * 2 * s[:, None],
                            mid + (target - mid) * (2 * s[:, None] - 1))  # fmt: skip
        else:
            path = np.sin((1 - s) * omega)[:, None] * start + np.sin(s * omega)[:, None] * target
            path /= np.sin(omega)
        self.up[span] = path / np.linalg.norm(path, axis=1, keepdims=True)
        self.up[self._span(t1)] = target

    def pulse(self, t0: float, width: float, amp: float) -> None:
        """A half-sine of ``amp`` g (negative for a dip) on the vertical, from ``t0``."""
        span = self._span(t0, t0 + width)
        self.vert[span] += amp * np.sin(np.pi * (self.t[span] - t0) / width)

    def walk(self, t0: float, t1: float, step_hz: float, strike_g: float, sway_g: float) -> None:
        """Gait: a heel strike per step, a smooth vertical bounce, sideways sway."""
        span = self._span(t0, t1)
        tt = self.t[span] - t0
        phase = 2 * np.pi * step_hz * tt
        self.vert[span] += sway_g * np.sin(phase)
        self.extra[span, 0] += 0.6 * sway_g * np.sin(phase + 1.0)
        self.extra[span, 1] += 0.4 * sway_g * np.sin(phase / 2)
        for k in np.arange(t0, t1, 1 / step_hz):
            self.pulse(float(k), float(self.rng.uniform(0.08, 0.13)),
                       strike_g * float(self.rng.uniform(0.8, 1.2)))  # fmt: skip

    def swing(
        self, t0: float, t1: float, hz: float, deg: float, accel_g: float, axis: Array | None = None
    ) -> None:
        """The forearm swinging about ``axis`` (the sensor's x by default) by ±``deg`` at
        ``hz`` around its current direction, with the swing's own ±``accel_g`` along y."""
        span = self._span(t0, t1)
        phase = 2 * np.pi * hz * (self.t[span] - t0)
        angle = np.radians(deg) * np.sin(phase)
        k = np.array([1.0, 0.0, 0.0]) if axis is None else axis / np.linalg.norm(axis)
        v = self.up[span]
        # Rodrigues' rotation of each up vector about k
        cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
        rot = v * cos + np.cross(k, v) * sin + k * (v @ k)[:, None] * (1 - cos)
        self.up[span] = rot / np.linalg.norm(rot, axis=1, keepdims=True)
        self.extra[span, 1] += accel_g * np.cos(phase)
        self.extra[span, 2] += 0.3 * accel_g * np.sin(2 * phase)  # centripetal, twice a swing

    def spike(self, t0: float, width: float, amp: float, direction: Array) -> None:
        """A sharp impact of ``amp`` g along ``direction`` (a hand striking something)."""
        span = self._span(t0, t0 + width)
        d = direction / np.linalg.norm(direction)
        self.extra[span] += amp * np.sin(np.pi * (self.t[span] - t0) / width)[:, None] * d

    def still(self, t0: float, level_g: float) -> None:
        """From ``t0`` on, micro-motion of ``level_g`` per axis (sensor noise if tiny)."""
        self.micro[self._span(t0)] = level_g

    def render(self, rate: float, orientation: Array) -> tuple[Array, npt.NDArray[np.float32]]:
        n = len(self.t)
        tremor = self.rng.standard_normal((n, 3))
        k = 25  # 50 ms smoothing: body micro-motion is low-frequency, sensor noise is added raw
        kern = np.ones(k) / k
        tremor = np.stack([np.convolve(tremor[:, j], kern, "same") for j in range(3)], 1)
        tremor *= np.sqrt(k) * self.micro[:, None]
        f = self.up * (1.0 + self.vert)[:, None] + self.extra + tremor
        f[self.free] = 0.0
        f += 0.0015 * self.rng.standard_normal((n, 3))  # sensor noise, present always
        f = f @ orientation.T
        return _to_rate(f, rate)


def _to_rate(f: Array, rate: float) -> tuple[Array, npt.NDArray[np.float32]]:
    """Average the 500 Hz signal over each output sample's period (a device's filter)."""
    n = len(f)
    edges = np.arange(n + 1) / FS
    cum = np.vstack([np.zeros(3), np.cumsum(f, axis=0) / FS])
    t = np.arange(int(n / FS * rate)) / rate
    hi = np.minimum(t + 1 / rate, edges[-1])
    out = [(np.interp(hi, edges, cum[:, j]) - np.interp(t, edges, cum[:, j])) / (hi - t)
           for j in range(3)]  # fmt: skip
    return t, np.stack(out, 1).astype(np.float32)


# --- the motions ------------------------------------------------------------------------


def _lying(rng: np.random.Generator, side: str) -> Array:
    base = {"front": [-1.0, 0, 0], "back": [1.0, 0, 0], "side": [0, rng.choice([-1.0, 1.0]), 0]}
    v = np.asarray(base[side]) + rng.normal(0, 0.15, 3) + [0, 0, rng.uniform(-0.2, 0.2)]
    return v / np.linalg.norm(v)


def _fall(rng: np.random.Generator, side: str, start: str = "walk") -> tuple[_Timeline, Info]:
    pre = rng.uniform(5, 8)
    tl = _Timeline(pre + 30, rng)
    step = rng.uniform(1.8, 2.0)
    if start == "walk":
        tl.walk(0, pre, step, rng.uniform(0.3, 0.5), rng.uniform(0.15, 0.25))
    dip_s, dip_g = rng.uniform(0.3, 0.5), rng.uniform(0.2, 0.6)
    tl.pulse(pre, dip_s, dip_g - 1.0)  # towards free fall
    impact = pre + dip_s
    tl.posture(pre - 0.2, impact + 0.1, _lying(rng, side))
    peak, width = rng.uniform(2.5, 7.0), rng.uniform(0.12, 0.25)
    tl.pulse(impact - width / 2, width, peak - 1.0)
    tl.pulse(impact + width / 2 + 0.05, rng.uniform(0.1, 0.2), rng.uniform(0.2, 0.8))  # rebound
    tl.still(impact + 1.0, rng.uniform(0.004, 0.012))
    return tl, {"label": "fall", "expect_fall": True, "impact_t": impact, "peak_g": peak,
                "freefall_g": dip_g}  # fmt: skip


def _recovered_fall(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """A fall while walking, a few seconds down moving about, then getting up (2-4 s, on
    hands and knees) and standing or walking on: a fall on record, not an alarm."""
    tl, info = _fall(rng, str(rng.choice(["front", "back", "side"])))
    impact = info["impact_t"]
    down = float(rng.uniform(2.0, 8.0))
    rise = impact + down
    tl.still(impact + 1.0, float(rng.uniform(0.02, 0.05)))  # stirring on the floor
    knees = _tilt(float(rng.uniform(50, 80)), float(rng.uniform(0, 2 * np.pi)))
    up_s = float(rng.uniform(2.0, 4.0))
    tl.posture(rise, rise + up_s / 2, knees)
    tl.posture(rise + up_s / 2, rise + up_s, UP)
    tl.pulse(rise + up_s / 2, 0.5, float(rng.uniform(0.1, 0.3)))  # pushing up
    tl.still(rise, 0.02)
    if rng.random() < 0.5:
        tl.walk(rise + up_s + 1.0, len(tl.t) / FS, rng.uniform(1.4, 1.8),
                rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.2))  # fmt: skip
    return tl, {**info, "expect_fall": True, "expect": "fall_recovered",
                "down_s": down + up_s / 2}  # fmt: skip


def _fall_forward(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _fall(rng, "front")


def _fall_backward(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _fall(rng, "back", start=str(rng.choice(["walk", "stand"])))


def _fall_sideways(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _fall(rng, "side")


def _fall_out_of_bed(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Lying in bed on the back, rolling over the edge, landing on side or front."""
    pre = rng.uniform(5, 8)
    tl = _Timeline(pre + 30, rng)
    bed = _lying(rng, "back")
    tl.posture(0, 0.01, bed)
    tl.still(0, rng.uniform(0.004, 0.01))
    dip_s, dip_g = rng.uniform(0.25, 0.35), rng.uniform(0.2, 0.5)
    tl.pulse(pre, dip_s, dip_g - 1.0)
    impact = pre + dip_s
    tl.posture(pre - 0.4, impact + 0.1, _lying(rng, str(rng.choice(["side", "front"]))))
    peak, width = rng.uniform(2.5, 5.0), rng.uniform(0.12, 0.2)
    tl.pulse(impact - width / 2, width, peak - 1.0)
    tl.still(impact + 1.0, rng.uniform(0.004, 0.012))
    return tl, {"label": "fall", "expect_fall": True, "impact_t": impact, "peak_g": peak}


def _slow_collapse(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Sliding down a wall or chair to the floor over seconds: no free fall, no impact.

    An impact-based detector does not see it; the long-lie (inactivity) detector must.
    """
    pre = rng.uniform(5, 8)
    tl = _Timeline(pre + 30, rng)
    tl.posture(pre, pre + rng.uniform(3, 6), _lying(rng, "side"))
    tl.pulse(pre, 3.0, -0.1)
    tl.still(pre + 7, rng.uniform(0.004, 0.012))
    return tl, {"label": "fall", "expect_fall": False, "impact_t": None}


def _stumble(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """A trip caught by a quick step: dip and a hard step, walking on upright."""
    t0 = rng.uniform(5, 8)
    tl = _Timeline(t0 + 25, rng)
    step = rng.uniform(1.8, 2.0)
    tl.walk(0, t0, step, rng.uniform(0.3, 0.5), rng.uniform(0.15, 0.25))
    tl.posture(t0, t0 + 0.3, _tilt(rng.uniform(15, 35), rng.uniform(0, 2 * np.pi)))
    tl.pulse(t0, rng.uniform(0.15, 0.3), rng.uniform(0.4, 0.6) - 1.0)
    tl.pulse(t0 + 0.3, rng.uniform(0.08, 0.15), rng.uniform(1.0, 2.5))
    tl.posture(t0 + 0.4, t0 + 1.0, UP)
    tl.walk(t0 + 1.0, t0 + rng.uniform(5, 10), step, rng.uniform(0.3, 0.5), 0.2)
    return tl, {"label": "adl", "expect_fall": False, "impact_t": t0 + 0.3}


def _sit(
    rng: np.random.Generator, peak: tuple[float, float], lean: float
) -> tuple[_Timeline, Info]:
    t0 = rng.uniform(5, 8)
    tl = _Timeline(t0 + 30, rng)
    tl.walk(0, t0 - 1.5, rng.uniform(1.8, 2.0), 0.35, 0.2)
    dip_s = rng.uniform(0.25, 0.4)
    tl.pulse(t0, dip_s, rng.uniform(0.4, 0.7) - 1.0)
    tl.posture(t0 - 0.2, t0 + dip_s + 0.3, _tilt(rng.uniform(10, lean), rng.uniform(0, 2 * np.pi)))
    tl.pulse(t0 + dip_s - 0.05, rng.uniform(0.08, 0.15), rng.uniform(*peak) - 1.0)
    tl.still(t0 + 1.5, rng.uniform(0.004, 0.012))
    return tl, {"label": "adl", "expect_fall": False, "impact_t": t0 + dip_s}


def _sit_hard_chair(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _sit(rng, (1.8, 3.0), 35)


def _sit_hard_bed(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _sit(rng, (1.5, 2.5), 30)


def _collapse_into_chair(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Trying to stand up, failing and dropping back into the chair, slumped."""
    tl, info = _sit(rng, (2.0, 3.5), 40)
    return tl, info


def _lie_down(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Sitting on the bed's edge, then lying down to sleep over a few seconds."""
    t0 = rng.uniform(5, 8)
    tl = _Timeline(t0 + 30, rng)
    tl.posture(0, 0.01, _tilt(rng.uniform(10, 25), rng.uniform(0, 2 * np.pi)))
    dur = rng.uniform(2, 4)
    tl.posture(t0, t0 + dur, _lying(rng, str(rng.choice(["back", "side"]))))
    tl.pulse(t0 + dur - 0.2, 0.3, rng.uniform(0.1, 0.3))  # settling on the mattress
    tl.still(t0 + dur + 0.5, rng.uniform(0.004, 0.01))
    return tl, {"label": "adl", "expect_fall": False, "impact_t": None}


def _bend(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Bending to pick something up and straightening again."""
    t0 = rng.uniform(5, 8)
    tl = _Timeline(t0 + 25, rng)
    down = rng.uniform(1.0, 2.0)
    tl.posture(t0, t0 + down, _tilt(rng.uniform(50, 90), rng.uniform(-0.5, 0.5)))
    tl.pulse(t0, down, -0.15)
    hold = rng.uniform(1, 3)
    tl.posture(t0 + down + hold, t0 + 2 * down + hold, UP)
    tl.pulse(t0 + down + hold, down, 0.2)
    return tl, {"label": "adl", "expect_fall": False, "impact_t": None}


def _stairs_down(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    tl = _Timeline(35, rng)
    tl.walk(1, rng.uniform(20, 30), rng.uniform(1.7, 2.0), rng.uniform(0.8, 1.6), 0.3)
    return tl, {"label": "adl", "expect_fall": False, "impact_t": None}


def _walk(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    tl = _Timeline(35, rng)
    tl.walk(1, rng.uniform(20, 34), rng.uniform(1.8, 2.0), rng.uniform(0.3, 0.5),
            rng.uniform(0.15, 0.25))  # fmt: skip
    return tl, {"label": "adl", "expect_fall": False, "impact_t": None}


def _jump(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """A gentle jump to reach something high: crouch, push off, flight, landing, stand."""
    t0 = rng.uniform(5, 8)
    tl = _Timeline(t0 + 25, rng)
    tl.pulse(t0, 0.3, -0.4)
    tl.pulse(t0 + 0.3, 0.25, rng.uniform(0.8, 1.2))
    flight = rng.uniform(0.2, 0.35)
    tl.pulse(t0 + 0.55, flight, -1.0)  # airborne: the body is in free fall
    land = t0 + 0.55 + flight
    tl.pulse(land, rng.uniform(0.1, 0.2), rng.uniform(2.0, 4.0))
    tl.still(land + 1.0, rng.uniform(0.006, 0.015))
    return tl, {"label": "adl", "expect_fall": False, "impact_t": land}


def _device(rng: np.random.Generator, throw: bool) -> tuple[_Timeline, Info]:
    t0 = rng.uniform(5, 8)
    tl = _Timeline(t0 + 30, rng)
    tl.still(0, 0.02)  # held in a hand
    if throw:
        tl.pulse(t0 - 0.3, 0.3, rng.uniform(0.8, 2.0))  # the throwing swing
        flight = rng.uniform(0.1, 0.3)
    else:
        flight = float(np.sqrt(2 * rng.uniform(0.7, 1.5) / 9.81))  # dropped from 0.7–1.5 m
    tl.free[tl._span(t0, t0 + flight)] = True
    land = t0 + flight
    tl.posture(land, land + 0.02, random_rotation(rng) @ UP)
    tl.pulse(land, 0.008, rng.uniform(6, 15))  # hard and sharp
    if throw:  # sliding to a stop on the table: friction across the up direction
        slide = rng.uniform(0.2, 0.4)
        tl.extra[tl._span(land + 0.01, land + 0.01 + slide), 0] += rng.uniform(0.3, 0.5)
    else:  # bounces
        for k in range(int(rng.integers(1, 3))):
            hop = 0.08 / (k + 1)
            tl.free[tl._span(land + 0.02 + k * 0.15, land + 0.02 + k * 0.15 + hop)] = True
            tl.pulse(land + 0.02 + k * 0.15 + hop, 0.006, rng.uniform(2, 6))
    tl.still(land + 0.5, 0.0)  # on the table or floor: sensor noise only
    return tl, {"label": "device", "expect_fall": False, "impact_t": land}


def _device_dropped(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _device(rng, throw=False)


def _device_thrown(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _device(rng, throw=True)


# --- on the wrist: the sensor turns with the forearm, the hand strikes things -------------


def _unit(rng: np.random.Generator) -> Array:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _wrist_fall(rng: np.random.Generator, side: str) -> tuple[_Timeline, Info]:
    """A fall seen from the wrist: the arm swings while walking, flails in the fall, the
    hand hits the floor (sharp) with the body, then lies wherever it landed."""
    pre = rng.uniform(5, 8)
    tl = _Timeline(pre + 30, rng)
    step = rng.uniform(1.8, 2.0)
    tl.posture(0, 0.1, _tilt(rng.uniform(0, 25), rng.uniform(0, 2 * np.pi)))
    tl.walk(0, pre, step, rng.uniform(0.2, 0.4), rng.uniform(0.1, 0.2))
    tl.swing(0, pre, step / 2, rng.uniform(15, 35), rng.uniform(0.2, 0.5))
    dip_s, dip_g = rng.uniform(0.3, 0.5), rng.uniform(0.2, 0.7)
    tl.pulse(pre, dip_s, dip_g - 1.0)
    impact = pre + dip_s
    tl.posture(pre - 0.3, impact + 0.1, _unit(rng))  # the arm reaches out: any direction
    peak, width = rng.uniform(2.5, 6.0), rng.uniform(0.1, 0.25)
    tl.pulse(impact - width / 2, width, peak - 1.0)
    tl.spike(impact - 0.02, rng.uniform(0.01, 0.03), rng.uniform(3, 10), _unit(rng))
    tl.pulse(impact + width / 2 + 0.05, rng.uniform(0.1, 0.2), rng.uniform(0.2, 0.8))
    if side != "stay":  # the arm is moved once more, then lies on the floor
        tl.posture(impact + 0.6, impact + 1.2, _unit(rng))
    tl.still(impact + 1.5, rng.uniform(0.004, 0.012))
    return tl, {"label": "fall", "expect_fall": True, "impact_t": impact, "peak_g": peak,
                "freefall_g": dip_g, "placement": "wrist"}  # fmt: skip


def _wrist_fall_forward(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _wrist_fall(rng, "move")


def _wrist_fall_sideways(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    return _wrist_fall(rng, "stay")


def _wrist_recovered_fall(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """A wrist fall got up from: a few seconds down, the arm stirring, then the hand pushed
    against the floor and the arm hanging again as the wearer stands (2-4 s), standing or
    walking on with the arm swinging. Not a trial the wrist model learns from
    (:data:`JUDGED_ONLY`): it judges the model on a get-up other than the copies of
    recorded falls it was taught with."""
    tl, info = _wrist_fall(rng, str(rng.choice(["move", "stay"])))
    impact = info["impact_t"]
    down = float(rng.uniform(2.0, 8.0))
    rise = impact + down
    tl.still(impact + 1.5, float(rng.uniform(0.02, 0.05)))  # stirring on the floor
    up_s = float(rng.uniform(2.0, 4.0))
    push = _tilt(float(rng.uniform(50, 110)), float(rng.uniform(0, 2 * np.pi)))
    tl.posture(rise, rise + up_s / 2, push)  # the hand on the floor, pushing up
    hang = _tilt(float(rng.uniform(0, 25)), float(rng.uniform(0, 2 * np.pi)))
    tl.posture(rise + up_s / 2, rise + up_s, hang)
    tl.pulse(rise + up_s / 2, 0.5, float(rng.uniform(0.1, 0.3)))
    tl.still(rise, 0.02)
    if rng.random() < 0.5:
        step = float(rng.uniform(1.4, 1.8))
        end = len(tl.t) / FS
        tl.walk(rise + up_s + 1.0, end, step, rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.2))
        tl.swing(rise + up_s + 1.0, end, step / 2, rng.uniform(10, 30), rng.uniform(0.2, 0.4))
    return tl, {**info, "expect": "fall_recovered", "down_s": down + up_s / 2}


def _wrist_adl(tl: _Timeline, impact: float | None = None) -> tuple[_Timeline, Info]:
    return tl, {"label": "adl", "expect_fall": False, "impact_t": impact, "placement": "wrist"}


def _wrist_walk(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Walking with the arm swinging at half the step rate."""
    tl = _Timeline(35, rng)
    step = rng.uniform(1.7, 2.1)
    tl.posture(0, 0.1, _tilt(rng.uniform(0, 25), rng.uniform(0, 2 * np.pi)))
    end = rng.uniform(20, 34)
    tl.walk(1, end, step, rng.uniform(0.2, 0.5), rng.uniform(0.1, 0.2))
    tl.swing(1, end, step / 2, rng.uniform(15, 40), rng.uniform(0.2, 0.6))
    return _wrist_adl(tl)


def _wrist_gestures(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Talking with the hands: the forearm turns to a new direction every second or so."""
    tl = _Timeline(30, rng)
    t = 1.0
    while t < 25:
        dt = rng.uniform(0.3, 1.2)
        tl.posture(t, t + dt, _tilt(rng.uniform(20, 120), rng.uniform(0, 2 * np.pi)))
        tl.pulse(t, dt, rng.uniform(-0.3, 0.6))
        t += dt + rng.uniform(0.1, 1.0)
    tl.still(t, 0.01)
    return _wrist_adl(tl)


def _wrist_clapping(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Clapping 2–4 times a second for a few seconds: sharp palm-to-palm impacts."""
    tl = _Timeline(25, rng)
    t0 = rng.uniform(3, 6)
    tl.posture(t0 - 0.8, t0 - 0.2, _tilt(rng.uniform(60, 110), rng.uniform(0, 2 * np.pi)))
    hz, n = rng.uniform(2.0, 4.0), int(rng.integers(6, 20))
    palm = _unit(rng)
    tl.swing(t0, t0 + n / hz, hz, rng.uniform(5, 20), rng.uniform(0.5, 1.5))
    for k in range(n):
        tl.spike(t0 + k / hz, rng.uniform(0.008, 0.025), rng.uniform(3, 9), palm)
    tl.posture(t0 + n / hz, t0 + n / hz + 0.8, _tilt(rng.uniform(0, 30), rng.uniform(0, 6.3)))
    tl.still(t0 + n / hz + 1.0, 0.008)
    return _wrist_adl(tl, t0)


def _wrist_waving(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Waving a hand above the shoulder, 1.5–3 times a second, then lowering the arm."""
    tl = _Timeline(25, rng)
    t0 = rng.uniform(3, 6)
    tl.posture(t0 - 1.0, t0, _tilt(rng.uniform(140, 180), rng.uniform(0, 2 * np.pi)))
    dur = rng.uniform(2, 8)
    tl.swing(t0, t0 + dur, rng.uniform(1.5, 3.0), rng.uniform(25, 50), rng.uniform(0.6, 1.8),
             axis=_unit(rng))  # fmt: skip
    tl.posture(t0 + dur, t0 + dur + 1.0, _tilt(rng.uniform(0, 30), rng.uniform(0, 6.3)))
    tl.still(t0 + dur + 1.2, 0.01)
    return _wrist_adl(tl, t0)


def _wrist_table_hit(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Hitting a table with the hand (in anger or to swat a fly): a quick raise, 1–3 hard
    strikes, then the hand rests on the table."""
    tl = _Timeline(25, rng)
    t0 = rng.uniform(4, 7)
    flat = _tilt(rng.uniform(60, 100), rng.uniform(0, 2 * np.pi))
    tl.posture(0, 0.1, flat)
    down = -flat + rng.normal(0, 0.2, 3)
    for k in range(int(rng.integers(1, 4))):
        t = t0 + k * rng.uniform(0.4, 0.8)
        tl.pulse(t - 0.3, 0.25, rng.uniform(0.4, 1.2))  # the raise and the swing down
        tl.spike(t, rng.uniform(0.008, 0.02), rng.uniform(4, 12), down)
    tl.still(t0 + 2.5, rng.uniform(0.003, 0.008))  # resting on the table
    return _wrist_adl(tl, t0)


def _wrist_dressing(rng: np.random.Generator) -> tuple[_Timeline, Info]:
    """Putting on or taking off a jacket: the arm pushed through a sleeve, turned far,
    jerked, then hanging again."""
    tl = _Timeline(30, rng)
    t = rng.uniform(2, 4)
    for _ in range(int(rng.integers(3, 7))):
        dt = rng.uniform(0.4, 1.2)
        tl.posture(t, t + dt, _unit(rng))
        tl.pulse(t + dt * 0.5, rng.uniform(0.1, 0.3), rng.uniform(0.5, 1.8))
        t += dt + rng.uniform(0.2, 0.8)
    tl.posture(t, t + 1.0, _tilt(rng.uniform(0, 25), rng.uniform(0, 6.3)))
    tl.still(t + 1.2, 0.01)
    return _wrist_adl(tl)


MOTIONS: dict[str, Callable[[np.random.Generator], tuple[_Timeline, Info]]] = {
    "fall_forward": _fall_forward,
    "fall_backward": _fall_backward,
    "fall_sideways": _fall_sideways,
    "fall_out_of_bed": _fall_out_of_bed,
    "recovered_fall": _recovered_fall,
    "slow_collapse": _slow_collapse,
    "stumble": _stumble,
    "sit_hard": _sit_hard_chair,
    "sit_hard_bed": _sit_hard_bed,
    "collapse_into_chair": _collapse_into_chair,
    "lie_down": _lie_down,
    "bend": _bend,
    "stairs_down": _stairs_down,
    "walk": _walk,
    "jump": _jump,
    "device_dropped": _device_dropped,
    "device_thrown": _device_thrown,
    "wrist_fall_forward": _wrist_fall_forward,
    "wrist_fall_sideways": _wrist_fall_sideways,
    "wrist_walk": _wrist_walk,
    "wrist_gestures": _wrist_gestures,
    "wrist_clapping": _wrist_clapping,
    "wrist_waving": _wrist_waving,
    "wrist_table_hit": _wrist_table_hit,
    "wrist_dressing": _wrist_dressing,
    "wrist_recovered_fall": _wrist_recovered_fall,
}
"""Every motion by name; ``info["expect_fall"]`` says whether it should raise a fall
(``info["expect"]``, where present, the kind: ``fall_recovered`` for a fall got up from).
The ``wrist_`` ones are seen by a watch (``info["placement"]`` is ``wrist``); the others
by a pendant or a belt clip."""
WRIST_MOTIONS = tuple(n for n in MOTIONS if n.startswith("wrist_"))
JUDGED_ONLY = frozenset({"wrist_recovered_fall"})
"""Motions that judge the learned models and are never trained on (``train-fall
--simulate``); last in :data:`MOTIONS`, so the others keep their seeds there."""


def motion(
    name: str,
    rng: np.random.Generator,
    rate: float = 50.0,
    orientation: Array | Literal["random"] | None = None,
) -> tuple[Array, npt.NDArray[np.float32], Info]:
    """One trace of ``name``: sample times (s), samples (n×3, g) and what happened."""
    try:
        build = MOTIONS[name]
    except KeyError:
        raise ValueError(f"unknown motion {name!r}; known: {', '.join(MOTIONS)}") from None
    tl, info = build(rng)
    if isinstance(orientation, str):
        rot = random_rotation(rng)
    elif orientation is None:
        rot = np.eye(3)
    else:
        rot = np.asarray(orientation, dtype=np.float64)
    t, xyz = tl.render(rate, rot)
    return t, xyz, {"name": name, "rate": rate, **info}

"""False fall alarms per day of continuous wear, per placement.

Per-trial specificity says how often one movement fools the detector; a wearer makes
hundreds of movements a day. Two measures of alarms per 24 hours of wear:

* **simulated days** (:func:`simulated_days`): each wearer-day is 16 hours awake, an
  everyday movement of the placement (:data:`DAY_MIX`, from :mod:`device_sim.motions`,
  randomly oriented) every 1–10 minutes with the posture held still between them, then
  8 hours lying in bed; every alarm in it is false;
* **recorded activities back to back** (:func:`recorded_day`): every everyday-activity
  trial of a labelled folder, per person, concatenated into one long trace, each trial
  followed by 30 s of its final posture; alarms per hour of it, scaled to 24 hours.

Kangas et al. 2015 and Palmerini et al. 2020 report 0.025–0.56 false alarms per hour of
real-world wear at about 80 % sensitivity; the target here is ≤ 0.05 per wearer-day.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import AccelBatch
from detectors.fall import RECOVERED, FallDetector, FallSettings
from detectors.fall_model import FallModels, Placement
from device_sim.motions import motion, random_rotation
from evaluation.replay import Trace, hold_end, replay, replay_judged
from evaluation.replay_eval import load_traces, read_labels

__all__ = ["DAY_MIX", "GAP_S", "mined_wear", "recorded_day", "simulated_days"]

BODY = ("walk", "sit_hard", "sit_hard_bed", "stumble", "bend", "stairs_down", "jump",
        "collapse_into_chair", "lie_down")  # fmt: skip
DAY_MIX: dict[Placement, tuple[str, ...]] = {
    Placement.WRIST: ("wrist_walk", "wrist_gestures", "wrist_clapping", "wrist_waving",
                      "wrist_table_hit", "wrist_dressing"),
    Placement.CHEST: BODY,
    Placement.WAIST: BODY,
}  # fmt: skip
"""The everyday movements of a simulated day, per placement, drawn with equal chance."""

GAP_S = (60.0, 600.0)
"""The still time between two movements of a simulated day (uniform, seconds)."""
AWAKE_S = 16 * 3600
DAY_S = 24 * 3600
CHUNK_S = 3600
Floats = npt.NDArray[np.float32]


def _still(last: Floats, seconds: float, rate: float, rng: np.random.Generator) -> Floats:
    """The posture ``last`` held (a body breathing: ~8 mg of slow micro-motion)."""
    n = round(seconds * rate)
    g = last / max(float(np.linalg.norm(last)), 1e-6)
    wobble = np.cumsum(rng.normal(0, 0.002, (n, 3)), axis=0)
    wobble -= np.linspace(0, 1, n)[:, None] * wobble[-1]  # ends where it started
    return (g + 0.004 * rng.standard_normal((n, 3)) + wobble).astype(np.float32)


def _day(
    placement: Placement, rate: float, rng: np.random.Generator, day_s: float = DAY_S
) -> Iterator[Floats]:
    """One wearer-day as pieces of samples: awake two thirds of it with movements, then
    asleep."""
    names = DAY_MIX[placement]
    awake_s = day_s * AWAKE_S / DAY_S
    done = 0.0
    last = (random_rotation(rng) @ np.array([0.0, 0.0, 1.0])).astype(np.float32)
    while done < awake_s:
        gap = float(rng.uniform(*GAP_S))
        yield _still(last, gap, rate, rng)
        _, xyz, _ = motion(str(rng.choice(names)), rng, rate=rate, orientation="random")
        yield xyz
        last = xyz[-max(1, round(rate)) :].mean(axis=0)
        done += gap + len(xyz) / rate
    _, xyz, _ = motion("lie_down" if placement != Placement.WRIST else "wrist_gestures", rng,
                       rate=rate, orientation="random")  # fmt: skip
    yield xyz
    last = xyz[-1]
    yield _still(last, max(day_s - done - len(xyz) / rate, 1.0), rate, rng)


def mined_wear(
    placement: Placement,
    sequences: int,
    movements: int,
    *,
    rate: float = 50.0,
    seed: int = 0,
    gap_s: tuple[float, float] = (15.0, 40.0),
) -> list[tuple[Floats, float]]:
    """Hard negatives for training: ``sequences`` traces of ``movements`` everyday
    movements of the placement each, as in a simulated day (randomly oriented, the posture
    held still between them) but only ``gap_s`` apart, so that a day's worth of impacts
    costs minutes, not a day, to replay. Each comes with the wearer-days it stands for:
    its movements with a day's mean gap (:data:`GAP_S`) each, over the awake hours.

    Seeds ``[seed, 7, placement, k]``: never a day that ``simulated_days`` renders."""
    names = DAY_MIX[placement]
    day_gap = sum(GAP_S) / 2
    out: list[tuple[Floats, float]] = []
    for k in range(sequences):
        rng = np.random.default_rng([seed, 7, int(placement), k])
        last = (random_rotation(rng) @ np.array([0.0, 0.0, 1.0])).astype(np.float32)
        pieces: list[Floats] = []
        worn_s = 0.0
        for _ in range(movements):
            pieces.append(_still(last, float(rng.uniform(*gap_s)), rate, rng))
            _, xyz, _ = motion(str(rng.choice(names)), rng, rate=rate, orientation="random")
            pieces.append(xyz)
            last = xyz[-max(1, round(rate)) :].mean(axis=0)
            worn_s += day_gap + len(xyz) / rate
        pieces.append(_still(last, 20.0, rate, rng))
        out.append((np.concatenate(pieces), worn_s / AWAKE_S))
    return out


def _chunks(pieces: Iterator[Floats], n: int) -> Iterator[Floats]:
    """The pieces re-cut into arrays of ``n`` samples (the last one shorter)."""
    buf: list[Floats] = []
    have = 0
    for p in pieces:
        buf.append(p)
        have += len(p)
        while have >= n:
            joined = np.concatenate(buf)
            yield joined[:n]
            buf, have = [joined[n:]], have - n
    if have:
        yield np.concatenate(buf)


def simulated_days(
    placement: Placement,
    days: int,
    *,
    rate: float = 50.0,
    seed: int = 0,
    settings: FallSettings | None = None,
    models: FallModels | None = None,
    day_s: int = DAY_S,
) -> dict[str, Any]:
    """False fall alarms over ``days`` simulated wearer-days at ``placement`` (``day_s``
    shortens each day, for tests)."""
    detector = FallDetector(settings, models)
    rows = np.arange(days)
    detector.place(rows, int(placement))
    n = round(rate)
    streams = [
        _chunks(_day(placement, rate, np.random.default_rng([seed, int(placement), d]), day_s),
                CHUNK_S * n)
        for d in range(days)
    ]  # fmt: skip
    alarms: list[dict[str, Any]] = []
    for hour in range(-(-day_s // CHUNK_S)):
        empty = np.zeros((0, 3), np.float32)
        pieces = [next(s, empty)[: CHUNK_S * n] for s in streams]
        block = np.stack([np.pad(p, ((0, CHUNK_S * n - len(p)), (0, 0)), mode="edge")
                          if len(p) else np.tile([0, 0, 1.0], (CHUNK_S * n, 1)).astype(np.float32)
                          for p in pieces])  # fmt: skip
        for k in range(min(CHUNK_S, day_s - hour * CHUNK_S)):
            ts = np.full(days, float(hour * CHUNK_S + k))
            frames = block[:, k * n : (k + 1) * n]
            for d in detector.update(AccelBatch(rows, ts, frames, rate)):
                alarms.append({"day": d.row, "kind": d.kind, "t": round(d.ts, 1), **d.evidence})
    return {
        "placement": placement.name.lower(),
        "source": "simulated",
        "wearer_days": days,
        "hours": days * day_s / 3600,
        "movements": list(DAY_MIX[placement]),
        **_counted(alarms, days * day_s / 3600),
        "alarms": alarms,
    }


def _counted(events: Sequence[dict[str, Any]], hours: float) -> dict[str, Any]:
    """False alarms (critical falls) and recovered falls recorded, and the alarms per 24 h."""
    alarms = sum(e["kind"] == FallDetector.kind for e in events)
    return {
        "false_alarms": alarms,
        "recovered": sum(e["kind"] == RECOVERED for e in events),
        "per_wearer_day": round(alarms / hours * 24, 4) if hours else float("nan"),
    }


def recorded_day(
    replay_dir: Path,
    labels_csv: Path,
    placement: Placement,
    *,
    resample_hz: float | None = None,
    gap_s: float = 30.0,
    seed: int = 0,
    in_bed: Collection[str] = (),
    models_by_subject: Mapping[str, FallModels] | None = None,
) -> dict[str, Any]:
    """False fall alarms per 24 h over every person's everyday-activity trials played
    back to back (each followed by ``gap_s`` of its final posture). ``in_bed``: activity
    codes done in a bed, watched by a bed sensor (the others: out of bed); none, no bed
    sensor at all. ``models_by_subject``: each person judged by those models (default:
    the shipped ones), e.g. a cross-validation fold's that never saw them."""
    adl = [lab for lab in read_labels(labels_csv) if not lab.fall]
    traces, kept, errors = load_traces(replay_dir, adl, resample_hz=resample_hz)
    rng = np.random.default_rng(seed)
    by_person: dict[tuple[str, float], list[tuple[Floats, bool]]] = {}
    for tr, lab in zip(traces, kept, strict=True):
        by_person.setdefault((lab.subject, tr.rate), []).append(
            (hold_end(tr.xyz, tr.rate, gap_s, rng, 0.004), lab.code in in_bed)
        )
    long = [
        Trace(
            f"{who}@{rate:g}",
            np.concatenate([xyz for xyz, _ in parts]),
            rate,
            np.concatenate([np.full(len(xyz), bed) for xyz, bed in parts]) if in_bed else None,
        )
        for (who, rate), parts in sorted(by_person.items())
    ]
    people = [who for who, _ in sorted(by_person)]
    if models_by_subject is None:
        events = replay(long, placement=placement, hold_end_s=gap_s)
    else:
        missing = sorted(set(people) - set(models_by_subject))
        if missing:
            raise ValueError(f"no models for the people {missing}")
        events = replay_judged(long, [models_by_subject[who] for who in people],
                               placement=placement, hold_end_s=gap_s)  # fmt: skip
    hours = sum(len(t.xyz) / t.rate for t in long) / 3600
    return {
        "placement": placement.name.lower(),
        "source": str(replay_dir.name),
        "people": len({who for who, _ in by_person}),
        "trials": len(kept),
        "in_bed": sorted(in_bed),
        "models": "shipped" if models_by_subject is None else "out of fold",
        "hours": round(hours, 2),
        **_counted(events, hours),
        "alarms": events,
        "errors": errors,
    }


def summary(reports: Sequence[dict[str, Any]]) -> str:
    lines = ["placement  source            hours    false alarms  per wearer-day (target ≤ 0.05)"
             "  recovered falls recorded"]  # fmt: skip
    for r in reports:
        lines.append(
            f"{r['placement']:<10} {r['source']:<17} {r['hours']:>7.1f}  {r['false_alarms']:>12}"
            f"  {r['per_wearer_day']:<30.4f}  {r['recovered']}"
        )
    return "\n".join(lines)

"""Per-trial sensitivity and specificity of the fall detector on labelled recordings.

``labels.csv`` has the columns ``file,subject,code,label`` (label ``fall`` or ``adl``;
``file`` relative to the replay folder), as in the SisFall development split (Sucerquia,
López, Vargas-Bonilla, "SisFall: A Fall and Movement Dataset", Sensors 17(1):198, 2017).
A fall trial counts as detected when the detector reports at least one fall in it; an
everyday-activity (ADL) trial counts as correct when it reports none. Every trace can be
turned by a random 3-D rotation (the sensor worn another way) or resampled to another
rate (anti-aliased), to check that the detector depends on neither.

>>> rot = random_rotation(np.random.default_rng(0))
>>> bool(np.allclose(rot @ rot.T, np.eye(3), atol=1e-6)), round(float(np.linalg.det(rot)), 6)
(True, 1.0)
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, recall_score

from detectors.base import Floats
from detectors.fall import FallSettings
from detectors.fall_model import FallModels, Placement
from evaluation.replay import Trace, TraceError, read_trace, replay, replay_judged

__all__ = [
    "Label", "evaluate", "evaluate_motions", "get_up", "load_traces", "random_rotation",
    "read_labels", "resample_trace",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Label:
    file: str
    subject: str
    code: str
    fall: bool


def read_labels(path: Path) -> list[Label]:
    """Read ``file,subject,code,label`` rows; label must be ``fall`` or ``adl``."""
    out: list[Label] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "subject", "code", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            label = row["label"].strip().lower()
            if label not in ("fall", "adl"):
                raise ValueError(f"{path}:{line}: label must be fall or adl, got {label!r}")
            out.append(Label(row["file"], row["subject"], row["code"], label == "fall"))
    return out


def random_rotation(rng: np.random.Generator) -> Floats:
    """A uniformly random 3-D rotation matrix (from a random unit quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    return rot.astype(np.float32)


def resample_trace(xyz: Floats, rate: float, to: float) -> Floats:
    """Resample a trace: down by averaging each output period (anti-aliasing), up linearly."""
    n = len(xyz)
    t_out = np.arange(int(n / rate * to)) / to
    if to >= rate:
        t_in = np.arange(n) / rate
        return np.stack([np.interp(t_out, t_in, xyz[:, k]) for k in range(3)], 1).astype(np.float32)
    # integral of the sample-and-hold signal, averaged over [t - h, t + h]
    edges = np.arange(n + 1) / rate
    cum = np.vstack([np.zeros(3), np.cumsum(xyz, axis=0, dtype=np.float64) / rate])
    h = 0.5 / to
    lo = np.clip(t_out - h, 0, edges[-1])
    hi = np.clip(t_out + h, 0, edges[-1])
    out = [(np.interp(hi, edges, cum[:, k]) - np.interp(lo, edges, cum[:, k])) / (hi - lo)
           for k in range(3)]  # fmt: skip
    return np.stack(out, 1).astype(np.float32)


def get_up(xyz: Floats, rate: float, cut_after_s: float, rng: np.random.Generator) -> Floats:
    """A fall trial whose wearer gets up: cut ``cut_after_s`` after the impact (the largest
    0.2 s mean magnitude), then turn back over 2 s (with 0.05 g of stirring per axis) to the
    posture held 3 to 1 s before the impact, and stand there 2 s (breathing, 0.01 g): a
    recovered fall from a recording that stopped with the wearer on the floor.

    >>> xyz = np.tile(np.float32([0, 0, 1]), (500, 1)); xyz[300:] = [1, 0, 0]; xyz[290:300] = 3
    >>> out = get_up(xyz, 50.0, 4.0, np.random.default_rng(0))
    >>> len(out), bool(np.allclose(out[-50:].mean(0), [0, 0, 1], atol=0.02))
    (695, True)
    """
    k = max(1, round(0.2 * rate))
    mag = np.linalg.norm(xyz, axis=1)
    impact = int(np.argmax(np.convolve(mag, np.ones(k) / k, "same")))
    cut = xyz[: min(len(xyz), impact + round(cut_after_s * rate))]
    before = xyz[max(0, impact - round(3 * rate)) : max(1, impact - round(rate))].mean(axis=0)
    lying = cut[-max(1, round(rate)) :].mean(axis=0)
    ramp = np.linspace(0, 1, round(2 * rate))[:, None]
    turn = lying * (1 - ramp) + before * ramp
    turn *= (np.linalg.norm(before) / np.maximum(np.linalg.norm(turn, axis=1), 1e-6))[:, None]
    turn += 0.05 * rng.standard_normal(turn.shape)
    stand = before + 0.01 * rng.standard_normal((round(2 * rate), 3))
    return np.concatenate([cut, turn, stand]).astype(np.float32)


def watched_in_bed(
    traces: Sequence[Trace], labels: Sequence[Label], codes: Collection[str]
) -> list[Trace]:
    """The traces, those of an activity in ``codes`` (done in a bed) watched by a bed sensor
    from start to end: the home's bed sensor sees what the lab's notes say."""
    return [
        replace(tr, in_bed=np.ones(len(tr.xyz), bool)) if lab.code in codes else tr
        for tr, lab in zip(traces, labels, strict=True)
    ]


def _rates(y_true: list[bool], y_pred: list[bool]) -> dict[str, Any]:
    falls, adl = sum(y_true), len(y_true) - sum(y_true)
    out: dict[str, Any] = {"falls": falls, "adl": adl}
    if falls:
        out["sensitivity"] = float(recall_score(y_true, y_pred, pos_label=True, zero_division=0))
    if adl:
        out["specificity"] = float(recall_score(y_true, y_pred, pos_label=False, zero_division=0))
    return out


def evaluate(
    replay_dir: Path,
    labels_csv: Path,
    *,
    hold_end_s: float = 0.0,
    rotate: int | None = None,
    resample_hz: float | None = None,
    settings: FallSettings | None = None,
    placement: Placement = Placement.UNKNOWN,
    cut_after_s: float | None = None,
    in_bed: Collection[str] = (),
    models_by_subject: Mapping[str, FallModels] | None = None,
) -> dict[str, Any]:
    """Replay every labelled trial, worn at ``placement``, and return the figures (see
    module doc). ``cut_after_s``: every fall trial's wearer gets up (:func:`get_up`), and a
    fall counts as found when it is reported as a fall or a recovered one. ``in_bed``:
    activity codes done in a bed, watched by a bed sensor (:func:`watched_in_bed`).
    ``models_by_subject``: each person's trials are judged with those models (default:
    the shipped ones), e.g. a cross-validation fold's that never saw them."""
    traces, kept, errors = load_traces(
        replay_dir, read_labels(labels_csv), rotate=rotate, resample_hz=resample_hz,
        cut_after_s=cut_after_s,
    )  # fmt: skip
    traces = watched_in_bed(traces, kept, in_bed)
    if models_by_subject is not None:
        missing = sorted({lab.subject for lab in kept} - set(models_by_subject))
        if missing:
            raise ValueError(f"no models for the people {missing}")
    if models_by_subject is None:
        events = replay(traces, settings=settings, hold_end_s=hold_end_s, placement=placement)
    else:
        events = replay_judged(
            traces, [models_by_subject[lab.subject] for lab in kept], settings=settings,
            hold_end_s=hold_end_s, placement=placement,
        )  # fmt: skip
    detected = {e["file"] for e in events}
    kinds: dict[str, int] = defaultdict(int)
    for e in events:
        kinds[e["kind"]] += 1
    y_true = [lab.fall for lab in kept]
    y_pred = [lab.file in detected for lab in kept]
    report: dict[str, Any] = {
        "trials": len(kept),
        **_rates(y_true, y_pred),
        "confusion": confusion_matrix(y_true, y_pred, labels=[False, True]).tolist(),
        "kinds": dict(kinds),
        "options": {
            "hold_end_s": hold_end_s,
            "cut_after_s": cut_after_s,
            "rotate": rotate,
            "resample_hz": resample_hz,
            "placement": placement.name.lower(),
            "in_bed": sorted(in_bed),
            "models": "shipped" if models_by_subject is None else "out of fold",
        },
        "settings": (settings or FallSettings()).model_dump(),
        "errors": errors,
    }
    per_code: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_subject: dict[str, tuple[list[bool], list[bool]]] = defaultdict(lambda: ([], []))
    for lab, pred in zip(kept, y_pred, strict=True):
        per_code[lab.code][0] += 1
        per_code[lab.code][1] += pred != lab.fall
        per_subject[lab.subject][0].append(lab.fall)
        per_subject[lab.subject][1].append(pred)
    codes: list[dict[str, Any]] = [
        {
            "code": code,
            "label": "fall" if any(lab.fall for lab in kept if lab.code == code) else "adl",
            "trials": n,
            "wrong": wrong,
            "rate": round(wrong / n, 4),
        }
        for code, (n, wrong) in per_code.items()
    ]
    codes.sort(key=lambda c: (-c["rate"], c["code"]))
    report["worst_codes"] = [c for c in codes if c["wrong"]]
    report["per_code"] = sorted(codes, key=lambda c: c["code"])
    report["per_subject"] = {s: _rates(t, p) for s, (t, p) in sorted(per_subject.items())}
    report["detections"] = events
    return report


def summary(report: dict[str, Any]) -> str:
    """The report as a few readable lines."""
    o = report["options"]
    lines = [
        f"trials {report['trials']} ({report['falls']} falls, {report['adl']} ADL)"
        f"  hold-end {o['hold_end_s']} s  rotate {o['rotate']}  resample {o['resample_hz']}"
        f"  placement {o.get('placement', 'unknown')}",
        f"sensitivity {report.get('sensitivity', float('nan')):.4f}"
        f"  specificity {report.get('specificity', float('nan')):.4f}"
        + "".join(f"  {k} {n}" for k, n in sorted(report.get("kinds", {}).items())),
    ]
    if o.get("cut_after_s") is not None:
        lines[0] += f"  cut-after {o['cut_after_s']} s (fall trials get up)"
    if o.get("models") == "out of fold":
        lines[0] += "  models out of fold"
    for c in report["worst_codes"][:8]:
        kind = "missed" if c["label"] == "fall" else "false alarm"
        lines.append(f"  {c['code']}: {kind} {c['wrong']}/{c['trials']} ({c['rate']:.1%})")
    if report["errors"]:
        lines.append(f"{len(report['errors'])} files could not be read")
    return "\n".join(lines)


def evaluate_motions(
    n: int, placement: Placement, rate: float = 50.0, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Every simulator motion of ``placement`` (the wrist's, or the pendant's and belt's)
    ``n`` times, each in a random orientation at ``rate``, through the detector: per
    motion, the share of trials reported as a fall (critical), as a recovered fall, and as
    either."""
    from device_sim.motions import MOTIONS, WRIST_MOTIONS, motion

    wrist = placement == Placement.WRIST
    names = [m for m in MOTIONS if (m in WRIST_MOTIONS) == wrist]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        traces = [
            Trace(str(k), motion(name, np.random.default_rng([seed, k]), rate, "random")[1], rate)
            for k in range(n)
        ]
        events = replay(traces, placement=placement, seed=seed)
        kinds: dict[str, set[str]] = defaultdict(set)
        for e in events:
            kinds[e["file"]].add(e["kind"])
        info = MOTIONS[name](np.random.default_rng(0))[1]
        out[name] = {
            "trials": n,
            "expect_fall": float(bool(info["expect_fall"])),
            "fall": sum("fall" in k for k in kinds.values()) / n,
            "fall_recovered": sum("fall_recovered" in k for k in kinds.values()) / n,
            "any_fall": len(kinds) / n,
        }
    return out


def load_traces(
    replay_dir: Path,
    labels: Sequence[Label],
    *,
    rotate: int | None = None,
    resample_hz: float | None = None,
    cut_after_s: float | None = None,
) -> tuple[list[Trace], list[Label], list[str]]:
    """Read the labelled trials (rotated, each fall's wearer getting up ``cut_after_s``
    after the impact, resampled, as asked); unreadable ones are left out with their
    error."""
    rng = np.random.default_rng(rotate)
    traces: list[Trace] = []
    kept: list[Label] = []
    errors: list[str] = []
    for lab in labels:
        try:
            tr = read_trace(replay_dir / lab.file)
        except TraceError as exc:
            errors.append(str(exc))
            continue
        xyz, rate = tr.xyz, tr.rate
        if rotate is not None:
            xyz = xyz @ random_rotation(rng).T
        if cut_after_s is not None and lab.fall:
            xyz = get_up(xyz, rate, cut_after_s, rng)
        if resample_hz is not None:
            xyz, rate = resample_trace(xyz, rate, resample_hz), float(resample_hz)
        traces.append(Trace(lab.file, xyz.astype(np.float32), rate))
        kept.append(lab)
    return traces, kept, errors

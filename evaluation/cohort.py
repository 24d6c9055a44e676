"""``homecare evaluate``: every detector on a simulated cohort with labelled scenarios.

A cohort (default 100 elders × 30 days) lives its routines with the scenario mix of
:mod:`device_sim.scenarios` injected: falls, look-alike movements, long lies, night
wandering, bed exits, vital-sign episodes, device faults. The ground truth is written
beside the run. Detectors see what the live service would hand them, on the fast path:

* the fall detector gets the wearable's raw frames around every motion (falls and
  look-alikes), one window per detector row, frame by frame;
* every other detector gets each elder's per-second streams in time order, in slices
  of ``slice_s`` with ``tick`` at each slice's end (so tick-based delays are at most
  ``slice_s`` later than live, where ``tick`` runs every second).

By default the detectors start cold, as on the first day of a deployment: every elder on
the care-level defaults (a 22:00-06:00 sleep window, a 4 h inactivity limit at level 2).
With ``history_days`` the live service's steady state is judged instead: each elder's
plain routine (no scenarios) is lived for that long before the cohort's month and the
personal baselines are fitted on it as the daily ``homecare baselines fit`` does
(:func:`fit_history`): learned inactivity limits, night-trip limits, usual wake times and
sleep windows.

A detection matches a scenario of its kind for its elder when it lies in
``[known − 5 s, end + 15 min]``; one matching nothing is a false alarm (one that a
scenario explicitly allows, such as ``inactivity`` during a long lie after a fall, is
neither). Recall and precision come from scikit-learn; the delay is from when the
evidence existed (``known``: the impact, the door opening) to when the detector said so.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import precision_score, recall_score

from detectors.base import (
    BUTTONS,
    DOOR_ROLES,
    AccelBatch,
    Batch,
    BatchStream,
    Detection,
    Detector,
    ReadingBatch,
    Roster,
    dispatch,
    tick_all,
)
from detectors.baselines import History, fit_baselines
from detectors.care import Care
from detectors.fall import FallDetector, FallSettings
from detectors.fall_model import placement_code
from detectors.inactivity import InactivityDetector, InactivitySettings, activity_signs
from detectors.service import care_table, default_detectors
from device_sim.homes import SimConfig, Simulation
from device_sim.motions import MOTIONS
from device_sim.scenarios import (
    EARLY_S,
    GRACE_S,
    Scenario,
    Streams,
    accel_windows,
    iter_streams,
    plan_scenarios,
    write_labels,
)
from homecare.schema import Button, Wearable
from homecare.thresholds import DetectorSettings

KIND_OF = {"offline": "device_offline"}
"""Detector kinds named differently in the scenario catalogue."""
TARGETS: dict[str, tuple[float, float]] = {
    "fall": (0.98, 0.1), "inactivity": (0.95, 1.0), "wandering": (0.95, 1.0),
    "bed_exit": (0.95, 1.0),
}  # fmt: skip
"""kind → (least recall, most false alarms per elder-month)."""
FALL_DELAY_S = 10.0 + 5.0
"""Every confirmed fall alerted within the stillness window plus 5 s of the impact."""


@dataclass(slots=True)
class Found:
    kind: str
    elder: str
    ts: float
    said_at: float
    """The data time at which the detector reported it (its delay is counted to here)."""


@dataclass
class Run:
    found: list[Found] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def take(
        self, detections: Iterable[Detection], elder_of: Callable[[int], str], said_at: float
    ) -> None:
        for d in detections:
            self.found.append(Found(KIND_OF.get(d.kind, d.kind), elder_of(d.row), d.ts, said_at))


def _elder_id(index: int) -> str:
    return f"e{index + 1:04d}"


def run_falls(
    sim: Simulation,
    plan: list[Scenario],
    run: Run,
    *,
    chunk: int = 2000,
    settings: FallSettings | None = None,
) -> None:
    """The fall detector (with ``settings``) on the raw frames around every motion scenario,
    with the home's bed sensor readings (a fall from bed waits for the bed's word)."""
    motions = [sc for sc in plan if sc.name in MOTIONS or sc.name == "long_lie"]
    for start in range(0, len(motions), chunk):
        windows = accel_windows(sim, motions[start : start + chunk])
        if not windows:
            continue
        detector = FallDetector(settings)
        rows = np.arange(len(windows))
        elder_of = [w.scenario.elder for w in windows]
        worn = [sim.elders[w.scenario.index].profile.placement for w in windows]
        detector.place(rows, np.array([placement_code(p) for p in worn], np.int8))
        length = max(len(w.ts) for w in windows)
        rate = windows[0].rate
        told = np.zeros(len(windows), np.int64)  # bed readings fed so far, per window
        for k in range(length):
            live = np.flatnonzero([k < len(w.ts) for w in windows])
            ts = np.array([windows[i].ts[k] for i in live])
            # the bed's readings up to this frame, before it (the service takes them as
            # they come; a reading and a frame of one second: the reading first)
            due = [
                (i, j)
                for i, t in zip(live.tolist(), ts.tolist(), strict=True)
                for j in range(told[i], int(np.searchsorted(windows[i].bed_ts, t, "right")))
            ]
            if due:
                bed_rows = np.array([i for i, _ in due])
                for i, _ in due:
                    told[i] += 1
                bed = ReadingBatch(
                    BatchStream.BED, bed_rows,
                    np.array([windows[i].bed_ts[j] for i, j in due]),
                    {"presence": np.array([float(windows[i].bed_presence[j]) for i, j in due])},
                )  # fmt: skip
                heard = {i: float(windows[i].bed_ts[j]) for i, j in due}
                for d in detector.update(bed):  # a fall from bed, on the bed's word
                    run.take([d], elder_of.__getitem__, heard[d.row])
            accel = np.stack([windows[i].accel[k] for i in live]).astype(np.float32)
            for d in detector.update(AccelBatch(rows[live], ts, accel, float(rate))):
                # said when the frame that completed it arrived (+1 s: a frame is a second)
                run.take([d], elder_of.__getitem__, float(windows[d.row].ts[k]) + 1.0)
        last = max((float(w.ts[-1]) for w in windows if len(w.ts)), default=0.0)
        for d in detector.tick(last + detector.settings.bed_wait_s):
            run.take([d], elder_of.__getitem__, d.ts + detector.settings.bed_wait_s)


def _batches(chunk: Streams, devices_per_elder: int = 3) -> list[Batch]:
    """The fast path's columns as the detectors' batches (rows: elder index)."""
    out: list[Batch] = []
    w = chunk.wearable
    if len(w["ts"]):
        rows = w["elder"].astype(np.int64)
        out.append(ReadingBatch(BatchStream.WEARABLE, rows, w["ts"].astype(np.float64), {
            Wearable.mag_std: w[Wearable.mag_std], "hr": np.where(w["hr"] < 0, np.nan, w["hr"]),
            "spo2": np.where(w["spo2"] < 0, np.nan, w["spo2"]), "steps": w["steps"],
            "battery": w["battery"], "gx": w["gx"], "gy": w["gy"], "gz": w["gz"],
        }, rows * devices_per_elder))  # fmt: skip
    b = chunk.bed
    if len(b["ts"]):
        rows = b["elder"].astype(np.int64)
        out.append(ReadingBatch(BatchStream.BED, rows, b["ts"].astype(np.float64), {
            "presence": b["presence"].astype(np.float64),
            "hr": np.where(b["hr"] < 0, np.nan, b["hr"]), "br": b["br"],
            "movement": b["movement"],
        }, rows * devices_per_elder + 1))  # fmt: skip
    d = chunk.doors
    if len(d["ts"]):
        rows = d["elder"].astype(np.int64)
        role = np.array([DOOR_ROLES.index(r) for r in d["role"]], np.float64)
        out.append(ReadingBatch(BatchStream.DOOR, rows, d["ts"].astype(np.float64), {
            "opened": (d["state"] == "opened").astype(np.float64), "role": role,
            "seq": np.zeros(len(rows)),
        }, rows * devices_per_elder + 2))  # fmt: skip
    s = chunk.status
    if len(s["ts"]):
        rows = s["elder"].astype(np.int64)
        out.append(ReadingBatch(BatchStream.STATUS, rows, s["ts"].astype(np.float64), {
            "battery": s["battery"], "interval_s": np.full(len(rows), np.nan),
        }, rows * devices_per_elder + s["kind"].astype(np.int64)))  # fmt: skip
    u = chunk.buttons
    if len(u["ts"]):
        rows = u["elder"].astype(np.int64)
        button = np.array([BUTTONS.index(x) for x in u["stream"]], np.float64)
        out.append(ReadingBatch(BatchStream.BUTTON, rows, u["ts"].astype(np.float64), {
            Button.button: button, "seq": np.arange(len(rows), dtype=np.float64),
        }, rows * devices_per_elder))  # fmt: skip
    return out


def _slice(batch: Batch, lo: float, hi: float) -> Batch | None:
    i, j = np.searchsorted(batch.ts, [lo, hi])
    if i == j:
        return None
    assert isinstance(batch, ReadingBatch)
    return ReadingBatch(
        batch.stream,
        batch.rows[i:j],
        batch.ts[i:j],
        {k: v[i:j] for k, v in batch.values.items()},
        None if batch.devices is None else batch.devices[i:j],
    )


F64 = npt.NDArray[np.float64]


def _minutes(
    rows: npt.NDArray[np.int64], ts: F64, value: F64, how: str
) -> tuple[npt.NDArray[np.int64], F64, F64]:
    """Per (row, minute): its start and the ``max`` or ``mean`` of ``value`` (as InfluxDB's
    ``GROUP BY time(1m)`` in :func:`~detectors.baselines.history_from_influx`)."""
    if len(rows) == 0:
        return rows, ts, value
    minute = np.floor(ts / 60.0) * 60.0
    order = np.lexsort((minute, rows))
    r, m, v = rows[order], minute[order], value[order]
    first = np.flatnonzero(np.r_[True, (r[1:] != r[:-1]) | (m[1:] != m[:-1])])
    if how == "max":
        out = np.maximum.reduceat(v, first)
    else:
        out = np.add.reduceat(v, first) / np.diff(np.r_[first, len(v)])
    return r[first], m[first], out


def fit_history(
    config: SimConfig, days: float, detectors: list[Detector[Any]], care: Care
) -> History:
    """Live ``days`` of plain routine before ``config.start`` and fit the baselines on them
    (per-minute sign and bed history and every door event, as the live fit reads them)."""
    past = Simulation(replace(config, start=config.start - days * 86400.0))
    inactivity = [d.settings for d in detectors if isinstance(d, InactivityDetector)]
    s = inactivity[0] if inactivity else InactivitySettings()  # the signs the fit counts
    parts: dict[str, list[tuple[npt.NDArray[Any], ...]]] = defaultdict(list)
    for chunk in iter_streams(past, [], days):
        w = chunk.wearable
        sign = activity_signs(
            ReadingBatch(BatchStream.WEARABLE, w["elder"], w["ts"], {
                Wearable.mag_std: w[Wearable.mag_std], "steps": w["steps"]}), s)  # fmt: skip
        r, m, std = _minutes(w["elder"][sign], w["ts"][sign], w[Wearable.mag_std][sign], "max")
        _, _, steps = _minutes(w["elder"][sign], w["ts"][sign], w["steps"][sign], "max")
        parts["wearable"].append((r, m, std, steps))
        b = chunk.bed
        parts["bed"].append(_minutes(b["elder"], b["ts"], b["presence"].astype(float), "mean"))
        d = chunk.doors
        role = np.array([DOOR_ROLES.index(x) for x in d["role"]], np.float64)
        parts["door"].append((d["elder"], d["ts"], (d["state"] == "opened") * 1.0, role))
    cols = {"wearable": (Wearable.mag_std, "steps"), "bed": ("presence",),
            "door": ("opened", "role")}  # fmt: skip
    batches: dict[str, ReadingBatch] = {}
    for stream, names in cols.items():
        joined = [np.concatenate([p[k] for p in parts[stream]]) for k in range(2 + len(names))]
        values = dict(zip(names, joined[2:], strict=True))
        if stream == BatchStream.BED:
            values["presence"] = (values["presence"] > 0.5) * 1.0  # the minute's majority
        batches[stream] = ReadingBatch(stream, joined[0].astype(np.int64), joined[1], values)
    history = History(
        tuple(_elder_id(i) for i in range(config.elders)), past.config.start, config.start,
        batches,
    )  # fmt: skip
    roster = Roster()
    roster.rows(history.elders)  # rows are elder indices, as in the streams
    fit_baselines(history, detectors, care, roster)
    return history


def run_streams(
    sim: Simulation,
    plan: list[Scenario],
    days: float,
    run: Run,
    *,
    slice_s: float = 30.0,
    history_days: float = 0.0,
    thresholds: DetectorSettings | None = None,
) -> list[Detector[Any]]:
    """Every detector but the fall detector (with ``thresholds``, default: the shipped
    ones) on the per-second streams, in time order (after fitting the baselines on
    ``history_days`` of routine before, if any)."""
    thresholds = thresholds or DetectorSettings()
    care = care_table(thresholds)
    detectors = [
        d for d in default_detectors(care, thresholds) if not isinstance(d, FallDetector)
    ]
    if history_days > 0:
        fit_history(sim.config, history_days, detectors, care)
    for chunk in iter_streams(sim, plan, days):
        batches = _batches(chunk)
        t = chunk.t0
        while t < chunk.t1:
            end = min(t + slice_s, chunk.t1)
            for batch in batches:
                part = _slice(batch, t, end)
                if part is not None:
                    # said on arrival of the reading that completed it (its ts)
                    for d in dispatch(detectors, part):
                        run.take([d], _elder_id, d.ts)
            run.take(tick_all(detectors, end), _elder_id, end)
            t = end
    return detectors


def score(
    plan: list[Scenario], found: list[Found], elders: int, days: float
) -> dict[str, dict[str, Any]]:
    """Per kind: recall, precision, false alarms per elder-month, delays."""
    by_elder: dict[str, list[Scenario]] = defaultdict(list)
    for sc in plan:
        by_elder[sc.elder].append(sc)
    first: dict[str, float] = {}
    false: dict[str, int] = defaultdict(int)
    look_alike: dict[str, int] = defaultdict(int)
    for f in sorted(found, key=lambda f: f.said_at):
        matched = False
        during = False
        for sc in by_elder.get(f.elder, ()):
            window = sc.end + GRACE_S
            if sc.kind == f.kind and sc.known - EARLY_S <= f.ts <= window:
                first.setdefault(sc.id, f.said_at - sc.known)
                matched = True
            elif f.kind in sc.allowed and sc.start - EARLY_S <= f.ts <= window:
                matched = True
            elif sc.kind == "none" and sc.start - EARLY_S <= f.ts <= window:
                during = True
        if not matched:
            false[f.kind] += 1
            look_alike[f.kind] += during
    months = elders * days / 30.0
    report: dict[str, dict[str, Any]] = {}
    kinds = sorted({sc.kind for sc in plan if sc.kind != "none"} | set(false))
    for kind in kinds:
        events = [sc for sc in plan if sc.kind == kind]
        hit = [sc.id in first for sc in events]
        y_true = [1] * len(events) + [0] * false[kind]
        y_pred = [int(h) for h in hit] + [1] * false[kind]
        delays = np.array([first[sc.id] for sc in events if sc.id in first])
        report[kind] = {
            "events": len(events), "detected": int(sum(hit)),
            "recall": float(recall_score(y_true, y_pred, zero_division=np.nan)),
            "precision": float(precision_score(y_true, y_pred, zero_division=np.nan)),
            "false_alarms": false[kind], "look_alike_alarms": look_alike[kind],
            "false_alarms_per_elder_month": false[kind] / months,
            "delay_median_s": float(np.median(delays)) if len(delays) else math.nan,
            "delay_p95_s": float(np.percentile(delays, 95)) if len(delays) else math.nan,
            "delay_max_s": float(delays.max()) if len(delays) else math.nan,
        }  # fmt: skip
    for kind, (least, most) in TARGETS.items():
        r = report.get(kind)
        if r is not None:
            r["target"] = {"recall": least, "false_alarms_per_elder_month": most}
            r["meets_target"] = bool(
                r["recall"] >= least
                and r["false_alarms_per_elder_month"] <= most
                and (kind != "fall" or r["delay_max_s"] <= FALL_DELAY_S)
            )
    return report


def default_start(days: float, now: float) -> float:
    """The start of ``days`` that end at the midnight (UTC) that began yesterday: a recent
    stretch of whole days, whatever the hour ``now`` is.

    >>> from datetime import datetime
    >>> at = datetime.fromisoformat("2027-01-31T23:58:00+00:00").timestamp()
    >>> datetime.fromtimestamp(default_start(2, at), UTC).isoformat()
    '2027-01-28T00:00:00+00:00'
    """
    return float(math.floor(now / 86400) * 86400 - (days + 1) * 86400)


def evaluate_cohort(
    *,
    elders: int = 100,
    days: float = 30,
    seed: int = 0,
    history_days: float = 0.0,
    thresholds: DetectorSettings | None = None,
    start: float | None = None,
    out_dir: Path | None = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Simulate, inject, detect, score; write labels and the report to ``out_dir``.

    The cohort's routines and scenario mix depend on the days simulated, so ``start`` (unix
    seconds; default :func:`default_start` of now) is part of what makes a run repeatable,
    with ``seed``; the report says it. The baselines are first fitted on ``history_days``
    of routine before (0: none, every elder on the care-level defaults). ``thresholds``: the
    detectors' settings (default: the shipped ones; ``homecare evaluate`` passes the
    environment's)."""
    thresholds = thresholds or DetectorSettings()
    clock = time.perf_counter()
    start = default_start(days, time.time()) if start is None else float(start)
    sim = Simulation(SimConfig(elders=elders, seed=seed, start=start))
    plan = plan_scenarios(sim, seed, days)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_labels(out_dir / "labels", plan)
    log(
        f"{len(plan)} labelled scenarios for {elders} elders × {days:g} days "
        f"({time.perf_counter() - clock:.0f} s)"
    )
    run = Run()
    t0 = time.perf_counter()
    run_falls(sim, plan, run, settings=thresholds.fall)
    run.seconds["falls"] = time.perf_counter() - t0
    log(f"fall detector on the motions ({run.seconds['falls']:.0f} s)")
    t0 = time.perf_counter()
    run_streams(sim, plan, days, run, history_days=history_days, thresholds=thresholds)
    run.seconds["streams"] = time.perf_counter() - t0
    log(f"other detectors on the streams ({run.seconds['streams']:.0f} s)")
    report = {
        "elders": elders, "days": days, "seed": seed, "history_days": history_days,
        "start": datetime.fromtimestamp(start, UTC).isoformat(),
        "scenarios": len(plan), "detections": len(run.found),
        "per_kind": score(plan, run.found, elders, days),
        "seconds": {k: round(v, 1) for k, v in run.seconds.items()},
    }  # fmt: skip
    if out_dir is not None:
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['elders']} elders × {report['days']:g} days from {report['start']}, "
        f"{report['scenarios']} labelled scenarios",
        f"{'detector':<16}{'events':>7}{'recall':>8}{'precision':>10}"
        f"{'FA/elder-mo':>12}{'delay p50':>10}{'p95':>8}  target",
    ]
    for kind, r in report["per_kind"].items():
        target = "" if "meets_target" not in r else ("met" if r["meets_target"] else "MISSED")
        lines.append(
            f"{kind:<16}{r['events']:>7}{r['recall']:>8.3f}{r['precision']:>10.3f}"
            f"{r['false_alarms_per_elder_month']:>12.3f}{r['delay_median_s']:>9.0f}s"
            f"{r['delay_p95_s']:>7.0f}s  {target}"
        )
    return "\n".join(lines)

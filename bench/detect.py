"""``homecare bench detect``: detector throughput on one core, its peers, and alert latency.

1. **Throughput.** ``--elders`` wearables at 50 Hz, one simulated second per step: every
   detector of :func:`detectors.service.default_detectors` gets what the live service
   would hand it — an :class:`AccelBatch` of one frame per elder, the matching ``wearable``
   batch (:func:`frame_stats` + hr, SpO2, steps, battery), bed readings (each bed every
   10 s), a few door events, device status (each device every 300 s) — and then
   ``tick_all``. The traces come from :mod:`device_sim.motions` (mostly still sitting,
   lying or standing, a share walking, a few look-alikes and falls), all precomputed so
   only the detectors are timed, pinned to one core with single-threaded BLAS.
   Reported: accelerometer samples/s and the ratio to real time (median step), cost per
   detector, and detector state per elder.
2. **Peers**, on the same samples: the fall stages written as a plain per-sample Python
   loop (:class:`bench.peers.NaiveFall`) on a subset of elders, and River's
   ``HalfSpaceTrees`` scoring the magnitude stream sample by sample; samples/s of each
   and our ratio to them.
3. **Alert latency** through a real NATS Server: ``homecare detect`` (its
   :class:`~detectors.service.DetectService`, wall clock, on its durable consumer of
   TELEMETRY, saving its state every ``detect.save_every_s``) runs as its own process
   while ``--latency-elders`` publish in real time over MQTT through gateway connections;
   SOS presses and falls with a long lie are injected for a few dozen elders. Latency runs
   from the moment the message completing a detection was handed to the publishing client
   (the SOS event; for a fall, the frame that ends its stillness window, found by
   replaying the elder's published frames through a :class:`~detectors.fall.FallDetector`)
   to the alert's arrival, stored in ALERTS, at a separate process reading that stream.
   Two phases: *burst*, the fleet as it is (every simulated second's messages handed over
   at once, all devices in phase), and *spread*, the same traffic handed over in
   ``--spread`` slices across the second, as independent devices with their own phases
   would send it. The service's batches are timed inside its process (decode + batch +
   detect), to say where the time goes. The ceiling: a *bare consumer* (a nats-py pull
   loop on a durable consumer of TELEMETRY that only counts and acknowledges) runs beside
   it and notes when each SOS press reaches it; the ratio of detect's SOS latency to the
   bare consumer's is printed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import multiprocessing as mp
import os
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import psutil

from bench.peers import hst_rate, naive_rate
from detectors.base import AccelBatch, Batch, BatchStream, Detection, Detector, ReadingBatch
from device_sim.fleet import Fleet
from device_sim.homes import Motion, SimConfig, Simulation, SosPress
from device_sim.motions import motion
from device_sim.routine import Posture, daytime
from device_sim.signals import to_device_frame
from homecare.contract import Stream, Topic
from homecare.frames import frame_stats
from homecare.settings import DetectSettings, NatsSettings

RATE = 50
BED_PERIOD_S = 10
STATUS_PERIOD_S = 300
DOOR_EVENTS_PER_ELDER_DAY = 40.0
START_TS = 1_709_600_400.0  # 2024-03-05 01:00 UTC: night, so the night-time rules are live
MIX: dict[str, float] = {"still": 0.865, "walk": 0.10, "lookalike": 0.03, "fall": 0.005}
"""Share of elders per kind of trace in the throughput stream."""
LATENCY_P99_TARGET_MS = 250.0
PHASE_NAMES = {
    "spread": "devices in their own phases (as in the field)",
    "burst": "every device in the same instant (worst case)",
}
STILL_FROM = ("sit_hard", "sit_hard_bed", "lie_down", "bend")
"""Motions whose last seconds are still sitting, lying or standing: the resting traces."""
WALKS = ("walk", "stairs_down")
LOOKALIKES = (
    "sit_hard", "sit_hard_bed", "collapse_into_chair", "stumble", "jump", "bend", "lie_down",
    "slow_collapse", "device_dropped", "device_thrown",
)  # fmt: skip
FALLS = ("fall_forward", "fall_backward", "fall_sideways", "fall_out_of_bed")
STILL_TAIL_S = 12
LISTENER_ID = "bench-alerts"
BARE_ID = "bench-bare"


# --- 1. the throughput stream ----------------------------------------------------------


@dataclass
class Workload:
    """Every step's batches, precomputed, and the samples behind them (for the peers)."""

    elders: int
    t0: float
    warmup: int
    accel: npt.NDArray[np.float32]  # steps × elders × RATE × 3
    kinds: npt.NDArray[np.str_]  # kind of trace per elder
    steps: list[list[Batch]] = field(default_factory=list)

    @property
    def seconds(self) -> int:
        return len(self.steps)


def _traces(
    rng: np.random.Generator, count: int, names: tuple[str, ...], tail_s: int | None = None
) -> list[tuple[npt.NDArray[np.float32], bool]]:
    """``count`` traces (device frame, float32) cycling through ``names``, and whether each
    ends lying down (what the bed sees); ``tail_s`` keeps only the last seconds."""
    out = []
    for k in range(count):
        name = names[k % len(names)]
        _, xyz, _ = motion(name, rng, rate=RATE)
        if tail_s is not None:
            xyz = xyz[-tail_s * RATE :]
        dev = to_device_frame(xyz.astype(np.float64)).astype(np.float32)
        lying = abs(float(dev[-RATE:, 1].mean())) < 0.5  # y runs along the body
        out.append((dev, lying))
    return out


def build_workload(elders: int, seconds: int, *, warmup: int = 5, seed: int = 0) -> Workload:
    """Precompute ``warmup + seconds`` steps for ``elders`` (see module doc)."""
    rng = np.random.default_rng(seed)
    pools = {
        "still": _traces(rng, 48, STILL_FROM, STILL_TAIL_S),
        "walk": _traces(rng, 24, WALKS),
        "lookalike": _traces(rng, 40, LOOKALIKES),
        "fall": _traces(rng, 24, FALLS),
    }
    counts = {k: round(share * elders) for k, share in MIX.items()}
    counts["still"] = elders - sum(v for k, v in counts.items() if k != "still")
    kinds = rng.permutation(np.repeat(list(counts), list(counts.values())))
    total = warmup + seconds
    n_samples = total * RATE
    accel = np.empty((total, elders, RATE, 3), np.float32)
    lying = np.zeros(elders, bool)
    walking = kinds == "walk"
    for kind, pool in pools.items():
        who = np.flatnonzero(kinds == kind)
        pick = rng.integers(0, len(pool), len(who))
        for p, (trace, lies) in enumerate(pool):
            sel = who[pick == p]
            if not len(sel):
                continue
            lying[sel] = lies
            # events at a random point of the run: each elder starts somewhere in its trace
            offset = rng.integers(0, len(trace), len(sel))
            idx = (offset[:, None] + np.arange(n_samples)) % len(trace)
            accel[:, sel] = trace[idx].reshape(len(sel), total, RATE, 3).transpose(1, 0, 2, 3)
    work = Workload(elders, START_TS, warmup, accel, kinds)

    rows = np.arange(elders, dtype=np.int64)
    wearable_dev, bed_dev, door_dev = 3 * rows, 3 * rows + 1, 3 * rows + 2
    rest_hr = rng.uniform(55, 85, elders)
    base_spo2 = rng.integers(94, 99, elders).astype(np.float64)
    battery = rng.uniform(30, 100, elders)
    bed_offset = rng.integers(0, BED_PERIOD_S, elders)
    status_offset = rng.integers(0, STATUS_PERIOD_S, (elders, 3))
    door_seq = np.zeros(elders)
    door_rate = elders * DOOR_EVENTS_PER_ELDER_DAY / 86400.0
    for s in range(total):
        ts = np.full(elders, START_TS + s)
        frames = accel[s]
        cols: dict[str, npt.NDArray[Any]] = dict(frame_stats(frames))
        cols["hr"] = np.rint(rest_hr + 20.0 * walking + rng.normal(0, 1.0, elders))
        cols["spo2"] = np.clip(base_spo2 + rng.integers(-1, 2, elders), 90, 100)
        cols["steps"] = np.where(walking, rng.integers(1, 3, elders), 0).astype(np.float64)
        cols["battery"] = np.round(battery - s * 2.5 / 3600.0, 1)
        batches: list[Batch] = [
            AccelBatch(rows, ts, frames, float(RATE)),
            ReadingBatch(BatchStream.WEARABLE, rows, ts, cols, wearable_dev),
        ]
        due = np.flatnonzero(bed_offset == s % BED_PERIOD_S)
        present = lying[due].astype(np.float64)
        batches.append(ReadingBatch(BatchStream.BED, due, ts[due], {
            "presence": present,
            "hr": np.where(present > 0, np.rint(rest_hr[due] - 6 + rng.normal(0, 1.5, len(due))),
                           np.nan),
            "br": np.where(present > 0, np.round(rng.normal(14, 1.5, len(due)), 1), np.nan),
            "movement": np.where(present > 0, np.round(rng.uniform(0, 0.08, len(due)), 2), 0.0),
        }, bed_dev[due]))  # fmt: skip
        who = rng.choice(elders, min(elders, rng.poisson(door_rate)), replace=False)
        if len(who):
            door_seq[who] += 1
            at = ts[who] + rng.uniform(0, 1, len(who))
            batches.append(ReadingBatch(BatchStream.DOOR, who, at, {
                "opened": (door_seq[who] % 2).astype(np.float64),
                "role": rng.integers(0, 4, len(who)).astype(np.float64),
                "seq": door_seq[who].copy(),
            }, door_dev[who]))  # fmt: skip
        e, k = np.nonzero(status_offset == s % STATUS_PERIOD_S)
        if len(e):
            batches.append(ReadingBatch(BatchStream.STATUS, e, ts[e], {
                "battery": np.where(k == 0, battery[e], np.where(k == 1, 100.0, 80.0)),
                "interval_s": np.full(len(e), float(STATUS_PERIOD_S)),
            }, 3 * e + k))  # fmt: skip
        work.steps.append(batches)
    return work


@contextmanager
def one_core() -> Iterator[int]:
    """Pin this thread to one core and BLAS to one thread for the duration."""
    from threadpoolctl import threadpool_limits

    before = os.sched_getaffinity(0)
    core = max(before)
    os.sched_setaffinity(0, {core})
    try:
        with threadpool_limits(limits=1):
            yield core
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Pass:
    """One pass of the detectors over the workload: step times and per-detector costs."""

    step_s: list[float]
    per_detector_s: dict[str, float]
    detections: list[tuple[str, Detection]]
    state_bytes: dict[str, int]


def _name(d: Detector[Any]) -> str:
    return type(d).__name__


def run_pass(work: Workload) -> Pass:
    """Fresh detectors over every step; only the steps after the warm-up are counted."""
    from detectors.care import Care
    from detectors.service import default_detectors

    detectors = default_detectors(Care())
    clock = time.perf_counter
    per: dict[str, float] = {_name(d): 0.0 for d in detectors}
    steps: list[float] = []
    found: list[tuple[str, Detection]] = []
    for s, batches in enumerate(work.steps):
        spent = dict.fromkeys(per, 0.0)
        began = clock()
        for batch in batches:
            for det in detectors:
                if batch.stream in det.streams:
                    t = clock()
                    out = det.update(batch)
                    spent[_name(det)] += clock() - t
                    found += [(det.kind, d) for d in out]
        now = work.t0 + s + 1.0
        for det in detectors:
            t = clock()
            out = det.tick(now)
            spent[_name(det)] += clock() - t
            found += [(det.kind, d) for d in out]
        took = clock() - began
        if s >= work.warmup:
            steps.append(took)
            for name, v in spent.items():
                per[name] += v
    return Pass(steps, per, found, {_name(d): d.state_bytes() for d in detectors})


def shuffled_rows(
    work: Workload, *, repeat: int = 3, seed: int = 0, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """The same steps with each second's frames in a random row order: the live service's
    batches rarely hold one contiguous block of rows, which the fall detector's history
    copy favours. Replaces the workload's frame batches (run it last)."""
    rng = np.random.default_rng(seed + 3)
    for batches in work.steps:
        perm = rng.permutation(work.elders)
        frames, worn = batches[0], batches[1]
        assert isinstance(frames, AccelBatch)
        assert isinstance(worn, ReadingBatch)
        batches[0] = AccelBatch(frames.rows[perm], frames.ts[perm], frames.accel[perm], frames.rate)
        batches[1] = ReadingBatch(
            worn.stream,
            worn.rows[perm],
            worn.ts[perm],
            {k: v[perm] for k, v in worn.values.items()},
            None if worn.devices is None else worn.devices[perm],
        )
    with one_core():
        passes = [run_pass(work) for _ in range(repeat)]
    best = min(passes, key=lambda p: statistics.median(p.step_s))
    med = statistics.median(best.step_s)
    n = len(best.step_s)
    fall = best.per_detector_s["FallDetector"] / n
    log(
        f"  rows in random order: median step {med * 1e3:.2f} ms → "
        f"{work.elders * RATE / med / 1e6:.1f} M samples/s, {1 / med:.0f}× real time "
        f"(FallDetector {fall * 1e3:.2f} ms)"
    )
    return {
        "step_ms_median": round(med * 1e3, 3),
        "samples_per_s": round(work.elders * RATE / med),
        "x_real_time": round(1.0 / med, 1),
        "median_step_ms_per_pass": [round(statistics.median(p.step_s) * 1e3, 3) for p in passes],
        "per_detector_ms_per_step": {
            k: round(v / n * 1e3, 3) for k, v in best.per_detector_s.items()
        },
    }


def throughput(
    work: Workload, *, repeat: int = 3, log: Callable[[str], Any] = print
) -> tuple[dict[str, Any], Pass]:
    """``repeat`` passes on one core; figures of the pass with the lowest median step."""
    with one_core() as core:
        passes = [run_pass(work) for _ in range(repeat)]
        t = time.perf_counter()
        for batches in work.steps:
            frame_stats(batches[0].accel)  # type: ignore[union-attr]  # a step starts with frames
        stats_s = (time.perf_counter() - t) / work.seconds
    best = min(passes, key=lambda p: statistics.median(p.step_s))
    samples = work.elders * RATE
    med = statistics.median(best.step_s)
    mean = statistics.fmean(best.step_s)
    n = len(best.step_s)
    kinds = Counter(k for k, _ in best.detections)
    falls = [d for k, d in best.detections if k == "fall"]
    fall_rows = {d.row for d in falls}
    report: dict[str, Any] = {
        "elders": work.elders,
        "rate_hz": RATE,
        "core": core,
        "steps_timed": n,
        "passes": repeat,
        "mix": {k: int((work.kinds == k).sum()) for k in MIX},
        "samples_per_step": samples,
        "step_ms_median": round(med * 1e3, 3),
        "step_ms_mean": round(mean * 1e3, 3),
        "step_ms_p95": round(sorted(best.step_s)[min(n - 1, math.ceil(0.95 * n) - 1)] * 1e3, 3),
        "samples_per_s": round(samples / med),
        "samples_per_s_mean": round(samples / mean),
        "x_real_time": round(1.0 / med, 1),
        "median_step_ms_per_pass": [round(statistics.median(p.step_s) * 1e3, 3) for p in passes],
        "per_detector_ms_per_step": {
            k: round(v / n * 1e3, 3) for k, v in best.per_detector_s.items()
        },
        "frame_stats_ms_per_step": round(stats_s * 1e3, 3),
        "state_bytes_per_elder": round(sum(best.state_bytes.values()) / work.elders),
        "state_bytes_per_elder_by_detector": {
            k: round(v / work.elders) for k, v in best.state_bytes.items()
        },
        "detections": dict(kinds),
        "falls_detected": {str(k): int(sum(work.kinds[r] == k for r in fall_rows)) for k in MIX},
    }
    log(
        f"throughput: {work.elders} elders × {RATE} Hz, median step {med * 1e3:.2f} ms "
        f"(mean {mean * 1e3:.2f}) → {samples / med / 1e6:.1f} M samples/s on one core, "
        f"{1 / med:.0f}× real time; state {report['state_bytes_per_elder']} B per elder"
    )
    log(
        "  per detector, ms per step: "
        + ", ".join(f"{k} {v}" for k, v in report["per_detector_ms_per_step"].items())
    )
    return report, best


def peers(
    work: Workload,
    ours: Pass,
    samples_per_s: float,
    *,
    naive_elders: int,
    hst_elders: int,
    seed: int,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """The naive loop and River's HalfSpaceTrees on a subset of the same samples."""
    rng = np.random.default_rng(seed + 1)
    # a subset with the stream's mix, falls included
    subset: list[int] = []
    for kind, share in MIX.items():
        who = np.flatnonzero(work.kinds == kind)
        k = min(len(who), max(1, round(share * naive_elders)))
        subset += rng.choice(who, k, replace=False).tolist()
    xyz = [work.accel[:, i].reshape(-1, 3).tolist() for i in subset]
    streams = [[(a, b, c) for a, b, c in s] for s in xyz]
    with one_core():
        naive, naive_s, naive_found = naive_rate(streams, work.t0, RATE)
        mags = [
            np.linalg.norm(work.accel[:, i].reshape(-1, 3), axis=1).tolist()
            for i in subset[:hst_elders]
        ]
        hst, hst_s, top = hst_rate(mags, seed)
    fall_s = ours.per_detector_s["FallDetector"] / len(ours.step_s)
    fall_only = work.elders * RATE / fall_s
    ours_found = sum(1 for k, d in ours.detections if k == "fall" and d.row in set(subset))
    report = {
        "naive_python": {
            "elders": len(subset),
            "samples": len(subset) * len(streams[0]),
            "seconds": round(naive_s, 2),
            "samples_per_s": round(naive),
            "falls_found": naive_found,
            "ours_falls_found_same_elders": ours_found,
            "ours_ratio": round(samples_per_s / naive, 1),
            "ours_fall_detector_alone_samples_per_s": round(fall_only),
            "ours_fall_detector_alone_ratio": round(fall_only / naive, 1),
        },
        "river_half_space_trees": {
            "elders": len(mags),
            "samples": len(mags) * len(mags[0]),
            "seconds": round(hst_s, 2),
            "samples_per_s": round(hst),
            "max_score": round(top, 3),
            "ours_ratio": round(samples_per_s / hst, 1),
        },
    }
    log(
        f"peers: naive per-sample Python {naive:,.0f} samples/s (ours, all detectors "
        f"{samples_per_s / naive:.0f}×, the fall detector alone {fall_only / naive:.0f}×;"
        f" falls {naive_found} vs ours {ours_found} on the same {len(subset)} elders), "
        f"River HalfSpaceTrees {hst:,.0f} samples/s (ours {samples_per_s / hst:.0f}×)"
    )
    return report


# --- 3. alert latency through the broker -------------------------------------------------


def _timed(fn: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    """``fn``, adding its time to ``spent[0]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    return wrapper


def _detect_main(
    nats_url: str, influx_url: str, state: str, started: Any, result: Any, interval_s: float,
    save_every_s: float, partitions: int,
) -> None:  # fmt: skip
    """The detect service as its own process, as ``homecare detect`` runs; SIGTERM stops it.

    Its ``handle`` (decode + batch + detect), the batcher and the detectors are wrapped in
    timers, so the report can say where a batch's time goes."""
    from detectors.service import DetectService
    from homecare.runtime import tune_gc_for_service
    from homecare.settings import InfluxSettings, Settings

    settings = Settings(
        _env_file=None,
        state_dir=Path(state),
        nats=NatsSettings(url=nats_url, partitions=partitions),
        influx=InfluxSettings(url=influx_url, database="homecare"),
        detect=DetectSettings.model_validate(
            {"clock": "wall", "batch_interval_s": interval_s, "save_every_s": save_every_s}
        ),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    build, dets = [0.0], [0.0]
    batches: list[tuple[float, int, float, float, float]] = []

    def instrument(detect: Any) -> None:
        """Timers around each partition's pipeline: the bench's view inside a batch."""
        detect.batcher.build = _timed(detect.batcher.build, build)
        for det in detect.detectors:
            det.update = _timed(det.update, dets)
            det.tick = _timed(det.tick, dets)
        handle = detect.handle

        def timed_handle(messages: list[Any], *, received: float | None = None) -> Any:
            build[0] = dets[0] = 0.0
            t = time.perf_counter()
            out = handle(messages, received=received)
            if messages:
                took = time.perf_counter() - t
                batches.append((time.time(), len(messages), took, build[0], dets[0]))
            return out

        detect.handle = timed_handle

    service = DetectService(settings, on_new_detect=instrument)
    tune_gc_for_service()  # as `homecare detect` does
    pauses: list[tuple[int, float]] = []  # garbage collections: generation, seconds
    gc_began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - gc_began[0]))

    gc.callbacks.append(on_gc)
    started.set()
    stats = service.run(stop)
    gc.callbacks.remove(on_gc)
    full = [p for g, p in pauses if g == 2]
    result.put(
        {
            "stats": stats.as_dict(),
            "last_save": service.last_save_total(),
            "batches": batches,
            "gc": {
                "collections": len(pauses),
                "total_ms": round(sum(p for _, p in pauses) * 1e3, 1),
                "max_ms": round(max((p for _, p in pauses), default=0.0) * 1e3, 1),
                "full_collections": len(full),
                "full_max_ms": round(max(full, default=0.0) * 1e3, 1),
            },
        }
    )


def _listen_main(nats_url: str, ready: Any, stop: Any, result: Any) -> None:
    """A reader of ALERTS (an ordered consumer of new messages) that stamps each arrival;
    its own process, so nothing else in the benchmark holds its GIL."""
    from homecare.jetstream import ALERT_SUBJECT_ROOT

    got: list[tuple[float, bytes]] = []

    async def listen() -> None:
        import nats
        from nats.js.api import DeliverPolicy

        nc = await nats.connect(nats_url, name=LISTENER_ID)

        async def on_message(msg: Any) -> None:
            got.append((time.time(), msg.data))

        js = nc.jetstream()
        await js.subscribe(f"{ALERT_SUBJECT_ROOT}.>", cb=on_message, ordered_consumer=True,
                           deliver_policy=DeliverPolicy.NEW)  # fmt: skip
        ready.set()
        await asyncio.to_thread(stop.wait)
        await nc.close()

    asyncio.run(listen())
    out = []
    for at, payload in got:
        alert = json.loads(payload)
        out.append({"at": at, "elder": alert["elder"], "kind": alert["kind"],
                    "state": alert["state"], "ts": alert["ts"]})  # fmt: skip
    result.put(out)


def _bare_main(nats_url: str, ready: Any, stop: Any, result: Any) -> None:
    """The ceiling: a nats-py pull loop on a durable consumer of TELEMETRY that only counts
    and acknowledges (cumulatively, one acknowledgement per batch: as light on the shared
    cores as a consumer can be), noting when each SOS press reaches it."""
    from homecare.jetstream import TELEMETRY_STREAM

    sos: dict[str, float] = {}
    counted = [0, 0.0, 0.0]  # messages, first and last arrival

    async def consume() -> None:
        import nats

        nc = await nats.connect(nats_url, name=BARE_ID)
        sub = await nc.jetstream().pull_subscribe_bind(BARE_ID, TELEMETRY_STREAM)
        ready.set()
        while not stop.is_set():
            try:
                msgs = await sub.fetch(5000, timeout=0.05)
            except TimeoutError:
                continue
            now = time.time()
            counted[0] += len(msgs)
            counted[1] = counted[1] or now
            counted[2] = now
            for msg in msgs:
                if msg.subject.endswith(".sos"):
                    sos.setdefault(msg.subject.split(".")[3], now)
            if msgs:  # its consumer acknowledges cumulatively: the last covers the batch
                await nc.publish(msgs[-1].reply, b"+ACK")
        await nc.close()

    asyncio.run(consume())
    result.put({"messages": counted[0], "seconds": counted[2] - counted[1], "sos": sos})


class TimedFleet(Fleet):
    """A fleet that notes when it handed each SOS press and frame of watched elders to
    their link (``time.time()``), with the payload, for the latency figures. Its
    ``spread`` (see :class:`Fleet`) sets the phase: devices in their own phases, or
    every device publishing in the same instant (0)."""

    def __init__(self, *args: Any, watch: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch = watch
        self.sent: list[tuple[str, Stream, float, bytes]] = []

    def publish(self, topic: Topic, payload: bytes, *, retain: bool = False) -> None:
        super().publish(topic, payload, retain=retain)
        if topic.elder in self.watch and topic.stream in (Stream.SOS, Stream.FRAME):
            self.sent.append((topic.elder, topic.stream, time.time(), payload))


@dataclass
class Plan:
    """What was injected in one phase, and when (simulated time)."""

    mode: str
    sos: dict[str, float] = field(default_factory=dict)  # elder → press
    falls: dict[str, float] = field(default_factory=dict)  # elder → start of the fall motion
    wall: tuple[float, float] = (0.0, 0.0)
    published: int = 0


def inject_events(
    sim: Simulation,
    plan: Plan,
    elders: list[int],
    *,
    t0: float,
    seconds: int,
    warm_s: int,
    rng: np.random.Generator,
) -> None:
    """SOS presses for half of ``elders`` and falls (with a long lie) for the other half,
    spread over the phase; falls early enough to be confirmed before it ends."""
    half = len(elders) // 2
    sos_at = np.sort(rng.uniform(warm_s, max(warm_s + 1, seconds - 5), half))
    fall_at = np.sort(rng.uniform(warm_s, max(warm_s + 1, seconds - 26), len(elders) - half))
    for k, i in enumerate(elders[:half]):
        sim.inject(i, t0 + float(sos_at[k]), SosPress())
        plan.sos[sim.elders[i].elder] = t0 + float(sos_at[k])
    for k, i in enumerate(elders[half:]):
        _, xyz, _ = motion(FALLS[k % len(FALLS)], rng, rate=sim.config.rate)
        accel = to_device_frame(xyz.astype(np.float64)).astype(np.float32)
        at = t0 + float(np.floor(fall_at[k]))
        sim.inject(i, at, Motion(accel, then=Posture.PRONE, hold_s=120.0))
        plan.falls[sim.elders[i].elder] = at


async def _live(
    sim: Simulation,
    url: str,
    *,
    seconds: int,
    events: int,
    warm_s: int,
    gateways: int,
    spread: int,
    seed: int,
    seek_s: float = 0.0,
) -> tuple[TimedFleet, list[Plan], float]:
    """Publish in real time, one phase per mode (burst, then spread), each ``seconds``
    long with ``events`` SOS presses and ``events`` falls injected. The simulation is
    first moved to the present (a seek takes about ``seek_s``)."""
    rng = np.random.default_rng(seed + 2)
    modes = ["burst", "spread"] if spread else ["burst"]
    picked = rng.choice(len(sim.elders), 2 * events * len(modes), replace=False).tolist()
    watch = {sim.elders[i].elder for i in picked}
    prefix = f"bd{time.time_ns()}"
    async with TimedFleet(
        sim, url, gateways=gateways, client_prefix=prefix, offline_on_exit=False, watch=watch
    ) as fleet:
        # start at the present: the wall-clock detectors compare timestamps with now
        if time.time() - sim.clock > 1.0:
            sim.step(float(math.floor(time.time() + 0.9 * seek_s)) - 1.0)
        await fleet.drain(120)  # the devices' "online" messages, before the phases count
        lag = time.time() - sim.clock
        plans = []
        for k, mode in enumerate(modes):
            plan = Plan(mode)
            chosen = picked[2 * events * k : 2 * events * (k + 1)]
            inject_events(sim, plan, chosen, t0=sim.clock, seconds=seconds, warm_s=warm_s, rng=rng)
            fleet.spread = spread if mode == "spread" else 0
            acked = fleet.stats.acked
            began = time.time()
            await fleet.run(seconds=seconds, speed=1.0)
            await fleet.drain(120)
            plan.wall = (began, time.time())
            plan.published = fleet.stats.acked - acked
            plans.append(plan)
            warm_s = 5  # the service is warm after the first phase
    return fleet, plans, lag


def fall_frames(
    sent: list[tuple[str, Stream, float, bytes]], elder: str
) -> tuple[float, float] | None:
    """Replay an elder's published frames through a FallDetector: the publish time and
    timestamp of the frame on which the fall is confirmed (the one the service acts on)."""
    from detectors.fall import FallDetector

    det = FallDetector()
    for who, stream, at, payload in sent:
        if who != elder or stream is not Stream.FRAME:
            continue
        frame = orjson.loads(payload)
        accel = np.asarray(frame["accel"], np.float32)[None]
        batch = AccelBatch(
            np.array([0]), np.array([float(frame["ts"])]), accel, float(frame["rate"])
        )
        if det.update(batch):
            return at, float(frame["ts"])
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "median": round(statistics.median(ms), 1),
        "p99": round(percentile(ms, 0.99), 1),
        "max": round(max(ms), 1),
        "min": round(min(ms), 1),
    }


def _phase_report(
    plan: Plan,
    fleet: TimedFleet,
    first: dict[tuple[str, str], float],
    batches: list[tuple[float, int, float, float, float]],
    bare: dict[str, float],
) -> dict[str, Any]:
    """Latencies of one phase, the bare consumer's, and how the service spent its batches."""
    sos_ms, fall_ms, bare_ms, missed = [], [], [], []
    pressed = {who: at for who, s, at, _ in fleet.sent if s is Stream.SOS}
    for elder in plan.sos:
        if elder in pressed and elder in bare:
            bare_ms.append((bare[elder] - pressed[elder]) * 1e3)
        got = first.get((elder, "sos"))
        if elder not in pressed or got is None:
            missed.append(f"{elder}:sos")
            continue
        sos_ms.append((got - pressed[elder]) * 1e3)
    for elder in plan.falls:
        done = fall_frames(fleet.sent, elder)
        got = first.get((elder, "fall"))
        if done is None or got is None:
            missed.append(f"{elder}:fall")
            continue
        fall_ms.append((got - done[0]) * 1e3)
    wall = plan.wall[1] - plan.wall[0]
    mine = [b for b in batches if plan.wall[0] <= b[0] <= plan.wall[1]]
    out: dict[str, Any] = {
        "mode": plan.mode,
        "published": plan.published,
        "publish_rate": round(plan.published / wall),
        "missed": missed,
    }
    for name, ms in (("sos", sos_ms), ("fall", fall_ms), ("all", sos_ms + fall_ms),
                     ("bare_sos", bare_ms)):  # fmt: skip
        if ms:
            out[f"{name}_ms"] = _summary(ms)
    if sos_ms and bare_ms:
        ratio = percentile(sos_ms, 0.99) / max(percentile(bare_ms, 0.99), 0.1)
        out["sos_p99_ratio_to_bare"] = round(ratio, 2)
    if mine:
        handle = [b[2] * 1e3 for b in mine]
        out["service_batches"] = {
            "n": len(mine),
            "messages_median": statistics.median(b[1] for b in mine),
            "messages_max": max(b[1] for b in mine),
            "handle_ms_median": round(statistics.median(handle), 1),
            "handle_ms_p99": round(percentile(handle, 0.99), 1),
            "handle_us_per_message": round(sum(handle) * 1e3 / sum(b[1] for b in mine), 1),
            "share_batcher": round(sum(b[3] for b in mine) / sum(b[2] for b in mine), 3),
            "share_detectors": round(sum(b[4] for b in mine) / sum(b[2] for b in mine), 3),
            "busy": round(sum(b[2] for b in mine) / wall, 3),
        }
    return out


def latency(
    *,
    elders: int,
    seconds: int,
    events: int,
    gateways: int,
    spread: int,
    seed: int,
    batch_interval_s: float = DetectSettings().batch_interval_s,
    save_every_s: float = DetectSettings().save_every_s,
    partitions: int = NatsSettings().partitions,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Phase 3 (see module doc)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    from broker.provision import provision
    from harness.servers import LocalInflux, LocalNats
    from homecare.influx import InfluxClient
    from homecare.jetstream import TELEMETRY_STREAM
    from homecare.runtime import stop_process
    from homecare.settings import InfluxSettings

    ctx = mp.get_context("spawn")
    warm_s = min(15, max(5, seconds // 5))
    with (
        tempfile.TemporaryDirectory(prefix="homecare-bench-detect-") as tmp,
        LocalNats(Path(tmp) / "nats") as server,
        LocalInflux(Path(tmp) / "influxd") as influx,
        ExitStack() as children,
    ):
        with InfluxClient(InfluxSettings(url=influx.url, database="homecare")) as db:
            db.create_database()
        # TELEMETRY, detect's consumer, ALERTS and the state bucket before any device connects
        done = provision(server.url, mqtt_url=server.mqtt_url, consumers=(),
                         partitions=partitions)  # fmt: skip
        if not done.source.ok:
            raise RuntimeError(f"provisioning failed: {done.source.detail}")

        async def bare_consumer() -> None:
            import nats

            nc = await nats.connect(server.url)
            await nc.jetstream().add_consumer(TELEMETRY_STREAM, ConsumerConfig(
                durable_name=BARE_ID, ack_policy=AckPolicy.ALL, max_ack_pending=100_000,
                ack_wait=30.0))  # fmt: skip
            await nc.close()

        asyncio.run(bare_consumer())
        ready, stop, alerts_q = ctx.Event(), ctx.Event(), ctx.Queue()
        listener = ctx.Process(target=_listen_main, args=(server.url, ready, stop, alerts_q))
        children.callback(stop_process, listener)  # first: an interrupt in start() stops it
        listener.start()
        bare_ready, bare_q = ctx.Event(), ctx.Queue()
        bare = ctx.Process(target=_bare_main, args=(server.url, bare_ready, stop, bare_q))
        children.callback(stop_process, bare)
        bare.start()
        started, stats_q = ctx.Event(), ctx.Queue()
        state = Path(tmp) / "state"
        state.mkdir()
        detect = ctx.Process(
            target=_detect_main,
            args=(
                server.url, influx.url, str(state), started, stats_q, batch_interval_s,
                save_every_s, partitions,
            ),
        )
        children.callback(stop_process, detect)
        detect.start()
        if not (ready.wait(60) and bare_ready.wait(60) and started.wait(120)):
            raise RuntimeError("the alert listener, the bare consumer or detect did not start")
        time.sleep(2.0)  # detect binds its consumer after its process is up
        phases = "burst then spread" if spread else "burst"
        log(
            f"latency: {elders} elders in real time, {phases}, {seconds} s each with {events} "
            f"SOS presses and {events} falls ..."
        )
        made = time.perf_counter()
        start = float(math.floor(time.time()))
        sim = Simulation(
            SimConfig(elders=elders, seed=seed, site="bench", start=start,
                      utc_offset_s=daytime(start))
        )  # fmt: skip
        seek_s = time.perf_counter() - made
        proc = psutil.Process(detect.pid)
        procs = {"detect": proc, "publisher": psutil.Process(),
                 "bare_consumer": psutil.Process(bare.pid)}  # fmt: skip
        if server.proc is not None:
            procs["nats-server"] = psutil.Process(server.proc.pid)
        cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        machine0 = psutil.cpu_times()
        began = time.time()
        fleet, plans, lag = asyncio.run(
            _live(
                sim,
                server.mqtt_url,
                seconds=seconds,
                events=events,
                warm_s=warm_s,
                gateways=gateways,
                spread=spread,
                seed=seed,
                seek_s=seek_s,
            )
        )
        wall = time.time() - began
        cpus = {k: (sum(p.cpu_times()[:2]) - cpu0[k]) / wall for k, p in procs.items()}
        machine1 = psutil.cpu_times()
        idle = machine1.idle + machine1.iowait - machine0.idle - machine0.iowait
        total = sum(machine1[:8]) - sum(machine0[:8])  # user … steal, without guest time
        cpus["machine_busy"] = (total - idle) / wall
        cpu = cpus["detect"] * wall
        rss = proc.memory_info().rss
        time.sleep(3.0)  # the last alerts in flight
        detect.terminate()
        detect_out = stats_q.get(timeout=60)
        detect.join(30)
        stop.set()
        arrivals: list[dict[str, Any]] = alerts_q.get(timeout=60)
        listener.join(30)
        bare_out: dict[str, Any] = bare_q.get(timeout=60)
        bare.join(30)

    first: dict[tuple[str, str], float] = {}
    for a in arrivals:
        if a["state"] == "open":
            first.setdefault((a["elder"], a["kind"]), a["at"])
    injected = {e for p in plans for e in (*p.sos, *p.falls)}
    report: dict[str, Any] = {
        "elders": elders,
        "seconds_per_phase": seconds,
        "gateways": gateways,
        "spread_slices": spread,
        "ts_lag_s": round(lag, 2),
        "detect_cpu": round(cpu / wall, 2),
        "cpu_cores_used": {k: round(v, 2) for k, v in cpus.items()},
        "detect_rss_mb": round(rss / 1e6),
        "detect_stats": detect_out["stats"],
        "detect_gc": detect_out["gc"],
        "alerts_other_elders": dict(
            Counter(a["kind"] for a in arrivals if a["elder"] not in injected)
        ),
        "detect_last_save": detect_out["last_save"],
        "bare_consumer": {
            "messages": bare_out["messages"],
            "messages_per_s": round(bare_out["messages"] / max(bare_out["seconds"], 1e-9)),
        },
        "phases": [
            _phase_report(p, fleet, first, detect_out["batches"], bare_out["sos"]) for p in plans
        ],
    }
    for ph in report["phases"]:
        if "all_ms" not in ph:
            log(f"  {ph['mode']}: no alerts matched; missed {ph['missed']}")
            continue
        a, b = ph["all_ms"], ph.get("service_batches", {})
        ph["meets_p99_target"] = a["p99"] <= LATENCY_P99_TARGET_MS
        log(
            f"  {PHASE_NAMES[ph['mode']]}: {a['n']} alerts, median {a['median']:.0f} ms, p99 "
            f"{a['p99']:.0f} ms (target ≤ {LATENCY_P99_TARGET_MS:.0f}: "
            f"{'met' if ph['meets_p99_target'] else 'not met'})"
            f" ({_kind_summary(ph, 'sos', 'SOS')}, {_kind_summary(ph, 'fall', 'falls')}; missed "
            f"{len(ph['missed'])}); {ph['publish_rate']:,} messages/s, service batches of median "
            f"{b.get('messages_median')} messages, {b.get('handle_us_per_message')} µs each"
        )
        bare_p99 = ph.get("bare_sos_ms", {}).get("p99")
        if bare_p99 is not None:
            log(f"    ceiling: the bare consumer saw the SOS presses at p99 {bare_p99:.0f} ms; "
                f"detect's SOS alert p99 / the bare consumer's: "
                f"{ph.get('sos_p99_ratio_to_bare', 'n/a')}")  # fmt: skip
    saved = detect_out["last_save"]
    log(f"  bare consumer: {report['bare_consumer']['messages']:,} messages, "
        f"{report['bare_consumer']['messages_per_s']:,}/s; detect's last state save "
        f"{saved.get('bytes', 0) / 1e6:.1f} MB ({saved.get('partitions', 0)} partitions) in "
        f"{saved.get('seconds', 'n/a')} s")  # fmt: skip
    log(
        f"  detect process: {cpu / wall:.0%} of a core, RSS {rss / 1e6:.0f} MB; cores busy: "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpus.items())
        + f" of {os.cpu_count()}"
    )
    return report


def run(
    *,
    elders: int = 10000,
    seconds: int = 60,
    latency_elders: int = 5000,
    latency_seconds: int = 60,
    events: int = 24,
    gateways: int = 4,
    spread: int = 20,
    repeat: int = 3,
    naive_elders: int = 200,
    hst_elders: int = 20,
    seed: int = 0,
    save_every_s: float = DetectSettings().save_every_s,
    partitions: int = NatsSettings().partitions,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """All three phases; the figures (also printed through ``log``)."""
    report: dict[str, Any] = {"cores": os.cpu_count()}
    t = time.perf_counter()
    log(f"building {seconds} + 5 s of traffic for {elders} elders ...")
    work = build_workload(elders, seconds, seed=seed)
    log(f"  built in {time.perf_counter() - t:.1f} s")
    report["throughput"], best = throughput(work, repeat=repeat, log=log)
    report["peers"] = peers(
        work,
        best,
        report["throughput"]["samples_per_s"],
        naive_elders=naive_elders,
        hst_elders=hst_elders,
        seed=seed,
        log=log,
    )
    report["throughput"]["rows_shuffled"] = shuffled_rows(work, repeat=repeat, seed=seed, log=log)
    del work, best
    if latency_seconds > 0:
        report["latency"] = latency(
            elders=latency_elders,
            seconds=latency_seconds,
            events=events,
            gateways=gateways,
            spread=spread,
            seed=seed,
            save_every_s=save_every_s,
            partitions=partitions,
            log=log,
        )
    return report


def _kind_summary(phase: dict[str, Any], kind: str, label: str) -> str:
    """``SOS median 40 / p99 80``, or ``no SOS matched`` (a short phase may hold no fall)."""
    ms = phase.get(f"{kind}_ms")
    if ms is None:
        return f"no {label} matched"
    return f"{label} median {ms['median']:.0f} / p99 {ms['p99']:.0f}"

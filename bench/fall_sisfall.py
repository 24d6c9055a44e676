"""Benchmark of the fall detector: throughput on one core, and accuracy on SisFall.

Throughput: 10,000 wearables at 50 Hz, one 1-second frame each per call, built from
synthetic motions (``device_sim.motions``): most wearers resting, a quarter walking, a few
on stairs, sitting down hard, jumping or falling. Accuracy: ``homecare evaluate`` on the
SisFall development split (Sucerquia, López, Vargas-Bonilla, Sensors 17(1):198, 2017), if
the folder is given, plain, rotated and at 20 and 100 Hz.

    .venv/bin/python -m bench.fall_sisfall --rows 10000 --seconds 60 \\
        --sisfall ../shared/datasets/sisfall-dev
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import AccelBatch
from detectors.fall import FallDetector
from device_sim.motions import motion

MIX = {
    "lie_down": 0.35, "sit_hard": 0.25, "walk": 0.25, "stairs_down": 0.05, "bend": 0.04,
    "jump": 0.02, "stumble": 0.02, "fall_forward": 0.01, "fall_sideways": 0.01,
}  # fmt: skip


def population(rows: int, seconds: int, rate: int, seed: int = 0) -> np.ndarray:
    """rows × (seconds·rate) × 3 samples: each row a random motion at a random offset."""
    rng = np.random.default_rng(seed)
    pool: list[np.ndarray] = []
    names = list(MIX)
    for name in names:
        for _ in range(8):
            _, xyz, _ = motion(name, rng, rate=rate, orientation="random")
            pool.append(np.tile(xyz, (seconds // (len(xyz) // rate) + 2, 1)))
    weights = np.repeat([MIX[n] / 8 for n in names], 8)
    pick = rng.choice(len(pool), size=rows, p=weights / weights.sum())
    n = seconds * rate
    out = np.empty((rows, n, 3), np.float32)
    for i, p in enumerate(pick):
        start = int(rng.integers(0, len(pool[p]) - n))
        out[i] = pool[p][start : start + n]
    return out


def throughput(rows: int, seconds: int, rate: int = 50) -> dict[str, Any]:
    data = population(rows, seconds, rate)
    det = FallDetector()
    ids = np.arange(rows)
    frames = [np.ascontiguousarray(data[:, k * rate : (k + 1) * rate]) for k in range(seconds)]
    for k in range(3):  # warm-up: fill the history
        det.update(AccelBatch(ids, np.full(rows, float(k)), frames[k], float(rate)))
    found = 0
    start = time.perf_counter()
    for k in range(3, seconds):
        found += len(det.update(AccelBatch(ids, np.full(rows, float(k)), frames[k], float(rate))))
    elapsed = time.perf_counter() - start
    samples = rows * rate * (seconds - 3)
    return {
        "rows": rows,
        "rate_hz": rate,
        "samples_per_s": round(samples / elapsed),
        "ms_per_batch": round(elapsed / (seconds - 3) * 1e3, 2),
        "state_bytes_per_row": det.state_bytes() // rows,
        "detections": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--sisfall", type=Path, default=None)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(json.dumps({"throughput": throughput(args.rows, args.seconds)}))
    if args.sisfall:
        from detectors.evaluate_replay import evaluate

        for opts in ({}, {"rotate": 1}, {"resample_hz": 20.0}, {"resample_hz": 100.0}):
            report = evaluate(args.sisfall, args.sisfall / "labels.csv", hold_end_s=30, **opts)
            keys = ("sensitivity", "specificity", "options")
            print(json.dumps({k: report[k] for k in keys}))


if __name__ == "__main__":
    main()

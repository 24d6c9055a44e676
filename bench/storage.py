"""``homecare bench storage``: InfluxDB storage per elder-year, raw data and rollups.

A simulated month of full-rate traffic (the simulator's own device payloads: a 50 Hz
wearable frame every second, a bed reading every 10 s, doors, statuses) goes through
ingest's :class:`~ingest.points.Converter` into a real influxd with the retention
policies installed (:mod:`ingest.rollups`); the rollups are computed over it; once
influxd has compacted, the TSM files of each policy are measured on disk with the
series and points they hold. Per elder and year: raw data is held for its retention
only (30 days by default: the month measured), rollups for the whole year (the month's
rollups × 365 / days).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.servers import LocalInflux, compacted_size
from homecare.edge import RawMessage
from homecare.influx import InfluxClient
from homecare.query import Select, every_measurement, show_series
from homecare.schema import HISTORY, RAW, seconds
from homecare.settings import ContractSettings, InfluxSettings, RetentionSettings
from ingest import rollups
from ingest.points import Converter

STEP_S = 600.0
"""Simulated seconds converted and written as one batch."""


def _points(db: InfluxClient, rp: str) -> dict[str, int]:
    """Points per measurement of a policy (a point counts once, whatever its fields)."""
    out = {}
    for s in db.query(str(Select(("count(*)",), every_measurement(rp)))):
        counts = [v for v in s["values"][0][1:] if v is not None]
        out[s["name"]] = max(counts, default=0)
    return out


def _series(db: InfluxClient, rp: str) -> int:
    series = db.query(show_series(rp))
    return sum(len(s.get("values") or []) for s in series)


def _tsm_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.tsm"))


def _all_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(
    *,
    elders: int = 1,
    days: float = 30.0,
    seed: int = 0,
    rate: int = 50,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Simulate, store, roll up and measure; return the figures (bytes, per elder-year)."""
    from device_sim.homes import SimConfig, Simulation  # heavy: only when the bench runs

    retention = RetentionSettings()
    keep_s = seconds(retention.raw)
    if keep_s and days * 86400 > keep_s:
        raise ValueError(f"--days {days} is longer than the raw retention {retention.raw}")
    end = float(math.floor(time.time()) - 60)
    start = end - round(days * 86400)
    sim = Simulation(SimConfig(elders=elders, seed=seed, start=start, rate=rate))
    converter = Converter(ContractSettings())
    with tempfile.TemporaryDirectory(prefix="homecare-storage-") as tmp:
        server = LocalInflux(Path(tmp) / "influxd").start()
        try:
            with InfluxClient(InfluxSettings(url=server.url, database="homecare")) as db:
                rollups.install(db, retention)
                stored: Counter[str] = Counter()
                line_bytes = 0
                t, started, next_log = start, time.monotonic(), start + 86400
                while t < end:
                    dt = min(STEP_S, end - t)
                    batch = [
                        RawMessage(str(topic), payload, t + dt)
                        for topic, payload in sim.step(t, dt)
                    ]
                    points = converter.convert(batch, now=t + dt)
                    if points.dead:
                        raise RuntimeError(f"the simulation broke the contract: {points.dead}")
                    db.write(points.lines)
                    stored.update(points.stored)
                    line_bytes += sum(len(x) + 1 for x in points.lines)
                    t += dt
                    if t >= next_log:
                        next_log += 86400
                        log(
                            f"day {round((t - start) / 86400)}/{days:g}: "
                            f"{sum(stored.values()):,} messages, "
                            f"{time.monotonic() - started:.0f} s"
                        )
                rolled = rollups.run(db, retention, start=start, end=end)
                log("waiting for influxd to compact ...")
                data = server.root / "data" / "homecare"
                compacted_size(data)
                raw_points, history_points = _points(db, RAW), _points(db, HISTORY)
                series = {rp: _series(db, rp) for rp in (RAW, HISTORY)}
        finally:
            server.stop()
        raw_dir, history_dir = data / RAW, data / HISTORY
        figures = {
            "raw_tsm": _tsm_bytes(raw_dir),
            "raw_all_files": _all_bytes(raw_dir),
            "history_tsm": _tsm_bytes(history_dir),
            "history_all_files": _all_bytes(history_dir),
        }
    per_elder_raw = figures["raw_all_files"] / elders
    per_elder_history_year = figures["history_all_files"] / elders * 365 / days
    return {
        "elders": elders,
        "days": days,
        "rate_hz": rate,
        "messages": {str(k): v for k, v in sorted(stored.items())},
        "line_protocol_bytes": line_bytes,
        "raw_points": raw_points,
        "history_points": history_points,
        "rollup_statements": rolled.statements,
        "series": series,
        "bytes_on_disk": figures,
        "per_elder": {
            "raw_bytes_per_day": round(per_elder_raw / days),
            "raw_bytes_held": round(per_elder_raw * keep_s / 86400 / days) if keep_s else None,
            "rollup_bytes_per_year": round(per_elder_history_year),
            "total_bytes_per_year": round(
                per_elder_raw * (keep_s / 86400 / days if keep_s else 365 / days)
                + per_elder_history_year
            ),
        },
    }

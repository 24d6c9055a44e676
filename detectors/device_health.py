"""Device health: offline, battery low, wearable not worn (all ``info``).

Rows here are **devices** (``ReadingBatch.devices``, from a device roster; the elder row
when a batch has none); every detection's ``row`` is the device row and its evidence
names the elder row (``elder``).

* **offline** — the device's last will (``availability`` ``offline``) at once, or
  silence: no message of any stream for ``missed`` × its cadence, at least
  ``offline_min_s``. The cadence is the shortest period of what it sends apart from a
  wearable's frames (they stop while it charges): ``bed_period_s`` for a bed sensor,
  else the ``interval_s`` of its status reports (300 s by default: a wearable or door
  sensor is offline after 15 min of silence). Re-armed by the next message.
* **battery_low** — from status reports and frames: below ``battery_low`` for
  ``battery_samples`` readings in a row; re-armed above ``battery_ok`` (a band, so a
  battery at the threshold warns once, not on every reading).
* **placement_unknown** — a wearable's status report does not say where it is worn
  (wrist, chest or waist): the fall detector then decides the most careful way, and the
  device desk should set it. Once per device; re-armed by a report that says.
* **not_worn** — a wearable streams (a frame within ``streaming_s``: one on its charger
  sends none), but shows neither movement (``mag_std`` at least
  ``worn_g``, above sensor noise: a body breathes) nor a heart rate for the care level's
  ``not_worn_s``, outside the sleep window, while doors or the bed show the elder up: a
  door event or getting out of bed after it was last worn, within ``up_recent_s``, or the
  bed sensor reporting its bed empty now (within ``bed_fresh_s``). An elder sitting still
  for hours opens no door; an empty bed in the daytime says as much.

Assumptions: readings in time order per device; ``tick`` every few seconds.

Warm-up: none; a device is watched from its first message. Cost per 1 s wearable batch
of 10,000 rows: ~0.2 ms (ten scatters; the battery debouncer looks only at low
batteries). State: ~80 bytes per device and 25 per elder.

>>> det = DeviceHealthDetector()
>>> frame = {"mag_std": np.array([0.0, 0.3]), "hr": np.array([np.nan, 72.0]),
...          "battery": np.array([80.0, 80.0])}
>>> det.update(ReadingBatch("wearable", np.array([0, 1]), np.array([0.0, 0.0]), frame))
[]
>>> det.tick(900.0)
[]
>>> [(d.kind, d.row, d.evidence["silent_s"]) for d in det.tick(901.0)]
[('offline', 0, 901.0), ('offline', 1, 901.0)]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import (
    BatchStream,
    Detection,
    Hysteresis,
    ReadingBatch,
    Rows,
    Severity,
    grow,
)
from detectors.care import Care
from homecare.schema import Wearable
from homecare.thresholds import DeviceHealthSettings

__all__ = ["DeviceHealthDetector", "DeviceHealthSettings"]


class DeviceHealthDetector:
    """Offline devices, low batteries and wearables not worn (see module doc)."""

    kind: ClassVar[str] = "device_health"
    streams: ClassVar[frozenset[str]] = frozenset(
        {
            BatchStream.WEARABLE,
            BatchStream.BED,
            BatchStream.DOOR,
            BatchStream.BUTTON,
            BatchStream.STATUS,
            BatchStream.AVAILABILITY,
        }
    )
    _DEVICE: ClassVar[dict[str, float | int | bool]] = {
        "elder": -1, "last_seen": np.nan, "period": np.inf, "last_will": False,
        "offline": False, "wearable": False, "last_worn": np.nan, "unworn": False,
        "last_frame": np.nan, "unplaced": False,
    }  # fmt: skip
    _ELDER: ClassVar[dict[str, float | int | bool]] = {
        "in_bed": False, "last_up": -np.inf, "bed_ts": -np.inf,
    }  # fmt: skip

    def __init__(
        self, settings: DeviceHealthSettings | None = None, care: Care | None = None
    ) -> None:
        self.settings = s = settings or DeviceHealthSettings()
        self.care = care or Care()
        self.elder = np.zeros(0, np.int32)  # the device's elder row
        self.last_seen = np.zeros(0)  # last message of any stream
        self.period = np.zeros(0, np.float32)  # shortest period of what it sends
        self.last_will = np.zeros(0, bool)  # said offline, nothing since
        self.offline = np.zeros(0, bool)  # reported offline, not re-armed
        self.wearable = np.zeros(0, bool)  # sends frames
        self.last_worn = np.zeros(0)  # last frame with movement or a heart rate
        self.unworn = np.zeros(0, bool)  # reported not worn, not re-armed
        self.last_frame = np.zeros(0)  # last wearable frame
        self.unplaced = np.zeros(0, bool)  # reported placement unknown, not re-armed
        self.battery = Hysteresis(1, s.battery_samples)
        self.in_bed = np.zeros(0, bool)  # per elder: the bed's last presence
        self.last_up = np.zeros(0)  # per elder: last door event or getting out of bed
        self.bed_ts = np.zeros(0)  # per elder: the bed's last reading
        self.n = 0  # devices seen
        self.n_elders = 0

    def _see(self, devices: Rows, elders: Rows) -> None:
        top = int(devices.max()) + 1
        if top > self.n:
            for name, fill in self._DEVICE.items():
                setattr(self, name, grow(getattr(self, name), top, fill))
            self.battery.grow(top)
            self.n = top
        top = int(elders.max()) + 1
        if top > self.n_elders:
            for name, fill in self._ELDER.items():
                setattr(self, name, grow(getattr(self, name), top, fill))
            self.care.ensure(top)
            self.n_elders = top

    def state_bytes(self) -> int:
        names = [*self._DEVICE, *self._ELDER]
        return int(sum(getattr(self, n).nbytes for n in names)) + self.battery.nbytes()

    def update(self, batch: ReadingBatch) -> list[Detection]:
        if len(batch) == 0 or batch.stream not in self.streams:
            return []
        s = self.settings
        dev, elders, ts = batch.keys(), batch.rows, batch.ts
        self._see(dev, elders)
        self.elder[dev] = elders
        found: list[Detection] = []
        if batch.stream == BatchStream.AVAILABILITY:
            online = batch.column("online") > 0.5
            self.last_will[dev] = ~online
            np.fmax.at(self.last_seen, dev[online], ts[online])
            self.offline[dev[online]] = False
            gone = np.flatnonzero(~online & ~self.offline[dev])
            gone = gone[np.unique(dev[gone], return_index=True)[1]]  # once per device
            self.offline[dev[gone]] = True
            return [
                self._found("offline", int(dev[i]), float(ts[i]),
                            {"last_will": 1.0, "silent_s": 0.0})
                for i in gone
            ]  # fmt: skip
        np.fmax.at(self.last_seen, dev, ts)
        self.last_will[dev] = False
        self.offline[dev] = False
        match batch.stream:
            case BatchStream.WEARABLE:
                # Frames are no heartbeat: a wearable on its charger stops them but stays
                # online through its status reports, so its cadence is theirs.
                self.wearable[dev] = True
                np.fmax.at(self.last_frame, dev, ts)
                worn = (batch.column(Wearable.mag_std) >= s.worn_g) | (batch.column("hr") > 0)
                np.fmax.at(self.last_worn, dev[worn], ts[worn])
                self.unworn[dev[worn]] = False
                # a wearable that never showed a sign starts its clock at its first frame
                first = np.isnan(self.last_worn[dev])
                self.last_worn[dev[first]] = ts[first]
            case BatchStream.BED:
                self.period[dev] = np.minimum(self.period[dev], s.bed_period_s)
                presence = batch.column("presence") > 0.5
                got_up = ~presence & self.in_bed[elders]
                np.maximum.at(self.last_up, elders[got_up], ts[got_up])
                self.in_bed[elders] = presence
                np.maximum.at(self.bed_ts, elders, ts)
            case BatchStream.DOOR:
                np.maximum.at(self.last_up, elders, ts)
            case BatchStream.STATUS:
                declared = batch.column("interval_s")
                declared = np.where(np.isnan(declared), s.status_period_s, declared)
                self.period[dev] = np.minimum(self.period[dev], declared)
                if "placement" in batch.values:
                    found += self._placement(dev, ts, batch.column("placement"))
        if "battery" in batch.values:
            found += self._battery(dev, ts, batch.column("battery"))
        return found

    def _battery(self, dev: Rows, ts: npt.NDArray[np.float64], level: npt.NDArray[np.float64]
                 ) -> list[Detection]:  # fmt: skip
        s = self.settings
        known = ~np.isnan(level)
        low = (level < s.battery_low)[:, None]
        if not low.any() and not self.battery.busy[dev[known]].any():
            return []
        sel = np.flatnonzero(known)
        idx, new = self.battery.step(dev[sel], ts[sel], low[sel], (level > s.battery_ok)[sel, None])
        return [
            self._found("battery_low", int(dev[sel[i]]), float(ts[sel[i]]),
                        {"battery": float(level[sel[i]])})
            for i in idx[new[:, 0]]
        ]  # fmt: skip

    def _placement(
        self, dev: Rows, ts: npt.NDArray[np.float64], code: npt.NDArray[np.float64]
    ) -> list[Detection]:
        """Wearables (code not NaN) whose placement is unknown (code 0), once each."""
        wearable = ~np.isnan(code)
        self.unplaced[dev[wearable & (code > 0)]] = False
        new = np.flatnonzero(wearable & (code == 0) & ~self.unplaced[dev])
        new = new[np.unique(dev[new], return_index=True)[1]]  # once per device
        self.unplaced[dev[new]] = True
        return [self._found("placement_unknown", int(dev[i]), float(ts[i]), {"placement": 0.0})
                for i in new]  # fmt: skip

    def _found(self, kind: str, device: int, ts: float, evidence: dict[str, float]) -> Detection:
        return Detection(kind, int(self.elder[device]), ts, Severity.INFO, evidence, device)

    def tick(self, now: float) -> list[Detection]:
        if self.n == 0:
            return []
        s, n = self.settings, self.n
        found: list[Detection] = []
        silent = now - self.last_seen[:n]
        period = self.period[:n]
        period = np.where(np.isinf(period), s.status_period_s, period)  # nothing declared
        limit = np.maximum(s.offline_min_s, s.missed * period)
        gone = np.flatnonzero(~self.offline[:n] & (silent > limit))  # NaN (never) compares False
        self.offline[gone] = True
        found += [
            self._found("offline", int(d), now,
                        {"last_will": 0.0, "silent_s": round(float(silent[d]), 1),
                         "limit_s": float(limit[d])})
            for d in gone
        ]  # fmt: skip
        # not worn: a streaming wearable, no sign of a body, the elder up, daytime
        streaming = now - self.last_frame[:n] <= s.streaming_s  # NaN (never) compares False
        cand = np.flatnonzero(streaming & ~self.unworn[:n] & ~self.offline[:n])
        if len(cand):
            elder = self.elder[cand].astype(np.int64)
            bare = now - self.last_worn[cand]
            up = self.last_up[elder]
            empty_bed = ~self.in_bed[elder] & (now - self.bed_ts[elder] <= s.bed_fresh_s)
            hit = (bare > self.care.limit("not_worn_s", elder)) & (
                ((up > self.last_worn[cand]) & (now - up <= s.up_recent_s)) | empty_bed
            )
            if hit.any():
                hit[hit] = ~self.care.in_sleep_window(elder[hit], now)
            self.unworn[cand[hit]] = True
            found += [
                self._found("not_worn", int(d), now, {"unworn_s": round(float(b), 1)})
                for d, b in zip(cand[hit], bare[hit], strict=True)
            ]
        found.sort(key=lambda d: (d.ts, d.row))
        return found

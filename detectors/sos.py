"""SOS: the emergency button opens a critical detection at once; so does a fall the
wearable detected itself (``button == fall``, detection kind ``fall``, with the device's
``device_confidence``), which, as every ``fall``, the wearer can still cancel with "I'm
OK" in the grace window. A device fall the wearer already cancelled on the device
(``cancelled``) raises nothing (ingest stores it).

A ``button`` batch entry with ``button == sos`` is a press. A device publishes each press
once at QoS 1, so the broker may deliver it again, and a device that was offline
republishes its buffer: a press whose device, kind and ``seq`` equal one seen within
``dedupe_s`` is the same press and is dropped. The window (rather than "seq must grow")
keeps a device that restarts its counter after a reset from being silenced.

Assumptions: ``devices`` in the batch name the button's device (else the elder row is
used as the device); entries of one device arrive roughly in time order.

Warm-up: none. Cost: per batch, a comparison of each press with the ``memory`` presses
remembered for its device; ``memory`` × 16 bytes per device.

>>> det = SosDetector()
>>> press = ReadingBatch("button", np.array([3, 3]), np.array([10.0, 10.0]),
...                      {"button": np.array([0, 0]), "seq": np.array([7, 7])})
>>> [(d.kind, d.row, d.severity.value, d.evidence["seq"]) for d in det.update(press)]
[('sos', 3, 'critical', 7.0)]
>>> det.update(press)  # delivered again
[]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from detectors.base import BUTTONS, BatchStream, Detection, ReadingBatch, RowState, Severity, waves
from homecare.schema import Button
from homecare.thresholds import SosSettings

__all__ = ["SosDetector", "SosSettings"]

SOS = BUTTONS.index("sos")
FALL = BUTTONS.index("fall")


class SosDetector(RowState):
    """Turns SOS presses into critical detections, once per press (see module doc)."""

    kind: ClassVar[str] = "sos"
    streams: ClassVar[frozenset[str]] = frozenset({BatchStream.BUTTON})
    _ROW_ARRAYS: ClassVar[dict[str, float | int | bool]] = {
        "seen_seq": -1, "seen_ts": -np.inf, "pos": 0,
    }  # fmt: skip

    def __init__(self, settings: SosSettings | None = None) -> None:
        self.settings = s = settings or SosSettings()
        self.seen_seq = np.zeros((0, s.memory), np.int64)  # recent presses per device
        self.seen_ts = np.zeros((0, s.memory))
        self.pos = np.zeros(0, np.int64)  # next slot in the ring

    def tick(self, now: float) -> list[Detection]:
        """A press is reported when it arrives; time alone changes nothing."""
        return []

    def update(self, batch: ReadingBatch) -> list[Detection]:
        button = batch.column(Button.button)
        fall = button == FALL
        if fall.any() and "cancelled" in batch.values:
            fall &= ~(batch.column("cancelled") > 0.5)  # cancelled on the device: stored only
        press = np.flatnonzero((button == SOS) | fall)
        if len(press) == 0:
            return []
        keys = batch.keys()[press]
        self._grow(int(keys.max()) + 1)
        seq = batch.column("seq")[press]
        is_fall = fall[press]
        # no seq: never a duplicate; a fall's seq is its own counter, kept apart from SOS's
        seq = np.where(np.isnan(seq), -2, seq * 2 + is_fall).astype(np.int64)
        confidence = (
            batch.column("confidence")[press] if "confidence" in batch.values
            else np.full(len(press), np.nan)
        )  # fmt: skip
        found: list[Detection] = []
        parts = waves(keys) or [np.arange(len(press))]
        for part in parts:
            k, q, t = keys[part], seq[part], batch.ts[press[part]]
            same = (self.seen_seq[k] == q[:, None]) & (
                np.abs(self.seen_ts[k] - t[:, None]) <= self.settings.dedupe_s
            )
            new = ~same.any(axis=1) | (q < 0)
            slot = self.pos[k] % self.settings.memory
            self.seen_seq[k, slot] = q
            self.seen_ts[k, slot] = t
            self.pos[k] += 1
            for i in np.flatnonzero(new):
                j = press[part[i]]
                evidence = {"seq": float(q[i] // 2 if q[i] >= 0 else q[i])}
                if is_fall[part[i]]:
                    evidence["device_detected"] = 1.0
                    if not np.isnan(confidence[part[i]]):
                        evidence["device_confidence"] = float(confidence[part[i]])
                found.append(
                    Detection(
                        "fall" if is_fall[part[i]] else self.kind,
                        int(batch.rows[j]),
                        float(batch.ts[j]),
                        Severity.CRITICAL,
                        evidence,
                        device=int(k[i]),
                    )
                )
        found.sort(key=lambda d: (d.ts, d.row))
        return found

"""The conformance suite: one uniform protocol, one small function per check.

Every check takes the session's :class:`Analysis` and returns a :class:`CheckResult`:
``pass``, ``fail`` or ``skipped``, a one-line summary, the evidence (the first
offending messages, with the field and the value), and what to fix. Checks apply per
device kind (:data:`CHECKS`); a check that cannot judge (its operator step was
skipped, the session was too short) says ``skipped`` and why, never ``pass``.

Messages are judged as ingest judges them (:class:`homecare.edge.Edge`), except
that size, ids and the clock each get their own check, so a fault shows once.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel

from certify.kit import Evidence
from certify.prompts import StepKind
from detectors.fall_model import placement_code
from evaluation.replay import Trace, replay
from homecare import contract
from homecare.contract import (
    EVENT_STREAMS,
    MAX_PAYLOAD_BYTES,
    STREAMS,
    ContractError,
    DeviceKind,
    DeviceStatus,
    Stream,
    Topic,
)
from homecare.edge import Edge, RawMessage
from homecare.i18n import N_
from homecare.settings import ContractSettings

Status = Literal["pass", "fail", "skipped"]
CLOCK_TOLERANCE_S = 2.0
MAX_MISSING = 0.01
"""Frames may be missing or duplicated for at most 1 % of the session (outside outages)."""
DEVICE_FALL_LIMIT_S = 30.0
"""From the end of a staged fall to the device's own ``fall`` event at the kit (a device
may wait for the wearer to lie still, or offer its own cancel window first)."""
SOS_LIMIT_S = 10.0
"""From the prompt to the SOS event at the kit, the operator's reaction included."""
BED_PERIOD_S = (10.0, 30.0)
PRE_STAGE_S = 3.0
"""Frames before a staged movement's prompt replayed with it: the posture before it."""
G = 9.80665


class CheckResult(BaseModel):
    id: str
    title: str
    status: Status
    summary: str
    evidence: list[str] = []
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    summary: str
    evidence: tuple[str, ...] = ()
    fix: str = ""


def passed(summary: str, *evidence: str) -> Outcome:
    return Outcome("pass", summary, evidence)


def failed(summary: str, fix: str, *evidence: str) -> Outcome:
    return Outcome("fail", summary, evidence, fix)


def skipped(summary: str, *evidence: str) -> Outcome:
    return Outcome("skipped", summary, evidence)


@dataclass(frozen=True, slots=True)
class Item:
    """One observed message, decoded as far as it goes."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received: float
    stream: Stream | None
    """The stream its topic's last level names, if the device kind has it."""
    topic_error: str | None
    error: ContractError | None
    data: dict[str, Any] | None
    ts: float | None
    ts_end: float | None
    """``ts`` plus a frame's length: the time the message describes up to."""
    duplicate: bool
    live: bool
    """Received while the device was meant to be online and caught up."""


class Analysis:
    """The evidence decoded once for every check."""

    def __init__(self, ev: Evidence) -> None:
        self.ev = ev
        self.o = ev.options
        self.site, self.elder = self._ids()
        edge = Edge(ContractSettings(max_payload_bytes=2**31))  # size has its own check
        seen: set[tuple[str, bytes]] = set()
        self.items = [self._item(m.topic, m.payload, m.qos, m.retain, m.received, edge, seen)
                      for m in ev.messages]
        lags = [i.received - i.ts_end for i in self.items
                if i.live and not i.duplicate and i.ts_end is not None]
        self.lags = lags
        self.offset = statistics.median(lags) if lags else 0.0
        """Median delay from the device's stamp to receipt: its clock error plus transit."""

    def _ids(self) -> tuple[str, str]:
        for m in self.ev.messages:
            try:
                topic = Topic.parse(m.topic)
            except ContractError:
                continue
            if topic.device == self.o.device:
                return topic.site, topic.elder
        for m in self.ev.messages:
            data = _json(m.payload)
            if data and isinstance(data.get("elder"), str):
                return "unknown", data["elder"]
        return "unknown", "unknown"

    def expected(self, stream: Stream | str) -> str:
        """The device's topic for ``stream``, as the contract writes it."""
        return str(Topic(self.site, self.elder, self.o.kind, self.o.device, Stream(stream)))

    def offline_at(self, t: float) -> bool:
        return any(w.start <= t <= w.end for w in self.ev.offline)

    def _item(self, topic: str, payload: bytes, qos: int, retain: bool, received: float,
              edge: Edge, seen: set[tuple[str, bytes]]) -> Item:
        kind = self.o.kind
        last = topic.rsplit("/", 1)[-1]
        stream = Stream(last) if last in Stream.__members__.values() else None
        if stream is not None and stream not in STREAMS[kind]:
            stream = None
        topic_error = self._topic_error(topic)
        error, data, ts, ts_end, duplicate = None, None, None, None, False
        if stream is not None:
            decode_at = topic if topic_error is None else self.expected(stream)
            try:
                edge.decode(RawMessage(decode_at, payload, received), edge.context(received))
            except ContractError as exc:
                error = exc
            if stream is not Stream.AVAILABILITY:
                data = _json(payload)
                duplicate = (str(stream), payload) in seen
                seen.add((str(stream), payload))
        if data is not None and _number(data.get("ts")):
            ts = ts_end = float(data["ts"])
            if stream is Stream.FRAME and _number(data.get("rate")) and data["rate"] > 0 \
                    and isinstance(data.get("accel"), list):
                ts_end = ts + len(data["accel"]) / data["rate"]
        return Item(topic, payload, qos, retain, received, stream, topic_error, error, data, ts,
                    ts_end, duplicate, not self.offline_at(received))

    def _topic_error(self, topic: str) -> str | None:
        try:
            parsed = Topic.parse(topic)
        except ContractError as exc:
            return exc.detail
        if parsed.kind is not self.o.kind:
            return f"kind {parsed.kind} in the topic, but the device is certified as {self.o.kind}"
        if (parsed.site, parsed.elder) != (self.site, self.elder):
            return f"site/elder {parsed.site}/{parsed.elder} differ from its other topics' " \
                   f"{self.site}/{self.elder}"
        return None

    def stream(self, *streams: Stream) -> list[Item]:
        """Messages of these streams, re-deliveries left out."""
        return [i for i in self.items if i.stream in streams and not i.duplicate]

    def device_time(self, ts: float) -> float:
        """A device stamp on the kit's clock (its clock error and transit taken out)."""
        return ts + self.offset


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _examples(lines: list[str], n: int = 5) -> list[str]:
    more = len(lines) - n
    return lines[:n] + ([f"… and {more} more"] if more > 0 else [])


# -- the checks -------------------------------------------------------------------------


def topic_scheme(a: Analysis) -> Outcome:
    if not a.items:
        return failed(f"no message naming device {a.o.device} was seen",
                      "Point the device at the kit's broker and check its device id.")
    bad = Counter((i.topic, i.topic_error) for i in a.items if i.topic_error)
    if bad:
        n = sum(bad.values())
        return failed(
            f"{n} of {len(a.items)} messages on topics outside the contract; first: "
            f"{next(iter(bad))[0]}: {next(iter(bad))[1]}",
            f"Publish on homecare/v1/<site>/<elder>/{a.o.kind}/<device>/<stream>, e.g. "
            f"{a.expected(Stream.STATUS)}; a {a.o.kind} has the streams "
            f"{', '.join(sorted(STREAMS[a.o.kind]))}.",
            *_examples([f"{t}: {why} ({k}×)" for (t, why), k in bad.items()]),
        )
    topics = sorted({i.topic for i in a.items})
    return passed(f"all {len(a.items)} messages on {len(topics)} contract topics", *topics)


def payload_ids(a: Analysis) -> Outcome:
    bad = [i for i in a.items if i.error is not None and i.error.reason == "id_mismatch"]
    if bad:
        return failed(f"{len(bad)} payloads name another device or elder than their topic: "
                      f"{bad[0].error.detail if bad[0].error else ''}",
                      "Put exactly the topic's elder and device ids in every payload's "
                      "'elder' and 'device' fields.",
                      *_examples([f"{i.topic}: {i.error.detail if i.error else ''}"
                                  for i in bad]))
    n = sum(1 for i in a.items if i.data is not None)
    return passed(f"the ids of all {n} payloads match their topics")


def payload_schema(a: Analysis) -> Outcome:
    judged = [i for i in a.items if i.stream is not None]
    bad = [i for i in judged if i.error is not None and i.error.reason != "id_mismatch"]
    if not judged:
        return failed("no message on a stream of the contract to judge",
                      "Publish the streams of the contract (see topic_scheme).")
    if bad:
        first = bad[0]
        return failed(
            f"{len(bad)} of {len(judged)} payloads break the contract; first: "
            f"{first.stream}: {first.error.detail if first.error else ''}",
            "Validate every payload against the exported JSON Schema "
            "(homecare contract export DIR): field names, types, units and ranges.",
            *_examples([f"{i.stream} ({i.error.reason if i.error else ''}): "
                        f"{i.error.detail if i.error else ''}" for i in bad]),
        )
    per = Counter(str(i.stream) for i in judged)
    return passed(f"all {len(judged)} payloads valid", *[f"{s}: {k}" for s, k in per.items()])


def payload_size(a: Analysis) -> Outcome:
    over = [i for i in a.items if len(i.payload) > MAX_PAYLOAD_BYTES]
    largest = max(a.items, key=lambda i: len(i.payload), default=None)
    if over and largest is not None:
        return failed(
            f"{len(over)} payloads over the contract's {MAX_PAYLOAD_BYTES} bytes (largest "
            f"{len(largest.payload)} bytes, {largest.stream})",
            "Send compact JSON (no indentation or spaces) with accelerometer samples in milli-g "
            "precision (3 decimals): a 100 Hz frame then stays under 5 KiB.",
            *_examples([f"{i.stream}: {len(i.payload)} bytes" for i in over]),
        )
    size = len(largest.payload) if largest else 0
    return passed(f"every payload within {MAX_PAYLOAD_BYTES} bytes (largest {size})")


def timestamps(a: Analysis) -> Outcome:
    back: list[str] = []
    n = 0
    for stream in STREAMS[a.o.kind] - {Stream.AVAILABILITY}:
        last = -math.inf
        for i in a.stream(stream):
            if i.ts is None:
                continue
            n += 1
            if i.ts < last:
                back.append(f"{stream}: ts {i.ts:.3f} after {last:.3f}")
            last = max(last, i.ts)
    if back:
        return failed(f"{len(back)} messages went back in time; first: {back[0]}",
                      "Stamp every message from one monotonic, NTP-disciplined clock and "
                      "re-send buffered messages oldest first.", *_examples(back))
    if not n:
        return failed("no time-stamped message", "Every JSON payload carries 'ts'.")
    return passed(f"{n} timestamps increase on every stream")


def clock_skew(a: Analysis) -> Outcome:
    live = [i for i in a.items if i.live and not i.duplicate and i.ts_end is not None]
    if not live:
        return skipped("no time-stamped message was received while the device was live")
    ahead = [i for i in live if i.ts_end is not None and i.ts_end - i.received > CLOCK_TOLERANCE_S]
    fix = "Synchronise the device clock (NTP, or the gateway's time) and stamp 'ts' in UTC " \
          "Unix seconds when the reading is taken."
    lags = [i.received - i.ts_end for i in live if i.ts_end is not None]
    lag = statistics.median(lags)
    if ahead:
        worst = max(ahead, key=lambda i: (i.ts_end or 0) - i.received)
        return failed(
            f"device clock ahead: {len(ahead)} of {len(live)} messages stamped up to "
            f"{(worst.ts_end or 0) - worst.received:.1f} s after the kit received them "
            f"(tolerance ±{CLOCK_TOLERANCE_S:g} s)", fix,
            *_examples([f"{i.stream}: ts {i.ts:.3f}, received {i.received:.3f}" for i in ahead]),
        )
    if lag > CLOCK_TOLERANCE_S:
        return failed(f"device clock behind: stamps reach the kit {lag:.1f} s late (median; "
                      f"tolerance ±{CLOCK_TOLERANCE_S:g} s)", fix)
    return passed(f"stamp to receipt: median {lag:.2f} s, max {max(lags):.2f} s, within "
                  f"±{CLOCK_TOLERANCE_S:g} s ({len(live)} messages)")


def cadence(a: Analysis) -> Outcome:
    if a.o.kind is DeviceKind.BED:
        return _bed_cadence(a)
    frames = [i for i in a.stream(Stream.FRAME) if i.ts is not None and i.data is not None
              and _number(i.data.get("rate")) and isinstance(i.data.get("accel"), list)]
    if len(frames) < 2:
        return failed(f"{len(frames)} frames received", "Publish one frame every second.")
    rates = Counter(i.data.get("rate") for i in frames if i.data is not None)
    short = [i for i in frames if i.data is not None and len(i.data["accel"]) != i.data["rate"]]
    stamps = sorted(i.ts for i in frames if i.ts is not None)
    missing, irregular, evidence = 0, 0, []
    for t0, t1 in itertools.pairwise(stamps):
        step = t1 - t0
        if step > 1.5:
            if a.offline_at(a.device_time(t0) + 1.0) or a.offline_at(a.device_time(t1)):
                continue  # powered off or the broker was away: expected
            missing += round(step) - 1
            evidence.append(f"no frame between ts {t0:.0f} and {t1:.0f}")
        elif abs(step - 1.0) > 0.05:
            irregular += 1
            evidence.append(f"frames {step:.3f} s apart at ts {t0:.3f}")
    dups = sum(1 for i in a.items if i.stream is Stream.FRAME and i.duplicate and i.live)
    expected = len(stamps) + missing
    problems = []
    if missing > MAX_MISSING * expected:
        problems.append(f"{missing} of {expected} frames missing")
    if dups > MAX_MISSING * expected:
        problems.append(f"{dups} frames duplicated")
    if irregular > MAX_MISSING * expected:
        problems.append(f"{irregular} frames not 1 s after the previous one")
    if len(rates) > 1:
        problems.append(f"the sample rate changed: {dict(rates)}")
    if short:
        problems.append(f"{len(short)} frames do not hold 'rate' samples")
    if problems:
        return failed("; ".join(problems) + f" (limit {MAX_MISSING:.0%})",
                      "Send one frame per second holding exactly 'rate' samples, 'ts' being "
                      "its first sample's time; queue frames while the link is busy instead "
                      "of dropping them.", *_examples(evidence))
    return passed(f"{len(stamps)} frames, one per second at {next(iter(rates))} Hz: no gaps, "
                  f"no duplicates")


def _bed_cadence(a: Analysis) -> Outcome:
    lo, hi = BED_PERIOD_S
    readings = [i for i in a.stream(Stream.READING) if i.ts is not None]
    fix = f"Publish a reading every {lo:g}-{hi:g} s, steadily."
    if not readings:
        return failed("no bed reading received", fix)
    stamps = sorted(i.ts for i in readings if i.ts is not None)
    bad = []
    for t0, t1 in itertools.pairwise(stamps):
        if a.offline_at(a.device_time(t0) + 1.0) or a.offline_at(a.device_time(t1)):
            continue
        if not lo - 1 <= t1 - t0 <= hi + 1:
            bad.append(f"readings {t1 - t0:.1f} s apart at ts {t0:.0f}")
    last_gap = a.ev.ended - max(i.received for i in readings)
    if last_gap > hi + 1 + a.o.settle_s and not a.offline_at(a.ev.ended - 1):
        bad.append(f"no reading in the last {last_gap:.0f} s")
    if bad:
        return failed(f"{len(bad)} bed readings off the {lo:g}-{hi:g} s cadence; first: {bad[0]}",
                      fix, *_examples(bad))
    steps = np.diff(stamps)
    every = f"every {float(np.median(steps)):.0f} s" if len(steps) else "one so far"
    return passed(f"{len(readings)} readings, {every}")


def accel_units(a: Analysis) -> Outcome:
    mags = []
    for i in a.stream(Stream.FRAME):
        with np.errstate(all="ignore"):
            try:
                xyz = np.asarray((i.data or {}).get("accel"), dtype=np.float64)
            except (TypeError, ValueError):
                continue
        if xyz.ndim == 2 and xyz.shape[1] == 3 and len(xyz):
            mags.append(float(np.linalg.norm(xyz, axis=1).mean()))
    if not mags:
        return failed("no accelerometer samples to judge", "Publish frames with 'accel'.")
    gravity = statistics.median(mags)
    if 0.85 <= gravity <= 1.15:
        return passed(f"gravity reads {gravity:.3f} g (median of {len(mags)} frames): samples in g")
    if 0.85 * G <= gravity <= 1.15 * G:
        return failed(f"gravity reads {gravity:.2f}: the samples look like m/s², not g",
                      "Divide each sample by 9.80665 before publishing: the contract's "
                      "unit is g (±16 g).")
    if 850 <= gravity <= 1150:
        return failed(f"gravity reads {gravity:.0f}: the samples look like milli-g, not g",
                      "Divide each sample by 1000 before publishing: the unit is g.")
    return failed(f"gravity reads {gravity:.3g} g, not 1 g: scale or axes are wrong",
                  "Publish calibrated x, y, z in g including gravity (1 g at rest).")


def status(a: Analysis) -> Outcome:
    reports = [i for i in a.stream(Stream.STATUS) if i.data is not None
               and (i.error is None or i.error.reason == "id_mismatch")]  # ids: their own check
    declared = int(reports[-1].data.get("interval_s", 300)) if reports and reports[-1].data \
        else DeviceStatus.model_fields["interval_s"].default
    limit = declared * 1.1 + 2.0
    times = sorted(i.received for i in reports if i.live)
    edges = [a.ev.started, *[t for w in a.ev.offline for t in (w.start, w.end)], a.ev.ended]
    segments = [(s, e) for s, e in zip(edges[::2], edges[1::2], strict=False) if e > s]
    worst, live_s = 0.0, 0.0
    for s, e in segments:
        live_s += e - s
        points = [s, *[t for t in times if s <= t <= e], e]
        worst = max([worst, *np.diff(points).tolist()])
    fix = f"Publish a status (battery, firmware, rssi, interval_s) every interval_s seconds " \
          f"(declared: {declared} s)."
    if not reports:
        if live_s <= limit:
            return skipped(f"no status yet: the session's live time ({live_s:.0f} s) is shorter "
                           f"than the status interval ({declared} s); run longer (--duration)")
        return failed(f"no status in {live_s:.0f} s (default interval {declared} s)", fix)
    batteries = [float(i.data["battery"]) for i in reports if i.data is not None]
    if worst > limit:
        return failed(f"status overdue: {worst:.0f} s without one, declared interval "
                      f"{declared} s", fix)
    return passed(f"{len(reports)} status reports, declared every {declared} s, longest gap "
                  f"{worst:.0f} s; battery {min(batteries):g}-{max(batteries):g} %")


def qos(a: Analysis) -> Outcome:
    low = Counter(str(i.stream or i.topic) for i in a.items if i.qos < contract.QOS)
    if low:
        return failed(f"{sum(low.values())} messages arrived at QoS 0 ("
                      + ", ".join(f"{s}: {k}" for s, k in low.items()) + "); the contract "
                      "requires QoS 1",
                      "Publish every stream at QoS 1 and keep each message until its PUBACK.")
    return passed(f"all {len(a.items)} messages at QoS 1")


def availability(a: Analysis) -> Outcome:
    cycle = a.ev.power
    if cycle is None:
        return skipped(a.ev.skipped.get("availability", "the power cycle did not run"))
    topic = a.expected(Stream.AVAILABILITY)
    problems, evidence = [], []
    if cycle.offline is None:
        problems.append(f"no 'offline' on {topic} within {a.o.will_timeout_s:g} s of power-off: "
                        "the device has no MQTT last will")
    else:
        evidence.append(f"'offline' {cycle.offline.received - cycle.asked_off:.2f} s after "
                        f"power-off, retained={cycle.offline.retain}")
        if not cycle.offline.retain:
            problems.append("the last will 'offline' is not retained")
    if cycle.online is None:
        problems.append(f"no 'online' within {a.o.online_timeout_s:g} s of power-on")
    else:
        evidence.append(f"'online' {cycle.online.received - (cycle.asked_on or 0):.2f} s after "
                        f"power-on, retained={cycle.online.retain}")
        if not cycle.online.retain:
            problems.append("'online' is not retained")
    if problems:
        return failed("; ".join(problems),
                      f"Connect with the last will {topic} = 'offline' (QoS 1, retained) and "
                      "publish 'online' (QoS 1, retained) right after every connect.", *evidence)
    return passed("last will 'offline' on power-off, 'online' on power-on, both retained",
                  *evidence)


def outage(a: Analysis) -> Outcome:
    out = a.ev.outage
    if out is None:
        return skipped(a.ev.skipped.get("outage", "no broker outage was staged"))
    fix = "Reconnect by itself (with backoff) with a persistent session, publish events at " \
          "QoS 1 and keep them until acknowledged (PUBACK), re-sending after reconnecting."
    if out.back is None:
        return failed(f"the device did not come back within {a.o.reconnect_timeout_s:g} s of "
                      "the broker's return", fix)
    back = f"back {out.back.received - out.restarted:.1f} s after the broker returned"
    streams = STREAMS[a.o.kind] & EVENT_STREAMS
    if not streams:
        return passed(f"{back}; a {a.o.kind} has no event streams: reconnection checked")
    events = [i for i in a.stream(*streams) if i.ts is not None and i.data is not None
              and isinstance(i.data.get("seq"), int)]
    during = [i for i in events
              if out.stopped - 1 <= a.device_time(i.ts or 0) <= out.restarted + 1]
    lost = []
    for stream in streams:
        seqs = sorted({i.data["seq"] for i in events if i.stream is stream and i.data})
        if seqs:
            lost += [f"{stream} seq {s}" for s in range(seqs[0], seqs[-1] + 1) if s not in seqs]
    if len(during) < out.events_asked or lost:
        return failed(
            f"events lost across the broker outage: {out.events_asked} made while it was "
            f"down, {len(during)} arrived after it returned"
            + (f"; missing {', '.join(lost[:5])}" if lost else ""), fix, back)
    if not out.events_asked:
        return skipped(f"no event was made during the outage (operator step skipped); {back}")
    return passed(f"{len(during)} events made while the broker was down arrived after it "
                  f"returned, none lost; {back}")


def sos_latency(a: Analysis) -> Outcome:
    if a.ev.sos is None:
        return skipped(a.ev.skipped.get("sos_latency", "the SOS step did not run"))
    press = a.ev.sos
    fix = "Publish 'sos' at QoS 1 the moment the button is pressed (no batching, no delay)."
    if press.event is None:
        return failed(f"no SOS event within {a.o.sos_timeout_s:g} s of the prompt", fix)
    latency = press.event.received - press.asked
    if latency > SOS_LIMIT_S:
        return failed(f"SOS took {latency:.1f} s from the prompt to the kit (limit "
                      f"{SOS_LIMIT_S:g} s)", fix)
    return passed(f"SOS arrived {latency:.2f} s after the prompt (limit {SOS_LIMIT_S:g} s)")


def fall_test(a: Analysis) -> Outcome:
    if not a.ev.stages:
        return skipped(a.ev.skipped.get("fall_test", "no staged movement was recorded"))
    frames = [i for i in a.stream(Stream.FRAME)
              if i.error is None and i.data is not None and i.ts is not None]
    traces, counts = [], []
    for k, stage in enumerate(a.ev.stages):
        inside = sorted((i for i in frames if stage.start - PRE_STAGE_S
                         <= a.device_time(i.ts or 0) <= stage.end), key=lambda i: i.ts or 0)
        rate = inside[0].data["rate"] if inside and inside[0].data else 0
        rows = [i.data["accel"] for i in inside if i.data and i.data["rate"] == rate]
        counts.append(len(rows))
        if rows:
            xyz = np.asarray([s for row in rows for s in row], dtype=np.float32)
            traces.append(Trace(str(k), xyz, float(rate)))
    reports = [i.data for i in a.stream(Stream.STATUS) if i.error is None and i.data]
    worn = placement_code(reports[-1].get("placement") if reports else None)
    found = Counter(e["file"] for e in replay(traces, placement=worn) if e["kind"] == "fall")
    evidence, missed, false = [], 0, 0
    for k, stage in enumerate(a.ev.stages):
        hit = found[str(k)] > 0
        wanted = stage.kind is StepKind.FALL
        missed += wanted and not hit
        false += hit and not wanted
        verdict = ("detected" if hit else "not detected") + \
                  (" (right)" if hit == wanted else " (WRONG)")
        evidence.append(f"{stage.kind} {stage.motion}: {verdict}; {counts[k]} valid frames")
    falls = sum(1 for s in a.ev.stages if s.kind is StepKind.FALL)
    alikes = len(a.ev.stages) - falls
    if missed or false:
        return failed(
            f"{missed} of {falls} test falls missed, {false} of {alikes} look-alikes taken "
            "for falls",
            "The detector needs valid frames in g at a steady rate through the movement and "
            "the 15 s after it: fix the other failed checks first.", *evidence)
    return passed(f"{falls} test falls detected, {alikes} look-alikes not", *evidence)


def device_fall(a: Analysis) -> Outcome:
    """A wearable that detects falls itself: its ``fall`` events follow the contract, come
    after each staged fall and not after the look-alikes."""
    events = a.stream(Stream.FALL)
    if not events:  # not a claim the device makes: nothing to certify, nothing missing
        return passed("no 'fall' event: the device does not detect falls itself (its "
                      "frames are judged by fall_test)")
    fix = ("Publish 'fall' at QoS 1 when the device detects a fall: {elder, device, ts, seq, "
           "confidence 0-1, cancelled} (see the contract's fall.json).")
    bad = [i for i in events if i.error is not None or i.data is None]
    if bad:
        return failed(f"{len(bad)} of {len(events)} fall events break the contract", fix,
                      *[f"{i.topic}: {i.error}" for i in bad[:5]])
    if not a.ev.stages:
        return passed(f"{len(events)} valid fall events (no staged movements to match)")
    evidence, missed, false = [], 0, 0
    for stage in a.ev.stages:
        hit = [i for i in events
               if stage.start <= i.received <= stage.end + DEVICE_FALL_LIMIT_S
               and not (i.data or {}).get("cancelled")]
        wanted = stage.kind is StepKind.FALL
        missed += wanted and not hit
        false += bool(hit) and not wanted
        said = (f"fall event {hit[0].received - stage.start:.1f} s after the start"
                if hit else "no fall event")
        evidence.append(f"{stage.kind} {stage.motion}: {said}"
                        + (" (right)" if bool(hit) == wanted else " (WRONG)"))
    falls = sum(1 for s in a.ev.stages if s.kind is StepKind.FALL)
    if missed or false:
        return failed(f"{missed} of {falls} staged falls without a fall event, {false} "
                      f"look-alikes with one", fix, *evidence)
    return passed(f"a fall event for each of {falls} staged falls, none for the look-alikes",
                  *evidence)


@dataclass(frozen=True, slots=True)
class Check:
    """One conformance check: an id, a title, the kinds it applies to and its judgement."""

    id: str
    title: str
    """In English (the JSON report's); the certificate shows it in the reader's language."""
    kinds: frozenset[DeviceKind]
    judge: Callable[[Analysis], Outcome]

    def run(self, a: Analysis) -> CheckResult:
        out = self.judge(a)
        return CheckResult(id=self.id, title=self.title, status=out.status, summary=out.summary,
                           evidence=list(out.evidence), fix=out.fix)


ALL = frozenset(DeviceKind)
WEARABLE = frozenset({DeviceKind.WEARABLE})
CHECKS: tuple[Check, ...] = (
    Check("topic_scheme", N_("Topic scheme"), ALL, topic_scheme),
    Check("payload_ids", N_("Payload ids match the topic"), ALL, payload_ids),
    Check("payload_schema", N_("Payloads valid against the contract"), ALL, payload_schema),
    Check("payload_size", N_("Payload sizes within limits"), ALL, payload_size),
    Check("timestamps", N_("Timestamps monotonic"), ALL, timestamps),
    Check("clock_skew", N_("Clock within ±2 s of receipt"), ALL, clock_skew),
    Check("cadence", N_("Cadence, sample rate, gaps and duplicates"),
          frozenset({DeviceKind.WEARABLE, DeviceKind.BED}), cadence),
    Check("accel_units", N_("Accelerometer in g"), WEARABLE, accel_units),
    Check("status", N_("Battery and status at the declared interval"), ALL, status),
    Check("qos", N_("Everything at QoS 1"), ALL, qos),
    Check("availability", N_("Last will and availability (power off and on)"), ALL, availability),
    Check("outage", N_("Events buffered across a broker outage"), ALL, outage),
    Check("sos_latency", N_("SOS latency"), WEARABLE, sos_latency),
    Check("fall_test", N_("Staged falls and look-alikes"), WEARABLE, fall_test),
    Check("device_fall", N_("Falls the device detects itself"), WEARABLE, device_fall),
)
"""The suite, in report order."""


def run_checks(ev: Evidence) -> list[CheckResult]:
    a = Analysis(ev)
    return [c.run(a) for c in CHECKS if ev.options.kind in c.kinds]

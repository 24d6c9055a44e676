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
from homecare.i18n import N_, Translator
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


class Num(BaseModel):
    """A measured number in a sentence: shown with ``digits`` decimals (``None``: as few
    as it needs, like ``:g``), in the reader's digits and grouping."""

    value: float
    digits: int | None = None


class Text(BaseModel):
    """A sentence kept as its English msgid and named values, so the JSON report says it
    in English and the certificate in the reader's language (``{name}`` placeholders;
    a value is a quote or id (``str``, never translated), a count, a :class:`Num`, a
    nested :class:`Text` or a list of them, joined with ``; ``).

    >>> from homecare.i18n import translator
    >>> t = say(N_("SOS arrived {latency} s after the prompt (limit {limit} s)"),
    ...         latency=Num(value=1234.5, digits=2), limit=Num(value=10))
    >>> t.render()
    'SOS arrived 1234.50 s after the prompt (limit 10 s)'
    >>> t.render(translator("zh-CN"))
    'SOS在提示后1,234.50秒到达（上限10秒）'
    """

    msgid: str
    values: dict[str, str | int | Num | Text | list[Text]] = {}

    def render(self, tr: Translator | None = None) -> str:
        """In English (``None``: the JSON's words) or in ``tr``'s language."""
        shown = {k: _shown(v, tr) for k, v in self.values.items()}
        template = tr.gettext(self.msgid) if tr is not None and self.msgid != "{quote}" \
            else self.msgid
        return template.format(**shown)


def _shown(value: str | int | Num | Text | list[Text], tr: Translator | None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Text):
        return value.render(tr)
    if isinstance(value, list):
        sep = tr.pgettext("between problems", "; ") if tr is not None else "; "
        return sep.join(_shown(v, tr) for v in value)
    if isinstance(value, int):
        return tr.number(value) if tr is not None else str(value)
    if tr is None:
        return f"{value.value:g}" if value.digits is None else f"{value.value:.{value.digits}f}"
    if value.digits is None:
        return tr.number(float(f"{value.value:g}"))
    return tr.number(value.value, "#,##0" + ("." + "0" * value.digits if value.digits else ""))


def say(msgid: str, **values: str | int | float | Num | Text | list[Text]) -> Text:
    """A sentence: ``msgid`` marked with ``N_`` at the call (so extraction finds it); a
    ``float`` value is a :class:`Num` shown like ``:g``."""
    return Text(msgid=msgid, values={k: Num(value=v) if isinstance(v, float) else v
                                     for k, v in values.items()})


def quote(value: str) -> Text:
    """Evidence that quotes what the device sent (topics, payload errors): never translated."""
    return Text(msgid="{quote}", values={"quote": value})


def num(value: float, digits: int | None = None) -> Num:
    return Num(value=value, digits=digits)


class Wording(BaseModel):
    """A check's words as sentences, for the certificate in the reader's language."""

    summary: Text
    evidence: list[Text] = []
    fix: Text | None = None


class CheckResult(BaseModel):
    id: str
    title: str
    status: Status
    summary: str
    evidence: list[str] = []
    fix: str = ""
    wording: Wording | None = None
    """The same words, translatable (``None``: show summary, evidence and fix as they are)."""

    def words(self, tr: Translator) -> tuple[str, list[str], str]:
        """Summary, evidence and fix in ``tr``'s language."""
        w = self.wording
        if w is None:
            return self.summary, self.evidence, self.fix
        return (w.summary.render(tr), [e.render(tr) for e in w.evidence],
                w.fix.render(tr) if w.fix else "")


_Said = Text | str


def _text(value: _Said) -> Text:
    return value if isinstance(value, Text) else quote(value)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    summary: Text
    evidence: tuple[Text, ...] = ()
    fix: Text | None = None


def passed(summary: _Said, *evidence: _Said) -> Outcome:
    return Outcome("pass", _text(summary), tuple(map(_text, evidence)))


def failed(summary: _Said, fix: _Said, *evidence: _Said) -> Outcome:
    return Outcome("fail", _text(summary), tuple(map(_text, evidence)), _text(fix))


def skipped(summary: _Said, *evidence: _Said) -> Outcome:
    return Outcome("skipped", _text(summary), tuple(map(_text, evidence)))


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


def _examples(lines: list[_Said], n: int = 5) -> list[_Said]:
    more = len(lines) - n
    return lines[:n] + ([say(N_("… and {more} more"), more=more)] if more > 0 else [])


def _ts(value: float, digits: int) -> str:
    """A device's time stamp, quoted as it was sent (Unix seconds, no grouping)."""
    return f"{value:.{digits}f}"


# -- the checks -------------------------------------------------------------------------


def topic_scheme(a: Analysis) -> Outcome:
    if not a.items:
        return failed(say(N_("no message naming device {device} was seen"), device=a.o.device),
                      say(N_("Point the device at the kit's broker and check its device id.")))
    bad = Counter((i.topic, i.topic_error) for i in a.items if i.topic_error)
    if bad:
        n = sum(bad.values())
        return failed(
            say(N_("{n} of {total} messages on topics outside the contract; first: {first}"),
                n=n, total=len(a.items), first=f"{next(iter(bad))[0]}: {next(iter(bad))[1]}"),
            say(N_("Publish on {scheme}, e.g. {example}; a {kind} has the streams {streams}."),
                scheme=f"homecare/v1/<site>/<elder>/{a.o.kind}/<device>/<stream>",
                example=a.expected(Stream.STATUS), kind=str(a.o.kind),
                streams=", ".join(sorted(STREAMS[a.o.kind]))),
            *_examples([f"{t}: {why} ({k}×)" for (t, why), k in bad.items()]),
        )
    topics = sorted({i.topic for i in a.items})
    return passed(say(N_("all {n} messages on {topics} contract topics"),
                      n=len(a.items), topics=len(topics)), *topics)


def payload_ids(a: Analysis) -> Outcome:
    bad = [i for i in a.items if i.error is not None and i.error.reason == "id_mismatch"]
    if bad:
        return failed(say(N_("{n} payloads name another device or elder than their topic: "
                             "{first}"),
                          n=len(bad), first=bad[0].error.detail if bad[0].error else ""),
                      say(N_("Put exactly the topic's elder and device ids in every payload's "
                             "'elder' and 'device' fields.")),
                      *_examples([f"{i.topic}: {i.error.detail if i.error else ''}"
                                  for i in bad]))
    n = sum(1 for i in a.items if i.data is not None)
    return passed(say(N_("the ids of all {n} payloads match their topics"), n=n))


def payload_schema(a: Analysis) -> Outcome:
    judged = [i for i in a.items if i.stream is not None]
    bad = [i for i in judged if i.error is not None and i.error.reason != "id_mismatch"]
    if not judged:
        return failed(say(N_("no message on a stream of the contract to judge")),
                      say(N_("Publish the streams of the contract (see topic_scheme).")))
    if bad:
        first = bad[0]
        return failed(
            say(N_("{n} of {total} payloads break the contract; first: {first}"),
                n=len(bad), total=len(judged),
                first=f"{first.stream}: {first.error.detail if first.error else ''}"),
            say(N_("Validate every payload against the exported JSON Schema "
                   "(homecare contract export DIR): field names, types, units and ranges.")),
            *_examples([f"{i.stream} ({i.error.reason if i.error else ''}): "
                        f"{i.error.detail if i.error else ''}" for i in bad]),
        )
    per = Counter(str(i.stream) for i in judged)
    return passed(say(N_("all {n} payloads valid"), n=len(judged)),
                  *[f"{s}: {k}" for s, k in per.items()])


def payload_size(a: Analysis) -> Outcome:
    over = [i for i in a.items if len(i.payload) > MAX_PAYLOAD_BYTES]
    largest = max(a.items, key=lambda i: len(i.payload), default=None)
    if over and largest is not None:
        return failed(
            say(N_("{n} payloads over the contract's {limit} bytes (largest {largest} bytes, "
                   "{stream})"), n=len(over), limit=MAX_PAYLOAD_BYTES,
                largest=len(largest.payload), stream=str(largest.stream)),
            say(N_("Send compact JSON (no indentation or spaces) with accelerometer samples in "
                   "milli-g precision (3 decimals): a 100 Hz frame then stays under 5 KiB.")),
            *_examples([say(N_("{stream}: {size} bytes"), stream=str(i.stream),
                            size=len(i.payload)) for i in over]),
        )
    size = len(largest.payload) if largest else 0
    return passed(say(N_("every payload within {limit} bytes (largest {largest})"),
                      limit=MAX_PAYLOAD_BYTES, largest=size))


def timestamps(a: Analysis) -> Outcome:
    back: list[_Said] = []
    n = 0
    for stream in STREAMS[a.o.kind] - {Stream.AVAILABILITY}:
        last = -math.inf
        for i in a.stream(stream):
            if i.ts is None:
                continue
            n += 1
            if i.ts < last:
                back.append(say(N_("{stream}: ts {ts} after {last}"), stream=str(stream),
                                ts=_ts(i.ts, 3), last=_ts(last, 3)))
            last = max(last, i.ts)
    if back:
        return failed(say(N_("{n} messages went back in time; first: {first}"),
                          n=len(back), first=_text(back[0])),
                      say(N_("Stamp every message from one monotonic, NTP-disciplined clock and "
                             "re-send buffered messages oldest first.")), *_examples(back))
    if not n:
        return failed(say(N_("no time-stamped message")),
                      say(N_("Every JSON payload carries 'ts'.")))
    return passed(say(N_("{n} timestamps increase on every stream"), n=n))


def clock_skew(a: Analysis) -> Outcome:
    live = [i for i in a.items if i.live and not i.duplicate and i.ts_end is not None]
    if not live:
        return skipped(say(N_("no time-stamped message was received while the device was live")))
    ahead = [i for i in live if i.ts_end is not None and i.ts_end - i.received > CLOCK_TOLERANCE_S]
    fix = say(N_("Synchronise the device clock (NTP, or the gateway's time) and stamp 'ts' in "
                 "UTC Unix seconds when the reading is taken."))
    lags = [i.received - i.ts_end for i in live if i.ts_end is not None]
    lag = statistics.median(lags)
    if ahead:
        worst = max(ahead, key=lambda i: (i.ts_end or 0) - i.received)
        return failed(
            say(N_("device clock ahead: {n} of {total} messages stamped up to {ahead} s after "
                   "the kit received them (tolerance ±{tolerance} s)"),
                n=len(ahead), total=len(live),
                ahead=num((worst.ts_end or 0) - worst.received, 1), tolerance=CLOCK_TOLERANCE_S),
            fix,
            *_examples([say(N_("{stream}: ts {ts}, received {received}"), stream=str(i.stream),
                            ts=_ts(i.ts or 0, 3), received=_ts(i.received, 3))
                        for i in ahead]),
        )
    if lag > CLOCK_TOLERANCE_S:
        return failed(say(N_("device clock behind: stamps reach the kit {lag} s late (median; "
                             "tolerance ±{tolerance} s)"),
                          lag=num(lag, 1), tolerance=CLOCK_TOLERANCE_S), fix)
    return passed(say(N_("stamp to receipt: median {lag} s, max {max} s, within ±{tolerance} s "
                         "({n} messages)"), lag=num(lag, 2), max=num(max(lags), 2),
                      tolerance=CLOCK_TOLERANCE_S, n=len(live)))


def cadence(a: Analysis) -> Outcome:
    if a.o.kind is DeviceKind.BED:
        return _bed_cadence(a)
    frames = [i for i in a.stream(Stream.FRAME) if i.ts is not None and i.data is not None
              and _number(i.data.get("rate")) and isinstance(i.data.get("accel"), list)]
    if len(frames) < 2:
        return failed(say(N_("{n} frames received"), n=len(frames)),
                      say(N_("Publish one frame every second.")))
    rates = Counter(i.data.get("rate") for i in frames if i.data is not None)
    short = [i for i in frames if i.data is not None and len(i.data["accel"]) != i.data["rate"]]
    stamps = sorted(i.ts for i in frames if i.ts is not None)
    missing, irregular = 0, 0
    evidence: list[_Said] = []
    for t0, t1 in itertools.pairwise(stamps):
        step = t1 - t0
        if step > 1.5:
            if a.offline_at(a.device_time(t0) + 1.0) or a.offline_at(a.device_time(t1)):
                continue  # powered off or the broker was away: expected
            missing += round(step) - 1
            evidence.append(say(N_("no frame between ts {start} and {end}"),
                                start=_ts(t0, 0), end=_ts(t1, 0)))
        elif abs(step - 1.0) > 0.05:
            irregular += 1
            evidence.append(say(N_("frames {step} s apart at ts {ts}"),
                                step=num(step, 3), ts=_ts(t0, 3)))
    dups = sum(1 for i in a.items if i.stream is Stream.FRAME and i.duplicate and i.live)
    expected = len(stamps) + missing
    problems: list[Text] = []
    if missing > MAX_MISSING * expected:
        problems.append(say(N_("{n} of {total} frames missing"), n=missing, total=expected))
    if dups > MAX_MISSING * expected:
        problems.append(say(N_("{n} frames duplicated"), n=dups))
    if irregular > MAX_MISSING * expected:
        problems.append(say(N_("{n} frames not 1 s after the previous one"), n=irregular))
    if len(rates) > 1:
        problems.append(say(N_("the sample rate changed: {rates}"), rates=str(dict(rates))))
    if short:
        problems.append(say(N_("{n} frames do not hold 'rate' samples"), n=len(short)))
    if problems:
        return failed(say(N_("{problems} (limit {limit})"), problems=problems,
                          limit=f"{MAX_MISSING:.0%}"),
                      say(N_("Send one frame per second holding exactly 'rate' samples, 'ts' "
                             "being its first sample's time; queue frames while the link is "
                             "busy instead of dropping them.")), *_examples(evidence))
    return passed(say(N_("{n} frames, one per second at {rate} Hz: no gaps, no duplicates"),
                      n=len(stamps), rate=str(next(iter(rates)))))


def _bed_cadence(a: Analysis) -> Outcome:
    lo, hi = BED_PERIOD_S
    readings = [i for i in a.stream(Stream.READING) if i.ts is not None]
    fix = say(N_("Publish a reading every {low}-{high} s, steadily."), low=lo, high=hi)
    if not readings:
        return failed(say(N_("no bed reading received")), fix)
    stamps = sorted(i.ts for i in readings if i.ts is not None)
    bad: list[_Said] = []
    for t0, t1 in itertools.pairwise(stamps):
        if a.offline_at(a.device_time(t0) + 1.0) or a.offline_at(a.device_time(t1)):
            continue
        if not lo - 1 <= t1 - t0 <= hi + 1:
            bad.append(say(N_("readings {step} s apart at ts {ts}"),
                           step=num(t1 - t0, 1), ts=_ts(t0, 0)))
    last_gap = a.ev.ended - max(i.received for i in readings)
    if last_gap > hi + 1 + a.o.settle_s and not a.offline_at(a.ev.ended - 1):
        bad.append(say(N_("no reading in the last {gap} s"), gap=num(last_gap, 0)))
    if bad:
        return failed(say(N_("{n} bed readings off the {low}-{high} s cadence; first: {first}"),
                          n=len(bad), low=lo, high=hi, first=_text(bad[0])),
                      fix, *_examples(bad))
    steps = np.diff(stamps)
    every = (say(N_("every {step} s"), step=num(float(np.median(steps)), 0)) if len(steps)
             else say(N_("one so far")))
    return passed(say(N_("{n} readings, {every}"), n=len(readings), every=every))


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
        return failed(say(N_("no accelerometer samples to judge")),
                      say(N_("Publish frames with 'accel'.")))
    gravity = statistics.median(mags)
    if 0.85 <= gravity <= 1.15:
        return passed(say(N_("gravity reads {gravity} g (median of {n} frames): samples in g"),
                          gravity=num(gravity, 3), n=len(mags)))
    if 0.85 * G <= gravity <= 1.15 * G:
        return failed(say(N_("gravity reads {gravity}: the samples look like m/s², not g"),
                          gravity=num(gravity, 2)),
                      say(N_("Divide each sample by 9.80665 before publishing: the contract's "
                             "unit is g (±16 g).")))
    if 850 <= gravity <= 1150:
        return failed(say(N_("gravity reads {gravity}: the samples look like milli-g, not g"),
                          gravity=num(gravity, 0)),
                      say(N_("Divide each sample by 1000 before publishing: the unit is g.")))
    return failed(say(N_("gravity reads {gravity} g, not 1 g: scale or axes are wrong"),
                      gravity=float(f"{gravity:.3g}")),
                  say(N_("Publish calibrated x, y, z in g including gravity (1 g at rest).")))


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
    fix = say(N_("Publish a status (battery, firmware, rssi, interval_s) every interval_s "
                 "seconds (declared: {declared} s)."), declared=declared)
    if not reports:
        if live_s <= limit:
            return skipped(say(N_("no status yet: the session's live time ({live} s) is shorter "
                                  "than the status interval ({declared} s); run longer "
                                  "(--duration)"), live=num(live_s, 0), declared=declared))
        return failed(say(N_("no status in {live} s (default interval {declared} s)"),
                          live=num(live_s, 0), declared=declared), fix)
    batteries = [float(i.data["battery"]) for i in reports if i.data is not None]
    if worst > limit:
        return failed(say(N_("status overdue: {worst} s without one, declared interval "
                             "{declared} s"), worst=num(worst, 0), declared=declared), fix)
    return passed(say(N_("{n} status reports, declared every {declared} s, longest gap {worst} "
                         "s; battery {low}-{high} %"), n=len(reports), declared=declared,
                      worst=num(worst, 0), low=min(batteries), high=max(batteries)))


def qos(a: Analysis) -> Outcome:
    low = Counter(str(i.stream or i.topic) for i in a.items if i.qos < contract.QOS)
    if low:
        return failed(say(N_("{n} messages arrived at QoS 0 ({streams}); the contract requires "
                             "QoS 1"), n=sum(low.values()),
                          streams=", ".join(f"{s}: {k}" for s, k in low.items())),
                      say(N_("Publish every stream at QoS 1 and keep each message until its "
                             "PUBACK.")))
    return passed(say(N_("all {n} messages at QoS 1"), n=len(a.items)))


def _skip_reason(a: Analysis, check: str, default: Text) -> Text:
    """Why the kit skipped a step: its own words (marked ``N_`` in :mod:`certify.kit`, so
    the catalogue has them), else the check's."""
    said = a.ev.skipped.get(check)
    if not said:
        return default
    return quote(said) if "{" in said or "}" in said else Text(msgid=said)


def availability(a: Analysis) -> Outcome:
    cycle = a.ev.power
    if cycle is None:
        return skipped(_skip_reason(a, "availability", say(N_("the power cycle did not run"))))
    topic = a.expected(Stream.AVAILABILITY)
    problems: list[Text] = []
    evidence: list[_Said] = []
    if cycle.offline is None:
        problems.append(say(N_("no 'offline' on {topic} within {timeout} s of power-off: the "
                               "device has no MQTT last will"),
                            topic=topic, timeout=float(a.o.will_timeout_s)))
    else:
        evidence.append(say(N_("'offline' {delay} s after power-off, retained={retained}"),
                            delay=num(cycle.offline.received - cycle.asked_off, 2),
                            retained=str(cycle.offline.retain)))
        if not cycle.offline.retain:
            problems.append(say(N_("the last will 'offline' is not retained")))
    if cycle.online is None:
        problems.append(say(N_("no 'online' within {timeout} s of power-on"),
                            timeout=float(a.o.online_timeout_s)))
    else:
        evidence.append(say(N_("'online' {delay} s after power-on, retained={retained}"),
                            delay=num(cycle.online.received - (cycle.asked_on or 0), 2),
                            retained=str(cycle.online.retain)))
        if not cycle.online.retain:
            problems.append(say(N_("'online' is not retained")))
    if problems:
        return failed(say(N_("{problems}"), problems=problems),
                      say(N_("Connect with the last will {topic} = 'offline' (QoS 1, retained) "
                             "and publish 'online' (QoS 1, retained) right after every "
                             "connect."), topic=topic), *evidence)
    return passed(say(N_("last will 'offline' on power-off, 'online' on power-on, both "
                         "retained")), *evidence)


def outage(a: Analysis) -> Outcome:
    out = a.ev.outage
    if out is None:
        return skipped(_skip_reason(a, "outage", say(N_("no broker outage was staged"))))
    fix = say(N_("Reconnect by itself (with backoff) with a persistent session, publish events "
                 "at QoS 1 and keep them until acknowledged (PUBACK), re-sending after "
                 "reconnecting."))
    if out.back is None:
        return failed(say(N_("the device did not come back within {timeout} s of the broker's "
                             "return"), timeout=float(a.o.reconnect_timeout_s)), fix)
    back = say(N_("back {delay} s after the broker returned"),
               delay=num(out.back.received - out.restarted, 1))
    streams = STREAMS[a.o.kind] & EVENT_STREAMS
    if not streams:
        return passed(say(N_("{back}; a {kind} has no event streams: reconnection checked"),
                          back=back, kind=str(a.o.kind)))
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
        summary = say(N_("events lost across the broker outage: {asked} made while it was "
                         "down, {arrived} arrived after it returned"),
                      asked=out.events_asked, arrived=len(during))
        if lost:
            summary = say(N_("{summary}; missing {lost}"), summary=summary,
                          lost=", ".join(lost[:5]))
        return failed(summary, fix, back)
    if not out.events_asked:
        return skipped(say(N_("no event was made during the outage (operator step skipped); "
                              "{back}"), back=back))
    return passed(say(N_("{n} events made while the broker was down arrived after it returned, "
                         "none lost; {back}"), n=len(during), back=back))


def sos_latency(a: Analysis) -> Outcome:
    if a.ev.sos is None:
        return skipped(_skip_reason(a, "sos_latency", say(N_("the SOS step did not run"))))
    press = a.ev.sos
    fix = say(N_("Publish 'sos' at QoS 1 the moment the button is pressed (no batching, no "
                 "delay)."))
    if press.event is None:
        return failed(say(N_("no SOS event within {timeout} s of the prompt"),
                          timeout=float(a.o.sos_timeout_s)), fix)
    latency = press.event.received - press.asked
    if latency > SOS_LIMIT_S:
        return failed(say(N_("SOS took {latency} s from the prompt to the kit (limit {limit} s)"),
                          latency=num(latency, 1), limit=SOS_LIMIT_S), fix)
    return passed(say(N_("SOS arrived {latency} s after the prompt (limit {limit} s)"),
                      latency=num(latency, 2), limit=SOS_LIMIT_S))


def _right(hit: bool, wanted: bool) -> Text:
    return say(N_("(right)")) if hit == wanted else say(N_("(WRONG)"))


def fall_test(a: Analysis) -> Outcome:
    if not a.ev.stages:
        return skipped(_skip_reason(a, "fall_test", say(N_("no staged movement was recorded"))))
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
    evidence: list[_Said] = []
    missed, false = 0, 0
    for k, stage in enumerate(a.ev.stages):
        hit = found[str(k)] > 0
        wanted = stage.kind is StepKind.FALL
        missed += wanted and not hit
        false += hit and not wanted
        evidence.append(say(N_("{kind} {motion}: {verdict} {right}; {n} valid frames"),
                            kind=str(stage.kind), motion=str(stage.motion),
                            verdict=say(N_("detected")) if hit else say(N_("not detected")),
                            right=_right(hit, wanted), n=counts[k]))
    falls = sum(1 for s in a.ev.stages if s.kind is StepKind.FALL)
    alikes = len(a.ev.stages) - falls
    if missed or false:
        return failed(
            say(N_("{missed} of {falls} test falls missed, {false} of {alikes} look-alikes taken "
                   "for falls"), missed=missed, falls=falls, false=false, alikes=alikes),
            say(N_("The detector needs valid frames in g at a steady rate through the movement "
                   "and the 15 s after it: fix the other failed checks first.")), *evidence)
    return passed(say(N_("{falls} test falls detected, {alikes} look-alikes not"),
                      falls=falls, alikes=alikes), *evidence)


def device_fall(a: Analysis) -> Outcome:
    """A wearable that detects falls itself: its ``fall`` events follow the contract, come
    after each staged fall and not after the look-alikes."""
    events = a.stream(Stream.FALL)
    if not events:  # not a claim the device makes: nothing to certify, nothing missing
        return passed(say(N_("no 'fall' event: the device does not detect falls itself (its "
                             "frames are judged by fall_test)")))
    fix = say(N_("Publish 'fall' at QoS 1 when the device detects a fall: {fields} (see the "
                 "contract's fall.json)."),
              fields="{elder, device, ts, seq, confidence 0-1, cancelled}")
    bad = [i for i in events if i.error is not None or i.data is None]
    if bad:
        return failed(say(N_("{n} of {total} fall events break the contract"),
                          n=len(bad), total=len(events)), fix,
                      *[f"{i.topic}: {i.error}" for i in bad[:5]])
    if not a.ev.stages:
        return passed(say(N_("{n} valid fall events (no staged movements to match)"),
                          n=len(events)))
    evidence: list[_Said] = []
    missed, false = 0, 0
    for stage in a.ev.stages:
        hit = [i for i in events
               if stage.start <= i.received <= stage.end + DEVICE_FALL_LIMIT_S
               and not (i.data or {}).get("cancelled")]
        wanted = stage.kind is StepKind.FALL
        missed += wanted and not hit
        false += bool(hit) and not wanted
        said = (say(N_("fall event {delay} s after the start"),
                    delay=num(hit[0].received - stage.start, 1))
                if hit else say(N_("no fall event")))
        evidence.append(say(N_("{kind} {motion}: {said} {right}"), kind=str(stage.kind),
                            motion=str(stage.motion), said=said,
                            right=_right(bool(hit), wanted)))
    falls = sum(1 for s in a.ev.stages if s.kind is StepKind.FALL)
    if missed or false:
        return failed(say(N_("{missed} of {falls} staged falls without a fall event, {false} "
                             "look-alikes with one"), missed=missed, falls=falls, false=false),
                      fix, *evidence)
    return passed(say(N_("a fall event for each of {falls} staged falls, none for the "
                         "look-alikes"), falls=falls), *evidence)


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
        return CheckResult(
            id=self.id, title=self.title, status=out.status, summary=out.summary.render(),
            evidence=[e.render() for e in out.evidence],
            fix=out.fix.render() if out.fix else "",
            wording=Wording(summary=out.summary, evidence=list(out.evidence), fix=out.fix),
        )


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

"""The weekly picture for families: ``homecare report ELDER --days 7``.

One page (PNG) and the same in HTML, for a weekly email: how the elder's week went in
plain words and four simple charts — activity per day against their usual, time in bed
per night, heart rate, front-door use — and the week's alerts with what was done. Days
come from the daily rollups (:mod:`homecare.schema`) where they exist and from the raw
readings otherwise, with the rollups' own statements; a day without readings is shown
as "no data", and an elder without any gets a page that says so.

The report covers whole local days (the site's ``utc_offset_h``) before ``end``'s day.

Every word, date and number is in the reader's language (``--lang``; :mod:`homecare.i18n`),
and the picture draws it in that language's font (the catalogue's ``font`` entry:
Noto Sans CJK SC for Chinese, Debian's ``fonts-noto-cjk``); a font that is not installed
is an error, never a page of empty boxes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import io
import logging
import re
import statistics
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dashboards.words import CHANNELS, KINDS, OTHER_KIND, OUTCOMES
from homecare.contract import ID_PATTERN
from homecare.errors import ConfigError
from homecare.i18n import N_, Translator, available, translator
from homecare.influx import InfluxClient, InfluxError, quote_ident
from homecare.nights import NIGHT_H, local_midnight, sleep_nights
from homecare.query import rollup_select, select
from homecare.runtime import load_settings, moment
from homecare.schema import (
    DAY_S,
    ELDER,
    HISTORY,
    KIND,
    ROLLED,
    ROLLUPS,
    Alert,
    AlertEscalation,
    BedRollup,
    Door,
    DoorRollup,
    Sleep,
    WearableRollup,
)
from homecare.settings import RetentionSettings

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

USUAL_DAYS = 28
"""Their usual: the median day of the four weeks before the report."""
MIN_USUAL_DAYS = 7
"""Fewer earlier days with data than this: the usual is this week's median day."""
MIN_NIGHT_COVER = 0.5
"""A night with readings for less of its window than this is shown as missing."""
FALLS = ("fall", "fall_recovered")
"""Kinds counted as falls in the week's summary (a fall the wearer cancelled is not)."""



@dataclass
class Day:
    """One local day of the report (and the night that starts that evening)."""

    start: float
    steps: int | None = None
    active_min: float | None = None
    hr: tuple[float, float, float] | None = None
    """Mean, lowest, highest (wearable, else bed sensor)."""
    door_opens: dict[str, int] = field(default_factory=dict)
    bed_readings: int = 0
    in_bed_h: float | None = None
    exits: int | None = None
    bedtime_h: float | None = None
    rise_h: float | None = None

    @property
    def has_data(self) -> bool:
        return bool(self.steps is not None or self.bed_readings or self.door_opens)


@dataclass
class AlertLine:
    ts: float
    kind: str
    severity: str
    state: str
    outcome: str | None = None
    ack_s: float | None = None
    channel: str | None = None


@dataclass
class Picture:
    """Everything the page shows, already read from InfluxDB."""

    elder: str
    name: str
    utc_offset_h: float
    days: list[Day]
    usual: dict[str, float]
    usual_from_history: bool
    alerts: list[AlertLine]
    language: str | None = None
    """The reader's (``None``: the default, English)."""

    @property
    def tr(self) -> Translator:
        return translator(self.language)

    @property
    def has_data(self) -> bool:
        return any(d.has_data for d in self.days)

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts + self.utc_offset_h * 3600, UTC)

    def say(self, ts: float, pattern: str) -> str:
        """A local moment in a CLDR pattern (itself a word of the catalogue)."""
        return self.tr.datetime(self.local(ts), UTC, pattern)

    def day_label(self, day: Day) -> str:
        # Translators: a short day for a chart's axis; the space becomes a line break.
        return self.say(day.start, self.tr.pgettext("date pattern", "EEE d"))

    def day_name(self, day: Day) -> str:
        """A day named in a sentence ("Sun 26")."""
        return self.say(day.start, self.tr.pgettext("day in a sentence", "EEE d"))

    @property
    def bounds(self) -> tuple[str, str]:
        """The first and last day, in words."""
        tr = self.tr
        first = self.say(self.days[0].start, tr.pgettext("date pattern", "EEEE d MMMM"))
        return first, self.say(self.days[-1].start, tr.pgettext("date pattern", "EEEE d MMMM y"))

    @property
    def period(self) -> str:
        first, last = self.bounds
        return self.tr.gettext("{first} to {last}").format(first=first, last=last)


def _history_ok(db: InfluxClient) -> bool:
    name = db.settings.database
    try:
        policies = db.rows(f"SHOW RETENTION POLICIES ON {quote_ident(name)}")
        return any(r["name"] == HISTORY for r in policies)
    except InfluxError:  # a 2.x/3.x server, or an account that may not list them
        return True


def _history_rows(
    db: InfluxClient, measurement: str, elder: str, lo: float, hi: float
) -> list[dict[str, Any]]:
    try:
        q = select(measurement, policy=HISTORY).equal(**{ELDER: elder})
        return db.rows(str(q.between(int(lo * 1000), int(hi * 1000)).group_by("*")))
    except InfluxError:  # no such policy (rollups never installed)
        return []


def daily(
    db: InfluxClient, elder: str, lo: float, hi: float, utc_offset_h: float, history: bool
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Daily rollup rows per base measurement and day (ms): from ``history`` where it has
    the day, else the same statement over the raw readings."""
    out: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for rolled in ROLLED:
        by_day: dict[int, list[dict[str, Any]]] = {}
        if history:
            for row in _history_rows(db, rolled.at("1d"), elder, lo, hi):
                by_day.setdefault(int(row["time"]), []).append(row)
        if len(by_day) < round((hi - lo) / DAY_S):
            merged: dict[tuple[int, str], dict[str, Any]] = {}
            for rollup in (r for r in ROLLUPS if r.target is rolled):
                q = rollup_select(
                    rollup, "1d", database=db.settings.database, utc_offset_h=utc_offset_h,
                    into=False, start_ms=int(lo * 1000), end_ms=int(hi * 1000), elder=elder,
                )  # fmt: skip
                for row in db.rows(str(q)):
                    merged.setdefault((int(row["time"]), row.get(Door.role, "")), {}).update(row)
            have = set(by_day)
            for (day, _), row in merged.items():
                if day not in have:
                    by_day.setdefault(day, []).append(row)
        out[rolled.base] = by_day
    return out


def _nights(
    db: InfluxClient,
    retention: RetentionSettings,
    elder: str,
    days: list[Day],
    end: float,
    history: bool,
) -> None:
    """Fill each day with the night that starts that evening (rollup, else raw readings)."""
    by_start = {round(d.start): d for d in days}
    night_s = (NIGHT_H[1] - NIGHT_H[0]) * 3600
    lo, hi = days[0].start, days[-1].start + DAY_S
    found: dict[int, dict[str, Any]] = {}
    if history:
        rows = _history_rows(db, Sleep.name, elder, lo, hi)
        found = {round(r["time"] / 1000): r for r in rows}
    if len(found) < len(days):
        last = min(end, hi + NIGHT_H[1] * 3600 - DAY_S)
        first = lo + NIGHT_H[1] * 3600 - 1
        if last > first:
            for _, midnight, fields in sleep_nights(
                db, retention, start=first, end=last, elders=[elder]
            ):
                found.setdefault(round(midnight), fields)
    for start, night in found.items():
        day = by_start.get(start)
        if day is None or night.get(Sleep.covered_s, 0) < MIN_NIGHT_COVER * night_s:
            continue
        day.in_bed_h = night[Sleep.in_bed_s] / 3600
        day.exits = int(night[Sleep.exits])
        day.bedtime_h = night.get(Sleep.bedtime_h)
        day.rise_h = night.get(Sleep.rise_h)


def _fill(days: list[Day], week: dict[str, dict[int, list[dict[str, Any]]]]) -> None:
    for day in days:
        key = round(day.start * 1000)
        w, b = WearableRollup, BedRollup
        for row in week[w.base].get(key, []):
            day.steps = int(row.get(w.steps) or 0)
            day.active_min = (row.get(w.active_s) or 0) / 60
            if row.get(w.hr_mean) is not None:
                day.hr = (row[w.hr_mean], row[w.hr_min], row[w.hr_max])
        for row in week[b.base].get(key, []):
            day.bed_readings = int(row.get(b.readings) or 0)
            if day.hr is None and row.get(b.hr_mean) is not None:
                day.hr = (row[b.hr_mean], row[b.hr_min], row[b.hr_max])
        for row in week[DoorRollup.base].get(key, []):
            day.door_opens[str(row.get(Door.role))] = int(row.get(DoorRollup.opens) or 0)


def _alerts(db: InfluxClient, elder: str, lo: float, hi: float, history: bool) -> list[AlertLine]:
    """The alerts that started in ``[lo, hi)``, with their answer and outcome (escalation's
    ``alert_escalation`` story)."""
    since = f"time >= {int(lo * 1000)}ms"
    alerts: dict[str, dict[str, Any]] = {}
    story: list[dict[str, Any]] = []
    a, e = Alert, AlertEscalation
    for rp in [HISTORY, None] if history else [None]:  # the live policy's rows win
        try:
            started = select(a.name, policy=rp).equal(**{ELDER: elder}).where(since)
            q = started.where(f"time < {int(hi * 1000)}ms").group_by("*")
            alerts.update((r[a.id], r) for r in db.rows(str(q)))
            q = select(e.name, policy=rp).equal(**{ELDER: elder}).where(since).group_by("*")
            story += db.rows(str(q))
        except InfluxError:  # no history policy
            continue
    out = []
    for alert_id, row in alerts.items():
        alert = AlertLine(row["time"] / 1000, row[KIND], row[a.severity], row[a.state])
        for ev in sorted((r for r in story if r.get(e.id) == alert_id), key=lambda r: r["time"]):
            if ev.get(e.event) == "resolved" and ev.get(e.detail) in OUTCOMES:
                alert.outcome = ev[e.detail]
            if ev.get(e.event) == "acknowledged" and alert.ack_s is None:
                alert.ack_s = ev["time"] / 1000 - alert.ts
                alert.channel = ev.get(e.channel)
        out.append(alert)
    return sorted(out, key=lambda a: a.ts)


def _usual(days: list[Day]) -> dict[str, float]:
    """The median day of ``days`` that have the measure."""
    values: dict[str, list[float]] = {
        "steps": [d.steps for d in days if d.steps is not None],
        "active_min": [d.active_min for d in days if d.active_min is not None],
        "hr": [d.hr[0] for d in days if d.hr is not None],
        "in_bed_h": [d.in_bed_h for d in days if d.in_bed_h is not None],
        "front": [d.door_opens.get("front", 0) for d in days if d.has_data],
    }
    return {k: float(statistics.median(v)) for k, v in values.items() if v}


def gather(
    db: InfluxClient,
    elder: str,
    *,
    days: int = 7,
    end: float,
    retention: RetentionSettings | None = None,
    name: str | None = None,
    language: str | None = None,
) -> Picture:
    """Read the ``days`` whole local days before ``end``'s day, their usual and alerts."""
    if not re.fullmatch(ID_PATTERN, elder):
        raise ValueError(f"not an elder id: {elder!r} (letters, digits, _ and -)")
    retention = retention or RetentionSettings()
    offset = retention.utc_offset_h
    today = int((end + offset * 3600) // DAY_S)
    lo, hi = local_midnight(today - days, offset), local_midnight(today, offset)
    history = _history_ok(db)
    week = [Day(lo + i * DAY_S) for i in range(days)]
    _fill(week, daily(db, elder, lo, hi, offset, history))
    _nights(db, retention, elder, week, end, history)
    before = [Day(lo - (USUAL_DAYS - i) * DAY_S) for i in range(USUAL_DAYS)]
    _fill(before, daily(db, elder, before[0].start, lo, offset, history))
    from_history = sum(d.steps is not None for d in before) >= MIN_USUAL_DAYS
    usual = _usual(before if from_history else week)
    alerts = _alerts(db, elder, lo, max(hi, end), history)
    return Picture(elder, name or elder, offset, week, usual, from_history, alerts, language)


def _hm(hours: float, tr: Translator) -> str:
    """``9 h 20 min``."""
    minutes = round(hours * 60)
    return tr.gettext("{h} h {m} min").format(h=minutes // 60, m=f"{minutes % 60:02d}")


def _clock(hours: float) -> str:
    """A time of day from hours after midnight (past 24: the next day)."""
    minutes = round(hours * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _compare(value: float, usual: float, more: str, less: str, same: str) -> str:
    if usual <= 0:
        return same
    ratio = value / usual
    return more if ratio > 1.25 else less if ratio < 0.75 else same


def sentences(p: Picture) -> list[str]:
    """The week in plain words, one sentence per topic."""
    tr = p.tr
    _ = tr.gettext
    if not p.has_data:
        first, last = p.bounds
        return [
            _("We received no readings for {name} between {first} and {last}.").format(
                name=p.name, first=first, last=last
            ),
            _("The sensors may be switched off, out of battery or out of reach of the home's "
              "internet connection. Please check them, or ask the care team to."),
        ]  # fmt: skip
    out: list[str] = []
    worn = [d for d in p.days if d.steps is not None]
    if worn:
        steps = statistics.median(d.steps or 0 for d in worn)
        how = (
            _compare(steps, p.usual.get("steps", steps), _("more active than usual"),
                     _("less active than usual"), _("about as active as usual"))
            if p.usual_from_history
            else _("no earlier weeks to compare with yet")
        )  # fmt: skip
        out.append(_("Activity: about {steps} steps on a typical day — {how}.").format(
            steps=tr.number(round(steps), "#,##0"), how=how))  # fmt: skip
        quiet = [
            p.day_name(d)
            for d in worn
            if p.usual.get("steps") and (d.steps or 0) < 0.5 * p.usual["steps"]
        ]
        if quiet:
            if p.usual_from_history:
                out.append(_("Much quieter than their usual: {days}.").format(days=tr.join(quiet)))
            else:
                out.append(_("Much quieter than the rest of the week: {days}.").format(
                    days=tr.join(quiet)))  # fmt: skip
    slept = [d for d in p.days if d.in_bed_h is not None and d.bedtime_h is not None]
    if slept:
        hours = statistics.mean(d.in_bed_h or 0 for d in slept)
        exits = statistics.mean(d.exits or 0 for d in slept)
        bed = statistics.median(d.bedtime_h or 0 for d in slept)
        rise = statistics.median(d.rise_h or 0 for d in slept)
        up = _("did not get up at night") if exits < 0.5 else _(
            "got up {times} times a night").format(times=tr.number(exits, "0.0"))  # fmt: skip
        out.append(
            _("Sleep: about {hours} in bed a night, usually from {bed} to {rise}; {up}.").format(
                hours=_hm(hours, tr), bed=_clock(bed), rise=_clock(rise), up=up)
        )  # fmt: skip
    beats = [d.hr for d in p.days if d.hr is not None]
    if beats:
        mean = statistics.mean(b[0] for b in beats)
        low, high = min(b[1] for b in beats), max(b[2] for b in beats)
        usual = p.usual.get("hr", mean)
        trend = _("higher than usual") if mean > usual + 8 else (
            _("lower than usual") if mean < usual - 8 else _("steady"))  # fmt: skip
        out.append(
            _("Heart rate: {mean} beats a minute on average ({low} at the lowest, {high} at "
              "the highest) — {trend}.").format(mean=f"{mean:.0f}", low=f"{low:.0f}",
                                                high=f"{high:.0f}", trend=trend)
        )  # fmt: skip
    with_doors = [d for d in p.days if d.has_data]
    front = sum(d.door_opens.get("front", 0) for d in with_doors)
    if front:
        out.append(
            tr.ngettext("Front door: opened {n} time, about {daily} a day.",
                        "Front door: opened {n} times, about {daily} a day.", front)
            .format(n=front, daily=f"{front / len(with_doors):.0f}")
        )  # fmt: skip
    else:
        out.append(_("Front door: not opened this week."))
    missing = [p.day_name(d) for d in p.days if not d.has_data]
    if missing:
        out.append(_("No readings on {days}: the sensors may have been off or out of reach.")
                   .format(days=tr.join(missing)))  # fmt: skip
    unworn = [p.day_name(d) for d in p.days if d.has_data and d.steps is None]
    if unworn:
        out.append(_("The wristband sent nothing on {days}.").format(days=tr.join(unworn)))
    falls = [a for a in p.alerts if a.kind in FALLS and a.state != "cancelled"]
    if falls:
        got_up = sum(a.kind == "fall_recovered" for a in falls)
        out.append(tr.ngettext("Falls: {n} this week ({up} got up again without help).",
                               "Falls: {n} this week ({up} got up again without help).",
                               len(falls)).format(n=len(falls), up=got_up))  # fmt: skip
    n = len(p.alerts)
    if any(a.severity != "info" for a in p.alerts):
        out.append(tr.ngettext("Alerts: {n} this week, listed below with what was done.",
                               "Alerts: {n} this week, listed below with what was done.", n)
                   .format(n=n))  # fmt: skip
    elif p.alerts:
        out.append(tr.ngettext("Alerts: {n} about the equipment only, none about {name}.",
                               "Alerts: {n} about the equipment only, none about {name}.", n)
                   .format(n=n, name=p.name))  # fmt: skip
    else:
        out.append(_("Alerts: none this week."))
    return out


def alert_rows(p: Picture) -> list[tuple[str, str, str]]:
    """When, what and what was done, for each alert of the week: in words a family knows
    (never a kind's code name, a protocol or an id)."""
    tr = p.tr
    _ = tr.gettext
    rows = []
    for a in p.alerts:
        what = _(KINDS.get(a.kind, OTHER_KIND))
        if a.state == "cancelled":
            done = _("Cancelled: the wearer pressed \u201cI'm OK\u201d.")
        else:
            parts = []
            if a.ack_s is not None:
                via = CHANNELS.get(a.channel or "")
                parts.append(
                    _("answered in {duration} {how}").format(duration=_duration(a.ack_s, tr),
                                                             how=_(via))
                    if via else _("answered in {duration}").format(duration=_duration(a.ack_s, tr))
                )  # fmt: skip
            if a.outcome:
                parts.append(_(OUTCOMES.get(a.outcome, N_("closed"))))
            elif a.state in ("open", "notified"):
                parts.append(_("carers were told") if a.state == "notified" else
                             _("not yet answered"))  # fmt: skip
            elif a.state == "resolved":
                parts.append(_("resolved"))
            joined = _("; ").join(parts)
            done = _("{what}.").format(what=joined[:1].upper() + joined[1:])
        # Translators: when an alert began, in the list of the week's alerts.
        rows.append((p.say(a.ts, tr.pgettext("date pattern", "EEE d, HH:mm")), what, done))
    return rows


def _duration(seconds: float, tr: Translator) -> str:
    if seconds < 90:
        n = round(seconds)
        return tr.ngettext("{n} second", "{n} seconds", n).format(n=n)
    n = round(seconds / 60)
    return tr.ngettext("{n} minute", "{n} minutes", n).format(n=n)


GREEN, BLUE, RED, ORANGE, GREY = "#3d8b37", "#3b6fb6", "#c0392b", "#c77c2a", "#9a9a9a"


def _no_data(ax: Axes, x: list[int], missing: list[bool], tr: Translator) -> None:
    for i, gone in zip(x, missing, strict=True):
        if gone:
            ax.text(i, 0.04, tr.gettext("no data"), rotation=90, ha="center", va="bottom",
                    color=GREY, fontsize=9, transform=ax.get_xaxis_transform())  # fmt: skip


def _style(ax: Axes, title: str, labels: list[str]) -> None:
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    ax.set_xticks(range(len(labels)), labels, fontsize=9)
    ax.tick_params(axis="y", labelsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e6e6e6")
    ax.set_axisbelow(True)


def draw_charts(p: Picture, axes: list[Axes]) -> None:
    """Steps, time in bed, heart rate and front door per day, on four axes."""
    tr = p.tr
    _ = tr.gettext
    labels = [p.day_label(d).replace(" ", "\n") for d in p.days]
    x = list(range(len(p.days)))
    steps, bed, heart, door = axes
    values = [d.steps or 0 for d in p.days]
    steps.bar(x, values, color=GREEN, width=0.6)
    top = max([*values, p.usual.get("steps", 0), 1])
    if "steps" in p.usual:
        usual = _("their usual day") if p.usual_from_history else _("typical day this week")
        steps.axhline(p.usual["steps"], color="#333", linestyle="--", linewidth=1, label=usual)
        steps.legend(fontsize=8, frameon=False, loc="upper left")
    _no_data(steps, x, [d.steps is None for d in p.days], tr)
    steps.set_ylim(0, top * 1.2)
    _style(steps, _("Steps per day"), labels)

    hours = [d.in_bed_h or 0 for d in p.days]
    bed.bar(x, hours, color=BLUE, width=0.6)
    for i, d in zip(x, p.days, strict=True):
        if d.exits:
            up = _("up {n}\u00d7").format(n=d.exits)
            bed.text(i, hours[i] + 0.2, up, ha="center", fontsize=8)
    _no_data(bed, x, [d.in_bed_h is None for d in p.days], tr)
    bed.set_ylim(0, max([*hours, 10]) * 1.25)
    _style(bed, _("Hours in bed each night (by evening)"), labels)

    nan = float("nan")
    mean = [d.hr[0] if d.hr else nan for d in p.days]
    low = [d.hr[1] if d.hr else nan for d in p.days]
    high = [d.hr[2] if d.hr else nan for d in p.days]
    heart.fill_between(x, low, high, color=RED, alpha=0.15, linewidth=0,
                       label=_("lowest–highest"))  # fmt: skip
    heart.plot(x, mean, color=RED, marker="o", label=_("average"))
    known = [v for v in low + high if v == v]
    heart.set_ylim(min([*known, 50]) - 10, max([*known, 100]) + 10)
    _no_data(heart, x, [d.hr is None for d in p.days], tr)
    heart.legend(fontsize=8, frameon=False, loc="upper right")
    _style(heart, _("Heart rate (beats a minute)"), labels)

    opens = [d.door_opens.get("front", 0) for d in p.days]
    door.bar(x, opens, color=ORANGE, width=0.6)
    _no_data(door, x, [not d.has_data for d in p.days], tr)
    door.set_ylim(0, max([*opens, 4]) * 1.25)
    # The y axis's AutoLocator is a MaxNLocator, which takes ``integer``; the stub says Locator.
    door.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    _style(door, _("Front door openings"), labels)


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in "WF"


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` columns. A wide (CJK) character takes two and a line
    may break before any of them, as Chinese is written without spaces; other words
    break at spaces, so an English sentence about 王秀英 wraps as English does.

    >>> _wrap("about as active as usual — steady", 16)
    ['about as active', 'as usual —', 'steady']
    >>> _wrap("活动：一般每天约4,000步，和平时差不多。", 20)
    ['活动：一般每天约', '4,000步，和平时差不', '多。']
    """
    tokens: list[str] = []
    for char in text:
        if char == " " or _wide(char) or not tokens or tokens[-1] == " " or _wide(tokens[-1][-1]):
            tokens.append(char)
        else:
            tokens[-1] += char
    lines, line, used = [], "", 0
    for token in tokens:
        cost = sum(2 if _wide(c) else 1 for c in token)
        if used + cost > width and line.strip():
            lines.append(line.rstrip())
            line, used = "", 0
        if token == " " and not line:
            continue
        line += token
        used += cost
    return [*lines, line.rstrip()] if line.strip() or not lines else lines


def font(tr: Translator) -> str:
    """The language's font family (the catalogue's ``font`` entry), found among the
    installed fonts: matplotlib's font cache may predate a font installed since, so the
    system's fonts are looked at again before giving up with the package to install."""
    # Translators: the font family your language's picture is drawn in (installed on the
    # server), e.g. "Noto Sans CJK SC" for simplified Chinese.
    family = tr.pgettext("font", "DejaVu Sans")
    if _installed(family):
        return family
    raise ConfigError(
        f"the font {family!r} for language {tr.language} is not installed "
        "(on Debian: apt-get install fonts-noto-cjk)"
    )


def families(tr: Translator) -> list[str]:
    """The language's font first, then every other shipped language's that is installed
    (an English page about 王秀英 draws her name too), then matplotlib's own."""
    chain = [font(tr)]
    for lang in available():
        with contextlib.suppress(ConfigError):
            chain.append(font(translator(lang)))
    return list(dict.fromkeys([*chain, "DejaVu Sans"]))


@functools.cache
def _installed(family: str) -> bool:
    from matplotlib import font_manager

    wanted = font_manager.FontProperties(family=family)
    for attempt in range(2):
        try:
            font_manager.findfont(wanted, fallback_to_default=False)
            return True
        except ValueError:
            if attempt:
                break
            known = {f.fname for f in font_manager.fontManager.ttflist}
            for path in font_manager.findSystemFonts():
                if path not in known:
                    with contextlib.suppress(OSError, RuntimeError, ValueError):
                        font_manager.fontManager.addfont(path)
    return False


@contextlib.contextmanager
def _in_font(tr: Translator) -> Iterator[None]:
    """Draw (and save) in the language's fonts."""
    import matplotlib

    with matplotlib.rc_context({"font.family": families(tr)}):
        yield


def render_page(p: Picture) -> Figure:
    """The one-page picture: title, the week in words, four charts, the alerts. Save it
    inside :func:`_in_font` (as :func:`page_png` does)."""
    from matplotlib.figure import Figure

    _ = p.tr.gettext
    fig = Figure(figsize=(8.27, 11.69), dpi=110)
    fig.text(0.06, 0.955, _("{name}'s week").format(name=p.name), fontsize=24,
             fontweight="bold")  # fmt: skip
    fig.text(0.06, 0.93, p.period, fontsize=13, color="#555")
    y = 0.89
    fig.text(0.06, y, _("In short"), fontsize=15, fontweight="bold")
    y -= 0.03
    for sentence in sentences(p):
        for i, part in enumerate(_wrap(sentence, 84)):
            fig.text(0.06, y, ("\u2022  " if i == 0 else "    ") + part, fontsize=12)
            y -= 0.021
        y -= 0.004
    if p.has_data:
        grid = fig.add_gridspec(
            2, 2, left=0.08, right=0.96, top=y - 0.025, bottom=y - 0.37, hspace=0.5, wspace=0.22
        )
        draw_charts(p, [fig.add_subplot(grid[i, j]) for i in range(2) for j in range(2)])
        y -= 0.45
    rows = alert_rows(p)
    if rows:
        fig.text(0.06, y, _("Alerts this week"), fontsize=15, fontweight="bold")
        y -= 0.028
        for shown, (when, what, done) in enumerate(rows):
            if y < 0.1 and shown < len(rows) - 1:  # the page is full
                more = len(rows) - shown
                fig.text(0.06, y, _("… and {n} more (see the web page).").format(n=more),
                         fontsize=11)  # fmt: skip
                break
            fig.text(0.06, y, when, fontsize=11, color="#555")
            fig.text(0.25, y, what, fontsize=11, fontweight="bold")
            for part in _wrap(done, 62):
                y -= 0.019
                fig.text(0.25, y, part, fontsize=11)
            y -= 0.026
    fig.text(0.06, 0.02, _made(p), fontsize=9, color="#777")
    return fig


def _made(p: Picture) -> str:
    tr = p.tr
    today = tr.datetime(datetime.now(UTC), UTC, tr.pgettext("date pattern", "d MMMM y"))
    return tr.gettext("Made on {date} from the home's sensors.").format(date=today)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def page_png(p: Picture) -> bytes:
    """The one-page picture as PNG, drawn in the reader's language's font."""
    with _in_font(p.tr):
        return _png(render_page(p))


def render_html(p: Picture) -> str:
    """The same in HTML for an email: large text, the charts inline, the alerts as a table."""
    from matplotlib.figure import Figure

    esc = html.escape
    _ = p.tr.gettext
    items = "".join(f"<li>{esc(s)}</li>" for s in sentences(p))
    charts = ""
    if p.has_data:
        with _in_font(p.tr):
            fig = Figure(figsize=(10, 6.5), dpi=100, layout="constrained")
            axes = fig.subplots(2, 2).ravel().tolist()
            draw_charts(p, axes)
            data = base64.b64encode(_png(fig)).decode()
        alt = _("Charts of the week: steps per day, hours in bed, heart rate and front door "
                "openings")  # fmt: skip
        charts = (f'<img style="width:100%" alt="{esc(alt, quote=True)}" '
                  f'src="data:image/png;base64,{data}">')  # fmt: skip
    rows = alert_rows(p)
    none = "<p>" + esc(_("None.")) + "</p>"
    alerts = (
        "<table style='border-collapse:collapse;width:100%'>"
        + "".join(
            f"<tr style='border-top:1px solid #ddd'><td style='padding:6px;color:#555'>"
            f"{esc(when)}</td><td style='padding:6px'><b>{esc(what)}</b><br>{esc(done)}</td></tr>"
            for when, what, done in rows
        )
        + "</table>"
        if rows
        else none
    )
    title = esc(_("{name}'s week").format(name=p.name))
    short, listed = esc(_("In short")), esc(_("Alerts this week"))
    return (
        f'<!doctype html>\n<html lang="{esc(p.tr.language)}"><head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n"
        '<body style="font-family:sans-serif;max-width:760px;margin:auto;padding:16px;'
        'font-size:18px;line-height:1.5;color:#222">\n'
        f"<h1>{title}</h1><p style='color:#555'>{esc(p.period)}</p>\n"
        f"<h2>{short}</h2><ul>{items}</ul>\n{charts}\n<h2>{listed}</h2>{alerts}\n"
        f"<p style='color:#777;font-size:14px'>{esc(_made(p))}</p>\n</body></html>\n"
    )


def write(p: Picture, folder: Path) -> tuple[Path, Path]:
    """Write ``<elder>-<last day>.png`` and ``.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{p.elder}-{p.local(p.days[-1].start):%Y-%m-%d}"
    png, page = folder / f"{stem}.png", folder / f"{stem}.html"
    png.write_bytes(page_png(p))
    page.write_text(render_html(p))
    log.info("report for %s: %d days, %d alerts", p.elder, len(p.days), len(p.alerts))
    return png, page


ReaderFrom = Callable[[Path, str, str | None], tuple[str, str | None]]
"""(registry file, elder, family contact or None) → how the page names the elder and in
which language (None: the default); ``KeyError`` for one not in it. The composition
root gives it: the registry belongs to escalation, which the dashboards do not import."""


def make_report_command(reader_from: ReaderFrom | None = None) -> Callable[..., None]:
    """``homecare report``; with ``reader_from`` and HOMECARE_REGISTRY, the page names the
    elder as the registry does and speaks the contact's language."""

    def report_command(
        elder: Annotated[str, typer.Argument(help="The elder's id (as in the telemetry).")],
        days: Annotated[int, typer.Option(min=1, max=31, help="Whole days before --end.")] = 7,
        out: Annotated[
            Path | None,
            typer.Option(help="Folder for the PNG and HTML (default <state_dir>/reports)."),
        ] = None,
        end: Annotated[
            str, typer.Option(help="Report the days before this one (now, ISO).")
        ] = "now",
        name: Annotated[
            str | None, typer.Option(help="How to call them on the page (default: the id).")
        ] = None,
        lang: Annotated[
            str | None,
            typer.Option(help="The family's language, e.g. zh-CN (default: English)."),
        ] = None,
        district: Annotated[
            str | None,
            typer.Option(help="The elder's district (HOMECARE_DISTRICTS): its primary "
                         "InfluxDB is asked, its replica when the primary does not answer."),
        ] = None,
        reader: Annotated[
            str | None,
            typer.Option("--for", help="The family contact it is for: their language "
                         "(registry)."),
        ] = None,
    ) -> None:  # fmt: skip
        """A one-page picture of an elder's week for the family: PNG and HTML.

        With HOMECARE_REGISTRY set, the page names the elder as the registry does and
        speaks the language of the contact (--for) or of the elder's site, unless
        --name/--lang say."""
        path = load_settings().registry if reader_from is not None else None
        if path is not None and reader_from is not None and (name is None or lang is None):
            try:
                called, language = reader_from(path, elder, reader)
            except ConfigError as exc:
                raise typer.BadParameter(str(exc)) from exc
            except KeyError as exc:
                raise typer.BadParameter(
                    f"{exc.args[0]!r} is not in the registry {path}"
                ) from exc
            name, lang = name or called, lang or language
        elif reader is not None:
            raise typer.BadParameter("--for needs the registry: set HOMECARE_REGISTRY")
        write_report(elder=elder, days=days, out=out, end=end, name=name, lang=lang,
                     district=district)  # fmt: skip

    return report_command


def write_report(
    *, elder: str, days: int, out: Path | None, end: str, name: str | None,
    lang: str | None, district: str | None,
) -> None:  # fmt: skip
    """Gather the week from InfluxDB (the district's, failing over to its replica) and
    write the picture; the command's errors as the command line says them."""
    import time

    settings = load_settings(influx=district is None)
    try:
        urls = settings.influx_urls(district)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        language = translator(lang).language
        with InfluxClient.failover(settings.influx, urls) as db:
            picture = gather(
                db, elder, days=days, end=moment(end, time.time()),
                retention=settings.retention, name=name, language=language,
            )  # fmt: skip
        font(picture.tr)  # before anything is written: a missing font is the whole error
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except InfluxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    png, page = write(picture, out or settings.state_dir / "reports")
    if not picture.has_data:
        typer.echo(f"no readings for {elder} in those {days} days: the page says so", err=True)
    typer.echo(f"wrote {png} and {page}")

"""The weekly picture for families: ``homecare report ELDER --days 7``.

One page (PNG) and the same in HTML, for a weekly email: how the elder's week went in
plain words and four simple charts — activity per day against their usual, time in bed
per night, heart rate, front-door use — and the week's alerts with what was done. Days
come from the daily rollups (:mod:`homecare.schema`) where they exist and from the raw
readings otherwise, with the rollups' own statements; a day without readings is shown
as "no data", and an elder without any gets a page that says so.

The report covers whole local days (the site's ``utc_offset_h``) before ``end``'s day.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
import statistics
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from homecare.contract import ID_PATTERN
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

KINDS = {
    "fall": "A possible fall",
    "sos": "The emergency button was pressed",
    "inactivity": "No movement for longer than usual",
    "wandering": "Went out at night",
    "bed_exit": "Out of bed at night for a long time",
    "not_up": "Stayed in bed much later than usual",
    "bathroom": "A long time in the bathroom",
    "tachycardia": "Heart rate was very high",
    "bradycardia": "Heart rate was very low",
    "low_spo2": "Blood oxygen was low",
    "low_br": "Breathing was slow",
    "high_br": "Breathing was fast",
    "device_offline": "A sensor stopped sending",
    "battery_low": "A battery was running low",
    "not_worn": "The wristband was not worn",
}
OUTCOMES = {
    "false_alarm": "it was a false alarm",
    "handled_at_home": "handled at home",
    "visit": "someone visited",
    "ambulance": "an ambulance was called",
}
CHANNELS = {"call_centre": "the call centre", "email": "email", "sms": "text message"}


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

    @property
    def has_data(self) -> bool:
        return any(d.has_data for d in self.days)

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts + self.utc_offset_h * 3600, UTC)

    def day_label(self, day: Day) -> str:
        return self.local(day.start).strftime("%a %-d")

    @property
    def bounds(self) -> tuple[str, str]:
        """The first and last day, in words."""
        first, last = self.local(self.days[0].start), self.local(self.days[-1].start)
        return f"{first:%A %-d %B}", f"{last:%A %-d %B %Y}"

    @property
    def period(self) -> str:
        return "{} to {}".format(*self.bounds)


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
    return Picture(elder, name or elder, offset, week, usual, from_history, alerts)


def _hm(hours: float) -> str:
    """``9 h 20 min``."""
    minutes = round(hours * 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _clock(hours: float) -> str:
    """A time of day from hours after midnight (past 24: the next day)."""
    minutes = round(hours * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _compare(value: float, usual: float, more: str, less: str, same: str) -> str:
    if usual <= 0:
        return same
    ratio = value / usual
    return more if ratio > 1.25 else less if ratio < 0.75 else same


def _list(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def sentences(p: Picture) -> list[str]:
    """The week in plain words, one sentence per topic."""
    if not p.has_data:
        return [
            "We received no readings for {} between {} and {}.".format(p.name, *p.bounds),
            "The sensors may be switched off, out of battery or out of reach of the home's "
            "internet connection. Please check them, or ask the care team to.",
        ]
    out: list[str] = []
    worn = [d for d in p.days if d.steps is not None]
    if worn:
        steps = statistics.median(d.steps or 0 for d in worn)
        how = (
            _compare(steps, p.usual.get("steps", steps), "more active than usual",
                     "less active than usual", "about as active as usual")
            if p.usual_from_history
            else "no earlier weeks to compare with yet"
        )  # fmt: skip
        out.append(f"Activity: about {steps:,.0f} steps on a typical day — {how}.")
        quiet = [
            p.day_label(d)
            for d in worn
            if p.usual.get("steps") and (d.steps or 0) < 0.5 * p.usual["steps"]
        ]
        if quiet:
            rest = "their usual" if p.usual_from_history else "the rest of the week"
            out.append(f"Much quieter than {rest}: {_list(quiet)}.")
    slept = [d for d in p.days if d.in_bed_h is not None and d.bedtime_h is not None]
    if slept:
        hours = statistics.mean(d.in_bed_h or 0 for d in slept)
        exits = statistics.mean(d.exits or 0 for d in slept)
        bed = statistics.median(d.bedtime_h or 0 for d in slept)
        rise = statistics.median(d.rise_h or 0 for d in slept)
        up = "did not get up at night" if exits < 0.5 else f"got up {exits:.1f} times a night"
        out.append(
            f"Sleep: about {_hm(hours)} in bed a night, usually from {_clock(bed)} to "
            f"{_clock(rise)}; {up}."
        )
    beats = [d.hr for d in p.days if d.hr is not None]
    if beats:
        mean = statistics.mean(b[0] for b in beats)
        low, high = min(b[1] for b in beats), max(b[2] for b in beats)
        usual = p.usual.get("hr", mean)
        trend = "higher than usual" if mean > usual + 8 else (
            "lower than usual" if mean < usual - 8 else "steady")  # fmt: skip
        out.append(
            f"Heart rate: {mean:.0f} beats a minute on average ({low:.0f} at the lowest, "
            f"{high:.0f} at the highest) — {trend}."
        )
    with_doors = [d for d in p.days if d.has_data]
    front = sum(d.door_opens.get("front", 0) for d in with_doors)
    if front:
        out.append(f"Front door: opened {front} times, about {front / len(with_doors):.0f} a day.")
    else:
        out.append("Front door: not opened this week.")
    missing = [p.day_label(d) for d in p.days if not d.has_data]
    if missing:
        out.append(
            f"No readings on {_list(missing)}: the sensors may have been off or out of reach."
        )
    unworn = [p.day_label(d) for d in p.days if d.has_data and d.steps is None]
    if unworn:
        out.append(f"The wristband sent nothing on {_list(unworn)}.")
    if any(a.severity != "info" for a in p.alerts):
        out.append(f"Alerts: {len(p.alerts)} this week, listed below with what was done.")
    elif p.alerts:
        out.append(f"Alerts: {len(p.alerts)} about the equipment only, none about {p.name}.")
    else:
        out.append("Alerts: none this week.")
    return out


def alert_rows(p: Picture) -> list[tuple[str, str, str]]:
    """When, what and what was done, for each alert of the week."""
    rows = []
    for a in p.alerts:
        what = KINDS.get(a.kind, a.kind.replace("_", " ").capitalize())
        if a.state == "cancelled":
            done = "Cancelled: the wearer pressed \u201cI'm OK\u201d."
        else:
            parts = []
            if a.ack_s is not None:
                via = CHANNELS.get(a.channel or "", a.channel or "")
                parts.append(f"Answered in {_duration(a.ack_s)}" + (f" by {via}" if via else ""))
            if a.outcome:
                parts.append(OUTCOMES.get(a.outcome, a.outcome.replace("_", " ")))
            elif a.state in ("open", "notified"):
                parts.append("carers were told" if a.state == "notified" else "not yet answered")
            elif a.state == "resolved":
                parts.append("resolved")
            done = "; ".join(parts).capitalize() + "."
        rows.append((p.local(a.ts).strftime("%a %-d, %H:%M"), what, done))
    return rows


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    return f"{seconds / 60:.0f} minutes"


GREEN, BLUE, RED, ORANGE, GREY = "#3d8b37", "#3b6fb6", "#c0392b", "#c77c2a", "#9a9a9a"


def _no_data(ax: Axes, x: list[int], missing: list[bool]) -> None:
    for i, gone in zip(x, missing, strict=True):
        if gone:
            ax.text(i, 0.04, "no data", rotation=90, ha="center", va="bottom", color=GREY,
                    fontsize=9, transform=ax.get_xaxis_transform())  # fmt: skip


def _style(ax: Axes, title: str, labels: list[str]) -> None:
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    ax.set_xticks(range(len(labels)), labels, fontsize=9)
    ax.tick_params(axis="y", labelsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e6e6e6")
    ax.set_axisbelow(True)


def draw_charts(p: Picture, axes: list[Axes]) -> None:
    """Steps, time in bed, heart rate and front door per day, on four axes."""
    labels = [p.day_label(d).replace(" ", "\n") for d in p.days]
    x = list(range(len(p.days)))
    steps, bed, heart, door = axes
    values = [d.steps or 0 for d in p.days]
    steps.bar(x, values, color=GREEN, width=0.6)
    top = max([*values, p.usual.get("steps", 0), 1])
    if "steps" in p.usual:
        usual = "their usual day" if p.usual_from_history else "typical day this week"
        steps.axhline(p.usual["steps"], color="#333", linestyle="--", linewidth=1, label=usual)
        steps.legend(fontsize=8, frameon=False, loc="upper left")
    _no_data(steps, x, [d.steps is None for d in p.days])
    steps.set_ylim(0, top * 1.2)
    _style(steps, "Steps per day", labels)

    hours = [d.in_bed_h or 0 for d in p.days]
    bed.bar(x, hours, color=BLUE, width=0.6)
    for i, d in zip(x, p.days, strict=True):
        if d.exits:
            bed.text(i, hours[i] + 0.2, f"up {d.exits}\u00d7", ha="center", fontsize=8)
    _no_data(bed, x, [d.in_bed_h is None for d in p.days])
    bed.set_ylim(0, max([*hours, 10]) * 1.25)
    _style(bed, "Hours in bed each night (by evening)", labels)

    nan = float("nan")
    mean = [d.hr[0] if d.hr else nan for d in p.days]
    low = [d.hr[1] if d.hr else nan for d in p.days]
    high = [d.hr[2] if d.hr else nan for d in p.days]
    heart.fill_between(x, low, high, color=RED, alpha=0.15, linewidth=0, label="lowest–highest")
    heart.plot(x, mean, color=RED, marker="o", label="average")
    known = [v for v in low + high if v == v]
    heart.set_ylim(min([*known, 50]) - 10, max([*known, 100]) + 10)
    _no_data(heart, x, [d.hr is None for d in p.days])
    heart.legend(fontsize=8, frameon=False, loc="upper right")
    _style(heart, "Heart rate (beats a minute)", labels)

    opens = [d.door_opens.get("front", 0) for d in p.days]
    door.bar(x, opens, color=ORANGE, width=0.6)
    _no_data(door, x, [not d.has_data for d in p.days])
    door.set_ylim(0, max([*opens, 4]) * 1.25)
    # The y axis's AutoLocator is a MaxNLocator, which takes ``integer``; the stub says Locator.
    door.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    _style(door, "Front door openings", labels)


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def render_page(p: Picture) -> Figure:
    """The one-page picture: title, the week in words, four charts, the alerts."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69), dpi=110)
    fig.text(0.06, 0.955, f"{p.name}'s week", fontsize=24, fontweight="bold")
    fig.text(0.06, 0.93, p.period, fontsize=13, color="#555")
    y = 0.89
    fig.text(0.06, y, "In short", fontsize=15, fontweight="bold")
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
        fig.text(0.06, y, "Alerts this week", fontsize=15, fontweight="bold")
        y -= 0.028
        for shown, (when, what, done) in enumerate(rows):
            if y < 0.1 and shown < len(rows) - 1:  # the page is full
                more = len(rows) - shown
                fig.text(0.06, y, f"… and {more} more (see the web page).", fontsize=11)
                break
            fig.text(0.06, y, when, fontsize=11, color="#555")
            fig.text(0.25, y, what, fontsize=11, fontweight="bold")
            for part in _wrap(done, 62):
                y -= 0.019
                fig.text(0.25, y, part, fontsize=11)
            y -= 0.026
    fig.text(
        0.06, 0.02, f"Made on {datetime.now(UTC):%-d %B %Y} from the home's sensors.",
        fontsize=9, color="#777",
    )  # fmt: skip
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_html(p: Picture) -> str:
    """The same in HTML for an email: large text, the charts inline, the alerts as a table."""
    from matplotlib.figure import Figure

    esc = html.escape
    items = "".join(f"<li>{esc(s)}</li>" for s in sentences(p))
    charts = ""
    if p.has_data:
        fig = Figure(figsize=(10, 6.5), dpi=100, layout="constrained")
        axes = fig.subplots(2, 2).ravel().tolist()
        draw_charts(p, axes)
        data = base64.b64encode(_png(fig)).decode()
        charts = (
            '<img style="width:100%" alt="Charts of the week: steps per day, hours in bed, '
            f'heart rate and front door openings" src="data:image/png;base64,{data}">'
        )
    rows = alert_rows(p)
    alerts = (
        "<table style='border-collapse:collapse;width:100%'>"
        + "".join(
            f"<tr style='border-top:1px solid #ddd'><td style='padding:6px;color:#555'>"
            f"{esc(when)}</td><td style='padding:6px'><b>{esc(what)}</b><br>{esc(done)}</td></tr>"
            for when, what, done in rows
        )
        + "</table>"
        if rows
        else "<p>None.</p>"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(p.name)}'s week</title></head>\n"
        '<body style="font-family:sans-serif;max-width:760px;margin:auto;padding:16px;'
        'font-size:18px;line-height:1.5;color:#222">\n'
        f"<h1>{esc(p.name)}'s week</h1><p style='color:#555'>{esc(p.period)}</p>\n"
        f"<h2>In short</h2><ul>{items}</ul>\n{charts}\n<h2>Alerts this week</h2>{alerts}\n"
        f"<p style='color:#777;font-size:14px'>Made on {datetime.now(UTC):%-d %B %Y} from "
        "the home's sensors.</p>\n</body></html>\n"
    )


def write(p: Picture, folder: Path) -> tuple[Path, Path]:
    """Write ``<elder>-<last day>.png`` and ``.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{p.elder}-{p.local(p.days[-1].start):%Y-%m-%d}"
    png, page = folder / f"{stem}.png", folder / f"{stem}.html"
    png.write_bytes(_png(render_page(p)))
    page.write_text(render_html(p))
    log.info("report for %s: %d days, %d alerts", p.elder, len(p.days), len(p.alerts))
    return png, page


def report_command(
    elder: Annotated[str, typer.Argument(help="The elder's id (as in the telemetry).")],
    days: Annotated[int, typer.Option(min=1, max=31, help="Whole days before --end.")] = 7,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the PNG and HTML (default <state_dir>/reports).")
    ] = None,
    end: Annotated[str, typer.Option(help="Report the days before this one (now, ISO).")] = "now",
    name: Annotated[
        str | None, typer.Option(help="How to call them on the page (default: the id).")
    ] = None,
) -> None:
    """A one-page picture of an elder's week for the family: PNG and HTML."""
    import time

    settings = load_settings(influx=True)
    try:
        with InfluxClient(settings.influx) as db:
            picture = gather(
                db, elder, days=days, end=moment(end, time.time()),
                retention=settings.retention, name=name,
            )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except InfluxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    png, page = write(picture, out or settings.state_dir / "reports")
    if not picture.has_data:
        typer.echo(f"no readings for {elder} in those {days} days: the page says so", err=True)
    typer.echo(f"wrote {png} and {page}")

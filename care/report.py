"""The numbers programmes report: the monthly visit rate per site and group against its
target, visits and calls per worker, open follow-ups; as points for the care dashboard
(:class:`homecare.schema.CareVisitRate` and friends, in ``history``) and as a CSV file.

A group's rate for a month is the share of its elders (in the registry now) who had at
least one contact of the kind their group asks for (a visit, or a call for call
groups; a visit counts for both) in that calendar month (UTC).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from care import texts
from care.policy import VisitPolicy, counts_for
from care.register import Register
from escalation.registry import Registry
from homecare.i18n import Translator
from homecare.influx import InfluxClient, escape_tag, line
from homecare.schema import (
    CARE_GROUP,
    HISTORY,
    SITE,
    WORKER,
    CareFollowUps,
    CareVisitRate,
    CareWorkerVisits,
)


def month_bounds(month: str | None, now: float) -> tuple[float, float, str]:
    """``(start, end, "YYYY-MM")`` of a month (default: the one ``now`` is in), UTC.

    >>> month_bounds("2026-12", 0)[2], month_bounds(None, 1_798_761_600.0)[2]
    ('2026-12', '2027-01')
    """
    if month is None:
        at = datetime.fromtimestamp(now, UTC)
        y, m = at.year, at.month
    else:
        try:
            y, m = (int(x) for x in month.split("-"))
            datetime(y, m, 1, tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"month {month!r} is not YYYY-MM") from exc
    start = datetime(y, m, 1, tzinfo=UTC)
    end = datetime(y + m // 12, m % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp(), f"{y:04d}-{m:02d}"


@dataclass(frozen=True, slots=True)
class GroupRate:
    site: str
    group: str
    elders: int
    contacted: int
    target_pct: float

    @property
    def rate_pct(self) -> float:
        return round(100.0 * self.contacted / self.elders, 1) if self.elders else 100.0


@dataclass(frozen=True, slots=True)
class WorkerCount:
    site: str
    worker: str
    visits: int
    calls: int


@dataclass
class MonthReport:
    month: str
    start: float
    rates: list[GroupRate]
    workers: list[WorkerCount]
    follow_ups_open: dict[str, int]
    overdue: dict[str, int]


def month_report(
    register: Register, registry: Registry, policy: VisitPolicy, *, month: str | None,
    now: float, site: str | None = None,
) -> MonthReport:  # fmt: skip
    start, end, name = month_bounds(month, now)
    contacts = register.contacts_between(site, start, end)
    sites = sorted({e.site for e in registry.elders if site is None or e.site == site})
    by_elder: dict[tuple[str, str], set[str]] = {}
    for c in contacts:
        by_elder.setdefault((c.site, c.elder), set()).add(c.kind)
    group_of = {
        (e.site, e.id): policy.group_of(e)
        for e in registry.elders
        if site is None or e.site == site
    }
    members: dict[tuple[str, str], list[str]] = {}
    for (s, elder), group in group_of.items():
        if group is not None:
            members.setdefault((s, group.name), []).append(elder)
    rates = []
    for s in sites:
        for group in policy.groups:
            ids = members.get((s, group.name), [])
            done = sum(any(counts_for(group, k) for k in by_elder.get((s, e), ())) for e in ids)
            rates.append(GroupRate(s, group.name, len(ids), done, group.target_pct))
    workers: dict[tuple[str, str], list[int]] = {}
    for c in contacts:
        counts = workers.setdefault((c.site, c.worker), [0, 0])
        counts[0 if c.kind == "visit" else 1] += 1
    follow = dict.fromkeys(sites, 0)
    for c in register.open_follow_ups(site):
        follow[c.site] = follow.get(c.site, 0) + 1
    overdue = dict.fromkeys(sites, 0)
    last = {s: register.last_contacts(s) for s in sites}
    for (s, elder), of in group_of.items():
        if of is None:
            continue
        times = [at for k, at in last[s].get(elder, {}).items() if counts_for(of, k)]
        if not times or max(times) + of.every_days * 86400 < min(now, end):
            overdue[s] += 1
    return MonthReport(
        name, start, rates,
        [WorkerCount(s, w, v, c) for (s, w), (v, c) in sorted(workers.items())],
        follow, overdue,
    )  # fmt: skip


def points(report: MonthReport) -> list[str]:
    """The report as points at the month's first midnight (a rerun overwrites them)."""
    ts = math.floor(report.start * 1000)
    out = []
    for r in report.rates:
        tags = f"{CARE_GROUP}={escape_tag(r.group)},{SITE}={escape_tag(r.site)}"
        out.append(line(CareVisitRate.name, tags, {
            CareVisitRate.elders_in_group: r.elders, CareVisitRate.elders_contacted: r.contacted,
            CareVisitRate.rate_pct: float(r.rate_pct), CareVisitRate.target_pct: r.target_pct,
        }, ts))  # fmt: skip
    for w in report.workers:
        tags = f"{SITE}={escape_tag(w.site)},{WORKER}={escape_tag(w.worker)}"
        out.append(line(CareWorkerVisits.name, tags, {
            CareWorkerVisits.visits_made: w.visits, CareWorkerVisits.calls_made: w.calls,
        }, ts))  # fmt: skip
    for s, n in report.follow_ups_open.items():
        out.append(line(CareFollowUps.name, f"{SITE}={escape_tag(s)}", {
            CareFollowUps.follow_ups_open: n,
            CareFollowUps.elders_overdue: report.overdue.get(s, 0),
        }, ts))  # fmt: skip
    return out


def write_points(db: InfluxClient, report: MonthReport) -> int:
    lines = points(report)
    db.write(lines, rp=HISTORY)
    return len(lines)


CSV_COLUMNS = (
    "month", "site", "group", "elders", "contacted", CareVisitRate.rate_pct,
    CareVisitRate.target_pct, "met", "worker", "visits", "calls",
    CareFollowUps.follow_ups_open, CareFollowUps.elders_overdue,
)  # fmt: skip


def to_csv(report: MonthReport, tr: Translator | None = None) -> str:
    """One row per site and group, one per worker, one per site's totals; ``tr``: a
    header in that reader's words and ``met`` as their yes/no (default: the column
    names, for scripts)."""
    buf = io.StringIO()
    out = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    if tr is None:
        out.writeheader()
    else:
        out.writerow({c: tr.gettext(texts.CSV_HEADERS[c]) for c in CSV_COLUMNS})
    yes, no = ("yes", "no") if tr is None else (tr.gettext(texts.YES), tr.gettext(texts.NO))
    for r in report.rates:
        out.writerow({"month": report.month, "site": r.site, "group": r.group,
                      "elders": r.elders, "contacted": r.contacted,
                      CareVisitRate.rate_pct: r.rate_pct, CareVisitRate.target_pct: r.target_pct,
                      "met": yes if r.rate_pct >= r.target_pct else no})  # fmt: skip
    for w in report.workers:
        out.writerow({"month": report.month, "site": w.site, "worker": w.worker,
                      "visits": w.visits, "calls": w.calls})  # fmt: skip
    for s, n in report.follow_ups_open.items():
        out.writerow({"month": report.month, "site": s, CareFollowUps.follow_ups_open: n,
                      CareFollowUps.elders_overdue: report.overdue.get(s, 0)})  # fmt: skip
    return buf.getvalue()

"""What the commands and the page's server do with the pieces: refresh a site's signs
from InfluxDB, plan a site, and tell the site's coordinator of overdue contacts and
follow-ups left open, through escalation's channels (email, webhook, call centre).

A notice is an info :class:`~homecare.contract.Alert` of kind ``visit_overdue`` or
``follow_up_open`` with its numbers as evidence, delivered to each channel of the
coordinator (the registry's ``provider.coordinator`` or the site's). Each is sent once
(its ``ref`` is remembered in the register): once per overdue period of an elder, once
per follow-up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from care import texts
from care.plan import PlanRow, plan, signs_rows
from care.policy import VisitPolicy
from care.register import Register
from care.rollups import read_days, week_alerts
from care.signs import Assessment, assess
from escalation.channels import default_channels
from escalation.notification import Channel, ChannelKind, Delivery, MessageType, Notification
from escalation.registry import Registry
from homecare.contract import Alert, Severity
from homecare.i18n import Translator
from homecare.influx import InfluxClient
from homecare.settings import Settings

log = logging.getLogger(__name__)
DAY_S = 86400.0


def refresh_signs(
    db: InfluxClient, register: Register, registry: Registry, site: str, *, now: float,
    utc_offset_h: float = 0.0,
) -> tuple[Assessment, dict[str, dict[str, int]]]:  # fmt: skip
    """Read the site's rollups, assess every elder, store the signs; the assessment and
    the week's alerts."""
    elders = [e.id for e in registry.elders if e.site == site]
    days = read_days(db, site, elders, now=now, utc_offset_h=utc_offset_h)
    result = assess(days)
    alerts = week_alerts(db, site, now=now, utc_offset_h=utc_offset_h)
    register.store_signs(site, now, signs_rows(result))
    log.info("care signs of %s: %d elders, %d flagged", site, len(elders), len(result.flagged()))
    return result, alerts


def site_plan(
    register: Register, registry: Registry, policy: VisitPolicy, site: str, *, now: float,
    alerts: Mapping[str, Mapping[str, int]] | None = None, tr: Translator | None = None,
) -> list[PlanRow]:  # fmt: skip
    return plan(registry, site, policy=policy, now=now, signs=register.signs(site),
                alerts=alerts, last_contacts=register.last_contacts(site), tr=tr)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Notice:
    ref: str
    site: str
    elder: str
    alert: Alert


def due_notices(
    register: Register, registry: Registry, policy: VisitPolicy, *, now: float
) -> list[Notice]:
    """Overdue contacts and follow-ups open past ``policy.follow_up_days`` not yet told."""
    out = []
    for site in sorted({e.site for e in registry.elders}):
        for row in site_plan(register, registry, policy, site, now=now):
            if row.overdue_days <= 0 or row.due is None or row.group is None:
                continue
            ref = f"care-overdue-{site}-{row.elder}-{math.floor(row.due)}"
            alert = Alert(id=f"care-overdue-{math.floor(row.due)}", site=site, elder=row.elder,
                          kind=texts.OVERDUE_KIND, severity=Severity.INFO, ts=row.due,
                          evidence={"overdue_days": float(row.overdue_days)},
                          updated=now)  # fmt: skip
            out.append(Notice(ref, site, row.elder, alert))
        for c in register.open_follow_ups(site):
            if now - c.at < policy.follow_up_days * DAY_S:
                continue
            ref = f"care-follow-up-{site}-{c.elder}-{c.id}"
            alert = Alert(id=f"care-follow-up-{c.id}", site=site, elder=c.elder,
                          kind=texts.FOLLOW_UP_KIND, severity=Severity.INFO, ts=c.at,
                          evidence={"open_days": float(math.floor((now - c.at) / DAY_S))},
                          updated=now)  # fmt: skip
            out.append(Notice(ref, site, c.elder, alert))
    return [n for n in out if not register.noticed(n.ref)]


async def send_notices(
    settings: Settings, register: Register, registry: Registry, policy: VisitPolicy, *,
    now: float, channels: Mapping[ChannelKind, Channel] | None = None,
) -> list[Delivery]:  # fmt: skip
    """Deliver the due notices to each site's coordinator; a notice delivered on any of
    the coordinator's channels is remembered, one that failed is tried again next time."""
    notices = due_notices(register, registry, policy, now=now)
    if not notices:
        return []
    chans = dict(channels) if channels is not None else dict(default_channels(settings))
    deliveries = []
    entered = []
    try:
        for ch in chans.values():
            enter = getattr(ch, "__aenter__", None)
            if enter is not None:
                await enter()
                entered.append(ch)
        for notice in notices:
            coordinator_id = registry.provider_for(notice.site).coordinator
            coordinator = registry.contact(coordinator_id) if coordinator_id else None
            if coordinator is None:
                log.warning("no coordinator for site %s: %s not sent", notice.site, notice.ref)
                continue
            elder = registry.elder(notice.elder)
            card = registry.card(elder) if elder else None  # the site's language and zone
            ok = False
            for recipient in coordinator.recipients():
                channel = chans.get(recipient.channel)
                if channel is None:
                    continue
                note = Notification(ref=f"{notice.ref}-{recipient.channel}", type=MessageType.ALARM,
                                    recipient=recipient, elder=card,
                                    alert=notice.alert, created=now)  # fmt: skip
                delivery = await channel.send(note)
                deliveries.append(delivery)
                ok = ok or delivery.status == "ok"
            if ok:
                register.mark_noticed(notice.ref, notice.site, notice.elder)
    finally:
        for ch in entered:
            await ch.__aexit__(None, None, None)  # type: ignore[attr-defined]
    return deliveries

"""The week's list: who to visit or call, ranked, each with the reasons in plain words.

Two things put an elder on the list: **signs** (:mod:`care.signs`: their week against
their own four weeks, and the week's alerts), and the **policy** (:mod:`care.policy`):
their group's contact is due within the week, or overdue. Overdue comes first (most
days overdue first), then everyone else by priority: the signs' score, alerts (an SOS
or a fall weighs most), living alone, care level. Everything here is plain Python over
one site's registry entries and two grouped queries of the register, so a site of
5,000 elders is planned in milliseconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from care import texts
from care.policy import VisitPolicy, counts_for
from care.signs import Assessment
from escalation.registry import Elder, Registry
from homecare.i18n import Translator, translator

DAY_S = 86400.0
DUE_WITHIN_DAYS = 7
ALERT_WEIGHT = {"sos": 3.0, "fall": 3.0}
"""Priority per alert of the week by kind (others: 1)."""


@dataclass
class PlanRow:
    elder: str
    name: str
    address: str
    phone: str | None
    care_level: int
    living_alone: bool
    group: str | None
    contact: str
    """What the worker should do: ``visit`` or ``call``."""
    priority: float
    overdue_days: int
    due: float | None
    """When the group's contact is (was) due (Unix s); ``None``: the policy asks nothing."""
    last_contact: float | None
    due_soon: bool = False
    """The group's contact is due within the week (or overdue)."""
    reasons: list[str] = field(default_factory=list)
    signs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def this_week(self) -> bool:
        return bool(self.signs) or self.priority > 0 or self.due_soon

    def as_dict(self) -> dict[str, Any]:
        return {
            "elder": self.elder, "name": self.name, "care_level": self.care_level,
            "living_alone": self.living_alone, "group": self.group, "contact": self.contact,
            "priority": round(self.priority, 2), "overdue_days": self.overdue_days,
            "due": self.due, "due_soon": self.due_soon, "last_contact": self.last_contact,
            "reasons": self.reasons,
            "signs": self.signs,
        }  # fmt: skip


def signs_rows(assessment: Assessment) -> dict[str, tuple[float, str]]:
    """Each flagged elder's score and signs (reason and evidence), for the register."""
    out = {}
    for elder in assessment.flagged():
        signs = [
            {"sign": s.sign, "feature": s.feature, "how": s.how, "reason": texts.sign_reason(s),
             **s.evidence()}
            for s in assessment.of(elder)
        ]  # fmt: skip
        out[elder] = (assessment.score[elder], json.dumps(signs))
    return out


def plan(
    registry: Registry,
    site: str,
    *,
    policy: VisitPolicy,
    now: float,
    signs: Mapping[str, tuple[float, str]] | None = None,
    alerts: Mapping[str, Mapping[str, int]] | None = None,
    last_contacts: Mapping[str, Mapping[str, float]] | None = None,
    tr: Translator | None = None,
) -> list[PlanRow]:
    """Every elder of the site, ranked: those on this week's list first (overdue first);
    the reasons in ``tr``'s words (default: English)."""
    tr = tr if tr is not None else translator()
    signs = signs or {}
    alerts = alerts or {}
    last_contacts = last_contacts or {}
    rows = []
    for elder in registry.elders:
        if elder.site == site:
            rows.append(_row(elder, policy, now, signs, alerts, last_contacts, tr))
    rows.sort(key=lambda r: (not r.this_week, -r.overdue_days, -r.priority, r.due or math.inf,
                             r.elder))  # fmt: skip
    return rows


def _row(
    elder: Elder,
    policy: VisitPolicy,
    now: float,
    signs: Mapping[str, tuple[float, str]],
    alerts: Mapping[str, Mapping[str, int]],
    last_contacts: Mapping[str, Mapping[str, float]],
    tr: Translator,
) -> PlanRow:
    group = policy.group_of(elder)
    contacts = last_contacts.get(elder.id, {})
    reasons: list[str] = []
    priority = 0.0
    score, raw = signs.get(elder.id, (0.0, ""))
    found: list[dict[str, Any]] = json.loads(raw) if raw else []
    found = [{**s, "reason": texts.stored_reason(s, tr)} for s in found]  # the reader's words
    if found:
        priority += score
        reasons += [s["reason"] for s in found]
    for kind, n in sorted((alerts.get(elder.id) or {}).items()):
        priority += ALERT_WEIGHT.get(kind, 1.0) * n
        reasons.append(texts.alerts_reason(kind, n, tr))
    due = last = None
    overdue = 0
    due_soon = False
    contact = "visit" if found else (group.contact if group else "call")
    if group is not None:
        done = [at for kind, at in contacts.items() if counts_for(group, kind)]
        last = max(done) if done else None
        due = (last + group.every_days * DAY_S) if last is not None else now
        overdue = max(0, math.floor((now - due) / DAY_S)) if last is not None else 0
        days_since = None if last is None else math.floor((now - last) / DAY_S)
        if due <= now + DUE_WITHIN_DAYS * DAY_S:
            due_soon = True
            reasons.append(texts.due_reason(group.contact, group.every_days, days_since, overdue,
                                             tr))  # fmt: skip
            if last is None:  # never contacted: as pressing as a week overdue
                overdue = max(overdue, 1)
        if not found:
            contact = group.contact
    elif contacts:
        last = max(contacts.values())
    if priority > 0 or found:
        if elder.living_alone:
            priority += 1.0
            reasons.append(tr.gettext(texts.LIVES_ALONE))
        if elder.hardship:
            reasons.append(tr.gettext(texts.HARDSHIP))
        priority += 0.5 * (elder.care_level - 1)
        reasons.append(texts.care_level(elder.care_level, tr))
    return PlanRow(
        elder=elder.id, name=elder.display_name, address=elder.address, phone=elder.phone,
        care_level=elder.care_level, living_alone=elder.living_alone,
        group=group.name if group else None, contact=contact, priority=priority,
        overdue_days=overdue, due=due, last_contact=last, due_soon=due_soon, reasons=reasons,
        signs=found,
    )  # fmt: skip

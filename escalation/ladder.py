"""The escalation ladder as a pure policy: state and an event in, decisions out.

No I/O here, and no clock of its own: every call takes the time (``now``, Unix s) and
the state it decides on (the registry, the stored :class:`~escalation.store.AlertRecord`,
who was told already) and answers what to do — open an alert, fold it into one going on,
notify whom on which channel and when, when the next rung is due, send a failed
delivery again or give it up. :class:`~escalation.engine.Escalation` reads the state
from the store, asks here, and commits the answer in one transaction.

Lifecycle: open → (grace window, falls only: the wearer may still press "I'm OK") →
notified (a first recipient said ok) → acknowledged (by whom, on which channel) →
resolved (outcome), or cancelled.

>>> from homecare.contract import Alert
>>> reg = Registry.model_validate({"provider": {"call_centre": "arc"},
...     "contacts": [{"id": "arc", "name": "ARC", "role": "call_centre",
...                   "channels": [{"kind": "call_centre", "address": "https://arc/alarm"}]}]})
>>> policy = EscalationPolicy(secret=b"k")
>>> sos = Alert(id="a1", site="s", elder="e1", kind="sos", severity="critical",
...             ts=999.0, updated=999.0)
>>> opening = policy.opening(reg, sos, now=1000.0)
>>> rung = policy.rung(reg, sos, 0, opening.start_at, now=1000.0, told=frozenset())
>>> [(d.note.recipient.id, d.note.type.value, d.due) for d in rung.decided], rung.next_at
([('arc', 'alarm', 1000.0)], 1060.0)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from escalation.notification import (
    ChannelKind,
    Delivery,
    DeliveryStatus,
    ElderCard,
    MessageType,
    Notification,
    Recipient,
)
from escalation.registry import (
    PERSONAL_ROLES,
    Ladder,
    Registry,
    Step,
    Target,
    ack_token,
    token_valid,
)
from escalation.store import AlertRecord
from homecare.alerts import CANCELLABLE, OPERATIONS_SITE, is_operations
from homecare.contract import Alert, AlertState, Severity
from homecare.settings import RetrySettings

FAMILY_NOTICE = frozenset({"fall_recovered"})
"""Kinds the family is told of (once, their first contact; the daily digest lists them)
but no call centre is called: a fall the elder got up from is on record, not an alarm."""

OUTCOMES = frozenset({"false_alarm", "handled_at_home", "visit", "ambulance"})
CLOSED = (AlertState.RESOLVED, AlertState.CANCELLED)
TOLD_BY_RESET = frozenset({"call_centre", "supervisor"})
"""Who gets a SCAIP reset when an alert they were sent is cancelled or resolved."""
RESET_AFTER_S = 1.0
"""A reset waits this long, so it never overtakes the alarm it closes on the wire."""
RESET_STEP = 10_000
"""The rung a reset is decided on: after every real rung, so its ref is its own."""
DETAIL_MAX = 500
Told = AbstractSet[tuple[str, str]]
"""(contact, channel) pairs already told about an alert: they get updates, not alarms."""


class ManualClock:
    """A clock tests move by hand, so the service's timing is tested without waiting."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def make_ref(*parts: object) -> str:
    """An idempotency key: the same parts always give the same ref."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def delivery_ref(key: str, step: int, recipient: Recipient, kind: MessageType) -> str:
    """The ref of one message to one channel of a recipient: deciding it again finds it."""
    return make_ref(key, step, recipient.id, recipient.channel, kind)


def unknown_elder_card(reg: Registry, alert: Alert) -> ElderCard:
    """An alert for an elder missing from the registry still reaches the call centre (in
    its site's time zone and language)."""
    site = reg.provider_for(alert.site)
    address = "the homecare platform" if is_operations(alert) else "not in the registry"
    return ElderCard(
        id=alert.elder, site=alert.site, display_name=alert.elder, address=address,
        timezone=site.timezone or "UTC", language=site.language, hotline=site.hotline,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AckResult:
    """The answer to an acknowledgement, as an HTTP status and a sentence."""

    status: int
    message: str
    state: str | None = None
    language: str | None = None
    """The reader's language, for a page about the alert (None: the default)."""

    @property
    def ok(self) -> bool:
        return self.status == 200


class Arrival(StrEnum):
    """What an alert arriving from the detectors is, given what the store knows of it."""

    NEW = "new"
    """Open and unknown: opened, or folded into a condition going on."""
    KNOWN = "known"
    """Seen before (a re-delivery), or a later state of an alert we track ourselves."""
    IGNORED = "ignored"
    """A later state of an alert never seen open (retained history after the store was lost)."""
    CLEARED = "cleared"
    """Resolved by whoever raised it (an operations alert: the source flows again)."""
    CANCEL = "cancel"
    """"I'm OK" pressed for an alert going on."""
    CANCELLED_UNSEEN = "cancelled_unseen"
    """Cancelled before we saw it open (its open state was overwritten on the broker)."""


def arrival(alert: Alert, known: AlertState | None) -> Arrival:
    """Classify an incoming alert by its state and the stored state (``None``: unknown).

    >>> a = Alert(id="a", site="s", elder="e", kind="fall", severity="critical", ts=1.0,
    ...           updated=1.0, state="cancelled")
    >>> arrival(a, None), arrival(a, AlertState.OPEN), arrival(a, AlertState.RESOLVED)
    (<Arrival.CANCELLED_UNSEEN: 'cancelled_unseen'>, <Arrival.CANCEL: 'cancel'>, \
<Arrival.KNOWN: 'known'>)
       >>> done = a.model_copy(update={"state": "resolved"})
    >>> arrival(done, AlertState.NOTIFIED), arrival(done, AlertState.RESOLVED)
    (<Arrival.CLEARED: 'cleared'>, <Arrival.KNOWN: 'known'>)
    """
    if alert.state == AlertState.CANCELLED:
        if known is None:
            return Arrival.CANCELLED_UNSEEN
        return Arrival.KNOWN if known in CLOSED else Arrival.CANCEL
    if alert.state == AlertState.RESOLVED and known is not None and known not in CLOSED:
        return Arrival.CLEARED
    if alert.state != AlertState.OPEN:
        return Arrival.IGNORED if known is None else Arrival.KNOWN
    return Arrival.NEW if known is None else Arrival.KNOWN


@dataclass(frozen=True, slots=True)
class Opening:
    """When a new alert's ladder starts, and its first rung (``None``: it is batched)."""

    start_at: float
    next_at: float | None
    ladder: Ladder


@dataclass(frozen=True, slots=True)
class Repeat:
    """A new alert folded into ``of``: recorded in that alert's state, not paged again."""

    of: str
    state: AlertState
    event: str
    transition: bool
    outcome: str | None
    """Set when the condition it repeats was closed: a flapping warning, closed at once."""


@dataclass(frozen=True, slots=True)
class Decided:
    """One notification decided, and when it is due (later than ``now``: held)."""

    note: Notification
    due: float

    @property
    def held(self) -> bool:
        return self.due > self.note.created


@dataclass(frozen=True, slots=True)
class Rung:
    """A rung run: what it decided, the rung after it and when that one is due."""

    decided: list[Decided]
    step: int
    next_at: float | None
    nobody: bool = False
    """The registry names nobody for this rung."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Alerts going to one contact together (info → the device desk)."""

    contact: str
    members: tuple[AlertRecord, ...]

    @property
    def key(self) -> str:
        return "batch:" + ",".join(sorted(m.id for m in self.members))


@dataclass(frozen=True, slots=True)
class Digest:
    """A family contact's daily digest about one elder, due today (local time)."""

    elder: str
    contact: str
    key: str
    refs: tuple[str, ...]


class Send(StrEnum):
    OK = "ok"
    AGAIN = "again"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AfterDelivery:
    """What becomes of a delivery after a send: done, again at ``due``, or failed for good."""

    send: Send
    attempts: int
    """Sends so far, this one included."""
    due: float | None = None
    detail: str = ""


@dataclass
class EscalationPolicy:
    """The ladder's rules with their settings: grace window, flap window, retries, tokens."""

    secret: bytes
    grace_s: float = 30.0
    flap_s: float = 900.0
    ack_base: str = ""
    retries: Mapping[ChannelKind, RetrySettings] = field(default_factory=dict)
    """Each channel's retry policy; a channel missing here gets :class:`RetrySettings`'s."""
    _tokens: dict[str, str] = field(default_factory=dict)

    # acknowledgement links and rights --------------------------------------------------
    def ack_url(self, alert_id: str, contact_id: str) -> str | None:
        if not self.ack_base:
            return None
        token = self._tokens.get(contact_id)
        if token is None:
            token = self._tokens[contact_id] = ack_token(self.secret, contact_id)
        base = self.ack_base.rstrip("/")
        return f"{base}/alerts/{alert_id}/ack?contact={contact_id}&token={token}"

    def may_act(self, reg: Registry, record: AlertRecord, contact_id: str, token: str) -> bool:
        """Whether the token is the contact's, and the contact may act on this alert."""
        return token_valid(self.secret, contact_id, token) and reg.may_acknowledge(
            contact_id, record.elder, record.site
        )

    # alerts arriving -------------------------------------------------------------------
    def flap_from(self, now: float) -> float:
        """Closed warnings since this time still fold a new one of the same kind in."""
        return now - self.flap_s

    def ladder_for(
        self, reg: Registry, elder: str, severity: str, site: str = "", kind: str = ""
    ) -> Ladder:
        """The severity's ladder for the elder's care level; an operations alert's (site
        ``_ops``) is the policy's ``operations`` ladder, whatever its severity; a kind in
        :data:`FAMILY_NOTICE` stops at its first rung's family contact (no call centre)."""
        if site == OPERATIONS_SITE:
            return reg.policy.operations
        card = reg.elder(elder)
        ladder = reg.ladder(severity, card.care_level if card else 2)
        if kind in FAMILY_NOTICE:
            return Ladder(steps=[Step(after_s=0, to=["first_contact"])])
        return ladder

    def opening(self, reg: Registry, alert: Alert, now: float) -> Opening:
        """A new alert: falls wait out the grace window; batched ladders have no timer."""
        start_at = max(now, alert.ts + self.grace_s) if alert.kind in CANCELLABLE else now
        ladder = self.ladder_for(reg, alert.elder, str(alert.severity), alert.site, alert.kind)
        next_at = None if ladder.batch_s else start_at + ladder.steps[0].after_s
        return Opening(start_at, next_at, ladder)

    def repeat(self, same: AlertRecord) -> Repeat:
        """The same ongoing condition, or a warning flapping back inside the flap window."""
        closed = same.state in CLOSED
        return Repeat(
            of=same.id,
            state=same.state,
            event="flap" if closed else "duplicate",
            transition=same.state != AlertState.OPEN,
            outcome=f"repeat of {same.id}" if closed else None,
        )

    # the ladder ------------------------------------------------------------------------
    def targets(
        self, reg: Registry, site: str, elder_id: str, targets: list[Target], index: int
    ) -> list[str]:
        """The contact ids a rung's targets mean for this elder. An operations alert's
        "elder" is a broken part of the platform: it has no family to tell."""
        provider = reg.provider_for(site)
        operations = site == OPERATIONS_SITE
        elder = None if operations else reg.elder(elder_id)
        out: list[str] = []
        for target in targets:
            if target in ("first_contact", "next_contact") and operations:
                continue
            if target in ("first_contact", "next_contact"):
                cid = (
                    elder.contacts[index % len(elder.contacts)]
                    if elder and elder.contacts
                    else None
                )
            else:
                cid = getattr(provider, target)
            if cid is not None and cid not in out:
                out.append(cid)
        return out

    def rung(
        self,
        reg: Registry,
        alert: Alert,
        i: int,
        start_at: float,
        now: float,
        *,
        told: Told,
        ladder: Ladder | None = None,
    ) -> Rung:
        """Run rung ``i`` (``told``: the (contact, channel) pairs told about this alert
        before, who get an update rather than a new alarm)."""
        ladder = ladder or self.ladder_for(reg, alert.elder, str(alert.severity), alert.site,
                                           alert.kind)
        current = ladder.step(i)
        if current is None:
            return Rung([], i, None)
        contacts = self.targets(reg, alert.site, alert.elder, current[1].to,
                                ladder.contact_index(i))  # fmt: skip
        decided: list[Decided] = []
        for cid in contacts:
            decided += self.notify(reg, cid, alert, step=i, now=now, told=told)
        following = ladder.step(i + 1)
        next_at = max(start_at + following[0], now) if following else None
        return Rung(decided, i + 1, next_at, nobody=not contacts)

    def notify(
        self,
        reg: Registry,
        contact_id: str,
        alert: Alert | None,
        *,
        step: int,
        now: float,
        type_: MessageType | None = None,
        told: Told = frozenset(),
        batch: tuple[Alert, ...] = (),
        outcomes: Mapping[str, str] | None = None,
        ref_key: str | None = None,
        elder_id: str | None = None,
        after: float = 0.0,
    ) -> list[Decided]:
        """One notification per channel of the contact, held in their quiet hours (never
        a critical one)."""
        contact = reg.contact(contact_id)
        if contact is None:
            return []
        elder_id = elder_id or (alert.elder if alert else None)
        operations = alert is not None and is_operations(alert)
        elder = reg.elder(elder_id) if elder_id and not operations else None
        card = reg.card(elder) if elder else (unknown_elder_card(reg, alert) if alert else None)
        severity = alert.severity if alert else Severity.INFO
        due = now + after
        if contact.role in PERSONAL_ROLES and severity != Severity.CRITICAL:
            quiet = contact.quiet_until(now, card.timezone if card else "UTC")
            if quiet is not None:
                due = quiet
        out: list[Decided] = []
        for recipient in contact.recipients():
            kind = type_ or _alarm_or_update(alert, recipient, step, told)
            ref = delivery_ref(ref_key or (alert.id if alert else ""), step, recipient, kind)
            note = Notification(
                ref=ref, type=kind, recipient=recipient, elder=card, alert=alert, batch=batch,
                step=step, ack_url=self.ack_url(alert.id, contact.id) if alert else None,
                created=now, outcomes=dict(outcomes or {}),
            )  # fmt: skip
            out.append(Decided(note, due))
        return out

    def resets(self, reg: Registry, alert: Alert, told: list[str], now: float) -> list[Decided]:
        """A closed alert's reset to each call centre or supervisor that got its alarm."""
        out: list[Decided] = []
        for cid in told:
            contact = reg.contact(cid)
            if contact is not None and contact.role in TOLD_BY_RESET:
                out += self.notify(reg, cid, alert, step=RESET_STEP, now=now,
                                   type_=MessageType.RESET, after=RESET_AFTER_S)  # fmt: skip
        return out

    def batches(self, reg: Registry, waiting: list[AlertRecord], now: float) -> list[Batch]:
        """The batches due: per recipient, once its oldest alert has waited ``batch_s``."""
        groups: dict[str, list[AlertRecord]] = {}
        oldest: dict[str, float] = {}
        for record in waiting:
            ladder = self.ladder_for(reg, record.elder, record.severity, record.site, record.kind)
            if not ladder.batch_s:
                continue
            for cid in self.targets(reg, record.site, record.elder, ladder.steps[0].to, 0):
                groups.setdefault(cid, []).append(record)
                oldest[cid] = min(oldest.get(cid, math.inf), record.received + ladder.batch_s)
        return [Batch(cid, tuple(m)) for cid, m in groups.items() if oldest[cid] <= now]

    def batch(self, reg: Registry, batch: Batch, now: float) -> list[Decided]:
        alerts = tuple(m.parsed() for m in batch.members)
        return self.notify(reg, batch.contact, None, step=0, now=now, type_=MessageType.DIGEST,
                           batch=alerts, ref_key=batch.key)  # fmt: skip

    def digests_due(self, reg: Registry, now: float) -> list[Digest]:
        """Each family contact's digest per elder, from ``digest_hour`` local time on."""
        if reg.digest_hour is None:
            return []
        out: list[Digest] = []
        for elder in reg.elders:
            for cid in elder.contacts:
                contact = reg.contact(cid)
                if contact is None or contact.role != "family":
                    continue
                zone = ZoneInfo(contact.timezone or reg.card(elder).timezone)
                local = datetime.fromtimestamp(now, zone)
                if local.hour < reg.digest_hour:
                    continue
                key = f"digest:{elder.id}:{local.date()}"
                refs = tuple(
                    delivery_ref(key, 0, r, MessageType.DIGEST) for r in contact.recipients()
                )
                out.append(Digest(elder.id, cid, key, refs))
        return out

    def digest(
        self, reg: Registry, digest: Digest, day: list[AlertRecord], now: float
    ) -> list[Decided]:
        """The digest of ``day`` (the elder's alerts of the last 24 hours)."""
        batch = tuple(r.parsed().model_copy(update={"state": r.state}) for r in day)
        outcomes = {r.id: r.outcome for r in day if r.outcome}
        return self.notify(reg, digest.contact, None, step=0, now=now, type_=MessageType.DIGEST,
                           batch=batch, outcomes=outcomes, elder_id=digest.elder,
                           ref_key=digest.key)  # fmt: skip

    # deliveries ------------------------------------------------------------------------
    def retry_for(self, channel: ChannelKind) -> RetrySettings:
        return self.retries.get(channel) or RetrySettings()

    def after_delivery(
        self, note: Notification, result: Delivery, attempts_before: int, now: float
    ) -> AfterDelivery:
        """The one retry policy of a delivery: ok is done; a failure sending again cannot
        mend, or the channel's ``attempts``-th, is failed for good (the final state the
        care monitor sees); any other is sent again after the channel's backoff.

        >>> from escalation.notification import Recipient
        >>> note = Notification(ref="r", type=MessageType.ALARM, created=0.0,
        ...     recipient=Recipient(id="arc", name="ARC", role="call_centre",
        ...                         channel=ChannelKind.CALL_CENTRE, address="https://arc/"))
        >>> busy = Delivery(ref="r", status=DeliveryStatus.BUSY)
        >>> p = EscalationPolicy(secret=b"k", retries={ChannelKind.CALL_CENTRE:
        ...     RetrySettings(attempts=3, backoff_s=1.0, backoff_max_s=60.0)})
        >>> [(a.send.value, a.due) for a in (p.after_delivery(note, busy, n, 100.0)
        ...                                  for n in range(3))]
        [('again', 101.0), ('again', 102.0), ('failed', None)]
        """
        attempts = attempts_before + max(result.attempts, 1)
        detail = f"{result.status}: {result.detail}"[:DETAIL_MAX]
        if result.status == DeliveryStatus.OK:
            return AfterDelivery(Send.OK, attempts, detail=result.detail[:DETAIL_MAX])
        retry = self.retry_for(note.recipient.channel)
        if result.final or attempts >= retry.attempts:
            tries = f"after {attempts} attempt{'s' * (attempts > 1)}"
            return AfterDelivery(Send.FAILED, attempts, detail=f"{tries}: {detail}"[:DETAIL_MAX])
        return AfterDelivery(
            Send.AGAIN, attempts, now + retry.delay(attempts, result.retry_after), detail
        )


def _alarm_or_update(
    alert: Alert | None,
    recipient: Recipient,
    step: int,
    told: Told,
) -> MessageType:
    """The first message to a recipient about an alert opens an incident; later ones update.
    Rung 0 is always the first: resets, the only other messages, come after it."""
    if alert is None:
        return MessageType.DIGEST
    if step == 0:
        return MessageType.ALARM
    seen = (recipient.id, str(recipient.channel)) in told
    return MessageType.UPDATE if seen else MessageType.ALARM

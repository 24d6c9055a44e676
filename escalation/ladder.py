"""The alert lifecycle and the escalation ladder, as decisions on the durable store.

No I/O here but SQLite: the service feeds alerts and acknowledgements in, asks which
notifications are due, and reports how each delivery went. Time comes from a clock
passed in (the wall clock in production, :class:`ManualClock` in tests), and every
timer is an absolute time in the store, so a restart resumes where it was.

Lifecycle: open → (grace window, falls only: the wearer may still press "I'm OK") →
notified (a first recipient said ok) → acknowledged (by whom, on which channel) →
resolved (outcome), or cancelled. Each change is an event (``events``), published on
MQTT and written to InfluxDB by the service.

>>> from pathlib import Path
>>> from escalation.store import Store
>>> from homecare.contract import Alert
>>> reg = Registry.model_validate({"provider": {"call_centre": "arc"},
...     "contacts": [{"id": "arc", "name": "ARC", "role": "call_centre",
...                   "channels": [{"kind": "call_centre", "address": "https://arc/alarm"}]}]})
>>> clock = ManualClock(1000.0)
>>> esc = Escalation(Store(Path(":memory:")), lambda: reg, secret=b"k", clock=clock)
>>> esc.receive(Alert(id="a1", site="s", elder="e1", kind="sos", severity="critical",
...                   ts=999.0, updated=999.0))
'opened'
>>> [(n.recipient.id, n.type.value) for n in esc.due()]
[('arc', 'alarm')]
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from escalation.messages import what_happened
from escalation.notification import (
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
    Target,
    ack_token,
    token_valid,
)
from escalation.store import Store
from homecare.alerts import CANCELLABLE
from homecare.contract import Alert, AlertState, Severity

log = logging.getLogger(__name__)

Clock = Callable[[], float]
OUTCOMES = frozenset({"false_alarm", "handled_at_home", "visit", "ambulance"})
ACTIVE = (AlertState.OPEN, AlertState.NOTIFIED, AlertState.ACKNOWLEDGED)
CLOSED = (AlertState.RESOLVED, AlertState.CANCELLED)
TOLD_BY_RESET = frozenset({"call_centre", "supervisor"})
"""Who gets a SCAIP reset when an alert they were sent is cancelled or resolved."""
RESET_AFTER_S = 1.0
"""A reset waits this long, so it never overtakes the alarm it closes on the wire."""


ONGOING = (
    "duplicate_of IS NULL AND (state IN ('open', 'notified', 'acknowledged') "
    "OR (severity != 'critical' AND closed_at >= ?))"
)
"""An alert a new one of the same kind and elder is folded into (the ? is the flap limit)."""


class _Seen:
    """For a batch of incoming alerts: which ids the store may know, which elders have an
    ongoing condition; so most alerts of a burst need no look-up of their own."""

    def __init__(self, db: sqlite3.Connection, alerts: list[Alert], flap_from: float) -> None:
        ids = list({a.id for a in alerts})
        elders = list({a.elder for a in alerts})
        self.known = {r[0] for r in _in(db, "SELECT id FROM alerts WHERE id IN ({})", ids)}
        ongoing = f"SELECT elder FROM alerts WHERE {ONGOING} AND elder IN ({{}})"
        self.ongoing = {r[0] for r in _in(db, ongoing, elders, flap_from)}

    def may_know(self, alert: Alert) -> bool:
        if alert.id in self.known:
            return True
        self.known.add(alert.id)  # from here on, it may have been stored in this batch
        return False

    def may_repeat(self, alert: Alert) -> bool:
        if alert.elder in self.ongoing:
            return True
        self.ongoing.add(alert.elder)
        return False


def _in(db: sqlite3.Connection, sql: str, values: list[str], *first: object) -> list[sqlite3.Row]:
    """``sql`` with its ``IN ({})`` filled for ``values``, in slices SQLite accepts."""
    rows: list[sqlite3.Row] = []
    for i in range(0, len(values), 500):
        part = values[i : i + 500]
        rows += db.execute(sql.format(",".join("?" * len(part))), (*first, *part)).fetchall()
    return rows


class ManualClock:
    """A clock tests move by hand, so ladder timing is tested without waiting."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass(frozen=True, slots=True)
class AckResult:
    """The answer to an acknowledgement, as an HTTP status and a sentence."""

    status: int
    message: str
    state: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def make_ref(*parts: object) -> str:
    """An idempotency key: the same parts always give the same ref."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def delivery_ref(key: str, step: int, recipient: Recipient, kind: MessageType) -> str:
    """The ref of one message to one channel of a recipient: deciding it again finds it."""
    return make_ref(key, step, recipient.id, recipient.channel, kind)


def unknown_elder_card(alert: Alert) -> ElderCard:
    """An alert for an elder missing from the registry still reaches the call centre."""
    return ElderCard(
        id=alert.elder, site=alert.site, display_name=alert.elder, address="not in the registry"
    )


class Escalation:
    """Alerts in, notifications out; every decision committed before it is acted on."""

    def __init__(
        self,
        store: Store,
        registry: Callable[[], Registry],
        *,
        secret: bytes,
        clock: Clock = time.time,
        grace_s: float = 30.0,
        flap_s: float = 900.0,
        retry_s: float = 5.0,
        ack_base: str = "",
    ) -> None:
        self.store = store
        self.registry = registry
        self.secret = secret
        self.clock = clock
        self.grace_s = grace_s
        self.flap_s = flap_s
        self.retry_s = retry_s
        self.ack_base = ack_base.rstrip("/")
        self.refused = 0
        self._tokens: dict[str, str] = {}
        self._decided: dict[str, Notification] = {}
        """Notifications just decided, by ref: what the store holds, not yet parsed back."""

    # alerts from the detectors ---------------------------------------------------------
    def receive(self, alert: Alert) -> str:
        """Take an alert from MQTT; say what became of it (opened, duplicate, …)."""
        return self.receive_many([alert])[0]

    def receive_many(self, alerts: Iterable[Alert]) -> list[str]:
        """Several alerts in one transaction (one fsync for a burst), then the due rungs.

        A burst is mostly new alerts for different elders: two look-ups for the whole
        batch find which alerts are known and which elders have a condition going on,
        so only those alerts are looked up one by one."""
        alerts = list(alerts)
        with self.store.tx() as db:
            seen = _Seen(db, alerts, self.clock() - self.flap_s)
            out = [self._receive(db, a, seen) for a in alerts]
            self._advance(db)
        return out

    def _receive(self, db: sqlite3.Connection, alert: Alert, seen: _Seen | None = None) -> str:
        now = self.clock()
        row = (
            db.execute("SELECT * FROM alerts WHERE id = ?", (alert.id,)).fetchone()
            if seen is None or seen.may_know(alert)
            else None
        )
        if alert.state == AlertState.CANCELLED:
            if row is None:  # its open state was overwritten before we saw it
                self._insert(db, alert, now, start_at=now, next_at=None, state=alert.state)
                self._event(db, alert.id, now, "cancelled", alert.state, transition=False)
                return "cancelled"
            if row["state"] in CLOSED:
                return "known"
            self._close(db, row, AlertState.CANCELLED, now, detail="I'm OK pressed")
            return "cancelled"
        if alert.state != AlertState.OPEN:
            if row is None:
                log.debug("alert %s arrived %s, never seen open: ignored", alert.id, alert.state)
                return "ignored"
            return "known"
        if row is not None:
            return "known"
        same = (
            db.execute(
                f"SELECT * FROM alerts WHERE elder = ? AND kind = ? AND {ONGOING} "
                "ORDER BY received DESC LIMIT 1",
                (alert.elder, alert.kind, now - self.flap_s),
            ).fetchone()
            if seen is None or seen.may_repeat(alert)
            else None
        )
        if same is not None:
            return self._duplicate(db, alert, same, now)
        start_at = max(now, alert.ts + self.grace_s) if alert.kind in CANCELLABLE else now
        reg = self.registry()
        ladder = self._ladder_for(reg, alert.elder, str(alert.severity))
        next_at = None if ladder.batch_s else start_at + ladder.steps[0].after_s
        step = 0
        if next_at is not None and next_at <= now:  # the first rung at once, in this insert
            step, next_at = self._climb(db, reg, alert, 0, start_at, now, ladder)
        self._insert(db, alert, now, start_at=start_at, next_at=next_at, state=AlertState.OPEN,
                     step=step)  # fmt: skip
        if start_at > now:
            self._event(db, alert.id, now, "grace", AlertState.OPEN, transition=False,
                        detail=f"until {start_at}")  # fmt: skip
        return "opened"

    def _duplicate(
        self, db: sqlite3.Connection, alert: Alert, same: sqlite3.Row, now: float
    ) -> str:
        """The same ongoing condition (or a warning flapping back): recorded, not paged again."""
        state = AlertState(same["state"])
        self._insert(db, alert, now, start_at=now, next_at=None, state=state, dup=same["id"])
        db.execute("UPDATE alerts SET repeats = repeats + 1 WHERE id = ?", (same["id"],))
        event = "flap" if state in CLOSED else "duplicate"
        self._event(db, alert.id, now, event, state, transition=state != AlertState.OPEN,
                    detail=same["id"])  # fmt: skip
        if state in CLOSED:
            db.execute(
                "UPDATE alerts SET outcome = ?, closed_at = ? WHERE id = ?",
                (f"repeat of {same['id']}", now, alert.id),
            )
        return "duplicate"

    def _insert(
        self,
        db: sqlite3.Connection,
        alert: Alert,
        now: float,
        *,
        start_at: float,
        next_at: float | None,
        state: AlertState,
        dup: str | None = None,
        step: int = 0,
    ) -> None:
        db.execute(
            "INSERT INTO alerts (id, alert, site, elder, kind, severity, state, received, "
            "start_at, next_at, duplicate_of, closed_at, step) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                alert.id, alert.model_dump_json(), alert.site, alert.elder, alert.kind,
                str(alert.severity), str(state), now, start_at, next_at, dup,
                now if state in CLOSED else None, step,
            ),
        )  # fmt: skip

    # the ladder ------------------------------------------------------------------------
    def advance(self) -> None:
        """Run every rung that is due, the batches and the digests."""
        with self.store.tx() as db:
            self._advance(db)

    def _advance(self, db: sqlite3.Connection) -> None:
        now = self.clock()
        reg = self.registry()
        for row in db.execute(
            "SELECT * FROM alerts WHERE next_at <= ? ORDER BY next_at", (now,)
        ).fetchall():
            self._rung(db, reg, row, now)
        self._batches(db, reg, now)

    def _ladder_for(self, reg: Registry, elder: str, severity: str) -> Ladder:
        card = reg.elder(elder)
        return reg.ladder(severity, card.care_level if card else 2)

    def _targets(
        self, reg: Registry, site: str, elder_id: str, targets: list[Target], index: int
    ) -> list[str]:
        provider = reg.provider_for(site)
        elder = reg.elder(elder_id)
        out: list[str] = []
        for target in targets:
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

    def _rung(self, db: sqlite3.Connection, reg: Registry, row: sqlite3.Row, now: float) -> None:
        alert = Alert.model_validate_json(row["alert"])
        step, next_at = self._climb(db, reg, alert, row["step"], row["start_at"], now)
        db.execute(
            "UPDATE alerts SET step = ?, next_at = ? WHERE id = ?", (step, next_at, alert.id)
        )

    def _climb(
        self, db: sqlite3.Connection, reg: Registry, alert: Alert, i: int, start_at: float,
        now: float, ladder: Ladder | None = None,
    ) -> tuple[int, float | None]:  # fmt: skip
        """Run rung ``i``: decide its notifications; answer the next rung and when it is due."""
        ladder = ladder or self._ladder_for(reg, alert.elder, str(alert.severity))
        rung = ladder.step(i)
        if rung is None:
            return i, None
        contacts = self._targets(reg, alert.site, alert.elder, rung[1].to, ladder.contact_index(i))
        for cid in contacts:
            self._notify(db, reg, cid, alert, step=i, now=now)
        if not contacts:
            log.warning("alert %s rung %d: nobody to tell (registry)", alert.id, i)
        following = ladder.step(i + 1)
        next_at = start_at + following[0] if following else None
        if next_at is not None:
            next_at = max(next_at, now)
        return i + 1, next_at

    def _notify(
        self,
        db: sqlite3.Connection,
        reg: Registry,
        contact_id: str,
        alert: Alert | None,
        *,
        step: int,
        now: float,
        type_: MessageType | None = None,
        batch: tuple[Alert, ...] = (),
        outcomes: dict[str, str] | None = None,
        ref_key: str | None = None,
        elder_id: str | None = None,
        after: float = 0.0,
    ) -> int:
        """Decide one notification per channel of the contact (held in their quiet hours)."""
        contact = reg.contact(contact_id)
        if contact is None:
            return 0
        elder_id = elder_id or (alert.elder if alert else None)
        elder = reg.elder(elder_id) if elder_id else None
        card = elder.card() if elder else (unknown_elder_card(alert) if alert else None)
        severity = alert.severity if alert else Severity.INFO
        due = now + after
        if contact.role in PERSONAL_ROLES and severity != Severity.CRITICAL:
            quiet = contact.quiet_until(now, card.timezone if card else "UTC")
            if quiet is not None:
                due = quiet
        made = 0
        for recipient in contact.recipients():
            kind = type_ or self._alarm_or_update(db, alert, recipient, step)
            ref = delivery_ref(ref_key or (alert.id if alert else ""), step, recipient, kind)
            note = Notification(
                ref=ref, type=kind, recipient=recipient, elder=card, alert=alert, batch=batch,
                step=step, ack_url=self.ack_url(alert.id, contact.id) if alert else None,
                created=now, outcomes=outcomes or {},
            )  # fmt: skip
            cur = db.execute(
                "INSERT OR IGNORE INTO deliveries (ref, alert_id, contact, channel, type, step, "
                "notification, due, created) VALUES (?,?,?,?,?,?,?,?,?)",
                (ref, alert.id if alert else None, contact.id, str(recipient.channel), str(kind),
                 step, note.model_dump_json(), due, now),
            )  # fmt: skip
            made += cur.rowcount
            if cur.rowcount and due <= now:
                self._decided[ref] = note  # due() need not parse it back
            if cur.rowcount and alert is not None and due > now:
                self._event(db, alert.id, now, "held", AlertState(self._state(db, alert.id)),
                            transition=False, who=contact.id, channel=str(recipient.channel),
                            ref=ref, step=step,
                            detail=f"quiet hours until {due}")  # fmt: skip
        return made

    def _alarm_or_update(
        self, db: sqlite3.Connection, alert: Alert | None, recipient: Recipient, step: int
    ) -> MessageType:
        """The first message to a recipient about an alert opens an incident; later ones update.
        Rung 0 is always the first: resets, the only other messages, come after it."""
        if alert is None:
            return MessageType.DIGEST
        if step == 0:
            return MessageType.ALARM
        seen = db.execute(
            "SELECT 1 FROM deliveries WHERE alert_id = ? AND contact = ? AND channel = ? LIMIT 1",
            (alert.id, recipient.id, str(recipient.channel)),
        ).fetchone()
        return MessageType.UPDATE if seen else MessageType.ALARM

    def _state(self, db: sqlite3.Connection, alert_id: str) -> str:
        row = db.execute("SELECT state FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return str(row[0]) if row else str(AlertState.OPEN)

    def _batches(self, db: sqlite3.Connection, reg: Registry, now: float) -> None:
        """Alerts whose ladder batches (info → device desk) go out together, per recipient."""
        rows = db.execute(
            "SELECT * FROM alerts WHERE batched = 0 AND state = 'open' AND duplicate_of IS NULL "
            "AND next_at IS NULL AND step = 0"
        ).fetchall()
        groups: dict[str, list[sqlite3.Row]] = {}
        oldest: dict[str, float] = {}
        for row in rows:
            ladder = self._ladder_for(reg, row["elder"], row["severity"])
            if not ladder.batch_s:
                continue
            for cid in self._targets(reg, row["site"], row["elder"], ladder.steps[0].to, 0):
                groups.setdefault(cid, []).append(row)
                oldest[cid] = min(oldest.get(cid, math.inf), row["received"] + ladder.batch_s)
        for cid, members in groups.items():
            if oldest[cid] > now:
                continue
            batch = tuple(Alert.model_validate_json(r["alert"]) for r in members)
            ids = sorted(a.id for a in batch)
            self._notify(db, reg, cid, None, step=0, now=now, type_=MessageType.DIGEST,
                         batch=batch, ref_key="batch:" + ",".join(ids))  # fmt: skip
            db.executemany(
                "UPDATE alerts SET batched = 1, step = 1 WHERE id = ?", [(i,) for i in ids]
            )

    def digests(self) -> int:
        """Each family contact's daily digest per elder, once a local day at ``digest_hour``.

        Runs every minute after that hour: the digests already decided today are found in
        one query first, so the later runs build nothing and take no write lock.
        """
        reg = self.registry()
        if reg.digest_hour is None:
            return 0
        now = self.clock()
        wanted: list[tuple[str, str, str, list[str]]] = []  # elder, contact, ref key, refs
        for elder in reg.elders:
            for cid in elder.contacts:
                contact = reg.contact(cid)
                if contact is None or contact.role != "family":
                    continue
                local = datetime.fromtimestamp(now, ZoneInfo(contact.timezone or elder.timezone))
                if local.hour < reg.digest_hour:
                    continue
                key = f"digest:{elder.id}:{local.date()}"
                refs = [delivery_ref(key, 0, r, MessageType.DIGEST) for r in contact.recipients()]
                wanted.append((elder.id, cid, key, refs))
        if not wanted:
            return 0
        decided = {
            ref
            for (ref,) in self.store.db.execute(
                "SELECT ref FROM deliveries WHERE ref IN (SELECT value FROM json_each(?))",
                (json.dumps([ref for *_, refs in wanted for ref in refs]),),
            )
        }
        todo = [(e, c, key) for e, c, key, refs in wanted if not decided.issuperset(refs)]
        if not todo:
            return 0
        made = 0
        with self.store.tx() as db:
            for elder_id, cid, key in todo:
                rows = db.execute(
                    "SELECT alert, state, outcome FROM alerts WHERE elder = ? AND received >= ?"
                    " AND duplicate_of IS NULL ORDER BY received",
                    (elder_id, now - 86400),
                ).fetchall()
                batch = tuple(
                    Alert.model_validate_json(r["alert"]).model_copy(
                        update={"state": AlertState(r["state"])}
                    )
                    for r in rows
                )
                outcomes = {a.id: r["outcome"] for a, r in zip(batch, rows, strict=True)
                            if r["outcome"]}  # fmt: skip
                made += self._notify(
                    db, reg, cid, None, step=0, now=now, type_=MessageType.DIGEST,
                    batch=batch, outcomes=outcomes, elder_id=elder_id, ref_key=key,
                )  # fmt: skip
        return made

    # deliveries ------------------------------------------------------------------------
    def due(
        self, limit: int = 1000, busy: frozenset[str] | set[str] = frozenset()
    ) -> list[Notification]:
        """Notifications to send now: decided, not yet delivered, not being sent."""
        db = self.store.db
        refs = db.execute(  # refs only: most of a burst's pending rows are being sent
            "SELECT ref FROM deliveries WHERE status = 'pending' AND due <= ? ORDER BY due LIMIT ?",
            (self.clock(), limit + len(busy)),
        ).fetchall()
        out = []
        for (ref,) in refs:
            if ref in busy:
                continue
            note = self._decided.pop(ref, None)
            if note is None:
                stored = db.execute("SELECT notification FROM deliveries WHERE ref = ?", (ref,))
                note = Notification.model_validate_json(stored.fetchone()[0])
            out.append(note)
            if len(out) == limit:
                break
        if len(self._decided) > 10 * max(limit, 1000):  # decided, then dropped unsent
            self._decided.clear()
        return out

    def delivered(self, results: Iterable[tuple[Notification, Delivery]]) -> None:
        """Record how deliveries went: ok ones are done, final failures are failed for good
        (the ladder's next rung still comes on its timer), the others are tried again later."""
        with self.store.tx() as db:
            now = self.clock()
            for note, result in results:
                alerts = [note.alert] if note.alert else list(note.batch)
                if result.status == DeliveryStatus.OK:
                    cur = db.execute(
                        "UPDATE deliveries SET status = 'ok', attempts = attempts + ?, "
                        "delivered = ?, detail = ? WHERE ref = ? AND status = 'pending'",
                        (result.attempts, result.delivered or now, result.detail[:500], note.ref),
                    )
                    if not cur.rowcount:  # dropped meanwhile, or recorded already
                        continue
                    if note.type == MessageType.DIGEST and note.recipient.role == "family":
                        continue  # a digest tells about alerts; it changes none of them
                    for alert in alerts:
                        self._told(db, alert.id, note, now)
                    if result.acknowledged_by is not None and note.alert is not None:
                        self._answered_with_ack(db, note.alert.id, note, result, now)
                elif result.final:
                    self._failed(db, alerts, note, result, now)
                else:
                    cur = db.execute(
                        "UPDATE deliveries SET attempts = attempts + ?, due = ?, detail = ? "
                        "WHERE ref = ? AND status = 'pending'",
                        (result.attempts, now + self.retry_s, f"{result.status}: "
                         f"{result.detail}"[:500], note.ref),
                    )  # fmt: skip
                    if not cur.rowcount:
                        continue
                    log.warning(
                        "delivery %s to %s (%s) failed: %s; again in %.0f s",
                        note.ref, note.recipient.id, note.recipient.channel, result.status,
                        self.retry_s,
                    )  # fmt: skip

    def _failed(
        self, db: sqlite3.Connection, alerts: list[Alert], note: Notification, result: Delivery,
        now: float,
    ) -> None:  # fmt: skip
        """A failure sending again cannot mend: not re-queued, recorded on each alert."""
        detail = f"{result.status}: {result.detail}"[:500]
        cur = db.execute(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + ?, detail = ? "
            "WHERE ref = ? AND status = 'pending'",
            (result.attempts, detail, note.ref),
        )
        if not cur.rowcount:
            return
        log.warning("delivery %s to %s (%s) failed for good: %s", note.ref, note.recipient.id,
                    note.recipient.channel, result.status)  # fmt: skip
        for alert in alerts:
            self._event(db, alert.id, now, f"failed_{note.type}", self._state(db, alert.id),
                        transition=False, who=note.recipient.id,
                        channel=str(note.recipient.channel), ref=note.ref, step=note.step,
                        detail=detail)  # fmt: skip

    def _told(self, db: sqlite3.Connection, alert_id: str, note: Notification, now: float) -> None:
        promote = note.type in (MessageType.ALARM, MessageType.DIGEST) and bool(
            db.execute(
                "UPDATE alerts SET state = 'notified' WHERE id = ? AND state = 'open'", (alert_id,)
            ).rowcount
        )
        new = AlertState.NOTIFIED if promote else AlertState(self._state(db, alert_id))
        self._event(db, alert_id, now, f"delivered_{note.type}", new, transition=promote,
                    who=note.recipient.id, channel=str(note.recipient.channel), ref=note.ref,
                    step=note.step)  # fmt: skip

    # acknowledgement -------------------------------------------------------------------
    def ack_url(self, alert_id: str, contact_id: str) -> str | None:
        if not self.ack_base:
            return None
        token = self._tokens.get(contact_id)
        if token is None:
            token = self._tokens[contact_id] = ack_token(self.secret, contact_id)
        return f"{self.ack_base}/alerts/{alert_id}/ack?contact={contact_id}&token={token}"

    def acknowledge(
        self,
        alert_id: str,
        contact_id: str,
        token: str,
        *,
        channel: str,
        outcome: str | None = None,
    ) -> AckResult:
        """Acknowledge (``outcome`` None) or resolve an alert, for a contact with a valid token."""
        with self.store.tx() as db:
            row = self._authorised(db, alert_id, contact_id, token, channel)
            if isinstance(row, AckResult):
                return row
            if outcome is not None and outcome not in OUTCOMES:
                return AckResult(400, f"outcome must be one of {sorted(OUTCOMES)}")
            return self._acknowledged(db, row, contact_id, channel, self.clock(), outcome)

    def describe(self, alert_id: str, contact_id: str, token: str) -> AckResult:
        """The alert in words, for the page a link opens before anyone presses the button:
        link previews and mail scanners fetch links too, so opening one changes nothing."""
        row = self._authorised(self.store.db, alert_id, contact_id, token, "page")
        if isinstance(row, AckResult):
            return row
        alert = Alert.model_validate_json(row["alert"])
        elder = self.registry().elder(alert.elder)
        name = elder.card().display_name if elder else alert.elder
        return AckResult(200, what_happened(alert, name), row["state"])

    def _authorised(
        self, db: sqlite3.Connection, alert_id: str, contact_id: str, token: str, channel: str
    ) -> sqlite3.Row | AckResult:
        """The alert's row, if the contact's token is valid and they may act on it."""
        row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            log.warning("acknowledgement for unknown alert %r refused", alert_id[:64])
            return AckResult(404, f"no alert {alert_id[:64]!r}")
        if not token_valid(self.secret, contact_id, token) or not self.registry().may_acknowledge(
            contact_id, row["elder"], row["site"]
        ):
            self.refused += 1
            log.warning(
                "acknowledgement of alert %s by contact %r over %s refused: invalid token",
                alert_id, contact_id[:64], channel,
            )  # fmt: skip
            return AckResult(403, "invalid token for this contact and alert")
        return row

    def _answered_with_ack(
        self, db: sqlite3.Connection, alert_id: str, note: Notification, result: Delivery,
        now: float,
    ) -> None:  # fmt: skip
        """The call centre took the alarm in its answer: acknowledged by the recipient, in
        the transaction that records the delivery, so before anything else is sent. The
        answer came over the connection we opened to the registry's URL: no token."""
        row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            return
        who = result.acknowledged_by
        operator = f"operator {who}" if who and who != note.recipient.id else None
        answer = self._acknowledged(db, row, note.recipient.id, str(note.recipient.channel),
                                    now, detail=operator)  # fmt: skip
        log.info("alert %s: the call centre's answer to %s acknowledges (contact %s): %s",
                 alert_id, note.ref, note.recipient.id, answer.message)  # fmt: skip

    def _acknowledged(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row,
        contact_id: str,
        channel: str,
        now: float,
        outcome: str | None = None,
        detail: str | None = None,
    ) -> AckResult:
        """Acknowledge (and, with an outcome, resolve) an alert someone may acknowledge."""
        if row["duplicate_of"]:
            row = db.execute("SELECT * FROM alerts WHERE id = ?", (row["duplicate_of"],)).fetchone()
        if row["state"] in CLOSED:
            return AckResult(409, f"alert is already {row['state']}", row["state"])
        if row["state"] != AlertState.ACKNOWLEDGED:
            db.execute(
                "UPDATE alerts SET state = 'acknowledged', acked_by = ?, acked_channel = ?, "
                "acked_at = ?, next_at = NULL WHERE id = ?",
                (contact_id, channel, now, row["id"]),
            )
            self._cascade(db, row["id"], AlertState.ACKNOWLEDGED, now, "acknowledged",
                          who=contact_id, channel=channel, detail=detail)  # fmt: skip
            self._drop_held(db, row["id"])
        if outcome is None:
            return AckResult(200, "acknowledged", str(AlertState.ACKNOWLEDGED))
        row = db.execute("SELECT * FROM alerts WHERE id = ?", (row["id"],)).fetchone()
        self._close(db, row, AlertState.RESOLVED, now, outcome=outcome, who=contact_id,
                    channel=channel)  # fmt: skip
        return AckResult(200, f"resolved: {outcome}", str(AlertState.RESOLVED))

    def _close(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row,
        state: AlertState,
        now: float,
        *,
        outcome: str | None = None,
        who: str | None = None,
        channel: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Cancel or resolve: stop the ladder, reset the call centre's incident."""
        db.execute(
            "UPDATE alerts SET state = ?, outcome = ?, closed_at = ?, next_at = NULL WHERE id = ?",
            (str(state), outcome, now, row["id"]),
        )
        self._cascade(db, row["id"], state, now, str(state), who=who, channel=channel,
                      detail=outcome or detail)  # fmt: skip
        self._drop_held(db, row["id"], unsent_too=state == AlertState.CANCELLED)
        reg = self.registry()
        told = db.execute(
            "SELECT DISTINCT contact FROM deliveries WHERE alert_id = ? AND type = 'alarm' "
            "AND channel = 'call_centre' AND status IN ('ok', 'pending')",
            (row["id"],),
        ).fetchall()
        alert = Alert.model_validate_json(row["alert"]).model_copy(
            update={"state": state, "updated": now}
        )
        for (cid,) in told:
            contact = reg.contact(cid)
            if contact is not None and contact.role in TOLD_BY_RESET:
                self._notify(db, reg, cid, alert, step=10_000, now=now, type_=MessageType.RESET,
                             after=RESET_AFTER_S)  # fmt: skip

    def _drop_held(
        self, db: sqlite3.Connection, alert_id: str, *, unsent_too: bool = False
    ) -> None:
        """Messages held for quiet hours (or, on cancel, never sent) are no longer news."""
        # an alarm to the call centre may already be on the wire: it is sent, then reset
        attempted = "AND channel != 'call_centre' " if unsent_too else "AND due > ? "
        args: tuple[object, ...] = (alert_id,) if unsent_too else (alert_id, self.clock())
        db.execute(
            "UPDATE deliveries SET status = 'dropped' WHERE alert_id = ? AND status = 'pending' "
            f"AND attempts = 0 AND type != 'reset' {attempted}",
            args,
        )

    def _cascade(
        self,
        db: sqlite3.Connection,
        alert_id: str,
        state: AlertState,
        now: float,
        event: str,
        **detail: str | None,
    ) -> None:
        """A change of state applies to the alert and to the repeats folded into it."""
        self._event(db, alert_id, now, event, state, **detail)
        for (dup,) in db.execute(
            "SELECT id FROM alerts WHERE duplicate_of = ? AND state != ?", (alert_id, str(state))
        ).fetchall():
            db.execute("UPDATE alerts SET state = ? WHERE id = ?", (str(state), dup))
            self._event(db, dup, now, event, state, **detail)

    def _event(
        self,
        db: sqlite3.Connection,
        alert_id: str,
        ts: float,
        event: str,
        state: AlertState | str,
        *,
        transition: bool = True,
        who: str | None = None,
        channel: str | None = None,
        ref: str | None = None,
        step: int | None = None,
        detail: str | None = None,
    ) -> None:
        db.execute(
            "INSERT INTO events (alert_id, ts, event, state, transition, who, channel, ref, "
            "step, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (alert_id, ts, event, str(state), int(transition), who, channel, ref, step, detail),
        )


def alert_at(row: sqlite3.Row) -> Alert:
    """The alert as it stood at an event (for MQTT and InfluxDB)."""
    return Alert.model_validate_json(row["alert"]).model_copy(
        update={"state": AlertState(row["state"]), "updated": row["ts"]}
    )


def story(db: sqlite3.Connection, alert_id: str) -> list[dict[str, object]]:
    """An alert's path up the ladder: each event, who, on which channel, when."""
    return [
        {k: r[k] for k in ("ts", "event", "state", "who", "channel", "step", "detail")}
        for r in db.execute(
            "SELECT * FROM events WHERE alert_id = ? ORDER BY seq", (alert_id,)
        ).fetchall()
    ]

"""The ladder on the store: each event read, decided by the policy, committed at once.

:class:`Escalation` is the service's state machine. For each event — alerts arriving,
time passing, a delivery's answer, an acknowledgement — it reads what the decision needs
from the :class:`~escalation.store.Store`, asks the pure
:class:`~escalation.ladder.EscalationPolicy`, and writes the answer (alert states, the
notifications decided, events for MQTT and InfluxDB) in one transaction, before anything
leaves the process. Time comes from a clock passed in (the wall clock in production,
:class:`~escalation.ladder.ManualClock` in tests); every timer is an absolute time in the
store, so a restart resumes where it was.

>>> from pathlib import Path
>>> from escalation.ladder import EscalationPolicy
>>> from escalation.registry import Registry
>>> from homecare.contract import Alert
>>> reg = Registry.model_validate({"provider": {"call_centre": "arc"},
...     "contacts": [{"id": "arc", "name": "ARC", "role": "call_centre",
...                   "channels": [{"kind": "call_centre", "address": "https://arc/alarm"}]}]})
>>> clock = ManualClock(1000.0)
>>> esc = Escalation(Store(Path(":memory:")), lambda: reg, EscalationPolicy(secret=b"k"),
...                  clock=clock)
>>> esc.receive(Alert(id="a1", site="s", elder="e1", kind="sos", severity="critical",
...                   ts=999.0, updated=999.0))
'opened'
>>> [(n.recipient.id, n.type.value) for n in esc.due()]
[('arc', 'alarm')]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from escalation.ladder import (
    CLOSED,
    DETAIL_MAX,
    OUTCOMES,
    AckResult,
    Arrival,
    Decided,
    EscalationPolicy,
    ManualClock,
    Send,
    arrival,
)
from escalation.messages import what_happened
from escalation.notification import (
    Delivery,
    DeliveryStatus,
    MessageType,
    Notification,
)
from escalation.registry import Registry
from escalation.store import OPENED, AlertRecord, Store
from homecare.contract import Alert, AlertState
from homecare.i18n import translator

__all__ = ["Clock", "Escalation", "ManualClock"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class _Seen:
    """For a batch of incoming alerts: which ids the store may know, which elders have an
    ongoing condition; so most alerts of a burst need no look-up of their own."""

    def __init__(self, store: Store, alerts: list[Alert], flap_from: float) -> None:
        self.known = store.known_ids(list({a.id for a in alerts}))
        self.ongoing = store.elders_ongoing(list({a.elder for a in alerts}), flap_from)

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


class Escalation:
    """Alerts in, notifications out; every decision committed before it is acted on."""

    def __init__(
        self,
        store: Store,
        registry: Callable[[], Registry],
        policy: EscalationPolicy,
        *,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.policy = policy
        self.clock = clock
        self.refused = 0
        self._decided: dict[str, Notification] = {}
        """Notifications just decided, by ref: what the store holds, not yet parsed back."""

    def ack_url(self, alert_id: str, contact_id: str) -> str | None:
        return self.policy.ack_url(alert_id, contact_id)

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
        with self.store.tx():
            seen = _Seen(self.store, alerts, self.policy.flap_from(self.clock()))
            out = [self._receive(a, seen) for a in alerts]
            self._advance()
        return out

    def _receive(self, alert: Alert, seen: _Seen) -> str:
        now, store = self.clock(), self.store
        record = store.alert(alert.id) if seen.may_know(alert) else None
        match arrival(alert, record.state if record else None):
            case Arrival.CANCELLED_UNSEEN:
                store.insert_alert(alert, now, start_at=now, next_at=None, state=alert.state,
                                   closed=True)  # fmt: skip
                store.add_event(alert.id, now, "cancelled", alert.state, transition=False)
                return "cancelled"
            case Arrival.CANCEL:
                assert record is not None
                self._close(record, AlertState.CANCELLED, now, detail="I'm OK pressed")
                return "cancelled"
            case Arrival.CLEARED:
                assert record is not None
                self._close(record, AlertState.RESOLVED, now, detail="condition cleared")
                return "resolved"
            case Arrival.IGNORED:
                log.debug("alert %s arrived %s, never seen open: ignored", alert.id, alert.state)
                return "ignored"
            case Arrival.KNOWN:
                return "known"
        same = (
            store.ongoing(alert.elder, alert.kind, self.policy.flap_from(now))
            if seen.may_repeat(alert)
            else None
        )
        if same is not None:
            repeat = self.policy.repeat(same)
            store.insert_alert(alert, now, start_at=now, next_at=None, state=repeat.state,
                               duplicate_of=same.id, outcome=repeat.outcome,
                               closed=repeat.state in CLOSED)  # fmt: skip
            store.count_repeat(same.id)
            store.add_event(alert.id, now, repeat.event, repeat.state,
                            transition=repeat.transition, detail=same.id)  # fmt: skip
            return "duplicate"
        reg = self.registry()
        opening = self.policy.opening(reg, alert, now)
        step, next_at = 0, opening.next_at
        if next_at is not None and next_at <= now:  # the first rung at once, in this insert
            rung = self.policy.rung(reg, alert, 0, opening.start_at, now, told=frozenset(),
                                    ladder=opening.ladder)  # fmt: skip
            self._record(rung.decided, AlertState.OPEN, now)
            if rung.nobody:
                log.warning("alert %s rung 0: nobody to tell (registry)", alert.id)
            step, next_at = rung.step, rung.next_at
        store.insert_alert(alert, now, start_at=opening.start_at, next_at=next_at,
                           state=AlertState.OPEN, step=step)  # fmt: skip
        # not a transition (detect stored the open alert), but apps see it open from here
        store.add_event(alert.id, now, OPENED, AlertState.OPEN, transition=False)
        if opening.start_at > now:
            store.add_event(alert.id, now, "grace", AlertState.OPEN, transition=False,
                            detail=f"until {opening.start_at}")  # fmt: skip
        return "opened"

    # time passing ----------------------------------------------------------------------
    def advance(self) -> None:
        """Run every rung that is due, and the batches."""
        with self.store.tx():
            self._advance()

    def _advance(self) -> None:
        now, reg, store = self.clock(), self.registry(), self.store
        for record in store.due_alerts(now):
            alert = record.parsed()
            told = store.recipients_told(record.id) if record.step else frozenset()
            rung = self.policy.rung(reg, alert, record.step, record.start_at, now, told=told)
            if rung.nobody:
                log.warning("alert %s rung %d: nobody to tell (registry)", alert.id, record.step)
            self._record(rung.decided, record.state, now)
            store.set_rung(record.id, rung.step, rung.next_at)
        for batch in self.policy.batches(reg, store.unbatched(), now):
            self._record(self.policy.batch(reg, batch, now), AlertState.OPEN, now)
            store.mark_batched(m.id for m in batch.members)

    def digests(self) -> int:
        """Each family contact's daily digest per elder, once a local day at ``digest_hour``.

        Runs every minute after that hour: the digests already decided today are found in
        one query first, so the later runs build nothing and take no write lock.
        """
        reg, now = self.registry(), self.clock()
        wanted = self.policy.digests_due(reg, now)
        if not wanted:
            return 0
        decided = self.store.decided([ref for d in wanted for ref in d.refs])
        todo = [d for d in wanted if not decided.issuperset(d.refs)]
        if not todo:
            return 0
        made = 0
        with self.store.tx():
            for digest in todo:
                day = self.store.alerts_of_elder(digest.elder, now - 86400)
                made += self._record(self.policy.digest(reg, digest, day, now), None, now)
        return made

    def _record(self, decided: list[Decided], state: AlertState | None, now: float) -> int:
        """Store decided notifications (a ref decided before is not again); a held one is an
        event of its alert. ``state``: the alert's, for that event."""
        made = 0
        for d in decided:
            note = d.note
            alert_id = note.alert.id if note.alert else None
            added = self.store.add_delivery(
                note.ref, alert_id, note.recipient.id, str(note.recipient.channel),
                str(note.type), note.step, note.model_dump_json(), d.due, now,
            )  # fmt: skip
            if not added:
                continue
            made += 1
            if not d.held:
                self._decided[note.ref] = note  # due() need not parse it back
            elif alert_id is not None:
                self.store.add_event(
                    alert_id, now, "held", state or self.store.state(alert_id), transition=False,
                    who=note.recipient.id, channel=str(note.recipient.channel), ref=note.ref,
                    step=note.step, detail=f"quiet hours until {d.due}",
                )  # fmt: skip
        return made

    # deliveries ------------------------------------------------------------------------
    def due(
        self, limit: int = 1000, busy: frozenset[str] | set[str] = frozenset()
    ) -> list[Notification]:
        """Notifications to send now: decided, not yet delivered, not being sent."""
        out: list[Notification] = []
        # refs only: most of a burst's pending rows are being sent
        for ref in self.store.due_refs(self.clock(), limit + len(busy)):
            if ref in busy:
                continue
            note = self._decided.pop(ref, None)
            if note is None:
                note = Notification.model_validate_json(self.store.notification(ref))
            out.append(note)
            if len(out) == limit:
                break
        if len(self._decided) > 10 * max(limit, 1000):  # decided, then dropped unsent
            self._decided.clear()
        return out

    def sending(self, notes: list[Notification]) -> list[Notification]:
        """Record, before they leave, that these are being sent ("sending rung X of alert
        A"); answer those a try had already started for with no answer recorded: the
        process that sent them stopped in between (kill -9, a failover). They go again
        with the same ref, which the call centre and gateways de-duplicate on and email
        carries as its Message-ID; each is an ``in_doubt`` event of its alert."""
        if not notes:
            return []
        with self.store.tx():
            now = self.clock()
            doubt = self.store.mark_sending([n.ref for n in notes], now)
            out = [n for n in notes if n.ref in doubt]
            for note in out:
                log.warning("delivery %s to %s (%s) was being sent when escalate stopped: "
                            "sent again with the same ref", note.ref, note.recipient.id,
                            note.recipient.channel)  # fmt: skip
                if note.alert is not None and self.store.alert(note.alert.id) is not None:
                    self.store.add_event(
                        note.alert.id, now, "in_doubt", self.store.state(note.alert.id),
                        transition=False, who=note.recipient.id,
                        channel=str(note.recipient.channel), ref=note.ref, step=note.step,
                    )  # fmt: skip
        return out

    def delivered(self, results: Iterable[tuple[Notification, Delivery]]) -> None:
        """Record how deliveries went, by the policy's one retry rule: ok ones are done,
        failures are sent again after a backoff until the channel's cap, then failed for
        good (the ladder's next rung still comes on its timer)."""
        store = self.store
        with store.tx():
            now = self.clock()
            for note, result in results:
                if result.status == DeliveryStatus.OK:  # the burst's common case: no read
                    delivered = result.delivered or now
                    if store.delivery_ok(
                        note.ref, result.attempts, delivered, result.detail[:DETAIL_MAX]
                    ):
                        self._ok(note, result, now)
                    continue
                before = store.attempts(note.ref)
                if before is None:  # dropped meanwhile, or recorded already
                    continue
                after = self.policy.after_delivery(note, result, before, now)
                sent = after.attempts - before
                if after.send == Send.FAILED:
                    store.delivery_failed(note.ref, sent, after.detail)
                    self._failed(note, after.detail, now)
                else:
                    assert after.due is not None
                    store.delivery_again(note.ref, sent, after.due, after.detail)
                    log.warning(
                        "delivery %s to %s (%s) failed (%d so far): %s; again in %.1f s",
                        note.ref, note.recipient.id, note.recipient.channel, after.attempts,
                        result.status, after.due - now,
                    )  # fmt: skip

    def _ok(self, note: Notification, result: Delivery, now: float) -> None:
        if note.type == MessageType.DIGEST and note.recipient.role == "family":
            return  # a digest tells about alerts; it changes none of them
        for alert in [note.alert] if note.alert else list(note.batch):
            promote = note.type in (MessageType.ALARM, MessageType.DIGEST) and (
                self.store.promote_notified(alert.id)
            )
            new = AlertState.NOTIFIED if promote else self.store.state(alert.id)
            self.store.add_event(alert.id, now, f"delivered_{note.type}", new,
                                 transition=promote, who=note.recipient.id,
                                 channel=str(note.recipient.channel), ref=note.ref,
                                 step=note.step)  # fmt: skip
        if result.acknowledged_by is not None and note.alert is not None:
            self._answered_with_ack(note.alert.id, note, result, now)

    def _failed(self, note: Notification, detail: str, now: float) -> None:
        """The delivery's final state, on each alert it was about (MQTT and InfluxDB see it)."""
        log.warning("delivery %s to %s (%s) failed for good: %s", note.ref, note.recipient.id,
                    note.recipient.channel, detail)  # fmt: skip
        for alert in [note.alert] if note.alert else list(note.batch):
            self.store.add_event(alert.id, now, f"failed_{note.type}",
                                 self.store.state(alert.id), transition=False,
                                 who=note.recipient.id, channel=str(note.recipient.channel),
                                 ref=note.ref, step=note.step, detail=detail)  # fmt: skip

    # acknowledgement -------------------------------------------------------------------
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
        with self.store.tx():
            record = self._authorised(alert_id, contact_id, token, channel)
            if isinstance(record, AckResult):
                return record
            if outcome is not None and outcome not in OUTCOMES:
                return AckResult(400, f"outcome must be one of {sorted(OUTCOMES)}")
            return self._acknowledged(record, contact_id, channel, self.clock(), outcome)

    def describe(self, alert_id: str, contact_id: str, token: str) -> AckResult:
        """The alert in words, for the page a link opens before anyone presses the button:
        link previews and mail scanners fetch links too, so opening one changes nothing."""
        record = self._authorised(alert_id, contact_id, token, "page")
        if isinstance(record, AckResult):
            return record
        alert, reg = record.parsed(), self.registry()
        elder, contact = reg.elder(alert.elder), reg.contact(contact_id)
        language = (contact.language if contact else None) or reg.provider_for(alert.site).language
        name = elder.display_name if elder else alert.elder
        words = what_happened(alert, name, translator(language, fallback=True))
        return AckResult(200, words, str(record.state), language=language)

    def _authorised(
        self, alert_id: str, contact_id: str, token: str, channel: str
    ) -> AlertRecord | AckResult:
        """The alert's record, if the contact's token is valid and they may act on it."""
        record = self.store.alert(alert_id)
        reg = self.registry()
        contact = reg.contact(contact_id)  # only to word the refusal in a known language
        language = (contact.language if contact else None) or reg.provider.language
        if record is None:
            log.warning("acknowledgement for unknown alert %r refused", alert_id[:64])
            return AckResult(404, f"no alert {alert_id[:64]!r}", language=language)
        language = (contact.language if contact else None) or (
            reg.provider_for(record.site).language)
        if not self.policy.may_act(reg, record, contact_id, token):
            self.refused += 1
            log.warning(
                "acknowledgement of alert %s by contact %r over %s refused: invalid token",
                alert_id, contact_id[:64], channel,
            )  # fmt: skip
            return AckResult(403, "invalid token for this contact and alert", language=language)
        return record

    def _answered_with_ack(
        self, alert_id: str, note: Notification, result: Delivery, now: float
    ) -> None:
        """The call centre took the alarm in its answer: acknowledged by the recipient, in
        the transaction that records the delivery, so before anything else is sent. The
        answer came over the connection we opened to the registry's URL: no token."""
        record = self.store.alert(alert_id)
        if record is None:
            return
        who = result.acknowledged_by
        operator = f"operator {who}" if who and who != note.recipient.id else None
        answer = self._acknowledged(record, note.recipient.id, str(note.recipient.channel),
                                    now, detail=operator)  # fmt: skip
        log.info("alert %s: the call centre's answer to %s acknowledges (contact %s): %s",
                 alert_id, note.ref, note.recipient.id, answer.message)  # fmt: skip

    def _acknowledged(
        self,
        record: AlertRecord,
        contact_id: str,
        channel: str,
        now: float,
        outcome: str | None = None,
        detail: str | None = None,
    ) -> AckResult:
        """Acknowledge (and, with an outcome, resolve) an alert someone may acknowledge."""
        if record.duplicate_of:
            original = self.store.alert(record.duplicate_of)
            assert original is not None
            record = original
        if record.state in CLOSED:
            return AckResult(409, f"alert is already {record.state}", str(record.state))
        if record.state != AlertState.ACKNOWLEDGED:
            self.store.set_acknowledged(record.id, contact_id, channel, now)
            self._cascade(record.id, AlertState.ACKNOWLEDGED, now, "acknowledged",
                          who=contact_id, channel=channel, detail=detail)  # fmt: skip
            self.store.drop_held(record.id, now, unsent_too=False)
        if outcome is None:
            return AckResult(200, "acknowledged", str(AlertState.ACKNOWLEDGED))
        self._close(record, AlertState.RESOLVED, now, outcome=outcome, who=contact_id,
                    channel=channel)  # fmt: skip
        return AckResult(200, f"resolved: {outcome}", str(AlertState.RESOLVED))

    def _close(
        self,
        record: AlertRecord,
        state: AlertState,
        now: float,
        *,
        outcome: str | None = None,
        who: str | None = None,
        channel: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Cancel or resolve: stop the ladder, reset the call centre's incident."""
        self.store.set_closed(record.id, state, now, outcome)
        self._cascade(record.id, state, now, str(state), who=who, channel=channel,
                      detail=outcome or detail)  # fmt: skip
        # an alarm to the call centre may already be on the wire: it is sent, then reset
        self.store.drop_held(record.id, now, unsent_too=state == AlertState.CANCELLED)
        alert = record.parsed().model_copy(update={"state": state, "updated": now})
        told = self.store.call_centres_told(record.id)
        self._record(self.policy.resets(self.registry(), alert, told, now), state, now)

    def _cascade(
        self,
        alert_id: str,
        state: AlertState,
        now: float,
        event: str,
        *,
        who: str | None = None,
        channel: str | None = None,
        detail: str | None = None,
    ) -> None:
        """A change of state applies to the alert and to the repeats folded into it."""
        for target in [alert_id, *self.store.move_repeats(alert_id, state)]:
            self.store.add_event(target, now, event, state, who=who, channel=channel,
                                 detail=detail)  # fmt: skip

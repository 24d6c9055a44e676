"""The ladder as a pure policy: plain records and times (floats) in, decisions out.

No store, no server, no clock: each test passes ``now`` and the state the decision needs,
so an hour of escalation is a few function calls.
"""

from __future__ import annotations

import pytest

from escalation.ladder import (
    Arrival,
    Decided,
    EscalationPolicy,
    Send,
    arrival,
)
from escalation.notification import ChannelKind, Delivery, DeliveryStatus, MessageType
from escalation.registry import Registry
from escalation.store import AlertRecord
from homecare.contract import Alert, AlertState
from homecare.settings import RetrySettings

NOON = 1_700_049_600.0  # 2023-11-15 12:00 UTC
REGISTRY = Registry.model_validate({
    "provider": {"call_centre": "arc", "supervisor": "sup", "device_desk": "desk"},
    "contacts": [
        {"id": "arc", "name": "ARC", "role": "call_centre",
         "channels": [{"kind": "call_centre", "address": "https://arc.example/alarm"}]},
        {"id": "sup", "name": "Supervisor", "role": "supervisor",
         "channels": [{"kind": "call_centre", "address": "https://arc.example/sup"}]},
        {"id": "desk", "name": "Desk", "role": "device_desk",
         "channels": [{"kind": "email", "address": "desk@example.org"}]},
        {"id": "anna", "name": "Anna", "role": "family", "quiet_hours": "22:00-07:00",
         "channels": [{"kind": "email", "address": "anna@example.org"},
                      {"kind": "webhook", "address": "https://sms.example/anna"}]},
        {"id": "ben", "name": "Ben", "role": "family",
         "channels": [{"kind": "webhook", "address": "https://sms.example/ben"}]},
    ],
    "elders": [{"id": "e1", "display_name": "Margaret", "site": "s", "address": "12 Elm Road",
                "contacts": ["anna", "ben"]}],
})  # fmt: skip
POLICY = EscalationPolicy(
    secret=b"k", grace_s=30.0, flap_s=900.0, ack_base="https://care.example",
    retries={ChannelKind.CALL_CENTRE: RetrySettings(attempts=4, backoff_s=1.0, backoff_max_s=3.0)},
)  # fmt: skip


def alert(kind: str = "sos", severity: str = "critical", ts: float = NOON, **kw: object) -> Alert:
    return Alert(id=f"{kind}-{int(ts)}", site="s", elder="e1", kind=kind, severity=severity,
                 ts=ts, updated=ts, **kw)  # fmt: skip


def record(a: Alert, state: AlertState, **kw: object) -> AlertRecord:
    fields: dict[str, object] = {
        "id": a.id, "alert": a.model_dump_json(), "site": a.site, "elder": a.elder,
        "kind": a.kind, "severity": str(a.severity), "state": state, "received": a.ts,
        "start_at": a.ts, "step": 0, "next_at": None, "duplicate_of": None, "outcome": None,
        "closed_at": None,
    }  # fmt: skip
    return AlertRecord(**{**fields, **kw})  # type: ignore[arg-type]


def told(decided: list[Decided]) -> list[tuple[str, str, str]]:
    return sorted((d.note.recipient.id, str(d.note.recipient.channel), str(d.note.type))
                  for d in decided)  # fmt: skip


def test_a_critical_alert_climbs_rung_by_rung_on_the_times_given() -> None:
    a = alert()
    opening = POLICY.opening(REGISTRY, a, now=NOON)
    assert (opening.start_at, opening.next_at) == (NOON, NOON)
    first = POLICY.rung(REGISTRY, a, 0, opening.start_at, NOON, told=frozenset())
    assert told(first.decided) == [("anna", "email", "alarm"), ("anna", "webhook", "alarm"),
                                   ("arc", "call_centre", "alarm")]  # fmt: skip
    assert (first.step, first.next_at) == (1, NOON + 60)
    was_told = {(d.note.recipient.id, str(d.note.recipient.channel)) for d in first.decided}
    second = POLICY.rung(REGISTRY, a, 1, NOON, NOON + 61, told=was_told)  # a second late
    assert told(second.decided) == [("ben", "webhook", "alarm"), ("sup", "call_centre", "alarm")]
    assert (second.step, second.next_at) == (2, NOON + 120)
    third = POLICY.rung(REGISTRY, a, 2, NOON, NOON + 120, told=was_told | {("sup", "call_centre")})
    assert ("sup", "call_centre", "update") in told(third.decided), "a later rung updates"
    assert all(d.due == NOON + 120 and not d.held for d in third.decided)


def test_a_fall_waits_out_the_grace_window() -> None:
    fall = alert("fall", ts=NOON - 10)
    opening = POLICY.opening(REGISTRY, fall, now=NOON)
    assert opening.start_at == opening.next_at == NOON + 20  # 30 s after the fall


def test_info_alerts_have_no_timer_and_go_as_one_batch_once_the_oldest_waited() -> None:
    low = alert("battery_low", "info")
    assert POLICY.opening(REGISTRY, low, now=NOON).next_at is None
    later = alert("offline", "info", ts=NOON + 300)
    waiting = [record(low, AlertState.OPEN), record(later, AlertState.OPEN)]
    assert POLICY.batches(REGISTRY, waiting, NOON + 899) == []
    [batch] = POLICY.batches(REGISTRY, waiting, NOON + 900)
    [decided] = POLICY.batch(REGISTRY, batch, NOON + 900)
    assert (decided.note.recipient.id, decided.note.type) == ("desk", MessageType.DIGEST)
    assert sorted(a.id for a in decided.note.batch) == sorted([low.id, later.id])


def test_quiet_hours_hold_a_warning_to_family_until_morning_never_a_critical_one() -> None:
    night = NOON + 11 * 3600  # 23:00 UTC
    warning = POLICY.notify(REGISTRY, "anna", alert("wandering", "warning", ts=night), step=0,
                            now=night)  # fmt: skip
    assert {d.due for d in warning} == {NOON + 19 * 3600}  # 07:00
    assert all(d.held for d in warning)
    critical = POLICY.notify(REGISTRY, "anna", alert(ts=night), step=0, now=night)
    assert {d.due for d in critical} == {night}


@pytest.mark.parametrize(
    ("known", "state", "expected"),
    [
        (None, AlertState.OPEN, Arrival.NEW),
        (AlertState.NOTIFIED, AlertState.OPEN, Arrival.KNOWN),
        (None, AlertState.RESOLVED, Arrival.IGNORED),
        (AlertState.NOTIFIED, AlertState.CANCELLED, Arrival.CANCEL),
        (None, AlertState.CANCELLED, Arrival.CANCELLED_UNSEEN),
        (AlertState.RESOLVED, AlertState.CANCELLED, Arrival.KNOWN),
    ],
)
def test_what_an_arriving_alert_is(
    known: AlertState | None, state: AlertState, expected: Arrival
) -> None:
    assert arrival(alert("fall", state=state), known) == expected


def test_a_repeat_joins_the_condition_and_a_flapping_warning_is_closed_at_once() -> None:
    ongoing = POLICY.repeat(record(alert(), AlertState.NOTIFIED))
    assert (ongoing.event, ongoing.state, ongoing.transition, ongoing.outcome) == (
        "duplicate", AlertState.NOTIFIED, True, None)  # fmt: skip
    w = alert("tachycardia", "warning")
    flap = POLICY.repeat(record(w, AlertState.RESOLVED))
    assert (flap.event, flap.outcome) == ("flap", f"repeat of {w.id}")


def test_one_retry_policy_backs_off_honours_retry_after_and_gives_up_at_the_cap() -> None:
    [arc] = [d.note for d in POLICY.notify(REGISTRY, "arc", alert(), step=0, now=NOON)]
    busy = Delivery(ref=arc.ref, status=DeliveryStatus.BUSY)
    now, attempts, verdicts = NOON, 0, []
    while True:
        after = POLICY.after_delivery(arc, busy, attempts, now)
        wait = None if after.due is None else after.due - now
        verdicts.append((after.send, after.attempts, wait))
        if after.send != Send.AGAIN:
            break
        assert after.due is not None
        now, attempts = after.due, after.attempts
    assert verdicts == [(Send.AGAIN, 1, 1.0), (Send.AGAIN, 2, 2.0), (Send.AGAIN, 3, 3.0),
                        (Send.FAILED, 4, None)]  # fmt: skip
    assert after.detail == "after 4 attempts: busy: "
    later = Delivery(ref=arc.ref, status=DeliveryStatus.BUSY, retry_after=2.5)
    assert POLICY.after_delivery(arc, later, 0, NOON).due == NOON + 2.5
    unknown = Delivery(ref=arc.ref, status=DeliveryStatus.UNKNOWN_CALLER, final=True)
    assert POLICY.after_delivery(arc, unknown, 0, NOON).send == Send.FAILED
    ok = Delivery(ref=arc.ref, status=DeliveryStatus.OK)
    assert POLICY.after_delivery(arc, ok, 3, NOON).send == Send.OK


def test_a_closed_alarm_resets_the_call_centre_a_moment_later() -> None:
    resolved = alert(state=AlertState.RESOLVED)
    [reset] = POLICY.resets(REGISTRY, resolved, ["arc", "anna"], NOON)
    assert (reset.note.recipient.id, reset.note.type, reset.due) == ("arc", MessageType.RESET,
                                                                     NOON + 1.0)  # fmt: skip


def test_ack_links_carry_the_contacts_token_and_only_they_may_act() -> None:
    [note] = [d.note for d in POLICY.notify(REGISTRY, "ben", alert(), step=0, now=NOON)]
    assert note.ack_url is not None
    assert note.alert is not None
    assert note.ack_url.startswith(f"https://care.example/alerts/{note.alert.id}/ack?contact=ben")
    token = note.ack_url.rsplit("token=", 1)[1]
    r = record(alert(), AlertState.NOTIFIED)
    assert POLICY.may_act(REGISTRY, r, "ben", token)
    assert not POLICY.may_act(REGISTRY, r, "anna", token)

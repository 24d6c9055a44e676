"""The ladder on its store with a controllable clock: timing, quiet hours, de-dup, digests,
acks, retries.

These run the policy on a real SQLite store with a hand-moved clock (no servers: the
ladder itself does no network I/O), so an hour of escalation takes milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from escalation.engine import Escalation, ManualClock
from escalation.ladder import EscalationPolicy
from escalation.notification import (
    ChannelKind,
    Delivery,
    DeliveryStatus,
    MessageType,
    Notification,
)
from escalation.registry import Registry, ack_token
from escalation.store import Store, store_path, story
from homecare.contract import Alert
from homecare.settings import RetrySettings

NOON = 1_700_049_600.0  # 2023-11-15 12:00 UTC
SECRET = b"test-secret"

REGISTRY = {
    "provider": {"call_centre": "arc", "supervisor": "sup", "device_desk": "desk"},
    "contacts": [
        {"id": "arc", "name": "ARC", "role": "call_centre",
         "channels": [{"kind": "call_centre", "address": "http://127.0.0.1:9/alarm"}]},
        {"id": "sup", "name": "Supervisor", "role": "supervisor",
         "channels": [{"kind": "call_centre", "address": "http://127.0.0.1:9/alarm"}]},
        {"id": "desk", "name": "Desk", "role": "device_desk",
         "channels": [{"kind": "email", "address": "desk@example.org"}]},
        {"id": "anna", "name": "Anna", "role": "family", "quiet_hours": "22:00-07:00",
         "channels": [{"kind": "email", "address": "anna@example.org"}]},
        {"id": "ben", "name": "Ben", "role": "family",
         "channels": [{"kind": "webhook", "address": "http://127.0.0.1:9/push"}]},
        {"id": "cw", "name": "Carer", "role": "care_worker",
         "channels": [{"kind": "email", "address": "cw@example.org"}]},
    ],
    "elders": [
        {"id": "e1", "display_name": "Margaret", "site": "s", "address": "12 Elm Road",
         "contacts": ["anna", "ben", "cw"], "devices": ["w1"]},
    ],
}  # fmt: skip


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOON)


@pytest.fixture
def esc(tmp_path: Path, clock: ManualClock) -> Escalation:
    reg = Registry.model_validate(REGISTRY)
    policy = EscalationPolicy(secret=SECRET, ack_base="http://127.0.0.1:8480")
    return Escalation(Store(store_path(tmp_path)), lambda: reg, policy, clock=clock)


def alert(kind: str = "sos", severity: str = "critical", ts: float = NOON, **kw) -> Alert:
    return Alert(id=kw.pop("id", f"{kind}-{int(ts)}"), site="s", elder=kw.pop("elder", "e1"),
                 device="w1", kind=kind, severity=severity, ts=ts, updated=ts, **kw)  # fmt: skip


def send_all(esc: Escalation, status: DeliveryStatus = DeliveryStatus.OK) -> list[Notification]:
    """Deliver what is due, as a channel would answer, and return it."""
    esc.advance()
    due = esc.due()
    esc.delivered((n, Delivery(ref=n.ref, status=status)) for n in due)
    return due


def transition_flags(esc: Escalation, event: str) -> list[int]:
    """The ``transition`` flag of each such event: a transition is republished retained."""
    rows = esc.store.db.execute("SELECT transition FROM events WHERE event = ?", (event,))
    return [r[0] for r in rows.fetchall()]


def told(notes: list[Notification]) -> list[tuple[str, str]]:
    return sorted((n.recipient.id, n.type.value) for n in notes)


def state(esc: Escalation, alert_id: str) -> str:
    return esc.store.db.execute("SELECT state FROM alerts WHERE id = ?", (alert_id,)).fetchone()[0]


def test_critical_climbs_every_60_s_until_acknowledged(esc, clock):
    a = alert()
    assert esc.receive(a) == "opened"
    assert told(send_all(esc)) == [("anna", "alarm"), ("arc", "alarm")]
    assert state(esc, a.id) == "notified"
    clock.advance(59)
    assert send_all(esc) == []
    clock.advance(1)
    assert told(send_all(esc)) == [("ben", "alarm"), ("sup", "alarm")]
    clock.advance(60)
    assert told(send_all(esc)) == [("cw", "alarm"), ("sup", "update")]
    clock.advance(60)  # round again: the first contact, and the supervisor
    assert told(send_all(esc)) == [("anna", "update"), ("sup", "update")]
    result = esc.acknowledge(a.id, "ben", ack_token(SECRET, "ben"), channel="http")
    assert result.ok
    assert state(esc, a.id) == "acknowledged"
    clock.advance(600)
    assert send_all(esc) == []
    who = esc.store.db.execute("SELECT acked_by, acked_channel FROM alerts").fetchone()
    assert tuple(who) == ("ben", "http")


def test_fall_waits_out_the_grace_window_and_ok_cancels(esc, clock):
    fall = alert("fall", ts=NOON - 5)
    esc.receive(fall)
    clock.advance(24)
    assert send_all(esc) == []  # 29 s after the fall: the wearer may still press "I'm OK"
    clock.advance(1)
    assert told(send_all(esc)) == [("anna", "alarm"), ("arc", "alarm")]
    esc.acknowledge(
        fall.id, "arc", ack_token(SECRET, "arc"), channel="call_centre", outcome="visit"
    )
    other = alert("fall", ts=NOON + 3600, id="f2")
    clock.now = NOON + 3610
    esc.receive(other)
    esc.receive(other.model_copy(update={"state": "cancelled", "updated": NOON + 3615}))
    clock.advance(60)
    assert [n.type for n in send_all(esc)] == [MessageType.RESET]  # of the first fall
    assert state(esc, "f2") == "cancelled"
    assert transition_flags(esc, "grace") == [0, 0]  # waiting changes no state


def test_cancel_after_the_call_centre_was_told_resets_its_incident(esc, clock):
    fall = alert("fall", ts=NOON - 40)
    esc.receive(fall)
    send_all(esc)
    clock.advance(5)
    esc.receive(fall.model_copy(update={"state": "cancelled"}))
    assert send_all(esc) == []  # the reset never overtakes the alarm
    clock.advance(1)
    assert told(send_all(esc)) == [("arc", "reset")]


def test_cancel_while_the_alarm_is_on_the_wire_sends_it_then_resets(esc, clock):
    fall = alert("fall", ts=NOON - 40)
    esc.receive(fall)  # decided, not yet answered
    esc.receive(fall.model_copy(update={"state": "cancelled"}))
    assert told(send_all(esc)) == [("arc", "alarm")]  # the family's is dropped
    clock.advance(1)
    assert told(send_all(esc)) == [("arc", "reset")]


def test_warning_goes_to_family_then_the_call_centre_after_10_minutes(esc, clock):
    esc.receive(alert("inactivity", "warning"))
    assert told(send_all(esc)) == [("anna", "alarm")]
    clock.advance(599)
    assert send_all(esc) == []
    clock.advance(1)
    assert told(send_all(esc)) == [("arc", "alarm")]


def test_quiet_hours_hold_warnings_to_family_but_never_critical(esc, clock):
    clock.now = NOON + 11 * 3600  # 23:00 UTC, inside Anna's 22:00-07:00
    esc.receive(alert("wandering", "warning", ts=clock.now))
    assert send_all(esc) == []  # held for Anna
    clock.advance(600)
    assert told(send_all(esc)) == [("arc", "alarm")]  # the call centre has no quiet hours
    esc.receive(alert("sos", ts=clock.now))
    assert told(send_all(esc)) == [("anna", "alarm"), ("arc", "alarm")]
    clock.now = NOON + 19 * 3600  # 07:00: the held message goes out
    assert ("anna", "alarm") in told(send_all(esc))
    assert transition_flags(esc, "held") == [0]  # held changes no state: nothing republished


def test_held_message_is_dropped_once_someone_acknowledges(esc, clock):
    clock.now = NOON + 11 * 3600
    a = alert("bed_exit", "warning", ts=clock.now)
    esc.receive(a)
    assert esc.acknowledge(a.id, "arc", ack_token(SECRET, "arc"), channel="call_centre").ok
    clock.now = NOON + 19 * 3600
    assert send_all(esc) == []


def test_info_is_batched_to_the_device_desk(esc, clock):
    esc.receive(alert("battery_low", "info", id="i1"))
    clock.advance(300)
    esc.receive(alert("offline", "info", id="i2", ts=clock.now))
    assert send_all(esc) == []
    clock.advance(600)  # the first has waited 15 minutes
    [batch] = send_all(esc)
    assert (batch.recipient.id, batch.type) == ("desk", MessageType.DIGEST)
    assert sorted(a.id for a in batch.batch) == ["i1", "i2"]
    assert state(esc, "i1") == state(esc, "i2") == "notified"
    clock.advance(3600)
    assert send_all(esc) == []


def test_the_same_condition_does_not_page_again(esc, clock):
    first = alert("sos", id="s1")
    esc.receive(first)
    send_all(esc)
    clock.advance(20)
    assert esc.receive(alert("sos", id="s2", ts=clock.now)) == "duplicate"
    assert send_all(esc) == []
    assert esc.receive(first) == "known"  # a re-delivery of the same alert
    esc.acknowledge("s2", "anna", ack_token(SECRET, "anna"), channel="mqtt")  # via the repeat
    assert state(esc, "s1") == state(esc, "s2") == "acknowledged"


def test_a_flapping_warning_is_suppressed_for_the_flap_window(esc, clock):
    w = alert("tachycardia", "warning", id="w1")
    esc.receive(w)
    send_all(esc)
    esc.acknowledge("w1", "anna", ack_token(SECRET, "anna"), channel="http", outcome="visit")
    clock.advance(300)
    assert esc.receive(alert("tachycardia", "warning", id="w2", ts=clock.now)) == "duplicate"
    assert state(esc, "w2") == "resolved"
    assert send_all(esc) == []
    clock.advance(900)
    assert esc.receive(alert("tachycardia", "warning", id="w3", ts=clock.now)) == "opened"
    assert told(send_all(esc)) == [("anna", "alarm")]


def test_daily_digest_once_a_day_per_family_contact(esc, clock):
    a = alert("sos", id="d1")
    esc.receive(a)
    send_all(esc)
    esc.acknowledge("d1", "arc", ack_token(SECRET, "arc"), channel="call_centre",
                    outcome="false_alarm")  # fmt: skip
    clock.now = NOON + 21 * 3600 + 1800  # 09:30 next day
    assert esc.digests() == 2  # Anna and Ben (the care worker gets none)
    notes = [n for n in send_all(esc) if n.type == MessageType.DIGEST]
    assert sorted(n.recipient.id for n in notes) == ["anna", "ben"]
    assert [x.id for x in notes[0].batch] == ["d1"]
    assert notes[0].outcomes == {"d1": "false_alarm"}
    assert esc.digests() == 0
    clock.advance(86400)
    assert esc.digests() == 2
    assert all(not n.batch for n in send_all(esc))  # a quiet day: "no alerts"


def test_digest_run_after_the_first_builds_nothing(esc, clock, monkeypatch):
    """The digest check runs every minute all day: once today's digests are decided, a run
    must cost one lookup, not a Notification per contact. A spy on the policy's ``digest`` (the
    builder)
    and on ``Store.tx`` counts what a run does; the counts are the point, not the returns."""
    esc.receive(alert("sos", id="d2"))
    send_all(esc)
    clock.now = NOON + 21 * 3600 + 1800  # 09:30 next day
    built: list[str] = []
    txs: list[int] = []
    digest, tx = esc.policy.digest, esc.store.tx
    monkeypatch.setattr(
        esc.policy, "digest", lambda *a, **k: built.append(a[1].contact) or digest(*a, **k)
    )
    monkeypatch.setattr(esc.store, "tx", lambda: txs.append(1) or tx())
    assert esc.digests() == 2
    assert sorted(built) == ["anna", "ben"]
    assert len(txs) == 1
    built.clear()
    txs.clear()
    for _ in range(3):
        clock.advance(60)
        assert esc.digests() == 0
    assert built == []
    assert txs == []
    clock.advance(86400)  # the next local day: built again
    assert esc.digests() == 2
    assert sorted(built) == ["anna", "ben"]


def test_acknowledgements_refused_and_answered(esc, clock, caplog):
    a = alert("sos", id="k1")
    esc.receive(a)
    send_all(esc)
    assert esc.acknowledge("nope", "anna", ack_token(SECRET, "anna"), channel="http").status == 404
    assert esc.acknowledge("k1", "anna", "0" * 32, channel="http").status == 403
    assert esc.acknowledge("k1", "stranger", ack_token(SECRET, "stranger"),
                           channel="http").status == 403  # fmt: skip
    assert esc.refused == 2
    assert "refused: invalid token" in caplog.text
    assert state(esc, "k1") == "notified"
    token = ack_token(SECRET, "anna")
    assert esc.acknowledge("k1", "anna", token, channel="http", outcome="fine").status == 400
    assert esc.acknowledge("k1", "anna", token, channel="http").status == 200
    assert esc.acknowledge("k1", "anna", token, channel="http").status == 200
    assert esc.acknowledge("k1", "anna", token, channel="http", outcome="ambulance").ok
    clock.advance(1)
    assert told(send_all(esc)) == [("arc", "reset")]
    assert esc.acknowledge("k1", "anna", token, channel="http").status == 409


def test_the_call_centres_answer_acknowledges_durably_and_stops_the_ladder(esc, clock, tmp_path):
    a = alert("sos", id="c1")
    esc.receive(a)
    due = esc.due()
    esc.delivered((n, Delivery(ref=n.ref, status=DeliveryStatus.OK,
                               acknowledged_by="op-17" if n.recipient.id == "arc" else None))
                  for n in due)  # fmt: skip
    reopened = Escalation(Store(store_path(tmp_path)), esc.registry, esc.policy, clock=clock)
    assert state(reopened, "c1") == "acknowledged"
    who = esc.store.db.execute("SELECT acked_by, acked_channel FROM alerts").fetchone()
    assert tuple(who) == ("arc", "call_centre")
    event = esc.store.db.execute("SELECT who, channel, detail FROM events "
                                 "WHERE event = 'acknowledged'").fetchone()  # fmt: skip
    assert tuple(event) == ("arc", "call_centre", "operator op-17")
    clock.advance(3600)
    assert send_all(reopened) == []  # no next rung, no supervisor


def test_failed_delivery_is_retried_with_the_same_ref(esc, clock):
    esc.receive(alert("sos", id="r1"))
    first = send_all(esc, DeliveryStatus.ERROR)
    assert state(esc, "r1") == "open"
    assert send_all(esc) == []
    clock.advance(5)
    again = send_all(esc)
    assert sorted(n.ref for n in again) == sorted(n.ref for n in first)
    assert state(esc, "r1") == "notified"


def test_a_final_failure_is_sent_once_and_the_ladder_climbs_on(esc, clock):
    esc.receive(alert("sos", id="f1"))
    esc.advance()
    first = esc.due()
    unknown = Delivery(ref="", status=DeliveryStatus.UNKNOWN_CALLER, final=True)
    esc.delivered((n, unknown.model_copy(update={"ref": n.ref})) for n in first)
    clock.advance(5)  # past any backoff: nothing is sent again
    assert send_all(esc) == []
    rows = esc.store.db.execute("SELECT DISTINCT status FROM deliveries").fetchall()
    assert [r[0] for r in rows] == ["failed"]
    events = [e for e in story(esc.store.db, "f1") if e["event"] == "failed_alarm"]
    assert sorted(e["who"] for e in events) == ["anna", "arc"]
    clock.advance(55)  # the next rung still comes on its timer
    assert told(send_all(esc)) == [("ben", "alarm"), ("sup", "alarm")]


def test_unknown_elder_still_reaches_the_call_centre(esc):
    esc.receive(alert("sos", elder="e9", id="u1"))
    [note] = send_all(esc)
    assert note.recipient.id == "arc"
    assert note.elder.address == "not in the registry"


def test_a_delivery_failing_past_the_cap_is_failed_for_good_on_the_alerts_story(tmp_path, clock):
    """The call centre's channel allows 3 tries here: each failure is due again after the
    backoff (1 s, 2 s), the third is the delivery's final state."""
    reg = Registry.model_validate(REGISTRY)
    retries = {ChannelKind.CALL_CENTRE: RetrySettings(attempts=3, backoff_s=1.0)}
    policy = EscalationPolicy(secret=SECRET, retries=retries)
    esc = Escalation(Store(store_path(tmp_path)), lambda: reg, policy, clock=clock)
    esc.receive(alert("sos", id="x1"))
    waits = []
    for _ in range(3):
        [arc] = [n for n in esc.due() if n.recipient.id == "arc"]
        failure = Delivery(ref=arc.ref, status=DeliveryStatus.ERROR, detail="HTTP 500")
        esc.delivered([(arc, failure)])
        due = esc.store.db.execute("SELECT due, status, attempts FROM deliveries WHERE ref = ?",
                                   (arc.ref,)).fetchone()  # fmt: skip
        waits.append((round(due[0] - clock.now, 3), due[1], due[2]))
        clock.advance(due[0] - clock.now)
    assert waits[:2] == [(1.0, "pending", 1), (2.0, "pending", 2)]
    assert waits[2][1:] == ("failed", 3)
    assert "arc" not in [n.recipient.id for n in esc.due()]  # never sent again
    [failed] = [e for e in story(esc.store.db, "x1") if e["event"] == "failed_alarm"]
    assert (failed["who"], failed["channel"]) == ("arc", "call_centre")
    assert failed["detail"] == "after 3 attempts: error: HTTP 500"

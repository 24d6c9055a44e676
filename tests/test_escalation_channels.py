"""Delivery channels against real servers: the call-centre stand-in (HTTP and HTTPS), a
gateway stand-in, and aiosmtpd; plus the wording families read."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from devices.tls import make_ca
from escalation.channels import CallCentreChannel, EmailChannel, WebhookChannel
from escalation.ladder import AfterDelivery, EscalationPolicy, Send
from escalation.messages import family_message
from escalation.notification import (
    ChannelKind,
    Delivery,
    DeliveryStatus,
    ElderCard,
    MessageType,
    Notification,
    Recipient,
)
from harness.standins import (
    CallCentreStandIn,
    HttpStandIn,
    LocalSmtp,
    Operator,
    Reply,
)
from homecare.contract import Alert, AlertState, Severity
from homecare.settings import CallCentreSettings, WebhookSettings

T0 = 1_700_000_000.0  # Tuesday 14 November 2023, 22:13:20 UTC = 23:13 in Stockholm
MARIA = ElderCard(
    id="e1", site="north", display_name="Maria Svensson", address="Rosengatan 3, flat 2",
    phone="+46 8 123 456", timezone="Europe/Stockholm", care_level=3,
)  # fmt: skip
FAST = {"backoff_s": 0.05, "backoff_max_s": 0.5, "attempts": 3, "timeout_s": 5.0}


def alert(kind: str = "fall", severity: Severity = Severity.CRITICAL, **kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": f"a-{kind}", "site": "north", "elder": "e1", "device": "w1", "kind": kind,
        "severity": severity, "ts": T0, "updated": T0 + 30,
        "evidence": {"peak_g": 3.4, "posture_deg": 80.0},
    }  # fmt: skip
    return Alert(**{**fields, **kw})


def note(
    channel: ChannelKind,
    address: str,
    *,
    type_: MessageType = MessageType.ALARM,
    ref: str = "ref-1",
    role: str = "call_centre",
    **kw: Any,
) -> Notification:
    fields: dict[str, Any] = {
        "ref": ref, "type": type_, "elder": MARIA, "alert": alert(), "created": T0 + 30,
        "ack_url": "http://127.0.0.1:1/alerts/a-fall/ack?contact=anna&token=t0k",
        "recipient": Recipient(id="arc", name="Anna Svensson", role=role, channel=channel,
                               address=address),
    }  # fmt: skip
    return Notification(**{**fields, **kw})


def family_note(**kw: Any) -> Notification:
    return note(ChannelKind.EMAIL, "anna@example.org", role="family", **kw)


def settle(channel: Any, notification: Notification) -> tuple[Delivery, AfterDelivery]:
    """Send as the service does: one try per send, then another when the ladder's one retry
    policy (with the channel's settings) says so; the last try and the policy's verdict."""
    policy = EscalationPolicy(secret=b"k", retries={notification.recipient.channel:
                                                    channel.settings})  # fmt: skip

    async def run() -> tuple[Delivery, AfterDelivery]:
        attempts = 0
        async with channel:
            while True:
                delivery = await channel.send(notification)
                after = policy.after_delivery(notification, delivery, attempts, time.time())
                if after.send != Send.AGAIN:
                    return delivery, after
                attempts = after.attempts
                assert after.due is not None
                await asyncio.sleep(max(0.0, after.due - time.time()))

    return asyncio.run(run())


def send(channel: Any, notification: Notification) -> Delivery:
    async def run() -> Delivery:
        async with channel:
            return await channel.send(notification)

    return asyncio.run(run())


@pytest.fixture
def centre():
    with CallCentreStandIn(token="s3cret") as standin:
        yield standin


def centre_channel(**kw: Any) -> CallCentreChannel:
    return CallCentreChannel(CallCentreSettings(token="s3cret", sender="test", **{**FAST, **kw}))


def test_alarm_reaches_the_call_centre_as_a_scaip_like_incident(centre):
    delivery = send(centre_channel(), note(ChannelKind.CALL_CENTRE, centre.url))
    assert delivery.status == DeliveryStatus.OK, delivery
    assert delivery.attempts == 1
    assert delivery.delivered is not None
    assert "incident=1" in delivery.detail
    [request] = centre.requests
    assert request.headers["idempotency-key"] == "ref-1"
    assert request.headers["authorization"] == "Bearer s3cret"
    body = request.json
    assert body["type"] == "alarm"
    assert body["ref"] == "ref-1"
    assert body["sender"] == "test"
    assert body["caller"]["id"] == "e1"
    assert body["caller"]["care_level"] == 3
    assert body["device"] == {"id": "w1", "type": "wearable"}
    assert body["status"] == {"code": 101, "kind": "fall", "text": "fall detected"}
    assert body["priority"] == 1
    assert body["location"]["address"] == "Rosengatan 3, flat 2"
    assert body["voice"] == {"phone": "+46 8 123 456", "mode": "call_back"}
    assert body["evidence"] == {"peak_g": 3.4, "posture_deg": 80.0}
    assert body["ack_url"].endswith("token=t0k")
    [incident] = centre.incidents
    assert incident.ref == "ref-1"
    assert incident.alert_id == "a-fall"
    assert incident.kind == "fall"


@pytest.mark.parametrize(
    ("answer", "expected", "tries"),
    [
        (Reply(), DeliveryStatus.OK, 1),
        (Reply(status=DeliveryStatus.UNKNOWN_CALLER), DeliveryStatus.UNKNOWN_CALLER, 1),
        (Reply(status=DeliveryStatus.BUSY, http=503), DeliveryStatus.BUSY, 3),
        (Reply(status=DeliveryStatus.ERROR, http=500), DeliveryStatus.ERROR, 3),
        (Reply(status=None, http=502), DeliveryStatus.ERROR, 3),
        (Reply(status=None, http=400), DeliveryStatus.ERROR, 1),
    ],
    ids=["ok", "unknown_caller", "busy", "error", "http502", "http400"],
)
def test_each_answer_of_the_call_centre(answer, expected, tries):
    with CallCentreStandIn(default=answer) as standin:
        delivery, after = settle(centre_channel(), note(ChannelKind.CALL_CENTRE, standin.url))
        assert delivery.status == expected, delivery
        assert after.attempts == tries
        assert delivery.final == (tries == 1 and expected != DeliveryStatus.OK)  # not re-queued
        assert after.send == (Send.OK if expected == DeliveryStatus.OK else Send.FAILED)
        requests = standin.requests
    assert len(requests) == tries, "unknown caller and other 4xx are never retried"
    assert {r.ref for r in requests} == {"ref-1"}
    resent = {json.dumps({k: v for k, v in r.json.items() if k != "sent"}) for r in requests}
    assert len(resent) == 1, "a retry re-sends the very same message, but for its time sent"


def test_a_call_centre_answering_500_for_a_while_gets_the_alarm_once(centre):
    centre.then(Reply(status=None, http=500), times=2)
    delivery, after = settle(
        centre_channel(backoff_s=0.2), note(ChannelKind.CALL_CENTRE, centre.url)
    )
    assert delivery.status == DeliveryStatus.OK
    assert after.attempts == 3
    requests = centre.requests
    assert [r.reply.http for r in requests] == [500, 500, 200]
    gaps = [b.received - a.received for a, b in itertools.pairwise(requests)]
    assert gaps[0] >= 0.19, f"backoff: {gaps}"
    assert gaps[1] >= 0.39, f"backoff doubles: {gaps}"
    assert len(centre.incidents) == 1


def test_a_call_centre_that_times_out_then_recovers_opens_one_incident(centre):
    centre.then(Reply(delay_s=1.0))  # answers ok, but only after the client gave up
    delivery, after = settle(
        centre_channel(timeout_s=0.4), note(ChannelKind.CALL_CENTRE, centre.url)
    )
    assert delivery.status == DeliveryStatus.OK
    assert after.attempts == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (centre.incidents and centre.incidents[0].repeats):
        time.sleep(0.05)
    [incident] = centre.incidents
    assert len(incident.repeats) == 1, "the late first answer found the incident already open"


def test_busy_with_retry_after_is_honoured(centre):
    centre.then(Reply(status=DeliveryStatus.BUSY, http=429, retry_after=0.4))
    delivery, after = settle(
        centre_channel(backoff_s=0.01), note(ChannelKind.CALL_CENTRE, centre.url)
    )
    assert delivery.status == DeliveryStatus.OK
    assert after.attempts == 2
    first, second = centre.requests
    assert second.received - first.received >= 0.39


def test_a_wrong_token_is_refused_and_not_retried(centre):
    channel = CallCentreChannel(CallCentreSettings(token="wrong", **FAST))
    delivery = send(channel, note(ChannelKind.CALL_CENTRE, centre.url))
    assert delivery.status == DeliveryStatus.ERROR
    assert delivery.attempts == 1
    assert "401" in delivery.detail
    assert centre.incidents == []


def test_nobody_listening_is_an_error_after_bounded_retries():
    with CallCentreStandIn() as gone:
        url = gone.url
    delivery, after = settle(centre_channel(attempts=2), note(ChannelKind.CALL_CENTRE, url))
    assert delivery.status == DeliveryStatus.ERROR
    assert (after.send, after.attempts) == (Send.FAILED, 2)
    assert after.detail.startswith("after 2 attempts: error: cannot connect")
    assert "cannot connect" in delivery.detail


def test_a_bad_url_is_not_retried():
    delivery = send(centre_channel(), note(ChannelKind.CALL_CENTRE, "ftp://arc.example/alarm"))
    assert delivery.status == DeliveryStatus.ERROR
    assert delivery.attempts == 1
    assert "not an http(s) URL" in delivery.detail


def test_what_no_receiver_could_take_is_refused_here_and_not_retried(centre):
    broken = send(centre_channel(), note(ChannelKind.CALL_CENTRE, centre.url, ref="r\nX-Evil: 1"))
    assert broken.status == DeliveryStatus.ERROR
    assert broken.attempts == 1
    odd = alert(evidence={"value": float("nan"), "limit": 40.0})
    sent = send(centre_channel(), note(ChannelKind.CALL_CENTRE, centre.url, alert=odd))
    assert sent.status == DeliveryStatus.OK
    [request] = centre.requests
    assert request.json["evidence"] == {"value": None, "limit": 40.0}, "strict JSON, no NaN"


def test_a_restarted_call_centre_gets_the_next_alarm_on_a_fresh_connection(centre):
    async def two_alarms() -> list[Delivery]:
        async with centre_channel(attempts=1) as channel:
            first = await channel.send(note(ChannelKind.CALL_CENTRE, centre.url))
            centre.stop()  # the kept-alive connection dies with it
            centre.start()
            second = await channel.send(note(ChannelKind.CALL_CENTRE, centre.url, ref="ref-2"))
            return [first, second]

    assert [d.status for d in asyncio.run(two_alarms())] == [DeliveryStatus.OK] * 2
    assert [i.ref for i in centre.incidents] == ["ref-1", "ref-2"]


def test_heartbeat_update_and_reset(centre):
    async def run(channel: CallCentreChannel) -> list[Delivery]:
        async with channel:
            beat = note(ChannelKind.CALL_CENTRE, centre.url, type_=MessageType.HEARTBEAT,
                        ref="hb-1", alert=None, elder=None, ack_url=None)  # fmt: skip
            first = note(ChannelKind.CALL_CENTRE, centre.url)
            later = note(ChannelKind.CALL_CENTRE, centre.url, type_=MessageType.UPDATE,
                         ref="ref-2", step=1)  # fmt: skip
            done = alert(state=AlertState.RESOLVED)
            reset = note(ChannelKind.CALL_CENTRE, centre.url, type_=MessageType.RESET,
                         ref="ref-3", alert=done, step=10_000)  # fmt: skip
            return [await channel.send(n) for n in (beat, first, later, reset, first)]

    results = asyncio.run(run(centre_channel()))
    assert [d.status for d in results] == [DeliveryStatus.OK] * 5
    [beat] = centre.heartbeats
    assert beat.json["status"]["code"] == 900
    assert "caller" not in beat.json
    [incident] = centre.incidents
    assert [u["type"] for u in incident.updates] == ["update", "reset"]
    assert incident.closed is not None
    assert len(incident.repeats) == 1, "the alarm sent again is no second incident"


def test_https_with_the_platform_ca(tmp_path: Path):
    ca = make_ca(tmp_path)
    cert_key = ca.issue_server(tmp_path, ["localhost", "127.0.0.1"])
    with CallCentreStandIn(tls=cert_key) as standin:
        assert standin.url.startswith("https://localhost:")
        ok = send(centre_channel(ca_file=ca.cert), note(ChannelKind.CALL_CENTRE, standin.url))
        untrusted = send(centre_channel(attempts=1), note(ChannelKind.CALL_CENTRE, standin.url))
    assert ok.status == DeliveryStatus.OK, ok
    assert untrusted.status == DeliveryStatus.ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.detail


def test_mutual_tls_with_a_client_certificate(tmp_path: Path):
    ca = make_ca(tmp_path)
    cert, key = ca.issue_client(tmp_path, "homecare-escalate")
    server = ca.issue_server(tmp_path, ["localhost"])
    with CallCentreStandIn(tls=server, client_ca=ca.cert) as standin:
        alarm = note(ChannelKind.CALL_CENTRE, standin.url)
        known = send(centre_channel(ca_file=ca.cert, cert_file=cert, key_file=key), alarm)
        stranger = send(centre_channel(ca_file=ca.cert, attempts=1), alarm)
        assert len(standin.incidents) == 1
    assert known.status == DeliveryStatus.OK, known
    assert stranger.status == DeliveryStatus.ERROR
    gc.collect()  # a leaked socket would warn now, in this test, not in a later one


def test_the_operator_acknowledges_through_the_ack_url():
    with HttpStandIn() as ack_api, CallCentreStandIn(operator=Operator(after_s=0.1)) as standin:
        url = f"{ack_api.url}alerts/a-fall/ack?contact=arc&token=t0k"
        delivery = send(centre_channel(), note(ChannelKind.CALL_CENTRE, standin.url, ack_url=url))
        assert delivery.status == DeliveryStatus.OK
        [ack] = standin.wait_acks(1, timeout_s=10)
        [call] = ack_api.wait(1)
    assert ack.status_code == 200
    assert call.method == "POST"
    assert call.path == "/alerts/a-fall/ack?contact=arc&token=t0k"


def test_the_call_centre_may_acknowledge_in_its_answer(centre):
    centre.ack = {"operator": "op-17"}
    by_operator = send(centre_channel(), note(ChannelKind.CALL_CENTRE, centre.url))
    repeat = send(centre_channel(), note(ChannelKind.CALL_CENTRE, centre.url))
    centre.ack = {}
    by_centre = send(centre_channel(), note(ChannelKind.CALL_CENTRE, centre.url, ref="ref-2"))
    assert (by_operator.status, by_operator.acknowledged_by) == (DeliveryStatus.OK, "op-17")
    assert repeat.acknowledged_by == "op-17"  # the same answer to a reference it knows
    assert by_centre.acknowledged_by == "arc"  # no operator named: the recipient
    reset = note(ChannelKind.CALL_CENTRE, centre.url, type_=MessageType.RESET)
    assert CallCentreChannel().acknowledgement(reset, {"operator": "op-17"}) is None


def test_a_malformed_ack_in_the_answer_is_ignored_and_the_alarm_still_delivered(centre, caplog):
    malformed = ["yes", [], {"operator": 17}, {"operator": "op 17\n"}, {"operator": "x" * 65}]
    for i, ack in enumerate(malformed):
        centre.ack = ack
        delivery = send(centre_channel(), note(ChannelKind.CALL_CENTRE, centre.url, ref=f"m{i}"))
        assert (delivery.status, delivery.acknowledged_by) == (DeliveryStatus.OK, None), ack
        assert delivery.attempts == 1
    assert len(centre.incidents) == len(malformed)
    assert caplog.text.count("ack in the call centre's answer to m") == len(malformed)


def test_a_thousand_simultaneous_alarms_all_arrive_once(centre):
    async def burst() -> list[Delivery]:
        async with centre_channel() as channel:
            notes = [note(ChannelKind.CALL_CENTRE, centre.url, ref=f"r{i}",
                          alert=alert(id=f"a{i}")) for i in range(1000)]  # fmt: skip
            return await asyncio.gather(*(channel.send(n) for n in notes))

    results = asyncio.run(burst())
    assert {d.status for d in results} == {DeliveryStatus.OK}
    assert len(centre.incidents) == 1000
    assert {i.ref for i in centre.incidents} == {f"r{i}" for i in range(1000)}


def test_family_email_in_the_elders_timezone():
    with LocalSmtp() as smtp:
        channel = EmailChannel(smtp.settings(**FAST, sender="alarms@homecare.test"))
        delivery = send(channel, family_note(ref="ref-mail"))
        [mail] = smtp.wait(1)
    assert delivery.status == DeliveryStatus.OK, delivery
    assert mail.recipients == ["anna@example.org"]
    assert mail.message["Subject"] == "Urgent: Maria Svensson may have fallen"
    assert mail.message["To"] == "Anna Svensson <anna@example.org>"
    assert mail.message["Message-ID"] == "<ref-mail@homecare.invalid>"
    text = mail.text
    assert "When: Tuesday 14 November, 23:13 CET" in text
    assert "Where: Rosengatan 3, flat 2" in text
    assert "Please call Maria Svensson now" in text
    assert "token=t0k" in text
    assert "peak_g" not in text, "no raw evidence for families"
    assert "3.4" not in text


def test_email_retries_a_busy_server_and_not_a_refused_address():
    with LocalSmtp() as smtp:
        channel = EmailChannel(smtp.settings(**FAST))
        smtp.refuse(451, times=2)
        busy, after = settle(channel, family_note())
        assert busy.status == DeliveryStatus.OK
        assert after.attempts == 3
        smtp.refuse(550)
        refused, after = settle(channel, family_note())
        assert refused.status == DeliveryStatus.ERROR
        assert (after.send, after.attempts) == (Send.FAILED, 1)
        assert len(smtp.mails) == 1


def test_email_over_starttls_needs_the_right_password(tmp_path: Path):
    ca = make_ca(tmp_path)
    with LocalSmtp(login=("escalate", "pw"), tls=ca.issue_server(tmp_path, ["localhost"])) as smtp:
        tls = {"host": "localhost", "starttls": True, "ca_file": ca.cert}
        right = send(EmailChannel(smtp.settings(**FAST, **tls)), family_note())
        assert right.status == DeliveryStatus.OK, right
        assert len(smtp.wait(1)) == 1
        channel = EmailChannel(smtp.settings(**FAST, **tls, password="nope"))
        delivery = send(channel, family_note())
    assert delivery.status == DeliveryStatus.ERROR
    assert delivery.attempts == 1
    assert "535" in delivery.detail


def test_generic_webhook_carries_words_not_data():
    with HttpStandIn(default=Reply(status=None), path="/sms") as gateway:
        channel = WebhookChannel(WebhookSettings(**FAST))
        delivery = send(channel, note(ChannelKind.WEBHOOK, gateway.url, role="family"))
        [request] = gateway.requests
    assert delivery.status == DeliveryStatus.OK, "2xx without a status is ok"
    body = request.json
    assert request.headers["idempotency-key"] == "ref-1"
    assert request.path == "/sms"
    assert body["subject"] == "Urgent: Maria Svensson may have fallen"
    assert body["text"] == (
        "Urgent: Maria Svensson may have fallen (23:13). Please call Maria Svensson now. "
        "I'm on it: http://127.0.0.1:1/alerts/a-fall/ack?contact=anna&token=t0k"
    )
    assert body["ack_url"].endswith("token=t0k")
    assert "evidence" not in body
    assert "3.4" not in request.body.decode()


def test_a_heartbeat_cannot_go_to_a_family():
    with HttpStandIn() as gateway:
        beat = note(ChannelKind.WEBHOOK, gateway.url, type_=MessageType.HEARTBEAT, alert=None)
        delivery = send(WebhookChannel(WebhookSettings(**FAST)), beat)
        assert gateway.requests == []
    assert delivery.status == DeliveryStatus.ERROR
    assert "needs an alert" in delivery.detail


def test_wording_of_reminders_resets_and_digests():
    family = {"role": "family", "ref": "r"}
    reminder = family_message(note(ChannelKind.EMAIL, "a@b.c", type_=MessageType.UPDATE, **family))
    assert reminder.subject == "Reminder: Maria Svensson may have fallen"
    assert "No one has said yet" in reminder.body
    taken = family_message(note(ChannelKind.EMAIL, "a@b.c", type_=MessageType.UPDATE,
                                alert=alert(state=AlertState.ACKNOWLEDGED), **family))  # fmt: skip
    assert taken.subject == "Update: Maria Svensson may have fallen"
    assert "token" not in taken.body, "no call to act once someone is on it"
    assert taken.short.endswith("Nothing more is needed from you for now.")
    closed = family_message(note(
        ChannelKind.EMAIL, "a@b.c", type_=MessageType.RESET, alert=alert(state=AlertState.RESOLVED),
        outcomes={"a-fall": "handled_at_home"}, **family,
    ))  # fmt: skip
    assert closed.subject == "Closed: Maria Svensson may have fallen"
    assert "is closed: handled at home" in closed.body
    quiet = family_message(note(ChannelKind.EMAIL, "a@b.c", type_=MessageType.DIGEST,
                                alert=None, **family))  # fmt: skip
    assert quiet.subject == "Daily summary for Maria Svensson: no alerts"
    night = alert("wandering", Severity.WARNING, evidence={"out_s": 1500.0}, ts=T0 - 3600)
    busy_day = family_message(note(
        ChannelKind.EMAIL, "a@b.c", type_=MessageType.DIGEST, alert=None,
        batch=(alert(state=AlertState.CANCELLED), night), outcomes={"a-wandering": "visit"},
        **family,
    ))  # fmt: skip
    assert busy_day.subject == "Daily summary for Maria Svensson: 2 alerts"
    lines = [line for line in busy_day.body.splitlines() if line.startswith("- ")]
    assert lines == [
        "- Tuesday 14 November, 22:13 CET: Maria Svensson went out in the night and has not "
        "come back for about 25 minutes — someone went round.",
        "- Tuesday 14 November, 23:13 CET: Maria Svensson may have fallen — called off.",
    ]
    odd = family_message(
        note(ChannelKind.EMAIL, "a@b.c", alert=alert("smoke_{x}", id="odd"), **family)
    )
    assert odd.subject == "Urgent: There is an alert for Maria Svensson: smoke {x}"


def test_wording_of_the_device_desks_batch():
    batch = (alert("battery_low", Severity.INFO, evidence={"battery": 12.0}),
             alert("offline", Severity.INFO, device="bed1", elder="e2"))  # fmt: skip
    words = family_message(note(ChannelKind.EMAIL, "desk@b.c", role="device_desk", alert=None,
                                elder=None, type_=MessageType.DIGEST, batch=batch))  # fmt: skip
    assert words.subject == "2 device notices"
    assert words.body.splitlines()[:2] == [
        "- Tuesday 14 November, 22:13 UTC: battery low — device w1, elder e1, site north",
        "- Tuesday 14 November, 22:13 UTC: offline — device bed1, elder e2, site north",
    ]


async def _raw_receiver(answers: list[bytes], seen: list[bytes]) -> asyncio.Server:
    """A real HTTP receiver on loopback answering each request with the next raw bytes
    (after the last: a close), so the client meets framings the stand-in (aiohttp,
    always Content-Length) never writes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                seen.append(head + await reader.readexactly(length))
                writer.write(answers.pop(0))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("answer", "status", "detail"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"b\r\n{\"status\": \r\n11\r\n\"unknown_caller\"}\r\n0\r\n\r\n",
         DeliveryStatus.UNKNOWN_CALLER, ""),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n"
         b'{"status": "ok", "incident": 7}', DeliveryStatus.OK, "incident=7"),
        (b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"status": "ok", "incident": 8}',
         DeliveryStatus.OK, "incident=8"),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", DeliveryStatus.ERROR,
         "HTTP 401"),
        (b"SMTP? 220 hello\r\n\r\n", DeliveryStatus.ERROR, "not an HTTP"),
    ],
)  # fmt: skip
def test_answers_in_every_http_framing_are_read(answer: bytes, status: DeliveryStatus, detail: str):
    seen: list[bytes] = []

    async def run() -> Delivery:
        server = await _raw_receiver([answer], seen)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/alarm"
        async with server, centre_channel(attempts=1) as channel:
            return await channel.send(note(ChannelKind.CALL_CENTRE, url))

    delivery = asyncio.run(run())
    assert (delivery.status, delivery.attempts) == (status, 1), delivery
    assert detail in delivery.detail
    assert len(seen) == 1
    assert seen[0].startswith(b"POST /alarm HTTP/1.1\r\n")
    assert b"\r\nIdempotency-Key: ref-1\r\n" in seen[0]


def test_a_connection_the_receiver_closed_while_idle_is_replaced_and_nothing_is_sent_twice():
    ok = b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"status": "ok"}'
    seen: list[bytes] = []

    async def one_then_idle_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            seen.append(head + await reader.readexactly(length))
            writer.write(ok)  # kept alive, as far as the client can tell
            await writer.drain()
            await asyncio.sleep(0.05)  # then the receiver's idle timeout closes it
        finally:
            writer.close()

    async def run() -> list[Delivery]:
        server = await asyncio.start_server(one_then_idle_close, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/alarm"
        async with server, centre_channel(attempts=1) as channel:
            first = await channel.send(note(ChannelKind.CALL_CENTRE, url, ref="r1"))
            await asyncio.sleep(0.2)
            second = await channel.send(note(ChannelKind.CALL_CENTRE, url, ref="r2"))
            return [first, second]

    deliveries = asyncio.run(run())
    assert [(d.status, d.attempts) for d in deliveries] == [(DeliveryStatus.OK, 1)] * 2
    assert [r.split(b"Idempotency-Key: ")[1][:2] for r in seen] == [b"r1", b"r2"]

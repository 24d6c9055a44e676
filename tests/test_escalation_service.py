"""`homecare escalate` as its own process against the real NATS Server, influxd, SMTP and
call centre.

One set of servers and one escalate process per module (restarts are what is tested).
Alerts are stored in the ALERTS stream as `homecare detect` stores them; escalate
consumes them through its durable consumer, and publishes each alert's state retained
to the MQTT listener, where an app (MQTT 3.1.1) sees it and acknowledges. Tested: the
alert's path through every channel, the acknowledgement paths, bad input, a call centre
that fails for a while, restarts (clean, and kill -9 at each stage of the ladder).
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from support import Publisher, wait_for

from broker.provision import provision
from escalation.registry import ack_token
from escalation.service import ack_topic
from escalation.store import open_readonly, store_path
from harness.demo import ServiceProcess
from harness.servers import LocalInflux, LocalNats, free_port
from harness.standins import CallCentreStandIn, HttpStandIn, LocalSmtp, Reply
from homecare.contract import Alert, AlertState, alert_subscription
from homecare.influx import InfluxClient
from homecare.jetstream import JetStreamConsumer, alert_subject, detect_partition_consumer
from homecare.settings import InfluxSettings, MqttSettings, NatsSettings, Settings
from homecare.status import read_status

pytestmark = pytest.mark.servers

SECRET = "service-test-secret"
STEP_S = 3.0
GRACE_S = 3.0
SITE = "t"


def registry(centre: CallCentreStandIn, gateway: HttpStandIn) -> dict:
    contacts = [
        {"id": "arc", "name": "ARC", "role": "call_centre",
         "channels": [{"kind": "call_centre", "address": centre.url}]},
        {"id": "sup", "name": "Supervisor", "role": "supervisor",
         "channels": [{"kind": "call_centre", "address": centre.url + "/supervisor"}]},
        {"id": "desk", "name": "Desk", "role": "device_desk",
         "channels": [{"kind": "email", "address": "desk@example.org"}]},
    ]  # fmt: skip
    elders = []
    for i in range(1, 12):
        contacts += [
            {"id": f"fam{i}", "name": f"Family {i}", "role": "family",
             "channels": [{"kind": "email", "address": f"fam{i}@example.org"}]},
            {"id": f"kin{i}", "name": f"Kin {i}", "role": "family",
             "channels": [{"kind": "webhook", "address": f"{gateway.url}push/{i}"}]},
        ]  # fmt: skip
        elders.append({"id": f"e{i}", "display_name": f"Elder {i}", "site": SITE,
                       "address": f"{i} Test Street",
                       "contacts": [f"fam{i}", f"kin{i}"]})  # fmt: skip
    critical = {"steps": [{"after_s": 0, "to": ["call_centre", "first_contact"]},
                          {"after_s": STEP_S, "to": ["next_contact", "supervisor"]}],
                "repeat_s": STEP_S}  # fmt: skip
    return {
        "provider": {"call_centre": "arc", "supervisor": "sup", "device_desk": "desk"},
        "contacts": contacts,
        "elders": elders,
        "policy": {"critical": critical},
        "digest_hour": None,
    }


class Escalate:
    """The escalate process, restartable on the same ack port and state."""

    def __init__(self, settings: Settings, root: Path, env: dict[str, str]) -> None:
        self.settings, self.root, self.env = settings, root, env
        self.starts = 0
        self.proc: ServiceProcess | None = None

    def start(self) -> None:
        self.starts += 1
        self.proc = ServiceProcess(
            "escalate", self.settings, self.root / f"escalate-{self.starts}.log", **self.env
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.proc.kill()
        self.proc.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop()

    @property
    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.root.glob("escalate-*.log")))


class Listener:
    """The alerts' states, as an app subscribed to the alert topics (MQTT 3.1.1) sees them."""

    def __init__(self, port: int, client_id: str = "esc-listener") -> None:
        self.states: dict[str, str] = {}
        self.seen: list[tuple[str, str, bool]] = []
        """(alert id, state, retained) in the order they came."""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)  # fmt: skip
        self.client.on_connect = lambda c, *_: c.subscribe(alert_subscription(), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        alert = Alert.model_validate_json(msg.payload)
        self.states[alert.id] = alert.state
        self.seen.append((alert.id, alert.state, bool(msg.retain)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("escalate")
    with (
        LocalNats(root / "nats") as broker,
        LocalInflux(root / "influxd") as influx,
        CallCentreStandIn() as centre,
        HttpStandIn(path="/") as gateway,
        LocalSmtp() as smtp,
    ):
        # as the nats_broker fixture (module-wide here): streams and consumers before anyone
        done = provision(broker.url, mqtt_url=broker.mqtt_url, partitions=8, ack_wait_s=5.0)
        assert done.source.ok, done.source.detail
        reg = root / "registry.yaml"
        reg.write_text(yaml.safe_dump(registry(centre, gateway)))
        settings = Settings(
            state_dir=root / "state",
            mqtt=MqttSettings(url=broker.mqtt_url),
            nats=NatsSettings(url=broker.url),
            influx=InfluxSettings(url=influx.url),
        )
        port = free_port()
        env = {
            "HOMECARE_NATS__URL": broker.url,
            "HOMECARE_REGISTRY": str(reg),
            "HOMECARE_ESCALATE__SECRET": SECRET,
            "HOMECARE_ESCALATE__HTTP_PORT": str(port),
            "HOMECARE_ESCALATE__HEARTBEAT_S": "30",  # one at each start
            "HOMECARE_ESCALATE__CALL_CENTRE__ATTEMPTS": "6",
            "HOMECARE_ESCALATE__CALL_CENTRE__TIMEOUT_S": "1",
            "HOMECARE_ESCALATE__CALL_CENTRE__BACKOFF_S": "0.1",
            "HOMECARE_ESCALATE__SMTP__HOST": "127.0.0.1",
            "HOMECARE_ESCALATE__SMTP__PORT": str(smtp.port),
            "HOMECARE_ESCALATE__SMTP__STARTTLS": "false",
            "HOMECARE_DETECT__GRACE_S": str(GRACE_S),
        }
        escalate = Escalate(settings, root, env)
        escalate.start()
        # detect's side: it stores alerts in ALERTS on its consumer's connection
        detect = JetStreamConsumer(broker.url, durable=detect_partition_consumer(0))
        app = Publisher(broker.mqtt_port, "esc-app")  # apps acknowledge over MQTT 3.1.1
        listener = Listener(broker.mqtt_port)
        try:
            with detect:
                yield {
                    "escalate": escalate, "centre": centre, "gateway": gateway, "smtp": smtp,
                    "detect": detect, "app": app, "listener": listener, "influx": influx,
                    "root": root, "api": f"http://127.0.0.1:{port}", "settings": settings,
                    "broker": broker,
                }  # fmt: skip
        finally:
            listener.close()
            app.close()
            escalate.stop()


def raise_alert(world, elder: str, kind: str = "sos", severity: str = "critical") -> Alert:
    """Store an alert in ALERTS as `homecare detect` does."""
    now = time.time()
    alert = Alert(id=f"{kind}-{elder}-{int(now * 1000)}", site=SITE, elder=elder, device="w1",
                  kind=kind, severity=severity, ts=now, updated=now)  # fmt: skip
    assert store(world, alert) == [False]
    return alert


def store(world, alert: Alert, msg_id: str | None = None) -> list[bool]:
    """Store the alert in ALERTS (its id the message id, as detect does); whether the stream
    already had that message id."""
    subject = alert_subject(alert.site, alert.elder, alert.id)
    return world["detect"].publish([(subject, alert.model_dump_json().encode(),
                                     msg_id or alert.id)])  # fmt: skip


def app_ack(world, alert: Alert, payload: bytes | str) -> None:
    """An app's acknowledgement over MQTT 3.1.1 (QoS 1, waits for the PUBACK)."""
    app = world["app"]
    before = app.acked
    app.publish([(ack_topic(alert.site, alert.elder, alert.id), payload)])
    app.wait_acked(before + 1, timeout_s=10)


def incidents(world, alert_id: str, recipient: str = "arc") -> list:
    return [i for i in world["centre"].incidents_for(alert_id)
            if i.message["recipient"]["id"] == recipient]  # fmt: skip


def stored_state(world, alert_id: str, column: str = "state") -> str | None:
    db = open_readonly(store_path(world["settings"].state_dir))
    try:
        row = db.execute(f"SELECT {column} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_an_alert_reaches_every_channel_climbs_and_is_acknowledged(world):
    """An alert stored in ALERTS: the call centre and the family are told once each, the
    app sees its states retained; acknowledged over HTTP, resolved by the app over MQTT."""
    centre, smtp, gateway = world["centre"], world["smtp"], world["gateway"]
    alert = raise_alert(world, "e1")
    wait_for(lambda: incidents(world, alert.id), 10, "the call centre's incident")
    wait_for(lambda: world["listener"].states.get(alert.id) == "notified", 10, "the app's view")
    # the app saw it open first, when escalation took it in (detect shows apps nothing)
    assert next(st for a, st, _r in world["listener"].seen if a == alert.id) == "open"
    [incident] = incidents(world, alert.id)
    assert incident.message["caller"]["id"] == "e1"
    page = httpx.get(incident.message["ack_url"], timeout=10)  # a link preview, say
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "Elder 1" in page.text
    assert '<form method="post"' in page.text
    assert incident.message["location"]["address"] == "1 Test Street"
    mail = next(m for m in smtp.wait(1, 10) if "fam1@example.org" in m.recipients)
    assert "Elder 1" in mail.message["Subject"] + mail.text
    wait_for(lambda: incidents(world, alert.id, "sup"), 2 * STEP_S + 5, "the supervisor")
    wait_for(lambda: any(r.path == "/push/1" for r in gateway.requests), 10, "the kin's webhook")
    assert stored_state(world, alert.id) == "notified"  # the GET above changed nothing
    ack_url = incident.message["ack_url"]
    answer = httpx.post(ack_url, timeout=10)
    assert answer.status_code == 200, answer.text
    wait_for(lambda: world["listener"].states.get(alert.id) == "acknowledged", 10, "retained ack")
    asked = len(centre.requests)
    time.sleep(STEP_S + 1)
    assert all(r.json.get("alert_id") != alert.id for r in centre.requests[asked:]
               if isinstance(r.json, dict))  # fmt: skip  # the ladder stopped
    # resolved by the family's app over MQTT: the call centre's incident is reset
    payload = {"contact": "fam1", "token": ack_token(SECRET.encode(), "fam1"), "outcome": "visit"}
    app_ack(world, alert, json.dumps(payload))
    wait_for(lambda: world["listener"].states.get(alert.id) == "resolved", 10, "resolved")
    wait_for(lambda: incident.closed is not None, 10, "the incident reset")
    assert centre.heartbeats
    assert len(incidents(world, alert.id)) == 1
    alarms = [
        m
        for m in smtp.mails
        if "fam1@example.org" in m.recipients
        and not m.message["Subject"].startswith(("Update", "Reminder", "Closed"))
    ]
    assert len(alarms) == 1, [m.message["Subject"] for m in alarms]  # e1's only alert so far
    live = [state for i, state, _ in world["listener"].seen if i == alert.id]
    assert live[0] in ("open", "notified"), live
    assert live[-1] == "resolved", live
    assert "acknowledged" in live
    # an app that subscribes now is handed the alert's last state, retained
    late = Listener(world["broker"].mqtt_port, client_id="esc-late-app")
    try:
        wait_for(lambda: late.states.get(alert.id) == "resolved", 10, "the retained state")
        assert (alert.id, "resolved", True) in late.seen
    finally:
        late.close()
    with InfluxClient(InfluxSettings(url=world["influx"].url)) as db:
        wait_for(lambda: db.rows(f"SELECT * FROM alert WHERE id = '{alert.id}'")[0]["state"]
                 == "resolved", 10, "InfluxDB's alert point")  # fmt: skip
        events = db.rows(f"SELECT * FROM alert_escalation WHERE id = '{alert.id}'")
    told = {(e["event"], e["who"]) for e in events}
    assert {("delivered_alarm", "arc"), ("delivered_alarm", "fam1"), ("delivered_alarm", "sup"),
            ("acknowledged", "arc"), ("resolved", "fam1")} <= told  # fmt: skip


def test_the_call_centres_answer_acknowledges_and_ends_the_ladder(world):
    """An ack in the answer stops the ladder; a malformed one still counts as delivered."""
    centre, gateway = world["centre"], world["gateway"]
    try:
        centre.ack = {"operator": "op-17"}
        taken = raise_alert(world, "e10")
        wait_for(lambda: incidents(world, taken.id), 10, "e10's incident")
        centre.ack = {"operator": 17}
        malformed = raise_alert(world, "e11")
        wait_for(lambda: incidents(world, malformed.id), 10, "e11's incident")
    finally:
        centre.ack = None
    wait_for(lambda: world["listener"].states.get(taken.id) == "acknowledged", 10, "acked")
    assert stored_state(world, taken.id, "acked_by") == "arc"
    wait_for(lambda: incidents(world, malformed.id, "sup"), STEP_S + 10, "e11's next rung")
    assert stored_state(world, malformed.id) == "notified"  # delivered, not acknowledged
    assert "ack in the call centre's answer to" in world["escalate"].log
    assert not incidents(world, taken.id, "sup")  # its ladder stopped at the first rung
    assert not any(r.path == "/push/10" for r in gateway.requests)
    arc = {"contact": "arc", "token": ack_token(SECRET.encode(), "arc")}
    assert httpx.post(f"{world['api']}/alerts/{malformed.id}/ack", json=arc).status_code == 200
    with InfluxClient(InfluxSettings(url=world["influx"].url)) as db:
        acked = f"SELECT * FROM alert_event WHERE id = '{taken.id}' AND state = 'acknowledged'"
        wait_for(lambda: db.rows(acked), 10, "InfluxDB's alert_event")
        events = db.rows(f"SELECT * FROM alert_escalation WHERE id = '{taken.id}'")
    [ack] = [e for e in events if e["event"] == "acknowledged"]
    assert (ack["who"], ack["channel"], ack["detail"]) == ("arc", "call_centre", "operator op-17")


def test_bad_acknowledgements_are_refused_and_the_service_carries_on(world):
    api = world["api"]
    alert = raise_alert(world, "e2")
    wait_for(lambda: incidents(world, alert.id), 10, "the incident")
    good = ack_token(SECRET.encode(), "fam2")
    assert httpx.post(f"{api}/alerts/{alert.id}/ack", content=b"{nope").status_code == 400
    assert httpx.post(f"{api}/alerts/{alert.id}/ack", json={"contact": "fam2"}).status_code == 400
    assert httpx.post(f"{api}/alerts/no-such-alert/ack",
                      json={"contact": "fam2", "token": good}).status_code == 404  # fmt: skip
    assert httpx.post(f"{api}/alerts/{alert.id}/ack",
                      json={"contact": "fam2", "token": "f" * 32}).status_code == 403  # fmt: skip
    assert httpx.post(f"{api}/alerts/{alert.id}/ack",  # fam1 is not e2's contact
                      json={"contact": "fam1", "token": ack_token(SECRET.encode(), "fam1")}
                      ).status_code == 403  # fmt: skip
    assert httpx.get(f"{api}/../../etc/passwd").status_code == 404
    forged = f"{api}/alerts/{alert.id}/ack?contact=fam2&token={'f' * 32}"
    assert httpx.get(forged).status_code == 403  # the page tells strangers nothing
    bad = [b"\xff\xfe not json", b'{"contact": "fam2"}', b'{"contact": "fam2", "token": "x"}']
    for payload in bad:
        app_ack(world, alert, payload)
    # and alerts in ALERTS that are not alerts, or not where their subject says
    junk = alert_subject(SITE, "e2", "junk-e2")
    assert world["detect"].publish([(junk, b"{not an alert", "junk-e2")]) == [False]
    elsewhere = alert.model_copy(update={"id": "moved-e2", "elder": "e3"})
    moved = alert_subject(SITE, "e2", elsewhere.id)  # e3's alert under e2's subject
    assert world["detect"].publish([(moved, elsewhere.model_dump_json().encode(), "m")]) == [False]
    wait_for(lambda: world["escalate"].log.count("refused") >= 9, 10, "the refusals logged")
    assert "junk-e2 refused" in world["escalate"].log
    assert "alert moved-e2 (site t, elder e3)" in world["escalate"].log
    assert stored_state(world, "junk-e2") is None
    assert stored_state(world, elsewhere.id) is None
    assert stored_state(world, alert.id) == "notified"  # nothing above acknowledged it
    answer = httpx.post(f"{api}/alerts/{alert.id}/ack", json={"contact": "fam2", "token": good})
    assert answer.status_code == 200
    resolve = f"{api}/alerts/{alert.id}/resolve?contact=fam2&token={good}"
    page = httpx.get(resolve).text  # the page's form posts the outcome form-encoded
    assert '<select name="outcome">' in page
    assert stored_state(world, alert.id) == "acknowledged"
    assert httpx.post(resolve, data={"outcome": "visit"}).json()["state"] == "resolved"
    assert httpx.get(f"{api}/health").json()["ok"]


def test_a_call_centre_failing_for_a_while_still_gets_one_incident(world):
    centre = world["centre"]
    centre.then(Reply(http=500), times=3)
    centre.then(Reply(delay_s=1.5))  # longer than the 1 s timeout: it answers after we gave up
    alert = raise_alert(world, "e3")
    wait_for(lambda: incidents(world, alert.id), 20, "the incident despite the failures")
    time.sleep(2)
    assert len(incidents(world, alert.id)) == 1
    refs = {r.ref for r in centre.requests if isinstance(r.json, dict)
            and r.json.get("alert_id") == alert.id
            and r.json["recipient"]["id"] == "arc"}  # fmt: skip
    assert len(refs) == 1  # every try carried the same message reference


def test_a_call_centre_failing_past_the_cap_is_a_failed_delivery_the_monitor_sees(world):
    """Six tries (the cap in this world), each with the same reference; then the delivery is
    failed for good: in the store, and in InfluxDB's alert_escalation story."""
    centre = world["centre"]
    centre.default = Reply(http=500)  # the supervisor's rung fails too, meanwhile
    try:
        alert = raise_alert(world, "e2", kind="bradycardia")
        with InfluxClient(InfluxSettings(url=world["influx"].url)) as db:

            def failed() -> list[dict]:
                rows = db.rows(f"SELECT * FROM alert_escalation WHERE id = '{alert.id}'")
                return [r for r in rows if r["event"] == "failed_alarm" and r["who"] == "arc"]

            wait_for(failed, 30, "the failed delivery in InfluxDB")
            [event] = failed()
    finally:
        centre.default = Reply()
    assert event["channel"] == "call_centre"
    assert event["detail"].startswith("after 6 attempts: error: HTTP 500"), event
    tries = [r for r in centre.requests if isinstance(r.json, dict)
             and r.json.get("alert_id") == alert.id
             and r.json["recipient"]["id"] == "arc"]  # fmt: skip
    assert len(tries) == 6
    assert len({r.ref for r in tries}) == 1
    assert incidents(world, alert.id) == []
    with closing(open_readonly(store_path(world["settings"].state_dir))) as db:
        row = db.execute("SELECT status, attempts FROM deliveries WHERE contact = 'arc' "
                         "AND alert_id = ?", (alert.id,)).fetchone()  # fmt: skip
    assert tuple(row) == ("failed", 6)


def test_kill_9_at_each_stage_of_the_ladder_loses_and_duplicates_nothing(world):
    """Kill -9 with a fall in its grace window, an alarm told, an alarm in flight, an
    acknowledged one, and an alert raised while escalate is down; restart each time."""
    escalate, centre = world["escalate"], world["centre"]
    acked = raise_alert(world, "e4")
    wait_for(lambda: incidents(world, acked.id), 10, "e4's incident")
    url = incidents(world, acked.id)[0].message["ack_url"]
    assert httpx.post(url, timeout=10).status_code == 200
    told = raise_alert(world, "e5")
    wait_for(lambda: incidents(world, told.id), 10, "e5's incident")
    fall = raise_alert(world, "e6", kind="fall")
    wait_for(lambda: stored_state(world, fall.id) == "open", 10, "the fall in its grace window")
    escalate.kill()  # stage: in grace (e6), told (e5), acknowledged (e4)
    down = raise_alert(world, "e7")  # raised while escalate is down
    time.sleep(1)
    escalate.start()
    wait_for(lambda: incidents(world, fall.id), GRACE_S + 10, "the fall after its grace window")
    wait_for(lambda: incidents(world, down.id), 10, "the alert raised while down")
    wait_for(lambda: incidents(world, told.id, "sup"), STEP_S + 10, "e5's next rung")
    assert stored_state(world, acked.id) == "acknowledged"  # from before the kill
    assert stored_state(world, acked.id, "acked_by") == "arc"
    arc = ack_token(SECRET.encode(), "arc")
    for alert in world["centre"].incidents:  # quiet the call centre's line for the next stage
        httpx.post(f"{world['api']}/alerts/{alert.alert_id}/ack",
                   json={"contact": "arc", "token": arc}, timeout=10)  # fmt: skip
    time.sleep(1)
    # stage: a delivery in flight when killed (the next request is its alarm)
    centre.then(Reply(delay_s=0.8))
    flight = raise_alert(world, "e8")
    wait_for(lambda: any(isinstance(r.json, dict) and r.json.get("alert_id") == flight.id
                         for r in centre.requests), 10, "e8's alarm in flight")  # fmt: skip
    escalate.kill()
    time.sleep(1)
    escalate.start()
    wait_for(lambda: incidents(world, flight.id) and incidents(world, flight.id)[0].repeats,
             20, "e8's alarm re-sent with the same ref")  # fmt: skip
    time.sleep(STEP_S + 1)
    for alert in (acked, told, fall, down, flight):
        assert len(incidents(world, alert.id)) == 1, alert.elder  # no duplicate incident
    assert stored_state(world, flight.id) == "notified"
    assert not incidents(world, acked.id, "sup")  # its ladder stayed stopped
    assert len(incidents(world, told.id, "sup")) == 1


def test_an_apps_mqtt_acknowledgement_stops_the_ladder(world):
    """The family's app acknowledges over MQTT 3.1.1; ALERTS sources it to escalate."""
    alert = raise_alert(world, "e6")
    wait_for(lambda: incidents(world, alert.id), 10, "e6's incident")
    wait_for(lambda: any("fam6@example.org" in m.recipients for m in world["smtp"].mails), 10,
             "the family's alarm")  # fmt: skip
    token = ack_token(SECRET.encode(), "fam6")
    app_ack(world, alert, json.dumps({"contact": "fam6", "token": token}))
    wait_for(lambda: world["listener"].states.get(alert.id) == "acknowledged", 10, "acked")
    assert stored_state(world, alert.id, "acked_by") == "fam6"
    time.sleep(STEP_S + 1)
    assert not incidents(world, alert.id, "sup")  # the next rung never came
    assert not [
        r
        for r in world["gateway"].requests  # e6's fall may have climbed earlier
        if isinstance(r.json, dict) and r.json.get("alert", {}).get("id") == alert.id
    ]


def test_a_fall_cancelled_in_its_grace_window_through_alerts_tells_nobody(world):
    """Detect stores the cancellation ("I'm OK") as the same alert in state cancelled, under
    a message id of its own (the alert id alone would be dropped as a duplicate)."""
    fall = raise_alert(world, "e8", kind="fall")
    wait_for(lambda: stored_state(world, fall.id) == "open", 10, "the fall in its grace window")
    cancelled = fall.model_copy(update={"state": AlertState.CANCELLED, "updated": time.time()})
    assert store(world, cancelled) == [True]  # the alert id: the stream already has it
    assert store(world, cancelled, msg_id=f"{fall.id}:cancelled") == [False]
    wait_for(lambda: stored_state(world, fall.id) == "cancelled", 10, "the cancellation")
    wait_for(lambda: world["listener"].states.get(fall.id) == "cancelled", 10, "the app's view")
    time.sleep(GRACE_S + 1)
    assert incidents(world, fall.id) == []


def test_a_clean_restart_resumes_from_the_durable_consumer(world):
    """Stopped (SIGTERM, as an upgrade does) and started again: what came while it was away
    arrives once, what it had already taken never again, and stored twice by detect (a
    replay) it is still one alert."""
    escalate = world["escalate"]
    alert = raise_alert(world, "e1", kind="tachycardia")
    wait_for(lambda: incidents(world, alert.id), 10, "e1's incident")
    before = escalate.proc.stop()
    assert before["received"] >= 1
    away = raise_alert(world, "e2", kind="tachycardia")
    assert store(world, away) == [True]  # detect replayed it: the stream already has it
    assert store(world, alert, msg_id=alert.id + "-again") == [False]  # past the window
    escalate.start()
    wait_for(lambda: incidents(world, away.id), 10, "the alert stored while it was away")
    wait_for(lambda: (read_status(world["settings"].state_dir / "escalate.json") or {})
             .get("received") == 2, 10, "both messages taken")  # fmt: skip
    time.sleep(1)
    after = escalate.proc.stop()
    escalate.start()
    assert (after["received"], after["opened"]) == (2, 1)  # the copy of e1's alert was known
    assert len(incidents(world, alert.id)) == 1
    assert len(incidents(world, away.id)) == 1
    assert stored_state(world, alert.id) == "notified"


def test_escalate_carries_on_across_a_kill_9_of_nats_server(world):
    """The broker crashes and comes back (same ports and store): escalate, still running,
    takes what is stored after, and its MQTT publisher shows the app the states again."""
    broker = world["broker"]
    before = raise_alert(world, "e7", kind="low_spo2")
    wait_for(lambda: incidents(world, before.id), 10, "the incident before the crash")
    broker.kill()
    broker.start()
    after = raise_alert(world, "e7", kind="tachycardia")
    wait_for(lambda: incidents(world, after.id), 30, "the incident after the crash")
    wait_for(lambda: world["listener"].states.get(after.id) == "notified", 30, "the app's view")
    assert world["escalate"].proc.proc.poll() is None  # the same process throughout
    assert len(incidents(world, before.id)) == 1


def test_the_registry_reloads_while_running_and_a_bad_edit_changes_nothing(world):
    reg_path = world["root"] / "registry.yaml"
    good = reg_path.read_text()
    status = world["settings"].state_dir / "escalate.json"
    try:
        reg_path.write_text(good.replace("elders:", "elders: [unclosed\n", 1))
        wait_for(lambda: (read_status(status) or {}).get("registry_error"), 10, "the error")
        assert "not valid YAML" in read_status(status)["registry_error"]
        alert = raise_alert(world, "e9")  # the previous registry is still in force
        wait_for(lambda: incidents(world, alert.id), 10, "an incident with the old registry")
        assert incidents(world, alert.id)[0].message["location"]["address"] == "9 Test Street"
        reg_path.write_text(good.replace("9 Test Street", "9 New Road"))
        wait_for(lambda: (read_status(status) or {}).get("registry_error") is None
                 and read_status(status)["registry_reloads"] >= 1, 10, "the reload")  # fmt: skip
        again = raise_alert(world, "e9", kind="low_spo2")
        wait_for(lambda: incidents(world, again.id), 10, "an incident with the new registry")
        assert incidents(world, again.id)[0].message["location"]["address"] == "9 New Road"
    finally:
        reg_path.write_text(good)


def test_an_arriving_alert_is_parsed_once_and_handed_to_the_ladder_as_that_object(
    tmp_path, monkeypatch
):
    """No servers: the service's intake step on a batch as the consumer delivers it. A
    spy (the real parser runs) counts alert parses up to the moment the ladder gets the
    alerts; the ladder's own records are its business."""
    from types import SimpleNamespace

    from escalation.service import EscalateService
    from homecare.consumer import RawMessage

    standin = SimpleNamespace(url="http://127.0.0.1:9/")
    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump(registry(standin, standin)))
    settings = Settings(  # nothing listens there: the intake step connects to nothing
        state_dir=tmp_path / "state", registry=reg,
        nats=NatsSettings(url="nats://127.0.0.1:9"), mqtt=MqttSettings(url="mqtt://127.0.0.1:9"),
    )  # fmt: skip
    service = EscalateService(settings, lambda _s: {})
    now = time.time()
    alerts = [
        Alert(
            id=f"sos-e{i}",
            site=SITE,
            elder=f"e{i}",
            device="w1",
            kind="sos",
            severity="critical",
            ts=now,
            updated=now,
        )
        for i in range(1, 6)
    ]
    messages = [
        RawMessage(alert_subject(a.site, a.elder, a.id), a.model_dump_json().encode(), now)
        for a in alerts
    ]
    parses: list[bytes] = []
    real_parse = Alert.model_validate_json
    monkeypatch.setattr(
        Alert,
        "model_validate_json",
        classmethod(lambda _cls, data, **k: (parses.append(data), real_parse(data, **k))[1]),
    )
    handed: list[tuple[int, list[Alert]]] = []
    receive_many = service.engine.receive_many

    def ladder(batch):
        batch = list(batch)
        handed.append((len(parses), batch))
        return receive_many(batch)

    monkeypatch.setattr(service.engine, "receive_many", ladder)
    service._take(messages)
    service.store.close()
    assert [(n, batch) for n, batch in handed] == [(len(alerts), alerts)]
    assert parses[: len(alerts)] == [m.payload for m in messages]
    assert service.stats.opened == len(alerts)

"""Broker security against a real NATS Server: TLS on the MQTT listener, a JWT per device
whose permissions name only its own subjects, service users, revocation pushed live.

The server runs in operator mode with the include file that
:class:`devices.access.BrokerAccess` writes (operator, SYS and HOMECARE accounts, full
resolver), its MQTT listener on TLS with a certificate from :mod:`devices.tls`, and is
provisioned by the ``provision`` service user before any device connects.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.errors
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from support import frame, topic, wait_for
from typer.testing import CliRunner

from cli.main import app
from device_sim import SimConfig, Simulation
from device_sim.fleet import Fleet, FleetError
from devices import claims
from devices.access import DETECT_BUCKET, AccessError, BrokerAccess
from devices.tls import make_ca
from harness.servers import LocalInflux
from homecare.consumer import ConsumerError
from homecare.contract import Alert, alert_subscription, alert_topic, subscription
from homecare.influx import InfluxClient, InfluxError
from homecare.jetstream import JetStreamConsumer, check_source, connect
from homecare.settings import InfluxSettings, NatsSettings

pytestmark = pytest.mark.servers


class Probe:
    """A paho MQTT 3.1.1 client (as devices speak) that records what the broker did to it."""

    def __init__(self, port: int, *, ca: Path, user: str | None = None,
                 password: str | None = None, client_id: str = "probe",
                 clean_session: bool = True, will: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=clean_session)
        if will:
            self.client.will_set(will, b"offline", qos=1, retain=True)
        if user:
            self.client.username_pw_set(user, password)
        self.client.tls_set(ca_certs=str(ca))
        self.connack: ReasonCode | None = None
        self.disconnects: list[float] = []
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: list[ReasonCode] = []
        self.acked: list[int] = []
        self.client.reconnect_delay_set(30, 60)  # a refused probe does not retry in a test
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.disconnects.append(time.monotonic())
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.granted.extend(rcs)
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.append(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, 10, "CONNACK")

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: object) -> None:
        if self.connack is None:
            self.connack = rc

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> ReasonCode:
        n = len(self.granted)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.granted) > n, 10, "SUBACK")
        return self.granted[-1]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_for(lambda: info.mid in self.acked, 10, f"PUBACK of {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_anonymous_forged_and_wrong_credentials_are_refused(secure_nats, pki, access):
    ca = pki[0].cert
    _, device = access.provision("w1", site="s", elder="e1", kind="wearable")
    port = secure_nats.mqtt_port
    anonymous = Probe(port, ca=ca, client_id="anon")
    assert str(anonymous.connack) == "Not authorized"
    tampered = Probe(port, ca=ca, user="w1", password=device.password[:-4] + "AAAA",
                     client_id="w1")
    assert str(tampered.connack) == "Not authorized"
    # A JWT with the same rights signed by an account the operator never signed.
    rogue = claims.new_key("account")
    forged = claims.encode(claims.user_claims(
        claims.new_key("user").public, "w1", publish=[">"], subscribe=[">"], bearer=True), rogue)
    rogue_device = Probe(port, ca=ca, user="w1", password=forged, client_id="w1f")
    assert str(rogue_device.connack) == "Not authorized"
    # The account's own signature, but not a bearer JWT: MQTT cannot prove the seed.
    body = claims.decode(device.password)
    body["nats"].pop("bearer_token")
    not_bearer = Probe(port, ca=ca, user="w1", password=claims.encode(body, access.account),
                       client_id="w1n")
    assert str(not_bearer.connack) == "Not authorized"
    right = Probe(port, ca=ca, user="w1", password=device.password, client_id="w1")
    assert right.accepted
    for probe in (anonymous, tampered, rogue_device, not_bearer, right):
        probe.close()

    # A device's JWT is for MQTT only: not a NATS client on the services' port (the NATS
    # protocol by hand: a failed nats-py connect leaves its socket to the collector).
    with socket.create_connection(("127.0.0.1", int(secure_nats.url.rsplit(":", 1)[1])),
                                  timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        connect = {"jwt": device.password, "verbose": False, "pedantic": False, "protocol": 1}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        assert reader.readline().strip() == b"-ERR 'Authorization Violation'"


def test_untrusted_certificate_and_plain_text_are_refused(secure_nats, tmp_path, pki, access):
    other_ca = make_ca(tmp_path / "other-ca")
    context = ssl.create_default_context(cafile=str(other_ca.cert))
    with socket.create_connection(("127.0.0.1", secure_nats.mqtt_port), timeout=5) as sock, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(sock, server_hostname="127.0.0.1")
    # MQTT in plain text on the TLS listener: no CONNACK, the server hangs up.
    _, device = access.provision("w1", site="s", elder="e1", kind="wearable")
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="w1", protocol=mqtt.MQTTv311)
    plain.username_pw_set("w1", device.password)
    accepted: list[object] = []
    plain.on_connect = lambda *a: accepted.append(a[3])
    plain.connect("127.0.0.1", secure_nats.mqtt_port)
    plain.loop_start()
    time.sleep(1.5)
    plain.loop_stop()
    assert accepted == []


def test_a_device_publishes_only_its_own_streams(secure_nats, pki, access, tmp_path):
    """NATS drops a publish outside the device's permissions but acknowledges it (PUBACK,
    the connection stays up): measured. Only the server's log says so."""
    ca = pki[0].cert
    _, creds = access.provision("w1", site="s", elder="e1", kind="wearable")
    ingest = access.service("ingest")
    availability = "homecare/v1/s/e1/wearable/w1/availability"
    device = Probe(secure_nats.mqtt_port, ca=ca, user="w1", password=creds.password,
                   client_id="w1", will=availability)
    now = time.time()
    forged = Alert(id="a1", site="s", elder="e2", kind="sos", severity="critical", ts=now,
                   updated=now)
    refused = {
        "homecare/v1/s/e2/wearable/w2/frame": frame("e2", "w2", now),  # another elder's
        "homecare/v1/s/e1/wearable/w2/frame": frame("e1", "w2", now),  # another device's
        "homecare/v1/t/e1/wearable/w1/frame": frame("e1", "w1", now),  # another site's
        alert_topic("s", "e2", "a1"): forged.model_dump_json().encode(),  # a forged alert
    }
    for where, payload in refused.items():
        device.publish(where, payload)  # acknowledged all the same
    device.publish("homecare/v1/s/e1/wearable/w1/frame", frame("e1", "w1", now))
    device.publish(availability, b"online")
    assert device.disconnects == []
    settings = NatsSettings(url=secure_nats.url, creds_file=ingest.creds, partitions=8)
    topics: list[str] = []
    with JetStreamConsumer.from_settings(settings, durable="ingest") as consumer:
        deadline = time.monotonic() + 10
        while len(topics) < 2 and time.monotonic() < deadline:
            delivery = consumer.take(10, 1.0, eager=True)
            topics += [m.topic for m in delivery.messages]
            consumer.ack(delivery)
        assert consumer.take(10, 1.0).messages == []
        # The device vanishes (no DISCONNECT): its last will, on its own topic, goes through.
        device.client.loop_stop()
        device.client.socket().close()
        will = consumer.take(10, 5.0, eager=True)
        consumer.ack(will)
        assert [(m.topic, m.payload) for m in will.messages] == [(availability, b"offline")]
    assert sorted(topics) == [availability, "homecare/v1/s/e1/wearable/w1/frame"]
    log = secure_nats.log.read_text()
    for where in refused:
        assert f'"w1" - Publish Violation - Subject "{where.replace("/", ".")}"' in log
    # The ingest service's user may take from its own consumer, not from detect's: the
    # server answers the request with a permissions error.
    assert "permissions violation" in _refused_request(
        secure_nats.url, ingest.creds, "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.detect")


def _refused_request(url: str, creds: Path, subject: str) -> str:
    """The error the server sends a NATS client for a request it may not publish."""
    errors: list[str] = []

    async def attempt() -> None:
        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(url, user_credentials=str(creds), error_cb=on_error)
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, b"", timeout=1.0)
        finally:
            await nc.close()

    asyncio.run(attempt())
    assert errors, f"no error for {subject}"
    return errors[0]


def test_a_device_reads_only_its_own_commands(secure_nats, pki, access):
    """With a persistent session, as the contract asks: the MQTT listener's own session
    and delivery streams need nothing more in the device's permissions."""
    ca = pki[0].cert
    _, creds = access.provision("w1", site="s", elder="e1", kind="wearable")
    escalate = access.service("escalate")
    assert (access.services_dir / "escalate.jwt").read_text().strip() == escalate.password
    device = Probe(secure_nats.mqtt_port, ca=ca, user="w1", password=creds.password,
                   client_id="w1", clean_session=False)
    # Another elder's alerts, any alert, another device's commands, everything: SUBACK 0x80.
    for wanted in ("homecare/v1/s/e2/alert/+", "homecare/v1/+/+/alert/+",
                   "homecare/v1/s/e2/command/w2", "homecare/v1/s/+/+/+/+", "#"):
        assert device.subscribe(wanted).is_failure, wanted
    assert device.subscribe("homecare/v1/s/e1/command/w1").value == 1
    assert device.disconnects == []
    sender = Probe(secure_nats.mqtt_port, ca=ca, user="escalate", password=escalate.password,
                   client_id="escalate")
    now = time.time()
    alert = Alert(id="a2", site="s", elder="e2", kind="sos", severity="critical", ts=now,
                  updated=now)
    sender.publish(alert_topic("s", "e2", "a2"), alert.model_dump_json().encode(), retain=True)
    sender.publish("homecare/v1/s/e2/command/w2", b'{"led": "on"}')
    sender.publish("homecare/v1/s/e1/command/w1", b'{"led": "on"}')
    wait_for(lambda: device.messages, 10, "the device's command")
    time.sleep(0.5)
    assert [(m.topic, m.payload) for m in device.messages] == [
        ("homecare/v1/s/e1/command/w1", b'{"led": "on"}')]
    device.close()
    # A command sent while the device is away waits in its session.
    sender.publish("homecare/v1/s/e1/command/w1", b'{"led": "off"}')
    back = Probe(secure_nats.mqtt_port, ca=ca, user="w1", password=creds.password,
                 client_id="w1", clean_session=False)
    wait_for(lambda: back.messages, 10, "the command kept in the session")
    assert back.messages[0].payload == b'{"led": "off"}'
    for probe in (back, sender):
        probe.close()


def test_revoke_by_the_cli_drops_the_connected_device_and_refuses_it_after(
        secure_nats, pki, access, monkeypatch):
    monkeypatch.setenv("HOMECARE_MQTT__ACCESS_DIR", str(access.folder))
    monkeypatch.setenv("HOMECARE_NATS__URL", secure_nats.url)
    (access.folder / "ca.crt").write_bytes(pki[0].cert.read_bytes())
    runner = CliRunner()
    result = runner.invoke(app, ["devices", "provision", "b7", "--elder", "e7", "--kind", "bed",
                                 "--site", "s", "--url", secure_nats.mqtt_url])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["publish"]["reading"] == "homecare/v1/s/e7/bed/b7/reading"
    assert info["last_will"]["topic"] == "homecare/v1/s/e7/bed/b7/availability"
    assert info["subscribe"] == "homecare/v1/s/e7/command/b7"
    assert info["password"] not in "".join(p.read_text() for p in access.folder.glob("*.*"))
    device = Probe(secure_nats.mqtt_port, ca=Path(info["ca_file"]), user=info["username"],
                   password=info["password"], client_id=info["client_id"])
    assert device.accepted
    device.publish(info["publish"]["reading"], b"{}")
    again = runner.invoke(app, ["devices", "provision", "b7", "--elder", "e7", "--kind", "bed"])
    assert again.exit_code == 2
    assert "already has an account" in again.output

    t0 = time.monotonic()
    result = runner.invoke(app, ["devices", "revoke", "b7"])
    assert result.exit_code == 0, result.output
    assert "Server updated." in result.stderr
    wait_for(lambda: device.disconnects, 5, "the server to drop the revoked device")
    assert device.disconnects[0] - t0 < 2.0
    device.close()
    after = Probe(secure_nats.mqtt_port, ca=Path(info["ca_file"]), user=info["username"],
                  password=info["password"], client_id="b7")
    assert str(after.connack) == "Not authorized"
    after.close()
    assert runner.invoke(app, ["devices", "revoke", "b7"]).exit_code == 2
    gateway = runner.invoke(app, ["devices", "gateway", "gw9", "--site", "s"])
    assert gateway.exit_code == 0, gateway.output
    listed = json.loads(runner.invoke(app, ["devices", "list"]).stdout)
    assert listed == {"devices": [], "gateways": {"gw9": "s"}, "services": ["provision"],
                      "revoked": 1}
    # A restarted server keeps the revocation (its resolver stored the pushed account).
    secure_nats.kill()
    secure_nats.start()
    later = Probe(secure_nats.mqtt_port, ca=Path(info["ca_file"]), user=info["username"],
                  password=info["password"], client_id="b7")
    assert str(later.connack) == "Not authorized"
    later.close()


def test_bad_provisioning_requests_are_refused(access):
    with pytest.raises(AccessError, match="not a valid id"):
        access.provision("w/1", site="s", elder="e1", kind="wearable")
    with pytest.raises(AccessError, match="service account"):
        access.provision("ingest", site="s", elder="e1", kind="wearable")
    with pytest.raises(ValueError, match="toaster"):
        access.provision("t1", site="s", elder="e1", kind="toaster")
    access.add_gateway("gw", site="s")
    with pytest.raises(AccessError, match="gateway"):
        access.provision("gw", site="s", elder="e1", kind="wearable")
    with pytest.raises(AccessError, match="not a service account"):
        access.service("w1")
    assert access.describe()["devices"] == []


def test_a_device_jwt_names_only_its_own_subjects_over_mqtt(access):
    """What the server enforces, read back from the JWT a device gets."""
    _, creds = access.provision("w1", site="s", elder="e1", kind="wearable")
    token = claims.decode(creds.password)
    assert token["iss"] == access.account.public
    assert token["nats"]["pub"] == {"allow": ["homecare.v1.s.e1.wearable.w1.>"]}
    assert token["nats"]["sub"] == {"allow": ["homecare.v1.s.e1.command.w1"]}
    assert token["nats"]["bearer_token"] is True
    assert token["nats"]["allowed_connection_types"] == ["MQTT"]
    access.revoke("w1")
    assert access.revoked(creds.password)
    assert token["sub"] in claims.decode(access.account_jwt())["nats"]["revocations"]


def test_a_batch_of_devices_is_provisioned_at_once_or_not_at_all(access, tmp_path):
    rows = tmp_path / "devices.csv"
    rows.write_text("device,site,elder,kind\nw1,s,e1,wearable\nb1,s,e1,bed\nd1,s,e2,door\n")
    runner = CliRunner()
    result = runner.invoke(app, ["devices", "provision-batch", str(rows), "--dir",
                                 str(access.folder)])
    assert result.exit_code == 0, result.output
    infos = [json.loads(line) for line in result.stdout.splitlines()]
    assert [i["client_id"] for i in infos] == ["w1", "b1", "d1"]
    assert infos[1]["subscribe"] == "homecare/v1/s/e1/command/b1"
    assert claims.decode(infos[2]["password"])["nats"]["pub"] == {
        "allow": ["homecare.v1.s.e2.door.d1.>"]}
    # One row already registered, one bad kind: nothing of the batch is registered.
    rows.write_text("device,site,elder,kind\nw2,s,e3,wearable\nw1,s,e1,wearable\n")
    refused = runner.invoke(app, ["devices", "provision-batch", str(rows), "--dir",
                                  str(access.folder)])
    assert refused.exit_code == 2
    assert "already has an account" in refused.output
    rows.write_text("device,site,elder,kind\nw3,s,e3,toaster\n")
    assert runner.invoke(app, ["devices", "provision-batch", str(rows), "--dir",
                               str(access.folder)]).exit_code == 2
    assert [g.device for g in access.devices()] == ["b1", "d1", "w1"]


def test_the_app_backend_reads_alerts_and_sends_acknowledgements_only(secure_nats, pki, access):
    ca = pki[0].cert
    escalate, backend = access.service("escalate"), access.service("app")
    listener = Probe(secure_nats.mqtt_port, ca=ca, user="escalate", password=escalate.password,
                     client_id="esc-probe")
    assert listener.subscribe(alert_subscription()).value == 1
    assert listener.subscribe(f"{alert_subscription()}/ack").value == 1
    app_ = Probe(secure_nats.mqtt_port, ca=ca, user="app", password=backend.password,
                 client_id="app-probe")
    assert app_.subscribe(alert_subscription()).value == 1
    assert app_.subscribe(subscription()).is_failure  # no device data
    now = time.time()
    alert = Alert(id="a1", site="s", elder="e1", kind="sos", severity="critical", ts=now,
                  updated=now)
    listener.publish(alert_topic("s", "e1", "a1"), alert.model_dump_json().encode())
    wait_for(lambda: app_.messages, 10, "the alert at the app backend")
    # An acknowledgement goes through; a forged alert and a reading are dropped.
    app_.publish(alert_topic("s", "e1", "a1") + "/ack", b'{"contact": "c1", "token": "t"}')
    app_.publish(alert_topic("s", "e1", "a9"), alert.model_dump_json().encode())
    app_.publish("homecare/v1/s/e1/wearable/w1/frame", frame("e1", "w1", now))
    wait_for(lambda: any(m.topic.endswith("/ack") for m in listener.messages), 10, "the ack")
    time.sleep(0.5)
    assert sorted(m.topic for m in listener.messages) == [
        alert_topic("s", "e1", "a1"), alert_topic("s", "e1", "a1") + "/ack"]
    for probe in (listener, app_):
        probe.close()


def test_a_fleet_with_a_wrong_credential_fails_clearly(secure_nats, pki):
    sim = Simulation(SimConfig(elders=1, seed=1, site="s", start=time.time() - 60))

    async def run() -> None:
        async with Fleet(sim, secure_nats.mqtt_url, gateways=1, username="nobody",
                         password="x", ca_file=str(pki[0].cert)):
            pass

    with pytest.raises(FleetError, match="refused the connection: not authorised"):
        asyncio.run(run())


def test_broker_provision_runs_as_the_provisioning_user(secure_nats, pki, access, tmp_path):
    access.service("provision")  # a new one: the fixture's is revoked
    env = {"HOMECARE_NATS__URL": secure_nats.url, "HOMECARE_MQTT__URL": secure_nats.mqtt_url,
           "HOMECARE_NATS__CREDS_FILE": str(access.services_dir / "provision.creds"),
           "HOMECARE_MQTT__USERNAME": "provision",
           "HOMECARE_MQTT__PASSWORD_FILE": str(access.services_dir / "provision.jwt"),
           "HOMECARE_MQTT__CA_FILE": str(pki[0].cert), "HOMECARE_STATE_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["broker", "provision", "--partitions", "8",
                                      "--ack-wait-s", "5"], env=env)
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["created"] == []
    assert "TELEMETRY" in done["existing"]
    assert done["source_ok"]


def test_a_revocation_the_server_missed_applies_at_its_next_start(secure_nats, pki, access):
    """The server was unreachable when the device was revoked (nothing pushed): the
    account in nats-auth.conf, which its configuration includes, carries the revocation."""
    ca = pki[0].cert
    _, creds = access.provision("w1", site="s", elder="e1", kind="wearable")
    before = Probe(secure_nats.mqtt_port, ca=ca, user="w1", password=creds.password,
                   client_id="w1")
    assert before.accepted
    before.close()
    access.revoke("w1")
    secure_nats.kill()
    secure_nats.start()
    after = Probe(secure_nats.mqtt_port, ca=ca, user="w1", password=creds.password,
                  client_id="w1")
    assert str(after.connack) == "Not authorized"
    after.close()


def test_detect_keeps_its_state_and_raises_alerts_which_escalate_takes(
        secure_nats, access):
    """The detect user: its key-value bucket (provisioned), the object store of its state
    (provisioned, where detectors.resume keeps it), alerts into ALERTS; never a device's
    subjects."""
    detect = access.service("detect")

    async def work() -> tuple[bytes, bytes, int, list[str]]:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(secure_nats.url, user_credentials=str(detect.creds),
                                error_cb=on_error)
        try:
            js = nc.jetstream(timeout=5)
            kv = await js.key_value(DETECT_BUCKET)  # provisioned: its workers' liveness
            await kv.put("fall.e1", b"state-1")
            store = await js.object_store(DETECT_BUCKET)  # provisioned
            await store.put("fall", b"\x00" * 300_000)
            ack = await js.publish("alerts.raised.s.e1.e1-fall-1", b"{}",
                                   headers={"Nats-Msg-Id": "e1-fall-1"})
            await nc.publish("homecare.v1.s.e1.wearable.w1.frame", b"{}")
            await nc.flush()
            await asyncio.sleep(0.2)
            return (await kv.get("fall.e1")).value, (await store.get("fall")).data[:1], \
                ack.seq, errors
        finally:
            await nc.close()

    value, chunk, seq, errors = asyncio.run(work())
    assert (value, chunk, seq) == (b"state-1", b"\x00", 1)
    assert errors == ['nats: permissions violation for publish to '
                      '"homecare.v1.s.e1.wearable.w1.frame"']
    # Escalation's user takes the alert from its consumer of ALERTS.
    escalate = access.service("escalate")
    settings = NatsSettings(url=secure_nats.url, creds_file=escalate.creds)
    with JetStreamConsumer.from_settings(settings, durable="escalate", stream="ALERTS",
                                         source=None) as consumer:
        delivery = consumer.take(1, 5.0, eager=True)
        consumer.ack(delivery)
    assert [m.seq for m in delivery.messages] == [1]


@pytest.fixture
def secure_influx(tmp_path):
    with LocalInflux(tmp_path / "influxd", admin=("admin", "admin-pw-77c2")) as influx:
        influx.add_user("writer", "writer-pw-1b2e", database="homecare", privilege="WRITE")
        influx.add_user("reader", "reader-pw'9d4a", database="homecare", privilege="READ")
        yield influx


def test_influxdb_least_privilege(secure_influx):
    """The services' writer cannot read, the dashboards' reader cannot write, and nobody
    gets in without a password."""
    writer = InfluxSettings(url=secure_influx.url, username="writer", password="writer-pw-1b2e")
    reader = InfluxSettings(url=secure_influx.url, username="reader", password="reader-pw'9d4a")
    with InfluxClient(writer) as db:
        db.write(["wearable,elder=e1,device=w1 rate=25i 1000"])
        with pytest.raises(InfluxError):
            db.query("SELECT * FROM wearable")
    with InfluxClient(reader) as db:
        assert db.rows('SELECT count("rate") FROM wearable')[0]["count"] == 1
        with pytest.raises(InfluxError, match="403"):
            db.write(["wearable,elder=x hr=1i 1"])
    with InfluxClient(InfluxSettings(url=secure_influx.url)) as anonymous, \
            pytest.raises(InfluxError, match="401"):
        anonymous.query("SHOW DATABASES")


def test_service_logs_at_info_carry_no_secrets_health_values_or_names(
        secure_nats, pki, access, secure_influx, tmp_path):
    """`homecare ingest` and `homecare detect` as processes at INFO on the secured broker,
    each with its own NATS credentials file, InfluxDB's password from a file; a gateway
    publishes over TLS. Their whole output is searched for what must never be logged:
    a secret (passwords, a user's JWT or seed), a health value, a name."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "influx").write_text("writer-pw-1b2e\n")
    services = {name: access.service(name) for name in ("ingest", "detect")}
    gateway = access.add_gateway("gw-t", site="t")
    base = {
        **{k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ},
        "HOMECARE_STATE_DIR": str(tmp_path / "state"),
        "HOMECARE_NATS__URL": secure_nats.url, "HOMECARE_NATS__PARTITIONS": "8",
        "HOMECARE_INFLUX__URL": secure_influx.url, "HOMECARE_INFLUX__USERNAME": "writer",
        "HOMECARE_INFLUX__PASSWORD_FILE": str(secrets / "influx"),
    }  # fmt: skip
    procs = {}
    for name, credentials in services.items():
        env = base | {"HOMECARE_NATS__CREDS_FILE": str(credentials.creds),
                      "HOMECARE_MQTT__CLIENT_ID": f"{name}-l"}  # fmt: skip
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "cli", name, "--log-level", "INFO"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    state = tmp_path / "state"

    def status(name: str) -> dict:
        """A service's status file; a service that exited says why at once."""
        for service, proc in procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{service} exited: {proc.communicate()[0].decode()[-3000:]}")
        path = state / name
        return json.loads(path.read_text() or "{}") if path.exists() else {}

    wait_for(lambda: status("ingest-main.json") and status("detect.json"), 30, "services up")
    now = time.time()
    device = Probe(secure_nats.mqtt_port, ca=pki[0].cert, user="gw-t",
                   password=gateway.password, client_id="gw-t")
    messages = [(topic("e5", "wearable", "w5", "frame"), frame("e5", "w5", now - 5 + k, hr=187))
                for k in range(5)]
    messages += [
        (topic("e5", "bed", "b5", "reading"), json.dumps(
            {"elder": "e5", "device": "b5", "ts": now, "presence": True, "hr": 43,
             "br": 17.25, "movement": 0.1}).encode()),
        (topic("e5", "wearable", "w5", "sos"),
         json.dumps({"elder": "e5", "device": "w5", "ts": now, "seq": 1}).encode()),
        # Bad input carrying a name and a health value: dead-lettered, never logged.
        (topic("e5", "wearable", "w5", "status"), b'{"name": "Margaret Thornbury", "hr": 211}'),
        (topic("e5", "wearable", "w5", "frame"), frame("e6", "w5", now, hr=199)),
    ]
    for where, payload in messages:
        device.publish(where, payload)
    device.close()
    wait_for(lambda: status("ingest-main.json").get("messages", 0) >= len(messages), 30,
             "ingest to store every message")
    wait_for(lambda: "sos" in status("detect.json").get("alerts", {}), 30, "detect's SOS alert")
    assert status("ingest-main.json")["dead_letters"], "the bad input was dead-lettered"
    output = {}
    for name, proc in procs.items():
        proc.send_signal(signal.SIGTERM)
        output[name] = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, output[name]
    logs = "\n".join(output.values())
    assert "ingest ingest-l consuming" in logs
    assert re.search(r"detect worker \S+: took detect-p\d+ at sequence", logs)
    creds = [line for credentials in services.values()
             for line in credentials.creds.read_text().splitlines()
             if line and line[0] not in "-*" and " " not in line]  # its JWT and its seed
    assert len(creds) == 4
    for secret in ("writer-pw-1b2e", "admin-pw-77c2", gateway.password, *creds):
        assert secret not in logs
    # Each value as a number of its own (not inside a timestamp, a count or a fraction).
    logs = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", logs, flags=re.M)
    for value in ("187", "211", "199", "17.25"):
        assert not re.search(rf"(?<![\d.]){re.escape(value)}(?![\d.])", logs), value
    for name in ("Margaret", "Thornbury"):
        assert name not in logs


def test_broker_check_runs_as_the_service_and_a_refused_credential_fails_at_once(
        secure_nats, access, tmp_path):
    """`homecare broker check` and check_source connect with the service's credentials
    (HOMECARE_NATS__CREDS_FILE); a credential the server refuses is an error at once, not
    the 30 s wait for a server that is still starting."""
    ingest = access.service("ingest")
    status = check_source(secure_nats.url,
                          settings=NatsSettings(url=secure_nats.url, creds_file=ingest.creds))
    assert status.ok, status.detail
    runner = CliRunner()
    ok = runner.invoke(app, ["broker", "check"], env={
        "HOMECARE_NATS__URL": secure_nats.url, "HOMECARE_NATS__CREDS_FILE": str(ingest.creds)})
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True

    other = BrokerAccess(tmp_path / "another-operator")  # a user the server never trusted
    other.init()
    stranger = other.service("ingest")
    for creds in (None, stranger.creds):
        started = time.monotonic()
        with pytest.raises(ConsumerError, match="refused homecare-check"):
            check_source(secure_nats.url, timeout_s=30,
                         settings=NatsSettings(url=secure_nats.url, creds_file=creds))
        assert time.monotonic() - started < 5
    refused = runner.invoke(app, ["broker", "check"], env={
        "HOMECARE_NATS__URL": secure_nats.url, "HOMECARE_NATS__CREDS_FILE": str(stranger.creds)})
    assert refused.exit_code == 1
    assert "refused" in refused.output
    missing = runner.invoke(app, ["broker", "check"], env={
        "HOMECARE_NATS__URL": secure_nats.url,
        "HOMECARE_NATS__CREDS_FILE": str(tmp_path / "nowhere.creds")})
    assert missing.exit_code == 1
    assert "not found" in missing.output

    async def service_connect() -> None:
        await connect(secure_nats.url, name="ingest", wait_s=30,
                      settings=NatsSettings(url=secure_nats.url, creds_file=stranger.creds))

    started = time.monotonic()
    with pytest.raises(ConsumerError, match="refused ingest"):
        asyncio.run(service_connect())
    assert time.monotonic() - started < 5

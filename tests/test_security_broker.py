"""Broker security against a real Mosquitto: TLS, per-device accounts and ACLs, revocation.

The broker runs with a CA and server certificate made by :mod:`devices.tls`, the
password file and ACL written by :class:`devices.access.BrokerAccess`, no anonymous
access, and both a plain and a TLS listener on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from support import elders_at, frame, topic, wait_for
from typer.testing import CliRunner

from cli.main import app
from detectors.service import DetectService
from device_sim import SimConfig, Simulation, SosPress
from device_sim.fleet import Fleet, FleetError, link_options
from device_sim.publisher import MqttError, MqttLink
from devices.access import SERVICE_RIGHTS, AccessError, BrokerAccess, check_password
from devices.tls import make_ca
from harness.servers import LocalBroker, LocalInflux
from homecare.consumer import ConsumerError
from homecare.contract import Alert, alert_subscription, alert_topic, subscription
from homecare.influx import InfluxClient, InfluxError
from homecare.receiver import MqttConsumer
from homecare.settings import InfluxSettings, MqttSettings, Settings
from ingest.service import IngestService

pytestmark = pytest.mark.servers

SERVICE_PASSWORDS = {name: f"{name}-pw-3f9c1a" for name in SERVICE_RIGHTS}


class Probe:
    """A paho MQTT 5 client that records what the broker did to it."""

    def __init__(self, port: int, *, user: str | None = None, password: str | None = None,
                 ca: Path | None = None, client_id: str = "probe",
                 protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol)
        if user:
            self.client.username_pw_set(user, password)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.connack: ReasonCode | None = None
        self.disconnects: list[str] = []
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: list[ReasonCode] = []
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(str(rc))
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.granted.extend(rcs)
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

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 until acknowledged (Mosquitto 2.0.11 drops a client's connection
        after acknowledging a publish the ACL denied; paho then reconnects)."""
        for _ in range(20):
            wait_for(self.client.is_connected, 10, "(re)connected")
            info = self.client.publish(topic, payload, qos=1)
            with contextlib.suppress(RuntimeError):
                info.wait_for_publish(10)
                return
            time.sleep(0.1)
        raise AssertionError(f"could not publish to {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def pki(tmp_path):
    ca = make_ca(tmp_path / "ca")
    cert, key = ca.issue_server(tmp_path / "broker-tls", ["127.0.0.1", "localhost"])
    return ca, cert, key


@pytest.fixture
def access(tmp_path):
    access = BrokerAccess(tmp_path / "access")
    for name, password in SERVICE_PASSWORDS.items():
        access.set_password(name, password)
    return access


@pytest.fixture
def secure_broker(tmp_path, pki, access):
    _, cert, key = pki
    with LocalBroker(tmp_path / "mosquitto", tls=(cert, key), access=access.folder,
                     extra_config=f"pid_file {tmp_path / 'mosquitto.pid'}\n") as broker:
        yield broker


def test_anonymous_and_wrong_passwords_are_refused(secure_broker, pki, access):
    ca = pki[0].cert
    _, device = access.provision("w1", site="s", elder="e1", kind="wearable")
    secure_broker.reload()
    time.sleep(0.3)
    for port, tls in ((secure_broker.port, None), (secure_broker.tls_port, ca)):
        anonymous = Probe(port, ca=tls)
        assert anonymous.connack is not None
        assert anonymous.connack.is_failure
        assert str(anonymous.connack) == "Not authorized"
        wrong = Probe(port, user="w1", password=device.password + "x", ca=tls)
        assert str(wrong.connack) == "Not authorized"  # Mosquitto 2 does not say which
        unknown = Probe(port, user="nobody", password=device.password, ca=tls)
        assert unknown.connack.is_failure
        right = Probe(port, user="w1", password=device.password, ca=tls)
        assert right.accepted
        for probe in (anonymous, wrong, unknown, right):
            probe.close()


def test_untrusted_certificate_and_plain_text_on_tls_port_are_refused(secure_broker, tmp_path):
    other_ca = make_ca(tmp_path / "other-ca")
    context = ssl.create_default_context(cafile=str(other_ca.cert))
    with socket.create_connection(("127.0.0.1", secure_broker.tls_port), timeout=5) as sock, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(sock, server_hostname="127.0.0.1")
    # The simulator's own publisher checks the certificate too.
    options = link_options(secure_broker.tls_url, username="ingest",
                           password=SERVICE_PASSWORDS["ingest"], ca_file=str(other_ca.cert))

    async def connect() -> None:
        await MqttLink("untrusting", options, lambda _t: None).start()

    with pytest.raises(MqttError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(connect())


def test_a_device_can_only_publish_its_own_topics_and_read_its_commands(
        secure_broker, access, pki):
    ca = pki[0].cert
    _, creds = access.provision("w1", site="s", elder="e1", kind="wearable")
    _, creds2 = access.provision("w2", site="s", elder="e2", kind="wearable")
    secure_broker.reload()
    time.sleep(0.3)
    ingest = Probe(secure_broker.tls_port, user="ingest", password=SERVICE_PASSWORDS["ingest"],
                   ca=ca, client_id="ingest-probe")
    assert ingest.subscribe(subscription()).value == 1
    escalate = Probe(secure_broker.tls_port, user="escalate",
                     password=SERVICE_PASSWORDS["escalate"], ca=ca, client_id="esc-probe")
    assert escalate.subscribe(alert_subscription()).value == 1
    # Mosquitto 2.0.11 acknowledges a denied publish, drops it, and drops the connection
    # too (the probe reconnects). MQTT 3.1.1, as most devices speak.
    device = Probe(secure_broker.tls_port, user="w1", password=creds.password, ca=ca,
                   client_id="w1", protocol=mqtt.MQTTv311)
    now = time.time()
    # Into another elder's and device's topics, and a forged alert: all dropped by the broker.
    device.publish("homecare/v1/s/e2/wearable/w2/frame", frame("e2", "w2", now))
    device.publish("homecare/v1/s/e1/wearable/w2/frame", frame("e1", "w2", now))
    device.publish("homecare/v1/t/e1/wearable/w1/frame", frame("e1", "w1", now))
    forged = Alert(id="a1", site="s", elder="e2", kind="sos", severity="critical", ts=now,
                   updated=now)
    device.publish(alert_topic("s", "e2", "a1"), forged.model_dump_json().encode())
    # Its own stream and availability go through.
    device.publish("homecare/v1/s/e1/wearable/w1/frame", frame("e1", "w1", now))
    device.publish("homecare/v1/s/e1/wearable/w1/availability", b"online")
    wait_for(lambda: len(ingest.messages) >= 2, 10, "the device's own messages")
    time.sleep(0.5)
    assert {m.topic for m in ingest.messages} == {  # QoS 1: at least once
        "homecare/v1/s/e1/wearable/w1/frame", "homecare/v1/s/e1/wearable/w1/availability"}
    assert escalate.messages == []
    # It may read only its own command topic: a subscription to everything is granted by
    # Mosquitto, but the ACL filters every message delivered on it.
    for wanted in (subscription(), alert_subscription(), "homecare/v1/+/+/command/+", "#"):
        device.subscribe(wanted)
    other = Probe(secure_broker.tls_port, user="w2", password=creds2.password, ca=ca,
                  client_id="w2", protocol=mqtt.MQTTv311)
    seen = len(ingest.messages)
    other.publish("homecare/v1/s/e2/wearable/w2/frame", frame("e2", "w2", now))
    escalate.publish(alert_topic("s", "e2", "a2"), forged.model_dump_json().encode())
    escalate.publish("homecare/v1/s/e2/command/w2", b'{"led": "on"}')
    escalate.publish("homecare/v1/s/e1/command/w1", b'{"led": "on"}')
    wait_for(lambda: len(device.messages) >= 1 and len(ingest.messages) > seen, 10,
             "deliveries")
    time.sleep(0.5)
    assert {m.topic for m in device.messages} == {"homecare/v1/s/e1/command/w1"}
    assert ingest.messages[-1].topic == "homecare/v1/s/e2/wearable/w2/frame"
    # A device cannot take over a service's session by using its client id: the broker
    # makes every client's id its user name.
    hijack = Probe(secure_broker.tls_port, user="w2", password=creds2.password, ca=ca,
                   client_id="ingest-probe", protocol=mqtt.MQTTv311)
    assert hijack.accepted
    time.sleep(0.5)
    assert ingest.disconnects == []
    hijack.close()
    # Ingest reads but may not publish (not even a command).
    ingest.publish("homecare/v1/s/e1/command/w1", b"{}")
    time.sleep(0.5)
    assert [m.payload for m in device.messages] == [b'{"led": "on"}'] * len(device.messages)
    other.close()
    for probe in (ingest, escalate, device):
        probe.close()


def test_revoke_by_the_cli_drops_a_connected_device_and_refuses_it_after(
        secure_broker, access, pki, tmp_path, monkeypatch):
    monkeypatch.setenv("HOMECARE_MQTT__ACCESS_DIR", str(access.folder))
    monkeypatch.setenv("HOMECARE_MQTT__BROKER_PID_FILE", str(tmp_path / "mosquitto.pid"))
    shutil_ca = access.folder / "ca.crt"
    shutil_ca.write_bytes(pki[0].cert.read_bytes())
    runner = CliRunner()
    result = runner.invoke(app, ["devices", "provision", "b7", "--elder", "e7", "--kind", "bed",
                                 "--site", "s", "--url", secure_broker.tls_url])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert "Broker reloaded." in result.stderr
    assert info["publish"]["reading"] == "homecare/v1/s/e7/bed/b7/reading"
    assert info["last_will"]["topic"] == "homecare/v1/s/e7/bed/b7/availability"
    assert info["subscribe"] == "homecare/v1/s/e7/command/b7"
    assert info["password"] not in (access.folder / "passwd").read_text()
    time.sleep(0.3)
    device = Probe(secure_broker.tls_port, user=info["username"], password=info["password"],
                   ca=Path(info["ca_file"]), client_id=info["client_id"])
    assert device.accepted
    again = runner.invoke(app, ["devices", "provision", "b7", "--elder", "e7", "--kind", "bed"])
    assert again.exit_code == 2
    assert "already has an account" in again.output

    result = runner.invoke(app, ["devices", "revoke", "b7"])
    assert result.exit_code == 0, result.output
    wait_for(lambda: device.disconnects, 10, "the broker to drop the revoked device")
    device.close()
    after = Probe(secure_broker.tls_port, user=info["username"], password=info["password"],
                  ca=Path(info["ca_file"]), client_id="b7-again")
    assert after.connack.is_failure
    after.close()
    assert runner.invoke(app, ["devices", "revoke", "b7"]).exit_code == 2
    assert "b7" not in (access.folder / "acl").read_text()
    gateway = runner.invoke(app, ["devices", "gateway", "gw9", "--site", "s"])
    assert gateway.exit_code == 0, gateway.output
    listed = json.loads(runner.invoke(app, ["devices", "list"]).stdout)
    assert listed == {"devices": [], "gateways": {"gw9": "s"},
                      "services": sorted(SERVICE_RIGHTS)}
    assert secure_broker.running


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
    assert access.describe()["devices"] == []


def test_service_passwords_set_from_a_file(access, tmp_path):
    secret = tmp_path / "ingest-password"
    secret.write_text("new-ingest-pw\n")
    runner = CliRunner()
    args = ["--password-file", str(secret), "--dir", str(access.folder)]
    result = runner.invoke(app, ["devices", "service", "ingest", *args])
    assert result.exit_code == 0, result.output
    hashed = dict(line.split(":", 1) for line in access.passwd_path.read_text().splitlines())
    assert check_password("new-ingest-pw", hashed["ingest"])
    assert check_password(SERVICE_PASSWORDS["detect"], hashed["detect"])
    refused = runner.invoke(app, ["devices", "service", "w1", *args])
    assert refused.exit_code == 2
    assert "not a service account" in refused.output


def test_services_refused_with_a_clear_error(secure_broker, pki):
    settings = MqttSettings(url=secure_broker.tls_url, username="ingest", password="wrong",
                            ca_file=pki[0].cert)
    t0 = time.monotonic()
    with pytest.raises(ConsumerError, match="refused us: Not authorized"), \
            MqttConsumer(settings, client_id="refused-ingest"):
        pass
    assert time.monotonic() - t0 < 15


@pytest.fixture
def secure_influx(tmp_path):
    with LocalInflux(tmp_path / "influxd", admin=("admin", "admin-pw-77c2")) as influx:
        influx.add_user("writer", "writer-pw-1b2e", database="homecare", privilege="WRITE")
        influx.add_user("reader", "reader-pw'9d4a", database="homecare", privilege="READ")
        yield influx


def test_provisioned_devices_stored_end_to_end_over_tls_with_least_privilege(
        secure_broker, secure_influx, access, pki, tmp_path):
    """Simulator (gateway account) and one provisioned device over TLS → ingest (its own
    account, TLS) → InfluxDB with auth (ingest writes, dashboards read)."""
    ca = pki[0].cert
    _, device = access.provision("w1", site="sec", elder="e0099", kind="wearable")
    gateway = access.add_gateway("gw-sec", site="sec")
    secure_broker.reload()
    settings = Settings(
        site="sec",
        state_dir=tmp_path / "state",
        mqtt=MqttSettings(url=secure_broker.tls_url, username="ingest", ca_file=ca,
                          password=SERVICE_PASSWORDS["ingest"], client_id="ingest-sec"),
        influx=InfluxSettings(url=secure_influx.url, username="writer",
                              password="writer-pw-1b2e"),
        ingest={"batch_interval_s": 0.05},
    )
    detect_settings = settings.model_copy(update={
        "mqtt": MqttSettings(url=secure_broker.tls_url, username="detect", ca_file=ca,
                             password=SERVICE_PASSWORDS["detect"]),
        "detect": settings.detect.model_copy(update={"clock": "data", "client_id": "det-sec"}),
    })
    service = IngestService(settings)
    detect = DetectService(detect_settings)
    stop = threading.Event()
    threads = [threading.Thread(target=s.run, args=(stop,), daemon=True)
               for s in (service, detect)]
    for thread in threads:
        thread.start()
    alerts = Probe(secure_broker.tls_port, user="escalate", ca=ca, client_id="esc-sec",
                   password=SERVICE_PASSWORDS["escalate"])
    alerts.subscribe(alert_subscription())
    wait_for(lambda: service.status_path.exists(), 20, "ingest connected")
    time.sleep(1)  # detect subscribed
    start = float(int(time.time()) - 120)
    sim = Simulation(SimConfig(elders=2, seed=3, site="sec", start=start,
                               utc_offset_s=elders_at(start)))  # awake: frames come
    sim.inject(1, start + 10, SosPress())

    async def publish() -> int:
        async with Fleet(sim, secure_broker.tls_url, gateways=1, username=gateway.username,
                         password=gateway.password, ca_file=str(ca)) as fleet:
            await fleet.run(seconds=30, speed=None)
        link = MqttLink("w1", link_options(secure_broker.tls_url, username="w1",
                                           password=device.password, ca_file=str(ca)),
                        lambda _t: None)
        await link.start()
        # Into a simulated elder's topics with that elder's ids: the broker drops it (and
        # the connection; the link reconnects and sends what followed again).
        link.publish(b"homecare/v1/sec/e0001/wearable/w0001/frame",
                     frame("e0001", "w0001", start + 100.5), 9)
        for k in range(3):
            link.publish(b"homecare/v1/sec/e0099/wearable/w1/frame",
                         frame("e0099", "w1", start + k), k)
        for _ in range(200):
            if not link.inflight and link.connected:
                break
            await asyncio.sleep(0.05)
        await link.close()
        await asyncio.sleep(0.2)  # the TLS goodbye
        return fleet.stats.per_stream["frame"]

    frames = asyncio.run(publish())
    reader = InfluxClient(InfluxSettings(url=secure_influx.url, username="reader",
                                         password="reader-pw'9d4a"))

    def stored() -> int:
        rows = reader.query('SELECT count("rate") FROM wearable')
        return int(rows[0]["values"][0][1]) if rows else 0

    wait_for(lambda: stored() == frames + 3, 30, f"{frames + 3} frames in InfluxDB")
    # Detect (its own account) raised the SOS alert; escalate's account receives it.
    wait_for(lambda: alerts.messages, 20, "the SOS alert")
    alert = Alert.model_validate_json(alerts.messages[0].payload)
    assert (alert.elder, alert.kind) == ("e0002", "sos")
    stop.set()
    for thread in threads:
        thread.join(20)
    alerts.close()
    assert service.stats.dead == {}
    assert reader.query('SELECT count("rate") FROM wearable WHERE "device" = \'w1\'')[0][
        "values"][0][1] == 3
    # Least privilege in InfluxDB: the reader cannot write, the writer cannot read,
    # and nobody gets in without a password.
    with pytest.raises(InfluxError, match="403"):
        reader.write(["wearable,elder=x hr=1i 1"])
    with InfluxClient(settings.influx) as writer, pytest.raises(InfluxError):
        writer.query("SELECT * FROM wearable")
    with InfluxClient(InfluxSettings(url=secure_influx.url)) as anonymous, \
            pytest.raises(InfluxError, match="401"):
        anonymous.query("SHOW DATABASES")
    reader.close()


def test_a_fleet_with_a_wrong_password_fails_clearly(secure_broker, pki):
    sim = Simulation(SimConfig(elders=1, seed=1, site="s", start=time.time() - 60))

    async def run() -> None:
        async with Fleet(sim, secure_broker.tls_url, gateways=1, username="nobody",
                         password="x", ca_file=str(pki[0].cert)):
            pass

    with pytest.raises(FleetError, match="refused the connection: not authorised"):
        asyncio.run(run())


def test_service_logs_at_info_carry_no_secrets_health_values_or_names(
        secure_broker, secure_influx, access, pki, tmp_path):
    """`homecare ingest` and `homecare detect` as processes at INFO, secrets from a file and
    the environment; their whole output is searched for what must never be logged."""
    ca = pki[0].cert
    gateway = access.add_gateway("gw-t", site="t")
    secure_broker.reload()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    base = {
        "PATH": os.environ["PATH"], "HOMECARE_STATE_DIR": str(tmp_path / "state"),
        "HOMECARE_MQTT__URL": secure_broker.tls_url, "HOMECARE_MQTT__CA_FILE": str(ca),
        "HOMECARE_INFLUX__URL": secure_influx.url, "HOMECARE_INFLUX__USERNAME": "writer",
        "HOMECARE_INFLUX__PASSWORD": "writer-pw-1b2e",
    }
    procs = {}
    for name in ("ingest", "detect"):
        (secrets / name).write_text(SERVICE_PASSWORDS[name] + "\n")
        env = base | {"HOMECARE_MQTT__USERNAME": name, "HOMECARE_MQTT__CLIENT_ID": f"{name}-l",
                      "HOMECARE_MQTT__PASSWORD_FILE": str(secrets / name),
                      "HOMECARE_DETECT__CLIENT_ID": "detect-l"}
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "cli", name, "--log-level", "INFO"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    wait_for(lambda: (tmp_path / "state" / "ingest-main.json").exists(), 30, "ingest up")
    time.sleep(2)  # detect subscribed
    now = time.time()
    device = Probe(secure_broker.tls_port, user="gw-t", password=gateway.password, ca=ca,
                   client_id="gw-t")
    for k in range(5):
        device.publish(topic("e5", "wearable", "w5", "frame"), frame("e5", "w5", now - 5 + k,
                                                                      hr=187))
    device.publish(topic("e5", "bed", "b5", "reading"), json.dumps(
        {"elder": "e5", "device": "b5", "ts": now, "presence": True, "hr": 43, "br": 17.25,
         "movement": 0.1}).encode())
    device.publish(topic("e5", "wearable", "w5", "sos"),
                   json.dumps({"elder": "e5", "device": "w5", "ts": now, "seq": 1}).encode())
    # Bad input carrying a name and a health value: dead-lettered, never logged.
    device.publish(topic("e5", "wearable", "w5", "status"),
                   b'{"name": "Margaret Thornbury", "hr": 211}')
    device.publish(topic("e5", "wearable", "w5", "frame"), frame("e6", "w5", now, hr=199))
    device.close()
    status = tmp_path / "state" / "ingest-main.json"
    wait_for(lambda: json.loads(status.read_text() or "{}").get("messages", 0) >= 9, 30,
             "ingest to store every message")
    time.sleep(1)  # detect handles the SOS
    output = {}
    for name, proc in procs.items():
        proc.send_signal(signal.SIGTERM)
        output[name] = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, output[name]
    logs = "\n".join(output.values())
    assert "ingest-l subscribed to" in logs
    assert "detect-l subscribed to" in logs
    for secret in (*SERVICE_PASSWORDS.values(), "writer-pw-1b2e", gateway.password,
                   "admin-pw-77c2"):
        assert secret not in logs
    # Each value as a number of its own (not inside a timestamp, a count or a fraction).
    logs = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", logs, flags=re.M)
    for value in ("187", "211", "199", "17.25"):
        assert not re.search(rf"(?<![\d.]){re.escape(value)}(?![\d.])", logs), value
    for name in ("Margaret", "Thornbury"):
        assert name not in logs


def test_the_app_backend_reads_alerts_and_sends_acknowledgements_only(secure_broker, pki):
    ca = pki[0].cert
    escalate = Probe(secure_broker.tls_port, user="escalate",
                     password=SERVICE_PASSWORDS["escalate"], ca=ca, client_id="esc-probe")
    assert escalate.subscribe(f"{alert_subscription()}/ack").value == 1
    assert escalate.subscribe(alert_subscription()).value == 1
    app = Probe(secure_broker.tls_port, user="app", password=SERVICE_PASSWORDS["app"], ca=ca,
                client_id="app-probe")
    assert app.subscribe(alert_subscription()).value == 1
    now = time.time()
    alert = Alert(id="a1", site="s", elder="e1", kind="sos", severity="critical", ts=now,
                  updated=now)
    escalate.publish(alert_topic("s", "e1", "a1"), alert.model_dump_json().encode())
    wait_for(lambda: len(app.messages) >= 1, 10, "the alert at the app backend")
    # An acknowledgement goes through; a forged alert and a reading are dropped.
    app.publish(alert_topic("s", "e1", "a1") + "/ack", b'{"contact": "c1", "token": "t"}')
    app.publish(alert_topic("s", "e1", "a9"), alert.model_dump_json().encode())
    app.publish("homecare/v1/s/e1/wearable/w1/frame", frame("e1", "w1", now))
    wait_for(lambda: any(m.topic.endswith("/ack") for m in escalate.messages), 10, "the ack")
    time.sleep(0.5)
    assert sorted(m.topic for m in escalate.messages) == [
        alert_topic("s", "e1", "a1"), alert_topic("s", "e1", "a1") + "/ack"]
    for probe in (escalate, app):
        probe.close()

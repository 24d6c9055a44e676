"""Issue 15's services on the secured broker (NATS JWT accounts, devices.access): each runs
with its own user's credentials and needs no right it was not given, and none that
another service has.

- escalate in cluster mode: two processes, the standby takes over after a kill -9, and
  `elder forget` (the privacy user) erases through the active one (a request it answers
  through its response permission);
- detect: two workers share TELEMETRY's partitions (priority groups, pins, unpin, their
  liveness in the detect_state key-value bucket, state in its object store);
- ingest: a district's worker (`ingest-<D>-<R>`) stores from its own consumer;
- a service touching another's bucket or consumer gets the server's permissions error.

Every test also reads the server's log: no permissions violation of the service user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from pathlib import Path

import nats
import pytest
import yaml
from support import count, frame, topic, wait_for
from test_detect_workers import PARTITIONS, elder_per_partition, start_worker
from test_escalation_failover import Pair, incidents, mails_to, registry
from test_security_broker import Probe

from broker.provision import provision_districts
from devices import claims
from devices.access import ESCALATE_RESPONSE, AccessError, BrokerAccess, service_rights
from escalation.cluster import forget_in_cluster
from harness.demo import DetectWorker
from harness.servers import LocalNats, free_port
from harness.standins import CallCentreStandIn, LocalSmtp
from homecare.contract import Alert
from homecare.errors import StorageError
from homecare.influx import InfluxClient
from homecare.jetstream import alert_subject, connect
from homecare.settings import (
    DistrictSettings,
    EscalateSettings,
    InfluxSettings,
    MqttSettings,
    NatsSettings,
    Settings,
)
from ingest.service import IngestService

pytestmark = pytest.mark.servers

SECRET = "secure-failover-secret"


def violations(server: LocalNats) -> list[str]:
    """The server's permission refusals so far (one log line each)."""
    return [line for line in server.log.read_text(errors="replace").splitlines()
            if re.search("violation", line, re.IGNORECASE)]  # fmt: skip


def raise_alert(url: str, creds: Path, i: int) -> Alert:
    """Store an SOS in ALERTS as detect does, with detect's credentials."""
    now = time.time()
    alert = Alert(id=f"sos-e{i}-{int(now * 1000)}", site="t", elder=f"e{i}", device="w1",
                  kind="sos", severity="critical", ts=now, updated=now)  # fmt: skip

    async def publish() -> None:
        nc = await nats.connect(url, user_credentials=str(creds))
        try:
            await nc.jetstream(timeout=5).publish(
                alert_subject(alert.site, alert.elder, alert.id),
                alert.model_dump_json().encode(),
                headers={"Nats-Msg-Id": alert.id},
            )
        finally:
            await nc.close()

    asyncio.run(publish())
    return alert


def refused_requests(url: str, creds: Path, subjects: list[str]) -> list[str]:
    """The errors the server sends one user for requests it may not publish (at once)."""
    errors: list[str] = []

    async def attempt() -> None:
        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(url, user_credentials=str(creds), error_cb=on_error)
        try:
            for subject in subjects:
                await nc.publish(subject, b"", reply=nc.new_inbox())
            await nc.flush()
            deadline = time.monotonic() + 5
            while len(errors) < len(subjects) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        finally:
            await nc.close()

    asyncio.run(attempt())
    return errors


def test_escalate_takes_over_and_forgets_with_its_own_rights_on_the_secured_broker(
    secure_nats, pki, access, tmp_path
):
    """Two `escalate --store cluster` processes as the escalate user (NATS and MQTT): one
    active, one standing by; kill -9 of the active, the standby takes over and resumes
    from the buckets; `forget` as the privacy user erases through the new active. Without
    an active escalate, forget says so; the escalate user answers only requests."""
    ca = pki[0]
    escalate, privacy = access.service("escalate"), access.service("privacy")
    detect = access.service("detect")
    assert claims.decode(escalate.password)["nats"]["resp"] == ESCALATE_RESPONSE
    with CallCentreStandIn() as centre, LocalSmtp() as smtp:
        reg = tmp_path / "registry.yaml"
        reg.write_text(yaml.safe_dump(registry(centre)))
        env = {
            "HOMECARE_NATS__URL": secure_nats.url,
            "HOMECARE_NATS__CREDS_FILE": str(escalate.creds),
            "HOMECARE_MQTT__URL": secure_nats.mqtt_url,
            "HOMECARE_MQTT__USERNAME": "escalate",
            "HOMECARE_MQTT__PASSWORD_FILE": str(access.services_dir / "escalate.jwt"),
            "HOMECARE_MQTT__CA_FILE": str(ca.cert),
            "HOMECARE_INFLUX__URL": f"http://127.0.0.1:{free_port()}",  # none: events wait
            "HOMECARE_REGISTRY": str(reg),
            "HOMECARE_ESCALATE__SECRET": SECRET,
            "HOMECARE_ESCALATE__LEASE_S": "1.5",
            "HOMECARE_ESCALATE__HEARTBEAT_S": "300",
            "HOMECARE_ESCALATE__CALL_CENTRE__TIMEOUT_S": "2",
            "HOMECARE_ESCALATE__SMTP__HOST": "127.0.0.1",
            "HOMECARE_ESCALATE__SMTP__PORT": str(smtp.port),
            "HOMECARE_ESCALATE__SMTP__STARTTLS": "false",
        }
        world = {"centre": centre, "smtp": smtp}
        settings = Settings(
            state_dir=tmp_path, nats=NatsSettings(url=secure_nats.url, creds_file=privacy.creds),
            escalate=EscalateSettings(store="cluster", secret=SECRET, lease_s=1.5),
        )  # fmt: skip
        with pytest.raises(StorageError, match="no active escalate"):
            forget_in_cluster(settings, "e1", None)
        pair = Pair(tmp_path / "escalate", env)
        try:
            first = raise_alert(secure_nats.url, detect.creds, 1)
            wait_for(lambda: incidents(world, first) and mails_to(world, "fam1@"), 20,
                     "the first alert's rung 0")  # fmt: skip
            time.sleep(0.5)  # its answers recorded in the bucket
            heir, _ = pair.fail_over()
            second = raise_alert(secure_nats.url, detect.creds, 2)
            wait_for(lambda: incidents(world, second), 20, "the new active consuming ALERTS")
            assert "0 rows of state loaded" not in heir.log.read_text()
            time.sleep(0.5)
            removed = forget_in_cluster(settings, "e1", None)
            assert removed["alerts"] == 1
            assert removed["deliveries"] >= 2
            pair.wait_standby()
            assert len(incidents(world, first)) == 1  # not sent again by the heir
        finally:
            pair.stop()
    assert [p for p in pair.procs if "Violation" in p.log.read_text()] == []
    assert violations(secure_nats) == []


class Readings:
    """A bed sensor per partition, a reading a second each, through a site's gateway
    credential over MQTT/TLS (every partition has traffic, so each is pinned to a worker)."""

    def __init__(self, server: LocalNats, ca: Path, access: BrokerAccess) -> None:
        gateway = access.add_gateway("beds", site="t")
        self.probe = Probe(server.mqtt_port, ca=ca, user="beds", password=gateway.password,
                           client_id="beds")  # fmt: skip
        assert self.probe.accepted, self.probe.connack
        self.elders = list(elder_per_partition().values())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            now = float(int(time.time()))
            for e in self.elders:
                payload = {"elder": e, "device": f"b{e}", "ts": now, "presence": True,
                           "hr": 60, "br": 14.0, "movement": 0.1}  # fmt: skip
                self.probe.publish(topic(e, "bed", f"b{e}", "reading"),
                                   json.dumps(payload).encode())  # fmt: skip

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.probe.close()


def test_detect_workers_share_the_partitions_with_the_detect_users_rights(
    secure_nats, pki, access, tmp_path, monkeypatch
):
    """Two `homecare detect` workers as the detect user: the first pulls every partition
    (priority group, pinned), the second joins, the first saves and unpins its surplus
    and each holds four; the roster is in detect_state's key-value bucket."""
    detect = access.service("detect")
    monkeypatch.setenv("HOMECARE_NATS__CREDS_FILE", str(detect.creds))
    workers: list[DetectWorker] = []
    readings: Readings | None = None
    try:
        a = start_worker(secure_nats, tmp_path, "a")
        workers.append(a)
        wait_for(lambda: "processed_seq" in a.status(), 60, "worker a started")
        readings = Readings(secure_nats, pki[0].cert, access)
        wait_for(lambda: len(a.held()) == PARTITIONS, 60, "a alone to hold every partition")
        b = start_worker(secure_nats, tmp_path, "b")
        workers.append(b)
        wait_for(lambda: len(a.held()) == len(b.held()) == PARTITIONS // 2, 60,
                 "a and b to hold half each")  # fmt: skip
        assert not a.held() & b.held()
        assert a.status()["released"] == PARTITIONS // 2  # saved and unpinned
    finally:
        if readings is not None:
            readings.close()
        for worker in workers:
            worker.stop()
    assert [w.log.name for w in workers if "iolation" in w.log.read_text()] == []
    assert violations(secure_nats) == []


def test_a_district_ingest_worker_stores_from_its_own_consumer_with_its_rights(
    secure_nats, pki, access, influx, tmp_path
):
    """`ingest --district north --replica primary` as the user `ingest-north-primary`:
    its consumer (provisioned by the provision user) delivers, it stores in the
    district's InfluxDB and acknowledges, and takes from no other consumer."""
    provisioner = access.service("provision")  # a new one: the fixture's is revoked
    districts = {"north": DistrictSettings(sites=["t"], primary=influx.url)}
    done = provision_districts(
        secure_nats.url, districts, ack_wait_s=5.0,
        settings=NatsSettings(url=secure_nats.url, creds_file=provisioner.creds),
    )  # fmt: skip
    assert done.source.ok, done.source.detail
    user = access.service("ingest-north-primary")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        state_dir=tmp_path / "state",
        nats=NatsSettings(url=secure_nats.url, creds_file=user.creds, partitions=8),
        mqtt=MqttSettings(client_id="ingest-north"),
        influx=InfluxSettings(database="homecare", timeout_s=2.0),
        ingest={"batch_interval_s": 0.05},
        districts=districts,
    )
    worker = IngestService(settings, instance="north-primary", district="north",
                           replica="primary")  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    gateway = access.add_gateway("gw", site="t")
    probe = Probe(secure_nats.mqtt_port, ca=pki[0].cert, user="gw", password=gateway.password,
                  client_id="gw")  # fmt: skip
    try:
        now = time.time() - 60
        for i in range(5):
            probe.publish(topic("e1", "wearable", "w1", "frame"), frame("e1", "w1", now + i))
        with InfluxClient(InfluxSettings(url=influx.url, database="homecare")) as db:
            wait_for(lambda: _count(db) == 5, 30, "five frames stored in north's InfluxDB")
    finally:
        probe.close()
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert violations(secure_nats) == []


def _count(db: InfluxClient) -> int:
    try:
        return count(db, "wearable")
    except Exception:  # no database yet
        return -1


def test_a_service_cannot_touch_another_services_bucket_or_consumer(secure_nats, access, caplog):
    """The server answers each request outside a user's rights with a permissions error
    (what the client's error callback gets, naming the subject)."""
    url = secure_nats.url
    ingest_north = access.service("ingest-north-primary")
    detect, escalate = access.service("detect"), access.service("escalate")
    privacy = access.service("privacy")
    refused = {
        # a district's ingest: its own consumer only, not the single store's nor another's
        ingest_north.creds: [
            "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest",
            "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest-south-primary",
            "$JS.API.STREAM.INFO.KV_escalation",
        ],
        # detect: not escalation's state, lease or consumer; no consumer of TELEMETRY made
        # or deleted (its replay reads by direct get)
        detect.creds: [
            "$JS.API.CONSUMER.CREATE.TELEMETRY",
            "$JS.API.CONSUMER.CREATE.TELEMETRY.x.telemetry.>",
            "$JS.API.CONSUMER.DELETE.TELEMETRY.ingest",
            # nor pull from, acknowledge for or unpin a consumer not its partitions'
            "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest",
            "$JS.ACK.TELEMETRY.ingest.1.2.3.4.5.6",
            "$JS.API.CONSUMER.UNPIN.TELEMETRY.ingest",
            "$KV.escalation-lease.active",
            "$JS.API.STREAM.INFO.KV_escalation",
            "$JS.API.CONSUMER.MSG.NEXT.ALERTS.escalate",
            "homecare.escalation.forget",
        ],
        # escalate: not detect's partitions, roster or state, and no inbox but a reply
        escalate.creds: [
            "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.detect-p0",
            "$JS.API.CONSUMER.UNPIN.TELEMETRY.detect-p0",
            "$KV.detect_state.worker.x",
            "$JS.API.STREAM.INFO.OBJ_detect_state",
            "_INBOX.someone",
        ],
        # privacy: asks escalate to erase, never writes its state itself
        privacy.creds: ["$KV.escalation.wal", "$JS.API.STREAM.CREATE.KV_escalation"],
    }
    for creds, subjects in refused.items():
        errors = refused_requests(url, creds, subjects)
        # nats-py lower-cases the server's -ERR line
        assert sorted(errors) == sorted(
            f'nats: permissions violation for publish to "{s}"' for s in map(str.lower, subjects)
        ), errors
    assert len(violations(secure_nats)) == sum(map(len, refused.values()))

    # A service's own connection (homecare.jetstream.connect) logs the refusal, naming
    # the service, the subject and the rights it lacks, at WARNING.
    async def as_a_service() -> None:
        settings = NatsSettings(url=url, creds_file=ingest_north.creds)
        nc = await connect(url, name="ingest-north-primary", settings=settings)
        try:
            await nc.publish("$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest", b"")
            await nc.flush()
            await asyncio.sleep(0.3)
        finally:
            await nc.close()

    with caplog.at_level(logging.WARNING, logger="homecare.jetstream"):
        asyncio.run(as_a_service())
    assert "ingest-north-primary: NATS " in caplog.text
    assert ('permissions violation for publish to "$js.api.consumer.msg.next.telemetry.ingest"'
            in caplog.text)  # fmt: skip


def test_detects_user_names_its_partitions_consumers_and_no_other(tmp_path):
    """Detect's rights list its partitions' consumers (no wildcard consumer of TELEMETRY);
    the server is told to take the CONNECT that carries such a JWT, and a count of
    partitions whose JWT it would not take is refused when the credentials are issued."""
    rights = service_rights("detect", 8)["pub"]
    assert "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.detect-p7" in rights
    assert "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.detect-p8" not in rights
    assert not [r for r in rights if "TELEMETRY" in r and r.endswith((".*", "TELEMETRY.>"))]
    access = BrokerAccess(tmp_path / "access")
    access.init()
    assert "max_control_line: 65536" in access.conf_path.read_text()
    jwt = claims.decode(access.service("detect").password)
    assert jwt["nats"]["pub"]["allow"] == service_rights("detect", 64)["pub"]
    with pytest.raises(AccessError, match="more than the server takes"):
        access.service("detect", partitions=1024)


def test_ingest_district_users_name_their_own_consumer(tmp_path):
    """`ingest-<D>-<R>` (and another process of it, `…-2`) gets that consumer's rights;
    other ingest users the single store's."""
    rights = service_rights("ingest-north-primary-2")["pub"]
    assert "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest-north-primary" in rights
    assert "$JS.ACK.TELEMETRY.ingest-north-primary.>" in rights
    assert not [r for r in rights if r.endswith((".ingest", ".ingest.>"))]
    access = BrokerAccess(tmp_path / "access")
    jwt = claims.decode(access.service("ingest-north-replica").password)
    assert jwt["nats"]["pub"]["allow"] == service_rights("ingest-north-replica")["pub"]
    assert "resp" not in jwt["nats"]
    assert json.dumps(service_rights("ingest-2")) == json.dumps(service_rights("ingest"))

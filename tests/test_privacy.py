"""`homecare elder forget` against real servers: after it, nothing about the elder can be
queried — in any measurement, any retention policy, any text field (influxd; readings
through ingest), in the broker's streams or its retained messages (nats-server), the
registry or the baselines — and another elder is intact."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import nats
import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from support import Publisher, count, frame, settings_for, topic, wait_for
from test_ingest import valid_traffic
from test_security_broker import Probe, _refused_request

from detectors.baselines import Baselines, read_baselines, save_baselines
from escalation.registry import load_registry
from escalation.store import Store, open_readonly, store_path
from harness.servers import LocalInflux, LocalNats
from homecare.alerts import alert_lines
from homecare.contract import Alert, Severity, alert_topic
from homecare.influx import InfluxClient
from homecare.jetstream import (
    ALERTS_STREAM,
    MQTT_STREAM,
    TELEMETRY_STREAM,
    alert_subject,
    connect,
)
from homecare.settings import (
    InfluxSettings,
    MqttSettings,
    NatsSettings,
    RetentionSettings,
    Settings,
)
from ingest import rollups
from ingest.service import IngestService
from privacy import forget as forget_module
from privacy.forget import RETAINED_STREAM

GONE, KEPT = "e1", "e2"
WORD = re.compile(rf"(?<![A-Za-z0-9_-]){GONE}(?![A-Za-z0-9_-])")


def _alert(elder: str, ts: float) -> Alert:
    return Alert(id=f"a{elder}", site="t", elder=elder, device=f"w{elder[1:]}", kind="sos",
                 severity=Severity.CRITICAL, ts=ts, updated=ts)  # fmt: skip


def _everything(db: InfluxClient) -> list[dict[str, Any]]:
    """Every point in every retention policy, tags included."""
    rows: list[dict[str, Any]] = []
    for rp in db.rows("SHOW RETENTION POLICIES", epoch=None):
        for s in db.query(f'SELECT * FROM "{rp["name"]}"./.*/ GROUP BY *'):
            rows.extend(
                {"rp": rp["name"], "measurement": s["name"], **s.get("tags", {}),
                 **dict(zip(s["columns"], v, strict=True))} for v in s["values"]
            )  # fmt: skip
    return rows


def _retained(port: int, elder: str) -> list[str]:
    """The retained messages a new MQTT 3.1.1 subscriber to the elder's topics is given."""
    found: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"look-{elder}-{time.time_ns()}",
                         protocol=mqtt.MQTTv311)  # fmt: skip
    client.on_message = lambda _c, _u, m: found.append(m.topic) if m.retain else None
    client.on_connect = lambda c, *_: c.subscribe(f"homecare/v1/+/{elder}/#", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()
    return found


def _registry(path: Path) -> None:
    def contact(cid: str, role: str) -> dict[str, Any]:
        return {"id": cid, "name": cid.title(), "role": role,
                "channels": [{"kind": "email", "address": f"{cid}@example.org"}]}  # fmt: skip

    path.write_text(yaml.safe_dump({
        "provider": {"call_centre": "arc"},
        "contacts": [contact("arc", "call_centre"), contact("ann", "family"),
                     contact("bob", "family")],
        "elders": [{"id": e, "display_name": f"Elder {e}", "site": "t", "address": "1 Road",
                    "devices": [f"w{e[1:]}"], "contacts": [c]}
                   for e, c in ((GONE, "ann"), (KEPT, "bob"))],
    }))  # fmt: skip
    load_registry(path)  # it is a valid registry


def _escalation(state: Path) -> None:
    """An alert of each elder in escalation's store, with a delivery and an event."""
    store = Store(store_path(state))
    with store.tx() as db:
        for e in ("e0", GONE, KEPT):
            alert = _alert(e, 1.0)
            db.execute(
                "INSERT INTO alerts (id, alert, site, elder, kind, severity, state, received, "
                "start_at) VALUES (?, ?, 't', ?, 'sos', 'critical', 'open', 1, 1)",
                (alert.id, alert.model_dump_json(), e),
            )
            db.execute(
                "INSERT INTO deliveries (ref, alert_id, contact, channel, type, step, "
                "notification, due, created) VALUES (?, ?, 'arc', 'email', 'alert', 0, ?, 1, 1)",
                (f"r{e}", alert.id, json.dumps({"elder": e, "display_name": f"Elder {e}"})),
            )
            db.execute(
                "INSERT INTO events (alert_id, ts, event, state) VALUES (?, 1, 'raised', 'open')",
                (alert.id,),
            )
        # A family digest (the elder's card) and a device-desk batch (an alert of theirs):
        # deliveries of no one alert that still name the elder.
        for e in (GONE, KEPT):
            db.execute(
                "INSERT INTO deliveries (ref, alert_id, contact, channel, type, step, "
                "notification, due, created) "
                "VALUES (?, NULL, 'bob', 'email', 'digest', 0, ?, 1, 1)",
                (f"d{e}", json.dumps({"elder": {"id": e, "display_name": f"Elder {e}"}})),
            )
        db.execute(
            "INSERT INTO deliveries (ref, alert_id, contact, channel, type, step, "
            "notification, due, created) "
            "VALUES ('desk', NULL, 'desk', 'email', 'digest', 0, ?, 1, 1)",
            (json.dumps({"elder": None, "batch": [_alert(GONE, 2.0).model_dump(mode="json")]}),),
        )
    store.close()


def _baselines(path: Path) -> None:
    n = 3
    save_baselines(path, Baselines(
        ("e0", GONE, KEPT), np.ones((n, 24), np.float32), np.ones((n, 24), np.float32),
        np.ones(n, np.float32), np.ones(n, np.float32), np.ones(n, np.float32),
        np.ones(n, np.float32), np.ones(n), np.zeros(n, np.float32), 1.0, 0.0, 1.0,
    ))  # fmt: skip
    np.savez(path.with_name(path.stem + ".history.npz"), elders=np.array(["e0", GONE]))


def test_forget_leaves_nothing_about_the_elder_and_keeps_the_others(
    nats_broker, influx, influx_db, tmp_path
):
    """InfluxDB, escalation's store, the registry and the baselines (readings through
    ingest); the broker's part is the NATS test below."""
    settings = settings_for(nats_broker, influx, tmp_path)
    db = influx_db
    retention = RetentionSettings()
    rollups.install(db, retention)  # raw (default) and history policies, as deployed

    # Telemetry of three elders through ingest, bad messages naming e1, alerts, rollups.
    service = IngestService(settings)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: service.status_path.exists(), 10, "ingest started")
    now = time.time()
    pub = Publisher(nats_broker.mqtt_port)
    bad = [
        (topic(GONE, "wearable", "w1", "frame"), b"not json"),  # their device, a dead letter
        (topic(KEPT, "wearable", "w2", "sos"),  # another device claiming to be e1
         json.dumps({"elder": GONE, "device": "w2", "ts": now, "seq": 1}).encode()),
        (topic(KEPT, "wearable", "w2", "sos"), b"{}"),  # e2's own dead letter stays
    ]  # fmt: skip
    n = pub.publish([*valid_traffic(now, elders=3, frames=10), *bad])
    pub.wait_acked(n)
    wait_for(lambda: service.stats.messages >= n, 20, "ingest to store everything")
    lines = [line for e in ("e0", GONE, KEPT) for line in alert_lines(_alert(e, now - 30))]
    db.write(lines)
    for e in ("e0", GONE, KEPT):
        info = pub.client.publish(alert_topic("t", e, f"a{e}"), _alert(e, now).model_dump_json(),
                                  qos=1, retain=True)  # fmt: skip
        info.wait_for_publish(10)
        availability = topic(e, "wearable", f"w{e[1:]}", "availability")
        pub.client.publish(availability, "online", qos=1, retain=True).wait_for_publish(10)
    pub.close()
    wait_for(lambda: count(db, "availability") == 6, 10, "retained availability stored too")
    rollups.run(db, retention, start=now - 3600, end=now + 60)
    registry = tmp_path / "registry.yaml"
    _registry(registry)
    _baselines(tmp_path / "state" / "baselines.npz")
    _escalation(tmp_path / "state")

    before = _everything(db)
    about = [r for r in before if WORD.search(json.dumps(r))]
    assert {r["rp"] for r in about} == {"raw", "history"}
    assert {"wearable", "bed", "door", "button", "device_status", "availability", "alert",
            "alert_event", "dead_letter", "security_event", "wearable_1h"} <= {
        r["measurement"] for r in about}  # fmt: skip
    kept = [r for r in before if not WORD.search(json.dumps(r))]
    assert count(db, "dead_letter") == 3

    env = {
        **os.environ,
        "HOMECARE_NATS__URL": "",  # no broker erasure here
        "HOMECARE_INFLUX__URL": influx.url,
        "HOMECARE_STATE_DIR": str(tmp_path / "state"),
        "HOMECARE_REGISTRY": str(registry),
    }
    out = subprocess.run(
        [sys.executable, "-m", "cli", "elder", "forget", GONE, "--yes"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert service.stats.dead["schema"] == 1, service.stats.dead  # e2's own
    stop.set()
    thread.join(20)
    report = json.loads(out.stdout)
    assert report["points"]["raw.wearable"] == 10
    # Its own bad frame, and another device claiming to be e1.
    assert report["points"]["raw.dead_letter"] == 2
    assert report["points"]["raw.security_event"] == 1
    assert report["series"]["raw.wearable"] == 1
    assert report["points"]["history.alert"] == 1
    assert report["retained_messages"] is None  # no broker configured
    assert report["streams"] is None
    assert report["registry"] is True
    assert report["escalation"] == {"alerts": 1, "deliveries": 3, "events": 1}
    assert report["baselines"] is True
    assert report["history_cache"] is True

    # Nothing about e1 anywhere in InfluxDB; everything else exactly as it was.
    after = _everything(db)
    assert [r for r in after if WORD.search(json.dumps(r))] == []
    assert sorted(map(json.dumps, after)) == sorted(map(json.dumps, kept))
    for rp in ("raw", "history", "autogen"):
        assert db.query(f"SHOW SERIES FROM \"{rp}\"./.*/ WHERE \"elder\" = '{GONE}'") == []
        assert db.query(f"SELECT * FROM \"{rp}\"./.*/ WHERE \"elder\" = '{GONE}'") == []
    assert count(db, "wearable", f"elder = '{KEPT}'") == 10
    # Nor in the registry or in the baselines.
    assert [e.id for e in load_registry(registry).elders] == [KEPT]
    assert [c.id for c in load_registry(registry).contacts] == ["arc", "bob"]
    assert read_baselines(tmp_path / "state" / "baselines.npz").elders == ("e0", KEPT)
    with closing(open_readonly(store_path(tmp_path / "state"))) as esc:
        rows = [dict(r) for t in ("alerts", "deliveries", "events")
                for r in esc.execute(f"SELECT * FROM {t}")]  # fmt: skip
    assert len(rows) == 7  # e0's and the kept elder's alert, delivery, event; the kept digest
    assert not [r for r in rows if WORD.search(json.dumps(r))]
    assert not (tmp_path / "state" / "baselines.history.npz").exists()


def _stream_subjects(
    server: LocalNats, account: NatsSettings | None = None
) -> dict[str, dict[str, int]]:
    """Messages per subject in each stream an elder's messages go through (as ``account``)."""

    async def look() -> dict[str, dict[str, int]]:
        nc = await connect(server.url, name="test-look", settings=account)
        try:
            js = nc.jetstream()
            return {
                stream: dict((await js.stream_info(stream, subjects_filter=">")).state.subjects
                             or {})
                for stream in (MQTT_STREAM, TELEMETRY_STREAM, ALERTS_STREAM, RETAINED_STREAM)
            }  # fmt: skip
        finally:
            await nc.close()

    return asyncio.run(look())


def _about(subjects: dict[str, dict[str, int]], elder: str) -> dict[str, int]:
    """Stream → messages whose subject names the elder (as one whole token)."""
    return {stream: sum(n for s, n in found.items() if elder in s.split("."))
            for stream, found in subjects.items()}  # fmt: skip


def test_forget_removes_the_elders_messages_from_the_broker(nats_broker, influx, influx_db,
                                                            tmp_path):  # fmt: skip
    """Readings, alerts, apps' acknowledgements and retained messages of e1 on NATS: after
    `homecare elder forget e1` no stream holds a message of theirs and a new subscriber is
    given none of their retained messages; e2's and e0's are as they were."""
    db = influx_db
    db.create_database()
    now = time.time()
    pub = Publisher(nats_broker.mqtt_port)
    n = pub.publish(valid_traffic(now, elders=3, frames=5))  # e0, e1, e2: wearable, bed, door
    for e in ("e0", GONE, KEPT):
        pub.client.publish(topic(e, "wearable", f"w{e[1:]}", "availability"), "online", qos=1,
                           retain=True)  # fmt: skip
        pub.client.publish(alert_topic("t", e, f"a{e}"), _alert(e, now).model_dump_json(),
                           qos=1, retain=True)  # fmt: skip
        pub.client.publish(f"{alert_topic('t', e, f'a{e}')}/ack", b'{"by": "app"}', qos=1)
    pub.wait_acked(n + 9)
    pub.close()

    async def raise_alerts() -> None:  # as detect stores them
        nc = await nats.connect(nats_broker.url)
        js = nc.jetstream()
        for e in ("e0", GONE, KEPT):
            alert = _alert(e, now)
            await js.publish(alert_subject("t", e, alert.id), alert.model_dump_json().encode(),
                             headers={"Nats-Msg-Id": alert.id})  # fmt: skip
        await nc.close()

    asyncio.run(raise_alerts())
    wait_for(lambda: _about(_stream_subjects(nats_broker), GONE)[ALERTS_STREAM] == 2, 10,
             "the alert and its acknowledgement in ALERTS")  # fmt: skip
    wait_for(lambda: _about(_stream_subjects(nats_broker), KEPT)[TELEMETRY_STREAM] >= n // 3,
             10, "the readings in TELEMETRY")  # fmt: skip
    before = _stream_subjects(nats_broker)
    gone = _about(before, GONE)
    assert gone[TELEMETRY_STREAM] >= n // 3  # readings, availability (and the app's ack)
    assert gone[RETAINED_STREAM] == 2
    assert sorted(_retained(nats_broker.mqtt_port, GONE)) == [
        alert_topic("t", GONE, f"a{GONE}"), topic(GONE, "wearable", "w1", "availability")]
    db.write([f"bed,site=t,elder={GONE},device=b1 movement=0.1 {int(now * 1000)}"])

    env = {
        **os.environ,
        "HOMECARE_NATS__URL": nats_broker.url,
        "HOMECARE_MQTT__URL": nats_broker.mqtt_url,
        "HOMECARE_INFLUX__URL": influx.url,
        "HOMECARE_STATE_DIR": str(tmp_path / "state"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "cli", "elder", "forget", GONE, "--yes"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["retained_messages"] == 2
    # Everything of theirs, and the empty publishes that cleared the retained ones.
    assert report["streams"][TELEMETRY_STREAM] >= gone[TELEMETRY_STREAM]
    assert report["streams"][ALERTS_STREAM] == 2
    assert report["streams_not_overwritten"] == {}
    assert report["points"] == {"autogen.bed": 1}  # InfluxDB as before

    after = _stream_subjects(nats_broker)
    assert _about(after, GONE) == dict.fromkeys(after, 0)
    # Nor are their payloads left in the store's files (a purge would leave them there).
    def stored(payload: bytes) -> list[Path]:
        files = nats_broker.store.rglob("*")
        return [p for p in files if p.is_file() and payload in p.read_bytes()]

    assert stored(f'"elder": "{GONE}"'.encode()) == []  # readings
    assert stored(f'"elder":"{GONE}"'.encode()) == []  # alerts, retained ones included
    assert stored(f'"elder": "{KEPT}"'.encode()) != []
    assert stored(f'"elder":"{KEPT}"'.encode()) != []
    assert _retained(nats_broker.mqtt_port, GONE) == []
    for other in ("e0", KEPT):  # untouched, subject by subject
        # ($MQTT_msgs keeps a publish only while a consumer has yet to take it: the server
        # drops what TELEMETRY and ALERTS have copied, anyone's, in its own time.)
        for stream, found in before.items():
            if stream == MQTT_STREAM:
                continue
            mine = {s: k for s, k in found.items() if other in s.split(".")}
            assert {s: k for s, k in after[stream].items() if other in s.split(".")} == mine
        assert sorted(_retained(nats_broker.mqtt_port, other)) == [
            alert_topic("t", other, f"a{other}"),
            topic(other, "wearable", f"w{other[1:]}", "availability")]  # fmt: skip


def test_past_the_erase_limit_the_report_says_what_was_only_purged(nats_broker, monkeypatch):
    """Erasing one message at a time is slow (about 75 a second): past the limit the rest is
    purged, gone from the stream but not overwritten on disk, and the report says so."""
    pub = Publisher(nats_broker.mqtt_port)
    n = pub.publish(valid_traffic(time.time(), elders=3, frames=5))
    pub.wait_acked(n)
    pub.close()
    wait_for(lambda: _about(_stream_subjects(nats_broker), KEPT)[TELEMETRY_STREAM] == n // 3, 10,
             "the readings in TELEMETRY")  # fmt: skip
    monkeypatch.setattr(forget_module, "ERASE_LIMIT", 3)
    settings = Settings(nats=NatsSettings(url=nats_broker.url),
                        mqtt=MqttSettings(url=nats_broker.mqtt_url))  # fmt: skip
    retained, deleted, unerased = asyncio.run(forget_module._forget_broker(settings, GONE, None))
    assert (retained, deleted[TELEMETRY_STREAM]) == (0, n // 3)
    assert unerased[TELEMETRY_STREAM] == n // 3
    assert set(unerased) <= {TELEMETRY_STREAM, MQTT_STREAM}  # $MQTT_msgs: if not dropped yet
    assert _about(_stream_subjects(nats_broker), GONE)[TELEMETRY_STREAM] == 0


def test_forget_needs_the_admin_account_and_asks_first(tmp_path):
    with (
        LocalInflux(tmp_path / "influxd", admin=("admin", "admin-pw")) as server,
        ExitStack() as stack,
    ):
        server.add_user("ingest", "ingest-pw", database="homecare", privilege="WRITE")
        admin = InfluxClient(InfluxSettings(url=server.url, username="admin", password="admin-pw"))
        stack.callback(admin.close)  # passed or failed
        admin.write([f"bed,site=t,elder={GONE},device=b1 movement=0.1 {int(time.time() * 1000)}"])

        def forget(user: str, password: str, *flags: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "HOMECARE_INFLUX__URL": server.url, "HOMECARE_MQTT__URL": "",
                   "HOMECARE_INFLUX__USERNAME": user, "HOMECARE_INFLUX__PASSWORD": password,
                   "HOMECARE_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
            return subprocess.run(
                [sys.executable, "-m", "cli", "elder", "forget", GONE, *flags],
                env=env, capture_output=True, text=True, timeout=60, check=False, input="n\n",
            )  # fmt: skip

        refused = forget("ingest", "ingest-pw", "--yes")
        assert refused.returncode == 1
        assert "needs an InfluxDB admin account" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert count(admin, "bed") == 1
        asked = forget("admin", "admin-pw")  # shows what it found, asks, and is told no
        assert asked.returncode == 1
        assert '"autogen.bed": 1' in asked.stdout
        assert "Aborted" in asked.stderr
        assert count(admin, "bed") == 1
        done = forget("admin", "admin-pw", "--yes")
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)["points"] == {"autogen.bed": 1}
        assert count(admin, "bed") == 0


def test_forget_works_as_the_privacy_user_on_the_secure_broker(secure_nats, pki, access):
    """On the deployed broker (operator mode, TLS), as the `privacy` service user of
    `homecare devices`: e1's readings, alert and retained messages are gone from every
    stream and from MQTT, e2's are as they were; the user could do no more than that."""
    ca = pki[0].cert
    escalate = access.service("escalate")
    privacy = access.service("privacy")
    sender = Probe(secure_nats.mqtt_port, ca=ca, user="escalate", password=escalate.password,
                   client_id="escalate")  # fmt: skip
    now = time.time()
    for e in (GONE, KEPT):
        device = f"w{e[1:]}"
        _, creds = access.provision(device, site="t", elder=e, kind="wearable")
        probe = Probe(secure_nats.mqtt_port, ca=ca, user=device, password=creds.password,
                      client_id=device)  # fmt: skip
        for i in range(3):
            probe.publish(topic(e, "wearable", device, "frame"), frame(e, device, now + i))
        probe.publish(topic(e, "wearable", device, "availability"), b"online", retain=True)
        probe.close()
        sender.publish(alert_topic("t", e, f"a{e}"), _alert(e, now).model_dump_json().encode(),
                       retain=True)  # fmt: skip
    sender.close()
    looker = NatsSettings(url=secure_nats.url, creds_file=access.services_dir / "provision.creds")
    wait_for(lambda: _about(_stream_subjects(secure_nats, looker), GONE)[TELEMETRY_STREAM] == 4,
             10, "e1's readings and availability in TELEMETRY")  # fmt: skip
    before = _stream_subjects(secure_nats, looker)
    assert _about(before, GONE)[RETAINED_STREAM] == 2

    settings = Settings(
        nats=NatsSettings(url=secure_nats.url, creds_file=privacy.creds),
        mqtt=MqttSettings(url=secure_nats.mqtt_url, username="privacy",
                          password=privacy.password, ca_file=ca),
    )  # fmt: skip
    retained, deleted, unerased = asyncio.run(forget_module._forget_broker(settings, GONE, None))
    assert retained == 2
    assert deleted[TELEMETRY_STREAM] >= 4  # and the empty publishes that cleared the retained
    assert unerased == {}
    after = _stream_subjects(secure_nats, looker)
    assert _about(after, GONE) == dict.fromkeys(after, 0)
    for stream in (TELEMETRY_STREAM, RETAINED_STREAM):
        mine = {s: k for s, k in before[stream].items() if KEPT in s.split(".")}
        assert {s: k for s, k in after[stream].items() if KEPT in s.split(".")} == mine
    # Its rights end there: it may not delete a stream nor read a consumer's messages.
    for subject in ("$JS.API.STREAM.DELETE.TELEMETRY",
                    "$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest"):
        assert "permissions violation" in _refused_request(secure_nats.url, privacy.creds, subject)

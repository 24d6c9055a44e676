"""Escalation active/standby (issue 15, part 4): the state in JetStream key-value, one
active `homecare escalate --store cluster` at a time, a standby that takes over.

Against a real nats-server, the call-centre stand-in and a real SMTP server (aiosmtpd):
two escalate processes, of which the test kills the active with SIGKILL between an
alert's arrival and its delivery, and after a rung went out; the other takes over. The
call centre must see each alert once (one incident per idempotency key), each family
email must arrive, and a second copy of one is allowed only when the new active says it
was in doubt (a try had started, no answer recorded: the documented window).

``HOMECARE_FAILOVER_TRIALS=26`` runs the kill-between-arrival-and-delivery trial 26 times
and prints how many family emails were sent twice (CI runs 2). ``HOMECARE_FAILOVER_NODES=3``
runs it on a 3-node cluster (R3) rather than one node.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from support import wait_for

from broker.provision import provision
from escalation.cluster import ClusterState, ClusterStore, LeaseLost, forget_in_cluster
from harness.servers import LocalNats, LocalNatsCluster, free_port
from harness.standins import CallCentreStandIn, LocalSmtp
from homecare.contract import Alert, AlertState
from homecare.jetstream import JetStreamConsumer, alert_subject, detect_partition_consumer
from homecare.settings import EscalateSettings, NatsSettings, Settings

pytestmark = pytest.mark.servers

SECRET = "failover-test-secret"
LEASE_S = float(os.environ.get("HOMECARE_FAILOVER_LEASE_S", "1.5"))
STEP_S = 3.0
SITE = "t"
ELDERS = 60
TRIALS = int(os.environ.get("HOMECARE_FAILOVER_TRIALS", "2"))
NODES = int(os.environ.get("HOMECARE_FAILOVER_NODES", "1"))


def registry(centre: CallCentreStandIn) -> dict:
    contacts = [{"id": "arc", "name": "ARC", "role": "call_centre",
                 "channels": [{"kind": "call_centre", "address": centre.url}]}]  # fmt: skip
    elders = []
    for i in range(1, ELDERS + 1):
        for who in ("fam", "kin"):
            contacts.append({"id": f"{who}{i}", "name": f"{who} {i}", "role": "family",
                             "channels": [{"kind": "email",
                                           "address": f"{who}{i}@example.org"}]})  # fmt: skip
        elders.append({"id": f"e{i}", "display_name": f"Elder {i}", "site": SITE,
                       "address": f"{i} Test Street",
                       "contacts": [f"fam{i}", f"kin{i}"]})  # fmt: skip
    critical = {"steps": [{"after_s": 0, "to": ["call_centre", "first_contact"]},
                          {"after_s": STEP_S, "to": ["next_contact"]}]}  # fmt: skip
    return {"provider": {"call_centre": "arc"}, "contacts": contacts, "elders": elders,
            "policy": {"critical": critical}, "digest_hour": None}  # fmt: skip


class Escalate:
    """One `homecare escalate --store cluster` process: its own state dir, API port, log."""

    def __init__(self, name: str, root: Path, env: dict[str, str]) -> None:
        self.name, self.root = name, root
        self.log = root / f"{name}.log"
        state = root / name
        state.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **env, "HOMECARE_STATE_DIR": str(state),
               "HOMECARE_ESCALATE__HTTP_PORT": str(free_port())}  # fmt: skip
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "escalate", "--store", "cluster"],
                env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )  # fmt: skip

    def says(self, text: str) -> bool:
        return text.encode() in self.log.read_bytes()

    @property
    def active(self) -> bool:
        """Holding the lease and consuming ALERTS (the standby never says it subscribed)."""
        return self.proc.poll() is None and self.says("escalate subscribed to ALERTS")

    @property
    def standing_by(self) -> bool:
        return self.proc.poll() is None and self.says("standing by")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Pair:
    """Two escalate processes, one active, one standing by; a killed one comes back."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.started = root, env, 0
        self.procs = [self.start(), self.start()]
        wait_for(lambda: sum(p.active for p in self.procs) == 1, 60, "one active escalate")
        wait_for(lambda: self.standby is not None, 30, "the other one standing by")

    def start(self) -> Escalate:
        self.started += 1
        return Escalate(f"escalate-{self.started}", self.root, self.env)

    @property
    def active(self) -> Escalate:
        found = [p for p in self.procs if p.active]
        assert len(found) == 1, [p.name for p in found]
        return found[0]

    @property
    def standby(self) -> Escalate | None:
        return next((p for p in self.procs if p.standing_by and not p.active), None)

    def fail_over(self) -> tuple[Escalate, float]:
        """kill -9 the active; the standby takes over: answer it and how long it took (from
        the kill to the moment it consumes ALERTS and sends)."""
        old = self.active
        heir = self.standby
        assert heir is not None, "no standby to take over"
        old.kill()
        killed = time.monotonic()
        wait_for(lambda: heir.active, LEASE_S + 15, "the standby taking over")
        took = time.monotonic() - killed
        self.procs.remove(old)
        self.procs.append(self.start())  # back as the standby
        return heir, took

    def wait_standby(self) -> None:
        try:
            wait_for(lambda: self.standby is not None, 60, "a standby")
        except AssertionError as exc:
            ended = [f"{p.name} exit {p.proc.poll()}: {p.log.read_text()[-2000:]}"
                     for p in self.procs if p.proc.poll() is not None]  # fmt: skip
            raise AssertionError(f"{exc}; {ended}") from None

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("failover")
    broker = LocalNatsCluster(root / "nats") if NODES > 1 else LocalNats(root / "nats")
    with broker, CallCentreStandIn() as centre, LocalSmtp() as smtp:
        url = broker.urls if NODES > 1 else broker.url
        mqtt_url = broker.mqtt_url
        done = provision(url, mqtt_url=mqtt_url, partitions=4, ack_wait_s=3.0, replicas=NODES)
        assert done.source.ok, done.source.detail
        reg = root / "registry.yaml"
        reg.write_text(yaml.safe_dump(registry(centre)))
        env = {
            "HOMECARE_NATS__URL": url,
            "HOMECARE_MQTT__URL": mqtt_url,
            "HOMECARE_INFLUX__URL": f"http://127.0.0.1:{free_port()}",  # none: events wait
            "HOMECARE_REGISTRY": str(reg),
            "HOMECARE_ESCALATE__SECRET": SECRET,
            "HOMECARE_ESCALATE__LEASE_S": str(LEASE_S),
            "HOMECARE_ESCALATE__HEARTBEAT_S": "300",
            "HOMECARE_ESCALATE__CALL_CENTRE__TIMEOUT_S": "2",
            "HOMECARE_ESCALATE__CALL_CENTRE__BACKOFF_S": "0.1",
            "HOMECARE_ESCALATE__SMTP__HOST": "127.0.0.1",
            "HOMECARE_ESCALATE__SMTP__PORT": str(smtp.port),
            "HOMECARE_ESCALATE__SMTP__STARTTLS": "false",
            "HOMECARE_ESCALATE__SMTP__BACKOFF_S": "0.1",
        }
        pair = Pair(root, env)
        detect = JetStreamConsumer(url, durable=detect_partition_consumer(0))  # raises alerts
        try:
            with detect:
                yield {"pair": pair, "centre": centre, "smtp": smtp, "detect": detect,
                       "url": url, "root": root}  # fmt: skip
        finally:
            pair.stop()


_elders = iter(range(1, ELDERS + 1))


def raise_alert(world) -> tuple[Alert, int]:
    """Store a new SOS in ALERTS as detect does, for an elder no test used yet."""
    i = next(_elders)
    now = time.time()
    alert = Alert(id=f"sos-e{i}-{int(now * 1000)}", site=SITE, elder=f"e{i}", device="w1",
                  kind="sos", severity="critical", ts=now, updated=now)  # fmt: skip
    subject = alert_subject(alert.site, alert.elder, alert.id)
    assert world["detect"].publish([(subject, alert.model_dump_json().encode(), alert.id)]) == [
        False
    ]
    return alert, i


def mails_to(world, address: str) -> list:
    return [m for m in world["smtp"].mails if any(r.startswith(address) for r in m.recipients)]


def incidents(world, alert: Alert) -> list:
    return world["centre"].incidents_for(alert.id)


def test_the_standby_takes_over_after_a_kill_9_and_each_rung_goes_once(world):
    """Rung 0 delivered by the first active; kill -9 before rung 1 is due: the standby
    takes over within seconds, sends rung 1 once, and rung 0 not again."""
    pair = world["pair"]
    alert, i = raise_alert(world)
    wait_for(lambda: incidents(world, alert) and mails_to(world, f"fam{i}@"), 15, "rung 0")
    time.sleep(0.5)  # the call centre's answer is recorded within 50 ms: not in doubt
    heir, took = pair.fail_over()
    print(f"\nstandby took over (consuming, sending) {took:.2f} s after kill -9 "
          f"(lease {LEASE_S:g} s)")  # fmt: skip
    assert took < LEASE_S + 8  # target ≤ 5 s with the default 3 s lease; CI is loaded
    wait_for(lambda: mails_to(world, f"kin{i}@"), STEP_S + 10, "rung 1 from the new active")
    pair.wait_standby()
    time.sleep(1.0)
    assert len(incidents(world, alert)) == 1
    assert not incidents(world, alert)[0].repeats  # rung 0 was recorded sent: not re-sent
    assert len(mails_to(world, f"fam{i}@")) == 1
    assert len(mails_to(world, f"kin{i}@")) == 1
    heir_log = heir.log.read_text()
    assert "0 rows of state loaded" not in heir_log  # it resumed from the cluster's state


def test_kill_9_between_an_alerts_arrival_and_its_delivery(world):
    """The measurement of issue 15: kill -9 the active at a random moment between an
    alert's arrival in ALERTS and its delivery; the standby takes over. The call centre
    opens one incident per alert; the family email arrives, twice only when the new
    active found it in doubt (sent, 250 not yet recorded)."""
    pair, rng = world["pair"], random.Random(15)
    # how long an alert takes from ALERTS to the family's mailbox here, now
    alert, i = raise_alert(world)
    wait_for(lambda: mails_to(world, f"fam{i}@"), 15, "a first email")
    latency = mails_to(world, f"fam{i}@")[0].received - alert.ts
    resent, landed_after, takeovers = 0, 0, []
    trials = []
    for _ in range(TRIALS):
        pair.wait_standby()
        alert, i = raise_alert(world)
        time.sleep(rng.uniform(0.0, latency * 1.5))
        killed_at = time.time()
        _, took = pair.fail_over()
        takeovers.append(took)
        wait_for(lambda a=alert, i=i: incidents(world, a) and mails_to(world, f"fam{i}@"),
                 LEASE_S + 15, "the alert delivered after the takeover")  # fmt: skip
        trials.append((alert, i, killed_at))
    pair.wait_standby()
    time.sleep(1.0)
    for alert, i, killed_at in trials:
        got = mails_to(world, f"fam{i}@")
        assert len(incidents(world, alert)) == 1, alert.id
        assert len({m.message["Message-ID"] for m in got}) == 1  # the same message each time
        resent += len(got) - 1
        landed_after += got[0].received <= killed_at
    logs = pair.logs()
    doubted = logs.count("(email) was being sent when escalate stopped")
    marked = sum(int(n) for n in re.findall(r"(\d+) emails accepted by the server before", logs))
    print(f"\n{TRIALS} trials (kill -9 0–{latency * 1.5 * 1000:.0f} ms after the alert, "
          f"{NODES} node(s), lease {LEASE_S:g} s): family email re-sent {resent} times; "
          f"{landed_after} kills came after the server had the email; at takeover "
          f"{doubted} emails were in doubt (sent again) and {marked} had their 250 mark "
          f"(not sent again); takeover {min(takeovers):.2f}–{max(takeovers):.2f} s after "
          "the kill")  # fmt: skip
    assert resent <= doubted  # a second copy only for an email in doubt (the window)


def test_an_old_active_that_lost_its_lease_writes_nothing(world, tmp_path):
    """The fence: a process whose lease lapsed (paused, cut off) cannot commit, and one
    that believes it still holds it finds another's revision on the state and stops;
    either way nothing of it reaches the bucket."""
    settings = Settings(
        state_dir=tmp_path, nats=NatsSettings(url=world["url"]),
        escalate=EscalateSettings(store="cluster", secret=SECRET, lease_s=LEASE_S),
    )  # fmt: skip
    # a store that holds no lease refuses to commit
    cluster = ClusterState(settings)
    try:
        lonely = ClusterStore(cluster.loop, cluster.state, cluster.lease)
        alert = Alert(id="fenced-1", site=SITE, elder="e1", kind="sos", severity="critical",
                      ts=1.0, updated=1.0)  # fmt: skip
        with pytest.raises(LeaseLost), lonely.tx():
            lonely.insert_alert(alert, 1.0, start_at=1.0, next_at=None, state=AlertState.OPEN)
        assert lonely.alert("fenced-1") is None  # rolled back
        # the active writes the state after this store read it (an alert of its own: the
        # test does not count on the tests before it to have moved the state on)
        raised, _ = raise_alert(world)
        wait_for(lambda: incidents(world, raised), 15, "the active's alert at the call centre")
        # pretend to hold it: the state's revision has moved on (the active wrote it)
        cluster.lease._valid_until = time.monotonic() + 60
        with pytest.raises(LeaseLost), lonely.tx():
            lonely.insert_alert(alert, 1.0, start_at=1.0, next_at=None, state=AlertState.OPEN)
        entries = cluster.loop.run(lonely._entries(), 10)
        assert "a.fenced-1" not in entries
        for bucket in ("KV_escalation", "KV_escalation-lease"):  # replicated as ALERTS is
            info = cluster.loop.run(cluster.nc.jetstream().stream_info(bucket), 10)
            assert info.config.num_replicas == NODES
        assert any(key.startswith("a.sos-") for key in entries)  # the pair's alerts are there
    finally:
        cluster.close()


def test_a_paused_active_that_wakes_after_the_takeover_sends_nothing_and_exits(world):
    """SIGSTOP the active past its lease (a long pause, a machine cut off): the standby
    takes over; woken, the old one finds the lease gone, sends nothing and exits (3)."""
    pair = world["pair"]
    pair.wait_standby()
    old, heir = pair.active, pair.standby
    assert heir is not None
    os.kill(old.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: heir.active, LEASE_S + 15, "the standby taking over")
        alert, i = raise_alert(world)
        wait_for(lambda: incidents(world, alert) and mails_to(world, f"fam{i}@"), 15,
                 "the alert sent by the new active")  # fmt: skip
    finally:
        os.kill(old.proc.pid, signal.SIGCONT)
    assert old.proc.wait(30) == 3
    assert old.says("lost its lease")
    time.sleep(1.0)
    assert len(incidents(world, alert)) == 1
    assert not incidents(world, alert)[0].repeats
    assert len(mails_to(world, f"fam{i}@")) == 1
    pair.procs.remove(old)  # no standby started again: the tests after this one need none


def test_elder_forget_erases_the_elder_from_the_clusters_state(world, tmp_path):
    """In cluster mode the active escalate erases (only it writes the bucket): the elder's
    alerts, deliveries and events leave the state it holds and the bucket."""
    alert, i = raise_alert(world)
    wait_for(lambda: incidents(world, alert) and mails_to(world, f"fam{i}@"), 15, "the alert")
    time.sleep(0.5)  # its answers recorded
    settings = Settings(
        state_dir=tmp_path, nats=NatsSettings(url=world["url"]),
        escalate=EscalateSettings(store="cluster", secret=SECRET, lease_s=LEASE_S),
    )  # fmt: skip
    removed = forget_in_cluster(settings, f"e{i}", None)
    assert removed["alerts"] == 1
    assert removed["deliveries"] >= 2  # the call centre's alarm and the family email
    assert removed["events"] >= 1
    cluster = ClusterState(settings)
    try:
        reader = ClusterStore(cluster.loop, cluster.state, cluster.lease)
        entries = cluster.loop.run(reader._entries(), 10)
        assert not [key for key in entries if alert.id in key]
        assert not [key for key, (value, _) in entries.items() if alert.id.encode() in value]
    finally:
        cluster.close()


def test_a_transaction_cut_between_its_wal_and_its_rows_is_loaded_whole(nats_broker, tmp_path):
    """A kill between the ``wal`` write (the commit point) and the rows' writes: the next
    active applies the last transaction from ``wal`` (here a large one, written in
    chunks). The cut is made by replacing the rows' write with nothing (the one way to
    stop a process at exactly that point in a test). Only the last transaction can be
    cut: each one waits for its rows before the next is written."""
    settings = Settings(
        state_dir=tmp_path, nats=NatsSettings(url=nats_broker.url),
        escalate=EscalateSettings(store="cluster", secret=SECRET, lease_s=1.0),
    )  # fmt: skip
    never = threading.Event()
    first = ClusterState(settings)
    try:
        store = first.acquire(never)
        assert store is not None
        noise = random.Random(1)
        alerts = [
            Alert(
                id=f"big-{n}",
                site=SITE,
                elder=f"e{n}",
                kind="sos",
                severity="critical",
                ts=1.0,
                updated=1.0,
                evidence={f"v{k}": noise.random() for k in range(120)},
            )
            for n in range(300)
        ]
        with store.tx():
            store.insert_alert(alerts[0], 1.0, start_at=1.0, next_at=5.0, state=AlertState.OPEN)

        async def cut(rows: dict) -> None:
            return None

        store._apply = cut  # the process dies after the wal write, before the rows
        with store.tx():  # large: its wal goes in chunks
            for alert in alerts[1:]:
                store.insert_alert(alert, 1.0, start_at=1.0, next_at=None, state=AlertState.OPEN)
            store.set_rung(alerts[0].id, 3, 9.0)
        entries = first.loop.run(store._entries(), 10)
        assert "walc.1" in entries  # the large transaction was written in chunks
        assert "a.big-299" not in entries  # its rows never were
    finally:
        first._renewal.cancel()  # a kill: the lease is not handed back, it lapses
    heir = ClusterState(settings)
    try:
        loaded = heir.acquire(never)
        assert loaded is not None
        record = loaded.alert(alerts[0].id)
        assert record is not None
        assert (record.step, record.next_at) == (3, 9.0)  # the cut transaction, from wal
        assert loaded.count_alerts() == 300
        assert loaded.alert("big-299") == store.alert("big-299")
    finally:
        heir.close()
        first.close()

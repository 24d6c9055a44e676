"""The main job: simulated elders → NATS Server → ingest, detect, escalate → InfluxDB,
and what arrived.

With no broker or InfluxDB configured it starts its own (fresh data under
``<state_dir>/demo`` each run, loopback ports, stopped on exit): a NATS Server with
JetStream and its MQTT listener, provisioned (``homecare broker provision``: the MQTT
streams, TELEMETRY, every durable consumer, ALERTS) before any device connects, as
production must be. Devices speak MQTT 3.1.1 to the listener; ingest, detect and
escalate each run as their own process, as in production, and read their durable
consumers (``settings.nats``); escalate shows apps each alert's state retained on its
MQTT topic (``settings.mqtt``), where the demo listens as an app would. The simulator
publishes an accelerated past window of ``hours`` (so no timestamp is in the future)
and a misbehaving device sends a few bad messages, to show the dead-letter path. The
summary counts back, per stream and per elder, what InfluxDB holds against what the
broker acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker.provision import provision
from device_sim.fleet import Fleet, FleetStats
from device_sim.homes import SimConfig, Simulation
from device_sim.scenarios import EARLY_S, GRACE_S, Scenario, apply, plan_scenarios, write_labels
from escalation.store import ladder_paths as stored_ladder_paths
from escalation.store import store_path
from evaluation.cohort import KIND_OF
from harness.mqtt_client import mqtt_client
from harness.servers import LocalInflux, LocalNats, compacted_size
from harness.standins import CallCentreStandIn, HttpStandIn, LocalSmtp, Operator
from homecare import query as q
from homecare.contract import Alert, AlertState, Stream, Topic, alert_subscription
from homecare.errors import ConfigError, ServiceError
from homecare.influx import InfluxClient
from homecare.runtime import start_process, stop_process
from homecare.schema import ELDER, SITE, STREAM_MEASUREMENTS, Button, DeadLetter, Measurement
from homecare.settings import InfluxSettings, MqttSettings, NatsSettings, Settings
from homecare.status import read_status


@dataclass
class DemoResult:
    published: FleetStats
    stored: dict[str, int]
    stored_per_elder: dict[str, int]
    dead_letters: dict[str, int]
    bad_sent: int
    ingest: dict[str, object] = field(default_factory=dict)
    bytes_on_disk: int | None = None
    scenarios: list[Scenario] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    scenarios_end: float = math.inf
    """The end of the simulated window: devices go offline after it."""
    elders: int = 0
    hours: float = 0.0
    wall_s: float = 0.0
    ladder: list[dict[str, Any]] = field(default_factory=list)
    """Each escalated alert's path up the ladder (from escalate's store)."""
    escalation: dict[str, int] = field(default_factory=dict)
    """What the call centre, the mail server and the family gateway received."""

    @property
    def lost(self) -> int:
        sent = sum(n for s, n in self.published.per_stream.items() if s in STREAM_MEASUREMENTS)
        return sent - sum(self.stored.values())


def bad_messages(site: str, elder: str, device: str, now: float) -> list[tuple[str, bytes]]:
    """A misbehaving wearable: each message breaks the contract in its own way."""
    topic = str(Topic.parse(f"homecare/v1/{site}/{elder}/wearable/{device}/frame"))
    frame = {
        "elder": elder,
        "device": device,
        "ts": now,
        "rate": 25,
        "accel": [[0.0, -1.0, 0.0]] * 25,
    }
    return [
        (topic, b"{not json"),
        (topic, json.dumps(frame | {"hr": 999}).encode()),
        (topic, json.dumps(frame | {"ts": now + 86400}).encode()),
        (topic, json.dumps(frame | {"elder": "someone-else"}).encode()),
        (topic.replace("/frame", "/selfie"), json.dumps(frame).encode()),
    ]


DEMO_PARTITIONS = 8
"""TELEMETRY's partitions on the demo's own broker (a handful of elders)."""


@contextlib.contextmanager
def servers(settings: Settings, root: Path) -> Iterator[Settings]:
    """The configured servers, or fresh local ones for this run.

    A local NATS Server is provisioned before anything connects to it: devices'
    publishes are kept only once TELEMETRY sources ``$MQTT_msgs`` with its consumers in
    place. A configured one must have been provisioned (``homecare broker provision``):
    the services refuse to start otherwise, naming what is missing."""
    with contextlib.ExitStack() as stack:
        nats, mqtt, influx = settings.nats, settings.mqtt, settings.influx
        if bool(nats.url) != bool(mqtt.url):
            raise ConfigError(
                "set both HOMECARE_NATS__URL (the services' streams) and HOMECARE_MQTT__URL "
                "(its MQTT listener, for devices and apps), or neither for a local NATS Server"
            )
        if not nats.url or not influx.url:
            shutil.rmtree(root, ignore_errors=True)
        if not nats.url:
            broker = stack.enter_context(LocalNats(root / "nats"))
            done = provision(broker.url, mqtt_url=broker.mqtt_url, partitions=DEMO_PARTITIONS)
            if not done.source.ok:
                raise ServiceError(f"the demo's NATS Server: {done.source.detail}")
            nats = NatsSettings(url=broker.url, partitions=DEMO_PARTITIONS)
            mqtt = MqttSettings(url=broker.mqtt_url)
        if not influx.url:
            db = stack.enter_context(LocalInflux(root / "influxd"))
            influx = InfluxSettings(url=db.url, database=settings.influx.database)
        yield settings.model_copy(update={"nats": nats, "mqtt": mqtt, "influx": influx})


class ServiceProcess:
    """A ``homecare`` service (ingest, detect, escalate) as its own process, configured by
    environment: its streams from ``settings.nats``, the MQTT listener (where escalate
    shows apps the alert states) from ``settings.mqtt``.

    Running once it has written its status file ``ready`` (each service writes one as
    soon as it consumes), or without ``ready`` once its log says ``subscribed`` (escalate
    does when its consumer is bound). ``args``: the command's options (``ingest
    --district d1``). A context manager: stopped on exit (SIGTERM, as in
    production) if it still runs. In a session of its own, so that Ctrl-C and SIGTERM
    take the same path: the command stops it.
    """

    def __init__(
        self, command: str, settings: Settings, log: Path, *, ready: Path | None = None,
        args: Sequence[str] = (), **env_extra: str,
    ) -> None:  # fmt: skip
        env = dict(os.environ)
        env.update(
            {
                "HOMECARE_NATS__URL": settings.nats.url,
                "HOMECARE_NATS__PARTITIONS": str(settings.nats.partitions),
                "HOMECARE_MQTT__URL": settings.mqtt.url,
                "HOMECARE_MQTT__CLIENT_ID": f"homecare-demo-{command}",
                "HOMECARE_INFLUX__URL": settings.influx.url,
                "HOMECARE_INFLUX__DATABASE": settings.influx.database,
                "HOMECARE_STATE_DIR": str(settings.state_dir),
                **env_extra,
            }
        )
        if ready is not None:
            ready.unlink(missing_ok=True)  # a previous run's
        self.command = command
        self.ready = ready
        self.log = log
        self.out = log.with_suffix(".out")
        """Its stdout: the stats it prints on the way out."""
        log.parent.mkdir(parents=True, exist_ok=True)
        proc: subprocess.Popen[bytes] | None = None
        try:
            with log.open("wb") as err, self.out.open("wb") as out:
                self.proc = proc = start_process(
                    [sys.executable, "-m", "cli", command, *args],
                    env=env,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 60
            while not (ready.exists() if ready else b"subscribed" in log.read_bytes()):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    raise ServiceError(f"{command} did not start; see {log}: "
                                       + " / ".join(tail))
                time.sleep(0.1)
        except BaseException:
            if proc is not None:
                self.stop()
            raise

    def stop(self) -> dict[str, object]:
        """Stop it (SIGTERM, SIGKILL after 60 s) and return its stats ({} if it printed none)."""
        stop_process(self.proc, timeout_s=60)
        lines = self.out.read_text().strip().splitlines()
        with contextlib.suppress(ValueError):
            return dict(json.loads(lines[-1])) if lines else {}
        return {}

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        stop_process(self.proc, timeout_s=60)

    def status(self) -> dict[str, Any]:
        """What it last wrote to its status file ({} without one); :class:`ServiceError`
        with its log's tail once it has exited."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{self.command} exited ({self.proc.returncode}): {tail}")
        return (read_status(self.ready) or {}) if self.ready else {}


class DetectWorker(ServiceProcess):
    """``homecare detect`` as one of the workers that share the partitions, with a state
    folder of its own, its state saved every ``save_every_s`` and alerts waiting in the
    state (no InfluxDB: tests and the takeover benchmark read its status file)."""

    def __init__(
        self, nats_url: str, partitions: int, state_dir: Path, log: Path, *,
        save_every_s: float = 1.0, **env_extra: str,
    ) -> None:  # fmt: skip
        settings = Settings(nats=NatsSettings(url=nats_url, partitions=partitions),
                            influx=InfluxSettings(url="http://127.0.0.1:9"),
                            state_dir=state_dir)  # fmt: skip
        super().__init__("detect", settings, log, ready=status_of(settings, "detect"),
                         HOMECARE_DETECT__SAVE_EVERY_S=str(save_every_s), **env_extra)  # fmt: skip

    def held(self) -> set[int]:
        """The partitions it holds now."""
        return set(self.status().get("partitions", []))


class AlertListener:
    """What an app would see: every alert state escalate publishes on the alert topics
    (MQTT 3.1.1 at NATS's MQTT listener, as an app subscribes)."""

    def __init__(self, settings: MqttSettings) -> None:
        self.alerts: list[Alert] = []
        self.client = mqtt_client(settings, "homecare-demo-alerts")
        self.client.on_connect = lambda c, *_: c.subscribe(alert_subscription(), qos=1)
        self.client.on_message = lambda _c, _u, m: self.alerts.append(
            Alert.model_validate_json(m.payload)
        )
        self.client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raised(alerts: list[Alert]) -> list[Alert]:
    """Each alert once (the first state an app saw of it), in the order they came.

    Escalate publishes an alert's state on its topic at each transition (notified,
    acknowledged, cancelled...); an app may never see ``open`` (the first rung notifies
    at once), so an alert is counted by its id, whatever its first state."""
    first: dict[str, Alert] = {}
    for alert in alerts:
        first.setdefault(alert.id, alert)
    return list(first.values())


def match_alerts(plan: list[Scenario], alerts: list[Alert]) -> list[tuple[Scenario, Alert | None]]:
    """Each injected scenario with the first alert of its kind for its elder in its window."""
    opened = sorted(raised(alerts), key=lambda a: a.ts)
    out = []
    for sc in sorted(plan, key=lambda sc: sc.known):
        kinds = {sc.kind, *(k for k, v in KIND_OF.items() if v == sc.kind)}
        hit = next(
            (
                a
                for a in opened
                if a.elder == sc.elder
                and a.kind in kinds
                and sc.known - EARLY_S <= a.ts <= sc.end + GRACE_S
            ),
            None,
        )
        out.append((sc, hit))
    return out


def _count(
    db: InfluxClient, measurement: type[Measurement], where: str, group: str = ""
) -> dict[str, int]:
    """Points of a measurement, per value of the ``group`` tag."""
    counted = q.select(measurement.name, q.call("count", measurement.always)).where(where)
    out: dict[str, int] = {}
    for series in db.query(str(counted.group_by(group) if group else counted)):
        key = (series.get("tags") or {}).get(group, "") if group else ""
        out[key] = out.get(key, 0) + int(series["values"][0][1])
    return out


def stored_counts(
    db: InfluxClient, site: str, t0: float, t1: float
) -> tuple[dict[str, int], dict[str, int]]:
    """Points stored for this site and window, per stream and per elder."""
    where = f"{q.equal(SITE, site)} AND time >= {int(t0 * 1e9)} AND time < {int(t1 * 1e9)}"
    per_stream: dict[str, int] = {}
    per_elder: dict[str, int] = {}
    buttons = (Stream.SOS, Stream.OK, Stream.FALL)  # one measurement, told apart by a tag
    for stream, measurement in STREAM_MEASUREMENTS.items():
        if stream in buttons[1:]:
            continue
        if stream is Stream.SOS:
            counts = _count(db, measurement, where, Button.button)
            for button in buttons:
                per_stream[str(button)] = counts.get(button, 0)
        else:
            per_stream[str(stream)] = sum(_count(db, measurement, where).values())
        for elder, n in _count(db, measurement, where, ELDER).items():
            per_elder[elder] = per_elder.get(elder, 0) + n
    return per_stream, per_elder


async def _publish(sim: Simulation, url: str, end: float, progress: Progress) -> FleetStats:
    total = int(end - sim.clock)
    task = progress.add_task("simulating", total=total)
    async with Fleet(sim, url) as fleet:
        while sim.clock < end - 1e-9:
            await fleet.run(until=min(sim.clock + 300.0, end), speed=None)
            progress.update(task, completed=total - int(end - sim.clock))
        await fleet.drain(60)
    return fleet.stats


def publish_bad(settings: MqttSettings, messages: list[tuple[str, bytes]]) -> int:
    """Publish as a misbehaving device would (MQTT 3.1.1, QoS 1), waiting for the broker's
    PUBACKs."""
    client = mqtt_client(settings, "homecare-demo-faulty-device")
    client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(infos)


ACK_LINK = re.compile(r"https?://[^\s<>]+/alerts/[A-Za-z0-9_-]+/ack\?[^\s<>]+")
OPERATOR_S = 2.0
"""The call centre's stand-in operator acknowledges each new alarm this long after it."""


def demo_registry(sim: Simulation, site: str, centre: str, gateway: str) -> dict[str, Any]:
    """Every simulated elder with two family contacts (email, then an SMS/push webhook)."""
    contacts: list[dict[str, Any]] = [
        {"id": "arc", "name": "Alarm receiving centre", "role": "call_centre",
         "channels": [{"kind": "call_centre", "address": centre}]},
        {"id": "arc-supervisor", "name": "ARC supervisor", "role": "supervisor",
         "channels": [{"kind": "call_centre", "address": centre + "/supervisor"}]},
        {"id": "desk", "name": "Device desk", "role": "device_desk",
         "channels": [{"kind": "email", "address": "devices@provider.example.org"}]},
    ]  # fmt: skip
    elders = []
    for home in sim.elders:
        n = home.elder
        contacts += [
            {"id": f"{n}-daughter", "name": f"Daughter of {n}", "role": "family",
             "channels": [{"kind": "email", "address": f"daughter.{n}@example.org"}]},
            {"id": f"{n}-son", "name": f"Son of {n}", "role": "family",
             "channels": [{"kind": "webhook", "address": f"{gateway}sms/{n}"}]},
        ]  # fmt: skip
        elders.append({"id": n, "display_name": f"Resident {n}", "site": site,
                       "address": f"Flat {n[-2:]}, Demo Court", "phone": "+44 20 7946 0000",
                       "devices": [d.device for d in home.devices],
                       "contacts": [f"{n}-daughter", f"{n}-son"]})  # fmt: skip
    provider = {"call_centre": "arc", "supervisor": "arc-supervisor", "device_desk": "desk"}
    return {"provider": provider, "contacts": contacts, "elders": elders, "digest_hour": None}


@contextlib.contextmanager
def escalation_peers() -> Iterator[tuple[CallCentreStandIn, HttpStandIn, LocalSmtp]]:
    """The call centre (with an operator who acknowledges), the family's SMS gateway, SMTP."""
    with (
        CallCentreStandIn(operator=Operator(after_s=OPERATOR_S)) as centre,
        HttpStandIn(path="/") as gateway,
        LocalSmtp() as smtp,
    ):
        yield centre, gateway, smtp


def start_escalate(
    live: Settings, root: Path, centre: CallCentreStandIn, gateway: HttpStandIn, smtp: LocalSmtp,
    sim: Simulation,
) -> ServiceProcess:  # fmt: skip
    """``homecare escalate`` on a registry of the simulated elders, its store fresh."""
    shutil.rmtree(root / "escalate", ignore_errors=True)
    registry = root / "registry.yaml"
    registry.write_text(yaml.safe_dump(demo_registry(sim, live.site, centre.url, gateway.url)))
    return ServiceProcess(
        "escalate", live, root / "escalate.log", ready=root / "escalate" / "escalate.json",
        HOMECARE_STATE_DIR=str(root / "escalate"), HOMECARE_REGISTRY=str(registry),
        HOMECARE_ESCALATE__CLIENT_ID="homecare-demo-escalate",
        HOMECARE_ESCALATE__HTTP_PORT="0", HOMECARE_ESCALATE__SECRET=secrets.token_hex(16),
        HOMECARE_ESCALATE__SMTP__HOST="127.0.0.1", HOMECARE_ESCALATE__SMTP__PORT=str(smtp.port),
        HOMECARE_ESCALATE__SMTP__STARTTLS="false", HOMECARE_ESCALATE__HEARTBEAT_S="30",
    )  # fmt: skip


def settle_escalation(
    root: Path, alerts: list[Alert], smtp: LocalSmtp, timeout_s: float = 15.0
) -> None:
    """Wait until escalate holds every alert and has sent what was due; then each family
    member who got an email follows its acknowledgement link (the operator was quicker
    for critical alerts: theirs are already acknowledged)."""
    ids = {a.id for a in alerts}
    status = root / "escalate" / "escalate.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = read_status(status) or {}
        if int(st.get("alerts", 0)) >= len(ids) and int(st.get("pending", 1)) == 0:
            break
        time.sleep(0.5)
    for mail in smtp.mails:
        for url in ACK_LINK.findall(mail.text):
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, timeout=10)
    time.sleep(OPERATOR_S + 1.0)


def ladder_paths(state_dir: Path) -> list[dict[str, Any]]:
    """Each alert escalate handled, with its story (who was told, when, who acknowledged)."""
    return stored_ladder_paths(store_path(state_dir))


DEMO_MIX = {
    "fall_forward": 0.08, "fall_sideways": 0.06, "long_lie": 0.04, "sos": 0.1, "sit_hard": 0.5,
    "stumble": 0.2, "device_dropped": 0.1, "wandering": 0.06, "bed_exit": 0.06,
    "low_spo2": 0.05, "tachycardia": 0.05,
}  # fmt: skip
"""Scenarios per elder-day injected into the demo's simulated day."""


def run_demo(
    settings: Settings, *, elders: int, hours: float, seed: int, console: Console
) -> DemoResult:
    root = settings.state_dir / "demo"
    started = time.perf_counter()
    with (
        servers(settings, root) as live,
        escalation_peers() as (centre, gateway, smtp),
        contextlib.ExitStack() as services,
    ):
        end = math.floor(time.time())
        start = end - hours * 3600.0
        sim = Simulation(SimConfig(elders=elders, seed=seed, site=live.site, start=start))
        plan = plan_scenarios(sim, seed, hours / 24, DEMO_MIX)
        apply(sim, plan)
        write_labels(root / "labels", plan)
        ingest = services.enter_context(
            ServiceProcess("ingest", live, root / "ingest.log", ready=status_of(live, "ingest"))
        )
        detect = services.enter_context(
            ServiceProcess("detect", live, root / "detect.log", ready=status_of(live, "detect"),
                           HOMECARE_DETECT__CLOCK="data")
        )
        escalate = services.enter_context(start_escalate(live, root, centre, gateway, smtp, sim))
        listener = AlertListener(live.mqtt)
        try:
            first = sim.elders[0]
            bad = bad_messages(live.site, first.elder, first.wearable.device, end - 60)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("simulated s"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                published = asyncio.run(_publish(sim, live.mqtt.url, end, progress))
            publish_bad(live.mqtt, bad)
            # ingest and detect each read the whole stream on their own session
            sent = published.acked + len(bad)
            for service in ("ingest", "detect"):
                _wait_for_progress(status_of(live, service), sent)
            time.sleep(1.0)
            settle_escalation(root, listener.alerts, smtp)
            with InfluxClient(live.influx) as db:
                stored, per_elder = stored_counts(db, live.site, start, time.time() + 60)
                dead = dict(
                    _count(
                        db, DeadLetter, f"time >= {int(start * 1e9)}", DeadLetter.reason
                    ).items()
                )
        finally:
            listener.close()
            escalate.stop()
            detect.stop()
            ingest_stats = ingest.stop()
        disk = compacted_size(root / "influxd" / "data") if not settings.influx.url else None
    return DemoResult(
        published,
        stored,
        per_elder,
        dead,
        len(bad),
        ingest=ingest_stats,
        bytes_on_disk=disk,
        scenarios=plan,
        alerts=listener.alerts,
        scenarios_end=float(end),
        elders=elders,
        hours=hours,
        wall_s=time.perf_counter() - started,
        ladder=ladder_paths(root / "escalate"),
        escalation={
            "incidents": len(centre.incidents),
            "heartbeats": len(centre.heartbeats),
            "operator_acks": sum(a.status_code == 200 for a in centre.acks),
            "emails": len(smtp.mails),
            "webhooks": len(gateway.requests),
        },
    )


def status_of(settings: Settings, service: str) -> Path:
    """The status file ``homecare ingest`` (one instance) or ``detect`` (one worker)
    writes while it runs."""
    name = {"ingest": "ingest-main", "detect": "detect"}[service]
    return settings.state_dir / f"{name}.json"


def _wait_for_progress(
    status: Path, messages: int, stall_s: float = 60.0, settle_s: float = 3.0
) -> None:
    """Wait until a service has handled ``messages`` and then gone quiet for ``settle_s``,
    as long as it keeps making progress. Reaching the number is not enough: a loaded
    publisher re-sends what it saw no acknowledgement for, and the duplicates count too."""
    seen, since = -1, time.monotonic()
    while True:
        now = time.monotonic()
        done = int((read_status(status) or {}).get("messages", 0))
        if done > seen:
            seen, since = done, now
        elif now - since >= (settle_s if done >= messages else stall_s):
            return
        time.sleep(0.5)


def print_summary(result: DemoResult, console: Console) -> None:
    pub = result.published
    table = Table(title="messages per stream")
    table.add_column("stream")
    table.add_column("published (acked)", justify="right")
    table.add_column("stored", justify="right")
    for stream in Stream:
        sent = pub.per_stream.get(stream, 0)
        if sent or stream in STREAM_MEASUREMENTS:
            stored = result.stored.get(str(stream), 0)
            table.add_row(str(stream), str(sent), str(stored))
    console.print(table)
    elders = Table(title="per elder")
    elders.add_column("elder")
    elders.add_column("published", justify="right")
    elders.add_column("stored", justify="right")
    for elder, sent in sorted(pub.per_elder.items()):
        elders.add_row(elder, str(sent), str(result.stored_per_elder.get(elder, 0)))
    console.print(elders)
    dead = ", ".join(f"{k}: {v}" for k, v in sorted(result.dead_letters.items())) or "none"
    console.print(
        f"dead-lettered: {sum(result.dead_letters.values())} of {result.bad_sent} "
        f"bad messages sent ({dead})"
    )
    console.print(
        f"lost: {result.lost}  ·  {pub.acked} messages in {result.wall_s:.0f} s "
        f"({pub.acked / max(result.wall_s, 1e-9):.0f}/s end to end) for "
        f"{result.elders} elders × {result.hours:g} h"
    )
    _print_alerts(result, console)
    _print_ladder(result, console)
    if result.bytes_on_disk is not None:
        per_day = result.bytes_on_disk / max(result.elders, 1) / (result.hours / 24)
        console.print(
            f"InfluxDB on disk (compacted TSM): {result.bytes_on_disk / 1e6:.2f} MB, "
            f"≈ {per_day / 1e6:.2f} MB per elder-day"
        )


def _print_alerts(result: DemoResult, console: Console) -> None:
    """Injected scenarios against the alerts raised, and what else was raised."""
    table = Table(title="injected scenarios → alerts")
    for column in ("at (UTC)", "elder", "scenario", "expected", "alert", "alert from"):
        table.add_column(column)
    matched = match_alerts([sc for sc in result.scenarios if sc.kind != "none"], result.alerts)
    for sc, alert in matched:
        at = time.strftime("%H:%M:%S", time.gmtime(sc.known))
        if alert is None:
            table.add_row(at, sc.elder, sc.name, sc.kind, "[red]missed[/red]", "")
        else:
            cancelled = any(
                a.id == alert.id and a.state == AlertState.CANCELLED for a in result.alerts
            )
            state = " (cancelled: I'm OK)" if cancelled else ""
            table.add_row(
                at,
                sc.elder,
                sc.name,
                sc.kind,
                f"{alert.kind} {alert.severity}{state}",
                time.strftime("%H:%M:%S", time.gmtime(alert.ts)),
            )
    console.print(table)
    used = {a.id for _, a in matched if a is not None}
    look_alikes = [sc for sc in result.scenarios if sc.kind == "none"]
    alerts = raised(result.alerts)
    on_look_alikes = sum(
        1
        for a in alerts
        if a.id not in used
        and any(
            sc.elder == a.elder and sc.start - EARLY_S <= a.ts <= sc.end + GRACE_S
            for sc in look_alikes
        )
    )
    end = result.scenarios_end
    other: dict[str, int] = {}
    for a in alerts:
        if a.id not in used and a.ts < end:
            other[f"{a.kind} ({a.severity})"] = other.get(f"{a.kind} ({a.severity})", 0) + 1
    found = sum(a is not None for _, a in matched)
    console.print(
        f"alerts: {found} of {len(matched)} injected scenarios raised their alert; "
        f"{len(look_alikes)} look-alike movements injected (sitting down hard, stumbles, "
        f"dropped devices), {on_look_alikes} alerts on them; other alerts: "
        + (", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "none")
        + f"; and {sum(a.ts >= end for a in alerts)} device-offline alerts as the "
        "simulated devices disconnect at the end"
    )


def _print_ladder(result: DemoResult, console: Console) -> None:
    """Each escalated alert's path up the ladder: who was told, when, who acknowledged."""
    table = Table(title="escalation: each alert's path up the ladder")
    for column in ("received (UTC)", "elder", "alert", "path (seconds after receipt)", "now"):
        table.add_column(column)
    info = 0
    for entry in result.ladder:
        alert: Alert = entry["alert"]
        if alert.severity == "info" or entry["duplicate_of"]:
            info += 1
            continue
        steps = []
        for ev in entry["story"]:
            dt = f"+{float(ev['ts']) - entry['received']:.1f}s"
            name = str(ev["event"])
            if name.startswith("delivered_"):
                kind = "" if name == "delivered_alarm" else f"{name[10:]} "
                steps.append(f"{dt} {kind}→ {ev['who']} ({ev['channel']})")
            elif name in ("acknowledged", "resolved", "cancelled", "held", "grace"):
                who = f" by {ev['who']} ({ev['channel']})" if ev["who"] else ""
                steps.append(f"{dt} {name}{who}")
        final = str(entry["state"]) + (f": {entry['outcome']}" if entry["outcome"] else "")
        table.add_row(
            time.strftime("%H:%M:%S", time.gmtime(entry["received"])),
            alert.elder,
            f"{alert.kind} ({alert.severity})",
            "; ".join(steps) or "waiting",
            final,
        )
    if table.row_count:
        console.print(table)
    esc = result.escalation
    console.print(
        f"escalation: {len(result.ladder)} alerts handled ({info} info alerts batched for the "
        f"device desk or folded into an alert already open); the call centre opened "
        f"{esc.get('incidents', 0)} incidents, one per alarm and recipient, and its operator "
        f"acknowledged {esc.get('operator_acks', 0)}; {esc.get('emails', 0)} emails and "
        f"{esc.get('webhooks', 0)} SMS/push webhooks to families; "
        f"{esc.get('heartbeats', 0)} heartbeats"
    )

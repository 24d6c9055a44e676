"""Erasure on request (GDPR art. 17, PIPL art. 47): ``homecare elder forget ELDER``.

Everything stored about one elder is removed, and what was removed is reported:

* **InfluxDB** — every series tagged with the elder (readings, alerts and alert events,
  security events of their devices, hourly and daily rollups) in every retention policy:
  ``DROP SERIES WHERE "elder" = …`` acts on all of a database's policies and shards.
  Dead letters carry no elder tag, and another device's security event is tagged with
  that device's elder, but their text (topic, payload, detail) may name this elder:
  those points are found by a whole-word match and deleted.
* **The broker** (NATS) — the elder's messages in its streams: readings in TELEMETRY
  (``telemetry.<partition>.<site>.<elder>.…``), alerts and apps' acknowledgements in
  ALERTS, publishes still waiting in ``$MQTT_msgs``; and their retained MQTT messages
  (alerts, availability), which the server keeps in ``$MQTT_rmsgs``. Each message is
  deleted with an erasing delete, which overwrites it on disk (measured on 2.15.1: a
  purge, and the clearing of a retained message, leave the payload in the stream's block
  file). A retained message is then also cleared the MQTT way, by an empty retained
  publish: deleted from ``$MQTT_rmsgs`` alone, the server hands it to new subscribers
  from memory until it restarts.
  What an erased record keeps is its subject (the pseudonymous elder and device ids),
  until the stream drops the block it lies in; the MQTT sessions of apps subscribed to
  the elder's topics (``$MQTT_sess``) name them too, until those apps unsubscribe.
* **The registry** — the elder's entry and the contacts no other elder has.
* **Escalation's store** — the elder's alerts, their deliveries (which name the elder
  and their address) and events.
* **The visit register** (proactive care, ``care.db``) — the elder's visits and calls
  with their notes, their stored signs of decline, and the notices sent about them.
* **Baselines** — the elder's learned limits; the history cache that holds their
  per-minute activity is deleted (the next ``baselines fit`` queries afresh).

Revoke the elder's devices first (``homecare devices revoke``), or new readings will
arrive after the erasure (as would batches still in an ingest spool while InfluxDB is
away). The elder id must be a contract id, so it is safe in InfluxQL and in NATS
subjects (no ``.``, ``*`` or ``>``):

>>> _where("e1", None)
'"elder" = \\'e1\\''
>>> _where("e1; DROP DATABASE homecare", None)
Traceback (most recent call last):
...
ValueError: elder id 'e1; DROP DATABASE homecare' is not ^[A-Za-z0-9_-]{1,64}$
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import nats.errors
import nats.js.errors
import numpy as np
import paho.mqtt.client as mqtt
import typer
from nats.aio.client import Client as Nats
from paho.mqtt.enums import CallbackAPIVersion

from homecare import query as q
from homecare.contract import ID_PATTERN
from homecare.errors import BrokerError, HomecareError, StorageError
from homecare.influx import InfluxClient, InfluxError
from homecare.jetstream import (
    ACK_SUBJECT_ROOT,
    ALERT_SUBJECT_ROOT,
    ALERTS_STREAM,
    MQTT_STREAM,
    SUBJECT_ROOT,
    TELEMETRY_STREAM,
    connect,
    source_status,
)
from homecare.schema import ELDER, SITE, DeadLetter, SecurityEvent
from homecare.settings import MqttSettings, Settings

log = logging.getLogger(__name__)

NAMED_IN_TEXT = {DeadLetter.name: DeadLetter.TEXT, SecurityEvent.name: SecurityEvent.TEXT}
"""Measurements whose string fields may name an elder other than (or without) their tags."""
RETAINED_STREAM = "$MQTT_rmsgs"
"""NATS Server's stream of retained MQTT messages, one subject per topic
(``$MQTT.rmsgs.`` + the topic, ``/`` as ``.``, a ``.`` inside a level as ``//``)."""
RETAINED_PREFIX = "$MQTT.rmsgs."
MQTT_PREFIX = "$MQTT.msgs."
DELETE_CHUNK = 200
SETTLE_S = 2.0
"""Time for ingest to store what it made of the retained messages being cleared."""
BROKER_TIMEOUT_S = 10.0
PURGE_TRIES = 3
ERASE_LIMIT = 2_000
"""Most messages of one subject erased one by one (overwritten on disk: about 75 a second,
measured on 2.15.1); past it they are purged, their payloads left in the stream's block
files until it drops the blocks, and the report says how many. TELEMETRY holds what its
consumers have not acknowledged yet: seconds of readings, unless a service was down."""
RETAINED_WAIT_S = 0.5
"""How long a check subscriber is given to receive a retained message still there."""
CLEAR_ROUNDS = 3
"""Clearings of the retained messages a new subscription is still given."""


@dataclass
class ForgetReport:
    """What was (or, before erasure, would be) removed for one elder."""

    elder: str
    site: str | None
    series: dict[str, int] = field(default_factory=dict)
    """``policy.measurement`` → series tagged with the elder."""
    points: dict[str, int] = field(default_factory=dict)
    """``policy.measurement`` → points: tagged ones, and dead letters naming the elder."""
    retained: int | None = None
    """Retained messages cleared on the broker; ``None`` when no broker is configured."""
    streams: dict[str, int] | None = None
    """Stream → the elder's messages deleted from it; ``None`` when no broker is configured."""
    not_overwritten: dict[str, int] = field(default_factory=dict)
    """Stream → those purged without being overwritten (past :data:`ERASE_LIMIT`)."""
    registry: bool | None = None
    """Removed from the registry; ``None`` when no registry is configured."""
    escalation: dict[str, int] | None = None
    """Rows removed from escalation's store (alerts, deliveries, events); ``None``: no store."""
    baselines: bool = False
    history_cache: bool = False
    care: dict[str, int] | None = None
    """Rows removed from the visit register (contacts, signs, notices); ``None``: none kept."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "elder": self.elder, "site": self.site, "series": self.series,
            "points": self.points, "retained_messages": self.retained,
            "streams": self.streams, "streams_not_overwritten": self.not_overwritten,
            "registry": self.registry, "escalation": self.escalation,
            "baselines": self.baselines,
            "history_cache": self.history_cache,
            "care": self.care,
        }  # fmt: skip


def _where(elder: str, site: str | None) -> str:
    for name, value in ((ELDER, elder), (SITE, site)):
        if value is not None and not re.fullmatch(ID_PATTERN, value):
            raise ValueError(f"{name} id {value!r} is not {ID_PATTERN}")
    return q.equal(ELDER, elder) + (f" AND {q.equal(SITE, site)}" if site else "")


def _naming(elder: str, site: str | None, fields: tuple[str, ...]) -> str:
    """A WHERE clause matching points whose text fields name the elder (a whole id)."""
    who = f"{site}\\/{elder}" if site else elder  # with a site: a topic of that site
    word = f"(^|[^A-Za-z0-9_-]){who}([^A-Za-z0-9_-]|$)"
    # Points tagged with the elder are counted (and dropped) as the elder's series.
    tagged = q.not_equal(ELDER, elder) + (f" OR {q.not_equal(SITE, site)}" if site else "")
    return "(" + " OR ".join(q.matches(f, word) for f in fields) + f") AND ({tagged})"


def _policies(db: InfluxClient) -> list[str]:
    return [row["name"] for row in db.rows("SHOW RETENTION POLICIES", epoch=None)]


def _measurement(series_key: str) -> str:
    return re.split(r"(?<!\\),", series_key, maxsplit=1)[0]


def survey(db: InfluxClient, elder: str, site: str | None = None) -> ForgetReport:
    """Count the elder's series and points in every retention policy, changing nothing."""
    report = ForgetReport(elder, site)
    where = _where(elder, site)
    for rp in _policies(db):
        for s in db.query(q.show_series(rp, where), epoch=None):
            for (key,) in s["values"]:
                name = f"{rp}.{_measurement(key)}"
                report.series[name] = report.series.get(name, 0) + 1
        counted = q.Select(("count(*)",), q.every_measurement(rp)).where(where)
        for s in db.query(str(counted)):
            points = max((n or 0 for n in s["values"][0][1:]), default=0)
            if points:
                report.points[f"{rp}.{s['name']}"] = points
        for measurement, fields in NAMED_IN_TEXT.items():
            rows = _text_points(db, rp, measurement, elder, site, fields)
            if rows:
                name = f"{rp}.{measurement}"
                report.points[name] = report.points.get(name, 0) + len(rows)
    return report


def _text_points(
    db: InfluxClient, rp: str, measurement: str, elder: str, site: str | None,
    fields: tuple[str, ...],
) -> list[dict[str, Any]]:  # fmt: skip
    """The points of an untagged measurement whose text names the elder, with their tags."""
    try:
        found = q.select(measurement, q.field(fields[0]), policy=rp)
        return db.rows(str(found.where(_naming(elder, site, fields)).group_by("*")), epoch="ns")
    except InfluxError as exc:  # the measurement lacks one of the fields in this policy
        log.debug("no %s.%s points to match: %s", rp, measurement, exc)
        return []


def _erase_influx(db: InfluxClient, elder: str, site: str | None) -> None:
    db.query(f"DROP SERIES WHERE {_where(elder, site)}")
    # Untagged points naming the elder: DELETE by series and exact time (it acts on
    # every policy; dead letters of one series have distinct timestamps).
    statements: list[str] = []
    for rp in _policies(db):
        for measurement, fields in NAMED_IN_TEXT.items():
            for row in _text_points(db, rp, measurement, elder, site, fields):
                tags = [
                    q.equal(k, v)
                    for k, v in row.items()
                    if k not in ("time", fields[0]) and isinstance(v, str)
                ]
                statements.append(q.delete(measurement, *tags, f"time = {row['time']}"))
    for i in range(0, len(statements), DELETE_CHUNK):
        db.query("; ".join(statements[i : i + DELETE_CHUNK]))


def stream_filters(elder: str, site: str | None) -> dict[str, list[str]]:
    """The subjects of the elder's messages in each of the broker's streams.

    ``$MQTT_msgs`` first: what waits there to be sourced cannot reach TELEMETRY or ALERTS
    after they are purged.

    >>> for stream, subjects in stream_filters("e1", None).items():
    ...     print(stream, subjects)
    $MQTT_msgs ['$MQTT.msgs.homecare.v1.*.e1.>']
    TELEMETRY ['telemetry.*.*.e1.>']
    ALERTS ['alerts.raised.*.e1.>', 'alerts.ack.*.e1.>']
    >>> stream_filters("e1", "north")["TELEMETRY"]
    ['telemetry.*.north.e1.>']
    """
    where = f"{site or '*'}.{elder}.>"
    return {
        MQTT_STREAM: [f"{MQTT_PREFIX}homecare.v1.{where}"],
        TELEMETRY_STREAM: [f"{SUBJECT_ROOT}.*.{where}"],
        ALERTS_STREAM: [f"{ALERT_SUBJECT_ROOT}.{where}", f"{ACK_SUBJECT_ROOT}.{where}"],
    }


def retained_topic(subject: str) -> str:
    """The MQTT topic of a ``$MQTT_rmsgs`` subject.

    >>> retained_topic("$MQTT.rmsgs.homecare.v1.north.e1.alert.e1-fall-1//5")
    'homecare/v1/north/e1/alert/e1-fall-1.5'
    """
    levels = subject.removeprefix(RETAINED_PREFIX).split(".")
    return "/".join(level.replace("//", ".") for level in levels)


async def _subjects(nc: Nats, stream: str, subject: str) -> dict[str, int]:
    """Messages per subject of ``stream`` matching ``subject`` ({} without the stream)."""
    try:
        info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
    except nats.js.errors.NotFoundError:
        return {}
    return dict(info.state.subjects or {})


async def _api(nc: Nats, verb: str, stream: str, request: dict[str, Any]) -> dict[str, Any]:
    """One JetStream API request; its answer (``error`` in it when refused)."""
    reply = await nc.request(
        f"$JS.API.STREAM.{verb}.{stream}", json.dumps(request).encode(), timeout=BROKER_TIMEOUT_S
    )
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def _erase(nc: Nats, stream: str, subject: str) -> int:
    """Delete ``stream``'s messages on ``subject`` one by one, each overwritten on disk.

    A purge only marks messages deleted: measured on 2.15.1, their payloads stay in the
    stream's block files until the whole block goes (interest retention: once every
    consumer has acknowledged all of it; ALERTS: at its age limit, a week). An erasing
    delete overwrites the message where it lies."""
    erased, seq = 0, 1
    while True:
        found = await _api(nc, "MSG.GET", stream, {"seq": seq, "next_by_subj": subject})
        if found.get("error"):  # 10037: no message left on the subject; 10059: no stream
            if found["error"].get("err_code") in (10037, 10059):
                return erased
            raise BrokerError(f"reading {subject} in {stream} refused: {found['error']}")
        seq = int(found["message"]["seq"])
        done = await _api(nc, "MSG.DELETE", stream, {"seq": seq, "no_erase": False})
        if done.get("error") and done["error"].get("err_code") != 10057:  # 10057: gone already
            raise BrokerError(f"erasing {stream} #{seq} refused: {done['error']}")
        erased += 1 if done.get("success") else 0
        seq += 1


async def _purge(nc: Nats, stream: str, subject: str) -> int:
    """Purge ``stream``'s messages on ``subject``; how many there were."""
    reply = await nc.request(
        f"$JS.API.STREAM.PURGE.{stream}", json.dumps({"filter": subject}).encode(),
        timeout=BROKER_TIMEOUT_S,
    )  # fmt: skip
    answer = json.loads(reply.data)
    if answer.get("error"):
        if answer["error"].get("err_code") == 10059:  # stream not found: nothing to purge
            return 0
        raise BrokerError(f"purging {subject} from {stream} refused: {answer['error']}")
    return int(answer.get("purged", 0))


async def _sourced(nc: Nats) -> None:
    """Wait (a while) until TELEMETRY has copied everything ``$MQTT_msgs`` holds."""
    deadline = time.monotonic() + BROKER_TIMEOUT_S
    while time.monotonic() < deadline:
        status = await source_status(nc.jetstream())
        if not status.lag:
            return
        await asyncio.sleep(0.05)


def _clear_retained(
    settings: MqttSettings, elder: str, site: str | None, topics: list[str]
) -> None:
    """An empty retained publish (MQTT 3.1.1, QoS 1) on each topic: the server drops its
    retained message there, from its stream and from memory. Then a subscription to the
    elder's topics must be given no retained message."""
    if not settings.url:
        raise BrokerError(f"{elder} has {len(topics)} retained messages: set HOMECARE_MQTT__URL "
                          "(the broker's MQTT listener) to clear them")  # fmt: skip
    client = mqtt.Client(
        # Not named after the elder: the server keeps MQTT session records.
        CallbackAPIVersion.VERSION2, client_id=f"homecare-forget-{secrets.token_hex(6)}",
        protocol=mqtt.MQTTv311, clean_session=True,
    )  # fmt: skip
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)
    accepted, subscribed = threading.Event(), threading.Event()
    refused: list[str] = []
    left: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            refused.append(str(rc))
        accepted.set()

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        refused.extend(str(rc) for rc in codes if rc.is_failure)
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            left.append(msg.topic)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(settings.host, settings.port, settings.keepalive_s)
    except OSError as exc:
        raise BrokerError(f"{settings.url} unreachable: {exc}") from exc
    client.loop_start()
    try:
        if not accepted.wait(BROKER_TIMEOUT_S) or refused:
            raise BrokerError(f"{settings.url} refused the connection: {refused or 'no answer'}")
        pending = topics
        for _ in range(CLEAR_ROUNDS):
            left.clear()
            _publish_clears(client, settings, elder, pending)
            pending = _retained_left(client, settings, elder, site, subscribed, refused, left)
            if not pending:
                break
            # Seen once in CI, on a loaded machine: a new subscription was given a message
            # cleared (and acknowledged) before it. Likely the server's own consumer of
            # $MQTT_rmsgs, which keeps its memory of retained messages, brought it back
            # after the clearing; cleared again, it stays cleared.
            log.warning("retained messages of %s back after clearing them; clearing again: %s",
                        elder, pending)  # fmt: skip
    finally:
        client.disconnect()
        client.loop_stop()
    if pending:
        raise BrokerError(f"retained messages of {elder} still on the broker after clearing "
                          f"them (may this account publish there?): {pending}")  # fmt: skip


def _publish_clears(
    client: mqtt.Client, settings: MqttSettings, elder: str, topics: list[str]
) -> None:
    """One empty retained publish on each topic, each acknowledged."""
    infos = [client.publish(t, b"", qos=1, retain=True) for t in topics]
    for info in infos:
        try:
            info.wait_for_publish(BROKER_TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:  # paho: not sent (link lost, queue full)
            raise BrokerError(f"{settings.url}: clearing {elder}'s retained messages "
                              f"failed: {exc}") from exc  # fmt: skip


def _retained_left(
    client: mqtt.Client,
    settings: MqttSettings,
    elder: str,
    site: str | None,
    subscribed: threading.Event,
    refused: list[str],
    left: list[str],
) -> list[str]:
    """The topics of the retained messages a new subscription to the elder's topics is
    given (collected in ``left`` by the client's callback)."""
    pattern = f"homecare/v1/{site or '+'}/{elder}/#"
    subscribed.clear()
    client.subscribe(pattern, qos=1)
    if not subscribed.wait(BROKER_TIMEOUT_S) or refused:
        raise BrokerError(f"{settings.url} refused a subscription to {elder}'s topics: "
                          f"{refused or 'no answer'}")  # fmt: skip
    time.sleep(RETAINED_WAIT_S)
    client.unsubscribe(pattern)  # the next round's subscription is a new one
    return sorted(set(left))


async def _forget_broker(
    settings: Settings, elder: str, site: str | None
) -> tuple[int, dict[str, int], dict[str, int]]:
    """Clear the elder's retained messages, then delete their messages from every stream;
    (retained messages cleared, stream → messages deleted, stream → those of them purged
    without being overwritten)."""
    nc = await connect(settings.nats.url, name="homecare-forget",
                       wait_s=BROKER_TIMEOUT_S, settings=settings.nats)  # fmt: skip
    try:
        retained_subject = f"{RETAINED_PREFIX}homecare.v1.{site or '*'}.{elder}.>"
        retained = await _subjects(nc, RETAINED_STREAM, retained_subject)
        if retained:
            topics = sorted(retained_topic(s) for s in retained)
            # Overwritten on disk first (clearing alone leaves the payload in its block),
            # then cleared the MQTT way, which drops them from the server's memory.
            await _erase(nc, RETAINED_STREAM, retained_subject)
            await asyncio.to_thread(_clear_retained, settings.mqtt, elder, site, topics)
            # The clearing publishes are readings too (an empty availability): let the
            # source copy them into TELEMETRY, where the purge below takes them.
            await _sourced(nc)
        purged: dict[str, int] = {}
        unerased: dict[str, int] = {}
        for stream, subjects in stream_filters(elder, site).items():
            purged.setdefault(stream, 0)
            for subject in subjects:
                count = sum((await _subjects(nc, stream, subject)).values())
                if count <= ERASE_LIMIT:
                    purged[stream] += await _erase(nc, stream, subject)
                else:
                    log.warning("%d messages of %s in %s: purged, not overwritten (over %d)",
                                count, elder, stream, ERASE_LIMIT)  # fmt: skip
                    unerased[stream] = unerased.get(stream, 0) + count
                for _ in range(PURGE_TRIES):  # and what arrived meanwhile
                    purged[stream] += await _purge(nc, stream, subject)
                    if not await _subjects(nc, stream, subject):
                        break
                else:
                    raise BrokerError(f"messages of {elder} keep arriving in {stream} "
                                      "(revoke the elder's devices first)")  # fmt: skip
        return len(retained), purged, unerased
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(f"NATS {settings.nats.url}: erasing {elder} failed: {exc}") from exc
    finally:
        await nc.close()


def _forget_escalation(settings: Settings, elder: str, site: str | None) -> dict[str, int] | None:
    """Delete the elder's alerts from escalation's store, with their deliveries (which
    carry the elder's name and address) and events, in one transaction (in cluster mode
    the active escalate does it, in the state it holds and in the cluster's buckets)."""
    from escalation.store import Store, store_path

    if settings.escalate.store == "cluster":
        from escalation.cluster import forget_in_cluster

        return forget_in_cluster(settings, elder, site)

    path = store_path(settings.state_dir)
    if not path.exists():
        return None
    store = Store(path)
    try:
        return store.erase_elder(elder, site)
    finally:
        store.close()


def _forget_care(settings: Settings, elder: str, site: str | None) -> dict[str, int] | None:
    """Delete the elder's visits, calls, notes, signs and notices from the visit register."""
    from care.register import Register, register_path

    path = register_path(settings.state_dir)
    if not path.exists():
        return None
    register = Register(path)
    try:
        return register.erase_elder(elder, site)
    finally:
        register.close()


def _forget_baselines(settings: Settings, elder: str) -> tuple[bool, bool]:
    """Drop the elder's row from the baselines file and delete a history cache naming them."""
    from detectors.baselines import baselines_path, read_baselines, save_baselines

    path = baselines_path(settings)
    removed = False
    if path.exists():
        b = read_baselines(path)
        keep = np.array([e != elder for e in b.elders], dtype=bool)
        if not keep.all():
            rows = {
                name: getattr(b, name)[keep]
                for name in b.__dataclass_fields__
                if isinstance(getattr(b, name), np.ndarray)
            }
            elders = tuple(e for e, k in zip(b.elders, keep, strict=True) if k)
            save_baselines(path, replace(b, elders=elders, **rows))
            removed = True
    cache = path.with_name(path.stem + ".history.npz")
    cached = False
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            cached = elder in set(z["elders"].tolist())
        if cached:
            cache.unlink()
    return removed, cached


def forget(settings: Settings, elder: str, site: str | None = None) -> ForgetReport:
    """Erase everything stored about ``elder`` (of ``site``, or of any site); report it."""
    _where(elder, site)  # refuse a bad id before touching anything
    with InfluxClient(settings.influx) as db:
        try:
            db.query("SHOW USERS")  # only an admin may, once authentication is on
        except InfluxError as exc:
            raise InfluxError(f"erasure needs an InfluxDB admin account: {exc}") from exc
        # Escalation first: an alert of theirs still climbing the ladder would otherwise
        # republish itself retained, and write alert rows again, between the steps below.
        registry = None
        if settings.registry is not None:
            from escalation.registry import remove_elder

            registry = settings.registry.exists() and remove_elder(settings.registry, elder)
        escalation = _forget_escalation(settings, elder, site)
        retained, streams = None, None
        unerased: dict[str, int] = {}
        if settings.nats.url:
            retained, streams, unerased = asyncio.run(_forget_broker(settings, elder, site))
            # Subscribers may have had a clearing (an empty message) before the purge:
            # ingest dead-letters an empty availability, naming the device's topic. Let
            # it land, then erase.
            time.sleep(SETTLE_S if retained else 0)
        report = survey(db, elder, site)
        for attempt in range(3):
            # A continuous query that read raw data just before may write a rollup after.
            _erase_influx(db, elder, site)
            left = survey(db, elder, site)
            if not (left.series or left.points):
                break
            time.sleep(attempt + 1)
    if left.series or left.points:
        raise StorageError(f"data of {elder} still in InfluxDB after erasure: {left.as_dict()}")
    report.retained = retained
    report.streams = streams
    report.not_overwritten = unerased
    report.registry = registry
    report.escalation = escalation
    report.baselines, report.history_cache = _forget_baselines(settings, elder)
    report.care = _forget_care(settings, elder, site)
    log.info(
        "forgot elder %s: %d series, %d points, %s retained messages, %s stream messages",
        elder, sum(report.series.values()), sum(report.points.values()), retained,
        sum(streams.values()) if streams is not None else None,
    )  # fmt: skip
    return report


elder_app = typer.Typer(no_args_is_help=True, help="Privacy operations on one elder's data.")


@elder_app.command("forget")
def forget_command(
    elder: Annotated[str, typer.Argument(help="The elder's pseudonymous id.")],
    site: Annotated[str | None, typer.Option(help="Only the elder of this site.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase an elder's telemetry, alerts, broker messages (streams and retained), registry
    entry, baselines and visit records."""
    import json

    from homecare.runtime import load_settings

    settings = load_settings()
    if not settings.influx.url:
        raise typer.BadParameter("set HOMECARE_INFLUX__URL")
    try:
        _where(elder, site)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        if not yes:
            with InfluxClient(settings.influx) as db:
                found = survey(db, elder, site)
            typer.echo(json.dumps({"series": found.series, "points": found.points}, indent=2))
    except (InfluxError, OSError) as exc:
        typer.echo(f"elder forget {elder} failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not yes:
        typer.confirm(f"Erase everything about {elder} for good?", abort=True)
    try:
        report = forget(settings, elder, site)
    except (HomecareError, OSError) as exc:
        # E.g. a write-only InfluxDB account: dropping series needs the admin's.
        typer.echo(f"elder forget {elder} failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(report.as_dict(), indent=2))

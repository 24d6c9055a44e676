"""Erasure on request (GDPR art. 17, PIPL art. 47): ``homecare elder forget ELDER``.

Everything stored about one elder is removed, and what was removed is reported:

* **InfluxDB** — every series tagged with the elder (readings, alerts and alert events,
  security events of their devices, hourly and daily rollups) in every retention policy:
  ``DROP SERIES WHERE "elder" = …`` acts on all of a database's policies and shards.
  Dead letters carry no elder tag, and another device's security event is tagged with
  that device's elder, but their text (topic, payload, detail) may name this elder:
  those points are found by a whole-word match and deleted.
* **The broker** — retained messages under the elder's topics (alerts, availability).
* **The registry** — the elder's entry and the contacts no other elder has.
* **Escalation's store** — the elder's alerts, their deliveries (which name the elder
  and their address) and events.
* **Baselines** — the elder's learned limits; the history cache that holds their
  per-minute activity is deleted (the next ``baselines fit`` queries afresh).

Revoke the elder's devices first (``homecare devices revoke``), or new readings will
arrive after the erasure (as would batches still in an ingest spool while InfluxDB is
away). The elder id must be a contract id, so it is safe in InfluxQL:

>>> _where("e1", None)
'"elder" = \\'e1\\''
>>> _where("e1; DROP DATABASE homecare", None)
Traceback (most recent call last):
...
ValueError: elder id 'e1; DROP DATABASE homecare' is not ^[A-Za-z0-9_-]{1,64}$
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import numpy as np
import paho.mqtt.client as mqtt
import typer
from paho.mqtt.subscribeoptions import SubscribeOptions

from homecare import query as q
from homecare.contract import ID_PATTERN, TOPIC_ROOT
from homecare.errors import BrokerError, HomecareError, StorageError
from homecare.influx import InfluxClient, InfluxError
from homecare.receiver import mqtt_client
from homecare.schema import ELDER, SITE, DeadLetter, SecurityEvent
from homecare.settings import Settings

log = logging.getLogger(__name__)

NAMED_IN_TEXT = {DeadLetter.name: DeadLetter.TEXT, SecurityEvent.name: SecurityEvent.TEXT}
"""Measurements whose string fields may name an elder other than (or without) their tags."""
RETAINED_WAIT_S = 1.0
"""How long the broker is given to send the retained messages under the elder's topics."""
DELETE_CHUNK = 200
SETTLE_S = 2.0
"""Time for ingest to store what it made of the retained messages being cleared."""


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
    registry: bool | None = None
    """Removed from the registry; ``None`` when no registry is configured."""
    escalation: dict[str, int] | None = None
    """Rows removed from escalation's store (alerts, deliveries, events); ``None``: no store."""
    baselines: bool = False
    history_cache: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "elder": self.elder, "site": self.site, "series": self.series,
            "points": self.points, "retained_messages": self.retained,
            "registry": self.registry, "escalation": self.escalation,
            "baselines": self.baselines,
            "history_cache": self.history_cache,
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


def clear_retained(settings: Settings, elder: str, site: str | None) -> int:
    """Clear every retained message under the elder's topics; return how many there were.

    The broker account needs read and write rights on ``homecare/v1/<site>/<elder>/#``.
    """
    client = mqtt_client(settings.mqtt, f"homecare-forget-{elder}"[:64])
    found: dict[str, bool] = {}
    refused: list[str] = []
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            found[msg.topic] = True

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        refused.extend(str(rc) for rc in codes if rc.is_failure)
        subscribed.set()

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            refused.append(str(rc))

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_connect = lambda c, *_: c.subscribe(
        f"{TOPIC_ROOT}/{site or '+'}/{elder}/#", options=SubscribeOptions(qos=1)
    )
    client.connect(settings.mqtt.host, settings.mqtt.port, settings.mqtt.keepalive_s)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise BrokerError(f"{settings.mqtt.url} did not confirm the subscription to {elder}'s "
                              "topics (refused login?)")
        time.sleep(RETAINED_WAIT_S)
        infos = [client.publish(t, b"", qos=1, retain=True) for t in list(found)]
        for info in infos:
            try:
                info.wait_for_publish(10)
            except (RuntimeError, ValueError) as exc:  # paho: not sent (link lost, queue full)
                raise BrokerError(f"{settings.mqtt.url}: clearing {elder}'s retained messages "
                                  f"failed: {exc}") from exc
    finally:
        client.disconnect()
        client.loop_stop()
    if refused:
        raise BrokerError(f"{settings.mqtt.url} refused to clear {elder}'s retained messages: "
                          f"{refused}")
    return len(found)


def _forget_escalation(settings: Settings, elder: str, site: str | None) -> dict[str, int] | None:
    """Delete the elder's alerts from escalation's store, with their deliveries (which
    carry the elder's name and address) and events, in one transaction."""
    from escalation.store import Store, store_path

    path = store_path(settings.state_dir)
    if not path.exists():
        return None
    store = Store(path)
    try:
        return store.erase_elder(elder, site)
    finally:
        store.close()


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
        retained = None
        if settings.mqtt.url:
            retained = clear_retained(settings, elder, site)
            # Subscribers get each clearing as an empty message: ingest dead-letters an
            # empty availability, naming the device's topic. Let it land, then erase.
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
    report.registry = registry
    report.escalation = escalation
    report.baselines, report.history_cache = _forget_baselines(settings, elder)
    log.info(
        "forgot elder %s: %d series, %d points, %s retained messages",
        elder, sum(report.series.values()), sum(report.points.values()), retained,
    )  # fmt: skip
    return report


elder_app = typer.Typer(no_args_is_help=True, help="Privacy operations on one elder's data.")


@elder_app.command("forget")
def forget_command(
    elder: Annotated[str, typer.Argument(help="The elder's pseudonymous id.")],
    site: Annotated[str | None, typer.Option(help="Only the elder of this site.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase an elder's telemetry, alerts, retained messages, registry entry and baselines."""
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

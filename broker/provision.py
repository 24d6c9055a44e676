"""Provisioning of the NATS broker: the MQTT streams, TELEMETRY and its durable consumers.

Order matters, as measured on NATS 2.15.1 (README, issue 14): ``$MQTT_msgs`` keeps a
message only while something holds interest in it, and the ``$MQTT_*`` streams exist only
once an MQTT client has connected. A stream that starts sourcing ``$MQTT_msgs`` under
traffic misses what is published while its source is being set up. So, before any device
connects, :func:`provision`

1. has the server create its MQTT streams (one MQTT client connects briefly, if they
   do not exist yet);
2. creates TELEMETRY, sourcing ``$MQTT_msgs`` through the transform that partitions by
   elder (:func:`telemetry_transform`), and waits until the source is active;
3. creates (or updates the editable settings of) the durable pull consumers of ingest and
   detect's, one per partition (``detect-p<N>``, filtered to ``telemetry.<N>.>``) in the
   priority group ``detect`` with the ``pinned_client`` policy (:func:`detect_consumer_config`):
   one worker at a time holds a partition, another takes it within the
   ``priority_timeout`` once it stops pulling;
4. creates ALERTS, where detect stores the alerts it raises and which sources apps'
   MQTT acknowledgements, and escalation's durable consumer of it;
5. creates the object store where detect saves each partition's state, and the
   key-value bucket where its workers say they are alive (both :data:`DETECT_STATE_BUCKET`).

Run again, it changes nothing that exists and refuses (:class:`ProvisionError`) where
what exists differs in what cannot change under traffic (the partitions, the source):
it never deletes nor recreates a stream.

TELEMETRY keeps a message until every consumer has acknowledged it (interest retention,
bounded by ``max_age_s``): the consumers exist from the start, so nothing is dropped for
want of interest.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import nats.js.errors
import paho.mqtt.client as mqtt
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)
from paho.mqtt.enums import CallbackAPIVersion

from homecare.errors import ConfigError
from homecare.jetstream import (
    ACK_SUBJECT_ROOT,
    ALERT_SUBJECT_ROOT,
    ALERTS_STREAM,
    DETECT_CONSUMER,
    DETECT_GROUP,
    ESCALATE_CONSUMER,
    INGEST_CONSUMER,
    MQTT_STREAM,
    SUBJECT_ROOT,
    TELEMETRY_STREAM,
    SourceStatus,
    connect,
    detect_partition_consumer,
    ingest_consumer,
    partition_filter,
    site_filters,
    source_status,
)
from homecare.settings import REPLICAS, DistrictSettings, NatsSettings

__all__ = [
    "DEFAULT_PARTITIONS",
    "DETECT_MAX_ACK_PENDING",
    "DETECT_PRIORITY_TIMEOUT_S",
    "DETECT_STATE_BUCKET",
    "ProvisionError",
    "Provisioned",
    "ack_transform",
    "detect_consumer_config",
    "district_consumers",
    "provision",
    "provision_districts",
    "telemetry_transform",
]

DEFAULT_PARTITIONS = NatsSettings().partitions
"""``HOMECARE_NATS__PARTITIONS``'s default, which detect reads: fixed at provisioning (a
later change needs a new stream, not an edit under traffic)."""


DETECT_STATE_BUCKET = "detect_state"
"""The object store of detect's state snapshots (``detectors.resume.STATE_BUCKET``: the
same name; the broker and the detectors do not import each other)."""
DETECT_MAX_ACK_PENDING = 100_000
"""Detect acknowledges only what a saved snapshot covers (every ``detect.save_every_s``,
5 s): a worker of 5,000 elders (~6,000 messages/s) holds ~30,000 unacknowledged between
two saves, more while it catches up; each costs detect a reply subject, not the message.
Per partition: a bound no partition of a city reaches."""
DETECT_PRIORITY_TIMEOUT_S = 3.0
"""A worker that has not pulled on a partition for this long loses it to another worker
that pulls (the takeover after a kill -9 is this plus the first message's way). Workers
keep a pull of at most 1 s out on every partition they hold."""
ESCALATE_ACK_WAIT_S = 5.0
"""Escalation's ``ack_wait`` on ALERTS (at most; less if ``ack_wait_s`` is less). Alerts
the consumer hands out while escalate's NATS node dies are lost in flight and come again
only after it: at 30 s, ``homecare bench city`` saw a node's kill -9 delay alarms to the
call centre by 30 s. Escalate acknowledges each batch once it is committed (milliseconds);
one taken again while its commit waits (a Raft election) is recognised by its id."""
DETECT_WORKERS_TTL_S = 60.0
"""How long a dead worker's liveness key stays in the bucket (live ones renew it each second)."""


class ProvisionError(ConfigError):
    """The broker's streams or consumers cannot be made as asked; the message says which."""


def telemetry_transform(partitions: int) -> SubjectTransform:
    """``$MQTT.msgs.<device topic>`` → ``telemetry.<partition>.<device topic>``, the
    partition a hash of the elder token (the 2nd wildcard), so all of an elder's streams
    share one. Only device topics (``homecare/v1/site/elder/kind/device/stream``, as
    ingest's subscription had them): alerts and commands stay out.

    >>> telemetry_transform(8).dest
    'telemetry.{{partition(8,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}.{{wildcard(5)}}'
    """
    if not 1 <= partitions <= 1024:
        raise ProvisionError(f"partitions must be 1 to 1024, not {partitions}")
    wildcards = ".".join(f"{{{{wildcard({i})}}}}" for i in range(1, 6))
    return SubjectTransform(
        src="$MQTT.msgs.homecare.v1.*.*.*.*.*",
        dest=f"{SUBJECT_ROOT}.{{{{partition({partitions},2)}}}}.{wildcards}",
    )


def ack_transform() -> SubjectTransform:
    """Apps acknowledge an alert over MQTT (``homecare/v1/<site>/<elder>/alert/<id>/ack``);
    ALERTS sources those as ``alerts.ack.<site>.<elder>.<id>``.

    >>> ack_transform().dest
    'alerts.ack.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}'
    """
    return SubjectTransform(
        src="$MQTT.msgs.homecare.v1.*.*.alert.*.ack",
        dest=f"{ACK_SUBJECT_ROOT}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}",
    )


ALERT_DUPLICATE_WINDOW_S = 86400.0
"""Detect stores each alert with its id as ``Nats-Msg-Id``; within this window a replayed
detection (after a restart) is not stored again."""


@dataclass(frozen=True, slots=True)
class Provisioned:
    """What :func:`provision` found and did."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    """Consumers deleted: detect's of before its workers (site shards)."""
    source: SourceStatus = field(default_factory=lambda: SourceStatus(False, "not checked"))


def _open_mqtt_streams(
    mqtt_url: str, username: str | None, password: str | None, ca_file: Path | None = None
) -> None:
    """Connect one MQTT client and leave: the server creates its ``$MQTT_*`` streams."""
    parts = urlsplit(mqtt_url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="homecare-provision", protocol=mqtt.MQTTv311,
        clean_session=True,
    )  # fmt: skip
    if username:
        client.username_pw_set(username, password)
    if parts.scheme == "mqtts":
        client.tls_set(ca_certs=str(ca_file) if ca_file else None)
    accepted = threading.Event()
    client.on_connect = lambda *_a: accepted.set()
    try:
        client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, 10)
    except OSError as exc:
        raise ProvisionError(f"MQTT listener {mqtt_url} unreachable: {exc}") from exc
    client.loop_start()
    try:
        if not accepted.wait(10):
            raise ProvisionError(f"MQTT listener {mqtt_url} did not accept a connection")
    finally:
        client.disconnect()
        client.loop_stop()


async def _exists(js: JetStreamContext, stream: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(stream)).config
    except nats.js.errors.NotFoundError:
        return None


async def _provision(
    nats_url: str, mqtt_url: str, *, partitions: int, ack_wait_s: float, max_ack_pending: int,
    max_age_s: float, replicas: int, consumers: tuple[str, ...],
    detect: bool, detect_max_ack_pending: int, detect_priority_timeout_s: float,
    mqtt_user: str | None, mqtt_password: str | None, timeout_s: float,
    settings: NatsSettings | None = None, mqtt_ca_file: Path | None = None,
) -> Provisioned:  # fmt: skip
    transform = telemetry_transform(partitions)
    nc = await connect(nats_url, name="homecare-provision", wait_s=timeout_s, settings=settings)
    done = Provisioned()
    try:
        js = nc.jetstream(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        await _jetstream_ready(js, deadline)
        if await _exists(js, MQTT_STREAM) is None:
            await asyncio.to_thread(
                _open_mqtt_streams, mqtt_url, mqtt_user, mqtt_password, mqtt_ca_file
            )
            while await _exists(js, MQTT_STREAM) is None:
                if time.monotonic() > deadline:
                    raise ProvisionError(f"{MQTT_STREAM} did not appear on {nats_url}")
                await asyncio.sleep(0.1)
            done.created.append(MQTT_STREAM)
        else:
            done.existing.append(MQTT_STREAM)
        mqtt_config = await _exists(js, MQTT_STREAM)
        if mqtt_config is not None and (mqtt_config.num_replicas or 1) < replicas:
            # The server makes its MQTT streams with replicas from its config (by default
            # the count of routes it lists: R2 in a 3-node cluster), not from this call.
            raise ProvisionError(
                f"{MQTT_STREAM} has {mqtt_config.num_replicas or 1} replicas, not {replicas}: "
                f"set mqtt {{ stream_replicas: {replicas}, consumer_replicas: {replicas} }} "
                "in every node's configuration before any device connects"
            )

        config = await _exists(js, TELEMETRY_STREAM)
        if config is None:
            await js.add_stream(StreamConfig(
                name=TELEMETRY_STREAM, subjects=[], retention=RetentionPolicy.INTEREST,
                storage=StorageType.FILE, num_replicas=replicas, max_age=max_age_s,
                description=f"device readings from {MQTT_STREAM}, {partitions} partitions by elder",
                sources=[StreamSource(name=MQTT_STREAM, subject_transforms=[transform])],
                allow_direct=True,  # detect's replay reads by batch direct get, no consumer
            ))  # fmt: skip
            done.created.append(TELEMETRY_STREAM)
        else:
            sources = [
                (s.name, [(t.src, t.dest) for t in s.subject_transforms or ()])
                for s in config.sources or ()
            ]
            if sources != [(MQTT_STREAM, [(transform.src, transform.dest)])]:
                raise ProvisionError(
                    f"stream {TELEMETRY_STREAM} exists with sources {sources}, not "
                    f"{MQTT_STREAM} → {transform.dest}: a stream is not recreated under "
                    "traffic (another partition count needs a new stream and a migration)"
                )
            if config.retention != RetentionPolicy.INTEREST:
                raise ProvisionError(
                    f"stream {TELEMETRY_STREAM} exists with {config.retention} retention"
                )
            if not config.allow_direct:  # provisioned before detect's replay read this way
                config.allow_direct = True
                await js.update_stream(config)
            done.existing.append(TELEMETRY_STREAM)

        # Consumers at once: an interest stream keeps only what some consumer wants.
        for name in consumers:
            await _consumer(js, TELEMETRY_STREAM, name, done, filters=None,
                            ack_wait_s=ack_wait_s, max_ack_pending=max_ack_pending,
                            replicas=replicas)  # fmt: skip
        if detect:
            await _retire_site_shards(js, done)
        for partition in range(partitions if detect else 0):
            await _pinned_consumer(nc, done, detect_consumer_config(
                partition, ack_wait_s=ack_wait_s, max_ack_pending=detect_max_ack_pending,
                priority_timeout_s=detect_priority_timeout_s, replicas=replicas,
            ))  # fmt: skip

        if await _exists(js, ALERTS_STREAM) is None:
            await js.add_stream(StreamConfig(
                name=ALERTS_STREAM, subjects=[f"{ALERT_SUBJECT_ROOT}.>"],
                retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                num_replicas=replicas, max_age=max_age_s,
                duplicate_window=ALERT_DUPLICATE_WINDOW_S,
                description="alerts detect raised, and apps' acknowledgements of them",
                sources=[StreamSource(name=MQTT_STREAM, subject_transforms=[ack_transform()])],
            ))  # fmt: skip
            done.created.append(ALERTS_STREAM)
        else:
            done.existing.append(ALERTS_STREAM)
        await _consumer(js, ALERTS_STREAM, ESCALATE_CONSUMER, done, filters=None,
                        ack_wait_s=min(ack_wait_s, ESCALATE_ACK_WAIT_S), max_ack_pending=1000,
                        replicas=replicas)  # fmt: skip

        try:
            await js.object_store(DETECT_STATE_BUCKET)
            done.existing.append(DETECT_STATE_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            await js.create_object_store(DETECT_STATE_BUCKET, config=ObjectStoreConfig(
                description="detect's state per partition, with the stream sequence it covers",
                storage=StorageType.FILE, replicas=replicas,
            ))  # fmt: skip
            done.created.append(DETECT_STATE_BUCKET)
        try:
            await js.key_value(DETECT_STATE_BUCKET)
            done.existing.append(f"KV {DETECT_STATE_BUCKET}")
        except nats.js.errors.BucketNotFoundError:
            await js.create_key_value(KeyValueConfig(
                bucket=DETECT_STATE_BUCKET, description="detect's live workers", history=1,
                ttl=DETECT_WORKERS_TTL_S, storage=StorageType.FILE, replicas=replicas,
            ))  # fmt: skip
            done.created.append(f"KV {DETECT_STATE_BUCKET}")

        status = await source_status(js)
        while not status.ok and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status = await source_status(js)
        return Provisioned(done.created, done.existing, done.retired, status)
    except nats.js.errors.APIError as exc:
        raise ProvisionError(f"NATS {nats_url} refused: {exc}") from exc
    finally:
        await nc.close()


async def _consumer(
    js: JetStreamContext, stream: str, name: str, done: Provisioned, *,
    filters: list[str] | None, ack_wait_s: float, max_ack_pending: int, replicas: int,
) -> None:  # fmt: skip
    """Create the durable pull consumer, or update what may change of it."""
    try:
        await js.consumer_info(stream, name)
        done.existing.append(name)
    except nats.js.errors.NotFoundError:
        done.created.append(name)
    await js.add_consumer(stream, ConsumerConfig(
        durable_name=name, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s, max_ack_pending=max_ack_pending, max_deliver=-1,
        filter_subjects=filters, num_replicas=replicas if replicas > 1 else None,
        description=f"{name}: durable pull consumer of {stream}",
    ))  # fmt: skip


async def _retire_site_shards(js: JetStreamContext, done: Provisioned) -> None:
    """Delete detect's consumers of before its workers (``detect``, or one per shard of
    sites, ``detect~<sites>``): nothing reads them any more, and on an interest stream
    a consumer nobody acknowledges keeps every reading until ``max_age``. Stop the old
    detect processes first."""
    names: list[str] = []
    while page := await js.consumers_info(TELEMETRY_STREAM, offset=len(names)):
        names += [info.name or "" for info in page]
    for name in names:
        if name == DETECT_CONSUMER or name.startswith(f"{DETECT_CONSUMER}~"):
            await js.delete_consumer(TELEMETRY_STREAM, name)
            done.retired.append(name)


def detect_consumer_config(
    partition: int, *, ack_wait_s: float, max_ack_pending: int, priority_timeout_s: float,
    replicas: int,
) -> dict[str, object]:  # fmt: skip
    """The JetStream API's configuration of a partition's detect consumer (nats-py 2.16's
    ``ConsumerConfig`` has no priority groups: the request is made raw).

    >>> c = detect_consumer_config(3, ack_wait_s=30, max_ack_pending=10, priority_timeout_s=3,
    ...                            replicas=1)
    >>> c["durable_name"], c["filter_subject"], c["priority_policy"], c["priority_timeout"]
    ('detect-p3', 'telemetry.3.>', 'pinned_client', 3000000000)
    """
    name = detect_partition_consumer(partition)
    config: dict[str, object] = {
        "durable_name": name, "ack_policy": "explicit", "deliver_policy": "all",
        "ack_wait": int(ack_wait_s * 1e9), "max_ack_pending": max_ack_pending,
        "max_deliver": -1, "filter_subject": partition_filter(partition),
        "priority_groups": [DETECT_GROUP], "priority_policy": "pinned_client",
        "priority_timeout": int(priority_timeout_s * 1e9),
        "description": f"{name}: detect's durable pull consumer of partition {partition}",
    }  # fmt: skip
    if replicas > 1:
        config["num_replicas"] = replicas
    return config


async def _pinned_consumer(nc: Nats, done: Provisioned, config: dict[str, object]) -> None:
    """Create (or update what may change of) a consumer with a priority group."""
    name = str(config["durable_name"])
    info = json.loads((await nc.request(f"$JS.API.CONSUMER.INFO.{TELEMETRY_STREAM}.{name}",
                                        b"", timeout=10)).data or b"{}")  # fmt: skip
    exists = "error" not in info
    if exists and info["config"].get("priority_policy") != config["priority_policy"]:
        raise ProvisionError(
            f"consumer {name} exists without the {config['priority_policy']} priority policy "
            "(a consumer cannot gain one): delete it while detect is stopped, then provision"
        )
    (done.existing if exists else done.created).append(name)
    request = {"stream_name": TELEMETRY_STREAM, "config": config,
               "action": "update" if exists else "create"}  # fmt: skip
    reply = json.loads((await nc.request(
        f"$JS.API.CONSUMER.CREATE.{TELEMETRY_STREAM}.{name}.{config['filter_subject']}",
        json.dumps(request).encode(), timeout=10,
    )).data or b"{}")  # fmt: skip
    if "error" in reply:
        raise ProvisionError(f"consumer {name}: {reply['error'].get('description', reply)}")


async def _jetstream_ready(js: JetStreamContext, deadline: float) -> None:
    """Wait (until ``deadline``) while the server says JetStream is not enabled for the
    account (503, 10039): seen on a cluster just started, before every node has resolved
    the account's JWT; any other refusal is raised at once."""
    while True:
        try:
            await js.account_info()
            return
        except nats.js.errors.ServiceUnavailableError as exc:
            if exc.err_code != 10039 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def provision(
    nats_url: str,
    *,
    mqtt_url: str,
    partitions: int = DEFAULT_PARTITIONS,
    ack_wait_s: float = 30.0,
    max_ack_pending: int = 20_000,
    max_age_s: float = 7 * 86400.0,
    replicas: int = 1,
    consumers: tuple[str, ...] = (INGEST_CONSUMER,),
    detect: bool = True,
    detect_max_ack_pending: int = DETECT_MAX_ACK_PENDING,
    detect_priority_timeout_s: float = DETECT_PRIORITY_TIMEOUT_S,
    mqtt_user: str | None = None,
    mqtt_password: str | None = None,
    timeout_s: float = 30.0,
    settings: NatsSettings | None = None,
    mqtt_ca_file: Path | None = None,
) -> Provisioned:
    """Create what is missing (idempotent); :class:`ProvisionError` where what exists
    cannot be made to match. ``ack_wait_s``: how long a taken, unacknowledged message
    waits before it is delivered again; ``max_ack_pending``: how many may be out
    unacknowledged per consumer (the memory bound of a service); ``detect``: make detect's
    consumers, one per partition, with ``detect_max_ack_pending`` their bound
    (:data:`DETECT_MAX_ACK_PENDING`) and ``detect_priority_timeout_s`` how long a worker
    keeps a partition once it stops pulling (:data:`DETECT_PRIORITY_TIMEOUT_S`);
    ``settings``: the provisioning user's credentials and the server's CA (NATS);
    ``mqtt_ca_file``: the CA of the MQTT listener's certificate."""
    if max_ack_pending < 1 or detect_max_ack_pending < 1 or ack_wait_s <= 0:
        raise ProvisionError("max_ack_pending must be ≥ 1 and ack_wait_s > 0")
    if detect_priority_timeout_s < 2.0:
        raise ProvisionError("detect_priority_timeout_s must be ≥ 2 s (workers pull every 1 s)")
    return asyncio.run(_provision(
        nats_url, mqtt_url, partitions=partitions, ack_wait_s=ack_wait_s,
        max_ack_pending=max_ack_pending, max_age_s=max_age_s, replicas=replicas,
        consumers=consumers, detect=detect, detect_max_ack_pending=detect_max_ack_pending,
        detect_priority_timeout_s=detect_priority_timeout_s, mqtt_user=mqtt_user,
        mqtt_password=mqtt_password, timeout_s=timeout_s, settings=settings,
        mqtt_ca_file=mqtt_ca_file,
    ))  # fmt: skip


# Storage by district -----------------------------------------------------------------------
# (apart from provision(), which other services' consumers change: this part is ingest's)


def district_consumers(
    districts: Mapping[str, DistrictSettings],
) -> list[tuple[str, list[str]]]:
    """``(consumer, filters)`` of every district's InfluxDB: ``ingest-<D>-primary`` and,
    where the district has a replica InfluxDB, ``ingest-<D>-replica``, each filtered to
    the district's sites. Two consumers of the same messages: each InfluxDB of a pair is
    fed on its own, so one that is away only grows its own consumer's backlog.

    >>> d = DistrictSettings(sites=["s2", "s1"], primary="http://a:8086",
    ...                      replica="http://b:8086")
    >>> for name, filters in district_consumers({"north": d}):
    ...     print(name, filters)
    ingest-north-primary ['telemetry.*.s1.>', 'telemetry.*.s2.>']
    ingest-north-replica ['telemetry.*.s1.>', 'telemetry.*.s2.>']
    """
    return [
        (ingest_consumer(name, replica), site_filters(district.sites))
        for name, district in districts.items()
        for replica in REPLICAS
        if replica == "primary" or district.replica
    ]


async def _provision_districts(
    nats_url: str, districts: Mapping[str, DistrictSettings], *, ack_wait_s: float,
    max_ack_pending: int, replicas: int, timeout_s: float, settings: NatsSettings | None,
) -> Provisioned:  # fmt: skip
    nc = await connect(nats_url, name="homecare-provision", wait_s=timeout_s, settings=settings)
    done = Provisioned()
    try:
        js = nc.jetstream(timeout=timeout_s)
        if await _exists(js, TELEMETRY_STREAM) is None:
            raise ProvisionError(f"stream {TELEMETRY_STREAM} not found: provision it first")
        for name, filters in district_consumers(districts):
            await _consumer(js, TELEMETRY_STREAM, name, done, filters=filters,
                            ack_wait_s=ack_wait_s, max_ack_pending=max_ack_pending,
                            replicas=replicas)  # fmt: skip
        return Provisioned(done.created, done.existing, source=await source_status(js))
    except nats.js.errors.APIError as exc:
        raise ProvisionError(f"NATS {nats_url} refused: {exc}") from exc
    finally:
        await nc.close()


def provision_districts(
    nats_url: str,
    districts: Mapping[str, DistrictSettings],
    *,
    ack_wait_s: float = 30.0,
    max_ack_pending: int = 20_000,
    replicas: int = 1,
    timeout_s: float = 30.0,
    settings: NatsSettings | None = None,
) -> Provisioned:
    """Create (or update: a district's sites may change) ingest's durable consumers of
    every district (:func:`district_consumers`) on TELEMETRY, which must exist. Run with
    :func:`provision`, before any device connects: TELEMETRY keeps a message only for the
    consumers that exist when it arrives (interest retention), so a consumer made later
    misses what the others have already acknowledged."""
    if max_ack_pending < 1 or ack_wait_s <= 0:
        raise ProvisionError("max_ack_pending must be ≥ 1 and ack_wait_s > 0")
    return asyncio.run(_provision_districts(
        nats_url, districts, ack_wait_s=ack_wait_s, max_ack_pending=max_ack_pending,
        replicas=replicas, timeout_s=timeout_s, settings=settings,
    ))  # fmt: skip

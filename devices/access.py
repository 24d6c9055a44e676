"""Who may connect to NATS Server, and what each device and service may publish or read.

NATS's decentralised accounts, not a file of users: one *operator* key signs two
accounts, ``SYS`` (the server's own events and the resolver's updates) and ``HOMECARE``
(devices, services, JetStream); the ``HOMECARE`` account key signs one user JWT per
device and per service. The server holds only the operator's and the accounts' JWTs
(the ``full`` resolver, :meth:`BrokerAccess.server_config`), never a list of users: a
city's 200,000 devices add nothing to its configuration, and provisioning a device
needs no reload at all. (An auth callout would put a service of ours on every
device's connection path; the JWTs need none.)

A device's credential is a *bearer* user JWT (the JWT alone proves the user; an MQTT
client sends it as its CONNECT password over TLS) allowed to publish only its own
streams (``homecare.v1.<site>.<elder>.<kind>.<device>.>``, what the MQTT listener
makes of ``homecare/v1/<site>/<elder>/<kind>/<device>/…``) and to subscribe only to its
command topic, over MQTT only. A service gets a credentials file (JWT and seed) with
:data:`SERVICE_RIGHTS`. Revoking a user writes its key into the account JWT's
``revocations`` and pushes the new account JWT to the running server through the
system account (``$SYS.REQ.CLAIMS.UPDATE``): no restart, no reload, and the server
drops the revoked user's connection at once (tests/test_security_broker.py).

Measured with NATS Server 2.15.1's MQTT listener (MQTT 3.1.1): anonymous and bad
credentials get CONNACK "not authorised"; a subscription outside the permissions gets
SUBACK failure (0x80); a *publish* outside them is dropped but still acknowledged
(PUBACK) on a connection that stays up: the device cannot learn it from the protocol.
The server logs it (``Publish Violation``, with the connection's id), which
:mod:`devices.refusals` turns into a security event of the device.

The folder holds the secrets (the operator's and accounts' seeds, mode 0600), the JWTs,
``devices.json`` (which device belongs to which site, elder and kind, and its user key:
no secrets), the service credentials and ``nats-auth.conf``, the file the server's
configuration includes.

>>> import tempfile
>>> access = BrokerAccess(Path(tempfile.mkdtemp()))
>>> grant, credentials = access.provision("w1", site="north", elder="e1", kind="wearable")
>>> credentials.username, grant.publish
('w1', 'homecare.v1.north.e1.wearable.w1.>')
>>> access.revoke("w1").device, access.revoked(credentials.password)
('w1', True)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devices import claims
from devices.claims import Key
from homecare import contract
from homecare.alerts import OPERATIONS_SITE
from homecare.contract import DeviceKind
from homecare.errors import ConfigError
from homecare.jetstream import ALERT_SUBJECT_ROOT, TELEMETRY_STREAM, detect_partition_consumer
from homecare.settings import NatsSettings

SUBJECT_ROOT = "homecare.v1"
"""What the MQTT listener makes of :data:`homecare.contract.TOPIC_ROOT`."""
ACCOUNT = "HOMECARE"
SYSTEM_ACCOUNT = "SYS"
AUTH_CONF = "nats-auth.conf"
SYS_CREDS = "sys.creds"
MQTT_ONLY = ["MQTT"]
PARTITIONS = NatsSettings().partitions
"""TELEMETRY's partitions where none is said (``HOMECARE_NATS__PARTITIONS``'s default)."""
MAX_CONTROL_LINE = 64 * 1024
"""The longest protocol line the server takes (its default is 4 KiB), set in the include
file: a client's CONNECT carries its user JWT, and detect's lists its partitions'
consumers one by one (~20 KB for 64 partitions)."""
_JS = "$JS.API"


def _consume(stream: str, consumer: str) -> list[str]:
    """What a client of one durable pull consumer publishes (fetch, ack, info)."""
    return [
        f"{_JS}.INFO", f"{_JS}.STREAM.INFO.{stream}", f"{_JS}.STREAM.INFO.$MQTT_msgs",
        f"{_JS}.CONSUMER.INFO.{stream}.{consumer}",
        f"{_JS}.CONSUMER.MSG.NEXT.{stream}.{consumer}", f"$JS.ACK.{stream}.{consumer}.>",
    ]  # fmt: skip


def _kv_rights(bucket: str) -> list[str]:
    """What a client of one key-value bucket publishes: create it (where missing) and read
    its info, put/create/update/delete its keys, get them (direct get, or the stream's
    message get), and watch it (an ordered consumer, its info, deleted after, with flow
    control)."""
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>", f"{_JS}.STREAM.CREATE.{stream}", f"{_JS}.STREAM.INFO.{stream}",
        f"{_JS}.STREAM.MSG.GET.{stream}", f"{_JS}.DIRECT.GET.{stream}.>",
        f"{_JS}.CONSUMER.CREATE.{stream}", f"{_JS}.CONSUMER.CREATE.{stream}.>",
        f"{_JS}.CONSUMER.INFO.{stream}.*", f"{_JS}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]  # fmt: skip


ESCALATION_BUCKETS = ("escalation", "escalation-lease")
"""escalation.cluster's buckets (``STATE_BUCKET``, ``LEASE_BUCKET``): escalate's state
and its lease in cluster mode."""
FORGET_SUBJECT = "homecare.escalation.forget"
"""Where ``homecare elder forget`` asks the active escalate (``escalation.cluster``)."""
ESCALATE_RESPONSE = {"max": 1, "ttl": 60 * 10**9}
"""escalate's response permission: one reply to each request it receives (an erasure),
within 60 s (JWT v2's ``resp``; ``ttl`` in nanoseconds, a Go duration)."""

DETECT_BUCKET = "detect_state"
"""The object store where detect keeps its state (``detectors.resume.STATE_BUCKET``, which
``homecare broker provision`` creates), and a key-value bucket of the same name: the only
ones its user may use (NATS cannot grant a name pattern such as ``KV_detect*``)."""
ALERT_TOPICS = f"{SUBJECT_ROOT}.*.*.alert.*"
ALERT_ACKS = f"{SUBJECT_ROOT}.*.*.alert.*.ack"
SERVICE_RIGHTS: dict[str, dict[str, list[str]]] = {
    "ingest": {"pub": _consume(TELEMETRY_STREAM, "ingest"), "sub": ["_INBOX.>"]},
    # detect: its partitions' consumers (detect-p<N>, :func:`detect_rights` adds them: a
    # name pattern NATS cannot express, its wildcards matching whole tokens), which its
    # workers unpin to hand a partition over; no other consumer, and it may make or delete
    # none (the replay of a partition's gap reads by batch direct get, and checks with the
    # leader where a replica lags). It raises alerts into ALERTS, keeps its state in the
    # object store and its workers' liveness in the key-value bucket named DETECT_BUCKET
    # (whose keys it lists through an ordered consumer).
    "detect": {
        "pub": [f"{_JS}.INFO", f"{_JS}.STREAM.INFO.{TELEMETRY_STREAM}",
                f"{_JS}.STREAM.INFO.$MQTT_msgs",
                f"{_JS}.DIRECT.GET.{TELEMETRY_STREAM}", f"{_JS}.STREAM.MSG.GET.{TELEMETRY_STREAM}",
                f"{_JS}.CONSUMER.CREATE.KV_{DETECT_BUCKET}",
                f"{_JS}.CONSUMER.CREATE.KV_{DETECT_BUCKET}.>",
                f"{_JS}.CONSUMER.DELETE.KV_{DETECT_BUCKET}.*", f"{ALERT_SUBJECT_ROOT}.>",
                f"{_JS}.STREAM.INFO.ALERTS", f"{_JS}.STREAM.MSG.GET.ALERTS",
                # provisioned (it creates neither): read and write them, no more
                *(f"{_JS}.STREAM.{verb}.{stream}" for verb in ("INFO", "MSG.GET")
                  for stream in (f"KV_{DETECT_BUCKET}", f"OBJ_{DETECT_BUCKET}")),
                # STREAM.NAMES: nats-py finds the object store's stream by subject
                f"{_JS}.STREAM.PURGE.OBJ_{DETECT_BUCKET}", f"{_JS}.STREAM.NAMES",
                f"{_JS}.DIRECT.GET.KV_{DETECT_BUCKET}.>",
                f"{_JS}.CONSUMER.CREATE.OBJ_{DETECT_BUCKET}",
                f"{_JS}.CONSUMER.CREATE.OBJ_{DETECT_BUCKET}.>",
                f"{_JS}.CONSUMER.DELETE.OBJ_{DETECT_BUCKET}.*",
                f"$KV.{DETECT_BUCKET}.>", f"$O.{DETECT_BUCKET}.>",
                # flow control of its ordered consumers (the workers' roster, a state's get)
                f"$JS.FC.KV_{DETECT_BUCKET}.>", f"$JS.FC.OBJ_{DETECT_BUCKET}.>",
                f"{_JS}.CONSUMER.INFO.KV_{DETECT_BUCKET}.*",
                f"{_JS}.CONSUMER.INFO.OBJ_{DETECT_BUCKET}.*"],
        "sub": ["_INBOX.>"],
    },
    # escalate: consumes ALERTS; publishes the retained alert states for apps over MQTT,
    # and commands to devices.
    # In cluster mode (`--store cluster`, escalation.cluster) it also keeps its state and
    # its lease in two key-value buckets it creates (the lease's max_age it updates),
    # loads the state through an ordered consumer (with flow control), and answers
    # erasure requests on FORGET_SUBJECT: a reply only through NATS's response
    # permission (ESCALATE_RESPONSE), never a publish to any inbox.
    "escalate": {
        "pub": [*_consume("ALERTS", "escalate"), ALERT_TOPICS,
                f"{SUBJECT_ROOT}.*.*.command.*",
                *(right for bucket in ESCALATION_BUCKETS for right in _kv_rights(bucket)),
                f"{_JS}.STREAM.UPDATE.KV_{ESCALATION_BUCKETS[1]}"],  # the lease's max_age
        "sub": ["_INBOX.>", ALERT_TOPICS, ALERT_ACKS, FORGET_SUBJECT],
    },
    # The provider's app backend (MQTT): reads alerts, sends acknowledgements (each carries
    # the contact's own token); it may not raise, change or forge an alert.
    "app": {"pub": [ALERT_ACKS], "sub": [ALERT_TOPICS]},
    # `homecare elder forget` (privacy.forget): reads, overwrites and purges an erased
    # elder's messages in the streams they pass through, clears their retained messages
    # (an empty retained MQTT publish on their alert and availability topics) and then
    # subscribes to the elder's topics to see that none is left. It may not create, edit
    # or delete a stream, nor touch a consumer.
    "privacy": {
        "pub": [ALERT_TOPICS, f"{SUBJECT_ROOT}.*.*.*.*.availability", f"{_JS}.INFO",
                *(f"{_JS}.STREAM.{verb}.{stream}"
                  for verb in ("INFO", "MSG.GET", "MSG.DELETE", "PURGE")
                  for stream in (TELEMETRY_STREAM, "ALERTS", "$MQTT_msgs", "$MQTT_rmsgs")),
                FORGET_SUBJECT],  # asks the active escalate (cluster mode) to erase
        "sub": ["_INBOX.>", f"{SUBJECT_ROOT}.>"],
    },
    # `homecare broker provision`: creates the streams and consumers (over NATS) and the
    # MQTT listener's own streams (one MQTT connection).
    "provision": {"pub": [f"{_JS}.>"], "sub": ["_INBOX.>"]},
    # `homecare broker watch` (broker.watchdog): reads the sourcing streams' info, asks
    # their leaders to step down, raises operations alerts (site _ops) into ALERTS and
    # reads the last one back at start; no other alert, no consumer.
    "watchdog": {
        "pub": [f"{_JS}.INFO",
                *(f"{_JS}.STREAM.INFO.{s}" for s in (TELEMETRY_STREAM, "ALERTS", "$MQTT_msgs")),
                *(f"{_JS}.STREAM.LEADER.STEPDOWN.{s}" for s in (TELEMETRY_STREAM, "ALERTS")),
                f"{_JS}.STREAM.MSG.GET.ALERTS", f"{ALERT_SUBJECT_ROOT}.{OPERATIONS_SITE}.>"],
        "sub": ["_INBOX.>"],
    },
}
"""Each service's NATS subjects. ``ingest-2`` (any ``<service>-<suffix>``) is another
user of the same service (one per process). Services that speak MQTT (escalate, app,
privacy, provision) present their JWT as the MQTT password: their JWT is a bearer one."""
_MQTT_SERVICES = frozenset({"escalate", "app", "privacy", "provision"})


_DISTRICT_USER = re.compile(r"^(ingest-.+-(?:primary|replica))(?:-[A-Za-z0-9_]+)?$")
"""An ingest user of one district's store: ``ingest-<D>-<R>`` (or ``ingest-<D>-<R>-2``,
another process of it), named after its durable consumer
(``homecare.jetstream.ingest_consumer``)."""


def service_rights(user: str, partitions: int = PARTITIONS) -> dict[str, list[str]]:
    """The subjects ``user`` (a service user's name) may publish and subscribe to
    (detect's: those of ``partitions`` partitions' consumers).

    An ingest user named after a district's consumer (``ingest-north-primary``) may take
    from that consumer only; any other ingest user, from ``ingest`` (the single store).

    >>> service_rights("ingest-north-replica")["pub"][-2]
    '$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest-north-replica'
    >>> service_rights("ingest-2")["pub"][-2]
    '$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.ingest'
    """
    service = _service_of(user)
    if service is None:
        raise AccessError(f"{user!r} is not a service account ({', '.join(SERVICE_RIGHTS)})")
    district = _DISTRICT_USER.match(user) if service == "ingest" else None
    if district:
        return {"pub": _consume(TELEMETRY_STREAM, district.group(1)), "sub": ["_INBOX.>"]}
    if service == "detect":
        rights = SERVICE_RIGHTS[service]
        return {"pub": [*rights["pub"], *detect_rights(partitions)], "sub": rights["sub"]}
    return SERVICE_RIGHTS[service]


def detect_rights(partitions: int) -> list[str]:
    """What detect publishes to use its partitions' consumers: pull (with the priority
    group), acknowledge, read their info, unpin. One allow-list entry per partition and
    verb: 256 for 64 partitions, a user JWT of ~20 KB (hence the server's
    :data:`MAX_CONTROL_LINE`).

    >>> detect_rights(2)[-2:]
    ['$JS.API.CONSUMER.UNPIN.TELEMETRY.detect-p1', '$JS.ACK.TELEMETRY.detect-p1.>']
    """
    stream = TELEMETRY_STREAM
    verbs = [f"{_JS}.CONSUMER.INFO", f"{_JS}.CONSUMER.MSG.NEXT", f"{_JS}.CONSUMER.UNPIN"]
    out = []
    for name in map(detect_partition_consumer, range(partitions)):
        out += [f"{verb}.{stream}.{name}" for verb in verbs]
        out.append(f"$JS.ACK.{stream}.{name}.>")
    return out


def _service_of(user: str) -> str | None:
    """The service whose rights ``user`` has (``ingest`` for ``ingest`` or ``ingest-2``)."""
    base = user.split("-", 1)[0]
    return base if base in SERVICE_RIGHTS and re.match(contract.ID_PATTERN, user) else None


class AccessError(ConfigError):
    """A provisioning request that cannot be carried out; the message says why."""


WEAR_PLACEMENTS = ("wrist", "chest", "waist", "pendant", "belt", "unknown")
"""What ``--placement`` takes for a wearable (as the status report's ``placement``)."""


def _check_placement(placement: str | None, kind: DeviceKind) -> str | None:
    if placement is None:
        return None
    if kind != DeviceKind.WEARABLE:
        raise AccessError(f"placement {placement!r} is for wearables, not a {kind} sensor")
    if placement not in WEAR_PLACEMENTS:
        raise AccessError(f"placement must be one of {', '.join(WEAR_PLACEMENTS)}, "
                          f"got {placement!r}")  # fmt: skip
    return placement


@dataclass(frozen=True)
class DeviceGrant:
    """A device's place in the subject tree, and the subjects its JWT allows."""

    device: str
    site: str
    elder: str
    kind: DeviceKind
    placement: str | None = None
    """Where a wearable is worn (:data:`WEAR_PLACEMENTS`); its status reports say so too."""

    @property
    def publish(self) -> str:
        return f"{SUBJECT_ROOT}.{self.site}.{self.elder}.{self.kind}.{self.device}.>"

    @property
    def command(self) -> str:
        return contract.command_topic(self.site, self.elder, self.device)

    @property
    def command_subject(self) -> str:
        return self.command.replace("/", ".")

    def topic(self, stream: contract.Stream) -> str:
        return str(contract.Topic(self.site, self.elder, self.kind, self.device, stream))


@dataclass(frozen=True)
class Credentials:
    """A new user's credential, shown once and never stored: for a device (and an MQTT
    service) the password is its bearer JWT; ``creds`` a service's credentials file."""

    username: str
    password: str
    creds: Path | None = None


def _check_id(value: str, what: str) -> str:
    if not re.match(contract.ID_PATTERN, value):
        raise AccessError(f"{what} {value!r} is not a valid id ({contract.ID_PATTERN})")
    return value


def _replace(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file atomically (temp file + rename), so a reader sees old or new, not half.

    The new file keeps the old one's owner (run as root, the server's user can still
    read what ``homecare devices`` rewrote) and never gets a wider mode than ``mode``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    with contextlib.suppress(FileNotFoundError, PermissionError):
        old = path.stat()
        os.chown(tmp, old.st_uid, old.st_gid)
    os.replace(tmp, path)


Registry = dict[str, Any]


class BrokerAccess:
    """The operator, the accounts, the device registry and the service users in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.registry_path = folder / "devices.json"
        self.conf_path = folder / AUTH_CONF
        self.sys_creds = folder / SYS_CREDS
        self.services_dir = folder / "services"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two installers provisioning at once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- keys -----------------------------------------------------------------------

    def _key(self, name: str, kind: claims.Kind) -> Key:
        """A stored key, made on first use (its seed readable by the owner only)."""
        path = self.folder / f"{name}.nk"
        if path.exists():
            return claims.key_from_seed(path.read_text())
        key = claims.new_key(kind)
        _replace(path, key.seed + "\n")
        return key

    @property
    def operator(self) -> Key:
        return self._key("operator", "operator")

    @property
    def system(self) -> Key:
        return self._key("sys", "account")

    @property
    def account(self) -> Key:
        return self._key("homecare", "account")

    # -- reading --------------------------------------------------------------------

    def _registry(self) -> Registry:
        data = json.loads(self.registry_path.read_text()) if self.registry_path.exists() else {}
        return {
            "devices": data.get("devices", {}), "gateways": data.get("gateways", {}),
            "services": data.get("services", {}), "revoked": data.get("revoked", {}),
            "resolver_dir": data.get("resolver_dir", "/data/jwt"),
        }  # fmt: skip

    def devices(self) -> list[DeviceGrant]:
        return [
            DeviceGrant(device, v["site"], v["elder"], DeviceKind(v["kind"]), v.get("placement"))
            for device, v in sorted(self._registry()["devices"].items())
        ]

    def device_keys(self) -> dict[str, str]:
        """Device id → its user's public key (what the server's events name)."""
        return {d: v["key"] for d, v in self._registry()["devices"].items()}

    def gateways(self) -> dict[str, str]:
        """Gateway → the site whose device streams it may publish."""
        return {name: v["site"] for name, v in sorted(self._registry()["gateways"].items())}

    def revoked(self, jwt: str) -> bool:
        """Whether a user JWT has been revoked (its key in the account's revocations)."""
        return claims.decode(jwt)["sub"] in self._registry()["revoked"]

    # -- the server's side -------------------------------------------------------------

    def account_jwt(self, registry: Registry | None = None) -> str:
        revoked = (registry or self._registry())["revoked"]
        return claims.encode(
            claims.account_claims(self.account.public, ACCOUNT, jetstream=True,
                                  revocations=revoked),
            self.operator,
        )  # fmt: skip

    def _server_config(self, registry: Registry) -> str:
        operator, system = self.operator, self.system
        op_jwt = claims.encode(
            claims.operator_claims(operator.public, "homecare", system.public), operator
        )
        sys_jwt = claims.encode(claims.account_claims(system.public, SYSTEM_ACCOUNT), operator)
        return (
            "# Generated by `homecare devices`; edits are overwritten. Include it at the top\n"
            "# level of nats-server's configuration. The full resolver keeps the accounts'\n"
            "# JWTs in its dir; `homecare devices revoke` pushes updates through SYS.\n"
            f"operator: {op_jwt}\n"
            f"system_account: {system.public}\n"
            # devices.refusals reads refusals from the log, its times as UTC.
            "logtime_utc: true\n"
            # a CONNECT carries the user's JWT: detect's lists its partitions' consumers
            f"max_control_line: {MAX_CONTROL_LINE}\n"
            f'resolver: {{\n  type: full\n  dir: "{registry["resolver_dir"]}"\n'
            "  allow_delete: false\n  interval: \"2m\"\n}\n"
            "resolver_preload: {\n"
            f"  {system.public}: {sys_jwt}\n"
            f"  {self.account.public}: {self.account_jwt(registry)}\n"
            "}\n"
        )

    def _save(self, registry: Registry) -> None:
        _replace(self.registry_path, json.dumps(registry, indent=1, sort_keys=True) + "\n", 0o644)
        _replace(self.conf_path, self._server_config(registry), 0o644)

    def init(self, *, resolver_dir: str | None = None) -> Path:
        """Create the keys, the system user's credentials and the server's include file
        (``resolver_dir``: where the server keeps account JWTs, as the server sees it)."""
        with self._locked():
            registry = self._registry()
            if resolver_dir is not None:
                registry["resolver_dir"] = resolver_dir
            if not self.sys_creds.exists():
                user = claims.new_key("user")
                jwt = claims.encode(
                    claims.user_claims(user.public, "sys", publish=["$SYS.>", "_INBOX.>"],
                                       subscribe=["$SYS.>", "_INBOX.>"], bearer=False),
                    self.system,
                )  # fmt: skip
                _replace(self.sys_creds, claims.creds_file_text(jwt, user.seed))
            self._save(registry)
        return self.conf_path

    # -- users ----------------------------------------------------------------------

    def _user_jwt(self, user: Key, name: str, pub: list[str], sub: list[str], *,
                  bearer: bool, mqtt_only: bool = False, signer: Key | None = None,
                  response: dict[str, int] | None = None) -> str:
        return claims.encode(
            claims.user_claims(user.public, name, publish=pub, subscribe=sub, bearer=bearer,
                               connection_types=MQTT_ONLY if mqtt_only else None,
                               response=response),
            signer or self.account,
        )  # fmt: skip

    def service(self, name: str, *, partitions: int = PARTITIONS) -> Credentials:
        """(Re)issue a service user's credentials file, ``services/<name>.creds``
        (``partitions``: TELEMETRY's, whose consumers detect's user may use).

        Services that speak MQTT get a bearer JWT, also their MQTT password: returned, and
        in ``services/<name>.jwt``.
        """
        rights = service_rights(name, partitions)
        service = _service_of(name)
        user = claims.new_key("user")
        bearer = service in _MQTT_SERVICES
        jwt = self._user_jwt(user, name, rights["pub"], rights["sub"], bearer=bearer,
                             response=ESCALATE_RESPONSE if service == "escalate" else None)
        if len(jwt) > MAX_CONTROL_LINE - 4096:  # the CONNECT's other fields, the signature
            raise AccessError(f"{name}'s rights for {partitions} partitions make a "
                              f"{len(jwt)} byte JWT, more than the server takes "
                              f"({MAX_CONTROL_LINE})")  # fmt: skip
        with self._locked():
            registry = self._registry()
            old = registry["services"].get(name)
            if old is not None:
                registry["revoked"][old] = int(time.time())
            registry["services"][name] = user.public
            creds = self.services_dir / f"{name}.creds"
            _replace(creds, claims.creds_file_text(jwt, user.seed))
            if bearer:  # its MQTT password, for HOMECARE_MQTT__PASSWORD_FILE
                _replace(self.services_dir / f"{name}.jwt", jwt + "\n")
            self._save(registry)
        return Credentials(name, jwt, creds)

    def provision(
        self, device: str, *, site: str, elder: str, kind: DeviceKind | str,
        placement: str | None = None,
    ) -> tuple[DeviceGrant, Credentials]:
        """Register a device: its grant and its bearer JWT (shown once, never stored);
        a wearable may say where it is worn."""
        [done] = self.provision_many([(device, site, elder, kind, placement)])
        return done  # fmt: skip

    def provision_many(
        self,
        devices: Iterable[tuple[str, str, str, DeviceKind | str]
                          | tuple[str, str, str, DeviceKind | str, str | None]],
    ) -> list[tuple[DeviceGrant, Credentials]]:
        """Register devices (id, site, elder, kind[, placement]) with one write of the
        registry: a city's roll-out. All or none: one bad row refuses the batch."""
        grants = [
            DeviceGrant(_check_id(row[0], "device"), _check_id(row[1], "site"),
                        _check_id(row[2], "elder"), DeviceKind(row[3]),
                        _check_placement(row[4] if len(row) > 4 else None, DeviceKind(row[3])))
            for row in devices
        ]  # fmt: skip
        done: list[tuple[DeviceGrant, Credentials, str]] = []
        account = self.account
        for grant in grants:
            if _service_of(grant.device):
                raise AccessError(f"{grant.device!r} is a service account's name")
            user = claims.new_key("user")
            jwt = self._user_jwt(user, grant.device, [grant.publish], [grant.command_subject],
                                 bearer=True, mqtt_only=True, signer=account)  # fmt: skip
            done.append((grant, Credentials(grant.device, jwt), user.public))
        with self._locked():
            registry = self._registry()
            for grant, _, key in done:
                if grant.device in registry["gateways"]:
                    raise AccessError(f"{grant.device!r} is a gateway's name")
                if grant.device in registry["devices"]:
                    raise AccessError(f"{grant.device!r} already has an account: revoke it "
                                      "first to replace it")  # fmt: skip
                registry["devices"][grant.device] = {
                    "site": grant.site, "elder": grant.elder, "kind": str(grant.kind),
                    "key": key,
                }  # fmt: skip
                if grant.placement is not None:
                    registry["devices"][grant.device]["placement"] = grant.placement
            self._save(registry)
        return [(grant, credentials) for grant, credentials, _ in done]

    def add_gateway(self, name: str, *, site: str) -> Credentials:
        """A user that publishes the device streams of every device of one site."""
        _check_id(name, "gateway")
        _check_id(site, "site")
        if _service_of(name):
            raise AccessError(f"{name!r} is a service account's name")
        user = claims.new_key("user")
        jwt = self._user_jwt(user, name, [f"{SUBJECT_ROOT}.{site}.*.*.*.*"], [], bearer=True,
                             mqtt_only=True)  # fmt: skip
        with self._locked():
            registry = self._registry()
            if name in registry["devices"] or name in registry["gateways"]:
                raise AccessError(f"{name!r} already has an account: revoke it first")
            registry["gateways"][name] = {"site": site, "key": user.public}
            self._save(registry)
        return Credentials(name, jwt)

    def revoke(self, name: str) -> DeviceGrant | None:
        """Revoke a device's or gateway's user (the device's grant, if one).

        The running server learns it from :func:`push` (or its next start).
        """
        with self._locked():
            registry = self._registry()
            entry = registry["devices"].pop(name, None)
            gateway = registry["gateways"].pop(name, None)
            if entry is None and gateway is None:
                raise AccessError(f"no device or gateway {name!r} in {self.registry_path}")
            registry["revoked"][(entry or gateway)["key"]] = int(time.time())
            self._save(registry)
        if entry is None:
            return None
        return DeviceGrant(name, entry["site"], entry["elder"], DeviceKind(entry["kind"]),
                           entry.get("placement"))  # fmt: skip

    def describe(self) -> dict[str, object]:
        """The registry as data (no secrets), for ``homecare devices list``."""
        registry = self._registry()
        return {
            "devices": [asdict(g) | {"kind": str(g.kind)} for g in self.devices()],
            "gateways": self.gateways(),
            "services": sorted(registry["services"]),
            "revoked": len(registry["revoked"]),
        }


async def _system(access: BrokerAccess, url: str, ca_file: Path | None, timeout_s: float) -> Any:
    """A connection as the system account, which alone may update accounts and kick."""
    import nats  # the client library only where a server is talked to

    tls = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    return await nats.connect(url, user_credentials=str(access.sys_creds), tls=tls,
                              connect_timeout=timeout_s, allow_reconnect=False,
                              max_reconnect_attempts=0)  # fmt: skip


def push(
    access: BrokerAccess, url: str, *, ca_file: Path | None = None, timeout_s: float = 10.0
) -> None:
    """Hand the running server the account's current JWT (its revocations) through the
    system account; the server drops revoked users' connections at once."""

    async def update() -> dict[str, Any]:
        nc = await _system(access, url, ca_file, timeout_s)
        try:
            reply = await nc.request("$SYS.REQ.CLAIMS.UPDATE", access.account_jwt().encode(),
                                     timeout=timeout_s)  # fmt: skip
        finally:
            await nc.close()
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    try:
        answer = asyncio.run(update())
    except Exception as exc:  # the client's errors have no common base worth naming
        raise AccessError(f"could not push the account to {url}: {exc!r}") from exc
    data = answer.get("data") or answer.get("error") or {}
    if data.get("code") != 200:
        raise AccessError(f"{url} refused the account update: {answer}")


def disconnect(
    access: BrokerAccess,
    url: str,
    clients: Iterable[str],
    *,
    ca_file: Path | None = None,
    timeout_s: float = 5.0,
) -> int:
    """Close every MQTT connection of these client ids, on whichever node of the cluster
    holds it; how many were closed.

    NATS acknowledges a publish it refuses (PUBACK) over MQTT 3.1.1, so a device cannot
    learn the refusal from the protocol: a disconnect is how it learns (as AWS IoT Core
    does it). Every node answers ``$SYS.REQ.SERVER.PING.CONNZ`` filtered by the client
    id; each connection found is kicked on its own node (``$SYS.REQ.SERVER.<id>.KICK``).
    """
    wanted = sorted(set(clients))

    async def kick() -> int:
        nc = await _system(access, url, ca_file, timeout_s)
        kicked = 0
        try:
            for client in wanted:
                inbox = nc.new_inbox()
                replies = await nc.subscribe(inbox)
                await nc.publish(
                    "$SYS.REQ.SERVER.PING.CONNZ",
                    json.dumps({"mqtt_client": client}).encode(),
                    reply=inbox,
                )
                found: list[tuple[str, int]] = []
                # Every node answers at once; a short quiet time after the last one ends it.
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    while True:
                        msg = await replies.next_msg(timeout=0.5)
                        answer = json.loads(msg.data)
                        server = answer.get("server", {}).get("id")
                        for conn in (answer.get("data") or {}).get("connections") or []:
                            if server and conn.get("mqtt_client") == client:
                                found.append((server, int(conn["cid"])))
                await replies.unsubscribe()
                for server, cid in found:
                    reply = await nc.request(f"$SYS.REQ.SERVER.{server}.KICK",
                                             json.dumps({"cid": cid}).encode(),
                                             timeout=timeout_s)  # fmt: skip
                    error = json.loads(reply.data).get("error")
                    if error:
                        raise AccessError(f"{server} would not close {client}: {error}")
                    kicked += 1
        finally:
            await nc.close()
        return kicked

    if not wanted:
        return 0
    try:
        return asyncio.run(kick())
    except AccessError:
        raise
    except Exception as exc:  # the client's errors have no common base worth naming
        raise AccessError(f"could not disconnect {', '.join(wanted)} at {url}: {exc!r}") from exc


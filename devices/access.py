"""Who may connect to the broker, and what each account may publish or read.

One folder holds everything Mosquitto 2 needs for access control, written here and
read by the broker: ``passwd`` (Mosquitto's password file: PBKDF2-SHA512 hashes in its
``$7$`` format, the one ``mosquitto_passwd`` writes), ``acl`` (generated, never edited by
hand) and ``devices.json`` (which device belongs to which site, elder and kind: no
secrets). Files are replaced atomically, so a broker reloading them (SIGHUP) never reads
half a file; mount the *folder* into a container, not single files, or a replaced file
is not seen.

A device may publish only under its own topics
(``homecare/v1/<site>/<elder>/<kind>/<device>/#``, its availability included) and
subscribe only to its own command topic; a gateway may publish the device streams of
one site; each service has only the rights it needs (:data:`SERVICE_RIGHTS`). Mosquitto
re-reads both files on SIGHUP and disconnects a connected client whose account is gone,
so a revocation takes effect without a restart (tests/test_security_broker.py).

>>> import tempfile
>>> access = BrokerAccess(Path(tempfile.mkdtemp()))
>>> grant, credentials = access.provision("w1", site="north", elder="e1", kind="wearable")
>>> credentials.username, grant.publish
('w1', 'homecare/v1/north/e1/wearable/w1/#')
>>> "user w1" in access.acl_path.read_text(), access.revoke("w1").device
(True, 'w1')
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from homecare import contract
from homecare.contract import TOPIC_ROOT, DeviceKind
from homecare.errors import ConfigError

PBKDF2_ITERATIONS = 101
"""Mosquitto 2.0's default for ``$7$`` hashes. Generated passwords carry 192 random bits,
so more iterations would add nothing but CPU when thousands of devices reconnect at once."""

ALERTS = contract.alert_subscription()
ALERT_TREE = f"{TOPIC_ROOT}/+/+/alert/#"
SERVICE_RIGHTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ingest": (("read", contract.subscription()),),
    "detect": (("read", contract.subscription()), ("write", ALERTS)),
    "escalate": (("readwrite", ALERT_TREE), ("write", f"{TOPIC_ROOT}/+/+/command/+")),
    # The provider's app backend: relays alerts to phones and sends acknowledgements (each
    # carries the contact's own token); it may not raise, change or forge an alert.
    "app": (("read", ALERTS), ("write", f"{ALERTS}/ack")),
    # `homecare elder forget` clears an erased elder's retained messages: alerts, availability
    "privacy": (
        ("readwrite", ALERTS),
        ("readwrite", f"{TOPIC_ROOT}/+/+/+/+/{contract.Stream.AVAILABILITY}"),
    ),
}
"""Each service account's ACL: (access, topic filter). Nothing else is allowed.

``ingest-2`` (any ``<service>-<suffix>``) is an account of the same service: the broker
makes every client's id its user name (``use_username_as_clientid``, so no account can
take over another's session), hence one account per process, e.g. per ingest instance.
"""


def _service_of(user: str) -> str | None:
    """The service whose rights ``user`` has (``ingest`` for ``ingest`` or ``ingest-2``)."""
    base = user.split("-", 1)[0]
    return base if base in SERVICE_RIGHTS and re.match(contract.ID_PATTERN, user) else None


class AccessError(ConfigError):
    """A provisioning request that cannot be carried out; the message says why."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password-file hash (``$7$``: PBKDF2-HMAC-SHA512).

    >>> hashed = hash_password("secret")
    >>> hashed.startswith("$7$101$"), check_password("secret", hashed), check_password("x", hashed)
    (True, True, False)
    """
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (for tests and diagnostics)."""
    try:
        _, seven, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if seven != "7":
        return False
    mine = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                               int(iterations))  # fmt: skip
    return secrets.compare_digest(base64.b64encode(mine).decode(), digest)


@dataclass(frozen=True)
class DeviceGrant:
    """A device's place in the topic tree, and the topics its account may use."""

    device: str
    site: str
    elder: str
    kind: DeviceKind

    @property
    def publish(self) -> str:
        return f"{TOPIC_ROOT}/{self.site}/{self.elder}/{self.kind}/{self.device}/#"

    @property
    def command(self) -> str:
        return contract.command_topic(self.site, self.elder, self.device)

    def topic(self, stream: contract.Stream) -> str:
        return str(contract.Topic(self.site, self.elder, self.kind, self.device, stream))


@dataclass(frozen=True)
class Credentials:
    """A new account's secret, shown once and never stored in clear."""

    username: str
    password: str


def _check_id(value: str, what: str) -> str:
    if not re.match(contract.ID_PATTERN, value):
        raise AccessError(f"{what} {value!r} is not a valid id ({contract.ID_PATTERN})")
    return value


def _replace(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file atomically (temp file + rename), so a reader sees old or new, not half.

    The new file keeps the old one's owner (run as root, the broker's user can still
    read what ``homecare devices`` rewrote) and never gets a wider mode than ``mode``.
    """
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


class BrokerAccess:
    """The broker's password file, ACL and device registry in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.passwd_path = folder / "passwd"
        self.acl_path = folder / "acl"
        self.registry_path = folder / "devices.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two installers provisioning at once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- reading --------------------------------------------------------------------

    def _hashes(self) -> dict[str, str]:
        if not self.passwd_path.exists():
            return {}
        hashes: dict[str, str] = {}
        for line in self.passwd_path.read_text().splitlines():
            user, sep, hashed = line.partition(":")
            if sep and user:
                hashes[user] = hashed
        return hashes

    def _registry(self) -> dict[str, dict[str, dict[str, str]]]:
        if not self.registry_path.exists():
            return {"devices": {}, "gateways": {}}
        data = json.loads(self.registry_path.read_text())
        return {"devices": data.get("devices", {}), "gateways": data.get("gateways", {})}

    def devices(self) -> list[DeviceGrant]:
        return [
            DeviceGrant(device, v["site"], v["elder"], DeviceKind(v["kind"]))
            for device, v in sorted(self._registry()["devices"].items())
        ]

    def gateways(self) -> dict[str, str]:
        """Gateway account → the site whose device streams it may publish."""
        return {name: v["site"] for name, v in sorted(self._registry()["gateways"].items())}

    def users(self) -> list[str]:
        return sorted(self._hashes())

    # -- writing --------------------------------------------------------------------

    def _save(self, registry: dict[str, dict[str, dict[str, str]]], hashes: dict[str, str]) -> None:
        _replace(self.registry_path, json.dumps(registry, indent=1, sort_keys=True) + "\n", 0o644)
        _replace(self.passwd_path, "".join(f"{u}:{h}\n" for u, h in sorted(hashes.items())))
        _replace(self.acl_path, self._acl(registry, hashes), 0o644)

    def _acl(self, registry: dict[str, dict[str, dict[str, str]]], hashes: dict[str, str]) -> str:
        lines = ["# Generated by `homecare devices`; edits are overwritten.",
                 "# Anything not granted here is denied."]  # fmt: skip
        for user in sorted(set(SERVICE_RIGHTS) | {u for u in hashes if _service_of(u)}):
            rights = SERVICE_RIGHTS[_service_of(user) or user]
            lines += ["", f"user {user}"] + [f"topic {a} {t}" for a, t in rights]
        for name, v in sorted(registry["gateways"].items()):
            lines += ["", f"user {name}", f"topic write {TOPIC_ROOT}/{v['site']}/+/+/+/+"]
        for device, v in sorted(registry["devices"].items()):
            grant = DeviceGrant(device, v["site"], v["elder"], DeviceKind(v["kind"]))
            lines += ["", f"user {device}", f"topic write {grant.publish}",
                      f"topic read {grant.command}"]  # fmt: skip
        return "\n".join(lines) + "\n"

    def init(self) -> None:
        """Create the files (services' rights, no devices) if they do not exist yet."""
        with self._locked():
            self._save(self._registry(), self._hashes())

    def set_password(self, user: str, password: str) -> None:
        """Set the password of a service account (``ingest``, ``ingest-2``, ``detect``…)."""
        if _service_of(user) is None:
            raise AccessError(f"{user!r} is not a service account ({', '.join(SERVICE_RIGHTS)})")
        with self._locked():
            hashes = self._hashes()
            hashes[user] = hash_password(password)
            self._save(self._registry(), hashes)

    def _new_account(self, name: str) -> tuple[Credentials, dict[str, str]]:
        if _service_of(name):
            raise AccessError(f"{name!r} is a service account's name")
        hashes = self._hashes()
        if name in hashes:
            raise AccessError(f"{name!r} already has an account: revoke it first to replace it")
        password = secrets.token_urlsafe(24)
        hashes[name] = hash_password(password)
        return Credentials(name, password), hashes

    def provision(
        self, device: str, *, site: str, elder: str, kind: DeviceKind | str
    ) -> tuple[DeviceGrant, Credentials]:
        """Register a device: its grant and its new credentials (show the password once)."""
        grant = DeviceGrant(
            _check_id(device, "device"), _check_id(site, "site"), _check_id(elder, "elder"),
            DeviceKind(kind),
        )  # fmt: skip
        with self._locked():
            registry = self._registry()
            if device in registry["gateways"]:
                raise AccessError(f"{device!r} is a gateway's name")
            credentials, hashes = self._new_account(device)
            registry["devices"][device] = {"site": site, "elder": elder, "kind": str(grant.kind)}
            self._save(registry, hashes)
        return grant, credentials

    def add_gateway(self, name: str, *, site: str) -> Credentials:
        """An account that publishes the device streams of every device of one site."""
        _check_id(name, "gateway")
        _check_id(site, "site")
        with self._locked():
            registry = self._registry()
            if name in registry["devices"]:
                raise AccessError(f"{name!r} is a device's name")
            credentials, hashes = self._new_account(name)
            registry["gateways"][name] = {"site": site}
            self._save(registry, hashes)
        return credentials

    def revoke(self, name: str) -> DeviceGrant | None:
        """Remove a device's or gateway's account and rights (the device's grant, if one).

        The broker applies it on its next reload (:func:`reload_broker`).
        """
        with self._locked():
            registry = self._registry()
            hashes = self._hashes()
            entry = registry["devices"].pop(name, None)
            gateway = registry["gateways"].pop(name, None)
            if entry is None and gateway is None:
                raise AccessError(f"no device or gateway {name!r} in {self.registry_path}")
            hashes.pop(name, None)
            self._save(registry, hashes)
        if entry is None:
            return None
        return DeviceGrant(name, entry["site"], entry["elder"], DeviceKind(entry["kind"]))

    def describe(self) -> dict[str, object]:
        """The registry as data (no secrets), for ``homecare devices list``."""
        return {
            "devices": [asdict(g) | {"kind": str(g.kind)} for g in self.devices()],
            "gateways": self.gateways(),
            "services": sorted(u for u in self._hashes() if _service_of(u)),
        }


def reload_broker(pid: int) -> None:
    """Ask Mosquitto to re-read its password file and ACL (SIGHUP); revoked clients drop."""
    os.kill(pid, signal.SIGHUP)

"""``homecare devices``: certificates, device credentials and their rights on NATS Server.

The keys, JWTs and the registry live in ``HOMECARE_MQTT__ACCESS_DIR``; the server's
configuration includes ``nats-auth.conf`` from there (the operator, the accounts and the
resolver). Provisioning a device changes nothing on the server (its JWT is checked
against the account's key); a revocation is pushed to the server at
``HOMECARE_NATS__URL`` through the system account, which drops the device at once.

    homecare devices ca init --host broker.example.org
    homecare devices provision w0001 --elder e0001 --kind wearable --site north
    homecare devices revoke w0001
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from devices.access import (
    SERVICE_RIGHTS,
    AccessError,
    BrokerAccess,
    Credentials,
    DeviceGrant,
    push,
)
from devices.tls import CA_CERT, TlsError, make_ca
from homecare.contract import STREAMS, DeviceKind, Stream
from homecare.settings import Settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    short_help="Certificates, device credentials and their rights on the broker.",
)
ca_app = typer.Typer(no_args_is_help=True, help="The CA and the broker's TLS certificate.")
app.add_typer(ca_app, name="ca")

DirOption = Annotated[
    Path | None, typer.Option("--dir", help="Access folder (default: HOMECARE_MQTT__ACCESS_DIR).")
]


def _access(folder: Path | None) -> tuple[Settings, BrokerAccess]:
    settings = Settings()
    return settings, BrokerAccess(folder or settings.mqtt.access_dir)


def _push(settings: Settings, access: BrokerAccess) -> None:
    if not settings.nats.url:
        typer.echo("HOMECARE_NATS__URL is not set: run `homecare devices push` with it, or the "
                   "server applies this at its next start.", err=True)  # fmt: skip
        return
    try:
        push(access, settings.nats.url, ca_file=settings.nats.ca_file)
    except AccessError as exc:
        typer.echo(f"{exc}; run `homecare devices push` once it is reachable.", err=True)
        raise typer.Exit(1) from exc
    typer.echo("Server updated.", err=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@ca_app.command("init")
def ca_init(
    host: Annotated[list[str], typer.Option(help="Broker name or address devices connect to.")],
    ca_dir: Annotated[
        Path | None, typer.Option(help="Where the CA and its key live (default <state_dir>/ca).")
    ] = None,
    folder: DirOption = None,
) -> None:
    """Create a CA and the MQTT listener's certificate (server.crt, server.key, ca.crt in
    the access folder). The CA's private key stays in --ca-dir, away from the broker."""
    settings, access = _access(folder)
    try:
        ca = make_ca(ca_dir or settings.state_dir / "ca")
        cert, key = ca.issue_server(access.folder, host)
    except (TlsError, ValueError) as exc:
        raise _fail(exc) from exc
    shutil.copyfile(ca.cert, access.folder / CA_CERT)
    access.init()
    typer.echo(f"CA: {ca.cert} (key {ca.key}: keep it secret)\n"
               f"broker: {cert}, {key}, {access.folder / CA_CERT}")  # fmt: skip


@app.command("init")
def init(
    resolver_dir: Annotated[
        str | None, typer.Option(help="Where the server keeps account JWTs (its own path).")
    ] = None,
    folder: DirOption = None,
) -> None:
    """Create the operator and accounts (once) and write nats-auth.conf for the server."""
    _, access = _access(folder)
    typer.echo(str(access.init(resolver_dir=resolver_dir)))


@app.command("service")
def service(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICE_RIGHTS)}.")],
    folder: DirOption = None,
) -> None:
    """(Re)issue a service's credentials file (services/NAME.creds; an old one is revoked).

    Point the service at it with HOMECARE_NATS__CREDS_FILE. Detect's lists the consumers of
    HOMECARE_NATS__PARTITIONS partitions: issue it with the count the broker was
    provisioned with."""
    settings, access = _access(folder)
    try:
        credentials = access.service(name, partitions=settings.nats.partitions)
    except AccessError as exc:
        raise _fail(exc) from exc
    typer.echo(str(credentials.creds))
    _push(settings, access)


def _connection(
    settings: Settings,
    access: BrokerAccess,
    credentials: Credentials,
    grant: DeviceGrant | None,
    url: str | None,
) -> dict[str, object]:
    ca = access.folder / CA_CERT
    info: dict[str, object] = {
        "url": url or settings.mqtt.url or "mqtts://<broker>:8883",
        "ca_file": str(ca) if ca.exists() else None,
        "username": credentials.username,
        "password": credentials.password,
        "client_id": credentials.username,
        "protocol": "MQTT 3.1.1, TLS 1.2+, QoS 1 for every stream; the password is a JWT",
    }
    if grant is not None:
        info["publish"] = {str(s): grant.topic(s) for s in sorted(STREAMS[grant.kind])}
        info["last_will"] = {"topic": grant.topic(Stream.AVAILABILITY), "payload": "offline",
                             "qos": 1, "retain": True}  # fmt: skip
        info["subscribe"] = grant.command
        if grant.placement is not None:
            info["placement"] = grant.placement  # what its status reports must say
    return info


@app.command("provision")
def provision(
    device: Annotated[str, typer.Argument(help="Device id, as in its topics.")],
    elder: Annotated[str, typer.Option(help="Pseudonymous elder id the device belongs to.")],
    kind: Annotated[DeviceKind, typer.Option(help="Device kind.")],
    site: Annotated[str | None, typer.Option(help="Site id (default: settings).")] = None,
    url: Annotated[str | None, typer.Option(help="Broker URL devices use.")] = None,
    folder: DirOption = None,
    placement: Annotated[
        str | None,
        typer.Option(help="A wearable: where it is worn (wrist, chest, waist; pendant, belt)."),
    ] = None,
) -> None:
    """Register DEVICE and print what the installer needs (its JWT, shown once)."""
    settings, access = _access(folder)
    try:
        grant, credentials = access.provision(
            device, site=site or settings.site, elder=elder, kind=kind, placement=placement
        )
    except AccessError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(_connection(settings, access, credentials, grant, url), indent=2))
    typer.echo("The password (a JWT) is shown only this once; it is not kept.", err=True)


@app.command("provision-batch")
def provision_batch(
    csv_file: Annotated[
        Path, typer.Argument(help="CSV with columns device,site,elder,kind[,placement].")
    ],
    url: Annotated[str | None, typer.Option(help="Broker URL devices use.")] = None,
    folder: DirOption = None,
) -> None:
    """Register many devices at once (one registry write); print one JSON line per device
    with what its installer needs (its JWT, shown once). One bad row refuses them all."""
    import csv

    settings, access = _access(folder)
    try:
        with csv_file.open(newline="") as f:
            rows = [(r["device"], r["site"], r["elder"], r["kind"], r.get("placement") or None)
                    for r in csv.DictReader(f)]  # fmt: skip
        done = access.provision_many(rows)
    except (AccessError, OSError, KeyError, ValueError) as exc:
        raise _fail(exc) from exc
    for grant, credentials in done:
        typer.echo(json.dumps(_connection(settings, access, credentials, grant, url)))
    typer.echo(f"{len(done)} devices provisioned; their JWTs are shown only this once.",
               err=True)  # fmt: skip


@app.command("gateway")
def gateway(
    name: Annotated[str, typer.Argument(help="Gateway name.")],
    site: Annotated[str | None, typer.Option(help="Site id (default: settings).")] = None,
    url: Annotated[str | None, typer.Option(help="Broker URL the gateway uses.")] = None,
    folder: DirOption = None,
) -> None:
    """Create a credential that publishes the device streams of one site (a vendor gateway)."""
    settings, access = _access(folder)
    try:
        credentials = access.add_gateway(name, site=site or settings.site)
    except AccessError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(_connection(settings, access, credentials, None, url), indent=2))


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Device or gateway to remove.")],
    folder: DirOption = None,
) -> None:
    """Revoke a device's (or gateway's) credential; the server drops it when pushed."""
    settings, access = _access(folder)
    try:
        access.revoke(name)
    except AccessError as exc:
        raise _fail(exc) from exc
    typer.echo(f"revoked {name}")
    _push(settings, access)


@app.command("push")
def push_account(folder: DirOption = None) -> None:
    """Hand the server at HOMECARE_NATS__URL the account's current revocations."""
    settings, access = _access(folder)
    if not settings.nats.url:
        raise _fail(AccessError("HOMECARE_NATS__URL is not set"))
    _push(settings, access)


@app.command("watch")
def watch(
    log: Annotated[Path, typer.Option(help="nats-server's log file (its log_file).")],
    interval_s: Annotated[float, typer.Option(help="How often to read new lines.")] = 2.0,
    once: Annotated[bool, typer.Option(help="Store what is logged so far and stop.")] = False,
    kick: Annotated[
        bool,
        typer.Option(
            "--disconnect/--no-disconnect",
            help="Close the connection of a device whose publish was refused, so it learns "
            "(needs HOMECARE_NATS__URL).",
        ),
    ] = True,
    folder: DirOption = None,
) -> None:
    """Store each refusal the server logged as a security event of its device (InfluxDB),
    and disconnect each device whose publish was refused."""
    import signal
    import threading
    from collections.abc import Iterable

    from devices.access import disconnect
    from devices.refusals import RefusalWatcher
    from homecare.influx import InfluxClient

    settings, access = _access(folder)
    url, ca = settings.nats.url, settings.nats.ca_file

    def drop(clients: Iterable[str]) -> int:
        return disconnect(access, url, clients, ca_file=ca)

    with InfluxClient(settings.influx) as influx:
        watcher = RefusalWatcher(log, access, influx, drop if kick and url else None)
        if once:
            watcher.poll()
        else:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_a: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                watcher.run(stop, interval_s)
    typer.echo(f"{watcher.stored} security events stored, "
               f"{watcher.disconnected} refused devices disconnected")  # fmt: skip


@app.command("list")
def list_devices(folder: DirOption = None) -> None:
    """The provisioned devices, gateways and service users (no secrets)."""
    _, access = _access(folder)
    typer.echo(json.dumps(access.describe(), indent=2))

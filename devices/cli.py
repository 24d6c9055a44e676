"""``homecare devices``: certificates, device accounts and their rights on the broker.

The files live in ``HOMECARE_MQTT__ACCESS_DIR`` (default ``deploy/mosquitto/access``,
the folder docker-compose mounts into Mosquitto). After a change the broker is asked
to reload (SIGHUP to the pid in ``HOMECARE_MQTT__BROKER_PID_FILE``); without a pid
file the command says how to do it (``docker compose kill -s HUP mosquitto``).

    homecare devices ca init --host broker.example.org
    homecare devices provision w0001 --elder e0001 --kind wearable --site north
    homecare devices revoke w0001
"""

from __future__ import annotations

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
    reload_broker,
)
from devices.tls import CA_CERT, TlsError, make_ca
from homecare.contract import STREAMS, DeviceKind, Stream
from homecare.settings import Settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    short_help="Certificates, device accounts and their rights on the broker.",
)
ca_app = typer.Typer(no_args_is_help=True, help="The CA and the broker's TLS certificate.")
app.add_typer(ca_app, name="ca")

DirOption = Annotated[
    Path | None, typer.Option("--dir", help="Access folder (default: HOMECARE_MQTT__ACCESS_DIR).")
]


def _access(folder: Path | None) -> tuple[Settings, BrokerAccess]:
    settings = Settings()
    return settings, BrokerAccess(folder or settings.mqtt.access_dir)


def _reload(settings: Settings) -> None:
    pid_file = settings.mqtt.broker_pid_file
    if pid_file is None:
        typer.echo("Now reload the broker: docker compose kill -s HUP mosquitto "
                   "(or kill -HUP <mosquitto pid>); no restart is needed.", err=True)  # fmt: skip
        return
    try:
        reload_broker(int(pid_file.read_text().strip()))
    except (OSError, ValueError) as exc:
        typer.echo(f"Could not signal the broker ({pid_file}): {exc}; reload it by hand.", err=True)
        raise typer.Exit(1) from exc
    typer.echo("Broker reloaded.", err=True)


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
    """Create a CA and the broker's server certificate (in the access folder, with ca.crt).

    The CA's private key stays in --ca-dir, away from the broker; devices get ca.crt.
    The access folder's password file and ACL are created too (service rights only).
    """
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


@app.command("service")
def service_password(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICE_RIGHTS)}.")],
    password_file: Annotated[Path, typer.Option(help="File holding the password.")],
    folder: DirOption = None,
) -> None:
    """Set a service account's password (ingest, detect, escalate, privacy, app) from a file."""
    settings, access = _access(folder)
    try:
        access.set_password(name, password_file.read_text().strip())
    except (AccessError, OSError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"password set for service account {name}")
    _reload(settings)


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
        "protocol": "MQTT 3.1.1 or 5, TLS 1.2+, QoS 1 for every stream",
    }
    if grant is not None:
        info["publish"] = {str(s): grant.topic(s) for s in sorted(STREAMS[grant.kind])}
        info["last_will"] = {"topic": grant.topic(Stream.AVAILABILITY), "payload": "offline",
                             "qos": 1, "retain": True}  # fmt: skip
        info["subscribe"] = grant.command
    return info


@app.command("provision")
def provision(
    device: Annotated[str, typer.Argument(help="Device id, as in its topics.")],
    elder: Annotated[str, typer.Option(help="Pseudonymous elder id the device belongs to.")],
    kind: Annotated[DeviceKind, typer.Option(help="Device kind.")],
    site: Annotated[str | None, typer.Option(help="Site id (default: settings).")] = None,
    url: Annotated[str | None, typer.Option(help="Broker URL devices use.")] = None,
    folder: DirOption = None,
) -> None:
    """Create DEVICE's account and rights; print what the installer needs (password once)."""
    settings, access = _access(folder)
    try:
        grant, credentials = access.provision(
            device, site=site or settings.site, elder=elder, kind=kind
        )
    except AccessError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(_connection(settings, access, credentials, grant, url), indent=2))
    typer.echo("The password is shown only this once; only its hash is kept.", err=True)
    _reload(settings)


@app.command("gateway")
def gateway(
    name: Annotated[str, typer.Argument(help="Gateway account name.")],
    site: Annotated[str | None, typer.Option(help="Site id (default: settings).")] = None,
    url: Annotated[str | None, typer.Option(help="Broker URL the gateway uses.")] = None,
    folder: DirOption = None,
) -> None:
    """Create an account that publishes the device streams of one site (a vendor gateway)."""
    settings, access = _access(folder)
    try:
        credentials = access.add_gateway(name, site=site or settings.site)
    except AccessError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(_connection(settings, access, credentials, None, url), indent=2))
    _reload(settings)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Device or gateway to remove.")],
    folder: DirOption = None,
) -> None:
    """Remove a device's (or gateway's) account and rights; the broker drops it on reload."""
    settings, access = _access(folder)
    try:
        access.revoke(name)
    except AccessError as exc:
        raise _fail(exc) from exc
    typer.echo(f"revoked {name}")
    _reload(settings)


@app.command("list")
def list_devices(folder: DirOption = None) -> None:
    """The provisioned devices, gateways and service accounts (no secrets)."""
    _, access = _access(folder)
    typer.echo(json.dumps(access.describe(), indent=2))

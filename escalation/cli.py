"""``homecare escalate`` runs the escalation service; ``homecare registry`` helps operators."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

registry_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="The elder registry escalation reads."
)


class StoreKind(StrEnum):
    SQLITE = "sqlite"
    CLUSTER = "cluster"


def escalate_command(
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    store: Annotated[
        StoreKind | None,
        typer.Option(
            help="sqlite: state in a file (one site); cluster: state in JetStream "
            "key-value (R3), one active escalate, the others stand by. Default: "
            "HOMECARE_ESCALATE__STORE, else sqlite."
        ),
    ] = None,
) -> None:
    """Escalate alerts to the call centre, families and apps, until SIGTERM."""
    from escalation.channels import default_channels
    from escalation.service import run_service
    from homecare.runtime import (
        configure_logging,
        load_settings,
        stop_on_signals,
        tune_gc_for_service,
    )

    configure_logging(log_level)
    settings = load_settings(servers=True)
    if store is not None:
        settings.escalate.store = store.value
    if settings.escalate.store == "cluster" and settings.escalate.secret is None:
        raise typer.BadParameter(
            "escalate in cluster mode needs HOMECARE_ESCALATE__SECRET (or "
            "__SECRET_FILE), the same for every escalate process"
        )
    if settings.registry is None:
        raise typer.BadParameter("set HOMECARE_REGISTRY to the registry file (YAML)")
    if not settings.nats.url:  # alerts come from its ALERTS stream
        raise typer.BadParameter("set HOMECARE_NATS__URL (nats://host:4222)")
    from escalation.registry import RegistryError, load_registry

    try:
        load_registry(settings.registry)
    except RegistryError as exc:  # at start there is no previous registry to keep
        raise typer.BadParameter(str(exc)) from exc
    from escalation.cluster import LeaseLost

    tune_gc_for_service()
    try:
        stats = run_service(settings, default_channels, stop_on_signals())
    except LeaseLost as exc:  # another escalate is active: exit, to be restarted as a standby
        typer.echo(str(exc), err=True)
        raise typer.Exit(3) from exc
    typer.echo(json.dumps(stats.as_dict()))


@registry_app.command("token")
def token_command(
    contact: Annotated[str, typer.Argument(help="The contact's id in the registry.")],
) -> None:
    """Print a contact's acknowledgement token (derived from the secret; stored nowhere);
    exit 1 when no secret is configured, rather than make one the service does not have."""
    from escalation.registry import ack_token
    from escalation.service import load_secret
    from homecare.runtime import load_settings

    try:
        secret = load_secret(load_settings(), make=False)
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(ack_token(secret, contact))


@registry_app.command("check")
def check_command(
    path: Annotated[Path, typer.Argument(help="The registry file (YAML).")],
) -> None:
    """Validate a registry file; exit 1 naming each invalid field."""
    from escalation.registry import RegistryError, load_registry

    try:
        reg = load_registry(path)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{path}: {len(reg.elders)} elders, {len(reg.contacts)} contacts: valid")

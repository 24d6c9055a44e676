"""``homecare broker``: provision and check the NATS broker's streams and consumers."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from broker.provision import (
    DEFAULT_PARTITIONS,
    DETECT_MAX_ACK_PENDING,
    DETECT_PRIORITY_TIMEOUT_S,
    ProvisionError,
    provision,
    provision_districts,
)
from broker.watchdog import SourceWatchdog
from homecare.consumer import ConsumerError
from homecare.jetstream import INGEST_CONSUMER, check_source
from homecare.settings import Settings

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="The NATS broker's streams and durable consumers.")

NatsUrl = Annotated[
    str, typer.Option("--url", envvar="HOMECARE_NATS__URL", help="The NATS server (nats://…).")
]


@app.command("provision")
def provision_command(
    url: NatsUrl,
    mqtt_url: Annotated[
        str,
        typer.Option(envvar="HOMECARE_MQTT__URL", help="Its MQTT listener (mqtt://host:1883)."),
    ],
    partitions: Annotated[
        int,
        typer.Option(min=1, max=1024, envvar="HOMECARE_NATS__PARTITIONS",
                     help="Partitions of TELEMETRY (fixed once made): what detect is told."),
    ] = DEFAULT_PARTITIONS,
    ack_wait_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds before an unacknowledged message comes again.")
    ] = 30.0,
    max_ack_pending: Annotated[
        int, typer.Option(min=1, help="Messages a consumer may hold unacknowledged.")
    ] = 20_000,
    replicas: Annotated[
        int, typer.Option(min=1, max=5, help="Copies of each stream and consumer (3 on a cluster).")
    ] = 1,
    detect_max_ack_pending: Annotated[
        int, typer.Option(min=1, help="Messages a detect partition may hold unacknowledged "
                          "between two saves of its state.")
    ] = DETECT_MAX_ACK_PENDING,
    detect_priority_timeout_s: Annotated[
        float, typer.Option(min=2.0, help="Seconds a dead detect worker keeps its partitions "
                            "before another takes them.")
    ] = DETECT_PRIORITY_TIMEOUT_S,
) -> None:
    """Create the MQTT streams, TELEMETRY and the durable consumers, before devices connect.

    Idempotent: what exists is kept; what differs where it cannot change is an error.
    On a cluster, ``--url`` may list every node, comma-separated."""
    # The provisioning user (HOMECARE_NATS__CREDS_FILE; over MQTT HOMECARE_MQTT__USERNAME
    # and _PASSWORD_FILE: its JWT) and the CAs, where the server requires them.
    settings = Settings()
    password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
    try:
        done = provision(
            url, mqtt_url=mqtt_url, partitions=partitions, ack_wait_s=ack_wait_s,
            max_ack_pending=max_ack_pending, replicas=replicas, settings=settings.nats,
            mqtt_user=settings.mqtt.username, mqtt_password=password,
            mqtt_ca_file=settings.mqtt.ca_file, detect_max_ack_pending=detect_max_ack_pending,
            detect_priority_timeout_s=detect_priority_timeout_s,
            consumers=() if settings.districts else (INGEST_CONSUMER,),  # by district: below
        )  # fmt: skip
        if settings.districts:  # ingest's consumers, one per district and InfluxDB
            stored = provision_districts(
                url, settings.districts, ack_wait_s=ack_wait_s, max_ack_pending=max_ack_pending,
                replicas=replicas, settings=settings.nats,
            )  # fmt: skip
            done.created.extend(stored.created)
            done.existing.extend(stored.existing)
    except (ProvisionError, ConsumerError) as exc:
        typer.echo(f"provision failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({
        "created": done.created, "existing": done.existing, "retired": done.retired,
        "source_ok": done.source.ok,
        "source": done.source.detail,
    }))  # fmt: skip
    if not done.source.ok:
        raise typer.Exit(1)


@app.command("check")
def check_command(url: NatsUrl) -> None:
    """Exit 0 when TELEMETRY's source is active with no error, else 1 (and say why).

    As the service it runs for (HOMECARE_NATS__CREDS_FILE, HOMECARE_NATS__CA_FILE): a
    refused credential fails at once, not after the wait for a server still starting."""
    settings = Settings()
    try:
        status = check_source(url, settings=settings.nats.model_copy(update={"url": url}))
    except ConsumerError as exc:
        typer.echo(f"check failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"ok": status.ok, "detail": status.detail, "lag": status.lag}))
    if not status.ok:
        raise typer.Exit(1)


@app.command("watch")
def watch_command(
    url: NatsUrl,
    stall_s: Annotated[
        float, typer.Option(min=1, help="Seconds a source may stay inactive before a step-down.")
    ] = 2.0,
    alert_s: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Seconds a source may stay broken before an operations alert "
            "(default: HOMECARE_NATS__SOURCE_ALERT_S, 30).",
        ),
    ] = None,
) -> None:
    """Keep TELEMETRY's and ALERTS's sources flowing on a cluster: when one stays inactive
    after a leader change, ask that stream's leader to step down; when one stays broken,
    raise an operations alert (to the call centre and supervisor), resolved when it
    flows again. One per cluster (or single server). Runs until SIGTERM."""
    from homecare.runtime import stop_on_signals

    nats_settings = Settings().nats.model_copy(update={"url": url})
    watchdog = SourceWatchdog(url, stall_s=stall_s, alert_s=alert_s, settings=nats_settings)
    stats = watchdog.run(stop_on_signals())
    typer.echo(json.dumps({"checks": stats.checks, "step_downs": stats.step_downs,
                           "raised": stats.raised, "resolved": stats.resolved}))  # fmt: skip

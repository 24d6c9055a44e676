"""``homecare rollup``: retention policies, continuous queries and rollup backfills.
(``homecare ingest``, the service, is :func:`ingest_command`.)

homecare rollup install                     # policies and continuous queries (1.x, admin)
homecare rollup run --since 30d             # (re)compute rollups and nights for a range
homecare rollup run --every 1               # hourly, where there are no continuous queries
"""

from __future__ import annotations

import json
import threading
import time
from typing import Annotated

import typer

from homecare.consumer import ConsumerError
from homecare.influx import InfluxClient, InfluxError
from homecare.runtime import (
    configure_logging,
    load_settings,
    moment,
    stop_on_signals,
    tune_gc_for_service,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    short_help="Retention policies, continuous queries and rollup backfills in InfluxDB.",
)


def ingest_command(
    instance: Annotated[
        str, typer.Option(help="Name of this process when several share the load.")
    ] = "",
    district: Annotated[
        str | None,
        typer.Option(help="Store this district's sites (HOMECARE_DISTRICTS) through the "
                     "durable consumer ingest-<district>-<replica>; none: the single store."),
    ] = None,
    replica: Annotated[
        str, typer.Option(help="Which InfluxDB of the district's pair: primary or replica.")
    ] = "primary",
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run the ingest service: TELEMETRY (NATS JetStream) → validate → InfluxDB, until SIGTERM.

    Any number of processes may run on one consumer (the server shares its messages).
    Refuses to start (one line on stderr, exit 1) when the server, the durable consumer
    (``ingest``, or ``ingest-<district>-<replica>``) or TELEMETRY's source is missing: run
    ``homecare broker provision``."""
    from ingest.service import IngestService

    configure_logging(log_level)
    settings = load_settings(influx=district is None)
    tune_gc_for_service()
    try:
        service = IngestService(
            settings, instance=instance or None, district=district, replica=replica
        )
    except ValueError as exc:  # no such district, or it has no replica
        raise typer.BadParameter(str(exc)) from exc
    try:
        stats = service.run(stop_on_signals())
    except ConsumerError as exc:  # SourceMissing among them: it names what is missing
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(stats.as_dict()))


@app.command("install")
def install_command() -> None:
    """Create or alter the retention policies and continuous queries (InfluxDB 1.x, admin)."""
    from ingest.rollups import RollupError, install

    settings = load_settings(influx=True)
    try:
        with InfluxClient(settings.influx) as db:
            changes = install(db, settings.retention)
    except (RollupError, InfluxError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(changes.as_dict()))


@app.command("run")
def run_command(
    since: Annotated[str, typer.Option(help="Start: a span back (2d) or an ISO time.")] = "2d",
    until: Annotated[str, typer.Option(help="End: now, a span back or an ISO time.")] = "now",
    via: Annotated[
        str | None, typer.Option(help="into (server-side, 1.x) or write; default by version.")
    ] = None,
    every: Annotated[
        float | None, typer.Option(min=0.01, help="Repeat every HOURS until SIGTERM.")
    ] = None,
) -> None:
    """Compute the rollups, nights and alert copies for a range (idempotent)."""
    from ingest.rollups import RollupError, run

    settings = load_settings(influx=True)
    stop = stop_on_signals() if every else threading.Event()
    while True:
        now = time.time()
        start, end = moment(since, now), moment(until, now)
        if start >= end:
            raise typer.BadParameter(f"--since {since} is not before --until {until}")
        try:
            with InfluxClient(settings.influx) as db:
                report = run(db, settings.retention, start=start, end=end, via=via)
        except (RollupError, InfluxError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            if every is None:
                raise typer.Exit(1) from exc
        else:
            typer.echo(json.dumps(report.as_dict()))
        if every is None or stop.wait(every * 3600):
            return

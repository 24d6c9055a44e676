"""The ``homecare`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from bench.cli import app as bench_app
from broker.cli import app as broker_app
from care.cli import app as care_app
from certify.cli import certify_command
from dashboards.cli import make_app as dashboards_app
from dashboards.names import Names, distinct
from dashboards.report import make_report_command
from device_sim.cli import app as sim_app
from devices.cli import app as devices_app
from escalation.cli import escalate_command, registry_app
from evaluation.cli import evaluate_command, replay_app, train_fall_command
from homecare import contract
from homecare.runtime import (
    configure_logging,
    load_settings,
    sigterm_as_ctrl_c,
    stop_on_signals,
    tune_gc_for_service,
)
from homecare.schema import ELDER, AlertEscalation
from homecare.settings import settings_table, with_settings_table
from ingest.cli import app as rollup_app
from ingest.cli import ingest_command
from privacy.forget import elder_app
from zigbee.cli import app as zigbee_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def registry_names(path: Path) -> Names:
    """What the boards call people: elders by their registry name (told apart by address
    where two share one) and contacts (the escalation's ``who``) by theirs."""
    from escalation.registry import load_registry

    registry = load_registry(path)
    return {
        ELDER: distinct({e.id: (e.display_name, e.address) for e in registry.elders}),
        AlertEscalation.who: distinct({c.id: (c.name, c.role) for c in registry.contacts}),
    }


contract_app = typer.Typer(no_args_is_help=True, help="The wire contract devices build against.")
app.add_typer(contract_app, name="contract")
app.add_typer(replay_app, name="replay")
app.command("evaluate")(evaluate_command)
app.command("train-fall")(train_fall_command)
app.add_typer(sim_app)
app.command("certify")(certify_command)
app.add_typer(bench_app, name="bench")
baselines_app = typer.Typer(no_args_is_help=True, help="Personal baselines learned from history.")
app.add_typer(baselines_app, name="baselines")
app.command("escalate")(escalate_command)
app.add_typer(registry_app, name="registry")
app.add_typer(rollup_app, name="rollup")
app.add_typer(devices_app, name="devices")
app.add_typer(broker_app, name="broker")
app.add_typer(elder_app, name="elder")
app.add_typer(dashboards_app(registry_names), name="dashboards")
app.add_typer(zigbee_app, name="zigbee")
settings_app = typer.Typer(no_args_is_help=True, help="The settings and their defaults.")
app.add_typer(settings_app, name="settings")
cluster_app = typer.Typer(no_args_is_help=True, help="A local NATS cluster (tests, demo, bench).")
app.add_typer(cluster_app, name="cluster")
app.add_typer(care_app, name="care")


@settings_app.command("table")
def settings_table_command(
    readme: Annotated[
        Path | None, typer.Option(help="Rewrite the settings table inside this README.")
    ] = None,
) -> None:
    """Print every setting (variable, default, what) as Markdown, from the settings models."""
    if readme is None:
        typer.echo(settings_table(), nl=False)
        return
    readme.write_text(with_settings_table(readme.read_text()))
    typer.echo(f"wrote the settings table into {readme}")


@app.callback(help=__doc__)
def on_every_command(ctx: typer.Context) -> None:
    # SIGTERM takes Ctrl-C's path for the whole command, so every child process it starts
    # (servers, services, benchmark workers) is stopped by its context manager.
    ctx.with_resource(sigterm_as_ctrl_c())


@contract_app.command("export")
def contract_export(
    folder: Annotated[Path, typer.Argument(help="Folder to write the JSON Schemas into.")],
) -> None:
    """Write the JSON Schema of every payload and the topic scheme into FOLDER."""
    folder.mkdir(parents=True, exist_ok=True)
    schemas = contract.json_schemas()
    for stream, schema in schemas.items():
        (folder / f"{stream}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    (folder / "topics.json").write_text(json.dumps(contract.topic_scheme(), indent=2) + "\n")
    typer.echo(f"wrote {len(schemas)} payload schemas and topics.json to {folder}")


app.command("ingest")(ingest_command)


@cluster_app.command("up")
def cluster_up_command(
    nodes: Annotated[int, typer.Option(min=1, max=7, help="NATS nodes.")] = 3,
    root: Annotated[
        Path | None, typer.Option(help="Folder for the nodes' stores (default: a temp folder).")
    ] = None,
    sync_interval: Annotated[
        str, typer.Option(help="JetStream fsync: always (loses nothing) or a duration (2m).")
    ] = "always",
    provision_streams: Annotated[
        bool, typer.Option("--provision/--no-provision", help="Provision the streams, R3.")
    ] = True,
    partitions: Annotated[
        int, typer.Option(min=1, max=1024, help="Partitions of TELEMETRY (when provisioning).")
    ] = 64,
) -> None:
    """Start a NATS cluster (JetStream, an MQTT listener per node) on loopback ports, print
    its URLs, and keep it up until Ctrl-C (or SIGTERM)."""
    import tempfile
    import threading
    import time

    from broker.provision import provision
    from broker.watchdog import SourceWatchdog
    from harness.servers import LocalNatsCluster

    with contextlib.ExitStack() as stack:
        folder = root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cluster-")))
        cluster = stack.enter_context(LocalNatsCluster(folder, nodes, sync_interval=sync_interval))
        if provision_streams:
            done = provision(cluster.urls, mqtt_url=cluster.mqtt_url, partitions=partitions,
                             replicas=cluster.replicas)  # fmt: skip
            if not done.source.ok:
                typer.echo(f"provision failed: {done.source.detail}", err=True)
                raise typer.Exit(1)
        # The source watchdog, as a cluster deployment runs it (homecare broker watch).
        watching = threading.Event()
        stack.callback(watching.set)
        watchdog = SourceWatchdog(cluster.urls)
        threading.Thread(target=watchdog.run, args=(watching,), daemon=True).start()
        try:  # the URLs inside: a SIGTERM right after they are read is a clean stop
            typer.echo(json.dumps({
                "HOMECARE_NATS__URL": cluster.urls, "mqtt_urls": cluster.mqtt_urls,
                "HOMECARE_MQTT__URL": cluster.mqtt_url,
                "monitor_urls": [n.monitor_url for n in cluster.nodes],
                "replicas": cluster.replicas, "sync_interval": sync_interval, "store": str(folder),
            }))  # fmt: skip
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            typer.echo("stopping the cluster", err=True)


@cluster_app.command("fsync-cost")
def cluster_fsync_cost_command(
    messages: Annotated[int, typer.Option(min=100, help="QoS 1 publishes per mode.")] = 20_000,
) -> None:
    """Acknowledged MQTT publishes/s on a fresh 3-node cluster with JetStream's default
    fsync (every 2 minutes) and with sync_interval always, in one run."""
    from harness.cluster import fsync_cost

    rates = fsync_cost(messages)
    typer.echo(json.dumps({mode: round(rate) for mode, rate in rates.items()}))


@cluster_app.command("cpu")
def cluster_cpu_command(
    rates: Annotated[
        list[int], typer.Option("--rate", min=1, help="Readings a second; repeat for more.")
    ] = [250, 1000, 4000, 8000],  # noqa: B006 (typer reads it; never mutated)
    seconds: Annotated[float, typer.Option(min=1.0, help="Seconds at each rate.")] = 10.0,
    sync_interval: Annotated[
        str, typer.Option(help="JetStream's sync_interval: always (the cluster's) or 2m.")
    ] = "always",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write figures here.")] = None,
) -> None:
    """The 3-node cluster's CPU idle and at each rate of devices' QoS 1 readings: what
    the broker costs per reading, measured at the rate a site or district runs at."""
    from harness.cluster import broker_cpu

    figures = broker_cpu(rates, seconds=seconds, sync_interval=sync_interval)
    typer.echo(f"idle: {figures['idle_cores']:.2f} cores (sync_interval {sync_interval})")
    for row in figures["rates"]:
        typer.echo(
            f"{row['rate']:>6}/s: acknowledged {row['acknowledged_per_s']:.0f}/s, "
            f"{row['cores']:.2f} cores, {row['us_per_reading']:.0f} µs a reading "
            f"(the publishing devices {row['publisher_cores']:.2f} cores)"
        )
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2))


@app.command("demo")
def demo_command(
    elders: Annotated[int, typer.Option(min=1, help="Simulated elders.")] = 20,
    hours: Annotated[float, typer.Option(min=0.01, help="Simulated hours (accelerated).")] = 24.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated lives.")] = 0,
) -> None:
    """Run the main job: simulated elders → MQTT → ingest → InfluxDB, then a summary."""
    from rich.console import Console

    from harness.demo import print_summary, run_demo

    console = Console()
    result = run_demo(load_settings(), elders=elders, hours=hours, seed=seed, console=console)
    print_summary(result, console)
    if result.lost:
        raise typer.Exit(1)


@app.command("detect")
def detect_command(
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a detect worker on TELEMETRY's partitions; store alerts in ALERTS and InfluxDB,
    until SIGTERM. Start as many as wanted: they share the partitions.

    Refuses to start (exit 1) when the broker lacks the partitions' durable consumers, the
    state bucket, or TELEMETRY's source: run ``homecare broker provision`` first."""
    from detectors.service import DetectService
    from homecare.consumer import ConsumerError

    configure_logging(log_level)
    settings = load_settings(influx=True)
    if not settings.nats.url:
        raise typer.BadParameter("set HOMECARE_NATS__URL")
    service = DetectService(settings)
    tune_gc_for_service()
    try:
        stats = service.run(stop_on_signals())
    except ConsumerError as exc:
        typer.echo(f"detect refuses to start: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(stats.as_dict()))


@baselines_app.command("fit")
def baselines_fit_command(
    days: Annotated[float, typer.Option(min=1, help="Days of history to learn from.")] = 28,
    out: Annotated[
        Path | None, typer.Option(help="File (default <state_dir>/baselines.npz).")
    ] = None,
    full: Annotated[bool, typer.Option(help="Ignore the history cache; query every day.")] = False,
    every: Annotated[
        float | None, typer.Option(min=0.01, help="Refit every HOURS until SIGTERM.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Learn every elder's baselines from InfluxDB; write the file `homecare detect` reloads."""
    from detectors.baselines import refit

    configure_logging(log_level)
    settings = load_settings()
    if not settings.influx.url:
        raise typer.BadParameter("set HOMECARE_INFLUX__URL")
    stop = stop_on_signals()
    while True:
        typer.echo(json.dumps(refit(settings, days=days, path=out, cached=not full)))
        if every is None or stop.wait(every * 3600):
            return


i18n_app = typer.Typer(no_args_is_help=True, help="The message catalogues (homecare/locales).")
app.add_typer(i18n_app, name="i18n")


@i18n_app.command("extract")
def i18n_extract_command(
    add: Annotated[
        str | None, typer.Option(help="Start a new language's catalogue, e.g. fr or zh-TW.")
    ] = None,
) -> None:
    """Merge every word the code says into each catalogue (new words arrive untranslated)."""
    from homecare.catalogues import add_language, update

    if add is not None:
        try:
            typer.echo(
                f"wrote {add_language(add)}: translate its entries, then `homecare i18n check`"
            )
        except FileExistsError as exc:
            raise typer.BadParameter(str(exc)) from exc
        return
    for path in update():
        typer.echo(f"updated {path}")


@i18n_app.command("check")
def i18n_check_command() -> None:
    """Exit 1 while any catalogue lacks a word the code says, or leaves one untranslated."""
    from homecare.catalogues import problems
    from homecare.i18n import available

    found = problems()
    for line in found:
        typer.echo(line)
    if found:
        raise typer.Exit(1)
    typer.echo(f"every word translated in {', '.join(available())}")


def registry_reader(path: Path, elder: str, contact: str | None) -> tuple[str, str | None]:
    """How the family's page names the elder, and in which language (the registry's)."""
    from escalation.registry import load_registry

    return load_registry(path).reader(elder, contact)


app.command("report")(make_report_command(registry_reader))

"""The ``homecare`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from bench import emit
from bench.soak import soak_command
from bench.storage import storage_command
from certify.cli import certify_command
from dashboards.cli import app as dashboards_app
from dashboards.report import report_command
from device_sim.cli import app as sim_app
from devices.cli import app as devices_app
from escalation.cli import escalate_command, registry_app
from evaluation.cli import evaluate_command, replay_app
from homecare import contract
from homecare.runtime import (
    configure_logging,
    load_settings,
    stop_on_signals,
    tune_gc_for_service,
)
from homecare.settings import settings_table, with_settings_table
from ingest.cli import app as rollup_app
from privacy.forget import elder_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
contract_app = typer.Typer(no_args_is_help=True, help="The wire contract devices build against.")
app.add_typer(contract_app, name="contract")
app.add_typer(replay_app, name="replay")
app.command("evaluate")(evaluate_command)
app.add_typer(sim_app)
app.command("certify")(certify_command)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks against the real servers.")
app.add_typer(bench_app, name="bench")
bench_app.command("soak")(soak_command)
bench_app.command("storage")(storage_command)
baselines_app = typer.Typer(no_args_is_help=True, help="Personal baselines learned from history.")
app.add_typer(baselines_app, name="baselines")
app.command("escalate")(escalate_command)
app.add_typer(registry_app, name="registry")
app.add_typer(rollup_app, name="rollup")
app.command("report")(report_command)
app.add_typer(devices_app, name="devices")
app.add_typer(elder_app, name="elder")
app.add_typer(dashboards_app, name="dashboards")
settings_app = typer.Typer(no_args_is_help=True, help="The settings and their defaults.")
app.add_typer(settings_app, name="settings")


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


@app.command("ingest")
def ingest_command(
    instance: Annotated[
        str, typer.Option(help="Name of this process when several share the load.")
    ] = "",
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run the ingest service: MQTT → validate → InfluxDB, until SIGTERM."""
    from ingest.service import IngestService

    configure_logging(log_level)
    settings = load_settings(servers=True)
    tune_gc_for_service()
    stats = IngestService(settings, instance=instance or None).run(stop_on_signals())
    typer.echo(json.dumps(stats.as_dict()))


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


@bench_app.command("ingest")
def bench_ingest_command(
    elders: Annotated[int, typer.Option(min=1, help="Simulated elders.")] = 10000,
    seconds: Annotated[int, typer.Option(min=1, help="Seconds of traffic queued.")] = 20,
    live_seconds: Annotated[int, typer.Option(min=1, help="Real-time phase length.")] = 20,
    gateways: Annotated[int, typer.Option(min=1, help="Publisher connections.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the simulated lives.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write figures here.")] = None,
) -> None:
    """Ingest throughput vs a bare paho subscriber, real-time load and overload."""
    from bench.ingest import run

    report = run(
        elders=elders,
        seconds=seconds,
        live_seconds=live_seconds,
        gateways=gateways,
        seed=seed,
        log=typer.echo,
    )
    emit(report, json_out)


@bench_app.command("escalate")
def bench_escalate_command(
    alerts: Annotated[int, typer.Option(min=1, help="Alerts opened at once per round.")] = 1000,
    rounds: Annotated[int, typer.Option(min=1, help="Bursts measured.")] = 3,
    connections: Annotated[int, typer.Option(min=1, help="Connections to the call centre.")] = 64,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write figures here.")] = None,
) -> None:
    """Alert opening → call centre webhook latency under a burst of simultaneous alerts."""
    from bench.escalate import run

    report = run(alerts=alerts, rounds=rounds, connections=connections, log=typer.echo)
    emit(report, json_out)


@app.command("detect")
def detect_command(
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    site: Annotated[
        list[str] | None, typer.Option(help="A site this shard owns (repeat); else settings.")
    ] = None,
) -> None:
    """Run the detectors on the live streams; publish and store alerts, until SIGTERM."""
    from detectors.service import DetectService, for_sites

    configure_logging(log_level)
    settings = load_settings(servers=True)
    try:
        settings = for_sites(settings, site) if site else settings
    except ValidationError as exc:
        raise typer.BadParameter(f"invalid --site: {exc}") from exc
    service = DetectService(settings)
    tune_gc_for_service()
    stats = service.run(stop_on_signals())
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


@bench_app.command("detect")
def bench_detect_command(
    elders: Annotated[int, typer.Option(min=1, help="Wearables in the throughput run.")] = 10000,
    seconds: Annotated[int, typer.Option(min=1, help="Seconds timed (after 5 s warm-up).")] = 60,
    latency_elders: Annotated[int, typer.Option(min=1, help="Elders published live.")] = 5000,
    latency_seconds: Annotated[
        int, typer.Option(min=0, help="Length of each live phase (burst, spread); 0 skips them.")
    ] = 60,
    events: Annotated[int, typer.Option(min=1, help="SOS presses and falls per phase.")] = 24,
    spread: Annotated[
        int, typer.Option(min=0, help="Slices per second of the spread phase; 0: burst only.")
    ] = 20,
    gateways: Annotated[int, typer.Option(min=1, help="Publisher connections.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the traces and simulated lives.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write figures here.")] = None,
) -> None:
    """Detector throughput on one core against naive Python and River; live alert latency."""
    from bench.detect import run

    report = run(
        elders=elders, seconds=seconds, latency_elders=latency_elders,
        latency_seconds=latency_seconds, events=events, spread=spread, gateways=gateways,
        seed=seed, log=typer.echo,
    )  # fmt: skip
    emit(report, json_out)

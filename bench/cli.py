"""``homecare bench``: the benchmarks' commands.

Light on purpose: the composition root (``cli/main.py``) imports this module to build
``homecare --help``, and each benchmark (with the simulator, the local servers and the
stand-ins it needs) loads only when its command runs, so that the production image runs
without the harness.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "emit"]

app = typer.Typer(no_args_is_help=True, help="Benchmarks against the real servers.")

JsonOut = Annotated[Path | None, typer.Option("--json", help="Write figures here.")]


def emit(report: dict[str, Any], json_out: Path | None) -> None:
    """Print a benchmark's figures as JSON, and write them to ``--json`` when given."""
    text = json.dumps(report, indent=2)
    typer.echo(text)
    if json_out:
        json_out.write_text(text + "\n")


@app.command("ingest")
def bench_ingest_command(
    elders: Annotated[int, typer.Option(min=1, help="Simulated elders.")] = 10000,
    seconds: Annotated[int, typer.Option(min=1, help="Seconds of traffic queued.")] = 20,
    live_seconds: Annotated[int, typer.Option(min=1, help="Real-time phase length.")] = 20,
    gateways: Annotated[int, typer.Option(min=1, help="Publisher connections.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the simulated lives.")] = 0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Only compare the stored rate of 1 and of N ingest workers "
                     "on one consumer, each draining --seconds of queued traffic."),
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Ingest throughput vs a bare JetStream consumer, real-time load and overload (or,
    with --workers, 1 against N workers on one consumer)."""
    from bench.ingest import run, run_workers

    if workers is not None:
        emit(run_workers(elders=elders, seconds=seconds, workers=workers, gateways=gateways,
                         seed=seed, log=typer.echo), json_out)  # fmt: skip
        return
    report = run(
        elders=elders,
        seconds=seconds,
        live_seconds=live_seconds,
        gateways=gateways,
        seed=seed,
        log=typer.echo,
    )
    emit(report, json_out)


@app.command("detect")
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
    save_every_s: Annotated[
        float, typer.Option(min=0.1, help="How often the live detect saves its state.")
    ] = 5.0,
    partitions: Annotated[
        int, typer.Option(min=1, help="TELEMETRY's partitions (one pipeline each in detect).")
    ] = 64,
    json_out: JsonOut = None,
) -> None:
    """Detector throughput on one core against naive Python and River; live alert latency."""
    from bench.detect import run

    report = run(
        elders=elders, seconds=seconds, latency_elders=latency_elders,
        latency_seconds=latency_seconds, events=events, spread=spread, gateways=gateways,
        seed=seed, save_every_s=save_every_s, partitions=partitions, log=typer.echo,
    )  # fmt: skip
    emit(report, json_out)


@app.command("takeover")
def bench_takeover_command(
    partitions: Annotated[int, typer.Option(min=2, help="TELEMETRY's partitions.")] = 16,
    trials: Annotated[int, typer.Option(min=1, help="Workers killed (-9), one at a time.")] = 5,
    cluster: Annotated[bool, typer.Option(help="On the 3-node cluster (R3).")] = False,
    json_out: JsonOut = None,
) -> None:
    """Time for a killed detect worker's partitions to be taken by the other worker."""
    from bench.takeover import run

    emit(run(partitions=partitions, trials=trials, cluster=cluster, log=typer.echo), json_out)


@app.command("escalate")
def bench_escalate_command(
    alerts: Annotated[int, typer.Option(min=1, help="Alerts opened at once per round.")] = 1000,
    rounds: Annotated[int, typer.Option(min=1, help="Bursts measured.")] = 3,
    connections: Annotated[int, typer.Option(min=1, help="Connections to the call centre.")] = 64,
    json_out: JsonOut = None,
) -> None:
    """Alert opening → call centre webhook latency under a burst of simultaneous alerts."""
    from bench.escalate import run

    report = run(alerts=alerts, rounds=rounds, connections=connections, log=typer.echo)
    emit(report, json_out)


@app.command("storage")
def bench_storage_command(
    elders: Annotated[int, typer.Option(min=1, help="Simulated elders.")] = 1,
    days: Annotated[
        float, typer.Option(min=0.1, help="Simulated days (at most the raw retention).")
    ] = 30,
    rate: Annotated[int, typer.Option(min=25, max=100, help="Wearable sample rate, Hz.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the simulated lives.")] = 0,
    json_out: JsonOut = None,
) -> None:
    """InfluxDB storage per elder-year (raw data for its retention, rollups for the year)."""
    from bench.storage import run

    try:
        report = run(elders=elders, days=days, seed=seed, rate=rate, log=typer.echo)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    emit(report, json_out)


@app.command("soak")
def bench_soak_command(
    minutes: Annotated[float, typer.Option(min=0.05, help="Wall-clock length of the soak.")] = 10,
    elders: Annotated[int, typer.Option(min=1, help="Simulated elders.")] = 200,
    speed: Annotated[float, typer.Option(min=1, help="Times faster than real time.")] = 10,
    restart_every: Annotated[
        float, typer.Option(min=1, help="Seconds between restarts (broker, influxd in turn).")
    ] = 120,
    json_out: JsonOut = None,
) -> None:
    """Accelerated traffic through the real servers, restarted under it: lost and memory."""
    from bench.soak import run

    report = run(
        minutes=minutes, elders=elders, speed=speed, restart_every_s=restart_every,
        log=typer.echo,
    )  # fmt: skip
    emit(report, json_out)
    if report["lost"] or not report["ingest_alive"]:
        raise typer.Exit(1)


@app.command("city")
def bench_city_command(
    elders: Annotated[int, typer.Option(min=1, help="Simulated elders, in real time.")] = 5000,
    seconds: Annotated[int, typer.Option(min=3, help="Length of the steady phase.")] = 60,
    cluster: Annotated[
        bool, typer.Option("--cluster/--one-node", help="The 3-node cluster (R3), or one node.")
    ] = False,
    chaos_seconds: Annotated[
        int, typer.Option(min=0, help="Length of each chaos phase (kill -9); 0 skips them.")
    ] = 40,
    ingest_workers: Annotated[int, typer.Option(min=1, help="homecare ingest processes.")] = 2,
    detect_workers: Annotated[int, typer.Option(min=1, help="homecare detect processes.")] = 2,
    events: Annotated[
        int, typer.Option(min=1, help="SOS presses and falls each in the steady phase.")
    ] = 20,
    gateways: Annotated[int, typer.Option(min=1, help="Publisher connections.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the simulated lives.")] = 0,
    json_out: JsonOut = None,
) -> None:
    """The whole pipeline in real time (devices → NATS → ingest, detect → escalate → call
    centre) on one node or the 3-node cluster; then kill -9 a detect worker and a NATS node."""
    from bench.city import run

    report = run(
        elders=elders, seconds=seconds, cluster=cluster, chaos_seconds=chaos_seconds,
        ingest_workers=ingest_workers, detect_workers=detect_workers, events=events,
        gateways=gateways, seed=seed, log=typer.echo,
    )  # fmt: skip
    emit(report, json_out)
    losses = report["losses"]
    if losses["readings_lost"] or losses["alerts_missed"] or losses["alerts_duplicated"]:
        raise typer.Exit(1)


@app.command("sessions")
def bench_sessions_command(
    connections: Annotated[
        list[int], typer.Option(min=1, help="Devices connected at once (repeat for several).")
    ] = [500, 2000],  # noqa: B006  # typer reads the default list; nothing mutates it
    kind: Annotated[
        list[str] | None,
        typer.Option(help="qos1_persistent, qos0_persistent, qos0_clean (default: all)."),
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """What a device's MQTT session and command subscription cost the 3-node cluster:
    memory, JetStream consumers and Raft groups per device, per kind of session."""
    from bench.sessions import KINDS, run

    for k in kind or []:
        if k not in KINDS:
            raise typer.BadParameter(f"{k!r}: one of {', '.join(KINDS)}")
    emit(run(connections=connections, kinds=kind, log=typer.echo), json_out)

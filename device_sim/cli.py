"""``homecare sim``: run simulated homes against a broker.

Real time (``--speed 1``) starts now and runs ``--hours`` of wall time; any other
speed replays the *past* ``--hours`` ending now, N times faster (``--speed 0``: as
fast as the broker acknowledges), so no timestamp lies in the future.

    homecare sim --elders 200 --hours 24 --speed 0 --gateway 4
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from homecare.settings import Settings

if TYPE_CHECKING:  # the simulator loads only when a command runs (every service imports the CLI)
    from device_sim.fleet import FleetStats
    from device_sim.homes import SimConfig

app = typer.Typer(add_completion=False, help=__doc__)


@app.command("sim")
def sim(
    elders: Annotated[int, typer.Option(min=1, help="Number of simulated elders.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same lives.")] = 0,
    site: Annotated[str | None, typer.Option(help="Site id (default: settings).")] = None,
    hours: Annotated[float, typer.Option(min=0.0, help="Simulated hours to run.")] = 24.0,
    speed: Annotated[float, typer.Option(
        min=0.0, help="1 = real time, N = N× faster over the past window, 0 = max.")] = 1.0,
    rate: Annotated[int, typer.Option(min=25, max=100, help="Wearable sample rate, Hz.")] = 50,
    gateway: Annotated[int, typer.Option(
        min=0, help="N connections carrying all devices (0 = one per device).")] = 0,
    broker: Annotated[str | None, typer.Option(
        help="mqtt://host:port (default: HOMECARE_MQTT__URL).")] = None,
    window: Annotated[int, typer.Option(min=1, max=60000,
                                        help="Most unacknowledged messages.")] = 20000,
    ambient: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of homes with a motion sensor per room and bed and "
        "chair mats (0.5: every second home).")] = 0.5,
) -> None:
    """Simulate ELDERS homes and publish their devices' traffic at QoS 1."""
    from device_sim.homes import SimConfig

    settings = Settings()
    url = broker or settings.mqtt.url
    if not url:
        raise typer.BadParameter("no broker: pass --broker or set HOMECARE_MQTT__URL",
                                 param_hint="--broker")
    now = math.floor(time.time())
    start = now if speed == 1.0 else now - hours * 3600.0
    config = SimConfig(elders=elders, seed=seed, site=site or settings.site,
                       start=float(start), rate=rate, ambient=ambient)
    password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
    ca_file = str(settings.mqtt.ca_file) if settings.mqtt.ca_file else None
    stats = asyncio.run(_run(config, url, hours, None if speed == 0 else speed, gateway,
                             window, settings.mqtt.username, password, ca_file))
    typer.echo(_summary(stats))


async def _run(config: SimConfig, url: str, hours: float, speed: float | None, gateways: int,
               window: int, username: str | None, password: str | None,
               ca_file: str | None) -> FleetStats:
    from device_sim.fleet import Fleet
    from device_sim.homes import Simulation

    t0 = time.perf_counter()
    simulation = Simulation(config)
    typer.echo(f"{config.elders} elders planned in {time.perf_counter() - t0:.1f} s; "
               f"publishing {hours:g} h to {url} "
               f"({'max speed' if speed is None else f'speed {speed:g}'}, "
               f"{gateways or 'one connection per device'} "
               f"{'gateways' if gateways else ''})".rstrip())
    async with Fleet(simulation, url, gateways=gateways, window=window, username=username,
                     password=password, ca_file=ca_file) as fleet:
        end = config.start + hours * 3600.0
        chunk = 60.0 if speed is None or speed > 10 else 10.0
        while simulation.clock < end - 1e-9:
            await fleet.run(until=min(simulation.clock + chunk, end), speed=speed)
            typer.echo(_summary(fleet.stats))
    return fleet.stats


def _summary(stats: FleetStats) -> str:
    streams = ", ".join(f"{s}={n}" for s, n in stats.per_stream.items())
    return (f"{stats.sim_seconds} s simulated, {stats.acked} acked "
            f"({stats.rate:.0f}/s, {stats.pending} pending, {stats.reconnects} reconnects): "
            f"{streams}")


@app.command("sim-home")
def sim_home(
    out: Annotated[Path, typer.Argument(help="Where to write the home log (CSV).")],
    days: Annotated[int, typer.Option(min=1, help="Days to simulate.")] = 14,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same lives.")] = 0,
    elder: Annotated[int, typer.Option(min=0, help="Which elder of the seed's cohort.")] = 0,
    first_day: Annotated[int, typer.Option(
        help="First local day (days since 1970-01-01).")] = 20_362,
) -> None:
    """Write a simulated elder's days as a home's ambient-sensor log (motion sensors, door
    contacts, bed and chair mats, the flush), for `homecare replay events` / `evaluate --home`."""
    from device_sim.ambient import ambient_events, write_home_log
    from device_sim.routine import make_profile, plan_day

    profile = make_profile(seed, elder)
    events = [e for d in range(first_day, first_day + days)
              for e in ambient_events(plan_day(profile, seed, elder, d))]
    rows = write_home_log(events, out, utc_offset_s=profile.utc_offset_s)
    typer.echo(f"{out}: {rows} events, {days} days of elder {elder} (seed {seed})")

"""``homecare care …``: the signs' evaluation, the weekly plan, the visit register, reports.

Each command imports what it needs when it runs, so ``homecare --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    no_args_is_help=True, help="Proactive care: who to visit or call, the visit register."
)


@app.command("evaluate")
def evaluate_command(
    elders: Annotated[int, typer.Option(min=20, help="Simulated elders.")] = 400,
    days: Annotated[int, typer.Option(min=49, help="Simulated days.")] = 126,
    seed: Annotated[int, typer.Option(help="The cohort's seed.")] = 0,
    every: Annotated[int, typer.Option(min=1, max=7, help="Days between runs.")] = 1,
) -> None:
    """Measure the signs of decline on a simulated cohort (gradual declines, hospital
    stays, stable elders): the share of declines flagged within 14 days, and of stable
    elders flagged in a month. Exit 1 when a target is missed."""
    from care.evaluate import evaluate

    result = evaluate(elders=elders, days=days, seed=seed, every=every)
    typer.echo(json.dumps(result.as_dict(), indent=2))
    if not result.met():
        raise typer.Exit(1)


def _context() -> tuple[Any, Any, Any, Any]:
    """(settings, register, registry, policy), or a clear error naming what is missing."""
    from care.policy import PolicyError, load_policy
    from care.register import Register, register_path
    from escalation.registry import RegistryError, load_registry
    from homecare.runtime import load_settings

    settings = load_settings()
    if settings.registry is None:
        raise typer.BadParameter("set HOMECARE_REGISTRY (the elder registry)")
    try:
        registry = load_registry(settings.registry)
        policy = load_policy(settings.care.policy)
    except (RegistryError, PolicyError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    return settings, Register(register_path(settings.state_dir)), registry, policy


@app.command("plan")
def plan_command(
    site: Annotated[str, typer.Option(help="The site to plan.")],
    limit: Annotated[int, typer.Option(min=1, help="Rows to print.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, not text.")] = False,
    language: Annotated[
        str | None,
        typer.Option("--lang", help="The reasons' language (zh-CN, en); default: the site's."),
    ] = None,
    refresh: Annotated[
        bool, typer.Option(help="Recompute the week's signs from InfluxDB first.")
    ] = True,
) -> None:
    """Who to visit or call this week at SITE, ranked, with the reasons; overdue first."""
    import time

    from care import texts
    from care.service import refresh_signs, site_plan
    from homecare.i18n import LanguageError, translator
    from homecare.influx import InfluxClient, InfluxError

    settings, register, registry, policy = _context()
    try:
        tr = translator(language or registry.provider_for(site).language)
    except LanguageError as exc:
        raise typer.BadParameter(str(exc)) from exc
    now = time.time()
    alerts: dict[str, dict[str, int]] = {}
    if refresh and settings.influx.url:
        try:
            with InfluxClient(settings.influx) as db:
                _, alerts = refresh_signs(db, register, registry, site, now=now,
                                          utc_offset_h=settings.retention.utc_offset_h)  # fmt: skip
        except InfluxError as exc:
            typer.echo(f"signs not refreshed (the last ones are used): {exc}", err=True)
    rows = [r for r in site_plan(register, registry, policy, site, now=now, alerts=alerts, tr=tr)
            if r.this_week][:limit]  # fmt: skip
    for i, r in enumerate(rows, 1):
        if as_json:
            typer.echo(json.dumps(r.as_dict()))
        else:
            head = f"{i:3d}. {r.name} ({r.elder}): {tr.gettext(texts.CONTACT_WORDS[r.contact])}"
            typer.echo(head + "".join(f"\n       - {reason}" for reason in r.reasons))
    register.close()


worker_app = typer.Typer(no_args_is_help=True, help="Community workers' accounts.")
app.add_typer(worker_app, name="worker")


@worker_app.command("add")
def worker_add(
    name: Annotated[str, typer.Argument(help="The worker's login name.")],
    site: Annotated[str, typer.Option(help="The one site the worker sees.")],
    password_file: Annotated[
        Path | None, typer.Option(help="Read the password from this file (default: ask).")
    ] = None,
    language: Annotated[
        str | None,
        typer.Option("--lang", help="What the worker reads (zh-CN, en); default: the site's."),
    ] = None,
) -> None:
    """Create a worker's account, or reset its password and site (ends their sessions)."""
    from care.register import Register, RegisterError, register_path
    from homecare.runtime import load_settings

    settings = load_settings()
    if password_file is not None:
        password = password_file.read_text().strip()
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    register = Register(register_path(settings.state_dir))
    try:
        register.add_worker(name, site, password, language)
    except RegisterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        register.close()
    typer.echo(f"worker {name} can log in to site {site}")


@app.command("serve")
def serve_command() -> None:
    """Serve the visit register's page and API; recompute signs and tell coordinators of
    overdue visits and open follow-ups every ``HOMECARE_CARE__REFRESH_S``."""
    import asyncio

    from care.web import serve

    settings, register, _, policy = _context()
    try:
        asyncio.run(serve(settings, register, policy))
    except KeyboardInterrupt:
        pass
    finally:
        register.close()


@app.command("notify")
def notify_command() -> None:
    """Tell each site's coordinator of overdue contacts and follow-ups left open (once each)."""
    import asyncio
    import time

    from care.service import send_notices

    settings, register, registry, policy = _context()
    try:
        sent = asyncio.run(send_notices(settings, register, registry, policy, now=time.time()))
    finally:
        register.close()
    typer.echo(json.dumps([d.model_dump() for d in sent], indent=2))


@app.command("report")
def report_command(
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: this month).")] = None,
    site: Annotated[str | None, typer.Option(help="One site (default: every site).")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Write the CSV here.")] = None,
    language: Annotated[
        str | None,
        typer.Option(
            "--lang",
            help="Headers in words of this language (zh-CN, en) for "
            "people, not the column names for scripts.",
        ),
    ] = None,
    write: Annotated[
        bool, typer.Option(help="Write the figures to InfluxDB for the care dashboard.")
    ] = True,
) -> None:
    """The monthly visit rate per site and group against its target, visits per worker,
    open follow-ups: printed as CSV (or written to --csv) and written for the dashboard."""
    import time

    from care.report import month_report, to_csv, write_points
    from homecare.i18n import LanguageError, translator
    from homecare.influx import InfluxClient

    settings, register, registry, policy = _context()
    try:
        tr = translator(language) if language else None
    except LanguageError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        report = month_report(register, registry, policy, month=month, now=time.time(),
                              site=site)  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        register.close()
    text = to_csv(report, tr)
    if csv_file is not None:
        csv_file.write_text(text)
    else:
        typer.echo(text, nl=False)
    if write and settings.influx.url:
        with InfluxClient(settings.influx) as db:
            n = write_points(db, report)
        typer.echo(f"{n} points written for {report.month}", err=True)


@app.command("bench")
def bench_command(
    elders: Annotated[int, typer.Option(min=10, help="Elders on the one site.")] = 5000,
    rounds: Annotated[int, typer.Option(min=1, help="Times each request is timed.")] = 5,
) -> None:
    """Time the register's page, plan API and a recorded visit with a site of ELDERS."""
    from care.bench import bench

    typer.echo(json.dumps(bench(elders=elders, rounds=rounds), indent=2))

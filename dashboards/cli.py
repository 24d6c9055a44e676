"""``homecare dashboards``: the Grafana dashboards as JSON files, or published to a Grafana.

homecare dashboards build [DIR]     # JSON into the provisioning folder (default below)
homecare dashboards push            # to HOMECARE_GRAFANA__URL with __TOKEN (or __TOKEN_FILE)
homecare dashboards build --lang zh-CN   # only the Chinese boards (default: every language)
homecare dashboards build --registry registry.yaml   # people by name (default: HOMECARE_REGISTRY)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from dashboards.names import Names
from homecare.errors import ConfigError
from homecare.i18n import LanguageError, valid_language
from homecare.settings import Settings

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"
"""The provisioning folder docker-compose mounts into Grafana."""

Languages = Annotated[
    list[str] | None,
    typer.Option("--lang", help="Build these languages (repeatable; default: every shipped one)."),
]


RegistryPath = Annotated[
    Path | None,
    typer.Option("--registry", help="Show people by their names in this elder registry "
                 "(default: HOMECARE_REGISTRY; without one, boards show ids)."),
]  # fmt: skip

NamesFrom = Callable[[Path], Names]
"""Reads the names a board may show from the elder registry; the composition root gives it
(the registry belongs to escalation, which the dashboards do not import)."""


def _names(names_from: NamesFrom | None, path: Path | None) -> Names | None:
    if path is None:
        try:
            path = Settings().registry
        except ValidationError as exc:
            raise typer.BadParameter(f"invalid settings: {exc}") from exc
    if path is None or names_from is None:
        return None
    try:
        return names_from(path)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _languages(lang: list[str] | None) -> list[str] | None:
    try:
        return [valid_language(x) for x in lang] if lang else None
    except LanguageError as exc:
        raise typer.BadParameter(str(exc)) from exc


def make_app(names_from: NamesFrom | None = None) -> typer.Typer:
    """The ``homecare dashboards`` commands; ``names_from`` lets ``build`` and ``push`` show
    people by name."""
    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        help=__doc__,
        short_help="The Grafana dashboards: build the JSON files, or publish to a Grafana.",
    )

    @app.command("build")
    def build_command(
        folder: Annotated[
            Path, typer.Argument(help="Where to write <uid>.json (Grafana's provisioning folder).")
        ] = DEFAULT_DIR,
        lang: Languages = None,
        registry: RegistryPath = None,
    ) -> None:
        """Write every dashboard's JSON into FOLDER (a rebuild of unchanged code changes nothing).

        Hours of day follow the site's local time, HOMECARE_RETENTION__UTC_OFFSET_H."""
        from dashboards.publish import write  # the SDK loads only for this command

        try:
            local = Settings().retention.utc_offset_h
        except ValidationError as exc:
            raise typer.BadParameter(f"invalid settings: {exc}") from exc
        names = _names(names_from, registry)
        paths = write(folder, utc_offset_h=local, languages=_languages(lang), names=names)
        typer.echo(f"wrote {len(paths)} dashboards to {folder}")

    @app.command("push")
    def push_command(lang: Languages = None, registry: RegistryPath = None) -> None:
        """Publish every dashboard to an existing Grafana (folder "Homecare", overwriting)."""
        languages = _languages(lang)
        from dashboards.publish import PushError, push

        try:
            settings, local = Settings().grafana, Settings().retention.utc_offset_h
        except ValidationError as exc:
            raise typer.BadParameter(f"invalid settings: {exc}") from exc
        if not settings.url or settings.token is None:
            raise typer.BadParameter(
                "set HOMECARE_GRAFANA__URL and HOMECARE_GRAFANA__TOKEN (or __TOKEN_FILE)"
            )
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            answers = push(settings.url, settings.token.get_secret_value(),
                           timeout_s=settings.timeout_s, utc_offset_h=local,
                           languages=languages, names=_names(names_from, registry))  # fmt: skip
        except PushError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        for answer in answers:
            typer.echo(
                f"{answer.get('uid')}: version {answer.get('version')} {answer.get('url', '')}"
            )

    @app.command("datasources")
    def datasources_command(
        path: Annotated[
            Path,
            typer.Argument(help="The provisioning file to write (Grafana's datasources folder)."),
        ] = DEFAULT_DIR.parent / "provisioning" / "datasources" / "influxdb.yml",
    ) -> None:
        """Write Grafana's InfluxDB datasources: one per InfluxDB of every district's pair
        (HOMECARE_DISTRICTS), or the single store. Grafana has no failover between two URLs:
        every dashboard's InfluxDB drop-down lists them, a monitor picks a district's replica
        there when its primary does not answer."""
        from dashboards.datasources import write

        try:
            settings = Settings()
        except ValidationError as exc:
            raise typer.BadParameter(f"invalid settings: {exc}") from exc
        typer.echo(f"wrote {write(settings, path)}")

    return app

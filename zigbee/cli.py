"""``homecare zigbee``: a home's Zigbee2MQTT devices onto the platform.

homecare zigbee check MAPPING                        # read and show a mapping file
homecare zigbee translate MAPPING RECORDED           # recorded `mosquitto_sub -v` lines
homecare zigbee bridge MAPPING --source mqtt://gateway:1883   # live, to HOMECARE_MQTT__URL
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from homecare.runtime import configure_logging, load_settings, stop_on_signals
from homecare.settings import MqttSettings
from zigbee.adapter import Adapter
from zigbee.mapping import MappingError, load_mapping

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    short_help="Zigbee2MQTT homes: check a mapping, translate recordings, bridge live.",
)


def _mapping(path: Path) -> Adapter:
    try:
        return Adapter(load_mapping(path))
    except MappingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("check")
def check(mapping: Annotated[Path, typer.Argument(help="The home's mapping file (TOML).")]) -> None:
    """Read a mapping file; print each friendly name's contract topic prefix."""
    adapter = _mapping(mapping)
    m = adapter.mapping
    for name, d in m.devices.items():
        where = d.room or d.role or d.place
        typer.echo(f"{m.base_topic}/{name} -> homecare/v1/{m.site}/{d.elder}/{d.kind}/"
                   f"{d.device}/… ({where})")  # fmt: skip


@app.command("translate")
def translate(
    mapping: Annotated[Path, typer.Argument(help="The home's mapping file (TOML).")],
    recorded: Annotated[
        Path, typer.Argument(help="Lines 'TOPIC PAYLOAD' as `mosquitto_sub -v` prints them.")
    ],
    received: Annotated[
        float, typer.Option(help="Receive time (Unix s) for payloads without last_seen.")
    ] = 0.0,
) -> None:
    """Translate recorded Zigbee2MQTT messages; one JSON line per contract message, dead
    letters on stderr naming the line (exit status 1 if any)."""
    import time

    adapter = _mapping(mapping)
    now = received or time.time()
    dead_count = 0
    base = adapter.mapping.base_topic + "/"
    for number, line in enumerate(recorded.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        topic, payload = _split(line, base)
        out, dead = adapter.translate(topic, payload.encode(), received=now)
        for message in out:
            sys.stdout.write(json.dumps({"topic": message.topic, "retain": message.retain,
                                         "payload": message.payload.decode()}) + "\n")  # fmt: skip
        for letter in dead:
            dead_count += 1
            typer.echo(f"error: {recorded}:{number}: {letter.reason}: {letter.detail}", err=True)
    sys.stdout.flush()
    if dead_count:
        raise typer.Exit(1)


def _split(line: str, base: str) -> tuple[str, str]:
    """A recorded line's topic and payload; a friendly name may hold spaces, so the topic
    ends where the JSON (or the availability word) begins."""
    brace = line.find(" {")
    if line.startswith(base) and brace > 0:
        return line[:brace], line[brace + 1 :]
    topic, _, payload = line.rpartition(" ")
    return (topic, payload) if topic else (line, "")


@app.command("bridge")
def bridge(
    mapping: Annotated[Path, typer.Argument(help="The home's mapping file (TOML).")],
    source: Annotated[
        str, typer.Option(help="Zigbee2MQTT's broker, mqtt://host:1883 (or mqtts://).")
    ],
    source_username: Annotated[str | None, typer.Option(help="Its account.")] = None,
    source_password_file: Annotated[
        Path | None, typer.Option(help="A file holding its password.")
    ] = None,
    dead_letters: Annotated[
        Path | None, typer.Option(help="Append dead letters here (JSON lines).")
    ] = None,
    client_id: Annotated[str, typer.Option(help="MQTT client id prefix.")] = "homecare-zigbee",
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Bridge a home's Zigbee2MQTT devices to the platform's MQTT listener
    (HOMECARE_MQTT__URL and its account) until SIGTERM."""
    from zigbee.bridge import Bridge

    configure_logging(log_level)
    adapter = _mapping(mapping)
    target = load_settings().mqtt
    src = MqttSettings(url=source, username=source_username, password_file=source_password_file)
    runner = Bridge(adapter, src, target, client_id=client_id, dead_letters=dead_letters)
    stop = stop_on_signals()

    def watch() -> None:
        stop.wait()
        runner.stop()

    threading.Thread(target=watch, daemon=True).start()
    runner.run()

"""``homecare certify``: run the conformance suite against one device and write the report.

    homecare certify --device w0042 --kind wearable                 # kit starts NATS Server
    homecare certify --device b7 --kind bed --broker mqtt://10.0.0.5:1883 --non-interactive
    homecare certify --kind wearable --simulate reference --non-interactive   # the reference

Exit status: 0 certified, 1 a check failed, 3 incomplete (checks skipped).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from homecare.contract import DeviceKind

EXIT_FAIL, EXIT_INCOMPLETE = 1, 3


def certify_command(
    kind: Annotated[DeviceKind, typer.Option(help="What the device is.")],
    device: Annotated[str, typer.Option(help="Device id, as in its topics.")] = "",
    broker: Annotated[str | None, typer.Option(
        help="mqtt:// or mqtts:// URL of the broker the device uses (default: "
             "HOMECARE_MQTT__URL; neither: the kit starts its own NATS Server).")] = None,
    local_broker: Annotated[bool, typer.Option(
        "--local-broker", help="Start a local NATS Server even if HOMECARE_MQTT__URL is set "
                               "(needed for the broker outage check).")] = False,
    listen: Annotated[str | None, typer.Option(
        help="With a local broker: its MQTT listener on HOST:PORT (e.g. 0.0.0.0:1883), for "
             "a device on the network.")
    ] = None,
    duration: Annotated[float, typer.Option(
        min=0, help="Seconds of passive observation before the staged steps.")] = 600.0,
    outage: Annotated[float, typer.Option(
        min=0.5, help="Seconds the local broker is stopped (the procedure: 30).")] = 30.0,
    falls: Annotated[int, typer.Option(min=0, help="Staged test falls (wearables).")] = 3,
    lookalikes: Annotated[int, typer.Option(
        min=0, help="Staged look-alike movements, e.g. sitting down hard (wearables).")] = 3,
    stage_seconds: Annotated[float, typer.Option(
        min=15, help="Recording time of each staged movement.")] = 20.0,
    will_timeout: Annotated[float, typer.Option(
        min=1, help="Seconds to wait for the last will after power-off.")] = 90.0,
    interactive: Annotated[bool, typer.Option(
        "--interactive/--non-interactive",
        help="Prompt the operator for the staged steps, or skip them (and say so).")] = True,
    out: Annotated[Path, typer.Option(help="Folder for report.json and certificate.html.")
    ] = Path("certification"),
    simulate: Annotated[str | None, typer.Option(
        help="Certify a simulated device: 'reference' or a faulty one "
             "(meters_per_s2, no_last_will, clock_ahead, dropped_frames, wrong_topic, "
             "id_mismatch, oversized, qos0_events, online_not_retained).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated device.")] = 0,
    lang: Annotated[str | None, typer.Option(
        help="Language of the certificate, e.g. zh-CN (default: English).")] = None,
) -> None:
    """Certify a device against the wire contract: JSON report and HTML certificate."""
    from pydantic import ValidationError

    from homecare.i18n import LanguageError, valid_language

    try:
        lang = valid_language(lang) if lang else None
    except LanguageError as exc:
        raise typer.BadParameter(str(exc)) from exc

    from certify.faulty import FAULTY
    from certify.kit import CertifyOptions, certify
    from certify.observer import ObserverError
    from certify.prompts import ConsoleOperator, NoOperator, Operator
    from certify.reference import Fault
    from certify.report import build_report, write_report
    from harness.servers import ServerError
    from homecare.settings import MqttSettings, Settings

    fault = None
    if simulate is not None:
        if simulate != "reference" and simulate not in FAULTY:
            raise typer.BadParameter(f"unknown device {simulate!r}: reference or one of "
                                     f"{', '.join(FAULTY)}", param_hint="--simulate")
        fault = Fault() if simulate == "reference" else FAULTY[simulate].fault
        if simulate != "reference" and FAULTY[simulate].kind is not kind:
            raise typer.BadParameter(f"{simulate} is a {FAULTY[simulate].kind}",
                                     param_hint="--kind")
    elif not device:
        raise typer.BadParameter("give the device id (or --simulate)", param_hint="--device")
    try:
        mqtt = Settings().mqtt
        if local_broker:
            mqtt = MqttSettings()
        elif broker:
            mqtt = MqttSettings.model_validate({**mqtt.model_dump(), "url": broker})
    except ValidationError as exc:
        raise typer.BadParameter(f"invalid broker settings: {exc}") from exc
    operator: Operator = ConsoleOperator(sys.stdin, sys.stdout) if interactive else NoOperator()
    options = CertifyOptions(device=device, kind=kind, duration_s=duration, outage_s=outage,
                             falls=falls, lookalikes=lookalikes, stage_s=stage_seconds,
                             will_timeout_s=will_timeout)
    try:
        evidence = certify(options, mqtt=mqtt, operator=operator, simulate=fault, seed=seed,
                           listen=listen, log=typer.echo)
    except (ObserverError, ServerError, ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    report = build_report(evidence)
    for check in report.checks:
        typer.echo(f"{check.status.upper():8} {check.id:15} {check.summary}")
        if check.fix:
            typer.echo(f"{'':24} fix: {check.fix}")
    json_path, html_path = write_report(report, out, lang)
    typer.echo(f"{report.result.upper()}: {report.device} ({report.model or 'model unknown'}, "
               f"firmware {report.firmware or 'unknown'}); wrote {json_path} and {html_path}")
    if report.result == "fail":
        raise typer.Exit(EXIT_FAIL)
    if report.result == "incomplete":
        raise typer.Exit(EXIT_INCOMPLETE)

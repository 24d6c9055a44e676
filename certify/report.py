"""The report: JSON for machines, an HTML certificate for people.

Both carry the device (id, model, vendor, firmware, from its status reports), the
contract version, the date, how the session ran (broker, mode, durations, what was
shortened or skipped), every check with its verdict, evidence and fix, and the overall
result: ``pass`` (every check passed), ``fail`` (any failed) or ``incomplete`` (none
failed, some could not run — not a certificate).

The JSON stays in English (machines read it); the certificate is in the reader's
language (``homecare certify --lang zh-CN``): its headings, verdicts, facts and check
titles, and each check's summary, evidence and fix (:class:`certify.checks.Text`);
only what quotes the device (topics, payload errors, ids) stays as the device sent it.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from certify.checks import CheckResult, run_checks
from certify.kit import Evidence
from homecare.contract import CONTRACT_VERSION, PAYLOADS, DeviceStatus, Stream, Topic
from homecare.i18n import Translator, translator

Result = Literal["pass", "fail", "incomplete"]


class Report(BaseModel):
    device: str
    kind: str
    site: str | None
    elder: str | None
    model: str | None
    vendor: str | None
    firmware: str | None
    contract_version: str
    date: str
    broker: str
    mode: str
    settings: dict[str, float]
    result: Result
    notes: list[str]
    checks: list[CheckResult]

    @property
    def failed(self) -> list[str]:
        return [c.id for c in self.checks if c.status == "fail"]


def overall(checks: list[CheckResult]) -> Result:
    """``fail`` beats ``incomplete`` beats ``pass``.

    >>> ok = CheckResult(id="qos", title="QoS", status="pass", summary="")
    >>> overall([ok]), overall([ok, ok.model_copy(update={"status": "skipped"})])
    ('pass', 'incomplete')
    """
    states = {c.status for c in checks}
    if "fail" in states:
        return "fail"
    return "incomplete" if "skipped" in states else "pass"


def _identity(ev: Evidence) -> tuple[DeviceStatus | None, str | None, str | None]:
    """The device's last valid status report, and its site and elder from its topics."""
    last, site, elder = None, None, None
    for m in ev.messages:
        try:
            topic = Topic.parse(m.topic)
        except ValueError:
            continue
        if topic.device != ev.options.device:
            continue
        site, elder = topic.site, topic.elder
        if topic.stream is Stream.STATUS:
            try:
                status = PAYLOADS[Stream.STATUS].model_validate_json(m.payload)
            except ValueError:
                continue
            assert isinstance(status, DeviceStatus)
            last = status
    return last, site, elder


def build_report(ev: Evidence) -> Report:
    checks = run_checks(ev)
    status, site, elder = _identity(ev)
    o = ev.options
    settings = {k: float(v) for k, v in asdict(o).items() if isinstance(v, int | float)}
    return Report(
        device=o.device, kind=str(o.kind), site=site, elder=elder,
        model=status.model if status else None, vendor=status.vendor if status else None,
        firmware=status.firmware if status else None, contract_version=CONTRACT_VERSION,
        date=datetime.fromtimestamp(ev.started, UTC).isoformat(timespec="seconds"),
        broker=ev.broker, mode=ev.mode, settings=settings, result=overall(checks),
        notes=list(ev.notes), checks=checks,
    )


_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "skipped": "#9a6700", "incomplete": "#9a6700"}


def _to_html(report: Report, tr: Translator | None = None) -> str:
    """A self-contained HTML certificate (no scripts, no external files)."""
    tr = tr or translator()
    _ = tr.gettext
    e = html.escape
    verdict = {"pass": _("CERTIFIED"), "fail": _("NOT CERTIFIED"),
               "incomplete": _("INCOMPLETE — not certified")}[report.result]
    status = {"pass": _("PASS"), "fail": _("FAIL"), "skipped": _("SKIPPED")}
    session = ", ".join(f"{k} {v:g}" for k, v in report.settings.items())
    facts = [(_("Device"), report.device), (_("Kind"), report.kind), (_("Model"), report.model),
             (_("Vendor"), report.vendor), (_("Firmware"), report.firmware),
             (_("Contract version"), report.contract_version), (_("Date (UTC)"), report.date),
             (_("Broker"), report.broker), (_("Mode"), report.mode), (_("Session"), session)]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v or '—')}</td></tr>" for k, v in facts)
    fix_word = _("Fix:")
    checks = []
    for c in report.checks:
        summary, said, fixed = c.words(tr)
        evidence = "".join(f"<li>{e(x)}</li>" for x in said)
        fix = f'<p class="fix"><b>{e(fix_word)}</b> {e(fixed)}</p>' if fixed else ""
        checks.append(
            f'<tr id="{e(c.id)}"><td><b style="color:{_COLOURS[c.status]}">'
            f"{e(status.get(c.status, c.status.upper()))}</b></td><td><b>{e(_(c.title))}</b> "
            f"<code>{e(c.id)}</code><p>{e(summary)}</p>"
            f"{f'<ul>{evidence}</ul>' if evidence else ''}{fix}</td></tr>"
        )
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    title = _("homecare certificate: {device}").format(device=report.device)
    heading, notes_h, checks_h = (_("homecare device certification"), _("Notes"), _("Checks"))
    return (
        f'<!DOCTYPE html>\n<html lang="{e(tr.language)}"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4em;"
        "text-align:left;vertical-align:top}p{margin:.2em 0}.fix{color:#555}</style></head>"
        f"<body><h1>{e(heading)}</h1>"
        f'<h2 style="color:{_COLOURS[report.result]}">{e(verdict)}</h2>'
        f"<table>{rows}</table>"
        + (f"<h3>{e(notes_h)}</h3><ul>{notes}</ul>" if notes else "")
        + f"<h3>{e(checks_h)}</h3><table>{''.join(checks)}</table></body></html>\n"
    )


def write_report(report: Report, folder: Path, language: str | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``certificate.html`` (in ``language``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "certificate.html"
    json_path.write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    html_path.write_text(_to_html(report, translator(language)))
    return json_path, html_path

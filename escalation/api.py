"""The acknowledgement API: a small HTTP server on aiohttp's low-level web server.

aiohttp (the channels' HTTP client too) parses and frames; the routing is
:meth:`AckServer.route`, plain and testable without a socket. Three routes, nothing else:

- ``GET /health`` — liveness, for the compose healthcheck.
- ``POST /alerts/<id>/ack`` with ``contact`` and ``token`` in the query, a JSON body or
  a form body; an ``outcome`` resolves.
- ``POST /alerts/<id>/resolve`` with ``contact``, ``token`` and ``outcome``.

A ``GET`` on either (the link in an email or SMS) changes nothing: mail scanners and
link previews fetch links too. It answers a small HTML page saying what the alert is,
with a button that POSTs; a browser's POST (one that accepts ``text/html``) is answered
with a page saying what was done. Pages are in the contact's language (else the site's).
Other answers are JSON: 200, 400 (malformed), 403 (invalid token), 404 (unknown alert or
route), 409 (already closed), 413 (body over 64 KiB).
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from escalation.ladder import OUTCOMES, AckResult
from escalation.messages import outcome_words, state_words
from homecare.i18n import translator

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
ROUTE = re.compile(r"^/alerts/([A-Za-z0-9_-]{1,64})/(ack|resolve)$")

Acknowledge = Callable[[str, dict[str, str], str], AckResult]
"""(alert id, fields, action) → the answer; the service's bridge to the ladder."""

Describe = Callable[[str, str, str], AckResult]
"""(alert id, contact, token) → the alert in words; changes nothing."""


def parse_fields(target: str, body: bytes) -> dict[str, str]:
    """The query string and a JSON object (or an HTML form's) body, merged;
    ``ValueError`` if malformed.

    >>> parse_fields("/alerts/a/ack?contact=anna&token=t", b'{"outcome": "visit"}')
    {'contact': 'anna', 'token': 't', 'outcome': 'visit'}
    >>> parse_fields("/alerts/a/resolve?contact=anna&token=t", b"outcome=visit")["outcome"]
    'visit'
    """
    fields = dict(parse_qsl(urlsplit(target).query))
    if body.strip() and not body.lstrip().startswith((b"{", b"[", b'"')):
        fields.update(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
    elif body.strip():
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        fields.update({str(k): str(v) for k, v in data.items() if v is not None})
    return fields


class AckServer:
    """Serve the acknowledgement API until closed."""

    def __init__(
        self, acknowledge: Acknowledge, describe: Describe, health: Callable[[], dict[str, Any]]
    ) -> None:
        self.acknowledge = acknowledge
        self.describe = describe
        self.health = health
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _response(413, {"error": "body over 64 KiB"})
        browser = "text/html" in request.headers.get("Accept", "")
        status, payload = self.route(request.method, request.raw_path, body, browser=browser)
        return _response(status, payload)

    def route(
        self, method: str, target: str, body: bytes, *, browser: bool = False
    ) -> tuple[int, dict[str, Any] | str]:
        """The answer: a JSON object, or (``str``) an HTML page (a ``GET``, or a
        ``browser``'s ``POST``)."""
        path = urlsplit(target).path
        if path == "/health" and method == "GET":
            return 200, self.health()
        match = ROUTE.match(path)
        if match is None or method not in ("GET", "POST"):
            return 404, {"error": f"no route {method} {path[:80]}"}
        try:
            fields = parse_fields(target, body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, {"error": f"malformed acknowledgement: {exc}"[:300]}
        alert_id, action = match[1], match[2]
        if not fields.get("contact") or not fields.get("token"):
            return 400, {"error": "contact and token are required"}
        if method == "GET":
            return self.page(target, alert_id, action, fields, browser=browser)
        if action == "resolve" and not fields.get("outcome"):
            return 400, {"error": "outcome is required to resolve"}
        result = self.acknowledge(alert_id, fields, "http")
        if browser:
            return result.status, self.done_page(alert_id, fields, result)
        body_out: dict[str, Any] = {"result": result.message}
        if result.state:
            body_out["state"] = result.state
        return result.status, body_out

    def page(
        self,
        target: str,
        alert_id: str,
        action: str,
        fields: dict[str, str],
        *,
        browser: bool = False,
    ) -> tuple[int, dict[str, Any] | str]:
        """The confirmation page: what the alert is, and a button that POSTs the link. A
        refusal is JSON, or a page saying it in words for a browser."""
        said = self.describe(alert_id, fields["contact"], fields["token"])
        if not said.ok:
            if browser:
                return said.status, self.done_page(alert_id, fields, said)
            return said.status, {"result": said.message}
        tr = translator(said.language, fallback=True)
        _ = tr.gettext
        choose = ""
        if action == "resolve" or fields.get("outcome"):
            options = "".join(
                f'<option value="{o}"{" selected" * (o == fields.get("outcome"))}>'
                f"{html.escape(outcome_words(o, tr))}</option>"
                for o in sorted(OUTCOMES)
            )
            choose = (f'<p><label>{html.escape(_("How did it end?"))} '
                      f'<select name="outcome">{options}</select></label></p>')  # fmt: skip
        button = _("It is dealt with") if choose else _("I'm dealing with it")
        now = _("Where it stands: {state}.").format(state=state_words(str(said.state), tr))
        body = (
            f"<h1>{html.escape(said.message[:1].upper() + said.message[1:])}</h1>"
            f"<p>{html.escape(now)}</p>"
            f'<form method="post" action="{html.escape(target, quote=True)}">{choose}'
            f'<button type="submit">{html.escape(button)}</button></form>'
        )
        return 200, _page(tr.language, _("Alert"), body)

    def done_page(self, alert_id: str, fields: dict[str, str], result: AckResult) -> str:
        """What a press of the page's button did, in the contact's words."""
        said = self.describe(alert_id, fields["contact"], fields["token"])
        tr = translator(said.language, fallback=True)
        _ = tr.gettext
        if result.ok and result.state == "resolved":
            text = _("Thank you: the alert is closed.")
        elif result.ok:
            text = _("Thank you: the others now know that you are dealing with it.")
        elif result.status == 409:
            text = _("This alert is already closed: nothing more is needed.")
        elif result.status == 403:
            text = _("This link is not valid for you. Please use the link in your own message.")
        elif result.status == 404:
            text = _("This alert is not known here. Please use the link in your latest message.")
        else:
            text = _("That did not work. Please try again, or call the person directly.")
        heading = said.message[:1].upper() + said.message[1:] if said.ok else _("Alert")
        return _page(tr.language, _("Alert"),
                     f"<h1>{html.escape(heading)}</h1><p>{html.escape(text)}</p>")  # fmt: skip


def _page(language: str, title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="{html.escape(language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )


def _response(status: int, payload: dict[str, Any] | str) -> web.Response:
    if isinstance(payload, str):
        return web.Response(status=status, text=payload, content_type="text/html")
    return web.Response(status=status, body=json.dumps(payload).encode(),
                        content_type="application/json")  # fmt: skip

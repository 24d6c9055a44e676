"""The visit register's page and HTTP API (aiohttp), for community workers on a phone.

A worker logs in (name and password, Argon2id-hashed in the register), gets a session
cookie (random, only its hash stored, ``HttpOnly``, ``SameSite=Strict``, ``Secure``
over HTTPS, expiring after ``session_ttl_s``) and sees **only their own site**: the
week's ranked list with reasons, who is due under the visit policy, the month's visit
rate per group, open follow-ups; and records a visit or call from the list.

Forged requests are refused: every form carries the session's CSRF token (the login
form a token bound to a pre-login cookie) and every API write the ``X-CSRF-Token``
header; a request whose ``Origin`` is another site's is refused too. Pages carry a
strict Content-Security-Policy (no script at all, styles from ``/care.css``).

Routes: ``GET /health``; ``GET|POST /login``; ``POST /logout``; ``GET /`` (the page:
``?q=`` finds any elder of the site, ``?limit=`` shows more); ``POST /visits``;
``POST /follow-ups/<id>/close``; ``POST /api/login`` (JSON); ``GET /api/plan``;
``GET /api/elders/<id>/visits``; ``POST /api/visits`` (JSON); ``GET /api/rate``.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from care import texts
from care.plan import PlanRow
from care.policy import CONTACTS, VisitPolicy
from care.register import Register, RegisterError, Session, Worker
from care.report import month_report
from care.service import site_plan
from escalation.registry import Registry
from homecare.i18n import Translator, available, translator
from homecare.schema import CareFollowUps, CareVisitRate

log = logging.getLogger(__name__)

COOKIE = "care_session"
LOGIN_COOKIE = "care_login"
MAX_BODY = 64 * 1024
PAGE_ROWS = 100
LOCKOUT_FAILURES = 5
LOCKOUT_S = 60.0
CSS = """
body{font-family:system-ui,sans-serif;margin:0;padding:0 .8rem 2rem;max-width:60rem;
 line-height:1.4;font-size:1rem}
header{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;
 gap:.5rem;border-bottom:1px solid #ccc;padding:.5rem 0}
h1{font-size:1.3rem;margin:.2rem 0} h2{font-size:1.1rem;margin-top:1.4rem}
ol.plan{padding-left:1.2rem} ol.plan>li{margin:.6rem 0;padding:.4rem;border:1px solid #ddd;
 border-radius:.4rem} .overdue{border-color:#c00!important} .who{font-weight:600}
ul.reasons{margin:.2rem 0 .2rem 1rem;padding:0} .muted{color:#555;font-size:.9rem}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.3rem;
 text-align:left} label{display:block;margin:.3rem 0} input,select,textarea,button{
 font-size:1rem;max-width:100%} textarea{width:100%} button{padding:.4rem .9rem}
.error{color:#a00} .flash{color:#060}
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _day(ts: float | None, tr: Translator, tz: str | None) -> str:
    """A day on the page in the reader's words (``7 Dec 2026``, ``2026年12月7日``)."""
    if ts is None:
        return tr.gettext(texts.NEVER)
    return tr.date(ts, tz, tr.gettext(texts.DAY_FORMAT))


def _month(month: str, tr: Translator) -> str:
    """``2026-12`` in the reader's words."""
    year, number = (int(x) for x in month.split("-"))
    return tr.date(datetime(year, number, 1, 12), None, tr.gettext(texts.MONTH_FORMAT))


class CareServer:
    """The page and API over a register, the registry in force and the visit policy."""

    def __init__(
        self,
        register: Register,
        registry: Callable[[], Registry],
        policy: VisitPolicy,
        *,
        session_ttl_s: float = 8 * 3600.0,
        alerts: Callable[[str], dict[str, dict[str, int]]] | None = None,
    ) -> None:
        self.register = register
        self.registry = registry
        self.policy = policy
        self.session_ttl_s = session_ttl_s
        self.alerts = alerts or (lambda site: {})
        self._failures: dict[str, tuple[int, float]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- Serving -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        r = app.router
        r.add_get("/health", self._health)
        r.add_get("/care.css", self._css)
        r.add_get("/login", self._login_page)
        r.add_post("/login", self._login)
        r.add_post("/logout", self._logout)
        r.add_get("/", self._page)
        r.add_post("/visits", self._record_form)
        r.add_post("/follow-ups/{id:[0-9]+}/close", self._close_follow_up)
        r.add_post("/api/login", self._api_login)
        r.add_get("/api/plan", self._api_plan)
        r.add_get("/api/elders/{elder}/visits", self._api_history)
        r.add_post("/api/visits", self._api_record)
        r.add_get("/api/rate", self._api_rate)
        return app

    async def start(self, host: str, port: int) -> None:
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Cross-site writes refused by ``Origin``; security headers on every answer."""
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.host:
                return self._forbidden(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _secure_headers(exc)
            raise
        _secure_headers(response)
        return response

    # -- Sessions ----------------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        token = request.cookies.get(COOKIE)
        return self.register.session(token) if token else None

    def _set_cookie(self, response: web.StreamResponse, request: web.Request, name: str,
                    value: str, max_age: float) -> None:  # fmt: skip
        response.set_cookie(name, value, max_age=math.ceil(max_age), path="/", httponly=True,
                            samesite="Strict", secure=request.secure)  # fmt: skip

    def _locked(self, name: str) -> bool:
        n, until = self._failures.get(name, (0, 0.0))
        return n >= LOCKOUT_FAILURES and time.monotonic() < until

    def _failed(self, name: str) -> None:
        n, _ = self._failures.get(name, (0, 0.0))
        self._failures[name] = (n + 1, time.monotonic() + LOCKOUT_S)

    def _sign_in(self, name: str, password: str) -> Worker | None:
        if not name or self._locked(name):
            return None
        worker = self.register.check_password(name, password)
        if worker is None:
            self._failed(name)
            return None
        self._failures.pop(name, None)
        return worker

    @staticmethod
    def _csrf_ok(expected: str, given: str | None) -> bool:
        return bool(expected) and given is not None and hmac.compare_digest(expected, given)

    def _reader(self, request: web.Request, session: Session | None = None) -> Translator:
        """The worker's language (their account's, their registry contact's, their
        site's); before login the browser's choice among the shipped ones, else the
        provider's."""
        registry = self.registry()
        if session is None:
            session = self._session(request)
        if session is not None:
            w = session.worker
            contact = registry.contact(w.name)
            lang = (w.language or (contact.language if contact else None)
                    or registry.provider_for(w.site).language)  # fmt: skip
            return translator(lang, fallback=True)
        return translator(_browser_language(request) or registry.provider.language,
                          fallback=True)  # fmt: skip

    def _tz(self, site: str) -> str | None:
        return self.registry().provider_for(site).timezone

    def _forbidden(self, request: web.Request) -> web.Response:
        tr = self._reader(request)
        t = tr.gettext
        if request.path.startswith("/api/"):
            return web.json_response({"error": t(texts.FORBIDDEN)}, status=403)
        return self._html(tr, t(texts.FORBIDDEN),
                          f'<p class="error">{_esc(t(texts.FORBIDDEN))}</p>'
                          f'<p><a href="/">{_esc(t(texts.TITLE))}</a></p>', status=403)  # fmt: skip

    # -- Pages -------------------------------------------------------------------------------

    @staticmethod
    def _html(tr: Translator, title: str, body: str, status: int = 200) -> web.Response:
        page = (
            f'<!doctype html><html lang="{_esc(tr.language)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_esc(title)}</title><link rel="stylesheet" href="/care.css"></head>'
            f"<body>{body}</body></html>"
        )
        return web.Response(text=page, content_type="text/html", status=status)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _css(self, request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css")

    async def _login_page(self, request: web.Request, error: str = "") -> web.Response:
        tr = self._reader(request)
        t = tr.gettext
        token = secrets.token_urlsafe(24)
        note = f'<p class="error" id="error">{_esc(error)}</p>' if error else ""
        if request.query.get("expired"):
            note = f'<p class="error" id="error">{_esc(t(texts.SESSION_OVER))}</p>'
        body = (
            f"<h1>{_esc(t(texts.TITLE))}</h1>{note}"
            '<form method="post" action="/login">'
            f'<input type="hidden" name="csrf" value="{token}">'
            f'<label>{_esc(t(texts.USERNAME))} <input name="name" id="name" '
            'autocomplete="username" required></label>'
            f'<label>{_esc(t(texts.PASSWORD))} <input name="password" id="password" '
            'type="password" autocomplete="current-password" required></label>'
            f'<button type="submit" id="login">{_esc(t(texts.LOGIN))}</button></form>'
        )
        response = self._html(tr, t(texts.LOGIN), body, status=401 if error else 200)
        self._set_cookie(response, request, LOGIN_COOKIE, token, 900)
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not self._csrf_ok(request.cookies.get(LOGIN_COOKIE, ""), _str(form.get("csrf"))):
            return self._forbidden(request)
        signed = self._sign_in(_str(form.get("name")) or "", _str(form.get("password")) or "")
        if signed is None:
            tr = self._reader(request)
            return await self._login_page(request, tr.gettext(texts.LOGIN_FAILED))
        token, _ = self.register.open_session(signed, self.session_ttl_s)
        response = _redirect("/")
        self._set_cookie(response, request, COOKIE, token, self.session_ttl_s)
        response.del_cookie(LOGIN_COOKIE, path="/")
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        form = await request.post()
        if session is None:
            return _redirect("/login")
        if not self._csrf_ok(session.csrf, _str(form.get("csrf"))):
            return self._forbidden(request)
        self.register.close_session(request.cookies[COOKIE])
        response = _redirect("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    def _rows(self, site: str, tr: Translator) -> list[PlanRow]:
        return site_plan(self.register, self.registry(), self.policy, site, now=time.time(),
                         alerts=self.alerts(site), tr=tr)  # fmt: skip

    async def _page(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        if session is None:
            return _redirect("/login" + ("?expired=1" if COOKIE in request.cookies else ""))
        site, csrf = session.worker.site, session.csrf
        tr = self._reader(request, session)
        t = tr.gettext
        now = time.time()
        rows = self._rows(site, tr)
        q = request.query.get("q", "").strip().lower()
        try:
            limit = max(1, min(int(request.query.get("limit", PAGE_ROWS)), 10_000))
        except ValueError:
            limit = PAGE_ROWS
        if q:
            chosen = [r for r in rows if q in r.elder.lower() or q in r.name.lower()]
        else:
            chosen = [r for r in rows if r.this_week]
        shown = chosen[:limit]
        flash = (f'<p class="flash" id="flash">{_esc(t(texts.RECORDED))}</p>'
                 if request.query.get("done") else "")  # fmt: skip
        parts = [
            "<header>"
            f'<h1>{_esc(t(texts.TITLE))}: <span id="site">{_esc(site)}</span></h1>'
            f'<form method="post" action="/logout"><span class="muted">'
            f"{_esc(session.worker.name)}</span> "
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<button type="submit" id="logout">{_esc(t(texts.LOGOUT))}</button></form>'
            "</header>",
            flash,
            self._rate_html(site, now, tr),
            f"<h2>{_esc(t(texts.THIS_WEEK))}</h2>",
            '<form method="get" action="/">'
            f'<label>{_esc(t(texts.SEARCH))} <input name="q" id="q" value="{_esc(q)}">'
            "</label>"
            "</form>",
        ]
        if not shown:
            parts.append(f'<p id="empty">{_esc(t(texts.NOTHING_THIS_WEEK))}</p>')
        parts.append('<ol class="plan" id="plan">')
        tz = self._tz(site)
        parts += [self._row_html(r, csrf, tr, tz) for r in shown]
        parts.append("</ol>")
        showing = t(texts.SHOWING).format(shown=len(shown), total=len(chosen))
        parts.append(f'<p class="muted" id="count">{_esc(showing)}</p>')
        if len(chosen) > len(shown):
            more = urlencode({"q": q, "limit": limit + PAGE_ROWS})
            parts.append(f'<p><a href="/?{more}">{_esc(t(texts.SHOW_MORE))}</a></p>')
        parts.append(self._follow_ups_html(site, csrf, tr))
        return self._html(tr, t(texts.TITLE), "".join(parts))

    def _rate_html(self, site: str, now: float, tr: Translator) -> str:
        t = tr.gettext
        report = month_report(self.register, self.registry(), self.policy, month=None, now=now,
                              site=site)  # fmt: skip
        lines = [
            f'<tr id="rate-{_esc(r.group)}"><td>{_esc(r.group)}</td>'
            f'<td class="contacted">{_esc(texts.rate_line(r.contacted, r.elders, tr))}</td>'
            f'<td class="rate">{_esc(tr.number(r.rate_pct))} %</td>'
            f"<td>{_esc(tr.number(r.target_pct))} %</td></tr>"
            for r in report.rates
            if r.elders
        ]
        return (
            f"<h2>{_esc(t(texts.VISIT_RATE))} ({_esc(_month(report.month, tr))})</h2>"
            f'<table id="rates"><tr><th>{_esc(t(texts.GROUP))}</th>'
            f"<th>{_esc(t(texts.CONTACTED))}</th><th>%</th><th>{_esc(t(texts.TARGET))}</th></tr>{''.join(lines)}</table>"
        )

    @staticmethod
    def _row_html(r: PlanRow, csrf: str, tr: Translator, tz: str | None) -> str:
        t = tr.gettext
        reasons = "".join(f"<li>{_esc(x)}</li>" for x in r.reasons)
        kinds = "".join(
            f'<option value="{k}"{" selected" * (k == r.contact)}>'
            f"{_esc(t(texts.CONTACT_WORDS[k]))}</option>"
            for k in CONTACTS
        )
        outcomes = "".join(f'<option value="{k}">{_esc(t(v))}</option>'
                           for k, v in texts.OUTCOMES.items())  # fmt: skip
        phone = f" · {_esc(t(texts.PHONE))} {_esc(r.phone)}" if r.phone else ""
        return (
            f'<li id="elder-{_esc(r.elder)}"{" class=overdue" * (r.overdue_days > 0)}>'
            f'<span class="who">{_esc(r.name)}</span> <span class="muted">({_esc(r.elder)}) · '
            f"{_esc(r.address)}{phone}</span>"
            f'<ul class="reasons">{reasons}</ul>'
            f'<span class="muted">{_esc(t(texts.LAST_CONTACT))}: '
            f"{_esc(_day(r.last_contact, tr, tz))}</span>"
            f"<details><summary>{_esc(t(texts.RECORD))}</summary>"
            '<form method="post" action="/visits">'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="elder" value="{_esc(r.elder)}">'
            f'<label>{_esc(t(texts.KIND))} <select name="kind">{kinds}</select></label>'
            f'<label>{_esc(t(texts.OUTCOME))} <select name="outcome">{outcomes}</select>'
            "</label>"
            f'<label>{_esc(t(texts.NOTES))} <textarea name="notes" rows="2" maxlength="2000">'
            "</textarea></label>"
            '<label><input type="checkbox" name="follow_up" value="1"> '
            f"{_esc(t(texts.FOLLOW_UP))}</label>"
            f'<button type="submit" class="save">{_esc(t(texts.SAVE))}</button></form>'
            "</details></li>"
        )

    def _follow_ups_html(self, site: str, csrf: str, tr: Translator) -> str:
        t = tr.gettext
        open_ = self.register.open_follow_ups(site)
        heading = f"<h2>{_esc(t(texts.OPEN_FOLLOW_UPS))}</h2>"
        if not open_:
            return f"{heading}<p>{_esc(t(texts.NO_FOLLOW_UPS))}</p>"
        tz = self._tz(site)
        registry = self.registry()
        items = []
        for c in open_:
            elder = registry.elder(c.elder)
            name = elder.display_name if elder else c.elder
            items.append(
                f'<li id="follow-up-{c.id}">{_esc(name)} · {_esc(_day(c.at, tr, tz))} · '
                f"{_esc(t(texts.OUTCOMES.get(c.outcome, c.outcome)))}"
                f"{' · ' + _esc(c.notes) if c.notes else ''}"
                f'<form method="post" action="/follow-ups/{c.id}/close">'
                f'<input type="hidden" name="csrf" value="{csrf}">'
                f'<button type="submit">{_esc(t(texts.CLOSE_FOLLOW_UP))}</button></form></li>'
            )
        return f'{heading}<ul id="follow-ups">{"".join(items)}</ul>'

    def _own_elder(self, session: Session, elder: str) -> bool:
        found = self.registry().elder(elder)
        return found is not None and found.site == session.worker.site

    def _record(self, session: Session, fields: dict[str, Any], tr: Translator) -> int:
        elder = str(fields.get("elder") or "")
        if not self._own_elder(session, elder):
            raise web.HTTPNotFound(text=tr.gettext(texts.NOT_FOUND))
        at = fields.get("at")
        return self.register.record(
            site=session.worker.site, elder=elder, worker=session.worker.name,
            kind=str(fields.get("kind") or ""), outcome=str(fields.get("outcome") or ""),
            notes=str(fields.get("notes") or ""),
            follow_up=fields.get("follow_up") in (True, "1", "on", "true"),
            at=None if at in (None, "") else float(at),
        )  # fmt: skip

    async def _record_form(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        form = await request.post()
        if session is None:
            return _redirect("/login?expired=1")
        if not self._csrf_ok(session.csrf, _str(form.get("csrf"))):
            return self._forbidden(request)
        tr = self._reader(request, session)
        try:
            self._record(session, {k: _str(v) for k, v in form.items()}, tr)
        except (RegisterError, ValueError) as exc:
            words = exc.words(tr) if isinstance(exc, RegisterError) else str(exc)
            return self._html(tr, tr.gettext(texts.TITLE), f'<p class="error">{_esc(words)}</p>',
                              status=400)  # fmt: skip
        return _redirect("/?done=1")

    async def _close_follow_up(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        form = await request.post()
        if session is None:
            return _redirect("/login?expired=1")
        if not self._csrf_ok(session.csrf, _str(form.get("csrf"))):
            return self._forbidden(request)
        if not self.register.close_follow_up(session.worker.site, int(request.match_info["id"])):
            raise web.HTTPNotFound(text=self._reader(request, session).gettext(texts.NOT_FOUND))
        return _redirect("/?done=1")

    # -- API ---------------------------------------------------------------------------------

    def _api_session(self, request: web.Request, *, write: bool = False) -> Session:
        session = self._session(request)
        if session is None:
            words = self._reader(request).gettext(texts.LOG_IN_FIRST)
            raise web.HTTPUnauthorized(text=json.dumps({"error": words}, ensure_ascii=False),
                                       content_type="application/json")  # fmt: skip
        if write and not self._csrf_ok(session.csrf, request.headers.get("X-CSRF-Token")):
            words = self._reader(request, session).gettext(texts.FORBIDDEN)
            raise web.HTTPForbidden(text=json.dumps({"error": words}, ensure_ascii=False),
                                    content_type="application/json")  # fmt: skip
        return session

    async def _api_login(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            name, password = str(body["name"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            words = self._reader(request).gettext(texts.NAME_AND_PASSWORD)
            return web.json_response({"error": words}, status=400)
        signed = self._sign_in(name, password)
        if signed is None:
            words = self._reader(request).gettext(texts.LOGIN_FAILED)
            return web.json_response({"error": words}, status=401)
        token, session = self.register.open_session(signed, self.session_ttl_s)
        response = web.json_response({"site": session.worker.site, "csrf": session.csrf,
                                      "expires": session.expires})  # fmt: skip
        self._set_cookie(response, request, COOKIE, token, self.session_ttl_s)
        return response

    async def _api_plan(self, request: web.Request) -> web.StreamResponse:
        session = self._api_session(request)
        rows = self._rows(session.worker.site, self._reader(request, session))
        everyone = request.query.get("all") == "1"
        chosen = [r.as_dict() for r in rows if everyone or r.this_week]
        return web.json_response({"site": session.worker.site, "rows": chosen})

    async def _api_history(self, request: web.Request) -> web.StreamResponse:
        session = self._api_session(request)
        elder = request.match_info["elder"]
        if not self._own_elder(session, elder):
            words = self._reader(request, session).gettext(texts.NOT_FOUND)
            return web.json_response({"error": words}, status=404)
        visits = [
            {"id": c.id, "at": c.at, "worker": c.worker, "kind": c.kind, "outcome": c.outcome,
             "notes": c.notes, "follow_up": c.follow_up, "follow_up_closed": c.follow_up_closed}
            for c in self.register.history(session.worker.site, elder)
        ]  # fmt: skip
        return web.json_response({"elder": elder, "visits": visits})

    async def _api_record(self, request: web.Request) -> web.StreamResponse:
        session = self._api_session(request, write=True)
        tr = self._reader(request, session)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            contact_id = self._record(session, body, tr)
        except web.HTTPNotFound:
            return web.json_response({"error": tr.gettext(texts.NOT_FOUND)}, status=404)
        except (RegisterError, ValueError, TypeError) as exc:
            words = exc.words(tr) if isinstance(exc, RegisterError) else str(exc)
            return web.json_response({"error": words[:300]}, status=400)
        return web.json_response({"id": contact_id}, status=201)

    async def _api_rate(self, request: web.Request) -> web.StreamResponse:
        session = self._api_session(request)
        try:
            report = month_report(self.register, self.registry(), self.policy,
                                  month=request.query.get("month"), now=time.time(),
                                  site=session.worker.site)  # fmt: skip
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({
            "month": report.month,
            "groups": [{"group": r.group, "elders": r.elders, "contacted": r.contacted,
                        CareVisitRate.rate_pct: r.rate_pct, CareVisitRate.target_pct: r.target_pct}
                       for r in report.rates],
            CareFollowUps.follow_ups_open: report.follow_ups_open.get(session.worker.site, 0),
        })  # fmt: skip


def _secure_headers(response: web.StreamResponse) -> None:
    """No script, styles from this server, forms posted here only, never in a frame."""
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"


def _browser_language(request: web.Request) -> str | None:
    """The first shipped language the browser's ``Accept-Language`` asks for, in its
    order (weights are written in descending order by browsers); ``zh`` alone is the
    shipped ``zh-CN``."""
    header = request.headers.get("Accept-Language", "")
    shipped = {s.lower(): s for s in available()}
    primary = {s.split("-")[0]: s for s in sorted(shipped, reverse=True)}
    for part in header.split(","):
        wanted = part.split(";")[0].strip().replace("_", "-").lower()
        found = shipped.get(wanted) or primary.get(wanted.split("-")[0])
        if found:
            return shipped.get(found, found)
    return None


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def serve(settings: Any, register: Register, policy: VisitPolicy) -> None:
    """Run the page until cancelled, refreshing signs and sending notices periodically."""
    import asyncio

    from care.service import refresh_signs, send_notices
    from escalation.registry import RegistryFile
    from homecare.influx import InfluxClient, InfluxError

    assert settings.registry is not None
    registry = RegistryFile(settings.registry)
    alerts: dict[str, dict[str, dict[str, int]]] = {}

    def current() -> Registry:
        registry.poll()
        return registry.current

    server = CareServer(register, current, policy, session_ttl_s=settings.care.session_ttl_s,
                        alerts=lambda site: alerts.get(site, {}))  # fmt: skip
    await server.start(settings.care.http_host, settings.care.http_port)
    log.info("care page on http://%s:%d/", settings.care.http_host, server.port)
    try:
        while True:
            now = time.time()
            sites = sorted({e.site for e in current().elders})
            if settings.influx.url:
                for site in sites:
                    try:
                        with InfluxClient(settings.influx) as db:
                            _, alerts[site] = await asyncio.to_thread(
                                refresh_signs, db, register, current(), site, now=now,
                                utc_offset_h=settings.retention.utc_offset_h,
                            )  # fmt: skip
                    except (InfluxError, ValueError) as exc:
                        log.warning("signs of %s not refreshed: %s", site, exc)
            try:
                await send_notices(settings, register, current(), policy, now=now)
            except Exception:  # a channel's bug must not take the page down
                log.exception("care notices failed; trying again at the next refresh")
            await asyncio.sleep(settings.care.refresh_s)
    finally:
        await server.close()

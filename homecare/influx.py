"""InfluxDB through its v1-compatible HTTP API: line protocol on ``/write``, InfluxQL on ``/query``.

InfluxDB 1.x serves this API natively, 2.x through its DBRP mappings (token auth),
and 3.x as its v1 compatibility layer, so one small client covers all three. The
``influxdb-client`` package speaks only the 2.x API, hence this module over httpx.

>>> line("bed", "elder=e1,device=b1", {"presence": True, "hr": 61, "br": 14.5}, 1_700_000_000_000)
'bed,elder=e1,device=b1 presence=true,hr=61i,br=14.5 1700000000000'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from homecare.errors import ConfigError, StorageError
from homecare.settings import InfluxSettings

__all__ = [
    "FieldValue",
    "InfluxClient",
    "InfluxError",
    "InfluxUnavailable",
    "escape_str",
    "escape_tag",
    "format_field",
    "line",
    "quote_ident",
    "quote_literal",
]

FieldValue = bool | int | float | str
log = logging.getLogger(__name__)


class InfluxError(StorageError):
    """InfluxDB refused a request (bad data or query); retrying will not help."""


class InfluxUnavailable(InfluxError):
    """InfluxDB could not be reached or is overloaded; retrying later may help."""


def escape_str(value: str) -> str:
    """Escape a string field value for line protocol."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_tag(value: str) -> str:
    """Escape a tag key or value for line protocol."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def quote_literal(value: str) -> str:
    """An InfluxQL string literal (for tag values in WHERE; ``''`` matches a missing tag).

    >>> print(quote_literal("it's"))
    'it\\'s'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier (measurement, policy, field, tag key), always double-quoted.

    >>> print(quote_ident('say "hi"'))
    "say \\"hi\\""
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return f'"{escape_str(value)}"'


def line(measurement: str, tags: str, fields: Mapping[str, FieldValue | None], ts_ms: int) -> str:
    """One point; ``tags`` is the pre-joined tag set, ``None`` fields are left out."""
    body = ",".join(f"{k}={format_field(v)}" for k, v in fields.items() if v is not None)
    return f"{measurement},{tags} {body} {ts_ms}"


class InfluxClient:
    """A synchronous client (ingest writes from a worker thread), used as a context manager.

    ``fallbacks``: other InfluxDBs holding the same data (a district's replica, fed by its
    own ingest consumer): a query that the current one does not answer (unreachable, 5xx)
    is asked of the next, which is then kept for the client's life. Writes never move:
    each InfluxDB of a pair is written by its own consumer.
    """

    def __init__(
        self, settings: InfluxSettings, *, url: str | None = None, fallbacks: Sequence[str] = ()
    ) -> None:
        self.settings = settings
        self.url = (url or settings.url).rstrip("/")
        if not self.url:
            raise ConfigError("influx url is not set (HOMECARE_INFLUX__URL)")
        self._urls = [self.url, *(u.rstrip("/") for u in fallbacks if u)]
        self._clients: dict[str, httpx.Client] = {}
        headers: dict[str, str] = {}
        auth: httpx.BasicAuth | None = None
        if settings.token is not None:
            headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
        elif settings.username and settings.password is not None:
            auth = httpx.BasicAuth(settings.username, settings.password.get_secret_value())
        self._http = httpx.Client(
            base_url=self.url, headers=headers, auth=auth, timeout=settings.timeout_s
        )
        self._clients[self.url] = self._http
        self._client_options: dict[str, Any] = {
            "headers": headers, "auth": auth, "timeout": settings.timeout_s}  # fmt: skip

    @classmethod
    def failover(cls, settings: InfluxSettings, urls: Sequence[str]) -> InfluxClient:
        """A client of the first of ``urls`` that falls back on the others for reads."""
        if not urls:
            raise ConfigError("no InfluxDB url (HOMECARE_INFLUX__URL or HOMECARE_DISTRICTS)")
        return cls(settings, url=urls[0], fallbacks=urls[1:])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def _params(self, rp: str | None = None, **extra: str) -> dict[str, str]:
        params = {"db": self.settings.database, **extra}
        if rp or self.settings.retention_policy:
            params["rp"] = rp or self.settings.retention_policy or ""
        return params

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if path == "/write" or len(self._urls) == 1:
            return self._request_once(method, path, **kwargs)
        for _ in range(len(self._urls) - 1):  # each of the others once, then the last answer
            try:
                return self._request_once(method, path, **kwargs)
            except InfluxUnavailable as exc:
                following = self._urls[(self._urls.index(self.url) + 1) % len(self._urls)]
                log.warning("%s; asking %s instead", exc, following)
                self._use(following)
        return self._request_once(method, path, **kwargs)

    def _use(self, url: str) -> None:
        """Send the next requests to ``url`` (one of the pair)."""
        if url not in self._clients:
            self._clients[url] = httpx.Client(base_url=url, **self._client_options)
        self.url, self._http = url, self._clients[url]

    def _request_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc
        except httpx.HTTPError as exc:  # e.g. an answer that cannot be decoded
            raise InfluxError(f"InfluxDB at {self.url}: {method} {path} failed: {exc}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise InfluxUnavailable(
                f"InfluxDB at {self.url} answered {response.status_code}: {response.text[:300]}"
            )
        if response.status_code >= 400:
            raise InfluxError(
                f"InfluxDB at {self.url} refused {path} (database {self.settings.database}): "
                f"{response.status_code} {response.text[:500]}"
            )
        return response

    def ping(self) -> bool:
        try:
            return self._http.get("/ping").status_code == 204
        except httpx.TransportError:
            return False

    def version(self) -> str:
        """The server's version from ``/ping`` (``1.8.10``, ``v2.7.4``, ``3.0.1``…)."""
        return str(self._request("GET", "/ping").headers.get("X-Influxdb-Version", ""))

    def write(
        self, lines: Sequence[str] | bytes, precision: str = "ms", *, rp: str | None = None
    ) -> None:
        """Write points (into retention policy ``rp``, default the settings' or the database's);
        raise :class:`InfluxUnavailable` if they may not have been stored."""
        body = lines if isinstance(lines, bytes) else "\n".join(lines).encode()
        if not body:
            return
        params = self._params(rp, precision=precision)
        try:
            self._request("POST", "/write", params=params, content=body)
        except InfluxError as exc:
            if "database not found" not in str(exc) or isinstance(exc, InfluxUnavailable):
                raise
            self.create_database()  # a fresh server (1.x) after a restart or a wipe
            self._request("POST", "/write", params=params, content=body)

    def query(self, q: str, *, epoch: str | None = "ms") -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of every statement (``[]`` when none)."""
        params = self._params(q=q)
        if epoch:
            params["epoch"] = epoch
        try:
            data = self._request("POST", "/query", data=params).json()
        except ValueError as exc:  # not JSON: a proxy's error page, a cut answer
            raise InfluxError(f"InfluxDB at {self.url}: query {q[:200]!r}: {exc}") from exc
        series: list[dict[str, Any]] = []
        for result in data.get("results", []):
            if "error" in result:
                raise InfluxError(f"query {q[:200]!r} failed: {result['error']}")
            series.extend(result.get("series", []))
        return series

    def rows(self, q: str, *, epoch: str | None = "ms") -> list[dict[str, Any]]:
        """Run InfluxQL; return each row as a dict, tags of grouped series included."""
        out: list[dict[str, Any]] = []
        for s in self.query(q, epoch=epoch):
            tags = s.get("tags") or {}
            out.extend(
                {**tags, **dict(zip(s["columns"], values, strict=True))}
                for values in s.get("values", ())  # a series may come without rows
            )
        return out

    def create_database(self) -> None:
        """Create the database if missing (a no-op on 2.x/3.x, where buckets are made apart)."""
        name = self.settings.database.replace('"', "")
        self._request("POST", "/query", data={"q": f'CREATE DATABASE "{name}"'})

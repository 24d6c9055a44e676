"""Settings for every service, from the environment (``HOMECARE_...``) or a ``.env`` file.

Nested groups use ``__``: ``HOMECARE_MQTT__URL=mqtt://broker:1883``,
``HOMECARE_INFLUX__PASSWORD_FILE=/run/secrets/influx``. Secrets are never defaults;
a ``*_file`` setting reads the secret from a file outside the repository.

>>> Settings(mqtt=MqttSettings(url="mqtt://127.0.0.1:1883")).mqtt.port
1883
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from homecare import contract
from homecare.thresholds import DetectorSettings

__all__ = [
    "REPLICAS",
    "TABLE_END",
    "TABLE_START",
    "CallCentreSettings",
    "CareSettings",
    "ContractSettings",
    "DetectSettings",
    "DistrictSettings",
    "Duration",
    "EscalateSettings",
    "GrafanaSettings",
    "HttpSettings",
    "InfluxSettings",
    "IngestSettings",
    "MqttSettings",
    "NatsSettings",
    "RetentionSettings",
    "RetrySettings",
    "Settings",
    "SmtpSettings",
    "WebhookSettings",
    "setting_rows",
    "settings_table",
    "with_settings_table",
]


def _read_secret(value: SecretStr | None, path: Path | None) -> SecretStr | None:
    if value is None and path is not None:
        return SecretStr(path.read_text().strip())
    return value


class MqttSettings(BaseModel):
    """The broker. ``url`` empty means: ``homecare demo`` starts its own Mosquitto."""

    url: str = Field(
        "", description="mqtt://host:1883 or mqtts://host:8883; several, comma-separated (a "
        "cluster's nodes): escalate's alert states move to the next when its node is lost; "
        "empty: the demo starts its own."
    )
    username: str | None = Field(None, description="The service's broker account.")
    password: SecretStr | None = Field(None, description="Its password (a secret).")
    password_file: Path | None = Field(None, description="Or a file holding it.")
    ca_file: Path | None = Field(None, description="CA that signed the broker's certificate.")
    client_id: str = Field(
        "homecare-ingest", description="Ingest's name on its dead letters (instances add -NAME)."
    )
    keepalive_s: int = Field(30, gt=0, description="MQTT keepalive.")
    access_dir: Path = Field(
        Path("deploy/nats/access"),
        description="The broker's certificate, the operator's and accounts' keys and JWTs, "
        "the device registry and nats-auth.conf, for homecare devices.",
    )

    @model_validator(mode="after")
    def _load_secret(self) -> MqttSettings:
        self.password = _read_secret(self.password, self.password_file)
        schemes = {urlsplit(u).scheme for u in self.urls}
        if self.url and not schemes <= {"mqtt", "mqtts"}:
            raise ValueError(f"mqtt url {self.url!r} must start with mqtt:// or mqtts://")
        if len(schemes) > 1:
            raise ValueError(f"mqtt urls {self.url!r}: all mqtt:// or all mqtts://")
        return self

    @property
    def urls(self) -> list[str]:
        """Each listener of ``url`` (a cluster lists every node's)."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def listeners(self) -> list[tuple[str, int]]:
        """(host, port) of each listener, in order.

        >>> MqttSettings(url="mqtts://n1:8883, mqtts://n2").listeners
        [('n1', 8883), ('n2', 8883)]
        """
        out = []
        for url in self.urls or [self.url]:
            parts = urlsplit(url)
            out.append((parts.hostname or "127.0.0.1",
                        parts.port or (8883 if parts.scheme == "mqtts" else 1883)))  # fmt: skip
        return out

    @property
    def host(self) -> str:
        """The first listener's host (clients that take one listener)."""
        return self.listeners[0][0]

    @property
    def port(self) -> int:
        return self.listeners[0][1]

    @property
    def tls(self) -> bool:
        return urlsplit(self.urls[0] if self.urls else "").scheme == "mqtts"


class NatsSettings(BaseModel):
    """The NATS server whose JetStream streams the services consume (devices speak MQTT to
    its MQTT listener: :class:`MqttSettings`)."""

    url: str = Field(
        "", description="nats://host:4222 or tls://host:4222; empty: the demo starts its own."
    )
    username: str | None = Field(None, description="The service's NATS account user.")
    password: SecretStr | None = Field(None, description="Its password (a secret).")
    password_file: Path | None = Field(None, description="Or a file holding it.")
    creds_file: Path | None = Field(
        None, description="A NATS credentials file (user JWT and seed), instead of a password."
    )
    ca_file: Path | None = Field(None, description="CA that signed the server's certificate.")
    partitions: int = Field(
        64,
        ge=1,
        le=1024,
        description="TELEMETRY's partitions by elder (fixed at provisioning; broker provision "
        "reads it too): 8 for a site on one machine, 64 for a city (detect runs a pipeline "
        "per partition held).",
    )
    pull_max_bytes: int = Field(
        8 * 2**20,
        ge=2 * 2**20,
        description="The most bytes one pull brings (JetStream's max_bytes): a service holds at "
        "most about twice this in a batch, whatever the messages' size. At least 2 MiB: above "
        "the server's largest message (max_payload, 1 MiB), which would otherwise never fit.",
    )
    source_check_s: float = Field(
        60.0, gt=0, description="How often a service checks that TELEMETRY's source is active."
    )
    source_wait_s: float = Field(
        15.0, gt=0, description="How long a starting service waits for the source to be active."
    )
    source_alert_s: float = Field(
        30.0, gt=0, description="How long a stream's source may stay broken before the "
        "watchdog (homecare broker watch) raises an operations alert.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _load_secret(self) -> NatsSettings:
        self.password = _read_secret(self.password, self.password_file)
        if self.url and urlsplit(self.url).scheme not in ("nats", "tls"):
            raise ValueError(f"nats url {self.url!r} must start with nats:// or tls://")
        return self


class InfluxSettings(BaseModel):
    """InfluxDB's v1-compatible HTTP API (1.x natively, 2.x through DBRP, 3.x)."""

    url: str = Field("", description="http(s)://host:8086; empty: the demo starts its own.")
    database: str = Field("homecare", description="On 2.x/3.x: the bucket mapped by DBRP.")
    retention_policy: str | None = Field(None, description="Write policy; none: the default.")
    username: str | None = Field(None, description="The service's account (1.x).")
    password: SecretStr | None = Field(None, description="Its password (a secret).")
    password_file: Path | None = Field(None, description="Or a file holding it.")
    token: SecretStr | None = Field(None, description="An API token (2.x, 3.x), not both.")
    token_file: Path | None = Field(None, description="Or a file holding it.")
    timeout_s: float = Field(10.0, gt=0, description="Per request.")

    @model_validator(mode="after")
    def _load_secret(self) -> InfluxSettings:
        self.password = _read_secret(self.password, self.password_file)
        self.token = _read_secret(self.token, self.token_file)
        if self.token is not None and self.password is not None:
            raise ValueError("influx: set either a token or a username/password, not both")
        return self


_Id = contract.Id
"""A contract id (inside ``Settings`` its ``contract`` field hides the module)."""
REPLICAS = ("primary", "replica")
"""The two InfluxDBs of a district, each fed by its own ingest consumer (``ingest-<D>-<R>``)."""


class DistrictSettings(BaseModel):
    """A district: its sites and its pair of InfluxDBs. Each InfluxDB of the pair is fed by
    its own durable consumer of TELEMETRY (the stream is the replication); the other
    InfluxDB settings (database, account, timeout) are the ``influx`` group's.

    >>> DistrictSettings(sites=["s1"], primary="http://a:8086").urls
    ['http://a:8086']
    """

    sites: list[contract.Id] = Field(min_length=1, description="The district's sites.")
    primary: str = Field(description="The InfluxDB that dashboards and the report ask first.")
    replica: str = Field("", description="Its twin, asked when the primary does not answer.")

    @model_validator(mode="after")
    def _check_urls(self) -> DistrictSettings:
        for url in self.urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"district InfluxDB url {url!r} must start with http(s)://")
        if self.replica and self.replica.rstrip("/") == self.primary.rstrip("/"):
            raise ValueError(f"district replica {self.replica!r} is its primary: a pair "
                             "needs two InfluxDBs")  # fmt: skip
        return self

    @property
    def urls(self) -> list[str]:
        """Primary first, then the replica (if any): the order queries try them."""
        return [u for u in (self.primary, self.replica) if u]

    def url(self, replica: str) -> str:
        """The InfluxDB of ``replica`` (``primary`` or ``replica``)."""
        if replica not in REPLICAS:
            raise ValueError(f"replica {replica!r} is not one of {', '.join(REPLICAS)}")
        url = self.primary if replica == "primary" else self.replica
        if not url:
            raise ValueError("this district has no replica InfluxDB (set its replica url)")
        return url


class ContractSettings(BaseModel):
    """How strict ingest is at the edge."""

    max_future_s: float = Field(
        contract.MAX_FUTURE_S, description="A payload's ts this far ahead of our clock: refused."
    )
    max_past_s: float = Field(
        contract.MAX_PAST_S, description="A payload's ts this far behind our clock: refused."
    )
    max_payload_bytes: int = Field(
        contract.MAX_PAYLOAD_BYTES, description="A larger payload is refused."
    )
    registry: Path | None = Field(
        None,
        description="The device registry (devices.json of homecare devices): a message from a "
        "device not in it, or not at its site, elder and kind, is refused (unknown_device); "
        "none: no check.",
    )


class IngestSettings(BaseModel):
    """``homecare ingest``: its batches. What is in flight is bounded by the durable
    consumer's ``max_ack_pending`` (set at provisioning); several processes share the load
    by binding the same durable consumer."""

    batch_size: int = Field(5000, ge=1, description="Messages validated and written together.")
    batch_interval_s: float = Field(0.2, gt=0, description="Longest a message waits for a batch.")
    spool_dir: Path | None = Field(None, description="Durable spool; default under state_dir.")
    store_raw_accel: bool = Field(False, description="Also store every accelerometer sample.")


class DetectSettings(BaseModel):
    """``homecare detect``: batching, clock, elders' care levels and state saves."""

    batch_size: int = Field(5000, ge=1, description="Messages decoded and detected together.")
    batch_interval_s: float = Field(0.05, gt=0, description="Longest a reading waits to be seen.")
    grace_s: float = Field(30.0, ge=0, description='Time to press "I\'m OK" after a fall.')
    clock: Literal["wall", "data"] = Field(
        "wall", description="data: the newest reading's time (accelerated simulations)."
    )
    care_levels: dict[str, Annotated[int, Field(ge=1, le=4)]] = Field(
        default_factory=dict,
        description="Care level (1-4, from the ability assessment) per elder id; others: 2.",
    )
    save_every_s: float = Field(
        5.0,
        gt=0,
        description="How often the detectors' state is saved to the broker; what it "
        "covers is acknowledged then (keep the consumer's ack_wait well above it).",
    )


class RetrySettings(BaseModel):
    """A delivery's one retry policy: bounded exponential backoff for transient failures
    (busy, error, timeout, 5xx), and a cap, after which the delivery is failed for good."""

    attempts: int = Field(
        10, ge=1, le=50, description="Tries per delivery, the first included; then it is failed."
    )
    backoff_s: float = Field(0.25, ge=0, description="Wait before the second try; doubles.")
    backoff_max_s: float = Field(30.0, ge=0, description="Longest wait between two tries.")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed try number ``attempt`` (1-based); a receiver's
        ``Retry-After`` is honoured up to ``backoff_max_s``.

        >>> RetrySettings(backoff_s=0.5, backoff_max_s=3.0).delay(4)
        3.0
        """
        wait = self.backoff_s * 2.0 ** (attempt - 1)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.backoff_max_s)


class HttpSettings(RetrySettings):
    """An HTTPS receiver: its CA, our client certificate, a bearer token, timeouts."""

    token: SecretStr | None = Field(None, description="Bearer token sent to the receiver.")
    token_file: Path | None = Field(None, description="Or a file holding it.")
    ca_file: Path | None = Field(None, description="CA that signed the receiver's certificate.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Its private key.")
    timeout_s: float = Field(5.0, gt=0, description="Per try: connect, send and answer.")
    connections: int = Field(
        16, ge=1, le=1000, description="Pooled connections; more sends wait their turn."
    )

    @model_validator(mode="after")
    def _load_secret(self) -> HttpSettings:
        self.token = _read_secret(self.token, self.token_file)
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """Verification against ``ca_file`` (or the system CAs), with our client cert."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class CallCentreSettings(HttpSettings):
    """The call centre's alarm webhook (SCAIP-like JSON over HTTPS):
    ``HOMECARE_ESCALATE__CALL_CENTRE__TOKEN_FILE=/run/secrets/arc``. Where each message goes
    (its URL, a family member's address) is in the registry, not here."""

    sender: str = Field(
        "homecare", max_length=64, description="This platform's id at the call centre."
    )


class WebhookSettings(HttpSettings):
    """A generic JSON webhook: an SMS or push gateway."""


class SmtpSettings(RetrySettings):
    """The mail server that carries family emails."""

    host: str = Field("", description="Empty: no email channel.")
    port: int = Field(587, ge=1, le=65535, description="The mail server's port.")
    starttls: bool = Field(True, description="Upgrade with STARTTLS before logging in.")
    tls: bool = Field(False, description="Implicit TLS from the first byte (port 465).")
    username: str | None = Field(None, description="Login; none: no login.")
    password: SecretStr | None = Field(None, description="Its password (a secret).")
    password_file: Path | None = Field(None, description="Or a file holding it.")
    ca_file: Path | None = Field(None, description="CA that signed the server's certificate.")
    sender: str = Field("homecare@localhost", description="The From address.")
    timeout_s: float = Field(10.0, gt=0, description="Per connection and command.")
    connections: int = Field(4, ge=1, le=64, description="Emails sent at once.")

    @model_validator(mode="after")
    def _load_secret(self) -> SmtpSettings:
        self.password = _read_secret(self.password, self.password_file)
        if self.starttls and self.tls:
            raise ValueError("smtp: choose starttls or tls (implicit), not both")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


class EscalateSettings(BaseModel):
    """``homecare escalate``: the ladder, its acknowledgement API and its delivery channels."""

    client_id: str = Field(
        "homecare-escalate", description="Its MQTT client id, publishing alert states for apps."
    )
    secret: SecretStr | None = Field(
        None,
        description="Key of every contact's ack token; none: a key made once in "
        "state_dir/escalation.secret.",
    )
    secret_file: Path | None = Field(None, description="Or a file holding it.")
    http_host: str = Field("127.0.0.1", description="Acknowledgement API address.")
    http_port: int = Field(8480, ge=0, le=65535, description="0: a free port.")
    public_url: str = Field("", description="Base of ack links; default http://host:port.")
    flap_s: float = Field(900.0, ge=0, description="A warning back this soon is the same one.")
    heartbeat_s: float = Field(60.0, gt=0, description="Heartbeat to the call centre.")
    concurrency: int = Field(200, ge=1, description="Deliveries in flight at once.")
    call_centre: CallCentreSettings = CallCentreSettings()
    smtp: SmtpSettings = SmtpSettings()
    webhook: WebhookSettings = WebhookSettings()
    store: Literal["sqlite", "cluster"] = Field(
        "sqlite",
        description="Where the escalation state lives: sqlite (a file in state_dir, one site) "
        "or cluster (JetStream key-value buckets, replicated; one active escalate at a time "
        "holds a lease, the others stand by).",
    )
    replicas: int | None = Field(
        None, ge=1, le=5,
        description="cluster store: replicas of its buckets; none: as many as ALERTS has.",
    )  # fmt: skip
    lease_s: float = Field(
        3.0, ge=0.5, le=60.0,
        description="cluster store: the active's lease; a standby takes over this long "
        "after the active stops renewing it (renewed every third of it).",
    )  # fmt: skip

    @model_validator(mode="after")
    def _load_secret(self) -> EscalateSettings:
        self.secret = _read_secret(self.secret, self.secret_file)
        link = urlsplit(self.public_url)
        if self.public_url and (
            link.scheme not in ("http", "https")
            or (link.scheme == "http" and link.hostname not in ("localhost", "127.0.0.1", "::1"))
        ):  # ack links carry a contact's token: never in clear text past this host
            raise ValueError(
                f"escalate public_url {self.public_url!r} must be https:// (put a TLS reverse "
                "proxy in front of the acknowledgement API), or http:// on localhost"
            )
        return self


class GrafanaSettings(BaseModel):
    """An existing Grafana that ``homecare dashboards push`` publishes to (a service account
    token with the Editor role)."""

    url: str = Field("", description="The Grafana that homecare dashboards push publishes to.")
    token: SecretStr | None = Field(
        None, description="A service-account token with the Editor role (a secret)."
    )
    token_file: Path | None = Field(None, description="Or a file holding it.")
    timeout_s: float = Field(10.0, gt=0, description="Per request.")

    @model_validator(mode="after")
    def _load_secret(self) -> GrafanaSettings:
        self.token = _read_secret(self.token, self.token_file)
        return self


Duration = Annotated[str, Field(pattern=r"^([1-9][0-9]*[hdw]|INF)$")]
"""An InfluxQL retention duration: ``30d``, ``26w``, ``72h`` or ``INF`` (kept forever)."""


class RetentionSettings(BaseModel):
    """How long InfluxDB keeps raw data and rollups (``homecare rollup install`` applies it)."""

    raw: Duration = Field("30d", description="Raw readings, alerts, dead letters.")
    history: Duration = Field("1825d", description="Hourly and daily rollups, alert copies.")
    utc_offset_h: float = Field(
        0.0, ge=-12, le=14, description="The site's local time, for daily rollups and nights."
    )
    hourly_every: str = Field(
        "5m", pattern=r"^[1-9][0-9]*[smh]$", description="How often (at most 1h) the hourly "
        "continuous queries recompute the current and previous hour (1.x).",
    )  # fmt: skip
    daily_every: str = Field(
        "1h", pattern=r"^[1-9][0-9]*[smhd]$", description="How often (at most 1d) the daily "
        "continuous queries recompute the current and previous day (1.x).",
    )  # fmt: skip


class CareSettings(BaseModel):
    """Proactive care (``homecare care …``): the visit policy and the visit register's page."""

    policy: Path | None = Field(None, description="Visit policy (YAML); none: the default.")
    http_host: str = Field("127.0.0.1", description="The visit register's page and API.")
    http_port: int = Field(8490, ge=0, le=65535, description="0: a free port.")
    session_ttl_s: float = Field(8 * 3600.0, gt=0, description="A worker's session lasts this.")
    refresh_s: float = Field(
        3600.0, gt=0, description="The page's server recomputes signs and sends notices this often."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOMECARE_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    site: str = Field("demo", description="The site homecare devices provisions for.")
    state_dir: Path = Field(
        Path(".homecare"),
        description="Spool, status files, baselines, escalation.db, the CA.",
    )
    mqtt: MqttSettings = MqttSettings()
    nats: NatsSettings = NatsSettings()
    influx: InfluxSettings = InfluxSettings()
    contract: ContractSettings = ContractSettings()
    ingest: IngestSettings = IngestSettings()
    detect: DetectSettings = DetectSettings()
    detectors: DetectorSettings = DetectorSettings()
    """Every detector's thresholds and the care table (:mod:`homecare.thresholds`)."""
    escalate: EscalateSettings = EscalateSettings()
    retention: RetentionSettings = RetentionSettings()
    grafana: GrafanaSettings = GrafanaSettings()
    registry: Path | None = Field(None, description="The elder registry (YAML) escalation reads.")
    districts: dict[_Id, DistrictSettings] = Field(
        default_factory=dict,
        description='Storage by district, as JSON: {"north": {"sites": ["s1"], "primary": '
        '"http://influx-n1:8086", "replica": "http://influx-n2:8086"}}; empty: one store, '
        "the influx group's url, for every site.",
    )

    @model_validator(mode="after")
    def _one_district_per_site(self) -> Settings:
        seen: dict[str, str] = {}
        for name, district in self.districts.items():
            for site in district.sites:
                if seen.setdefault(site, name) != name:
                    raise ValueError(f"site {site!r} is in districts {seen[site]!r} and {name!r}")
        return self
    care: CareSettings = CareSettings()

    @property
    def spool_dir(self) -> Path:
        return self.ingest.spool_dir or self.state_dir / "spool"

    def district_of(self, site: str) -> str | None:
        """The district that stores ``site``'s readings; None without districts.

        >>> s = Settings(_env_file=None, districts={"north": {"sites": ["s1"],
        ...     "primary": "http://a:8086"}})
        >>> s.district_of("s1"), Settings(_env_file=None).district_of("s1")
        ('north', None)
        """
        for name, district in self.districts.items():
            if site in district.sites:
                return name
        if self.districts:
            raise ValueError(f"site {site!r} is in no district (HOMECARE_DISTRICTS)")
        return None

    def district(self, name: str) -> DistrictSettings:
        """The district called ``name``; :class:`ValueError` naming the known ones if none."""
        if name not in self.districts:
            known = ", ".join(self.districts) or "none configured"
            raise ValueError(f"no district {name!r} (HOMECARE_DISTRICTS: {known})")
        return self.districts[name]

    def influx_urls(self, district: str | None = None) -> list[str]:
        """The InfluxDBs to ask for ``district`` (primary first), or the single store's."""
        if district is not None:
            return self.district(district).urls
        if self.districts:
            raise ValueError(
                f"choose a district ({', '.join(self.districts)}): HOMECARE_DISTRICTS is set"
            )
        return [self.influx.url] if self.influx.url else []

    def influx_for(self, district: str | None, replica: str = "primary") -> InfluxSettings:
        """The ``influx`` group with the url of ``district``'s ``replica`` (None: as it is)."""
        if district is None:
            return self.influx
        return self.influx.model_copy(update={"url": self.district(district).url(replica)})


TABLE_START = "<!-- settings table: `homecare settings table --readme README.md` writes it -->"
TABLE_END = "<!-- end of the settings table -->"


def setting_rows(
    model: type[BaseModel] = Settings, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, str, str]]:
    """(variable, default, description) of every setting, nested groups flattened.

    >>> next(r for r in setting_rows() if r[0].endswith("FALL__IMPACT_G"))
    ('HOMECARE_DETECTORS__FALL__IMPACT_G', '1.4', 'Impact: 0.2 s mean magnitude at least this.')
    """
    for name, info in model.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            yield from setting_rows(group, (*path, name))
            continue
        default = info.get_default(call_default_factory=True)
        variable = "HOMECARE_" + "__".join((*path, name)).upper()
        yield variable, _shown(default), " ".join((info.description or "").split())


def _shown(value: object) -> str:
    """A default as the environment would spell it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "empty" if value == "" else str(value)


def settings_table() -> str:
    """The README's settings tables, from the models: the services', then the detectors'."""

    def table(rows: list[tuple[str, str, str]]) -> list[str]:
        bar = "\\|"
        head = ["| variable | default | what |", "|---|---|---|"]
        return head + [
            f"| `{v}` | {d if d in ('none', 'empty') else f'`{d}`'} | {w.replace('|', bar)} |"
            for v, d, w in rows
        ]

    rows = list(setting_rows())
    services = [r for r in rows if not r[0].startswith("HOMECARE_DETECTORS__")]
    detectors = [r for r in rows if r[0].startswith("HOMECARE_DETECTORS__")]
    lines = [
        *table(services),
        "",
        "Detector thresholds (`HOMECARE_DETECTORS__<DETECTOR>__<FIELD>`; how each detector "
        "uses them is in its module's docstring):",
        "",
        *table(detectors),
    ]
    return "\n".join(lines) + "\n"


def with_settings_table(readme: str) -> str:
    """``readme`` with the text between :data:`TABLE_START` and :data:`TABLE_END` replaced
    by :func:`settings_table`."""
    start = readme.index(TABLE_START) + len(TABLE_START)
    end = readme.index(TABLE_END, start)
    return readme[:start] + "\n" + settings_table() + readme[end:]
